"""InternVL-Chat: InternViT + an MLP projector + a language model (InternVL 1.5 / 2 / 2.5 HF format).

Each image tile goes through the vision model; the patch tokens of one layer (``select_layer``)
are pixel-shuffled (2x2 neighbours concatenated, ``downsample_ratio=0.5``) and projected by
``mlp1`` into the language model's embedding space, where they replace the ``<IMG_CONTEXT>``
placeholders of the prompt. The published checkpoints load as they are::

    import torch
    from internvl.data.chat_image import load_image
    from internvl.models.chat_model import InternVLChatModel
    from internvl.models.tokenization import load_tokenizer

    path = "pretrained/InternVL2-2B"
    model = InternVLChatModel.from_pretrained(path, torch_dtype=torch.bfloat16, low_cpu_mem_usage=True).eval()
    tokenizer = load_tokenizer(path)
    pixel_values = load_image("photo.jpg", max_num=12).to(torch.bfloat16)
    print(model.chat(tokenizer, pixel_values, "Describe the image.", dict(max_new_tokens=256)))

``llm_config.architectures[0]`` picks the language model: ``InternLM2ForCausalLM``
(:mod:`internvl.models.internlm2`), or ``Qwen2ForCausalLM`` / ``LlamaForCausalLM`` / ``Phi3ForCausalLM``
from transformers (InternVL2-1B, InternVL2-40B/76B, InternVL2-4B).
"""
from __future__ import annotations

import copy
import importlib
import logging
import math
import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from transformers import AutoConfig, GenerationConfig, PretrainedConfig
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..compat import CACHE_KEY, config_kwargs, output_cache
from .conversation import Conversation, get_conv_template
from ..errors import ConfigError, DataError
from .intern_vit import InternVisionConfig, InternVisionModel
from .modeling_utils import InternVLConfigBase, InternVLPreTrainedBase, causal_lm_loss, merge_lora_parts, wrap_lora

logger = logging.getLogger(__name__)

__all__ = ["InternVLChatConfig", "InternVLChatModel", "SUPPORTED_LLMS", "IMG_START_TOKEN", "IMG_END_TOKEN",
           "IMG_CONTEXT_TOKEN", "register_internvl_chat", "tokens_per_tile"]

IMG_START_TOKEN = "<img>"
IMG_END_TOKEN = "</img>"
IMG_CONTEXT_TOKEN = "<IMG_CONTEXT>"
IMAGE_PLACEHOLDER = "<image>"  # what a question writes where an image goes; chat() expands it


@dataclass(frozen=True)
class _LLMSpec:
    module: str            # where the config and model classes live
    config_class: str
    model_class: str
    lora_family: str       # its key in internvl.models.modeling_utils.LORA_TARGETS
    decoder_layer: str     # the class of one decoder block (what device maps must not split)


SUPPORTED_LLMS = {
    "InternLM2ForCausalLM": _LLMSpec("internvl.models.internlm2", "InternLM2Config", "InternLM2ForCausalLM", "internlm2",
                                     "InternLM2DecoderLayer"),
    "Qwen2ForCausalLM": _LLMSpec("transformers", "Qwen2Config", "Qwen2ForCausalLM", "llama", "Qwen2DecoderLayer"),
    "LlamaForCausalLM": _LLMSpec("transformers", "LlamaConfig", "LlamaForCausalLM", "llama", "LlamaDecoderLayer"),
    "Phi3ForCausalLM": _LLMSpec("transformers", "Phi3Config", "Phi3ForCausalLM", "phi3", "Phi3DecoderLayer"),
}


def _llm_spec(architecture: Optional[str]) -> _LLMSpec:
    if architecture not in SUPPORTED_LLMS:
        raise ConfigError(f"llm_config.architectures[0] is {architecture!r}, which InternVLChatModel does not support; "
                          f"supported language models: {', '.join(SUPPORTED_LLMS)}")
    return SUPPORTED_LLMS[architecture]


def _llm_class(architecture: str, which: str):
    spec = _llm_spec(architecture)
    return getattr(importlib.import_module(spec.module), getattr(spec, which))


