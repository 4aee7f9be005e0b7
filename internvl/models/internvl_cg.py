"""InternVL-C/G: InternViT-6B + QLLaMA, the 14B image-text model of the InternVL paper.

Two ways to score an image against a text, one model (``OpenGVLab/InternVL-14B-224px``):

* ``InternVL-C`` (contrastive): the image feature is the attention-pooled InternViT output
  (``clip_projector``), the text feature is QLLaMA's last hidden state at the last real token times
  ``text_projection``; logits are ``exp(logit_scale) * cos``.
* ``InternVL-G`` (generative): the image feature is the sum of the unit-length ``InternVL-C`` image feature
  and the unit-length attention-pooled QLLaMA query outputs (``clip_projector2``), the queries having
  cross-attended to the InternViT output. The text side is the same as ``InternVL-C``.

QLLaMA's language-model head also writes captions (:meth:`InternVLModel.generate`). The API is the one of the
published remote code::

    from internvl import InternVLModel, build_cg_tokenizer, image_transform
    from internvl.data.transforms import open_image

    path = "pretrained/InternVL-14B-224px"
    model = InternVLModel.from_pretrained(path, torch_dtype=torch.bfloat16).cuda().eval()
    transform = image_transform(model.config)          # resize to 224 x 224, bicubic, ImageNet mean/std
    pixel_values = torch.stack([transform(open_image(p)) for p in image_paths]).to(torch.bfloat16).cuda()
    tokenizer = build_cg_tokenizer(path, task="retrieval")   # "summarize:" + text, </s>, pad 0 to 80
    input_ids = tokenizer.tokenize(["a photo of a red panda", "一张熊猫的照片"]).input_ids.cuda()
    logits_per_image, logits_per_text = model(image=pixel_values, text=input_ids, mode="InternVL-G")

    captioner = build_cg_tokenizer(path, task="caption")     # "English caption:", no </s>
    prompt = captioner.tokenize([captioner.prompt] * len(image_paths))
    tokens = model.generate(pixel_values=pixel_values, input_ids=prompt.input_ids.cuda(),
                            attention_mask=prompt.attention_mask.cuda(), num_beams=5, min_new_tokens=8,
                            max_new_tokens=30)
    captions = captioner.batch_decode(tokens)                # the new tokens only, special tokens removed

Formats: the HF directory of OpenGVLab/InternVL-14B-224px (``from_pretrained`` / ``save_pretrained``,
tensor names as published) and the original PyTorch ``internvl_c_13b_224px.pth`` (InternVL-C only), read
by :func:`load_internvl_c_pth` into the same class.
"""
from __future__ import annotations

import math
import os
import re
from typing import Optional, Union

import torch
from torch import nn
from transformers import GenerationConfig, LlamaConfig

from ..compat import CACHE_KEY, config_kwargs, output_cache, tied_weights_keys
from .intern_vit import (InternVisionConfig, InternVisionModel, config_from_state_dict, load_state_dict_file,
                         rename_timm_hf, rename_with_table)
from .layers import AttentionPooling, PoolingCrossAttention
from .modeling_utils import InternVLConfigBase, InternVLPreTrainedBase, merge_lora_parts, wrap_lora
from .processing_internvl_cg import CAPTION_PROMPT
from .qllama import QLLAMA_7B_CONFIG, QLLaMAForCausalLM
from ..fileio import unwrap_state_dict


__all__ = ["InternVLConfig", "InternVLModel", "MODES", "load_internvl_c_pth", "rename_internvl_c_pth",
           "register_internvl_cg"]

MODES = ("InternVL-C", "InternVL-G")

# transformers counts max_length over inputs_embeds now; the published code relied on the old default of 20
# new tokens when only embeddings were given.
DEFAULT_MAX_NEW_TOKENS = 20

_AUTO_MAP = {"AutoConfig": "configuration_internvl.InternVLConfig", "AutoModel": "modeling_internvl.InternVLModel"}


