"""InternViT: the vision foundation model of InternVL.

One config covers both published families:

* InternViT-6B (``OpenGVLab/InternViT-6B-224px``, ``-448px-V1-x``): RMSNorm,
  qk-normalization, no qkv bias, hidden 3200, 48 layers, 25 heads.
* InternViT-300M-448px (vision tower of InternVL2-1B..8B): LayerNorm, qkv bias,
  no qk-normalization, hidden 1024, 24 layers, 16 heads.

Tensor names are the OpenGVLab HF names, so ``from_pretrained`` reads the
published directories as they are, and ``save_pretrained`` writes them back.
The original classification ``.pth`` (``intern_vit_6b_224px.pth``) is read by
:meth:`InternVisionModel.from_classification_checkpoint`.
"""
from __future__ import annotations

import logging
import math
import os
import re
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling

from ..errors import MissingFileError
from .layers import DropPath, RMSNorm, attention
from .modeling_utils import WEIGHTS_HELP, InternVLConfigBase, InternVLPreTrainedBase, gathered_parameters
from ..fileio import load_torch_file, unwrap_state_dict

logger = logging.getLogger(__name__)

NORM_TYPES = {"rms_norm": RMSNorm, "layer_norm": nn.LayerNorm}


class InternVisionConfig(InternVLConfigBase):
    """Configuration of :class:`InternVisionModel`; field names and defaults follow the
    published ``config.json`` (defaults = InternViT-6B-224px)."""

    model_type = "intern_vit_6b"

    def __init__(self, num_channels=3, patch_size=14, image_size=224, qkv_bias=False, hidden_size=3200,
                 num_attention_heads=25, intermediate_size=12800, qk_normalization=True, num_hidden_layers=48,
                 use_flash_attn=True, hidden_act="gelu", norm_type="rms_norm", layer_norm_eps=1e-6,
                 dropout=0.0, drop_path_rate=0.0, attention_dropout=0.0, initializer_range=0.02,
                 initializer_factor=0.1, **kwargs):
        kwargs.setdefault("auto_map", {"AutoConfig": "configuration_intern_vit.InternVisionConfig",
                                       "AutoModel": "modeling_intern_vit.InternVisionModel"})
        super().__init__(**kwargs)
        if norm_type not in NORM_TYPES:
            raise ValueError(f"InternVisionConfig.norm_type={norm_type!r} is not one of {sorted(NORM_TYPES)}")
        if hidden_size % num_attention_heads:
            raise ValueError(f"InternVisionConfig.hidden_size={hidden_size} is not divisible by "
                             f"num_attention_heads={num_attention_heads}")
        if image_size % patch_size:
            raise ValueError(f"InternVisionConfig.image_size={image_size} is not a multiple of "
                             f"patch_size={patch_size}")
        self.num_channels = num_channels
        self.patch_size = patch_size
        self.image_size = image_size
        self.qkv_bias = qkv_bias
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.qk_normalization = qk_normalization
        self.num_hidden_layers = num_hidden_layers
        self.use_flash_attn = use_flash_attn
        self.hidden_act = hidden_act
        self.norm_type = norm_type
        self.layer_norm_eps = layer_norm_eps
        self.dropout = dropout
        self.drop_path_rate = drop_path_rate
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.initializer_factor = initializer_factor  # initial value of the layer scales ls1/ls2

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        # A chat or InternVL-C/G directory nests the vision config: read that part.
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        return config_dict.get("vision_config", config_dict), kwargs


