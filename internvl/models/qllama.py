"""QLLaMA: the language side of InternVL-C/G (a LLaMA decoder with learnable-query cross-attention).

QLLaMA is LLaMA-7B (the Chinese-Alpaca vocabulary of 49954 tokens) with a cross-attention block added
to every ``cross_attention_frequency``-th decoder layer (layers 0, 2, 4, ... in the published model).
A sequence may start with ``num_query_token`` learnable query embeddings (96 published; they live in
``InternVLModel.query_tokens``). When image features are given (``vision_hidden_states``), those leading
positions are the queries:

* they attend to each other bidirectionally (the published ``use_zero_attention_mask``) and never to the
  text after them, while text tokens attend causally to the queries and to earlier text;
* in each cross-attention layer, after self-attention, the queries (and only they) attend to the image
  features: ``queries += o_proj(attn(q_proj(norm1(queries)), k/v_proj(norm2(image))))``, no mask.

Without image features the model is a plain causal LLaMA over text (how InternVL encodes text for
retrieval). Since the queries never see the text, their keys/values are fixed after the first forward
pass, and cross-attention runs only there; cached decoding steps skip it, as the reference does.

Tensor names are the published ones (``model.layers.N.cross_attn.{q,k,v,o}_proj``, ``norm1``, ``norm2``),
the configuration is a ``transformers.LlamaConfig`` with two extra fields, ``num_query_token`` and
``cross_attention_frequency`` (the published ``qllama_config``), and :class:`QLLaMAForCausalLM` is a
``GenerationMixin`` with a ``DynamicCache``, so captioning uses ``transformers`` generation (greedy, beam
search, sampling, ...). Attention runs through :func:`internvl.models.layers.attention`.
"""
from __future__ import annotations

import re
from typing import Optional, Union

import torch
from torch import nn
from transformers import GenerationMixin, LlamaConfig
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils import logging

from ..compat import CACHE_KEY, output_cache, rope_settings, tied_weights_keys
from .layers import RMSNorm, RotaryEmbedding, apply_rotary, attention, decoder_mask
from .modeling_utils import InternVLPreTrainedBase, causal_lm_loss, init_decoder_weights

logger = logging.get_logger(__name__)

__all__ = ["QLLAMA_7B_CONFIG", "qllama_config", "QLLaMAPreTrainedModel", "QLLaMAModel", "QLLaMAForCausalLM"]

# The qllama_config of OpenGVLab/InternVL-14B-224px (LLaMA-7B with the 49954-token Chinese-Alpaca vocabulary).
QLLAMA_7B_CONFIG = dict(
    vocab_size=49954, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
    hidden_act="silu", max_position_embeddings=2048, initializer_range=0.02, rms_norm_eps=1e-6,
    pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
)

# The published QLLaMA hard-codes InternViT-6B's width for the cross-attention keys/values.
_PUBLISHED_VISION_HIDDEN_SIZE = 3200


def qllama_config(num_query_token: int = 96, cross_attention_frequency: int = 2, **fields) -> LlamaConfig:
    """A ``LlamaConfig`` carrying the two QLLaMA fields (as the published ``qllama_config`` does)."""
    config = LlamaConfig(**fields)
    config.num_query_token = num_query_token
    config.cross_attention_frequency = cross_attention_frequency
    return config


def _head_dim(config: LlamaConfig) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


