"""InternLM2: the language model of InternVL2-2B / -8B / -26B (internlm2-chat-1.8B, internlm2_5-7b-chat,
internlm2-chat-20B).

transformers has no native InternLM2, and the published checkpoints ship it as remote code. This module
is that architecture with the published tensor names, so ``from_pretrained`` reads an OpenGVLab or
internlm directory as it is and ``save_pretrained`` writes it back::

    from internvl.models.internlm2 import InternLM2ForCausalLM
    model = InternLM2ForCausalLM.from_pretrained("pretrained/internlm2-chat-1_8b", torch_dtype=torch.bfloat16)

It is a LLaMA decoder with three differences in the checkpoint format:

* one fused ``attention.wqkv`` projection whose output rows are grouped per key/value head: for each of
  the ``num_key_value_heads`` heads, the query heads of its group, then its key, then its value
  (``(kv_heads, groups + 2, head_dim)``), so grouped-query attention pairs query head ``h`` with key/value
  head ``h // groups``;
* its own names: ``tok_embeddings``, ``attention.wo``, ``feed_forward.w1/w3/w2`` (gate/up/down),
  ``attention_norm``, ``ffn_norm``, ``output``;
* ``rope_scaling`` written as ``{"type": "dynamic" | "linear", "factor": f}`` and a ``bias`` switch for
  the attention projections.

Attention runs through :func:`internvl.models.layers.attention` (flash-attn where it applies, else SDPA), the KV
cache is a ``transformers`` :class:`~transformers.DynamicCache`, and :class:`InternLM2ForCausalLM` is a
:class:`~transformers.GenerationMixin`, so ``generate`` (greedy, sampling, beam search, ``inputs_embeds``,
left padding, streamers) works as for any transformers decoder. :func:`to_llama` gives the same network as
a transformers ``LlamaForCausalLM`` (the tests check both agree).

Where this differs from the published remote code, on purpose:

* dynamic NTK RoPE is a pure function of the current total length; the reference keeps the longest
  length it has seen in a cache, so after one very long sequence it goes on scaling shorter ones;
* a left-padded batch with ``attn_implementation="flash_attention_2"`` runs SDPA with a mask instead of
  flash-attn's variable-length kernel (same result; flash-attn is used whenever there is no padding).
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn
from transformers import GenerationMixin
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils import logging

from ..compat import CACHE_KEY, output_cache, tied_weights_keys
from .layers import (RMSNorm, RotaryEmbedding, apply_rotary, attention, decoder_mask, eager_attention,
                     restrict_mask, sample_mask)
from .modeling_utils import InternVLConfigBase, InternVLPreTrainedBase, causal_lm_loss, init_decoder_weights

logger = logging.get_logger(__name__)

__all__ = ["InternLM2Config", "InternLM2PreTrainedModel", "InternLM2Model", "InternLM2ForCausalLM",
           "register_internlm2", "unfuse_wqkv", "to_llama", "causal_lm_loss"]

# What the published config.json names as remote code; kept so a saved directory still loads upstream.
_AUTO_MAP = {"AutoConfig": "configuration_internlm2.InternLM2Config",
             "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
             "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"}


class InternLM2Config(InternVLConfigBase):
    """Configuration of :class:`InternLM2ForCausalLM`. Field names and defaults are those of the published
    ``configuration_internlm2.py`` (defaults: the InternLM2-7B shape with a 103168 vocabulary); the
    ``llm_config`` of OpenGVLab/InternVL2-2B (internlm2-chat-1.8B) is::

        InternLM2Config(vocab_size=92553, hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                        num_attention_heads=16, num_key_value_heads=8, max_position_embeddings=32768,
                        rms_norm_eps=1e-5, pad_token_id=2, bias=False, rope_theta=1000000,
                        rope_scaling={"type": "dynamic", "factor": 2.0}, attn_implementation="flash_attention_2")

    ``attn_implementation`` is the published switch: ``"flash_attention_2"`` lets
    :func:`internvl.models.layers.attention` use flash-attn where it applies (CUDA, fp16/bf16, no padding mask);
    any other value (``"eager"``, ``"sdpa"``) computes the same softmax(QK^T)V with PyTorch SDPA.
    """

    model_type = "internlm2"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, vocab_size=103168, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=None, hidden_act="silu", max_position_embeddings=2048,
                 initializer_range=0.02, rms_norm_eps=1e-6, use_cache=True, pad_token_id=0, bos_token_id=1,
                 eos_token_id=2, tie_word_embeddings=False, bias=True, rope_theta=10000, rope_scaling=None,
                 attn_implementation="eager", **kwargs):
        kwargs.setdefault("auto_map", dict(_AUTO_MAP))
        # Newer upstream code adds V2PE position ids; silently ignoring them would give wrong outputs.
        pos_version = kwargs.pop("rope_pos_id_version", "default")
        kwargs.pop("rope_pos_id_stride", None)
        if pos_version not in (None, "default"):
            raise ValueError(f"InternLM2Config.rope_pos_id_version={pos_version!r} (V2PE) is not supported; "
                             "only the default RoPE position ids are implemented")
        num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        if hidden_size % num_attention_heads:
            raise ValueError(f"InternLM2Config.hidden_size={hidden_size} is not divisible by "
                             f"num_attention_heads={num_attention_heads}")
        if num_attention_heads % num_key_value_heads:
            raise ValueError(f"InternLM2Config.num_attention_heads={num_attention_heads} is not a multiple of "
                             f"num_key_value_heads={num_key_value_heads}")
        _check_rope_scaling(rope_scaling)
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.bias = bias
        self.hidden_act = hidden_act
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        self.attn_implementation = "eager" if attn_implementation is None else attn_implementation
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)

    # The published files spell RoPE as rope_theta + rope_scaling ({"type", "factor"}), which the published
    # remote code reads; transformers 5 would fold them into one rope_parameters dict. Keep them as written.
    @property
    def rope_scaling(self) -> Optional[dict]:
        return self.__dict__.get("_rope_scaling")

    @rope_scaling.setter
    def rope_scaling(self, value: Optional[dict]) -> None:
        self.__dict__["_rope_scaling"] = value

    def to_dict(self) -> dict:
        out = super().to_dict()
        out.pop("_rope_scaling", None)
        out.pop("rope_parameters", None)
        out["rope_scaling"] = self.rope_scaling
        return out

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        # transformers (4.57 for one) replaces a config file's "attn_implementation" with the caller's keyword,
        # None when not given; keep the published value unless the caller chose one.
        if kwargs.get("attn_implementation") is None and config_dict.get("attn_implementation") is not None:
            kwargs["attn_implementation"] = config_dict["attn_implementation"]
        return super().from_dict(config_dict, **kwargs)


def _check_rope_scaling(rope_scaling) -> None:
    if rope_scaling is None:
        return
    kind = rope_scaling.get("type", rope_scaling.get("rope_type")) if isinstance(rope_scaling, dict) else None
    factor = rope_scaling.get("factor") if isinstance(rope_scaling, dict) else None
    if kind not in ("linear", "dynamic") or not isinstance(factor, (int, float)) or factor < 1:
        raise ValueError(f"InternLM2Config.rope_scaling={rope_scaling!r} is not valid: expected "
                         '{"type": "linear" or "dynamic", "factor": a number >= 1}, or null')


class InternLM2MLP(nn.Module):
    """SwiGLU feed-forward: ``w2(act(w1 x) * w3 x)`` (w1 = gate, w3 = up, w2 = down)."""

    def __init__(self, config: InternLM2Config):
        super().__init__()
        self.w1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w3 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.act_fn(self.w1(x)) * self.w3(x))


class InternLM2Attention(nn.Module):
    """Grouped-query self-attention with the fused ``wqkv`` projection and RoPE."""

    def __init__(self, config: InternLM2Config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.head_dim = config.hidden_size // self.num_heads
        self.config = config
        self.wqkv = nn.Linear(config.hidden_size, (self.num_heads + 2 * self.num_key_value_heads) * self.head_dim,
                              bias=config.bias)
        self.wo = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.bias)

    def split_qkv(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project and split into q ``(B, heads, N, D)`` and k, v ``(B, kv_heads, N, D)``."""
        batch, seq, _ = hidden_states.shape
        qkv = self.wqkv(hidden_states).view(batch, seq, self.num_key_value_heads, self.num_key_value_groups + 2,
                                            self.head_dim)
        q = qkv[..., :self.num_key_value_groups, :].reshape(batch, seq, self.num_heads, self.head_dim)
        return q.transpose(1, 2), qkv[..., -2, :].transpose(1, 2), qkv[..., -1, :].transpose(1, 2)

    def forward(self, hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attn_mask: Optional[torch.Tensor] = None, causal: bool = True,
                past_key_values: Optional[Cache] = None,
                output_attentions: bool = False,
                sample_ids: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        batch, seq, _ = hidden_states.shape
        q, k, v = self.split_qkv(hidden_states)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)
        weights = None
        if output_attentions:
            if sample_ids is not None:
                attn_mask = restrict_mask(attn_mask, sample_mask(sample_ids))
            out, weights = eager_attention(q, k, v, causal=causal, attn_mask=attn_mask, return_weights=True)
        else:
            out = attention(q, k, v, causal=causal, attn_mask=attn_mask, allow_flash=_flash_allowed(self.config),
                            sample_ids=sample_ids)
        out = out.transpose(1, 2).reshape(batch, seq, self.num_heads * self.head_dim)
        return self.wo(out), weights


