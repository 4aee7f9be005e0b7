"""InternViT as a dense-prediction backbone: feature maps of chosen layers, optionally as a 4-level pyramid.

The network is the library's :class:`internvl.InternVisionModel` (the published InternViT, loaded from
``intern_vit_6b_224px.pth`` or an HF directory); this module adds what segmentation needs on top:

* ``out_indices``: which layers' token maps to return, class token removed, as ``(B, C, H/14, W/14)``;
* ``with_fpn``: upstream's pyramid over four such maps: ``up1`` (two 2x transposed convs, 14 -> 3.5 px),
  ``up2`` (one, -> 7 px), ``up3`` (identity, 14 px), ``up4`` (2x max-pool, 28 px);
* ``freeze_vit``: the ViT's parameters stop training (the pyramid still trains, as upstream), and its
  forward then runs without autograd, so a frozen backbone stores no activations;
* ``with_cp``: gradient checkpointing of the ViT layers when they train (transformers' default settings).

It is a transformers backbone (``BackboneMixin``, registered with ``AutoConfig``/``AutoBackbone`` under
``model_type="intern_vit_backbone"``), so it plugs into transformers' own segmentation models::

    from transformers import UperNetConfig, UperNetForSemanticSegmentation
    from segmentation.backbone import InternViTBackboneConfig
    backbone = InternViTBackboneConfig(vision_config=..., out_indices=[12, 24, 36, 48], with_fpn=True)
    model = UperNetForSemanticSegmentation(UperNetConfig(backbone_config=backbone, num_labels=150))

Indices follow transformers' backbone convention: ``stage_names = ["stem", "stage1", ..., "stageN"]``,
``stage k`` being the output of layer ``k`` (1-based), so upstream's 0-based ``out_indices=[11, 23, 35, 47]``
are stages ``[12, 24, 36, 48]``. :func:`backbone_config_from_upstream` translates upstream's
``InternViT6B(...)`` arguments, and :class:`MMSegInternViT6B` is the same backbone under upstream's name
for MMSegmentation 1.x (registered by :func:`register_mmseg` when mmseg is importable; never required).
"""
from __future__ import annotations

import difflib
import logging
import math
import os
from pathlib import Path
from typing import Optional

import torch
from torch import nn
from transformers import AutoBackbone, AutoConfig, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BackboneOutput

from internvl.compat import (BackboneConfigMixin, BackboneMixin, enable_activation_checkpointing,
                             init_backbone_mixin, set_backbone_outputs)
from internvl.errors import CheckpointError, ConfigError, MissingFileError
from internvl.models.intern_vit import InternVisionConfig, InternVisionModel

logger = logging.getLogger(__name__)

__all__ = ["InternViTBackboneConfig", "InternViTBackbone", "backbone_config_from_upstream", "build_backbone",
           "MMSegInternViT6B", "register_mmseg", "UPSTREAM_BACKBONE_ARGS"]


class InternViTBackboneConfig(BackboneConfigMixin, PretrainedConfig):
    """Configuration of :class:`InternViTBackbone`: the ViT's own config plus the dense-output options."""

    model_type = "intern_vit_backbone"

    def __init__(self, vision_config: Optional[dict | InternVisionConfig] = None, out_features=None, out_indices=None,
                 with_fpn: bool = False, with_final_norm: bool = False, freeze_vit: bool = False,
                 with_cp: bool = False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(vision_config, InternVisionConfig):
            vision_config = vision_config.to_dict()
        self.vision_config = InternVisionConfig(**(vision_config or {}))
        depth = self.vision_config.num_hidden_layers
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, depth + 1)]
        set_backbone_outputs(self, out_features, list(out_indices) if out_indices is not None else None)
        if with_fpn and len(self._out_indices) != 4:
            raise ValueError(f"with_fpn builds a 4-level pyramid and needs 4 out_indices, got {self._out_indices}")
        self.with_fpn, self.with_final_norm = with_fpn, with_final_norm
        self.freeze_vit, self.with_cp = freeze_vit, with_cp

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["vision_config"] = self.vision_config.to_dict()
        return out


def _fpn_norm(dim: int, enabled: bool = True) -> nn.Module:
    """Upstream's channels-first LayerNorm (eps 1e-6), or an identity where upstream has none."""
    from timm.layers import LayerNorm2d
    return LayerNorm2d(dim, eps=1e-6) if enabled else nn.Identity()