class InternVLConfig(InternVLConfigBase):
    """Configuration of :class:`InternVLModel`, with the published ``config.json`` field names.

    Defaults are OpenGVLab/InternVL-14B-224px: InternViT-6B-224px (``vision_config``), QLLaMA-7B
    (``qllama_config``, a ``LlamaConfig``; :data:`internvl.models.qllama.QLLAMA_7B_CONFIG` when not given),
    768-d embeddings, 16-head attention pooling, 96 queries, cross-attention every 2nd layer.

    Args:
        num_query_token: learnable queries of QLLaMA; ``0`` builds an InternVL-C-only model (no queries,
            cross-attention, ``clip_projector2``, ``itm_head`` nor ``lm_head``), what the original
            ``internvl_c_13b_224px.pth`` holds.
        force_image_size: the image size the model runs at when it differs from
            ``vision_config.image_size`` (fine-tuning at 364 px, say): the position embedding is stored at
            that size, as the published code does.
        use_backbone_lora / use_qllama_lora: LoRA rank wrapped around InternViT / QLLaMA at construction
            (0 = none), as the published training code; needs ``peft``.
        label_smoothing: of the stage-2 contrastive loss (training only).
    """

    model_type = "internvl"
    sub_configs = {"vision_config": InternVisionConfig, "qllama_config": LlamaConfig}

    def __init__(self, vision_config: Optional[Union[dict, InternVisionConfig]] = None,
                 qllama_config: Optional[Union[dict, LlamaConfig]] = None, clip_embed_dim: int = 768,
                 attn_pool_num_heads: int = 16, num_query_token: int = 96, label_smoothing: float = 0.0,
                 cross_attention_frequency: int = 2, use_backbone_lora: int = 0, use_qllama_lora: int = 0,
                 force_image_size: Optional[int] = None, initializer_range: float = 0.02, **kwargs):
        kwargs.setdefault("auto_map", dict(_AUTO_MAP))
        super().__init__(**kwargs)
        if isinstance(vision_config, InternVisionConfig):
            vision_config = vision_config.to_dict()
        if isinstance(qllama_config, LlamaConfig):
            qllama_config = qllama_config.to_dict()
        self.vision_config = InternVisionConfig(**(vision_config or {}))
        qllama = dict(QLLAMA_7B_CONFIG) if qllama_config is None else dict(qllama_config)
        for key in ("model_type", "transformers_version"):
            qllama.pop(key, None)
        self.qllama_config = LlamaConfig(**config_kwargs(qllama))
        # As the published configuration: the decoder reads these two from its own config.
        self.qllama_config.num_query_token = num_query_token
        self.qllama_config.cross_attention_frequency = cross_attention_frequency
        self.hidden_size = self.qllama_config.hidden_size
        self.tie_word_embeddings = self.qllama_config.tie_word_embeddings

        self.clip_embed_dim = clip_embed_dim
        self.attn_pool_num_heads = attn_pool_num_heads
        self.num_query_token = num_query_token
        self.label_smoothing = label_smoothing
        self.cross_attention_frequency = cross_attention_frequency
        self.use_backbone_lora = use_backbone_lora
        self.use_qllama_lora = use_qllama_lora
        self.force_image_size = force_image_size
        self.initializer_range = initializer_range
        self._validate()

    def _validate(self) -> None:
        for name, width in (("vision_config.hidden_size", self.vision_config.hidden_size),
                            ("qllama_config.hidden_size", self.qllama_config.hidden_size)):
            if width % self.attn_pool_num_heads:
                raise ValueError(f"InternVLConfig.attn_pool_num_heads={self.attn_pool_num_heads} does not divide "
                                 f"{name}={width}")
        if self.num_query_token < 0 or self.cross_attention_frequency < 1:
            raise ValueError(f"InternVLConfig needs num_query_token >= 0 and cross_attention_frequency >= 1, got "
                             f"{self.num_query_token} and {self.cross_attention_frequency}")
        patch = self.vision_config.patch_size
        if self.force_image_size is not None and self.force_image_size % patch:
            raise ValueError(f"InternVLConfig.force_image_size={self.force_image_size} is not a multiple of the "
                             f"patch size {patch}")

    @property
    def image_size(self) -> int:
        """The image size the model runs at (what the evaluation transforms resize to)."""
        return self.force_image_size or self.vision_config.image_size

    def to_diff_dict(self) -> dict:
        # Nested configs are written in full, as in the published config.json.
        out = super().to_diff_dict()
        full = self.to_dict()
        out["vision_config"], out["qllama_config"] = full["vision_config"], full["qllama_config"]
        return out


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