class InternVisionEmbeddings(nn.Module):
    """Patch embedding + class token + position embedding, interpolated to the input grid."""

    def __init__(self, config: InternVisionConfig):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.patch_size = config.patch_size
        grid = config.image_size // config.patch_size
        self.class_embedding = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        self.patch_embedding = nn.Conv2d(config.num_channels, self.embed_dim,
                                         kernel_size=self.patch_size, stride=self.patch_size)
        self.position_embedding = nn.Parameter(torch.zeros(1, grid * grid + 1, self.embed_dim))

    @property
    def grid_size(self) -> int:
        """Side of the square patch grid the stored position embedding was trained at."""
        tokens = getattr(self.position_embedding, "ds_shape", self.position_embedding.shape)[1]  # ZeRO-3: full shape
        return math.isqrt(tokens - 1)

    def interpolate_pos_embed(self, height: int, width: int) -> torch.Tensor:
        """Position embedding for a ``height x width`` patch grid (bicubic in fp32, as the reference)."""
        pos = self.position_embedding
        grid = self.grid_size
        if (height, width) == (grid, grid):
            return pos
        patch_pos = pos[:, 1:].float().reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=(height, width), mode="bicubic", align_corners=False)
        patch_pos = patch_pos.flatten(2).transpose(1, 2).to(pos.dtype)
        return torch.cat([pos[:, :1], patch_pos], dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.ndim != 4:
            raise ValueError(f"pixel_values must be (batch, channels, height, width), got shape "
                             f"{tuple(pixel_values.shape)}")
        height, width = pixel_values.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"input size {height}x{width} is not a multiple of the patch size {self.patch_size}; "
                             f"resize images to a multiple of {self.patch_size} (e.g. 224 or 448)")
        dtype = self.patch_embedding.weight.dtype
        patches = self.patch_embedding(pixel_values.to(dtype))
        batch, _, grid_h, grid_w = patches.shape
        patches = patches.flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(batch, -1, -1).to(dtype)
        return torch.cat([cls, patches], dim=1) + self.interpolate_pos_embed(grid_h, grid_w).to(dtype)


class InternAttention(nn.Module):
    """Multi-head self-attention; qk-normalization (6B) is an RMSNorm over all heads together."""

    def __init__(self, config: InternVisionConfig):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.use_flash_attn = config.use_flash_attn
        self.attention_dropout = config.attention_dropout
        self.qkv = nn.Linear(self.embed_dim, 3 * self.embed_dim, bias=config.qkv_bias)
        self.qk_normalization = config.qk_normalization
        if self.qk_normalization:
            self.q_norm = RMSNorm(self.embed_dim, eps=config.layer_norm_eps)
            self.k_norm = RMSNorm(self.embed_dim, eps=config.layer_norm_eps)
        self.proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.proj_drop = nn.Dropout(config.dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = hidden_states.shape
        q, k, v = self.qkv(hidden_states).unflatten(-1, (3, self.embed_dim)).unbind(2)
        if self.qk_normalization:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2) for t in (q, k, v))
        out = attention(q, k, v, dropout_p=self.attention_dropout if self.training else 0.0,
                        allow_flash=self.use_flash_attn)
        out = out.transpose(1, 2).reshape(batch, seq, self.embed_dim)
        return self.proj_drop(self.proj(out))


class InternMLP(nn.Module):
    def __init__(self, config: InternVisionConfig):
        super().__init__()
        self.act = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class InternVisionEncoderLayer(nn.Module):
    """Pre-norm transformer block with layer scale (``ls1``/``ls2``) and stochastic depth."""

    def __init__(self, config: InternVisionConfig, drop_path_rate: float):
        super().__init__()
        dim = config.hidden_size
        norm = NORM_TYPES[config.norm_type]
        self.attn = InternAttention(config)
        self.mlp = InternMLP(config)
        self.norm1 = norm(dim, eps=config.layer_norm_eps)
        self.norm2 = norm(dim, eps=config.layer_norm_eps)
        self.ls1 = nn.Parameter(config.initializer_factor * torch.ones(dim))
        self.ls2 = nn.Parameter(config.initializer_factor * torch.ones(dim))
        self.drop_path1 = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.drop_path2 = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.drop_path1(self.attn(self.norm1(hidden_states)) * self.ls1)
        return hidden_states + self.drop_path2(self.mlp(self.norm2(hidden_states)) * self.ls2)


