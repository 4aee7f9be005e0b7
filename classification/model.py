"""The linear-probing classifier: the shared ``internvl.InternVisionModel``, frozen, under one of the
upstream heads (``classification/models/intern_vit_6b.py`` of OpenGVLab/InternVL).

``MODEL.INTERN_VIT_6B.CLS_TARGET`` picks what the head sees:

    cls_patch_concat   [class token, mean of the patch tokens] -> BatchNorm -> Linear   (the published probe)
    attention_pooling  a trained attention-pooling block over all tokens -> BatchNorm -> Linear
    clip_projector     InternVL-C's frozen attention-pooling projector (768-d) -> BatchNorm -> Linear
                       (both pooling heads are ``internvl.models.layers.AttentionPooling``, InternVL-C's block)
    cls_token          the class token alone -> BatchNorm -> Linear                        (not upstream)

The BatchNorm has eps 1e-6 and becomes SyncBatchNorm under DDP on GPUs (``HEAD_NORM_TYPE: ln`` swaps in a
LayerNorm); the Linear starts at N(0, 0.01) with zero bias, as upstream.

``state_dict()`` and ``load_state_dict()`` use the classification checkpoint names (``pos_embed``,
``blocks.0.attn.qkv.weight``, ..., ``norm.*``, ``head.*``): exactly the tensors of
``intern_vit_6b_224px.pth`` plus ``intern_vit_6b_224px_head.pth``, so both load as they are.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Optional

import torch
from torch import nn

from internvl.compat import enable_activation_checkpointing
from internvl.errors import CheckpointError, ConfigError, MissingFileError
from internvl.models.intern_vit import InternVisionConfig, InternVisionModel, rename_timm_hf
from internvl.models.layers import AttentionPooling

logger = logging.getLogger(__name__)

_NORM_TYPES = {"rms": "rms_norm", "ln": "layer_norm"}


def vision_config(config) -> InternVisionConfig:
    """The backbone's ``InternVisionConfig`` from the yacs ``MODEL`` section."""
    vit = config.MODEL.INTERN_VIT_6B
    return InternVisionConfig(
        num_channels=3, patch_size=vit.PATCH_SIZE, image_size=vit.PRETRAIN_SIZE, qkv_bias=vit.QKV_BIAS,
        hidden_size=vit.EMBED_DIM, num_attention_heads=vit.NUM_HEADS,
        intermediate_size=int(vit.EMBED_DIM * vit.MLP_RATIO), qk_normalization=vit.QK_NORMALIZATION,
        num_hidden_layers=vit.DEPTH, use_flash_attn=vit.USE_FLASH_ATTN, norm_type=_NORM_TYPES[vit.NORM_TYPE],
        layer_norm_eps=1e-6, drop_path_rate=config.MODEL.DROP_PATH_RATE, initializer_factor=vit.INIT_VALUES)