class InternVLModel(InternVLPreTrainedBase):
    """InternVL-C/G. Tensors: ``vision_model.*`` (InternViT), ``qllama.*`` (QLLaMA), ``query_tokens``,
    ``text_projection``, ``logit_scale``, ``clip_projector.*``, ``clip_projector2.*``, ``itm_head.*``.

    ``from_pretrained(dir, torch_dtype=..., force_image_size=None)``: ``force_image_size`` resizes the
    position embedding after loading (fine-tuning a 224 px checkpoint at 364 px, say) and records it in
    the config; any multiple of 14 also runs without it (the position embedding is interpolated on the fly).
    """

    config_class = InternVLConfig
    main_input_name = "pixel_values"
    base_model_prefix = "internvl"
    supports_gradient_checkpointing = True
    _no_split_modules = ["InternVisionEncoderLayer", "QLLaMADecoderLayer"]
    _skip_keys_device_placement = "past_key_values"
    _tied_weights_keys = tied_weights_keys({"qllama.lm_head.weight": "qllama.model.embed_tokens.weight"})

    def __init__(self, config: InternVLConfig):
        super().__init__(config)
        vision_width, text_width = config.vision_config.hidden_size, config.qllama_config.hidden_size
        self.num_query_token = config.num_query_token
        self.vision_model = InternVisionModel(config.vision_config)
        self.qllama = QLLaMAForCausalLM(config.qllama_config, vision_hidden_size=vision_width,
                                        lm_head=self.has_generative_part)
        self.text_projection = nn.Parameter(torch.empty(text_width, config.clip_embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.clip_projector = AttentionPooling(vision_width, config.attn_pool_num_heads, config.clip_embed_dim)
        if self.has_generative_part:
            self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_token, text_width))
            self.clip_projector2 = AttentionPooling(text_width, config.attn_pool_num_heads, config.clip_embed_dim)
            self.itm_head = nn.Linear(text_width, 2)
        self.post_init()
        if config.force_image_size and config.force_image_size != config.vision_config.image_size:
            self.vision_model.resize_pos_embeddings(config.force_image_size)
        # LoRA recorded in the config is wrapped again at load time with alpha = 2 x rank, what the published
        # training script trained it with (its remote code re-wraps with peft's alpha 256 instead, which scales
        # a rank-16 adapter 8x; the saved adapter weights are only right with the training alpha).
        if config.use_backbone_lora:
            self.wrap_backbone_lora(r=config.use_backbone_lora, lora_alpha=2 * config.use_backbone_lora)
        if config.use_qllama_lora:
            self.wrap_qllama_lora(r=config.use_qllama_lora, lora_alpha=2 * config.use_qllama_lora)

    @property
    def has_generative_part(self) -> bool:
        """False for an InternVL-C-only model (``num_query_token == 0``)."""
        return self.config.num_query_token > 0

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, InternVLModel):
            nn.init.normal_(module.text_projection, std=self.config.qllama_config.hidden_size ** -0.5)
            nn.init.constant_(module.logit_scale, math.log(1 / 0.07))
            if module.has_generative_part:
                nn.init.normal_(module.query_tokens, std=std)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, PoolingCrossAttention):
            for bias in (module.q_bias, module.k_bias, module.v_bias):
                nn.init.zeros_(bias)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.qllama.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.qllama.set_input_embeddings(value)

    def get_output_embeddings(self) -> Optional[nn.Linear]:
        return self.qllama.get_output_embeddings()

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.qllama.set_output_embeddings(new_embeddings)

    # ---- loading ---------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, force_image_size: Optional[int] = None,
                        **kwargs):
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        if force_image_size is not None:
            model.set_image_size(force_image_size)
        return model

    def set_image_size(self, image_size: int) -> None:
        """Store the position embedding at ``image_size`` (bicubic resize) and record it as
        ``config.force_image_size``, so ``save_pretrained`` writes a model native to that size."""
        if image_size != self.vision_model.embeddings.grid_size * self.config.vision_config.patch_size:
            self.vision_model.resize_pos_embeddings(image_size)
        self.config.force_image_size = image_size

    def wrap_backbone_lora(self, r: int = 128, lora_alpha: int = 256, lora_dropout: float = 0.05) -> None:
        """Wrap InternViT in LoRA adapters (``attn.qkv``, ``attn.proj``, ``mlp.fc1``, ``mlp.fc2``), as the
        published training code does for ``use_backbone_lora``."""
        self.vision_model = wrap_lora(self.vision_model, "intern_vit", r, lora_alpha, lora_dropout)

    def wrap_qllama_lora(self, r: int = 128, lora_alpha: int = 256, lora_dropout: float = 0.05) -> None:
        """Wrap QLLaMA's self-attention and MLP projections in LoRA adapters (``use_qllama_lora``)."""
        self.qllama = wrap_lora(self.qllama, "llama", r, lora_alpha, lora_dropout)

    def merge_lora(self) -> list[str]:
        """Fold the LoRA adapters into the weights they wrap (peft's ``merge_and_unload``) and set
        ``use_backbone_lora`` / ``use_qllama_lora`` to 0, so the model saves and loads as a plain one; returns
        the parts merged (:func:`~internvl.models.modeling_utils.merge_lora_parts`)."""
        return merge_lora_parts(self, {"vision_model": "use_backbone_lora", "qllama": "use_qllama_lora"})

    def layer_id(self, name: str) -> tuple[str, int]:
        """``(tower, layer)`` of parameter ``name`` for layer-wise learning-rate decay, as upstream's internvl_g
        counts: ``vision_model.*`` and ``clip_projector.*`` are tower ``"vit"`` (:meth:`InternVisionModel.layer_id`;
        the projector after the last layer, ``depth + 1``), ``qllama.*`` and the rest tower ``"qllama"``
        (:meth:`QLLaMAForCausalLM.layer_id`; ``query_tokens`` and ``logit_scale`` 0 beside the embeddings,
        ``clip_projector2``, ``itm_head`` and ``text_projection`` ``depth + 1`` beside the final norm)."""
        config = self.config
        vit_depth, qllama_depth = config.vision_config.num_hidden_layers, config.qllama_config.num_hidden_layers
        if name.startswith("vision_model."):
            return "vit", self.vision_model.layer_id(name[len("vision_model."):])
        if name.startswith("clip_projector."):
            return "vit", vit_depth + 1
        if name.startswith("qllama."):
            return "qllama", self.qllama.layer_id(name[len("qllama."):])
        if name in ("query_tokens", "logit_scale"):
            return "qllama", 0
        return "qllama", qllama_depth + 1

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def qllama_decoder(self):
        """QLLaMA's decoder stack (:class:`internvl.models.qllama.QLLaMAModel`), also when LoRA wraps QLLaMA (where
        ``qllama.model`` is the wrapped ``QLLaMAForCausalLM``)."""
        return self.qllama.get_decoder()

    # ---- features ----------------------------------------------------------------------------------

    def _check_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "InternVL-G" and not self.has_generative_part:
            raise ValueError("this is an InternVL-C-only model (num_query_token=0, e.g. loaded from "
                             "internvl_c_13b_224px.pth): it has no QLLaMA queries, so only mode='InternVL-C' "
                             "works; load OpenGVLab/InternVL-14B-224px for InternVL-G")

    def _query_features(self, vision_embeds: torch.Tensor) -> torch.Tensor:
        """QLLaMA outputs of the queries after they cross-attended to ``vision_embeds``."""
        queries = self.query_tokens.expand(vision_embeds.shape[0], -1, -1).to(vision_embeds.dtype)
        return self.qllama_decoder(inputs_embeds=queries, vision_hidden_states=vision_embeds,
                                   use_cache=False).last_hidden_state

    def get_image_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(InternViT tokens, QLLaMA query outputs)``, as the published method."""
        vision_embeds = self.vision_model(pixel_values=pixel_values).last_hidden_state
        return vision_embeds, self._query_features(vision_embeds)

    def encode_image(self, image: torch.Tensor, mode: str = "InternVL-C") -> torch.Tensor:
        """Image features ``(batch, clip_embed_dim)``, not normalised (see the module docstring).

        ``image``: ``(batch, 3, H, W)`` normalised pixels, H and W multiples of 14 (built with
        :func:`image_transform`)."""
        self._check_mode(mode)
        vision_embeds = self.vision_model(pixel_values=image).last_hidden_state
        backbone = self.clip_projector(vision_embeds)
        if mode == "InternVL-C":
            return backbone
        return _unit(backbone) + _unit(self.clip_projector2(self._query_features(vision_embeds)))

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """QLLaMA's last hidden states over the text alone (causal, no queries)."""
        return self.qllama_decoder(input_ids=input_ids, attention_mask=attention_mask,
                                   use_cache=False).last_hidden_state

    def encode_text(self, text: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Text features ``(batch, clip_embed_dim)``: the hidden state of the last real token, projected.

        ``text``: right-padded token ids (pad id 0) as :meth:`CGTokenizer.tokenize` makes them for
        retrieval; the padding mask is ``text > 0`` unless ``attention_mask`` is given."""
        if attention_mask is None:
            attention_mask = text > 0
        hidden = self.get_text_features(text, attention_mask.long())
        last = attention_mask.long().sum(1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last] @ self.text_projection

    def forward(self, image: torch.Tensor, text: torch.Tensor, mode: str = "InternVL-C"
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits_per_image, logits_per_text)``: scaled cosine similarities, ``(n_images, n_texts)``
        and its transpose."""
        image_features = _unit(self.encode_image(image, mode))
        text_features = _unit(self.encode_text(text))
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()

    # ---- captioning ---------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, pixel_values: torch.Tensor, input_ids: torch.LongTensor,
                 attention_mask: Optional[torch.Tensor] = None,
                 generation_config: Optional[GenerationConfig] = None, **generate_kwargs):
        """Caption images with QLLaMA: the queries read the image, the prompt (``English caption:``, from
        :meth:`CGTokenizer.tokenize` with ``task="caption"``) follows them, and ``transformers`` generation
        continues it (``num_beams``, ``min_new_tokens``, ``max_new_tokens``, ``do_sample``, ``top_p``,
        ``repetition_penalty``, ``num_return_sequences``, ``return_dict_in_generate``, ...).

        Returns the **generated tokens only** (the prompt is not included), ``(batch * num_return_sequences,
        new_tokens)``, padded with the pad id (0) after EOS; decode with ``skip_special_tokens=True``.
        A batch of prompts of different lengths must be left-padded (the caption tokenizer does that).
        Without ``max_new_tokens`` / ``max_length``, at most 20 new tokens are generated, as upstream.
        """
        if not self.has_generative_part:
            raise ValueError("this is an InternVL-C-only model (num_query_token=0): it has no queries and no "
                             "lm_head, so it cannot caption; load OpenGVLab/InternVL-14B-224px")
        vision_embeds = self.vision_model(pixel_values=pixel_values).last_hidden_state
        batch = vision_embeds.shape[0]
        if input_ids.shape[0] != batch:
            raise ValueError(f"{batch} images but {input_ids.shape[0]} prompts: give one prompt per image")
        if input_ids.shape[1] == 0:
            raise ValueError("input_ids is empty: give a prompt (at least <s>; the caption prompt is "
                             f"{CAPTION_PROMPT!r})")
        queries = self.query_tokens.expand(batch, -1, -1).to(vision_embeds.dtype)
        inputs_embeds = torch.cat([queries, self.get_input_embeddings()(input_ids)], dim=1)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = torch.cat([attention_mask.new_ones(batch, self.num_query_token), attention_mask], dim=1)
        # Run the queries (which read the image) and the prompt but its last token once per image; generation
        # starts from that cache, expanded to the beams, instead of repeating the work for every beam.
        position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
        prefill = self.qllama_decoder(inputs_embeds=inputs_embeds[:, :-1], attention_mask=attention_mask[:, :-1],
                                      position_ids=position_ids[:, :-1], vision_hidden_states=vision_embeds,
                                      use_cache=True)
        config = generation_config or self.qllama.generation_config
        if (not {"max_new_tokens", "max_length"} & generate_kwargs.keys() and config.max_new_tokens is None
                and config.max_length == GenerationConfig().max_length):
            generate_kwargs["max_new_tokens"] = DEFAULT_MAX_NEW_TOKENS
        return self.qllama.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                    **{CACHE_KEY: output_cache(prefill)}, generation_config=generation_config,
                                    **generate_kwargs)


