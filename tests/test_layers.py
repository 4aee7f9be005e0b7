"""The one attention function: SDPA and the explicit eager reference agree; switches behave."""
import pytest
import torch

from internvl import layers
from internvl.layers import RMSNorm, attention, set_attention_backend


@pytest.fixture
def backend():
    yield set_attention_backend
    set_attention_backend("auto")


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_sdpa_equals_eager(backend, causal, kv_heads):
    q = torch.randn(2, 4, 7, 16)
    k, v = torch.randn(2, kv_heads, 7, 16), torch.randn(2, kv_heads, 7, 16)
    backend("sdpa")
    fast = attention(q, k, v, causal=causal)
    backend("eager")
    slow = attention(q, k, v, causal=causal)
    assert torch.allclose(fast, slow, atol=1e-5)


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_masks_agree(backend, kind):
    q, k, v = torch.randn(3, 2, 5, 8).unbind(0)
    q, k, v = q[None], k[None], v[None]
    keep = torch.tensor([True, True, True, False, False]).expand(1, 1, 5, 5)
    mask = keep if kind == "bool" else torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))
    backend("sdpa")
    fast = attention(q, k, v, attn_mask=mask)
    backend("eager")
    slow = attention(q, k, v, attn_mask=mask)
    assert torch.allclose(fast, slow, atol=1e-5)
    # the masked keys really are ignored
    assert torch.allclose(slow, attention(q, k[:, :, :3], v[:, :, :3]), atol=1e-5)


@pytest.mark.parametrize("name", ["sdpa", "eager"])
def test_causal_after_a_cached_prefix_is_bottom_right_aligned(backend, name):
    """Queries that follow 4 cached keys see the prefix and themselves, as in flash-attn."""
    q, k, v = torch.randn(1, 2, 2, 8), torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)
    backend(name)
    out = attention(q, k, v, causal=True)
    assert torch.allclose(out[:, :, 1:], attention(q[:, :, 1:], k, v), atol=1e-6)  # last query sees all 6
    assert torch.allclose(out[:, :, :1], attention(q[:, :, :1], k[:, :, :5], v[:, :, :5]), atol=1e-6)
    padded = torch.tensor([False, True, True, True, True, True]).expand(1, 1, 2, 6)
    assert torch.allclose(attention(q, k, v, causal=True, attn_mask=padded)[:, :, 1:],
                          attention(q[:, :, 1:], k[:, :, 1:], v[:, :, 1:]), atol=1e-6)


def test_backend_switch_errors(backend):
    with pytest.raises(ValueError, match="unknown attention backend 'xformers'"):
        backend("xformers")
    if layers._flash_attn_func is None:
        with pytest.raises(RuntimeError, match="flash-attn is not installed"):
            backend("flash")


def test_rms_norm_normalises_in_fp32_then_casts_before_the_weight():
    norm = RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2, 8))
    x = torch.randn(3, 8, dtype=torch.bfloat16) * 100
    x32 = x.float()
    expected = norm.weight * (x32 / x32.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()).to(torch.bfloat16)
    assert torch.equal(norm(x), expected)
    assert norm(x).dtype == torch.float32  # fp32 weight times bf16 value promotes, as in the reference


def test_rotary_matches_transformers_llama_and_its_scalings():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    from internvl.layers import RotaryEmbedding, apply_rotary

    q, k = torch.randn(2, 4, 12, 16), torch.randn(2, 4, 12, 16)
    positions = torch.arange(12).expand(2, 12)
    for scaling in (None, {"type": "linear", "factor": 2.0}):
        cfg = LlamaConfig(hidden_size=64, num_attention_heads=4, rope_theta=500.0, rope_scaling=scaling,
                          max_position_embeddings=8)
        cos_ref, sin_ref = LlamaRotaryEmbedding(cfg)(q, positions)
        cos, sin = RotaryEmbedding(16, base=500.0, max_position_embeddings=8, scaling=scaling)(positions)
        torch.testing.assert_close(cos, cos_ref)
        ref = apply_rotary_pos_emb(q, k, cos_ref, sin_ref)
        torch.testing.assert_close(apply_rotary(q, cos, sin), ref[0])
        torch.testing.assert_close(apply_rotary(k, cos, sin), ref[1])
    # dynamic NTK: unchanged within max_position_embeddings, a larger base beyond it (formula by hand)
    rope = RotaryEmbedding(16, base=500.0, max_position_embeddings=8, scaling={"type": "dynamic", "factor": 2.0})
    plain = RotaryEmbedding(16, base=500.0, max_position_embeddings=8)
    torch.testing.assert_close(rope(positions[:, :8])[0], plain(positions[:, :8])[0])
    base = 500.0 * (2.0 * 12 / 8 - 1.0) ** (16 / 14)
    torch.testing.assert_close(rope(positions)[0], RotaryEmbedding(16, base=base)(positions)[0])
    with pytest.raises(ValueError, match="unsupported rope_scaling"):
        RotaryEmbedding(16, scaling={"type": "yarn", "factor": 2.0})