class InternVisionEncoder(nn.Module):
    def __init__(self, config: InternVisionConfig):
        super().__init__()
        depth = config.num_hidden_layers
        # stochastic depth grows linearly with depth (as torch.linspace, but also on the meta device)
        rates = [config.drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.layers = nn.ModuleList(InternVisionEncoderLayer(config, rate) for rate in rates)
        self.gradient_checkpointing = False

    def forward(self, inputs_embeds: torch.Tensor, output_hidden_states: bool = False) -> BaseModelOutput:
        hidden_states = inputs_embeds
        all_states = (hidden_states,) if output_hidden_states else None
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                hidden_states = self._gradient_checkpointing_func(layer.__call__, hidden_states)
            else:
                hidden_states = layer(hidden_states)
            if output_hidden_states:
                all_states += (hidden_states,)
        return BaseModelOutput(last_hidden_state=hidden_states, hidden_states=all_states)


class InternVisionModel(InternVLPreTrainedBase):
    """InternViT backbone. ``pooler_output`` is the final class token (no final norm, as published)."""

    config_class = InternVisionConfig
    main_input_name = "pixel_values"
    base_model_prefix = "vision_model"  # lets this class read the vision tower of a chat / C/G checkpoint
    supports_gradient_checkpointing = True
    _no_split_modules = ["InternVisionEncoderLayer"]

    def __init__(self, config: InternVisionConfig):
        super().__init__(config)
        self.embeddings = InternVisionEmbeddings(config)
        self.encoder = InternVisionEncoder(config)
        self.post_init()

    def layer_id(self, name: str) -> int:
        """The layer of parameter ``name`` (relative to this model; a LoRA wrapper's ``base_model.model.`` is
        allowed) for layer-wise learning-rate decay, timm's ``group_matcher`` idea: the embeddings 0, encoder
        layer ``i`` ``i + 1``, anything else ``num_hidden_layers + 1``."""
        if re.match(r"(base_model\.model\.)?embeddings\.", name):
            return 0
        block = re.search(r"(^|\.)encoder\.layers\.(\d+)\.", name)
        return int(block[2]) + 1 if block else self.config.num_hidden_layers + 1

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, RMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, InternVisionEmbeddings):
            nn.init.trunc_normal_(module.class_embedding, std=std)
            nn.init.trunc_normal_(module.position_embedding, std=std)
        elif isinstance(module, InternVisionEncoderLayer):
            nn.init.constant_(module.ls1, self.config.initializer_factor)
            nn.init.constant_(module.ls2, self.config.initializer_factor)

    def get_input_embeddings(self) -> InternVisionEmbeddings:
        return self.embeddings

    def forward(self, pixel_values: Optional[torch.Tensor] = None, output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None, pixel_embeds: Optional[torch.Tensor] = None,
                ) -> Union[tuple, BaseModelOutputWithPooling]:
        """Encode images.

        Args:
            pixel_values: ``(batch, 3, H, W)`` with H, W multiples of the patch size; position
                embeddings are interpolated when the grid differs from the trained one.
            output_hidden_states: also return the embeddings and every layer's output
                (``num_hidden_layers + 1`` tensors).
            pixel_embeds: already-embedded tokens ``(batch, seq, hidden)`` instead of pixels.
        """
        output_hidden_states = (self.config.output_hidden_states if output_hidden_states is None
                                else output_hidden_states)
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if pixel_embeds is None:
            if pixel_values is None:
                raise ValueError("InternVisionModel needs pixel_values or pixel_embeds")
            pixel_embeds = self.embeddings(pixel_values)
        encoded = self.encoder(pixel_embeds, output_hidden_states=output_hidden_states)
        last = encoded.last_hidden_state
        if not return_dict:
            return (last, last[:, 0]) + ((encoded.hidden_states,) if output_hidden_states else ())
        return BaseModelOutputWithPooling(last_hidden_state=last, pooler_output=last[:, 0],
                                          hidden_states=encoded.hidden_states)

    def resize_pos_embeddings(self, new_size: int, old_size: Optional[int] = None,
                              patch_size: Optional[int] = None) -> None:
        """Resize the stored position embedding to ``new_size`` pixels for fine-tuning at that size.

        Unlike the on-the-fly interpolation of ``forward``, this changes the parameter and
        ``config.image_size``, so ``save_pretrained`` writes a model native to ``new_size``.
        ``old_size`` and ``patch_size`` (the upstream signature) are checked if given.
        """
        patch = self.config.patch_size
        current = self.embeddings.grid_size * patch
        if patch_size is not None and patch_size != patch:
            raise ValueError(f"patch_size={patch_size} but this model's patch size is {patch}")
        if old_size is not None and old_size != current:
            raise ValueError(f"old_size={old_size} but the position embedding is for {current}px")
        if new_size % patch:
            raise ValueError(f"new_size={new_size} is not a multiple of the patch size {patch}")
        grid = new_size // patch
        old = self.embeddings.position_embedding
        with torch.no_grad(), gathered_parameters([old]):
            resized = self.embeddings.interpolate_pos_embed(grid, grid).clone()
        self.embeddings.position_embedding = nn.Parameter(resized, requires_grad=old.requires_grad)
        self.config.image_size = new_size
        logger.info("resized InternViT position embeddings from %dpx to %dpx", current, new_size)

    @classmethod
    def from_classification_checkpoint(cls, checkpoint: Union[str, os.PathLike, dict],
                                       config: Optional[InternVisionConfig] = None,
                                       torch_dtype: Optional[torch.dtype] = None,
                                       return_unused: bool = False):
        """Load the original classification ``.pth`` (e.g. ``intern_vit_6b_224px.pth``).

        ``checkpoint`` is a path or an already-loaded state dict, optionally nested under
        ``module`` (DeepSpeed) or ``model``. The architecture is read from the tensor shapes;
        ``config`` is needed only for what shapes cannot tell (the number of heads of a
        non-6B width) and is checked against the shapes. Tensors that are not backbone
        (a linear-probe head: ``norm.*``, ``head.*``, ``clip_projector.*``) are returned
        with ``return_unused=True``, else logged.
        """
        state_dict = (unwrap_state_dict(checkpoint, "the state dict given") if isinstance(checkpoint, dict)
                      else load_state_dict_file(checkpoint))
        backbone, unused = convert_classification_state_dict(state_dict)
        config = config_from_state_dict(backbone, config)
        with torch.device("meta"):
            model = cls(config)
        model.load_state_dict(_cast(backbone, torch_dtype), strict=True, assign=True)
        model.eval()
        if unused and not return_unused:
            logger.info("classification checkpoint: %d non-backbone tensors not loaded (%s...)",
                        len(unused), ", ".join(sorted(unused)[:4]))
        return (model, unused) if return_unused else model