# ---- the original PyTorch format: internvl_c_13b_224px.pth ----------------------------------------------

# Everything but the vision tower, whose timm names map through intern_vit.rename_timm_hf. One table,
# both directions.
_PTH_TO_HF_NAMES = [
    ("transformer.{rest}", "qllama.model.{rest}"),
    ("clip_projector.{rest}", "clip_projector.{rest}"),
    ("text_projection", "text_projection"),
    ("logit_scale", "logit_scale"),
]
_VISION_PREFIX = "vision_model."


def rename_internvl_c_pth(name: str, to_hf: bool = True) -> Optional[str]:
    """Translate one tensor name between ``internvl_c_13b_224px.pth`` and the HF layout of
    :class:`InternVLModel` (None: the name has no counterpart)."""
    if to_hf:
        vision = rename_timm_hf(name)
        if vision is not None:
            return _VISION_PREFIX + vision
    elif name.startswith(_VISION_PREFIX):
        return rename_timm_hf(name[len(_VISION_PREFIX):], to_hf=False)
    return rename_with_table(name, _PTH_TO_HF_NAMES, to_hf)


def load_internvl_c_pth(checkpoint: Union[str, os.PathLike, dict], config: Optional[InternVLConfig] = None,
                        torch_dtype: Optional[torch.dtype] = None) -> InternVLModel:
    """Load the original PyTorch ``internvl_c_13b_224px.pth`` into :class:`InternVLModel`, InternVL-C mode.

    The file holds InternViT-6B (timm names), the LLaMA-7B text encoder (``transformer.*``, no
    cross-attention), ``text_projection``, ``logit_scale`` and ``clip_projector``: an InternVL-C model.
    It becomes an :class:`InternVLModel` with ``num_query_token=0`` (no queries, ``clip_projector2``,
    ``itm_head`` nor ``lm_head``); ``mode="InternVL-G"`` and ``generate`` raise. ``save_pretrained`` then
    writes it in the HF layout. The tokenizer is the LLaMA one the checkpoint was trained with (the
    ``tokenizer.model`` of InternVL-14B-224px); :func:`build_cg_tokenizer` reads it from its directory.

    ``checkpoint`` is a path or an already-loaded state dict (``module`` / ``model`` / ``state_dict``
    nesting is unwrapped). ``config`` is needed only for what shapes cannot tell at a non-published size
    (head counts); it must have ``num_query_token=0`` and is checked against the tensor shapes. Without
    it the published InternVL-C configuration is used, checked the same way.
    """
    state_dict = (unwrap_state_dict(checkpoint, "the state dict given") if isinstance(checkpoint, dict)
                  else load_state_dict_file(checkpoint))
    renamed, unknown = {}, []
    for name, tensor in state_dict.items():
        hf_name = rename_internvl_c_pth(name)
        if hf_name is None:
            unknown.append(name)
        else:
            renamed[hf_name] = tensor
    if unknown:
        raise ValueError(f"{_describe(checkpoint)} is not an InternVL-C checkpoint: unexpected tensors "
                         f"{sorted(unknown)[:5]}{' ...' if len(unknown) > 5 else ''}")
    if config is None:
        config = InternVLConfig(num_query_token=0)
    elif config.num_query_token != 0:
        raise ValueError(f"internvl_c_13b_224px.pth holds InternVL-C only; pass a config with num_query_token=0 "
                         f"(got {config.num_query_token})")
    _check_pth_config(renamed, config, _describe(checkpoint))
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):  # parameters on meta, filled below: no second copy in RAM
        model = InternVLModel(config)
    if torch_dtype is not None:
        renamed = {k: v.to(torch_dtype) if v.is_floating_point() else v for k, v in renamed.items()}
    missing = set(model.state_dict()) - set(renamed)
    if missing:
        raise ValueError(f"{_describe(checkpoint)} lacks tensors of InternVL-C: {sorted(missing)[:5]}")
    model.load_state_dict(renamed, strict=True, assign=True)
    return model.eval()


