"""Layer-wise learning-rate decay of the full fine-tune (upstream's ``--use_custom_trainer``).

Every trainable tensor gets a layer id and a tower; its learning rate is ``learning_rate * rate ** (layers -
id - 1)`` (capped at 1x), with ``rate`` and ``layers`` those of its tower:

========================================  =====  ==========================================
tensor                                    tower  layer id
========================================  =====  ==========================================
``query_tokens``, ``logit_scale``         qllama 0
``vision_model.*embeddings.*``            vit    0
``vision_model.*layers.<i>.*``            vit    i + 1
``clip_projector.*``                      vit    vit layers (= InternViT depth + 2): rate**-1, capped to 1x
``qllama.*embed_tokens*``                 qllama 0
``qllama.*layers.<i>.*``                  qllama i + 1
other ``qllama.*`` (final norm, lm_head)  qllama qllama layers (= QLLaMA depth + 2)
``clip_projector2.*``, ``itm_head.*``,    qllama qllama layers
``text_projection``
========================================  =====  ==========================================

The rates come from ``VIT_LAYER_DECAY_RATE`` and ``QLLAMA_LAYER_DECAY_RATE`` (default 1.0: no decay; upstream's
full scripts export 0.9 and 0.9). Weight decay is 0 for 1-d tensors and biases and ``--weight_decay`` for the
rest (so, as upstream, the 0-d ``logit_scale`` is decayed). One optimizer group per (tower, layer, decay) with its
``lr``; the learning-rate schedule then scales every group's rate by the same factor, so the ratios between
layers hold for the whole run. LoRA-wrapped names (``vision_model.base_model.model.encoder.layers.3...``) get the
ids of the layers they wrap.
"""
from __future__ import annotations

import os
import re
from typing import Iterable

from internvl.errors import ConfigError

__all__ = ["DECAY_RATE_VARIABLES", "decay_rates_from_env", "layer_id", "tower", "layer_decay_param_groups"]

DECAY_RATE_VARIABLES = ("VIT_LAYER_DECAY_RATE", "QLLAMA_LAYER_DECAY_RATE")
_LAYER = re.compile(r"layers\.(\d+)\.")


def decay_rates_from_env(environ=os.environ) -> tuple[float, float]:
    """``(vit rate, qllama rate)`` from the environment (1.0 where unset); a value that is not a number in
    (0, 1] is an error naming the variable."""
    rates = []
    for name in DECAY_RATE_VARIABLES:
        raw = environ.get(name, "1.0")
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"environment variable {name}={raw!r} is not a number; give a decay rate in (0, 1], "
                              "e.g. 0.9") from None
        if not 0 < value <= 1:
            raise ConfigError(f"environment variable {name}={value} must be in (0, 1] (1.0: no decay)")
        rates.append(value)
    return rates[0], rates[1]


def layer_id(name: str, vit_layers: int, qllama_layers: int) -> int:
    """The layer id of parameter ``name`` (see the module doc)."""
    if name in ("query_tokens", "logit_scale"):
        return 0
    if name.startswith("clip_projector."):
        return vit_layers
    if name.startswith(("clip_projector2.", "itm_head.")) or name == "text_projection":
        return qllama_layers
    block = _LAYER.search(name)
    if name.startswith("vision_model."):
        if "embeddings." in name:
            return 0
        return int(block[1]) + 1 if block else 0
    if name.startswith("qllama."):
        if "embed_tokens" in name:
            return 0
        return int(block[1]) + 1 if block else qllama_layers
    return 0


def tower(name: str) -> str:
    """``"vit"`` (InternViT and its pooling head), ``"qllama"`` (QLLaMA, queries, the other heads) or
    ``"other"`` (decayed at the QLLaMA rate)."""
    if name.startswith(("vision_model.", "clip_projector.")):
        return "vit"
    if name in ("query_tokens", "text_projection", "logit_scale") or name.startswith(
            ("qllama.", "clip_projector2.", "itm_head.")):
        return "qllama"
    return "other"


def layer_decay_param_groups(named_parameters: Iterable, vit_depth: int, qllama_depth: int, learning_rate: float,
                             weight_decay: float, vit_rate: float, qllama_rate: float) -> list[dict]:
    """Optimizer parameter groups (``params``, ``lr``, ``weight_decay``, plus ``group_name``, ``lr_scale`` and
    ``param_names`` for the log) of the trainable tensors among ``named_parameters``; ``vit_depth`` and
    ``qllama_depth`` are the numbers of transformer layers of InternViT and QLLaMA. Groups come in descending
    ``lr_scale``: the first has the full rate, the one the Trainer logs as ``learning_rate``."""
    vit_layers, qllama_layers = vit_depth + 2, qllama_depth + 2
    groups: dict[str, dict] = {}
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        decay = not (param.ndim == 1 or name.endswith(".bias"))
        part, layer = tower(name), layer_id(name, vit_layers, qllama_layers)
        key = f"{part}_layer_{layer}_{'decay' if decay else 'no_decay'}"
        if key not in groups:
            rate, layers = (vit_rate, vit_layers) if part == "vit" else (qllama_rate, qllama_layers)
            scale = min(1.0, rate ** (layers - layer - 1))
            groups[key] = {"params": [], "param_names": [], "group_name": key, "lr_scale": scale,
                           "lr": scale * learning_rate, "weight_decay": weight_decay if decay else 0.0}
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    return sorted(groups.values(), key=lambda group: -group["lr_scale"])