def _cast(state_dict: dict, dtype: Optional[torch.dtype]) -> dict:
    if dtype is None:
        return state_dict
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}


def load_state_dict_file(path: Union[str, os.PathLike]) -> dict:
    """Read a ``.pth``/``.bin``/``.safetensors`` state dict memory-mapped (no second copy in RAM),
    unwrapping the ``model`` / ``module`` / ``state_dict`` nesting of training checkpoints
    (:func:`internvl.fileio.unwrap_state_dict`). A damaged ``.pth``/``.bin`` is an error naming it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"checkpoint not found: {path}; {WEIGHTS_HELP}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    return unwrap_state_dict(load_torch_file(path, mmap=True), path)


# The classification .pth uses timm's ViT names; one table maps them to the HF names and back.
_TIMM_TO_HF_NAMES = [
    ("pos_embed", "embeddings.position_embedding"),
    ("cls_token", "embeddings.class_embedding"),
    ("patch_embed.proj.{rest}", "embeddings.patch_embedding.{rest}"),
    ("blocks.{layer}.ls1.gamma", "encoder.layers.{layer}.ls1"),
    ("blocks.{layer}.ls2.gamma", "encoder.layers.{layer}.ls2"),
    ("blocks.{layer}.{rest}", "encoder.layers.{layer}.{rest}"),
]


def _name_pattern(template: str) -> re.Pattern:
    pattern = re.escape(template).replace(r"\{layer\}", r"(?P<layer>\d+)").replace(r"\{rest\}", r"(?P<rest>.+)")
    return re.compile(pattern + "$")


def rename_with_table(name: str, table: list, to_hf: bool = True) -> Optional[str]:
    """Translate one tensor name with a table of ``(checkpoint name, HF name)`` templates, in either direction;
    ``{layer}`` stands for a layer number and ``{rest}`` for the rest of the name. None: no template matches."""
    for checkpoint_name, hf_name in table:
        source, target = (checkpoint_name, hf_name) if to_hf else (hf_name, checkpoint_name)
        match = _name_pattern(source).match(name)
        if match:
            return target.format(**match.groupdict())
    return None


def rename_timm_hf(name: str, to_hf: bool = True) -> Optional[str]:
    """Translate one tensor name between the timm/classification and HF layouts (None: not backbone)."""
    return rename_with_table(name, _TIMM_TO_HF_NAMES, to_hf)


def convert_classification_state_dict(state_dict: dict) -> tuple[dict, dict]:
    """Rename classification-format tensors to HF names; return ``(backbone, other)``.

    ``other`` keeps what is not backbone under its original names (the linear-probe head).
    """
    backbone, other = {}, {}
    for name, tensor in state_dict.items():
        hf_name = rename_timm_hf(name)
        if hf_name is None:
            other[name] = tensor
        else:
            backbone[hf_name] = tensor
    if not backbone:
        raise ValueError("no InternViT backbone tensors (pos_embed, cls_token, patch_embed.*, blocks.*) in this "
                         f"checkpoint; its first keys are {sorted(state_dict)[:5]}")
    return backbone, other


def config_from_state_dict(state_dict: dict, config: Optional[InternVisionConfig] = None) -> InternVisionConfig:
    """Read the architecture off HF-named backbone tensors; check it against ``config`` if given."""
    def shape(name):
        if name not in state_dict:
            raise KeyError(f"backbone tensor {name!r} missing from the checkpoint")
        return tuple(state_dict[name].shape)

    hidden, channels, patch, _ = shape("embeddings.patch_embedding.weight")
    grid = math.isqrt(shape("embeddings.position_embedding")[1] - 1)
    layer_ids = {int(m.group(1)) for k in state_dict if (m := re.match(r"encoder\.layers\.(\d+)\.", k))}
    found = dict(
        hidden_size=hidden, num_channels=channels, patch_size=patch, image_size=grid * patch,
        num_hidden_layers=len(layer_ids),
        intermediate_size=shape("encoder.layers.0.mlp.fc1.weight")[0],
        qkv_bias="encoder.layers.0.attn.qkv.bias" in state_dict,
        qk_normalization="encoder.layers.0.attn.q_norm.weight" in state_dict,
        norm_type="layer_norm" if "encoder.layers.0.norm1.bias" in state_dict else "rms_norm",
    )
    if config is None:
        if hidden != 3200:
            raise ValueError(f"the checkpoint has hidden size {hidden}, not InternViT-6B's 3200: pass "
                             "config=InternVisionConfig(num_attention_heads=..., ...) to say how many heads it has")
        return InternVisionConfig(**found)
    for field, value in found.items():
        if getattr(config, field) != value:
            raise ValueError(f"config.{field}={getattr(config, field)!r} but the checkpoint tensors say {value!r}")
    return config


def to_timm_vision_transformer(model: InternVisionModel):
    """The same network as a ``timm`` VisionTransformer (LayerNorm family only, e.g. InternViT-300M).

    InternViT-300M is a plain pre-norm ViT with layer scale, so timm computes it exactly; the
    6B family's RMSNorm and all-heads qk-normalization have no timm equivalent. Output tokens
    from ``forward_features`` equal ``last_hidden_state`` at the trained resolution.
    """
    from functools import partial

    from timm.models.vision_transformer import VisionTransformer

    cfg = model.config
    if cfg.norm_type != "layer_norm" or cfg.qk_normalization or cfg.hidden_act != "gelu":
        raise ValueError("only LayerNorm InternViT without qk-normalization (InternViT-300M family) maps to timm")
    vit = VisionTransformer(
        img_size=cfg.image_size, patch_size=cfg.patch_size, in_chans=cfg.num_channels, num_classes=0,
        embed_dim=cfg.hidden_size, depth=cfg.num_hidden_layers, num_heads=cfg.num_attention_heads,
        mlp_ratio=cfg.intermediate_size / cfg.hidden_size, qkv_bias=cfg.qkv_bias, init_values=cfg.initializer_factor,
        final_norm=False, norm_layer=partial(nn.LayerNorm, eps=cfg.layer_norm_eps), act_layer=nn.GELU,
    )
    vit.load_state_dict({rename_timm_hf(k, to_hf=False): v for k, v in model.state_dict().items()}, strict=True)
    return vit.to(model.dtype).eval()


def register_intern_vit() -> None:
    """Let ``AutoConfig`` / ``AutoModel`` read ``model_type: intern_vit_6b`` directories with these classes
    (no ``trust_remote_code``, no download). Done when this module is imported; safe to call again."""
    from transformers import AutoConfig, AutoModel

    AutoConfig.register(InternVisionConfig.model_type, InternVisionConfig, exist_ok=True)
    AutoModel.register(InternVisionConfig, InternVisionModel, exist_ok=True)


register_intern_vit()