def _flash_allowed(config: InternLM2Config) -> bool:
    """flash-attn only where the published switch (or transformers' own setting) asks for it."""
    requested = (config.attn_implementation, getattr(config, "_attn_implementation", None))
    return any(isinstance(name, str) and name.startswith("flash_attention") for name in requested)


class InternLM2DecoderLayer(nn.Module):
    """Pre-norm block: ``x + attention(attention_norm(x))``, then ``x + feed_forward(ffn_norm(x))``."""

    def __init__(self, config: InternLM2Config, layer_idx: int):
        super().__init__()
        self.attention = InternLM2Attention(config, layer_idx)
        self.feed_forward = InternLM2MLP(config)
        self.attention_norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.ffn_norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attn_mask: Optional[torch.Tensor] = None, causal: bool = True,
                past_key_values: Optional[Cache] = None,
                output_attentions: bool = False,
                sample_ids: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        attn_out, weights = self.attention(self.attention_norm(hidden_states), cos, sin, attn_mask=attn_mask,
                                           causal=causal, past_key_values=past_key_values,
                                           output_attentions=output_attentions, sample_ids=sample_ids)
        hidden_states = hidden_states + attn_out
        hidden_states = hidden_states + self.feed_forward(self.ffn_norm(hidden_states))
        return hidden_states, weights


