"""Layer-wise learning-rate decay of the full fine-tune (upstream's ``--use_custom_trainer``).

Every trainable tensor gets a tower and a layer id from the model's layer map
(:meth:`internvl.models.internvl_cg.InternVLModel.layer_id`); its learning rate is ``learning_rate * rate **
(depth + 1 - id)`` with ``rate`` and ``depth`` those of its tower (:mod:`internvl.train.layer_decay`):

========================================  =====  ==========================================
tensor                                    tower  layer id
========================================  =====  ==========================================
``query_tokens``, ``logit_scale``         qllama 0
``vision_model.*embeddings.*``            vit    0
``vision_model.*layers.<i>.*``            vit    i + 1
``clip_projector.*``                      vit    InternViT depth + 1: the full rate
``qllama.*embed_tokens*``                 qllama 0
``qllama.*layers.<i>.*``                  qllama i + 1
other ``qllama.*`` (final norm, lm_head)  qllama QLLaMA depth + 1: the full rate
``clip_projector2.*``, ``itm_head.*``,    qllama QLLaMA depth + 1
``text_projection``
========================================  =====  ==========================================

(Upstream numbers the heads ``depth + 2`` and caps ``rate ** -1`` at 1x: the same rate and the same groups.)
The rates come from ``--layer_decay_rate VIT [QLLAMA]`` (one number: both towers); without the flag, from the
environment variables ``VIT_LAYER_DECAY_RATE`` and ``QLLAMA_LAYER_DECAY_RATE`` that upstream's full scripts
export (0.9 and 0.9); else 1.0 (no decay). Weight decay is 0 for 1-d tensors and biases and ``--weight_decay`` for
the rest (so, as upstream, the 0-d ``logit_scale`` is decayed). One optimizer group per (tower, layer, decay)
with its ``lr``; the learning-rate schedule then scales every group's rate by the same factor, so the ratios
between layers hold for the whole run. LoRA-wrapped names (``vision_model.base_model.model.encoder.layers.3...``)
get the ids of the layers they wrap.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

from internvl.errors import ConfigError
from internvl.train.layer_decay import layer_decay_groups

__all__ = ["DECAY_RATE_VARIABLES", "decay_rates", "decay_rates_from_env", "layer_decay_param_groups"]

DECAY_RATE_VARIABLES = ("VIT_LAYER_DECAY_RATE", "QLLAMA_LAYER_DECAY_RATE")


def _checked(value: float, where: str) -> float:
    if not 0 < value <= 1:
        raise ConfigError(f"{where}={value} must be in (0, 1] (1.0: no decay)")
    return value


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
        rates.append(_checked(value, f"environment variable {name}"))
    return rates[0], rates[1]


def decay_rates(flag: Optional[Sequence[float]], environ=os.environ) -> tuple[float, float]:
    """``(vit rate, qllama rate)``: ``--layer_decay_rate VIT [QLLAMA]`` if given (it wins over the environment),
    else :func:`decay_rates_from_env`."""
    if not flag:
        return decay_rates_from_env(environ)
    if len(flag) > 2:
        raise ConfigError(f"--layer_decay_rate takes one rate (both towers) or two (InternViT, QLLaMA), got "
                          f"{len(flag)}: {' '.join(map(str, flag))}")
    vit = _checked(float(flag[0]), "--layer_decay_rate")
    return vit, _checked(float(flag[-1]), "--layer_decay_rate")


def layer_decay_param_groups(model, learning_rate: float, weight_decay: float, vit_rate: float,
                             qllama_rate: float) -> list[dict]:
    """Optimizer parameter groups (``params``, ``lr``, ``weight_decay``, plus ``group_name``, ``lr_scale`` and
    ``names`` for the log) of the trainable tensors of the InternVL-C/G ``model``. Groups come in descending
    ``lr_scale``: the first has the full rate, the one the Trainer logs as ``learning_rate``."""
    config = model.config
    depths = {"vit": config.vision_config.num_hidden_layers, "qllama": config.qllama_config.num_hidden_layers}
    groups = layer_decay_groups(model.named_parameters(), model.layer_id, depths,
                                {"vit": vit_rate, "qllama": qllama_rate}, weight_decay, lr=learning_rate)
    return sorted(groups, key=lambda group: -group["lr_scale"])