class InternViTBackbone(BackboneMixin, PreTrainedModel):
    """Feature maps of an InternViT (see the module doc). ``vit`` lets a caller pass an already loaded
    :class:`InternVisionModel` (so a 6B checkpoint is never materialised twice)."""

    config_class = InternViTBackboneConfig
    main_input_name = "pixel_values"
    base_model_prefix = "backbone"
    supports_gradient_checkpointing = True
    has_attentions = False
    _no_split_modules = ["InternVisionEncoderLayer"]

    def __init__(self, config: InternViTBackboneConfig, vit: Optional[InternVisionModel] = None):
        super().__init__(config)
        init_backbone_mixin(self, config)
        dim = config.vision_config.hidden_size
        self.num_features = [dim] * (config.vision_config.num_hidden_layers + 1)
        if vit is None:
            self.vit = InternVisionModel(config.vision_config)
        if config.with_fpn:
            final = config.with_final_norm
            self.up1 = nn.Sequential(nn.ConvTranspose2d(dim, dim, 2, 2), _fpn_norm(dim), nn.GELU(),
                                     nn.ConvTranspose2d(dim, dim, 2, 2), _fpn_norm(dim, final))
            self.up2 = nn.Sequential(nn.ConvTranspose2d(dim, dim, 2, 2), _fpn_norm(dim, final))
            self.up3 = nn.Sequential(nn.Identity(), _fpn_norm(dim, final))
            self.up4 = nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=2), _fpn_norm(dim, final))
        self.post_init()
        if vit is not None:  # after post_init, which (transformers 5) would initialise its weights again
            self.vit = vit
        if config.freeze_vit:
            self.vit.requires_grad_(False)
        if config.with_cp and not config.freeze_vit:  # a frozen ViT runs without autograd: nothing to save
            enable_activation_checkpointing(self.vit)

    def _init_weights(self, module: nn.Module) -> None:
        # Only the pyramid is this class's own; the ViT initialises (or loads) itself. As upstream:
        # transposed convs N(0, sqrt(2 / fan_out)), norms 1 / 0.
        if isinstance(module, nn.ConvTranspose2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            nn.init.zeros_(module.bias)
        elif type(module).__name__ == "LayerNorm2d":
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @property
    def vit_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.vit.parameters())

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: Optional[bool] = None,
                output_attentions: Optional[bool] = None, return_dict: Optional[bool] = None):
        """``feature_maps``: one ``(B, hidden, H/14, W/14)`` map per out index in the ViT's dtype, or with
        ``with_fpn`` the pyramid at strides 3.5 / 7 / 14 / 28 (H/14 must then be even)."""
        if output_attentions:
            raise ValueError("InternViTBackbone does not return attention maps")
        return_dict = self.config.return_dict if return_dict is None else return_dict
        height, width = pixel_values.shape[-2:]
        patch = self.config.vision_config.patch_size
        grad = torch.is_grad_enabled() and not self.vit_frozen
        with torch.set_grad_enabled(grad):
            if output_hidden_states:
                states = self.vit(pixel_values, output_hidden_states=True, return_dict=True).hidden_states
                selected = [states[i] for i in self.out_indices]
            else:
                states, selected = None, self._selected_states(pixel_values)
        maps = []
        for tokens in selected:
            tokens = tokens[:, 1:]  # drop the class token
            maps.append(tokens.transpose(1, 2).reshape(tokens.shape[0], -1, height // patch, width // patch))
        if self.config.with_fpn:
            maps = [up(x) for up, x in zip((self.up1, self.up2, self.up3, self.up4), maps)]
        maps = tuple(m.contiguous() for m in maps)
        if not return_dict:
            return (maps,) + ((states,) if output_hidden_states else ())
        return BackboneOutput(feature_maps=maps, hidden_states=states, attentions=None)

    def _selected_states(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The token states of the out stages, caught by hooks: only those are kept (not all N + 1), and the
        layers after the last one do not run (linear probing reads layer 44 of 48) unless checkpointing
        recomputes them in the backward pass."""
        captured: dict[int, torch.Tensor] = {}
        # Not under gradient checkpointing: the backward pass re-runs the layers, hooks included.
        recomputes = self.vit.encoder.gradient_checkpointing and self.vit.training and torch.is_grad_enabled()
        last = None if recomputes else max(self.out_indices)

        def catch(index):
            def hook(module, args, output):
                captured.setdefault(index, output)
                if index == last:
                    raise _EnoughLayers
            return hook

        handles = [(self.vit.embeddings if i == 0 else self.vit.encoder.layers[i - 1]).register_forward_hook(catch(i))
                   for i in set(self.out_indices)]
        try:
            self.vit(pixel_values, return_dict=True)
        except _EnoughLayers:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return [captured[i] for i in self.out_indices]


class _EnoughLayers(Exception):
    """Ends the ViT's forward once the last feature map the backbone returns is computed."""


AutoConfig.register(InternViTBackboneConfig.model_type, InternViTBackboneConfig, exist_ok=True)
AutoBackbone.register(InternViTBackboneConfig, InternViTBackbone, exist_ok=True)


# ------------------------------------------------------------------------------------------- upstream arguments
# InternViT6B(...) of upstream's mmseg_custom, with its defaults. layerscale_force_fp32 (older name:
# layerscale_no_force_fp32, inverted) only says in which dtype the layer scale multiplies; the library
# multiplies in the backbone's dtype, which is upstream's setting in every config (force_fp32 False).
UPSTREAM_BACKBONE_ARGS = dict(
    type="InternViT6B", in_chans=3, patch_size=14, img_size=224, pretrain_size=224, qkv_bias=False,
    drop_path_rate=0.0, embed_dim=3200, num_heads=25, mlp_ratio=4, init_values=0.1, qk_normalization=True,
    depth=48, use_flash_attn=True, with_cp=True, layerscale_force_fp32=False, layerscale_no_force_fp32=True,
    out_indices=[7, 11, 15, 23], freeze_vit=False, unfreeze_pos_embed=False, with_fpn=False, with_final_norm=False,
    pretrained=None)


def check_keys(given: dict, known, where: str) -> None:
    """An unknown key is an error that names it (and the nearest known one)."""
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"
            raise ConfigError(f"unknown key {where}.{key}{hint}")


def backbone_config_from_upstream(args: dict, where: str = "model.backbone") -> tuple[InternViTBackboneConfig, dict]:
    """Upstream's ``backbone=dict(type='InternViT6B', ...)`` -> ``(InternViTBackboneConfig, loading options)``.

    The loading options are ``pretrained`` (``.pth``, HF directory or None), ``pretrain_size`` (the grid the
    checkpoint's position embedding was trained at) and ``img_size`` (the size it is interpolated to).
    """
    check_keys(args, UPSTREAM_BACKBONE_ARGS, where)
    a = {**UPSTREAM_BACKBONE_ARGS, **args}
    if a["type"] != "InternViT6B":
        raise ConfigError(f"{where}.type={a['type']!r}: the backbone of this pipeline is InternViT6B")
    if a["layerscale_force_fp32"] or not a["layerscale_no_force_fp32"]:
        raise ConfigError(f"{where}.layerscale_force_fp32=True is not supported: the layer scales multiply in the "
                          "backbone's dtype (upstream's setting in every published config)")
    if a["unfreeze_pos_embed"]:
        raise ConfigError(f"{where}.unfreeze_pos_embed=True is not supported (no published config uses it)")
    for key in ("img_size", "pretrain_size"):
        if a[key] % a["patch_size"]:
            raise ConfigError(f"{where}.{key}={a[key]} is not a multiple of patch_size={a['patch_size']}")
    depth = a["depth"]
    indices = list(a["out_indices"])
    if not indices or any(not 0 <= i < depth for i in indices) or indices != sorted(set(indices)):
        raise ConfigError(f"{where}.out_indices={indices} must be increasing layer numbers in 0..{depth - 1}")
    vision = InternVisionConfig(
        num_channels=a["in_chans"], patch_size=a["patch_size"], image_size=a["img_size"], qkv_bias=a["qkv_bias"],
        hidden_size=a["embed_dim"], num_attention_heads=a["num_heads"],
        intermediate_size=int(a["embed_dim"] * a["mlp_ratio"]), qk_normalization=a["qk_normalization"],
        num_hidden_layers=depth, use_flash_attn=a["use_flash_attn"], norm_type="rms_norm",
        drop_path_rate=a["drop_path_rate"], initializer_factor=a["init_values"])
    config = InternViTBackboneConfig(vision_config=vision, out_indices=[i + 1 for i in indices],
                                     with_fpn=a["with_fpn"], with_final_norm=a["with_final_norm"],
                                     freeze_vit=a["freeze_vit"], with_cp=a["with_cp"])
    return config, {"pretrained": a["pretrained"], "pretrain_size": a["pretrain_size"], "img_size": a["img_size"]}


def _load_vit(pretrained: str, config: InternVisionConfig, pretrain_size: int, dtype: Optional[torch.dtype],
              where: str) -> InternVisionModel:
    """The ViT of ``pretrained`` (classification ``.pth`` or HF directory), checked against ``config``."""
    path = Path(pretrained)
    if not path.exists():
        raise MissingFileError(f"{where}.pretrained: {path} does not exist; see pretrained/README.md for "
                               "intern_vit_6b_224px.pth and the InternViT HF directories")
    expected = InternVisionConfig(**{**config.to_dict(), "image_size": pretrain_size})
    try:
        if path.is_dir():
            vit = InternVisionModel.from_pretrained(path, torch_dtype=dtype, drop_path_rate=config.drop_path_rate)
            for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                          "patch_size", "image_size", "qkv_bias", "qk_normalization", "norm_type"):
                if getattr(vit.config, field) != getattr(expected, field):
                    raise ValueError(f"config.{field}={getattr(expected, field)!r} but the checkpoint has "
                                     f"{getattr(vit.config, field)!r}")
        else:
            vit = InternVisionModel.from_classification_checkpoint(path, config=expected, torch_dtype=dtype)
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{where}.pretrained={path} does not match the backbone of the config: {err}. "
                              f"Set {where} (embed_dim, depth, num_heads, mlp_ratio, qkv_bias, qk_normalization, "
                              "patch_size, pretrain_size) to the checkpoint's architecture") from None
    vit.config.drop_path_rate = config.drop_path_rate
    vit.config.use_flash_attn = config.use_flash_attn
    for layer in vit.encoder.layers:
        layer.attn.use_flash_attn = config.use_flash_attn
    return vit


def build_backbone(args: dict, dtype: Optional[torch.dtype] = None, where: str = "model.backbone"
                   ) -> InternViTBackbone:
    """The backbone of upstream's ``backbone=dict(...)``: pretrained weights loaded, position embeddings
    interpolated from ``pretrain_size`` to ``img_size``, everything in ``dtype``."""
    config, options = backbone_config_from_upstream(args, where)
    vit = None
    if options["pretrained"]:
        vit = _load_vit(os.fspath(options["pretrained"]), config.vision_config, options["pretrain_size"], dtype,
                        where)
        vit.resize_pos_embeddings(options["img_size"])
        logger.info("backbone: %s, position embeddings %dpx -> %dpx", options["pretrained"],
                    options["pretrain_size"], options["img_size"])
    else:
        logger.warning("backbone: %s.pretrained is None, the InternViT is randomly initialised", where)
    backbone = InternViTBackbone(config, vit=vit)
    if vit is not None:
        backbone.config.vision_config = vit.config
    return backbone.to(dtype) if dtype is not None else backbone


# ------------------------------------------------------------------------------------------- MMSegmentation 1.x
try:
    from mmengine.model import BaseModule as _MMBaseModule
except ImportError:  # pragma: no cover - mmengine is a dependency; keep the module importable without it
    _MMBaseModule = nn.Module


class MMSegInternViT6B(_MMBaseModule):
    """Upstream's ``InternViT6B`` for an MMSegmentation 1.x config: the same arguments, the same outputs
    (a tuple of fp32 maps, the backbone itself in bf16 on GPU as upstream's ``ToBFloat16Hook`` leaves it)."""

    def __init__(self, **kwargs):
        super().__init__()
        dtype = torch.bfloat16 if torch.cuda.is_available() else None
        self.backbone = build_backbone(kwargs, dtype=dtype)

    def forward(self, x: torch.Tensor) -> tuple:
        return tuple(m.float() for m in self.backbone(x).feature_maps)


def register_mmseg(registry=None) -> bool:
    """Register :class:`MMSegInternViT6B` as ``InternViT6B`` in ``registry`` (default: mmseg 1.x's MODELS).
    Returns False, doing nothing, when MMSegmentation (with a working mmcv) is not installed."""
    if registry is None:
        try:
            from mmseg.registry import MODELS as registry
        except Exception:  # ImportError, or an mmcv whose compiled ops do not load
            return False
    registry.register_module(name="InternViT6B", module=MMSegInternViT6B, force=True)
    return True


register_mmseg()