def _describe(checkpoint) -> str:
    return "the state dict" if isinstance(checkpoint, dict) else os.fspath(checkpoint)


def _check_pth_config(state_dict: dict, config: InternVLConfig, source: str) -> None:
    """The config's architecture must match the tensor shapes; name the first field that does not."""
    vision = {k[len(_VISION_PREFIX):]: v for k, v in state_dict.items() if k.startswith(_VISION_PREFIX)}
    try:
        config_from_state_dict(vision, config.vision_config)
    except (ValueError, KeyError) as err:
        raise ValueError(f"{source}: vision_config does not match the checkpoint: {err}") from err

    def shape(name: str) -> tuple:
        if name not in state_dict:
            raise ValueError(f"{source}: tensor {rename_internvl_c_pth(name, to_hf=False)} is missing")
        return tuple(state_dict[name].shape)

    vocab, width = shape("qllama.model.embed_tokens.weight")
    layers = len({m.group(1) for k in state_dict if (m := re.match(r"qllama\.model\.layers\.(\d+)\.", k))})
    found = {"qllama_config.vocab_size": vocab, "qllama_config.hidden_size": width,
             "qllama_config.num_hidden_layers": layers,
             "qllama_config.intermediate_size": shape("qllama.model.layers.0.mlp.gate_proj.weight")[0],
             "clip_embed_dim": shape("text_projection")[1]}
    for field, value in found.items():
        target = config
        for part in field.split("."):
            target = getattr(target, part)
        if target != value:
            raise ValueError(f"{source}: config.{field}={target} but the checkpoint tensors say {value}; pass "
                             "config=InternVLConfig(num_query_token=0, ...) matching the checkpoint")


def register_internvl_cg() -> None:
    """Let ``AutoConfig`` / ``AutoModel`` resolve ``model_type: "internvl"`` directories (InternVL-14B-224px
    and its fine-tunes) to these classes, with no remote code. Safe to call more than once.

    Opt-in, not done on import: transformers (>= 4.52) ships its own ``"internvl"`` model type, the
    converted InternVL3 ``-hf`` checkpoints, and this replaces it for the rest of the process.
    ``InternVLModel.from_pretrained`` needs no registration.
    """
    from transformers import AutoConfig, AutoModel

    AutoConfig.register(InternVLConfig.model_type, InternVLConfig, exist_ok=True)
    AutoModel.register(InternVLConfig, InternVLModel, exist_ok=True)
