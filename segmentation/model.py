"""The segmentor: InternViT backbone + decode head (+ auxiliary head), MMSegmentation's ``EncoderDecoder``.

    model = build_segmentor(cfg.model, backbone_dtype=torch.bfloat16).to(device)
    losses = model.forward_train(images, labels)           # {"loss", "decode.loss_ce", "decode.acc_seg", ...}
    logits = model.inference(image, ori_shape=(h, w))      # (1, classes, h, w), sliding window or whole image

The backbone runs in ``backbone_dtype`` (bf16 on GPUs, as upstream's ``ToBFloat16Hook``) and hands fp32
maps to the heads, which stay fp32. Sliding-window inference (``test_cfg=dict(mode='slide',
crop_size=(504, 504), stride=(322, 322))``) places windows as MMSegmentation does and averages the
overlaps; unlike it, all windows of an image go through the network as one batch (``window_batch``
limits that number where memory is short).
"""
from __future__ import annotations

import logging
import re
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from internvl.errors import CheckpointError, ConfigError
from internvl.models.intern_vit import rename_timm_hf
from internvl.train.precision import autocast

from .backbone import InternViTBackbone, build_backbone, check_keys
from .heads import build_head, segmentation_loss

logger = logging.getLogger(__name__)

__all__ = ["EncoderDecoder", "build_segmentor", "slide_windows", "convert_mmseg_state_dict", "MODEL_ARGS",
           "TEST_CFG_ARGS"]

MODEL_ARGS = dict(type="EncoderDecoder", pretrained=None, backbone=None, decode_head=None, auxiliary_head=None,
                  neck=None, train_cfg=None, test_cfg=None, init_cfg=None)
TEST_CFG_ARGS = dict(mode="whole", crop_size=None, stride=None, window_batch=None)