class QLLaMAMLP(nn.Module):
    """SwiGLU feed-forward: ``down(act(gate(x)) * up(x))``."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        bias = getattr(config, "mlp_bias", False)
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class QLLaMAAttention(nn.Module):
    """LLaMA self-attention: rotary positions, optional grouped-query heads, a ``transformers`` KV cache."""

    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or self.num_heads
        self.head_dim = _head_dim(config)
        self.attention_dropout = getattr(config, "attention_dropout", 0.0)
        bias = getattr(config, "attention_bias", False)
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)

    def forward(self, hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attn_mask: Optional[torch.Tensor], causal: bool, past_key_values: Optional[Cache]) -> torch.Tensor:
        batch, seq, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden_states).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden_states).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)
        out = attention(q, k, v, causal=causal, attn_mask=attn_mask,
                        dropout_p=self.attention_dropout if self.training else 0.0)
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, -1))


class QLLaMACrossAttention(nn.Module):
    """The queries attend to the image features; both sides RMS-normalised first (``norm1``, ``norm2``)."""

    def __init__(self, config: LlamaConfig, vision_hidden_size: int):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = _head_dim(config)
        inner = self.num_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, inner, bias=False)
        self.o_proj = nn.Linear(inner, config.hidden_size, bias=False)
        self.norm1 = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.k_proj = nn.Linear(vision_hidden_size, inner, bias=False)
        self.v_proj = nn.Linear(vision_hidden_size, inner, bias=False)
        self.norm2 = RMSNorm(vision_hidden_size, eps=config.rms_norm_eps)

    def forward(self, queries: torch.Tensor, vision_hidden_states: torch.Tensor, vision_repeats: int = 1
                ) -> torch.Tensor:
        batch, n_q, _ = queries.shape
        images, n_v, _ = vision_hidden_states.shape
        q = self.q_proj(self.norm1(queries)).view(batch, n_q, self.num_heads, self.head_dim).transpose(1, 2)
        vision = self.norm2(vision_hidden_states)
        k = self.k_proj(vision).view(images, n_v, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(vision).view(images, n_v, self.num_heads, self.head_dim).transpose(1, 2)
        if vision_repeats > 1:  # keys/values computed once per image, then stacked like the rows
            k, v = k.repeat(vision_repeats, 1, 1, 1), v.repeat(vision_repeats, 1, 1, 1)
        out = attention(q, k, v)
        return self.o_proj(out.transpose(1, 2).reshape(batch, n_q, -1))


class QLLaMADecoderLayer(nn.Module):
    """Pre-norm LLaMA block; with ``cross_attn``, the leading queries also read the image in between
    self-attention and the MLP."""

    def __init__(self, config: LlamaConfig, layer_idx: int, vision_hidden_size: int, use_cross_attn: bool):
        super().__init__()
        self.self_attn = QLLaMAAttention(config, layer_idx)
        self.cross_attn = QLLaMACrossAttention(config, vision_hidden_size) if use_cross_attn else None
        self.mlp = QLLaMAMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attn_mask: Optional[torch.Tensor], causal: bool, past_key_values: Optional[Cache],
                vision_hidden_states: Optional[torch.Tensor], num_queries: int, vision_repeats: int = 1
                ) -> torch.Tensor:
        hidden_states = hidden_states + self.self_attn(self.input_layernorm(hidden_states), cos, sin, attn_mask,
                                                       causal, past_key_values)
        if self.cross_attn is not None and num_queries:
            queries, text = hidden_states[:, :num_queries], hidden_states[:, num_queries:]
            queries = queries + self.cross_attn(queries, vision_hidden_states, vision_repeats)
            hidden_states = torch.cat([queries, text], dim=1)
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class QLLaMAPreTrainedModel(InternVLPreTrainedBase):
    config_class = LlamaConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["QLLaMADecoderLayer"]
    _skip_keys_device_placement = "past_key_values"
    _supports_cache_class = True  # what transformers < 4.56 asks before it hands generate a Cache
    _supports_static_cache = False

    def _init_weights(self, module: nn.Module) -> None:
        init_decoder_weights(module, self.config.initializer_range)


class QLLaMAModel(QLLaMAPreTrainedModel):
    """The QLLaMA decoder stack (embeddings, layers, final norm); see the module docstring."""

    def __init__(self, config: LlamaConfig, vision_hidden_size: Optional[int] = None):
        super().__init__(config)
        self.num_query_token = getattr(config, "num_query_token", 0)
        frequency = getattr(config, "cross_attention_frequency", 2)
        if self.num_query_token < 0 or frequency < 1:
            raise ValueError(f"qllama_config needs num_query_token >= 0 and cross_attention_frequency >= 1, got "
                             f"{self.num_query_token} and {frequency}")
        vision_hidden_size = vision_hidden_size or _PUBLISHED_VISION_HIDDEN_SIZE
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        # No queries (an InternVL-C-only model), no cross-attention.
        self.layers = nn.ModuleList(
            QLLaMADecoderLayer(config, i, vision_hidden_size, self.num_query_token > 0 and i % frequency == 0)
            for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        rope_theta, rope_scaling = rope_settings(config)
        self.rotary_emb = RotaryEmbedding(_head_dim(config), base=rope_theta,
                                          max_position_embeddings=config.max_position_embeddings, scaling=rope_scaling)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    @property
    def has_cross_attention(self) -> bool:
        return any(layer.cross_attn is not None for layer in self.layers)

    def forward(self, input_ids: Optional[torch.LongTensor] = None, attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.LongTensor] = None, past_key_values: Optional[Union[Cache, tuple]] = None,
                inputs_embeds: Optional[torch.FloatTensor] = None,
                vision_hidden_states: Optional[torch.FloatTensor] = None, use_cache: Optional[bool] = None,
                output_hidden_states: Optional[bool] = None, return_dict: Optional[bool] = None,
                cache_position: Optional[torch.LongTensor] = None, cache: Optional[Cache] = None,
                vision_repeats: int = 1, **kwargs) -> Union[tuple, BaseModelOutputWithPast]:
        """Run the decoder.

        Args:
            input_ids / inputs_embeds: the sequence (exactly one of them). With ``vision_hidden_states``
                and an empty cache, its first ``num_query_token`` positions must be the query embeddings.
            attention_mask: ``(batch, past + seq)`` with 1 for real tokens and 0 for padding, or a 4D
                boolean/additive mask ``(batch, 1, seq, past + seq)`` used as given (no causal pattern added).
            position_ids: rotary positions; default ``past, past + 1, ...`` for every row.
            past_key_values / cache: a ``transformers`` Cache (or the legacy tuple form; transformers 5 calls the
                argument ``cache``, 4.x ``past_key_values``, either is accepted); with ``use_cache`` one is
                created when missing and returned.
            vision_hidden_states: ``(batch, tokens, vision_hidden_size)`` image features (the full InternViT
                output); they make the leading positions queries (see the module docstring).
            vision_repeats: with ``k > 1``, ``vision_hidden_states`` holds ``batch / k`` images and the sequence
                batch is ``k`` stacked copies of rows for them (row ``r`` reads image ``r % (batch / k)``), as the
                retrieval training stacks its matching and contrastive rows; image keys/values are computed once.
        """
        output_hidden_states = (self.config.output_hidden_states if output_hidden_states is None
                                else output_hidden_states)
        return_dict = self.config.return_dict if return_dict is None else return_dict
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("QLLaMA needs exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if self.gradient_checkpointing and self.training and use_cache:
            logger.warning_once("use_cache=True is incompatible with gradient checkpointing; not caching")
            use_cache = False
        past_key_values = cache if cache is not None else past_key_values
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        elif isinstance(past_key_values, tuple):
            past_key_values = DynamicCache.from_legacy_cache(past_key_values)

        batch, seq, _ = inputs_embeds.shape
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        num_queries = self._queries_in_input(vision_hidden_states, batch, seq, past, vision_repeats)
        query_block = self.num_query_token if vision_hidden_states is not None else 0
        if attention_mask is not None and attention_mask.dim() == 4:  # the caller's mask, used as given
            attn_mask, causal = attention_mask, False
        else:  # causal, the query block (when it is in this input) bidirectional
            attn_mask, causal = decoder_mask(attention_mask, seq, past + seq, bidirectional_prefix=query_block)
        if position_ids is None:
            position_ids = torch.arange(past, past + seq, device=inputs_embeds.device).expand(batch, -1)
        cos, sin = self.rotary_emb(position_ids, seq_len=past + seq, dtype=inputs_embeds.dtype)

        hidden_states = inputs_embeds
        all_hidden = (hidden_states,) if output_hidden_states else None
        for layer in self.layers:
            args = (hidden_states, cos, sin, attn_mask, causal, past_key_values, vision_hidden_states, num_queries,
                    vision_repeats)
            if self.gradient_checkpointing and self.training:
                hidden_states = self._gradient_checkpointing_func(layer.__call__, *args)
            else:
                hidden_states = layer(*args)
            if output_hidden_states:
                all_hidden += (hidden_states,)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:  # as the reference, the last entry is the normalised output
            all_hidden = all_hidden[:-1] + (hidden_states,)

        cache = past_key_values if use_cache else None
        if not return_dict:
            return tuple(v for v in (hidden_states, cache, all_hidden) if v is not None)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, hidden_states=all_hidden, **{CACHE_KEY: cache})

    def _queries_in_input(self, vision_hidden_states, batch: int, seq: int, past: int, vision_repeats: int = 1) -> int:
        """How many leading positions of this input are queries that cross-attend to the image."""
        if vision_hidden_states is None:
            return 0
        if self.num_query_token == 0:
            raise ValueError("this QLLaMA has no query tokens (num_query_token=0, an InternVL-C-only model): "
                             "it cannot attend to image features")
        if past >= self.num_query_token:
            return 0  # the queries are in the cache already; the reference skips cross-attention here too
        if past > 0 or seq < self.num_query_token:
            raise ValueError(f"the {self.num_query_token} query embeddings must come first and in one piece: "
                             f"got {seq} positions after {past} cached ones")
        if vision_hidden_states.shape[0] * vision_repeats != batch:
            repeats = f" x vision_repeats={vision_repeats}" if vision_repeats != 1 else ""
            raise ValueError(f"vision_hidden_states has batch {vision_hidden_states.shape[0]}{repeats} but the "
                             f"sequence has batch {batch}")
        return self.num_query_token


class QLLaMAForCausalLM(QLLaMAPreTrainedModel, GenerationMixin):
    """QLLaMA with its language-model head (``lm_head``, tied to the embeddings when the config says so).

    ``generate`` takes ``inputs_embeds`` (the queries followed by the prompt's token embeddings), the
    matching ``attention_mask``, and either ``vision_hidden_states`` or ``past_key_values`` holding all but
    the last position already (what ``InternVLModel.generate`` passes: the work shared by the beams of an
    image is done once, and the cache is expanded to the beams here); it returns the new tokens only, as
    ``transformers`` does for ``inputs_embeds``. ``lm_head=False`` builds the decoder without a head (an
    InternVL-C-only model, whose checkpoint has none).
    """

    _tied_weights_keys = tied_weights_keys({"lm_head.weight": "model.embed_tokens.weight"})

    def __init__(self, config: LlamaConfig, vision_hidden_size: Optional[int] = None, lm_head: bool = True):
        super().__init__(config)
        self.model = QLLaMAModel(config, vision_hidden_size)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False) if lm_head else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> Optional[nn.Linear]:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def get_decoder(self) -> QLLaMAModel:
        return self.model

    def layer_id(self, name: str) -> int:
        """The layer of parameter ``name`` (relative to this model; LoRA prefixes allowed) for layer-wise
        learning-rate decay: the token embeddings 0, decoder layer ``i`` ``i + 1``, anything else (the final
        norm, ``lm_head``) ``num_hidden_layers + 1``."""
        if ".embed_tokens." in f".{name}":
            return 0
        block = re.search(r"(^|\.)layers\.(\d+)\.", name)
        return int(block[2]) + 1 if block else self.config.num_hidden_layers + 1

    def set_decoder(self, decoder: QLLaMAModel) -> None:
        self.model = decoder

    def forward(self, input_ids: Optional[torch.LongTensor] = None, attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.LongTensor] = None, past_key_values: Optional[Union[Cache, tuple]] = None,
                inputs_embeds: Optional[torch.FloatTensor] = None,
                vision_hidden_states: Optional[torch.FloatTensor] = None, labels: Optional[torch.LongTensor] = None,
                use_cache: Optional[bool] = None, output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None, cache_position: Optional[torch.LongTensor] = None,
                logits_to_keep: Union[int, torch.Tensor] = 0, cache: Optional[Cache] = None,
                **kwargs) -> Union[tuple, CausalLMOutputWithPast]:
        """Logits over the vocabulary (and, with ``labels``, the next-token cross-entropy: labels are
        shifted inside, ``-100`` is ignored). ``logits_to_keep=n`` computes the last n positions only."""
        if self.lm_head is None:
            raise ValueError("this QLLaMA has no lm_head (an InternVL-C-only model): it cannot produce logits")
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache if cache is not None else past_key_values, inputs_embeds=inputs_embeds,
                             vision_hidden_states=vision_hidden_states, use_cache=use_cache,
                             output_hidden_states=output_hidden_states, return_dict=True)
        hidden_states = outputs.last_hidden_state
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:]
        elif isinstance(logits_to_keep, torch.Tensor):
            hidden_states = hidden_states[:, logits_to_keep]
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels)
        if not return_dict:
            out = (logits,) + tuple(v for v in (output_cache(outputs), outputs.hidden_states) if v is not None)
            return (loss,) + out if loss is not None else out
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_KEY: output_cache(outputs)},
                                      hidden_states=outputs.hidden_states)

    def _expand_inputs_for_generation(self, expand_size: int = 1, is_encoder_decoder: bool = False,
                                      input_ids: Optional[torch.LongTensor] = None, **model_kwargs):
        # A cache handed to generate (InternVLModel.generate's prefill, computed once per image) is expanded to
        # the beams / return sequences along with the inputs; transformers expands tensors only. (A static
        # method in transformers 4, a method in 5: called through super() it works as either.)
        input_ids, model_kwargs = super()._expand_inputs_for_generation(
            expand_size=expand_size, is_encoder_decoder=is_encoder_decoder, input_ids=input_ids, **model_kwargs)
        cache = model_kwargs.get(CACHE_KEY)
        if expand_size > 1 and isinstance(cache, Cache):
            cache.batch_repeat_interleave(expand_size)
        return input_ids, model_kwargs