class InternLM2PreTrainedModel(InternVLPreTrainedBase):
    """Weight initialisation (normal(0, initializer_range), zero biases, zero padding row) and loading."""

    config_class = InternLM2Config
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["InternLM2DecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    # Attention goes through internvl.models.layers.attention, which picks flash-attn or SDPA itself; these flags
    # only tell transformers (4.45 ... 4.57 spellings) which attn_implementation values to accept.
    _supports_flash_attn = True
    _supports_flash_attn_2 = True
    _supports_sdpa = True
    _supports_cache_class = True
    _supports_static_cache = False

    def _init_weights(self, module: nn.Module) -> None:
        init_decoder_weights(module, self.config.initializer_range)


class InternLM2Model(InternLM2PreTrainedModel):
    """The decoder stack: token embeddings, ``num_hidden_layers`` blocks, final RMSNorm."""

    def __init__(self, config: InternLM2Config):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(InternLM2DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.hidden_size // config.num_attention_heads, base=config.rope_theta,
                                          max_position_embeddings=config.max_position_embeddings,
                                          scaling=config.rope_scaling)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.tok_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.tok_embeddings = value

    def forward(self, input_ids: Optional[torch.LongTensor] = None, attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.LongTensor] = None,
                past_key_values: Optional[Union[Cache, tuple]] = None,
                inputs_embeds: Optional[torch.FloatTensor] = None, use_cache: Optional[bool] = None,
                output_attentions: Optional[bool] = None, output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None, cache_position: Optional[torch.LongTensor] = None,
                cache: Optional[Cache] = None, sample_ids: Optional[torch.LongTensor] = None,
                **kwargs) -> Union[tuple, BaseModelOutputWithPast]:
        """Run the decoder.

        Args:
            input_ids / inputs_embeds: exactly one of ``(batch, seq)`` token ids or ``(batch, seq, hidden)``
                embeddings (the chat model passes embeddings with the image features spliced in).
            attention_mask: ``(batch, past + seq)`` with 1 for real tokens and 0 for padding (left padding
                for generation), or a 4D boolean mask (True = attend) broadcastable to
                ``(batch, heads, seq, past + seq)``; the causal pattern is always applied on top.
            position_ids: ``(batch, seq)``; default ``past .. past + seq - 1`` (``generate`` derives them
                from the attention mask, so left-padded rows start at 0).
            past_key_values / cache: a :class:`~transformers.Cache` (or the legacy tuple of per-layer (k, v))
                holding the keys/values of earlier tokens; with ``use_cache`` a new DynamicCache is started if
                None. (transformers 5 calls it ``cache``, 4.x ``past_key_values``; either is accepted.)
            sample_ids: ``(batch, seq)`` for packed sequences (training, no cache): the sample of each token;
                attention stays inside each sample (flash-attn varlen on CUDA, else a block-diagonal mask).
                Pass the per-sample ``position_ids`` with it.
        """
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (self.config.output_hidden_states if output_hidden_states is None
                                else output_hidden_states)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("InternLM2Model needs exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.tok_embeddings(input_ids)
        if self.gradient_checkpointing and self.training and use_cache:
            logger.warning_once("use_cache=True is incompatible with gradient checkpointing; using use_cache=False")
            use_cache = False

        past_key_values = cache if cache is not None else past_key_values
        if isinstance(past_key_values, (tuple, list)):  # legacy format of transformers < 4.36
            past_key_values = DynamicCache.from_legacy_cache(past_key_values)
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        batch, seq = inputs_embeds.shape[:2]
        if position_ids is None:
            start = int(cache_position[0]) if cache_position is not None else past_len
            position_ids = torch.arange(start, start + seq, device=inputs_embeds.device).unsqueeze(0)
        if attention_mask is not None and attention_mask.dim() == 4:  # the caller's mask; causal applied on top
            attn_mask, causal = attention_mask, seq > 1
        else:
            attn_mask, causal = decoder_mask(attention_mask, seq, past_len + seq)
        # Dynamic NTK scaling depends on the total length seen so far (prompt + cache), as in the reference.
        cos, sin = self.rotary_emb(position_ids, seq_len=past_len + seq, dtype=inputs_embeds.dtype)

        hidden_states = inputs_embeds
        all_hidden = () if output_hidden_states else None
        all_attn = () if output_attentions else None
        for layer in self.layers:
            if output_hidden_states:
                all_hidden += (hidden_states,)
            if self.gradient_checkpointing and self.training:
                hidden_states, weights = self._gradient_checkpointing_func(
                    layer.__call__, hidden_states, cos, sin, attn_mask, causal, None, output_attentions, sample_ids)
            else:
                hidden_states, weights = layer(hidden_states, cos, sin, attn_mask=attn_mask, causal=causal,
                                               past_key_values=past_key_values, output_attentions=output_attentions,
                                               sample_ids=sample_ids)
            if output_attentions:
                all_attn += (weights,)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:  # the reference's last entry is the normalised output
            all_hidden += (hidden_states,)

        cache = past_key_values if use_cache else None
        if not return_dict:
            return tuple(v for v in (hidden_states, cache, all_hidden, all_attn) if v is not None)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, hidden_states=all_hidden, attentions=all_attn,
                                       **{CACHE_KEY: cache})


