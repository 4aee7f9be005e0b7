"""Decode heads: upstream's linear head, and UperNet with its auxiliary FCN head from transformers.

``FCNHead`` with ``num_convs=0`` (upstream's linear probe): BatchNorm over the backbone channels, then a
1x1 convolution to the classes (:class:`LinearHead`).

``UPerHead`` and the auxiliary ``FCNHead`` (``num_convs >= 1``) are transformers' ``UperNetHead`` and
``UperNetFCNHead`` (the port of MMSegmentation's heads), with two things added where their behaviour
differs from MMSegmentation's:

* MMSegmentation applies ``Dropout2d(dropout_ratio)`` before the classifying convolution
  (``cls_seg``); transformers has no dropout there. :class:`DropoutConv2d` puts it back without
  changing any tensor name.
* Initialisation as MMSegmentation's ``ConvModule`` / ``BaseDecodeHead``: convolutions Kaiming-normal
  (fan_out, ReLU), norms 1 / 0, the classifier N(0, 0.01) with zero bias (transformers uses N(0, 0.02)).

Tensor names are transformers' (``classifier``, ``batch_norm``); :func:`segmentation.model.convert_mmseg_state_dict`
maps MMSegmentation's (``conv_seg``, ``bn``) onto them for upstream's released checkpoints.
Every head runs in fp32 whatever the backbone's dtype, as upstream's heads do.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from internvl.errors import ConfigError

from .backbone import check_keys

__all__ = ["DropoutConv2d", "LinearHead", "build_head", "register_head", "HEADS", "HEAD_ARGS"]


class DropoutConv2d(nn.Conv2d):
    """A convolution with ``Dropout2d(p)`` on its input during training (MMSegmentation's ``cls_seg``)."""

    def __init__(self, *args, dropout: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.dropout2d(x, self.dropout, self.training) if self.dropout > 0 else x)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", dropout={self.dropout}"


class LinearHead(nn.Module):
    """Upstream's linear probe (``FCNHead(num_convs=0, with_norm=True)``): BN, then a 1x1 conv."""

    def __init__(self, in_channels: int, num_classes: int, with_norm: bool = True, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels) if with_norm else nn.Identity()
        self.classifier = DropoutConv2d(in_channels, num_classes, kernel_size=1, dropout=dropout)

    def forward(self, features) -> torch.Tensor:
        return self.classifier(self.norm(features[0]))


def init_like_mmseg(head: nn.Module, classifier: nn.Conv2d) -> None:
    for module in head.modules():
        if isinstance(module, nn.Conv2d) and module is not classifier:
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    nn.init.normal_(classifier.weight, 0.0, 0.01)
    nn.init.zeros_(classifier.bias)


# MMSegmentation's decode-head arguments that these heads read; the rest must keep their defaults.
HEAD_ARGS = dict(
    type=None, in_channels=None, channels=None, num_classes=None, in_index=-1, dropout_ratio=0.1,
    num_convs=2, kernel_size=3, dilation=1, concat_input=True, with_norm=False, pool_scales=(1, 2, 3, 6),
    norm_cfg=None, act_cfg=dict(type="ReLU"), conv_cfg=None, align_corners=False, input_transform=None,
    ignore_index=255, sampler=None, loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
    init_cfg=None)


HEADS: dict[str, Callable[[dict, str], tuple[nn.Module, list[int]]]] = {}


def register_head(name: str):
    """Register ``builder(args, where) -> (module, in_index list)`` as the head ``type=name`` (as the
    transforms are registered in ``TRANSFORMS``); ``args`` are the checked ``HEAD_ARGS`` with the config's
    values, ``where`` the config path for errors."""
    def add(builder):
        HEADS[name] = builder
        return builder
    return add


def build_head(args: dict, where: str) -> tuple[nn.Module, list[int], dict]:
    """``decode_head`` / ``auxiliary_head`` dict -> ``(module, in_index, loss options)``. The module takes the
    backbone feature maps at ``in_index`` (a list) and returns logits at the first one's resolution."""
    check_keys(args, HEAD_ARGS, where)
    a = {**HEAD_ARGS, **args}
    for key in ("type", "in_channels", "channels", "num_classes"):
        if a[key] is None:
            raise ConfigError(f"{where}.{key} is required")
    if a["norm_cfg"] is not None and a["norm_cfg"].get("type") not in ("SyncBN", "BN"):
        raise ConfigError(f"{where}.norm_cfg={a['norm_cfg']}: only BN / SyncBN (BatchNorm, synchronised on GPUs)")
    if a["act_cfg"] != dict(type="ReLU") or a["conv_cfg"] is not None or a["align_corners"]:
        raise ConfigError(f"{where}: act_cfg, conv_cfg and align_corners keep MMSegmentation's defaults here "
                          "(ReLU, plain Conv2d, False)")
    if a["input_transform"] is not None or a["sampler"] is not None:
        raise ConfigError(f"{where}: input_transform and sampler are not supported (None in every upstream config)")
    if a["type"] not in HEADS:
        raise ConfigError(f"{where}.type={a['type']!r}: supported heads are {', '.join(sorted(HEADS))}")
    loss = _loss_options(a["loss_decode"], f"{where}.loss_decode")
    loss["ignore_index"] = a["ignore_index"]
    head, in_index = HEADS[a["type"]](a, where)
    return head, list(in_index), loss


def _mmseg_classifier(head: nn.Module, a: dict) -> nn.Module:
    """MMSegmentation's ``cls_seg`` (dropout, then a 1x1 convolution) in place of transformers' classifier,
    and MMSegmentation's initialisation."""
    head.classifier = DropoutConv2d(a["channels"], a["num_classes"], kernel_size=1, dropout=a["dropout_ratio"])
    init_like_mmseg(head, head.classifier)
    return head


@register_head("FCNHead")
def _fcn_head(a: dict, where: str) -> tuple[nn.Module, list[int]]:
    """``num_convs=0``: upstream's linear head (:class:`LinearHead`); else transformers' ``UperNetFCNHead``."""
    num_classes, channels = a["num_classes"], a["channels"]
    if not isinstance(a["in_index"], int):
        raise ConfigError(f"{where}.in_index={a['in_index']}: " + (
            "the linear head reads one feature map" if a["num_convs"] == 0 else "an FCNHead reads one feature map"))
    if a["num_convs"] == 0:
        in_channels = a["in_channels"]
        if in_channels != channels:
            raise ConfigError(f"{where}: with num_convs=0, in_channels ({in_channels}) must equal "
                              f"channels ({channels})")
        if a["concat_input"]:
            raise ConfigError(f"{where}: concat_input=True needs num_convs >= 1")
        head = LinearHead(in_channels, num_classes, a["with_norm"], a["dropout_ratio"])
        init_like_mmseg(head, head.classifier)
        return head, [a["in_index"]]
    from internvl.compat import upernet_fcn_head

    if a["with_norm"]:
        raise ConfigError(f"{where}: with_norm=True is supported for num_convs=0 (the linear head) only")
    config = SimpleNamespace(auxiliary_in_channels=a["in_channels"], auxiliary_channels=channels,
                             auxiliary_num_convs=a["num_convs"], auxiliary_concat_input=a["concat_input"],
                             num_labels=num_classes)
    head = upernet_fcn_head(config, in_index=0, kernel_size=a["kernel_size"], dilation=a["dilation"])
    return _mmseg_classifier(head, a), [a["in_index"]]


@register_head("UPerHead")
def _uper_head(a: dict, where: str) -> tuple[nn.Module, list[int]]:
    """transformers' ``UperNetHead`` (PPM + FPN) over one feature map per ``in_channels`` entry."""
    from transformers.models.upernet.modeling_upernet import UperNetHead

    in_channels = list(a["in_channels"])
    in_index = a["in_index"] if a["in_index"] != -1 else list(range(len(in_channels)))
    if isinstance(in_index, int) or len(in_index) != len(in_channels):
        raise ConfigError(f"{where}.in_index={in_index} must list one feature map per in_channels entry")
    config = SimpleNamespace(pool_scales=tuple(a["pool_scales"]), hidden_size=a["channels"],
                             num_labels=a["num_classes"])
    return _mmseg_classifier(UperNetHead(config, in_channels=in_channels), a), in_index


LOSS_ARGS = dict(type="CrossEntropyLoss", use_sigmoid=False, use_mask=False, reduction="mean", class_weight=None,
                 loss_weight=1.0, loss_name="loss_ce", avg_non_ignore=False)


def _loss_options(args: dict, where: str) -> dict:
    check_keys(args, LOSS_ARGS, where)
    a = {**LOSS_ARGS, **args}
    if a["type"] != "CrossEntropyLoss" or a["use_sigmoid"] or a["use_mask"] or a["reduction"] != "mean":
        raise ConfigError(f"{where}: only CrossEntropyLoss with softmax and mean reduction is supported")
    return {"loss_weight": float(a["loss_weight"]), "class_weight": a["class_weight"],
            "avg_non_ignore": bool(a["avg_non_ignore"])}


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, loss_weight: float = 1.0, ignore_index: int = 255,
                      class_weight=None, avg_non_ignore: bool = False) -> torch.Tensor:
    """MMSegmentation 0.30's ``CrossEntropyLoss``: logits resized (bilinear) to the label size, per-pixel
    cross-entropy, and by default (``avg_non_ignore=False``) the mean over *all* pixels, ignored ones counting
    as zero, where ``torch.nn.CrossEntropyLoss`` (and transformers' UperNet) average over the labelled ones."""
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    weight = torch.as_tensor(class_weight, dtype=logits.dtype, device=logits.device) if class_weight else None
    loss = F.cross_entropy(logits.float(), labels.long(), weight=weight, ignore_index=ignore_index, reduction="none")
    if avg_non_ignore:
        return loss_weight * loss.sum() / (labels != ignore_index).sum().clamp(min=1)
    return loss_weight * loss.mean()
