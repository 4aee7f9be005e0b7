"""The one attention function: SDPA and the explicit eager reference agree; switches behave."""
import pytest
import torch

from internvl import layers
from internvl.models.layers import RMSNorm, attention, set_attention_backend


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

    from internvl.models.layers import RotaryEmbedding, apply_rotary

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


# ---- the one decoder mask ----------------------------------------------------------------------------

def test_decoder_mask_needs_no_tensor_where_kernels_mask_themselves():
    assert layers.decoder_mask(None, 5, 5) == (None, True)  # plain causal
    assert layers.decoder_mask(torch.ones(2, 5), 5, 5) == (None, True)  # padding mask without padding
    assert layers.decoder_mask(None, 1, 9) == (None, False)  # one new token sees the whole cache
    assert layers.decoder_mask(None, 4, 4, bidirectional_prefix=4) == (None, False)  # queries only
    assert layers.decoder_mask(None, 2, 9, bidirectional_prefix=4) == (None, True)  # prefix already cached


def test_decoder_mask_by_hand():
    """Two query positions see each other; text is causal; the padded key (batch 1, position 4) is never seen."""
    padding = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    mask, causal = layers.decoder_mask(padding, 5, 5, bidirectional_prefix=2)
    assert causal is False and mask.shape == (2, 1, 5, 5)
    expected = torch.tensor([[1, 1, 0, 0, 0],
                             [1, 1, 0, 0, 0],
                             [1, 1, 1, 0, 0],
                             [1, 1, 1, 1, 0],
                             [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask[0, 0], expected)
    expected[4, 4] = False
    assert torch.equal(mask[1, 0], expected)
    # after 3 cached positions, the 2 new ones are rows 3 and 4 of the full pattern
    assert torch.equal(layers.decoder_mask(padding, 2, 5, bidirectional_prefix=2)[0][1, 0], expected[3:])


def test_decoder_mask_rows_with_nothing_to_see_stay_finite():
    """A left-padded query sees no real key causally; it is given every key rather than a NaN softmax."""
    padding = torch.tensor([[0, 0, 1, 1]])
    mask, _ = layers.decoder_mask(padding, 4, 4)
    assert mask[0, 0, 0].all() and mask[0, 0, 1].all()
    assert torch.equal(mask[0, 0, 2:], torch.tensor([[0, 0, 1, 0], [0, 0, 1, 1]], dtype=torch.bool))
    q, k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
    assert torch.isfinite(attention(q, k, v, attn_mask=mask)).all()
    with pytest.raises(ValueError, match=r"attention_mask must be \(batch, past \+ seq\) = \(batch, 4\)"):
        layers.decoder_mask(torch.ones(1, 3), 4, 4)


def test_eager_weights_are_the_softmax_the_output_is_made_of():
    q, k, v = torch.randn(1, 4, 5, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    out, probs = layers.eager_attention(q, k, v, causal=True, return_weights=True)
    assert torch.allclose(probs.sum(-1), torch.ones(1, 4, 5))
    assert (probs[0, :, 0, 1:] == 0).all()  # causal: the first query sees only itself
    assert torch.allclose(out, probs @ v.repeat_interleave(2, dim=1), atol=1e-6)


# ---- the CUDA kernels' selection and call, with stand-in kernels ---------------------------------------

def test_flash_attn_is_called_in_its_layout_when_it_applies(backend, monkeypatch):
    calls = []

    def fake_flash(q, k, v, dropout_p, softmax_scale, causal):  # flash-attn's (batch, seq, heads, dim)
        calls.append((q.shape, k.shape, dropout_p, softmax_scale, causal))
        return layers.eager_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal,
                                      scale=softmax_scale).transpose(1, 2)

    monkeypatch.setattr(layers, "_flash_attn_func", fake_flash)
    monkeypatch.setattr(layers, "_on_cuda", lambda tensor: True)
    q, k, v = (torch.randn(2, 4, 6, 8, dtype=torch.bfloat16) for _ in range(3))
    out = attention(q, k, v, causal=True, scale=0.5)
    assert calls == [((2, 6, 4, 8), (2, 6, 4, 8), 0.0, 0.5, True)]
    assert torch.allclose(out.float(), layers.eager_attention(q, k, v, causal=True, scale=0.5).float(), atol=1e-2)
    # it does not apply with an explicit mask, in fp32, or with the model's use_flash_attn: false
    attention(q, k, v, attn_mask=torch.ones(6, 6, dtype=torch.bool))
    attention(q.float(), k.float(), v.float())
    attention(q, k, v, allow_flash=False)
    backend("sdpa")
    attention(q, k, v)
    assert len(calls) == 1
    backend("flash")
    with pytest.raises(RuntimeError, match="does not apply here"):
        attention(q.float(), k.float(), v.float())


def test_apex_rms_norm_runs_on_cuda_when_installed(monkeypatch):
    calls = []

    def fake_apex(x, weight, normalized_shape, eps):
        calls.append((tuple(normalized_shape), eps))
        return torch.zeros_like(x)

    norm = RMSNorm(8, eps=1e-5)
    x = torch.randn(2, 8)
    monkeypatch.setattr(layers, "_apex_rms_norm", fake_apex)
    assert norm(x).abs().sum() > 0  # on the CPU: the PyTorch expression
    monkeypatch.setattr(layers, "_on_cuda", lambda tensor: True)
    assert norm(x).abs().sum() == 0 and calls == [((8,), 1e-5)]
    monkeypatch.setattr(layers, "_norm_backend", "torch")  # INTERNVL_NORM_BACKEND=torch
    assert norm(x).abs().sum() > 0 and len(calls) == 1
