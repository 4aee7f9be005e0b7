"""Optimizer with upstream's layer-wise LR decay, and MMCV's poly schedule with linear warmup.

``constructor='CustomLayerDecayOptimizerConstructor'`` with ``paramwise_cfg=dict(num_layers=48,
layer_decay_rate=r)`` (upstream, from BEiT; ``num_layers`` should be the backbone's depth: another value is
counted as given, with a warning, as upstream's constructor counted it): with ``L = num_layers + 2`` ids from
the ViT's layer map (``InternVisionModel.layer_id``), the patch embedding, class token and position embedding
get id 0, ViT layer ``i`` id ``i + 1``, everything else (pyramid, heads) ``L - 1``; a parameter's LR is
``lr * r ** (L - 1 - id)`` (:mod:`internvl.train.layer_decay`). No weight decay on 1-D tensors, biases, the
class token and the position embedding. (Upstream meant the last two but compared the names without
their ``backbone.`` prefix, so they were decayed; at ``lr * 0.95**49`` the difference is negligible.)
Without a constructor (MMCV's default) every parameter gets the same LR and weight decay.

The schedule is a pure function of the iteration, so a resumed run continues exactly:
``lr(t) = (base - min_lr) * (1 - t / max_iters) ** power + min_lr``, and during warmup (``t <
warmup_iters``, linear) that value times ``1 - (1 - t / warmup_iters) * (1 - warmup_ratio)``.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from internvl.errors import ConfigError
from internvl.train.layer_decay import layer_decay_groups

logger = logging.getLogger(__name__)

__all__ = ["layer_id", "param_groups", "build_optimizer", "PolyLR"]


_VIT = "backbone.vit."
_NO_DECAY_NAMES = ("backbone.vit.embeddings.class_embedding", "backbone.vit.embeddings.position_embedding")


def layer_id(model: nn.Module, name: str, num_layers: int) -> int:
    """Upstream's ``get_num_layer_for_vit``: the ViT's own layer map
    (:meth:`internvl.models.intern_vit.InternVisionModel.layer_id`) under ``backbone.vit.``; the pyramid and the
    heads after the last layer, ``num_layers + 1`` (``paramwise_cfg.num_layers``)."""
    if name.startswith(_VIT):
        return min(model.backbone.vit.layer_id(name[len(_VIT):]), num_layers + 1)
    return num_layers + 1


def param_groups(model: nn.Module, lr: float, weight_decay: float, num_layers=None, layer_decay_rate=None) -> list:
    """Trainable parameters grouped by (LR scale, weight decay) (``internvl.train.layer_decay``); each group
    carries ``lr_scale`` and ``names``. ``num_layers=None``: MMCV's default constructor (one group, decay
    everywhere)."""
    if num_layers is None:
        params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        if not params:
            raise ConfigError("the model has no trainable parameters (frozen backbone and no head?)")
        return [{"params": [p for _, p in params], "names": [name for name, _ in params], "group_name": "all",
                 "weight_decay": weight_decay, "lr_scale": 1.0, "lr": lr}]
    depth = model.backbone.vit.config.num_hidden_layers
    if num_layers != depth and layer_decay_rate != 1.0:
        logger.warning("optimizer.paramwise_cfg.num_layers=%d but the backbone has %d layers: the decay counts %d "
                       "layers, as upstream's constructor did (a ViT layer past them gets the full LR)",
                       num_layers, depth, num_layers)
    return layer_decay_groups(model.named_parameters(), lambda name: layer_id(model, name, num_layers), num_layers,
                              layer_decay_rate, weight_decay, lr=lr, no_weight_decay=_NO_DECAY_NAMES,
                              group_by="scale")


def build_optimizer(model: nn.Module, args: dict) -> torch.optim.Optimizer:
    """``optimizer=dict(type='AdamW' | 'SGD', lr, ..., constructor, paramwise_cfg)`` (validated keys)."""
    kind, lr = args["type"], args["lr"]
    if lr is None:
        raise ConfigError("optimizer.lr is required")
    constructor, paramwise = args.get("constructor"), dict(args.get("paramwise_cfg") or {})
    if constructor in (None, "DefaultOptimizerConstructor"):
        if paramwise:
            raise ConfigError("optimizer.paramwise_cfg needs constructor='CustomLayerDecayOptimizerConstructor'")
        groups = param_groups(model, lr, args["weight_decay"])
    elif constructor in ("CustomLayerDecayOptimizerConstructor", "LayerDecayOptimizerConstructor"):
        if paramwise.get("num_layers") is None:
            raise ConfigError(f"optimizer.paramwise_cfg.num_layers is required by {constructor}")
        groups = param_groups(model, lr, args["weight_decay"], paramwise["num_layers"],
                              paramwise.get("layer_decay_rate", 1.0))
    else:
        raise ConfigError(f"optimizer.constructor={constructor!r}: supported are DefaultOptimizerConstructor and "
                          "CustomLayerDecayOptimizerConstructor")
    if kind == "AdamW":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(args["betas"]), eps=args["eps"],
                                 weight_decay=args["weight_decay"], amsgrad=args["amsgrad"])
    if kind == "SGD":
        return torch.optim.SGD(groups, lr=lr, momentum=args["momentum"], weight_decay=args["weight_decay"],
                               nesterov=args["nesterov"])
    raise ConfigError(f"optimizer.type={kind!r}: supported are AdamW and SGD")


class PolyLR:
    """MMCV's ``PolyLrUpdaterHook`` (iteration-based) with optional linear warmup (module doc)."""

    def __init__(self, max_iters: int, power: float = 1.0, min_lr: float = 0.0, warmup=None, warmup_iters: int = 0,
                 warmup_ratio: float = 0.1):
        if warmup not in (None, "linear"):
            raise ConfigError(f"lr_config.warmup={warmup!r}: only 'linear' (or None) is supported")
        self.max_iters, self.power, self.min_lr = max_iters, power, min_lr
        self.warmup_iters = warmup_iters if warmup else 0
        self.warmup_ratio = warmup_ratio

    @classmethod
    def from_config(cls, args: dict, max_iters: int) -> "PolyLR":
        if args["policy"] != "poly" or args["by_epoch"] or args["warmup_by_epoch"]:
            raise ConfigError("lr_config: only policy='poly' by iteration (by_epoch=False) is supported")
        return cls(max_iters, args["power"], args["min_lr"], args["warmup"], args["warmup_iters"],
                   args["warmup_ratio"])

    def factor(self, t: int, base: float) -> float:
        lr = (base - self.min_lr) * (1 - t / self.max_iters) ** self.power + self.min_lr
        if t < self.warmup_iters:
            lr *= 1 - (1 - t / self.warmup_iters) * (1 - self.warmup_ratio)
        return lr

    def apply(self, optimizer: torch.optim.Optimizer, t: int, base_lr: float) -> float:
        """Set every group's LR for iteration ``t`` (0-based, before its update); return the unscaled LR."""
        for group in optimizer.param_groups:
            group["lr"] = self.factor(t, base_lr * group["lr_scale"])
        return self.factor(t, base_lr)
