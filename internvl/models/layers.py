"""Building blocks shared by every InternVL architecture.

One attention function serves all models: flash-attn when it is installed, the
tensors are on CUDA in fp16/bf16 and no explicit mask is given; otherwise
``torch.nn.functional.scaled_dot_product_attention``. RMSNorm uses apex's fused
kernel on CUDA when apex is installed (as the published InternViT code does), else
plain PyTorch. Each choice is logged once so a cluster log shows which kernel ran;
``INTERNVL_ATTN_BACKEND`` and ``INTERNVL_NORM_BACKEND`` force one.

Packed sequences (several samples in one row, ``--use_packed_ds``) pass ``sample_ids`` (``(batch, seq)``,
the sample each token belongs to; contiguous runs) to :func:`attention`: a token attends only to tokens of
its own sample. On CUDA with flash-attn that is the varlen kernel over ``cu_seqlens``
(:func:`cu_seqlens_of`), with no mask at all; on the SDPA path SDPA on each sample's block (the same
result as a block-diagonal mask, without its quadratic cost); with another mask, or the eager path, the
block-diagonal boolean mask (:func:`sample_mask`). :func:`packed_causal_mask` is the same restriction as the
additive 4-D mask that transformers' LLaMA / Qwen2 / Phi-3 take as ``attention_mask``.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

try:  # timm's DropPath is the field's standard stochastic-depth layer.
    from timm.layers import DropPath
except ImportError:  # pragma: no cover - older timm
    from timm.models.layers import DropPath

logger = logging.getLogger(__name__)

try:
    from flash_attn import flash_attn_func as _flash_attn_func
except Exception:  # ImportError, or a broken CUDA build of flash-attn
    _flash_attn_func = None

try:
    from flash_attn import flash_attn_varlen_func as _flash_attn_varlen_func
except Exception:
    _flash_attn_varlen_func = None

try:
    from apex.normalization.fused_layer_norm import fused_rms_norm_affine as _apex_rms_norm
except Exception:  # ImportError, or apex built without its CUDA extensions
    _apex_rms_norm = None

__all__ = ["attention", "eager_attention", "decoder_mask", "sample_mask", "restrict_mask", "packed_causal_mask",
           "cu_seqlens_of", "available_kernels", "set_attention_backend", "RMSNorm", "DropPath", "AttentionPooling",
           "RotaryEmbedding", "apply_rotary"]

_BACKENDS = ("auto", "flash", "sdpa", "eager")
_backend = os.environ.get("INTERNVL_ATTN_BACKEND", "auto")
# "auto": apex's fused RMSNorm on CUDA when apex is installed; "torch": always the PyTorch expression below.
_norm_backend = os.environ.get("INTERNVL_NORM_BACKEND", "auto")
_logged: set[tuple[str, str]] = set()


def available_kernels() -> dict[str, bool]:
    """Which attention and norm kernels this process can use."""
    return {"flash": _flash_attn_func is not None, "sdpa": True, "eager": True,
            "apex_rms_norm": _apex_rms_norm is not None}


def set_attention_backend(name: str) -> None:
    """Force one attention backend for the whole process.

    ``auto`` (default) picks flash-attn where it applies and SDPA elsewhere;
    ``flash`` requires flash-attn; ``sdpa`` never uses flash-attn; ``eager`` is
    the explicit softmax(QK^T)V used as the numerical reference. The environment
    variable ``INTERNVL_ATTN_BACKEND`` sets the same thing.
    """
    global _backend
    if name not in _BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {_BACKENDS}")
    if name == "flash" and _flash_attn_func is None:
        raise RuntimeError("attention backend 'flash' requested but flash-attn is not installed "
                           "(pip install flash-attn --no-build-isolation; see INSTALLATION.md)")
    _backend = name


def _log_once(name: str, why: str, what: str = "attention") -> None:
    if (what, name) not in _logged:
        _logged.add((what, name))
        logger.info("%s backend: %s (%s)", what, name, why)


def _on_cuda(tensor: torch.Tensor) -> bool:
    """Where a fused CUDA kernel can run (one place, so the tests can pretend on a CPU)."""
    return tensor.is_cuda


def _flash_applies(q: torch.Tensor, attn_mask: Optional[torch.Tensor]) -> bool:
    return (_flash_attn_func is not None and _on_cuda(q) and attn_mask is None
            and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256)


def sample_mask(sample_ids: torch.Tensor) -> torch.Tensor:
    """``(batch, 1, seq, seq)`` boolean: True where query and key belong to the same sample."""
    return sample_ids[:, None, :, None] == sample_ids[:, None, None, :]


def packed_causal_mask(sample_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The causal, block-diagonal mask of a packed batch as an additive ``(batch, 1, seq, seq)`` float mask
    (0 = attend, the dtype's minimum = masked): the prepared 4-D ``attention_mask`` transformers' decoders
    (4.x and 5.x, eager and SDPA) use as it is."""
    seq = sample_ids.shape[-1]
    causal = torch.ones(seq, seq, dtype=torch.bool, device=sample_ids.device).tril()
    allowed = sample_mask(sample_ids) & causal
    mask = torch.zeros(allowed.shape, dtype=dtype, device=sample_ids.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)