class InternLM2ForCausalLM(InternLM2PreTrainedModel, GenerationMixin):
    """InternLM2 with its language-model head ``output``; ``generate`` works as for any transformers
    decoder (greedy, sampling, beam search, ``inputs_embeds``, left padding, streamers)."""

    _tied_weights_keys = tied_weights_keys({"output.weight": "model.tok_embeddings.weight"})

    def __init__(self, config: InternLM2Config):
        super().__init__(config)
        self.model = InternLM2Model(config)
        self.vocab_size = config.vocab_size
        self.output = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.tok_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.tok_embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.output

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.output = new_embeddings

    def get_decoder(self) -> InternLM2Model:
        return self.model

    def set_decoder(self, decoder: InternLM2Model) -> None:
        self.model = decoder

    def forward(self, input_ids: Optional[torch.LongTensor] = None, attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.LongTensor] = None,
                past_key_values: Optional[Union[Cache, tuple]] = None,
                inputs_embeds: Optional[torch.FloatTensor] = None, labels: Optional[torch.LongTensor] = None,
                use_cache: Optional[bool] = None, output_attentions: Optional[bool] = None,
                output_hidden_states: Optional[bool] = None, return_dict: Optional[bool] = None,
                cache_position: Optional[torch.LongTensor] = None, logits_to_keep: Union[int, torch.Tensor] = 0,
                cache: Optional[Cache] = None, **kwargs) -> Union[tuple, CausalLMOutputWithPast]:
        """Logits (always fp32, as the reference returns them) and, with ``labels``, the next-token
        cross-entropy: labels are shifted inside, ``-100`` is ignored, the mean is over the kept tokens
        (or the sum divided by ``num_items_in_batch`` when the Trainer passes it for gradient accumulation).
        ``logits_to_keep=n`` computes logits for the last n positions only (``generate`` uses 1)."""
        return_dict = self.config.return_dict if return_dict is None else return_dict
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache if cache is not None else past_key_values,
                             inputs_embeds=inputs_embeds, use_cache=use_cache, output_attentions=output_attentions,
                             output_hidden_states=output_hidden_states, return_dict=True,
                             cache_position=cache_position, sample_ids=kwargs.pop("sample_ids", None))
        hidden_states = outputs.last_hidden_state
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:]
        elif isinstance(logits_to_keep, torch.Tensor):
            hidden_states = hidden_states[:, logits_to_keep]
        logits = self.output(hidden_states).float()

        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, num_items_in_batch)
        if not return_dict:
            out = (logits,) + tuple(v for v in (output_cache(outputs), outputs.hidden_states, outputs.attentions)
                                    if v is not None)
            return (loss,) + out if loss is not None else out
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                      attentions=outputs.attentions, **{CACHE_KEY: output_cache(outputs)})


