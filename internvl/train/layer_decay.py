"""Layer-wise learning-rate decay (BEiT's, as every upstream app uses it), written once for the apps.

The models say which layer each parameter belongs to (timm's ``group_matcher`` idea): ``layer_id(name)`` of
:class:`~internvl.models.intern_vit.InternVisionModel` and
:class:`~internvl.models.qllama.QLLaMAForCausalLM` gives the embeddings 0, block ``i`` ``i + 1`` and the rest
``num_layers + 1``; :meth:`InternVLModel.layer_id <internvl.models.internvl_cg.InternVLModel.layer_id>` gives
``(tower, layer)`` for its two towers. An app maps the names of its own model onto these (a head after the
backbone is ``num_layers + 1``) and calls :func:`layer_decay_groups`:

    scale(layer) = rate ** (num_layers + 1 - layer)        (the top layer has the full rate; never above it)

per tower, each with its own ``rate`` and ``num_layers``. Weight decay is 0 for 1-d tensors, biases and the
names in ``no_weight_decay`` (upstream's rule everywhere: a 0-d tensor such as ``logit_scale`` is decayed).
The learning-rate schedules then multiply each group's ``lr_scale`` by the scheduled rate, so the ratios
between layers hold for the whole run.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Optional, Union

from ..errors import ConfigError

__all__ = ["layer_decay_groups", "layer_scale"]

LayerOf = Callable[[str], Union[int, tuple]]


def layer_scale(layer: int, num_layers: int, rate: float) -> float:
    """``rate ** (num_layers + 1 - layer)``, and 1.0 past the top (ids ``0 .. num_layers + 1``)."""
    return rate ** max(num_layers + 1 - layer, 0)


def layer_decay_groups(named_parameters: Iterable, layer_of: LayerOf, num_layers: Union[int, Mapping[str, int]],
                       rate: Union[float, Mapping[str, float]], weight_decay: float, *, lr: Optional[float] = None,
                       no_weight_decay: Iterable[str] = (), group_by: str = "layer") -> list[dict]:
    """Optimizer parameter groups of the trainable tensors among ``named_parameters``.

    ``layer_of(name)`` is a layer id (one tower) or ``(tower, layer id)``; ``num_layers`` and ``rate`` are
    numbers (one tower) or ``{tower: value}``. ``group_by="layer"`` makes one group per (tower, layer, decayed
    or not), named ``<tower>_layer_<id>_decay`` / ``_no_decay``; ``group_by="scale"`` one per (``lr_scale``,
    ``weight_decay``), as MMCV's and the classification pipeline's constructors did. Groups come in the order
    their first tensor does and hold ``params``, ``names``, ``group_name``, ``lr_scale``, ``weight_decay``, and
    ``lr = lr * lr_scale`` when ``lr`` is given.
    """
    if group_by not in ("layer", "scale"):
        raise ValueError(f"group_by={group_by!r}: expected 'layer' or 'scale'")
    no_weight_decay = set(no_weight_decay)
    groups: dict = {}
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        where = layer_of(name)
        tower, layer = where if isinstance(where, tuple) else ("", where)
        depth = num_layers[tower] if isinstance(num_layers, Mapping) else num_layers
        tower_rate = rate[tower] if isinstance(rate, Mapping) else rate
        decayed = not (param.ndim == 1 or name.endswith(".bias") or name in no_weight_decay)
        decay = weight_decay if decayed else 0.0
        scale = layer_scale(layer, depth, tower_rate)
        key = (tower, layer, decayed) if group_by == "layer" else (scale, decay)
        if key not in groups:
            label = (f"{tower}_layer_{layer}" if tower else f"layer_{layer}") if group_by == "layer" else \
                f"lr_scale_{scale:.6g}"
            groups[key] = {"params": [], "names": [], "group_name": f"{label}_{'decay' if decayed else 'no_decay'}",
                           "lr_scale": scale, "weight_decay": decay}
            if lr is not None:
                groups[key]["lr"] = lr * scale
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    if not groups:
        raise ConfigError("the model has no trainable parameters: nothing to optimise (all frozen?)")
    return list(groups.values())
