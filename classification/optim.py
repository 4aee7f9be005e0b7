"""Optimizer, learning-rate schedule and EMA of the classification pipeline.

As upstream (``optimizer.py``, ``lr_scheduler.py``): no weight decay on 1-D tensors and biases;
``sgd`` is Nesterov SGD, ``sgd_linear_probing`` plain momentum SGD without decay, ``adamw`` AdamW;
the schedules are timm's cosine / step (and upstream's linear) with linear warmup, evaluated per
optimizer update. The EMA averages only what training changes (the head), not a second copy of a
frozen 6B backbone.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
from torch import nn

from internvl.models.intern_vit import rename_timm_hf
from internvl.train.layer_decay import layer_decay_groups


def classification_name(name: str) -> str:
    """``backbone.encoder.layers.3.attn.qkv.weight`` -> ``blocks.3.attn.qkv.weight`` (checkpoint names)."""
    if name.startswith("backbone."):
        return rename_timm_hf(name[len("backbone."):], to_hf=False) or name
    return name


def layer_id(model: nn.Module, name: str) -> int:
    """Upstream ``lr_decay_keywords`` as a layer map: the backbone's own
    (:meth:`internvl.models.intern_vit.InternVisionModel.layer_id`: embeddings 0, block ``i`` ``i + 1``), and the
    head (norm, pooling, linear) after the last block."""
    backbone = model.backbone
    if name.startswith("backbone."):
        return backbone.layer_id(name[len("backbone."):])
    return backbone.config.num_hidden_layers + 1


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 0.0) -> list[dict]:
    """Trainable parameters grouped by (weight decay, LR scale), names as in the checkpoints; ``lr_scale``
    multiplies the schedule. ``layer_decay`` (0: off) gives block ``i`` of ``depth`` ``layer_decay ** (depth -
    i)`` and the embeddings ``layer_decay ** (depth + 1)`` (:mod:`internvl.train.layer_decay`)."""
    groups = layer_decay_groups(model.named_parameters(), lambda name: layer_id(model, name),
                                model.backbone.config.num_hidden_layers, layer_decay or 1.0, weight_decay,
                                group_by="scale")
    for group in groups:
        group["names"] = [classification_name(name) for name in group["names"]]
    return groups


def build_optimizer(config, model: nn.Module) -> torch.optim.Optimizer:
    opt = config.TRAIN.OPTIMIZER
    name = opt.NAME.lower()
    layer_decay = config.TRAIN.LR_LAYER_DECAY_RATIO if config.TRAIN.LR_LAYER_DECAY else 0.0
    groups = param_groups(model, config.TRAIN.WEIGHT_DECAY, layer_decay)
    lr = config.TRAIN.BASE_LR
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=opt.MOMENTUM, nesterov=True)
    if name == "sgd_linear_probing":
        for group in groups:
            group["weight_decay"] = 0.0
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=False)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, eps=opt.EPS, betas=tuple(opt.BETAS))
    raise ValueError(f"TRAIN.OPTIMIZER.NAME={opt.NAME!r} is not one of adamw, sgd, sgd_linear_probing")


class LRSchedule:
    """Learning rate as a pure function of the optimizer update count ``t`` (so resuming is exact).

    Per parameter group the peak is ``base_lr * lr_scale``; warmup rises linearly from
    ``warmup_lr`` over ``warmup_steps``, then:

    * cosine (timm ``CosineLRScheduler``, one cycle, warmup not prefixed):
      ``min_lr + (peak - min_lr) * (1 + cos(pi * t / total_steps)) / 2``, ``min_lr`` from ``total_steps`` on
    * step (timm 0.6 ``StepLRScheduler``, upstream's pin; warmup not prefixed):
      ``peak * decay_rate ** (t // decay_steps)``
    * linear (upstream): from ``peak`` down to ``peak / 100`` at ``total_steps``
    """

    def __init__(self, name: str, base_lr: float, warmup_lr: float, min_lr: float, total_steps: int,
                 warmup_steps: int = 0, decay_steps: int = 1, decay_rate: float = 0.1):
        if name not in ("cosine", "step", "linear"):
            raise ValueError(f"TRAIN.LR_SCHEDULER.NAME={name!r} is not one of cosine, step, linear")
        self.name, self.base_lr, self.warmup_lr, self.min_lr = name, base_lr, warmup_lr, min_lr
        self.total_steps, self.warmup_steps = max(total_steps, 1), warmup_steps
        self.decay_steps, self.decay_rate = max(decay_steps, 1), decay_rate

    @classmethod
    def from_config(cls, config, updates_per_epoch: int) -> "LRSchedule":
        train = config.TRAIN
        return cls(train.LR_SCHEDULER.NAME, train.BASE_LR, train.WARMUP_LR, train.MIN_LR,
                   total_steps=int(train.EPOCHS * updates_per_epoch),
                   warmup_steps=int(train.WARMUP_EPOCHS * updates_per_epoch),
                   decay_steps=int(train.LR_SCHEDULER.DECAY_EPOCHS * updates_per_epoch),
                   decay_rate=train.LR_SCHEDULER.DECAY_RATE)

    def lr(self, t: int, scale: float = 1.0) -> float:
        peak = self.base_lr * scale
        if t < self.warmup_steps:
            return self.warmup_lr + t * (peak - self.warmup_lr) / self.warmup_steps
        if self.name == "cosine":
            if t >= self.total_steps:
                return self.min_lr
            return self.min_lr + 0.5 * (peak - self.min_lr) * (1 + math.cos(math.pi * t / self.total_steps))
        if self.name == "step":
            return peak * self.decay_rate ** (t // self.decay_steps)
        span = max(self.total_steps - self.warmup_steps, 1)
        return peak - (peak - peak * 0.01) * ((t - self.warmup_steps) / span)

    def apply(self, optimizer: torch.optim.Optimizer, t: int) -> float:
        """Set every group's LR for update ``t``; return the unscaled LR (what the log shows)."""
        for group in optimizer.param_groups:
            group["lr"] = self.lr(t, group.get("lr_scale", 1.0))
        return self.lr(t)


class HeadEma:
    """Exponential moving average of the trained tensors: ``ema = decay * ema + (1 - decay) * current``
    for floating tensors (timm ``ModelEma``), a copy for the rest (BatchNorm's batch counter)."""

    def __init__(self, model, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.trainable_state_dict().items()}

    @torch.no_grad()
    def update(self, model) -> None:
        for key, value in model.trainable_state_dict().items():
            shadow = self.shadow[key]
            if shadow.is_floating_point():
                shadow.lerp_(value.to(shadow.dtype), 1 - self.decay)
            else:
                shadow.copy_(value)

    def state_dict(self) -> dict:
        return dict(self.shadow)

    def load_state_dict(self, state: dict) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise KeyError(f"EMA state lacks {missing[:4]}")
        for key, value in state.items():
            if key in self.shadow:
                self.shadow[key].copy_(value)

    @contextlib.contextmanager
    def applied_to(self, model) -> Iterator[None]:
        """Run the block with the EMA weights in ``model``; the trained weights are restored after."""
        backup = {k: v.detach().clone() for k, v in model.trainable_state_dict().items()}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield
        finally:
            model.load_state_dict(backup, strict=False)