def unfuse_wqkv(wqkv: torch.Tensor, config: InternLM2Config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split a fused ``wqkv`` weight ``((heads + 2 * kv_heads) * head_dim, hidden)`` (or its bias) into the
    q, k, v projections of a LLaMA-style attention (query heads in order, key/value heads in order)."""
    kv_heads, dim = config.num_key_value_heads, config.hidden_size // config.num_attention_heads
    groups = config.num_attention_heads // kv_heads
    grouped = wqkv.reshape(kv_heads, groups + 2, dim, *wqkv.shape[1:])
    rest = wqkv.shape[1:]
    return (grouped[:, :groups].reshape(-1, *rest), grouped[:, -2].reshape(-1, *rest),
            grouped[:, -1].reshape(-1, *rest))


def to_llama(model: InternLM2ForCausalLM):
    """The same network as a transformers ``LlamaForCausalLM`` (what InternLM's ``convert2llama`` produces):
    ``wqkv`` unfused into q/k/v, the other tensors renamed. Logits agree with this model's; with dynamic
    ``rope_scaling``, LLaMA scales from the largest position id instead of the total length, which differs
    only for left-padded rows longer than ``max_position_embeddings``. Tensors that need no change are shared
    with ``model``, not copied."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = model.config
    llama_config = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, hidden_act=cfg.hidden_act,
        max_position_embeddings=cfg.max_position_embeddings, initializer_range=cfg.initializer_range,
        rms_norm_eps=cfg.rms_norm_eps, use_cache=cfg.use_cache, pad_token_id=cfg.pad_token_id,
        bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id, tie_word_embeddings=cfg.tie_word_embeddings,
        rope_theta=cfg.rope_theta, rope_scaling=dict(cfg.rope_scaling) if cfg.rope_scaling else None,
        attention_bias=cfg.bias, mlp_bias=False)
    sd = model.state_dict()
    new = {"model.embed_tokens.weight": sd["model.tok_embeddings.weight"], "model.norm.weight": sd["model.norm.weight"],
           "lm_head.weight": sd["output.weight"]}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        for kind in ("weight", "bias") if cfg.bias else ("weight",):
            q, k, v = unfuse_wqkv(sd[f"{p}attention.wqkv.{kind}"], cfg)
            new.update({f"{p}self_attn.q_proj.{kind}": q, f"{p}self_attn.k_proj.{kind}": k,
                        f"{p}self_attn.v_proj.{kind}": v, f"{p}self_attn.o_proj.{kind}": sd[f"{p}attention.wo.{kind}"]})
        new.update({f"{p}mlp.gate_proj.weight": sd[f"{p}feed_forward.w1.weight"],
                    f"{p}mlp.up_proj.weight": sd[f"{p}feed_forward.w3.weight"],
                    f"{p}mlp.down_proj.weight": sd[f"{p}feed_forward.w2.weight"],
                    f"{p}input_layernorm.weight": sd[f"{p}attention_norm.weight"],
                    f"{p}post_attention_layernorm.weight": sd[f"{p}ffn_norm.weight"]})
    with torch.device("meta"):  # no second random initialisation of a possibly large model
        llama = LlamaForCausalLM(llama_config)
    llama.load_state_dict({k: v.contiguous() for k, v in new.items()}, strict=True, assign=True)
    # the rotary inverse frequencies are a non-persistent buffer: rebuild them off the meta device
    llama.model.rotary_emb = type(llama.model.rotary_emb)(config=llama_config).to(model.device)
    if cfg.tie_word_embeddings:
        llama.tie_weights()
    return llama.eval()


def register_internlm2() -> None:
    """Let ``AutoConfig`` / ``AutoModel`` / ``AutoModelForCausalLM`` / ``AutoTokenizer`` resolve the
    published ``internlm2`` directories to these classes, with no remote code. As the published
    ``auto_map`` does, ``AutoModel`` gives the causal LM. Safe to call more than once."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    from .tokenization import InternLM2Tokenizer

    AutoConfig.register(InternLM2Config.model_type, InternLM2Config, exist_ok=True)
    AutoModel.register(InternLM2Config, InternLM2ForCausalLM, exist_ok=True)
    AutoModelForCausalLM.register(InternLM2Config, InternLM2ForCausalLM, exist_ok=True)
    AutoTokenizer.register(InternLM2Config, slow_tokenizer_class=InternLM2Tokenizer, exist_ok=True)


register_internlm2()