def cu_seqlens_of(sample_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(cu_seqlens, max_seqlen)`` of the batch flattened to one sequence: the int32 start offsets of each
    sample (a run of equal ids within a row; rows never share a sample) and the end, as flash-attn's varlen
    functions take them."""
    batch, seq = sample_ids.shape
    flat = sample_ids.reshape(-1)
    starts = torch.ones_like(flat, dtype=torch.bool)
    starts[1:] = flat[1:] != flat[:-1]
    starts[::seq] = True  # every row starts a sample, even when ids repeat across rows
    cu = torch.cat([starts.nonzero().reshape(-1), flat.new_tensor([flat.numel()])]).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max())


def _varlen_attention(q, k, v, sample_ids, *, causal, dropout_p, scale):
    """flash-attn's varlen kernel over the samples of a packed batch (``(B, H, N, D)`` in and out)."""
    batch, heads, seq, dim = q.shape
    cu, longest = cu_seqlens_of(sample_ids)

    def flat(t):
        return t.transpose(1, 2).reshape(batch * seq, t.shape[1], dim)

    out = _flash_attn_varlen_func(flat(q), flat(k), flat(v), cu, cu, longest, longest, dropout_p=dropout_p,
                                  softmax_scale=scale, causal=causal)
    return out.reshape(batch, seq, heads, dim).transpose(1, 2)


def _per_sample_attention(q, k, v, sample_ids, *, causal, dropout_p, scale):
    """SDPA on each sample's block of each row: the block-diagonal mask's result without its quadratic cost
    (the plain-PyTorch counterpart of the varlen kernel)."""
    _log_once("sdpa-per-sample", "torch SDPA per sample (packed sequences)")
    out = torch.empty_like(q)
    cu, _ = cu_seqlens_of(sample_ids)
    seq = q.shape[-2]
    for start, end in zip(cu[:-1].tolist(), cu[1:].tolist()):
        row, a = divmod(start, seq)
        b = a + end - start
        out[row:row + 1, :, a:b] = F.scaled_dot_product_attention(
            q[row:row + 1, :, a:b], k[row:row + 1, :, a:b], v[row:row + 1, :, a:b], dropout_p=dropout_p,
            is_causal=causal, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    return out


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
              dropout_p: float = 0.0, scale: Optional[float] = None,
              attn_mask: Optional[torch.Tensor] = None, allow_flash: bool = True,
              sample_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Scaled dot-product attention over ``(batch, heads, seq, head_dim)`` tensors.

    ``k``/``v`` may have fewer heads than ``q`` (grouped-query attention).
    ``attn_mask`` is boolean (True = attend) or additive, broadcastable to
    ``(batch, heads, q_len, k_len)``. ``allow_flash=False`` is how a model's
    ``use_flash_attn: false`` config reaches the dispatcher. ``sample_ids`` (``(batch, seq)``, no cache)
    keeps each token's attention inside its own sample (packed sequences; see the module doc).
    """
    backend = _backend
    if sample_ids is not None:
        if q.shape[-2] != k.shape[-2] or sample_ids.shape != (q.shape[0], q.shape[-2]):
            raise ValueError(f"sample_ids {tuple(sample_ids.shape)} must be (batch, seq) of a forward without a "
                             f"cache; got q {tuple(q.shape)} and k {tuple(k.shape)}")
        if (backend not in ("sdpa", "eager") and allow_flash and _flash_attn_varlen_func is not None
                and _flash_applies(q, attn_mask)):
            _log_once("flash-varlen", "flash-attn varlen on CUDA (packed sequences)")
            return _varlen_attention(q, k, v, sample_ids, causal=causal, dropout_p=dropout_p, scale=scale)
        if attn_mask is None and backend != "eager":
            return _per_sample_attention(q, k, v, sample_ids, causal=causal, dropout_p=dropout_p, scale=scale)
        attn_mask = restrict_mask(attn_mask, sample_mask(sample_ids))
    if backend == "eager":
        _log_once("eager", "forced")
        return eager_attention(q, k, v, causal=causal, dropout_p=dropout_p, scale=scale, attn_mask=attn_mask)
    if backend != "sdpa" and allow_flash and _flash_applies(q, attn_mask):
        _log_once("flash", "flash-attn on CUDA")
        # flash-attn wants (batch, seq, heads, head_dim); the transposes are views.
        out = _flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                               dropout_p=dropout_p, softmax_scale=scale, causal=causal)
        return out.transpose(1, 2)
    if backend == "flash":
        raise RuntimeError("attention backend 'flash' is forced but does not apply here: it needs CUDA "
                           "tensors in fp16/bf16, no explicit mask and head_dim <= 256 "
                           f"(got device={q.device}, dtype={q.dtype}, mask={attn_mask is not None})")
    _log_once("sdpa", "torch.nn.functional.scaled_dot_product_attention")
    if causal and (attn_mask is not None or q.shape[-2] != k.shape[-2]):
        # SDPA's is_causal aligns the mask top-left; queries that follow a cached prefix need it
        # bottom-right (as flash-attn does), and an explicit mask must be combined with it.
        attn_mask = _with_causal(attn_mask, q.shape[-2], k.shape[-2], q.device)
        causal = False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=causal,
                                          scale=scale, enable_gqa=q.shape[1] != k.shape[1])


def _with_causal(attn_mask: Optional[torch.Tensor], q_len: int, k_len: int, device) -> torch.Tensor:
    """A boolean/additive mask restricted to the bottom-right aligned causal pattern."""
    return restrict_mask(attn_mask, torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(k_len - q_len))


def restrict_mask(attn_mask: Optional[torch.Tensor], keep: torch.Tensor) -> torch.Tensor:
    """A boolean (True = attend) or additive ``attn_mask`` (or none) further restricted to the boolean ``keep``."""
    if attn_mask is None:
        return keep
    if attn_mask.dtype == torch.bool:
        return attn_mask & keep
    return attn_mask.masked_fill(~keep, float("-inf"))


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                    dropout_p: float = 0.0, scale: Optional[float] = None, attn_mask: Optional[torch.Tensor] = None,
                    return_weights: bool = False):
    """softmax(QK^T * scale + mask) V written out: the numerical reference of :func:`attention`, and the path
    that returns the attention probabilities (``output_attentions``). Same arguments as :func:`attention`;
    the softmax runs in fp32, as the published models' eager code does. With ``return_weights`` the
    result is ``(output, probabilities)``."""
    if q.shape[1] != k.shape[1]:
        repeat = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q * scale) @ k.transpose(-2, -1)
    if causal:
        attn_mask = _with_causal(attn_mask, q.shape[-2], k.shape[-2], q.device)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    probs = scores.float().softmax(dim=-1).to(q.dtype)
    if dropout_p > 0:
        probs = F.dropout(probs, p=dropout_p)
    out = probs @ v
    return (out, probs) if return_weights else out


def decoder_mask(padding_mask: Optional[torch.Tensor], q_len: int, k_len: int, bidirectional_prefix: int = 0,
                 ) -> tuple[Optional[torch.Tensor], bool]:
    """``(attn_mask, causal)`` to pass to :func:`attention` for one decoder forward: the ``q_len`` new
    positions are the last of ``k_len`` (a cache holds the ``k_len - q_len`` before them).

    Attention is causal, except that the first ``bidirectional_prefix`` positions see each other both ways
    (QLLaMA's learnable queries); keys where ``padding_mask`` (``(batch, k_len)``, 1 = real token) is 0 are
    never attended to. A row left with nothing to attend to (a padded query) may see every key instead, so
    no softmax row is empty (NaN would spread to real positions through ``0 * NaN``); what padded positions
    compute is never used. The mask is None whenever a kernel's own causal (or no) masking is exact, so
    flash-attn and SDPA's fused paths run: no padding, and a prefix that is entirely cached or covers all.
    """
    past = k_len - q_len
    keep = None
    if padding_mask is not None:
        if padding_mask.dim() != 2 or padding_mask.shape[-1] != k_len:
            raise ValueError(f"attention_mask must be (batch, past + seq) = (batch, {k_len}) or 4D, got shape "
                             f"{tuple(padding_mask.shape)}")
        keep = padding_mask.bool()
        if bool(keep.all()):
            keep = None
    if keep is None:
        if bidirectional_prefix >= k_len:
            return None, False
        if bidirectional_prefix <= past:
            return None, q_len > 1  # one new token sees every cached key: no mask at all
    device = padding_mask.device if padding_mask is not None else None
    q_pos = torch.arange(past, k_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    allowed = (k_pos <= q_pos) | ((q_pos < bidirectional_prefix) & (k_pos < bidirectional_prefix))
    allowed = allowed[None, None] if keep is None else allowed[None, None] & keep[:, None, None, :]
    return allowed | ~allowed.any(dim=-1, keepdim=True), False


class RMSNorm(nn.Module):
    """RMSNorm as InternViT and LLaMA-style models define it.

    Statistics are taken in fp32; the normalised value is cast back to the input
    dtype *before* the weight is applied. That order matters for bit-exact
    agreement with the published models in bf16/fp16. On CUDA with apex installed,
    apex's fused kernel runs instead, as in the published InternViT code
    (``INTERNVL_NORM_BACKEND=torch`` keeps the expression here).
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if _apex_rms_norm is not None and _norm_backend == "auto" and _on_cuda(hidden_states):
            _log_once("apex", "apex.normalization fused RMSNorm on CUDA", what="RMSNorm")
            return _apex_rms_norm(hidden_states, self.weight, self.weight.shape, self.variance_epsilon)
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.variance_epsilon}"


class PoolingCrossAttention(nn.Module):
    """Multi-head attention of one query over all tokens, with the published parameter layout
    (bias-free ``q``/``k``/``v`` linears plus separate ``q_bias``/``k_bias``/``v_bias``)."""

    def __init__(self, dim: int, num_heads: int, out_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.k_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

        q = heads(F.linear(x, self.q.weight, self.q_bias))
        k = heads(F.linear(k, self.k.weight, self.k_bias))
        v = heads(F.linear(v, self.v.weight, self.v_bias))
        out = attention(q, k, v).transpose(1, 2).flatten(2)
        return self.proj(out)


class AttentionPooling(nn.Module):
    """Attention pooling (the published ``AttentionPoolingBlock``): the mean token, LayerNorm'd, attends
    to every LayerNorm'd token; the result is projected to ``out_dim``. ``(B, N, dim) -> (B, out_dim)``."""

    def __init__(self, dim: int, num_heads: int, out_dim: int, eps: float = 1e-5):
        super().__init__()
        self.norm1_q = nn.LayerNorm(dim, eps=eps)
        self.norm1_k = nn.LayerNorm(dim, eps=eps)
        self.norm1_v = nn.LayerNorm(dim, eps=eps)
        self.cross_attn = PoolingCrossAttention(dim, num_heads, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query = self.norm1_q(x.mean(1, keepdim=True))
        return self.cross_attn(query, self.norm1_k(x), self.norm1_v(x)).squeeze(1)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE) as LLaMA, InternLM2 and QLLaMA apply it: the two halves of
    each head dimension rotate together (``rotate_half``), frequencies ``base ** (-2i / dim)``.

    ``scaling`` is the published ``rope_scaling`` dict, or None:
      {"type": "linear", "factor": f}   positions are divided by f;
      {"type": "dynamic", "factor": f}  NTK-aware: when the sequence is longer than
          ``max_position_embeddings`` the base grows to
          base * (f * seq_len / max_pos - (f - 1)) ** (dim / (dim - 2)).
    Dynamic scaling depends on the current total length ``seq_len`` (prompt plus cache), which the
    caller passes; the result is a pure function of its inputs, so a shorter sequence after a longer
    one gets the unscaled frequencies again.
    """

    def __init__(self, dim: int, base: float = 10000.0, max_position_embeddings: int = 2048,
                 scaling: Optional[dict] = None):
        super().__init__()
        kind = (scaling or {}).get("type", (scaling or {}).get("rope_type"))
        if scaling is not None and kind not in ("linear", "dynamic"):
            raise ValueError(f"unsupported rope_scaling {scaling!r}: expected type 'linear' or 'dynamic'")
        self.dim, self.base, self.max_position_embeddings = dim, float(base), max_position_embeddings
        self.scaling_type = kind
        self.factor = float(scaling["factor"]) if scaling is not None else 1.0
        # No inv_freq buffer: computed per call (dim / 2 numbers), so no loading path (meta-device init,
        # transformers 5 materialising non-persistent buffers uninitialised) can leave it stale.

    def _inv_freq(self, base: float, device=None) -> torch.Tensor:
        return 1.0 / base ** (torch.arange(0, self.dim, 2, dtype=torch.int64, device=device).float() / self.dim)

    def forward(self, position_ids: torch.Tensor, seq_len: Optional[int] = None,
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape (*position_ids.shape, dim), computed in fp32 and cast to ``dtype``."""
        inv_freq = self._inv_freq(self.base, position_ids.device)
        positions = position_ids.float()
        if self.scaling_type == "linear":
            positions = positions / self.factor
        elif self.scaling_type == "dynamic":
            seq_len = int(position_ids.max()) + 1 if seq_len is None else seq_len
            if seq_len > self.max_position_embeddings:
                base = self.base * ((self.factor * seq_len / self.max_position_embeddings)
                                    - (self.factor - 1)) ** (self.dim / (self.dim - 2))
                inv_freq = self._inv_freq(base, position_ids.device)
        freqs = positions[..., None] * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (B, H, N, D) by cos/sin of shape (B, N, D) or (N, D)."""
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