def slide_windows(height: int, width: int, crop: tuple[int, int], stride: tuple[int, int]) -> list[tuple]:
    """``(y1, y2, x1, x2)`` of MMSegmentation's sliding windows over a ``height x width`` image: a grid of
    ``stride`` steps whose last row/column is shifted back to end at the border; every window has the
    size ``min(crop, image)``, so the windows of one image stack into one batch."""
    (h_crop, w_crop), (h_stride, w_stride) = crop, stride
    h_grids = max(height - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(width - w_crop + w_stride - 1, 0) // w_stride + 1
    windows = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2, x2 = min(h_idx * h_stride + h_crop, height), min(w_idx * w_stride + w_crop, width)
            windows.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return windows


class EncoderDecoder(nn.Module):
    def __init__(self, backbone: InternViTBackbone, decode_head: nn.Module, decode_index: list[int], decode_loss: dict,
                 num_classes: int, auxiliary_head: Optional[nn.Module] = None, auxiliary_index=None,
                 auxiliary_loss: Optional[dict] = None, test_cfg: Optional[dict] = None):
        super().__init__()
        self.backbone, self.decode_head, self.auxiliary_head = backbone, decode_head, auxiliary_head
        self.decode_index, self.auxiliary_index = decode_index, auxiliary_index
        self.decode_loss, self.auxiliary_loss = decode_loss, auxiliary_loss
        self.num_classes = num_classes
        self.test_cfg = {**TEST_CFG_ARGS, **(test_cfg or {})}
        self.autocast_dtype: Optional[torch.dtype] = None  # mixed precision for a training fp32 backbone

    @property
    def backbone_dtype(self) -> torch.dtype:
        return self.backbone.vit.embeddings.patch_embedding.weight.dtype

    def extract_feat(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Backbone feature maps in fp32 (the heads' dtype), from images in any dtype."""
        with autocast(images.device, self.autocast_dtype):
            maps = self.backbone(images.to(self.backbone_dtype)).feature_maps
        return [m.float() for m in maps]

    @staticmethod
    def _select(features: list, index: list[int]) -> list:
        return [features[i] for i in index]

    def encode_decode(self, images: torch.Tensor) -> torch.Tensor:
        """Decode-head logits resized (bilinear) to the input size: ``(B, classes, H, W)`` fp32."""
        logits = self.decode_head(self._select(self.extract_feat(images), self.decode_index))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def forward_train(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        """Losses of a batch (labels ``(B, H, W)``, 255 = ignore), as MMSegmentation names them."""
        features = self.extract_feat(images)
        out = {}
        logits = self.decode_head(self._select(features, self.decode_index))
        out["decode.loss_ce"] = segmentation_loss(logits, labels, **self.decode_loss)
        out["decode.acc_seg"] = pixel_accuracy(logits, labels, self.decode_loss["ignore_index"])
        loss = out["decode.loss_ce"]
        if self.auxiliary_head is not None:
            aux = self.auxiliary_head(self._select(features, self.auxiliary_index))
            out["aux.loss_ce"] = segmentation_loss(aux, labels, **self.auxiliary_loss)
            out["aux.acc_seg"] = pixel_accuracy(aux, labels, self.auxiliary_loss["ignore_index"])
            loss = loss + out["aux.loss_ce"]
        out["loss"] = loss
        return out

    forward = forward_train

    @torch.no_grad()
    def slide_inference(self, image: torch.Tensor, window_batch: Optional[int] = None) -> torch.Tensor:
        """Logits of one image ``(1, 3, H, W)`` from overlapping windows, averaged where they overlap.
        Windows go through the network ``window_batch`` at a time (None: all at once)."""
        cfg = self.test_cfg
        if cfg["crop_size"] is None or cfg["stride"] is None:
            raise ConfigError("model.test_cfg: mode='slide' needs crop_size and stride")
        if image.shape[0] != 1:
            raise ValueError(f"slide_inference takes one image at a time, got a batch of {image.shape[0]}")
        height, width = image.shape[-2:]
        windows = slide_windows(height, width, tuple(cfg["crop_size"]), tuple(cfg["stride"]))
        crops = torch.cat([image[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in windows])
        chunk = window_batch or len(windows)
        logits = torch.cat([self.encode_decode(crops[i:i + chunk]) for i in range(0, len(windows), chunk)])
        total = image.new_zeros((1, logits.shape[1], height, width), dtype=torch.float32)
        count = image.new_zeros((1, 1, height, width), dtype=torch.float32)
        for (y1, y2, x1, x2), window in zip(windows, logits):
            total[0, :, y1:y2, x1:x2] += window
            count[0, :, y1:y2, x1:x2] += 1
        return total / count

    @torch.no_grad()
    def inference(self, image: torch.Tensor, ori_shape: Optional[tuple[int, int]] = None,
                  window_batch: Optional[int] = None) -> torch.Tensor:
        """Logits of one preprocessed image, resized (bilinear) to ``ori_shape`` (the file's size)."""
        mode = self.test_cfg["mode"]
        if mode == "slide":
            logits = self.slide_inference(image, window_batch or self.test_cfg["window_batch"])
        elif mode == "whole":
            logits = self.encode_decode(image)
        else:
            raise ConfigError(f"model.test_cfg.mode={mode!r}: expected 'slide' or 'whole'")
        if ori_shape is not None and tuple(logits.shape[-2:]) != tuple(ori_shape):
            logits = F.interpolate(logits, size=tuple(ori_shape), mode="bilinear", align_corners=False)
        return logits

    # ------------------------------------------------------------------ checkpoints
    def trainable_state_dict(self) -> dict:
        """What a checkpoint must hold: everything but a frozen ViT's tensors (which the config's
        ``pretrained`` restores), so a linear-probe checkpoint is megabytes, not a copy of 6B weights."""
        state = self.state_dict()
        if self.backbone.vit_frozen:
            state = {k: v for k, v in state.items() if not k.startswith("backbone.vit.")}
        return state

    def load_checkpoint_state(self, state: dict, path: str) -> None:
        """Load our or upstream's (MMSegmentation) tensors; every tensor the checkpoint lacks must be a ViT
        tensor that the config's ``pretrained`` already loaded. Mismatches are errors naming the tensors."""
        state = convert_mmseg_state_dict(state)
        own = self.state_dict()
        unexpected = sorted(set(state) - set(own))
        missing = sorted(k for k in set(own) - set(state) if not k.startswith("backbone.vit."))
        wrong = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in state if k in own and state[k].shape != own[k].shape]
        if unexpected or missing or wrong:
            parts = []
            if wrong:
                parts.append(f"{len(wrong)} tensors of another shape ({'; '.join(wrong[:3])})")
            if missing:
                parts.append(f"{len(missing)} tensors missing ({', '.join(missing[:4])})")
            if unexpected:
                parts.append(f"{len(unexpected)} tensors the model does not have ({', '.join(unexpected[:4])})")
            raise CheckpointError(f"{path} does not match the model of the config: {'; '.join(parts)}. Use the config "
                                  "the checkpoint was trained with")
        self.load_state_dict(state, strict=False)


def pixel_accuracy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Percentage of labelled pixels predicted right (MMSegmentation's ``acc_seg``), for the training log."""
    with torch.no_grad():
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        valid = labels != ignore_index
        correct = (logits.argmax(1) == labels) & valid
        return 100.0 * correct.sum() / valid.sum().clamp(min=1)


# MMSegmentation / mmcv module names -> ours (transformers' UperNet names inside the heads).
_MMSEG_HEAD_NAMES = [(re.compile(r"\.conv_seg\."), ".classifier."), (re.compile(r"\.bn\."), ".batch_norm.")]


def convert_mmseg_state_dict(state: dict) -> dict:
    """Upstream's checkpoint names (``backbone.blocks.3.attn.qkv.weight``, ``decode_head.conv_seg.weight``,
    ``decode_head.fpn_convs.0.bn.weight``) -> ours; our own names pass unchanged."""
    out = {}
    for name, tensor in state.items():
        if name.startswith("backbone.") and not name.startswith(("backbone.vit.", "backbone.up")):
            hf = rename_timm_hf(name[len("backbone."):])
            name = f"backbone.vit.{hf}" if hf is not None else name
        elif name.startswith(("decode_head.", "auxiliary_head.")):
            for pattern, replacement in _MMSEG_HEAD_NAMES:
                name = pattern.sub(replacement, name)
        out[name] = tensor
    return out


def build_segmentor(model_cfg: dict, backbone_dtype: Optional[torch.dtype] = None) -> EncoderDecoder:
    """The model of a config's ``model=dict(...)`` (validated; an unknown key is an error naming it)."""
    model_cfg = dict(model_cfg)
    check_keys(model_cfg, MODEL_ARGS, "model")
    a = {**MODEL_ARGS, **model_cfg}
    if a["type"] != "EncoderDecoder":
        raise ConfigError(f"model.type={a['type']!r}: only EncoderDecoder is supported")
    if a["neck"] is not None:
        raise ConfigError("model.neck: necks are not supported (the InternViT pyramid is with_fpn=True)")
    if a["pretrained"] is not None:
        raise ConfigError("model.pretrained: set the backbone weights with model.backbone.pretrained")
    if a["backbone"] is None or a["decode_head"] is None:
        raise ConfigError("model.backbone and model.decode_head are required")
    check_keys(a["test_cfg"] or {}, TEST_CFG_ARGS, "model.test_cfg")
    if a["train_cfg"]:
        raise ConfigError(f"model.train_cfg={a['train_cfg']}: no training options are supported (use dict())")
    backbone = build_backbone(dict(a["backbone"]), dtype=backbone_dtype)
    channels = backbone.config.vision_config.hidden_size
    decode_head, decode_index, decode_loss = build_head(dict(a["decode_head"]), "model.decode_head")
    num_outputs = len(backbone.out_indices)
    aux = aux_index = aux_loss = None
    if a["auxiliary_head"] is not None:
        aux, aux_index, aux_loss = build_head(dict(a["auxiliary_head"]), "model.auxiliary_head")
    for where, index in (("decode_head", decode_index), ("auxiliary_head", aux_index)):
        if index is not None and any(not -num_outputs <= i < num_outputs for i in index):
            raise ConfigError(f"model.{where}.in_index={index} but the backbone returns {num_outputs} feature maps "
                              f"(out_indices={a['backbone'].get('out_indices')})")
    in_channels = a["decode_head"]["in_channels"]
    for value in (in_channels if isinstance(in_channels, (list, tuple)) else [in_channels]):
        if value != channels:
            raise ConfigError(f"model.decode_head.in_channels={in_channels} but the backbone's maps have "
                              f"{channels} channels (embed_dim)")
    num_classes = a["decode_head"]["num_classes"]
    return EncoderDecoder(backbone, decode_head, decode_index, decode_loss, num_classes, aux, aux_index, aux_loss,
                          a["test_cfg"])