class InternViTClassifier(nn.Module):
    """Frozen (or trainable) InternViT + linear-probe head. See the module docstring for the heads."""

    def __init__(self, backbone: InternVisionModel, num_classes: int, cls_target: str = "cls_patch_concat",
                 head_norm_type: str = "bn", freeze_backbone: bool = True, frozen_forward: str = "inference_mode",
                 attn_pool_num_heads: int = 16, clip_embed_dim: int = 768):
        super().__init__()
        if frozen_forward not in ("inference_mode", "no_grad"):
            raise ValueError(f"frozen_forward must be 'inference_mode' or 'no_grad', got {frozen_forward!r}")
        self.backbone = backbone
        self.cls_target = cls_target
        self.freeze_backbone = freeze_backbone
        self.frozen_forward = frozen_forward
        dim = backbone.config.hidden_size
        if cls_target == "cls_patch_concat":
            width = 2 * dim
        elif cls_target == "cls_token":
            width = dim
        elif cls_target == "clip_projector":  # part of the pretrained model (InternVL-C), frozen with it
            self.clip_projector = AttentionPooling(dim, attn_pool_num_heads, out_dim=clip_embed_dim)
            width = clip_embed_dim
        elif cls_target == "attention_pooling":  # trained with the head
            self.attn_pooling = AttentionPooling(dim, backbone.config.num_attention_heads, out_dim=dim)
            width = dim
        else:
            raise ValueError(f"unknown cls_target {cls_target!r}; expected cls_patch_concat, attention_pooling, "
                             "clip_projector or cls_token")
        self.num_features = width
        if head_norm_type == "bn":
            self.norm = nn.BatchNorm1d(width, eps=1e-6)
        elif head_norm_type == "ln":
            self.norm = nn.LayerNorm(width, eps=1e-6)
        else:
            raise ValueError(f"head_norm_type must be 'bn' or 'ln', got {head_norm_type!r}")
        self.head = nn.Linear(width, num_classes)
        if not self.head.weight.is_meta:
            nn.init.normal_(self.head.weight, std=0.01)
            nn.init.zeros_(self.head.bias)
        if freeze_backbone:
            for module in self.frozen_modules():
                module.requires_grad_(False)
        self.register_state_dict_post_hook(_to_classification_names)
        self.register_load_state_dict_pre_hook(_from_classification_names)

    def frozen_modules(self) -> list[nn.Module]:
        modules = [self.backbone]
        if self.cls_target == "clip_projector":
            modules.append(self.clip_projector)
        return modules

    def trainable_prefixes(self) -> tuple[str, ...]:
        """State-dict name prefixes of what training changes (``()``: everything)."""
        if not self.freeze_backbone:
            return ()
        return ("norm.", "head.") + (("attn_pooling.",) if self.cls_target == "attention_pooling" else ())

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint has to keep: the head (and its norm statistics), or everything if unfrozen."""
        prefixes = self.trainable_prefixes()
        return OrderedDict((k, v) for k, v in self.state_dict().items() if not prefixes or k.startswith(prefixes))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_backbone:  # a frozen backbone always computes the same function
            for module in self.frozen_modules():
                module.eval()
        return self

    def _pool(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.cls_target == "cls_patch_concat":
            return torch.cat([tokens[:, 0], tokens[:, 1:].mean(dim=1)], dim=-1)
        if self.cls_target == "cls_token":
            return tokens[:, 0]
        if self.cls_target == "clip_projector":
            return self.clip_projector(tokens)
        return tokens  # attention_pooling: the head pools

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """What the trained part consumes: pooled features, or all tokens for ``attention_pooling``."""
        if not self.freeze_backbone:
            return self._pool(self.backbone(pixel_values).last_hidden_state)
        if self.frozen_forward == "inference_mode":
            with torch.inference_mode():
                features = self._pool(self.backbone(pixel_values).last_hidden_state)
            # Inference tensors cannot be saved for backward; a clone outside inference mode is a normal tensor.
            return features if torch.is_inference_mode_enabled() else features.clone()
        with torch.no_grad():
            return self._pool(self.backbone(pixel_values).last_hidden_state)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        if self.cls_target == "attention_pooling":
            features = self.attn_pooling(features.to(self.attn_pooling.norm1_q.weight.dtype))
        return self.head(self.norm(features.to(self.norm.weight.dtype)))

    def forward(self, pixel_values: Optional[torch.Tensor] = None, features: Optional[torch.Tensor] = None):
        """Logits ``(B, num_classes)`` from images, or from precomputed ``features`` (the feature cache)."""
        if features is None:
            if pixel_values is None:
                raise ValueError("InternViTClassifier needs pixel_values or features")
            features = self.forward_features(pixel_values)
        return self.forward_head(features)


# --------------------------------------------------------------------------- checkpoint names
def _to_classification_names(module, state_dict, prefix, local_metadata) -> None:
    """``backbone.embeddings.position_embedding`` -> ``pos_embed`` etc., keeping the order of the dict."""
    inner = prefix + "backbone."
    items = list(state_dict.items())
    state_dict.clear()
    for key, value in items:
        if key.startswith(inner):
            key = prefix + rename_timm_hf(key[len(inner):], to_hf=False)
        state_dict[key] = value


def _from_classification_names(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                               error_msgs) -> None:
    for key in [k for k in state_dict if k.startswith(prefix)]:
        hf_name = rename_timm_hf(key[len(prefix):], to_hf=True)
        if hf_name is not None:
            state_dict[prefix + "backbone." + hf_name] = state_dict.pop(key)


def _describe_head(model: InternViTClassifier) -> str:
    return (f"MODEL.NUM_CLASSES={model.head.out_features}, MODEL.INTERN_VIT_6B.CLS_TARGET={model.cls_target}, "
            f"EMBED_DIM={model.backbone.config.hidden_size}")


def load_classifier_weights(model: InternViTClassifier, state_dict: dict, source: str,
                            require: tuple[str, ...] = ()) -> list[str]:
    """Load classification-named tensors into ``model``, checking every name and shape first.

    Any subset of the model's tensors may be given (a head-only file, or a full model); names the
    model does not have and shapes that differ are errors naming the tensor, as are missing
    tensors under the ``require`` prefixes. Returns the names loaded.
    """
    expected = model.state_dict()
    unexpected = sorted(k for k in state_dict if k not in expected)
    if unexpected:
        raise CheckpointError(f"{source}: {len(unexpected)} tensors are not in this model ({', '.join(unexpected[:6])}"
                         f"{'...' if len(unexpected) > 6 else ''}); the model has {_describe_head(model)}")
    for key, value in state_dict.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(f"{source}: {key} has shape {tuple(value.shape)} in the checkpoint but "
                             f"{tuple(expected[key].shape)} in the model ({_describe_head(model)}); the checkpoint "
                             "was trained for another head: fix the config or use a matching checkpoint")
    missing = sorted(k for k in expected if k.startswith(require) and k not in state_dict) if require else []
    if missing:
        raise CheckpointError(f"{source}: missing tensors {', '.join(missing[:6])}{'...' if len(missing) > 6 else ''} "
                         f"(the model has {_describe_head(model)})")
    model.load_state_dict(state_dict, strict=False)
    return list(state_dict)


# --------------------------------------------------------------------------- building
def load_backbone(path: str, config: InternVisionConfig, dtype: Optional[torch.dtype] = None):
    """InternViT from a classification ``.pth`` or an HF directory; returns ``(model, other_tensors)``.

    ``other_tensors`` are the non-backbone tensors of a ``.pth`` (e.g. ``clip_projector.*``).
    The architecture in ``config`` must match the checkpoint: a difference names the field.
    """
    hint = "set MODEL.INTERN_VIT_6B.{EMBED_DIM, NUM_HEADS, DEPTH, MLP_RATIO, PATCH_SIZE, PRETRAIN_SIZE, ...} to match"
    if os.path.isdir(path):
        model = InternVisionModel.from_pretrained(path, torch_dtype=dtype, low_cpu_mem_usage=True)
        for field in ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "patch_size",
                      "qkv_bias", "qk_normalization", "norm_type"):
            if getattr(model.config, field) != getattr(config, field):
                raise ConfigError(f"{path}: config.json has {field}={getattr(model.config, field)!r} but the "
                                 f"classification config gives {getattr(config, field)!r}; {hint}")
        model.config.drop_path_rate = config.drop_path_rate
        return model, {}
    if not os.path.isfile(path):
        raise MissingFileError(f"MODEL.INTERN_VIT_6B.PRETRAINED: {path} not found; see pretrained/README.md for "
                                "intern_vit_6b_224px.pth (or give an InternViT HF directory)")
    try:
        return InternVisionModel.from_classification_checkpoint(path, config=config, torch_dtype=dtype,
                                                                return_unused=True)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}; {hint}") from None


def build_model(config, dtype: Optional[torch.dtype] = None) -> InternViTClassifier:
    """The classifier of a yacs config, with the backbone from ``MODEL.INTERN_VIT_6B.PRETRAINED`` if set.

    ``dtype`` casts a loaded backbone (None keeps the checkpoint's dtype); a random backbone is fp32.
    """
    vit = config.MODEL.INTERN_VIT_6B
    vcfg = vision_config(config)
    other = {}
    if vit.PRETRAINED:
        backbone, other = load_backbone(vit.PRETRAINED, vcfg, dtype)
        logger.info("backbone loaded from %s", vit.PRETRAINED)
    else:
        logger.warning("MODEL.INTERN_VIT_6B.PRETRAINED is not set: the backbone is randomly initialised")
        backbone = InternVisionModel(vcfg)
    model = InternViTClassifier(
        backbone, config.MODEL.NUM_CLASSES, cls_target=vit.CLS_TARGET, head_norm_type=vit.HEAD_NORM_TYPE,
        freeze_backbone=vit.FREEZE_VIT, frozen_forward=vit.FROZEN_FORWARD,
        attn_pool_num_heads=vit.ATTN_POOL_NUM_HEADS, clip_embed_dim=vit.CLIP_EMBED_DIM)
    if vit.CLS_TARGET == "clip_projector":
        projector = {k: v for k, v in other.items() if k.startswith("clip_projector.")}
        if not projector:
            raise ConfigError("CLS_TARGET clip_projector uses InternVL-C's pretrained clip_projector, but "
                             f"MODEL.INTERN_VIT_6B.PRETRAINED={vit.PRETRAINED!r} has no clip_projector.* tensors")
        load_classifier_weights(model, projector, vit.PRETRAINED, require=("clip_projector.",))
        model.clip_projector.to(backbone.dtype)
    ignored = sorted(k for k in other if not k.startswith("clip_projector."))
    if ignored:
        logger.info("%s: %d tensors that are not backbone ignored (%s...)", vit.PRETRAINED, len(ignored),
                    ", ".join(ignored[:4]))
    if config.DATA.IMG_SIZE != backbone.config.image_size:  # once, instead of interpolating in every forward
        backbone.resize_pos_embeddings(config.DATA.IMG_SIZE)
    if config.TRAIN.USE_CHECKPOINT and not vit.FREEZE_VIT:
        enable_activation_checkpointing(backbone)
    return model