def tokens_per_tile(image_size: int, patch_size: int, downsample_ratio: float) -> int:
    """Language-model tokens per tile: ``(image_size / patch_size)^2 x downsample_ratio^2`` (256 for 448 px tiles
    of 14 px patches at 0.5). The one place this is computed (model, training data, inference)."""
    return int((image_size // patch_size) ** 2 * downsample_ratio ** 2)


class InternVLChatConfig(InternVLConfigBase):
    """Configuration of :class:`InternVLChatModel`; fields and defaults as the published ``config.json``.

    Args:
        vision_config: :class:`InternVisionConfig` or its dict.
        llm_config: config (or dict) of the language model; ``architectures[0]`` names it (see
            ``SUPPORTED_LLMS``). A config object without ``architectures`` is matched by its class.
        select_layer: vision layer whose output feeds the projector (-1: the last).
        force_image_size: tile size in pixels (default: ``vision_config.image_size``).
        downsample_ratio: pixel-shuffle ratio; 0.5 turns a 32x32 patch grid into 16x16 = 256 tokens.
        ps_version: ``"v2"`` (InternVL2 and later) or ``"v1"``, whose shuffle leaves rows and columns
            transposed (InternVL-Chat-V1-5 was trained that way).
        template: conversation template name (:mod:`internvl.models.conversation`).
        dynamic_image_size / use_thumbnail / min_dynamic_patch / max_dynamic_patch: the tiling the
            model was trained with (:func:`internvl.data.chat_image.dynamic_preprocess`).
        use_backbone_lora / use_llm_lora: LoRA rank to wrap the vision / language model with at
            construction (0: none; needs ``peft``).
        pad2square: pad images to a square instead of resizing (training data option).
    """

    model_type = "internvl_chat"
    sub_configs = {"vision_config": InternVisionConfig, "llm_config": AutoConfig}

    def __init__(self, vision_config=None, llm_config=None, use_backbone_lora=0, use_llm_lora=0, pad2square=False,
                 select_layer=-1, force_image_size=None, downsample_ratio=0.5, template=None,
                 dynamic_image_size=False, use_thumbnail=False, ps_version="v1", min_dynamic_patch=1,
                 max_dynamic_patch=6, **kwargs):
        kwargs.setdefault("auto_map", {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                                       "AutoModel": "modeling_internvl_chat.InternVLChatModel",
                                       "AutoModelForCausalLM": "modeling_internvl_chat.InternVLChatModel"})
        super().__init__(**kwargs)
        if isinstance(vision_config, InternVisionConfig):
            self.vision_config = vision_config
        else:
            vision_config = dict(vision_config or {})
            vision_config.setdefault("architectures", ["InternVisionModel"])
            self.vision_config = InternVisionConfig(**vision_config)
        self.llm_config = self._build_llm_config(llm_config)
        if ps_version not in ("v1", "v2"):
            raise ConfigError(f"InternVLChatConfig.ps_version={ps_version!r}: use 'v1' or 'v2'")
        if not 0 < downsample_ratio <= 1 or abs(1 / downsample_ratio - round(1 / downsample_ratio)) > 1e-6:
            raise ConfigError(f"InternVLChatConfig.downsample_ratio={downsample_ratio} must be 1/n for a whole n "
                              "(0.5 in every published model)")
        if not 1 <= min_dynamic_patch <= max_dynamic_patch:
            raise ConfigError(f"need 1 <= min_dynamic_patch <= max_dynamic_patch, got {min_dynamic_patch}, "
                              f"{max_dynamic_patch}")
        self.use_backbone_lora = use_backbone_lora
        self.use_llm_lora = use_llm_lora
        self.pad2square = pad2square
        self.select_layer = select_layer
        self.force_image_size = force_image_size
        self.downsample_ratio = downsample_ratio
        self.template = template
        self.dynamic_image_size = dynamic_image_size
        self.use_thumbnail = use_thumbnail
        self.ps_version = ps_version
        self.min_dynamic_patch = min_dynamic_patch
        self.max_dynamic_patch = max_dynamic_patch
        self.hidden_size = self.llm_config.hidden_size
        # The published models never tie the language model's input and output embeddings.
        self.tie_word_embeddings = False
        self.llm_config.tie_word_embeddings = False

    @staticmethod
    def _build_llm_config(llm_config) -> PretrainedConfig:
        if llm_config is None:  # the reference's default: a LLaMA of default size
            llm_config = {"architectures": ["LlamaForCausalLM"]}
        if isinstance(llm_config, PretrainedConfig):
            architectures = getattr(llm_config, "architectures", None)
            if not architectures:  # e.g. a fresh Qwen2Config(): match the class
                names = [arch for arch, spec in SUPPORTED_LLMS.items()
                         if spec.config_class == type(llm_config).__name__]
                llm_config.architectures = names[:1] or [type(llm_config).__name__]
            _llm_spec(llm_config.architectures[0])
            return llm_config
        llm_config = dict(llm_config)
        architectures = llm_config.get("architectures") or [None]
        return _llm_class(architectures[0], "config_class")(**config_kwargs(llm_config))

    @property
    def image_size(self) -> int:
        """Tile size in pixels: ``force_image_size`` (the setting's one name, in flags and config.json), else the
        vision tower's ``image_size``."""
        return self.force_image_size or self.vision_config.image_size

    @property
    def num_image_token(self) -> int:
        """Language-model tokens per tile (:func:`tokens_per_tile` of this config)."""
        return tokens_per_tile(self.image_size, self.vision_config.patch_size, self.downsample_ratio)

    def to_diff_dict(self) -> dict:
        """What ``config.json`` holds: the fields that differ from ``PretrainedConfig``'s defaults, and the
        nested configs in full, as the published files spell them out (a diff against today's class
        defaults would change meaning if those defaults ever changed)."""
        full = self.to_dict()
        defaults = PretrainedConfig().to_dict()
        out = {key: value for key, value in full.items()
               if key not in defaults or key == "transformers_version" or value != defaults[key]}
        for key in ("vision_config", "llm_config"):
            out[key].pop("transformers_version", None)
        return out


class InternVLChatModel(InternVLPreTrainedBase):
    """InternViT + ``mlp1`` projector + language model, with the published tensor names:
    ``vision_model.*``, ``mlp1.{0,1,3}.*``, ``language_model.*``.

    ``forward`` is the training forward (image features placed at the ``<IMG_CONTEXT>`` tokens);
    ``generate``, ``chat`` and ``batch_chat`` are the inference API of the published model card.
    """

    config_class = InternVLChatConfig
    main_input_name = "pixel_values"
    base_model_prefix = "language_model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["InternVisionModel"] + sorted({spec.decoder_layer for spec in SUPPORTED_LLMS.values()})
    _supports_flash_attn = True
    _supports_flash_attn_2 = True  # the name transformers < 4.48 reads
    _supports_sdpa = True

    def __init__(self, config: InternVLChatConfig, vision_model: Optional[nn.Module] = None,
                 language_model: Optional[nn.Module] = None):
        super().__init__(config)
        if config.template is None:
            raise ConfigError("InternVLChatConfig.template is not set: name the conversation template the model was "
                              "trained with, e.g. 'internlm2-chat' (see internvl.models.conversation)")
        self.patch_size = config.vision_config.patch_size
        self.select_layer = config.select_layer
        self.template = config.template
        self.downsample_ratio = config.downsample_ratio
        self.ps_version = config.ps_version
        self.num_image_token = config.num_image_token
        self.llm_arch_name = config.llm_config.architectures[0]
        if self.ps_version == "v1":
            logger.info("ps_version 'v1': pixel shuffle leaves the feature grid transposed, as the model was trained")

        self.vision_model = vision_model if vision_model is not None else InternVisionModel(config.vision_config)
        self.language_model = (language_model if language_model is not None
                               else _llm_class(self.llm_arch_name, "model_class")(config.llm_config))
        vit_hidden = config.vision_config.hidden_size * round(1 / config.downsample_ratio) ** 2
        llm_hidden = config.llm_config.hidden_size
        self.mlp1 = nn.Sequential(nn.LayerNorm(vit_hidden), nn.Linear(vit_hidden, llm_hidden), nn.GELU(),
                                  nn.Linear(llm_hidden, llm_hidden))

        # Set by chat() / batch_chat() from the tokenizer; a training script sets it once.
        self.img_context_token_id: Optional[int] = None
        self.conv_template = get_conv_template(self.template)
        # A checkpoint may set its own system message; published files also write "system_message": null,
        # which means the template's.
        system_message = getattr(config, "system_message", None)
        self.system_message = self.conv_template.system_message if system_message is None else system_message

        self.post_init()
        # After post_init: LoRA's B matrices start at zero, so the wrapped model computes the plain one.
        if config.use_backbone_lora:
            self.wrap_backbone_lora(r=config.use_backbone_lora, lora_alpha=2 * config.use_backbone_lora)
        if config.use_llm_lora:
            self.wrap_llm_lora(r=config.use_llm_lora, lora_alpha=2 * config.use_llm_lora)

    def _init_weights(self, module: nn.Module) -> None:
        # Only mlp1 is ours to initialise: the two sub-models initialise themselves, and LoRA adapters
        # (which transformers may also walk into) must keep their zero B. The reference leaves mlp1 at
        # PyTorch's default initialisation.
        if isinstance(module, (nn.Linear, nn.LayerNorm)) and any(module is m for m in self.mlp1.modules()):
            module.reset_parameters()

    # ------------------------------------------------------------------ LoRA (needs peft)
    def wrap_backbone_lora(self, r: int = 128, lora_alpha: int = 256, lora_dropout: float = 0.05) -> None:
        """Wrap the vision model with LoRA adapters on its attention and MLP linears."""
        self.vision_model = wrap_lora(self.vision_model, "intern_vit", r, lora_alpha, lora_dropout)

    def wrap_llm_lora(self, r: int = 128, lora_alpha: int = 256, lora_dropout: float = 0.05) -> None:
        """Wrap the language model with LoRA adapters on the reference's target modules for its architecture."""
        self.language_model = wrap_lora(self.language_model, _llm_spec(self.llm_arch_name).lora_family, r,
                                        lora_alpha, lora_dropout, task_type="CAUSAL_LM")
        self.language_model.enable_input_require_grads()

    def merge_lora(self) -> list[str]:
        """Fold the LoRA adapters into the weights they wrap (peft's ``merge_and_unload``) and set
        ``use_backbone_lora`` / ``use_llm_lora`` to 0, so the model saves under the published names and loads as a
        plain one; returns the parts merged (:func:`~internvl.models.modeling_utils.merge_lora_parts`)."""
        return merge_lora_parts(self, {"vision_model": "use_backbone_lora", "language_model": "use_llm_lora"})

    # ------------------------------------------------------------------ embeddings
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    @property
    def lm_head(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    # ------------------------------------------------------------------ vision side
    def pixel_shuffle(self, x: torch.Tensor, scale_factor: float = 0.5) -> torch.Tensor:
        """``(N, H, W, C)`` -> ``(N, H*s, W*s, C/s^2)``: each output cell concatenates the features of
        its ``1/s x 1/s`` input block, row-major (``[r, c], [r, c+1], [r+1, c], [r+1, c+1]`` for s=0.5).

        ``ps_version='v1'`` returns the grid transposed (cell ``[i, j]`` holds block ``[j, i]``),
        as the reference's first version did and V1-5 models were trained with."""
        n, h, w, c = x.shape
        r = round(1 / scale_factor)
        if h % r or w % r:
            raise ValueError(f"pixel shuffle by {scale_factor} needs a feature grid divisible by {r}, got {h}x{w}; "
                             "use tiles whose patch grid is even (448 px with patch 14 gives 32x32)")
        x = x.reshape(n, h // r, r, w // r, r, c).permute(0, 1, 3, 2, 4, 5).reshape(n, h // r, w // r, r * r * c)
        return x.transpose(1, 2).contiguous() if self.ps_version == "v1" else x

    def extract_feature(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(tiles, 3, S, S)`` pixels -> ``(tiles, num_image_token, llm_hidden)`` language-model embeddings."""
        size = self.config.image_size
        if tuple(pixel_values.shape[-2:]) != (size, size):
            raise DataError(f"pixel_values hold {pixel_values.shape[-2]}x{pixel_values.shape[-1]} tiles but this "
                            f"model's tiles are {size}x{size} (config.force_image_size / vision_config.image_size): "
                            f"load images with load_image(path, input_size=model.config.image_size)")
        pixel_values = pixel_values.to(self.vision_model.device)
        if self.select_layer == -1:
            features = self.vision_model(pixel_values=pixel_values, output_hidden_states=False,
                                         return_dict=True).last_hidden_state
        else:
            features = self.vision_model(pixel_values=pixel_values, output_hidden_states=True,
                                         return_dict=True).hidden_states[self.select_layer]
        features = features[:, 1:]  # drop the class token
        side = math.isqrt(features.shape[1])
        if side * side != features.shape[1]:
            raise ValueError(f"extract_feature needs square tiles; pixel_values of shape {tuple(pixel_values.shape)} "
                             f"give a non-square grid of {features.shape[1]} patches")
        features = features.reshape(features.shape[0], side, side, -1)
        features = self.pixel_shuffle(features, scale_factor=self.downsample_ratio)
        features = features.reshape(features.shape[0], -1, features.shape[-1])
        return self.mlp1(features)

    def _merge_image_features(self, input_ids: torch.Tensor, vit_embeds: Optional[torch.Tensor]) -> torch.Tensor:
        """Token embeddings of ``input_ids`` with the image features written over the context tokens, in order."""
        embeds = self.language_model.get_input_embeddings()(input_ids)
        if vit_embeds is None:
            return embeds
        if self.img_context_token_id is None:
            raise ValueError("img_context_token_id is not set: set model.img_context_token_id = "
                             f"tokenizer.convert_tokens_to_ids({IMG_CONTEXT_TOKEN!r}) before passing images "
                             "(chat() and batch_chat() do it for you)")
        vit_embeds = vit_embeds.reshape(-1, embeds.shape[-1])
        selected = input_ids == self.img_context_token_id
        slots = int(selected.sum())
        if slots != vit_embeds.shape[0]:
            raise DataError(
                f"input_ids hold {slots} image context tokens (id {self.img_context_token_id}) but the images give "
                f"{vit_embeds.shape[0]} feature vectors ({self.num_image_token} per tile); the prompt must hold "
                f"{IMG_CONTEXT_TOKEN} x {self.num_image_token} for every tile of every image")
        return embeds.masked_scatter(selected.unsqueeze(-1), vit_embeds.to(embeds.device, embeds.dtype))

    # ------------------------------------------------------------------ training forward
    def forward(self, pixel_values: Optional[torch.FloatTensor] = None, input_ids: Optional[torch.LongTensor] = None,
                attention_mask: Optional[torch.Tensor] = None, position_ids: Optional[torch.LongTensor] = None,
                image_flags: Optional[torch.LongTensor] = None, past_key_values=None,
                labels: Optional[torch.LongTensor] = None, use_cache: Optional[bool] = None,
                output_attentions: Optional[bool] = None, output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None, cache=None,
                sample_ids: Optional[torch.LongTensor] = None) -> Union[Tuple, CausalLMOutputWithPast]:
        """Language-model logits (and the next-token loss with ``labels``, -100 = ignored) for prompts whose
        ``<IMG_CONTEXT>`` tokens are replaced by the features of ``pixel_values``.

        ``image_flags`` (one per tile, 0 = padding tile of a text-only sample) selects the tiles whose
        features are used; ``pixel_values=None`` is a text-only batch. ``sample_ids`` (``(batch, seq)``) marks
        a packed batch: several samples per row, the sample of each token given, ``position_ids`` restarting
        per sample; attention stays inside each sample (:meth:`_packed_llm_inputs`)."""
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if input_ids is None:
            raise ValueError("InternVLChatModel.forward needs input_ids")
        vit_embeds = None
        if pixel_values is not None:
            vit_embeds = self.extract_feature(pixel_values)
            if image_flags is not None:
                image_flags = image_flags.reshape(-1).to(vit_embeds.device)
                if image_flags.numel() != vit_embeds.shape[0]:
                    raise ValueError(f"image_flags has {image_flags.numel()} entries for {vit_embeds.shape[0]} tiles")
                vit_embeds = vit_embeds[image_flags == 1]
        inputs_embeds = self._merge_image_features(input_ids, vit_embeds)
        packed, folded = {}, None
        if sample_ids is not None:
            packed, folded = self._packed_llm_inputs(sample_ids, inputs_embeds, position_ids)
            attention_mask = packed.pop("attention_mask", None)
            inputs_embeds, position_ids = packed.pop("inputs_embeds"), packed.pop("position_ids")
        outputs = self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                      position_ids=position_ids, use_cache=use_cache,
                                      output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                                      return_dict=True, **packed,
                                      **{CACHE_KEY: cache if cache is not None else past_key_values})
        logits = outputs.logits if folded is None else outputs.logits.reshape(*folded, -1)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        if not return_dict:
            rest = tuple(v for v in (output_cache(outputs), outputs.hidden_states, outputs.attentions)
                         if v is not None)
            return ((loss,) if loss is not None else ()) + (logits,) + rest
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                      attentions=outputs.attentions, **{CACHE_KEY: output_cache(outputs)})

    def _packed_llm_inputs(self, sample_ids: torch.Tensor, inputs_embeds: torch.Tensor,
                           position_ids: Optional[torch.Tensor]) -> tuple[dict, Optional[tuple]]:
        """How a packed batch reaches the language model, so that no token attends across samples:

        * InternLM2 (ours): ``sample_ids`` itself, to :func:`internvl.models.layers.attention` (flash-attn
          varlen on CUDA, else the block-diagonal mask);
        * transformers' LLaMA / Qwen2 / Phi-3 with ``flash_attention_2``: the batch folded into one row with
          the per-sample ``position_ids`` (transformers runs the varlen kernel from position ids that
          restart, for a single row); the logits are unfolded after (the second value: their shape);
        * the same with ``sdpa`` / ``eager``: the additive causal block-diagonal 4-D ``attention_mask``."""
        from .layers import packed_causal_mask

        if position_ids is None:
            raise ValueError("a packed batch (sample_ids) needs position_ids restarting at 0 for every sample")
        if self.config.llm_config.architectures[0] == "InternLM2ForCausalLM":
            return {"inputs_embeds": inputs_embeds, "position_ids": position_ids, "sample_ids": sample_ids}, None
        implementation = str(getattr(self.language_model.config, "_attn_implementation", None) or "")
        if implementation.startswith("flash_attention"):
            batch, seq = sample_ids.shape
            return {"inputs_embeds": inputs_embeds.reshape(1, batch * seq, -1),
                    "position_ids": position_ids.reshape(1, batch * seq)}, (batch, seq)
        return {"inputs_embeds": inputs_embeds, "position_ids": position_ids,
                "attention_mask": packed_causal_mask(sample_ids, inputs_embeds.dtype)}, None

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def generate(self, pixel_values: Optional[torch.FloatTensor] = None, input_ids: Optional[torch.LongTensor] = None,
                 attention_mask: Optional[torch.LongTensor] = None, visual_features: Optional[torch.Tensor] = None,
                 generation_config: Optional[GenerationConfig] = None, output_hidden_states: Optional[bool] = None,
                 **generate_kwargs) -> torch.LongTensor:
        """The language model's ``generate`` on the prompt embeddings; returns the new tokens only.

        ``visual_features`` (the output of :meth:`extract_feature`) skips the vision model."""
        if input_ids is None:
            raise ValueError("InternVLChatModel.generate needs input_ids")
        vit_embeds = visual_features
        if vit_embeds is None and pixel_values is not None:
            vit_embeds = self.extract_feature(pixel_values)
        inputs_embeds = self._merge_image_features(input_ids, vit_embeds)
        return self.language_model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                            generation_config=generation_config,
                                            output_hidden_states=output_hidden_states, use_cache=True,
                                            **generate_kwargs)

    def _new_conversation(self) -> Conversation:
        template = get_conv_template(self.template)
        template.system_message = self.system_message
        return template

    @staticmethod
    def _image_token_ids(tokenizer, start: str, end: str, context: str) -> int:
        """Check the tokenizer has the image tokens as single tokens; return the context token's id."""
        for token in (start, end):
            _special_token_id(tokenizer, token, "an image marker of InternVL prompts")
        return _special_token_id(tokenizer, context, "the placeholder of image features in InternVL prompts")

    def _stop_token_id(self, tokenizer, template: Conversation) -> Optional[int]:
        stop = template.stop_token
        if not stop:  # "plain": turns end with a newline, stop at end-of-sequence
            return tokenizer.eos_token_id
        return _special_token_id(tokenizer, stop, f"which ends a turn of the {template.name!r} template")

    def _expand_images(self, query: str, num_patches_list: Sequence[int], start: str, end: str, context: str) -> str:
        """Replace each ``<image>`` in turn by ``<img>`` + context tokens for its tiles + ``</img>``."""
        found = query.count(IMAGE_PLACEHOLDER)
        if found != len(num_patches_list):
            given = f"{len(num_patches_list)} image(s) (num_patches_list={list(num_patches_list)})"
            raise DataError(
                f"the prompt has {found} '<image>' placeholder(s) but {given} were given: write one '<image>' per "
                "image, e.g. 'Image-1: <image>\\nImage-2: <image>\\n' (internvl.models.conversation.image_prefix), and pass "
                "the same pixel_values on every turn of a conversation about an image")
        for num_patches in num_patches_list:
            query = query.replace(IMAGE_PLACEHOLDER, start + context * (self.num_image_token * num_patches) + end, 1)
        return query

    def _generation_kwargs(self, generation_config, eos_token_id: Optional[int], tokenizer) -> dict:
        if isinstance(generation_config, GenerationConfig):
            config = copy.deepcopy(generation_config)
            config.eos_token_id = eos_token_id
            kwargs = {"generation_config": config}
        else:
            kwargs = dict(generation_config or {})  # the caller's dict stays as it was
            kwargs["eos_token_id"] = eos_token_id
        lm_config = getattr(self.language_model, "generation_config", None)
        if "pad_token_id" not in kwargs and (lm_config is None or lm_config.pad_token_id is None):
            kwargs["pad_token_id"] = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_token_id
        return kwargs

    def _check_tiles(self, pixel_values: Optional[torch.Tensor], num_patches_list: Sequence[int]) -> None:
        tiles = 0 if pixel_values is None else pixel_values.shape[0]
        if sum(num_patches_list) != tiles:
            raise DataError(f"num_patches_list={list(num_patches_list)} adds up to {sum(num_patches_list)} tiles but "
                            f"pixel_values holds {tiles}")

    def chat(self, tokenizer, pixel_values: Optional[torch.Tensor], question: str, generation_config,
             history: Optional[List[Tuple[str, str]]] = None, return_history: bool = False,
             num_patches_list: Optional[Sequence[int]] = None, IMG_START_TOKEN: str = IMG_START_TOKEN,
             IMG_END_TOKEN: str = IMG_END_TOKEN, IMG_CONTEXT_TOKEN: str = IMG_CONTEXT_TOKEN, verbose: bool = False):
        """Answer ``question`` about the images in ``pixel_values`` (or none: ``pixel_values=None``).

        Args:
            pixel_values: tiles of all images, ``(tiles, 3, S, S)`` (:func:`internvl.data.chat_image.load_image`).
            question: the user's message. Without ``<image>`` (and on the first turn) it becomes
                ``"<image>\\n" + question``; with several images write one ``<image>`` each.
            generation_config: ``dict`` of ``generate`` arguments (``max_new_tokens``, ``do_sample``,
                ``streamer`` for a :class:`transformers.TextIteratorStreamer`...) or a ``GenerationConfig``.
            history: earlier ``(question, answer)`` turns; pass the same ``pixel_values`` on every turn.
            num_patches_list: tiles per image (default: all tiles are one image).

        Returns the answer, or ``(answer, history)`` with ``return_history``.
        """
        if history is None and pixel_values is not None and IMAGE_PLACEHOLDER not in question:
            question = IMAGE_PLACEHOLDER + "\n" + question
        if num_patches_list is None:
            num_patches_list = [pixel_values.shape[0]] if pixel_values is not None else []
        self._check_tiles(pixel_values, num_patches_list)
        if num_patches_list:
            self.img_context_token_id = self._image_token_ids(tokenizer, IMG_START_TOKEN, IMG_END_TOKEN,
                                                              IMG_CONTEXT_TOKEN)

        template = self._new_conversation()
        eos_token_id = self._stop_token_id(tokenizer, template)
        history = list(history or [])
        for old_question, old_answer in history:
            template.append_message(template.roles[0], old_question)
            template.append_message(template.roles[1], old_answer)
        template.append_message(template.roles[0], question)
        template.append_message(template.roles[1], None)
        query = self._expand_images(template.get_prompt(), num_patches_list, IMG_START_TOKEN, IMG_END_TOKEN,
                                    IMG_CONTEXT_TOKEN)
        if verbose and pixel_values is not None:
            print(f"dynamic ViT batch size: {pixel_values.shape[0]}")

        inputs = tokenizer(query, return_tensors="pt")
        device = self.get_input_embeddings().weight.device
        output = self.generate(pixel_values=pixel_values, input_ids=inputs["input_ids"].to(device),
                               attention_mask=inputs["attention_mask"].to(device),
                               **self._generation_kwargs(generation_config, eos_token_id, tokenizer))
        response = _clean_response(tokenizer.batch_decode(output, skip_special_tokens=True)[0], template)
        history.append((question, response))
        if verbose:
            shown = query.replace(IMG_CONTEXT_TOKEN, "").replace(IMG_START_TOKEN + IMG_END_TOKEN, IMAGE_PLACEHOLDER)
            print(shown, response)
        return (response, history) if return_history else response

    def batch_chat(self, tokenizer, pixel_values: Optional[torch.Tensor], questions: Sequence[str], generation_config,
                   num_patches_list: Optional[Sequence[int]] = None, history=None, return_history: bool = False,
                   IMG_START_TOKEN: str = IMG_START_TOKEN, IMG_END_TOKEN: str = IMG_END_TOKEN,
                   IMG_CONTEXT_TOKEN: str = IMG_CONTEXT_TOKEN, verbose: bool = False,
                   image_counts: Optional[Sequence[int]] = None) -> List[str]:
        """Answer independent single-turn questions in one left-padded batch; question ``i`` is about the
        ``num_patches_list[i]`` tiles that follow those of the questions before it (``pixel_values=None``:
        text only). Greedy answers equal those of :meth:`chat` one question at a time."""
        if history is not None or return_history:
            raise NotImplementedError("batch_chat answers independent single-turn questions; use chat() for "
                                      "multi-turn conversations")
        if image_counts is not None:
            warnings.warn("batch_chat(image_counts=...) is deprecated; use num_patches_list", FutureWarning,
                          stacklevel=2)
            num_patches_list = image_counts
        if num_patches_list is None:
            if pixel_values is not None and len(questions) != 1:
                raise ValueError(f"batch_chat with pixel_values for {len(questions)} questions needs num_patches_list "
                                 "(the number of tiles of each question's image)")
            num_patches_list = [len(pixel_values)] if pixel_values is not None else [0] * len(questions)
        if len(num_patches_list) != len(questions):
            raise ValueError(f"num_patches_list has {len(num_patches_list)} entries for {len(questions)} questions")
        self._check_tiles(pixel_values, num_patches_list)
        if pixel_values is not None:
            self.img_context_token_id = self._image_token_ids(tokenizer, IMG_START_TOKEN, IMG_END_TOKEN,
                                                              IMG_CONTEXT_TOKEN)
        if verbose and pixel_values is not None:
            print(f"dynamic ViT batch size: {pixel_values.shape[0]}")

        queries = []
        for question, num_patches in zip(questions, num_patches_list):
            if pixel_values is not None and IMAGE_PLACEHOLDER not in question:
                question = IMAGE_PLACEHOLDER + "\n" + question
            template = self._new_conversation()
            template.append_message(template.roles[0], question)
            template.append_message(template.roles[1], None)
            images = [num_patches] if pixel_values is not None else []
            queries.append(self._expand_images(template.get_prompt(), images, IMG_START_TOKEN, IMG_END_TOKEN,
                                               IMG_CONTEXT_TOKEN))
        template = self._new_conversation()
        eos_token_id = self._stop_token_id(tokenizer, template)

        padding_side, pad_token = tokenizer.padding_side, tokenizer.pad_token
        tokenizer.padding_side = "left"  # the new tokens must follow every prompt directly
        if tokenizer.pad_token is None:  # masked out by the attention mask; any token will do
            tokenizer.pad_token = tokenizer.eos_token
        try:
            inputs = tokenizer(list(queries), return_tensors="pt", padding=True)
        finally:
            tokenizer.padding_side = padding_side
            if pad_token is None:
                tokenizer.pad_token = None
        device = self.get_input_embeddings().weight.device
        output = self.generate(pixel_values=pixel_values, input_ids=inputs["input_ids"].to(device),
                               attention_mask=inputs["attention_mask"].to(device),
                               **self._generation_kwargs(generation_config, eos_token_id, tokenizer))
        return [_clean_response(text, template) for text in tokenizer.batch_decode(output, skip_special_tokens=True)]


def _clean_response(text: str, template: Conversation) -> str:
    """The answer up to the template's turn separator, stripped (the separator may be plain text)."""
    if template.stop_token:
        text = text.split(template.stop_token)[0]
    return text.strip()


def _special_token_id(tokenizer, token: str, purpose: str) -> int:
    """The id of ``token``, or a clear error when the tokenizer does not have it as one token."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    unknown = token_id is None or (tokenizer.unk_token_id is not None and token_id == tokenizer.unk_token_id
                                   and token != tokenizer.unk_token)
    if unknown:
        raise ConfigError(f"the tokenizer has no {token!r} token ({purpose}); load the tokenizer saved with the "
                          "checkpoint (internvl.models.tokenization.load_tokenizer(checkpoint_dir)), or add it with "
                          "tokenizer.add_special_tokens({'additional_special_tokens': [...]}) and "
                          "model.resize_token_embeddings(len(tokenizer))")
    return token_id


def register_internvl_chat() -> None:
    """Make ``AutoConfig`` / ``AutoModel`` / ``AutoModelForCausalLM`` read ``model_type: internvl_chat``
    directories with these classes (no ``trust_remote_code``, no download)."""
    from transformers import AutoModel, AutoModelForCausalLM

    AutoConfig.register(InternVLChatConfig.model_type, InternVLChatConfig, exist_ok=True)
    AutoModel.register(InternVLChatConfig, InternVLChatModel, exist_ok=True)
    AutoModelForCausalLM.register(InternVLChatConfig, InternVLChatModel, exist_ok=True)


register_internvl_chat()
