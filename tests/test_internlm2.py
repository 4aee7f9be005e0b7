"""InternLM2: the same numbers as transformers' LLaMA with the unfused weights, KV cache, generation, published
format, training paths."""
import copy
import json

import pytest
import torch
from helpers import read_manifest
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.generation.streamers import BaseStreamer
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from internvl.models.internlm2 import (InternLM2Attention, InternLM2Config, InternLM2ForCausalLM, InternLM2Model,
                                register_internlm2, to_llama, unfuse_wqkv)
from internvl.compat import TRANSFORMERS_5, enable_activation_checkpointing, output_cache
from internvl.models.layers import set_attention_backend
from internvl.models.modeling_utils import checkpoint_shapes

# The llm_config of OpenGVLab/InternVL2-2B (internlm/internlm2-chat-1_8b), as published.
PUBLISHED_LLM_CONFIG = {
    "architectures": ["InternLM2ForCausalLM"], "attn_implementation": "flash_attention_2",
    "auto_map": {"AutoConfig": "configuration_internlm2.InternLM2Config",
                 "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
                 "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"},
    "bias": False, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 2048,
    "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 32768, "model_type": "internlm2",
    "num_attention_heads": 16, "num_hidden_layers": 24, "num_key_value_heads": 8, "pad_token_id": 2,
    "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 2.0, "type": "dynamic"}, "rope_theta": 1000000,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True, "vocab_size": 92553,
}


def tiny_internlm2(**overrides) -> InternLM2Config:
    """The internlm2-chat-1.8B recipe at toy size: GQA (4 query heads on 2 kv heads), no bias, pad = eos."""
    cfg = dict(vocab_size=97, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, pad_token_id=2, bias=False,
               rope_theta=10000.0, rope_scaling=None)
    cfg.update(overrides)
    return InternLM2Config(**cfg)


def randomized(config: InternLM2Config) -> InternLM2ForCausalLM:
    """Every tensor random, norms and biases included, so no term can hide behind a 1 or a 0."""
    model = InternLM2ForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1 + 0.3 * torch.randn_like(param))
            else:
                param.normal_(0, 0.1 if name.endswith("bias") else 0.08)
    return model


def llama_with_rope(model: InternLM2ForCausalLM, rope_theta: float):
    """The converted LLaMA with plain (unscaled) RoPE of base ``rope_theta``."""
    llama = to_llama(model)
    if TRANSFORMERS_5:  # RoPE settings live in one rope_parameters dict there
        llama.config.rope_parameters = {"rope_type": "default", "rope_theta": rope_theta}
    else:
        llama.config.rope_theta, llama.config.rope_scaling = rope_theta, None
    llama.model.rotary_emb = LlamaRotaryEmbedding(config=llama.config)
    return llama


def close(actual, expected, tol=1e-5):
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol)


def test_wqkv_layout_is_per_kv_head_its_queries_then_key_then_value():
    """The published layout stated row block by row block: kv head 0's two query heads, its key, its value,
    then kv head 1's; query head h pairs with kv head h // 2."""
    cfg = tiny_internlm2()
    dim, hidden = cfg.hidden_size // cfg.num_attention_heads, cfg.hidden_size
    order = [("q", 0), ("q", 1), ("k", 0), ("v", 0), ("q", 2), ("q", 3), ("k", 1), ("v", 1)]
    blocks = {name: torch.randn(dim, hidden) for name in order}
    attn = InternLM2Attention(cfg, layer_idx=0)
    with torch.no_grad():
        attn.wqkv.weight.copy_(torch.cat([blocks[name] for name in order]))
    x = torch.randn(1, 5, hidden)
    q, k, v = attn.split_qkv(x)
    for h in range(4):
        close(q[0, h], x[0] @ blocks["q", h].T)
    for h in range(2):
        close(k[0, h], x[0] @ blocks["k", h].T)
        close(v[0, h], x[0] @ blocks["v", h].T)
    wq, wk, wv = unfuse_wqkv(attn.wqkv.weight, cfg)
    assert torch.equal(wq, torch.cat([blocks["q", h] for h in range(4)]))
    assert torch.equal(wk, torch.cat([blocks["k", h] for h in range(2)]))
    assert torch.equal(wv, torch.cat([blocks["v", h] for h in range(2)]))


CONFIGS = {
    "gqa": dict(),
    "mha_bias": dict(num_key_value_heads=4, bias=True),
    "mqa": dict(num_key_value_heads=1),
    "gqa_linear": dict(rope_scaling={"type": "linear", "factor": 2.0}),
    "mha_linear_tied": dict(num_key_value_heads=4, rope_scaling={"type": "linear", "factor": 3.0},
                            tie_word_embeddings=True),
    "dynamic_within_max": dict(rope_scaling={"type": "dynamic", "factor": 2.0}, rope_theta=1000000.0),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_and_loss_equal_llama_with_unfused_weights(name):
    model = randomized(tiny_internlm2(**CONFIGS[name]))
    # within max_position_embeddings dynamic scaling is the plain RoPE
    llama = llama_with_rope(model, model.config.rope_theta) if name == "dynamic_within_max" else to_llama(model)
    ids = torch.randint(0, 97, (2, 23))
    labels = ids.clone()
    labels[:, :5] = -100
    ours = model(ids, labels=labels)
    ref = llama(ids, labels=labels)
    close(ours.logits, ref.logits)
    close(ours.loss, ref.loss)
    # a left-padded batch: real positions agree, with position ids counted from the first real token
    mask = torch.ones_like(ids)
    mask[0, :6] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    ours = model(ids, attention_mask=mask, position_ids=positions).logits
    ref = llama(ids, attention_mask=mask, position_ids=positions).logits
    close(ours[mask.bool()], ref[mask.bool()])
    assert ours.isfinite().all()  # padded rows too: NaN there would leak through 0 * NaN


def test_dynamic_ntk_beyond_max_position_embeddings_uses_the_scaled_base():
    """A 40-token sequence with max_position_embeddings 16 and factor 2 is the unscaled model with base
    theta * (2 * 40 / 16 - 1) ** (d / (d - 2))."""
    cfg = tiny_internlm2(max_position_embeddings=16, rope_scaling={"type": "dynamic", "factor": 2.0})
    model = randomized(cfg)
    ids = torch.randint(0, 97, (1, 40))
    d = cfg.hidden_size // cfg.num_attention_heads
    scaled_base = cfg.rope_theta * (2.0 * 40 / 16 - 1) ** (d / (d - 2))
    close(model(ids).logits, llama_with_rope(model, scaled_base)(ids).logits)
    # within max_position_embeddings nothing is scaled
    close(model(ids[:, :16]).logits, llama_with_rope(model, cfg.rope_theta)(ids[:, :16]).logits)
    assert not torch.allclose(model(ids).logits[:, :16], model(ids[:, :16]).logits, atol=1e-3)


def test_output_attentions_and_hidden_states_match_llama():
    model = randomized(tiny_internlm2())
    llama = to_llama(model)
    llama.config._attn_implementation = "eager"  # the transformers backend that returns attention weights
    ids = torch.randint(0, 97, (2, 9))
    ours = model(ids, output_attentions=True, output_hidden_states=True)
    ref = llama(ids, output_attentions=True, output_hidden_states=True)
    close(ours.logits, model(ids).logits)  # the eager path that returns weights computes the same
    assert len(ours.attentions) == len(ref.attentions) == 2
    for a, b in zip(ours.attentions, ref.attentions):
        close(a, b)
    assert len(ours.hidden_states) == 3
    for a, b in zip(ours.hidden_states, ref.hidden_states):
        close(a, b)


def test_incremental_decoding_with_cache_equals_full_forward():
    model = randomized(tiny_internlm2(rope_scaling={"type": "linear", "factor": 2.0}))
    ids = torch.randint(0, 97, (2, 12))
    full = model(ids).logits
    out = model(ids[:, :7], use_cache=True)
    logits = [out.logits]
    for t in range(7, 12):
        out = model(ids[:, t:t + 1], past_key_values=output_cache(out), use_cache=True)
        logits.append(out.logits)
    close(torch.cat(logits, 1), full)
    assert output_cache(out).get_seq_length() == 12
    if TRANSFORMERS_5:  # no legacy tuple caches there
        return
    # the legacy tuple format (transformers < 4.36 callers) is accepted
    legacy = output_cache(model(ids[:, :7], use_cache=True)).to_legacy_cache()
    assert isinstance(legacy, tuple) and len(legacy) == 2
    close(model(ids[:, 7:], past_key_values=legacy).logits, full[:, 7:])


@pytest.mark.parametrize("scaling", [None, {"type": "dynamic", "factor": 2.0}])
def test_greedy_generate_with_cache_equals_recompute(scaling):
    model = randomized(tiny_internlm2(rope_scaling=scaling))
    ids = torch.randint(3, 97, (2, 6))
    kw = dict(max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=2)
    cached = model.generate(ids, use_cache=True, **kw)
    recomputed = model.generate(ids, use_cache=False, **kw)
    assert cached.shape == (2, 18)
    assert torch.equal(cached, recomputed)
    if scaling is None:
        assert torch.equal(cached, to_llama(model).generate(ids, **kw))


def _left_pad(prompts, pad_id=2):
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad_id)
    mask = torch.zeros(len(prompts), length, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, length - len(p):] = torch.tensor(p)
        mask[i, length - len(p):] = 1
    return ids, mask


@pytest.fixture
def attention_backend():
    yield set_attention_backend
    set_attention_backend("auto")


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_left_padded_batch_generation_equals_one_by_one(attention_backend, backend):
    """Under every backend: the eager one turns a query row with no visible key into NaN, which the padding
    mask must avoid."""
    attention_backend(backend)
    model = randomized(tiny_internlm2())
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 97, (n,), generator=g).tolist() for n in (3, 9, 6)]
    ids, mask = _left_pad(prompts)
    assert model(ids, attention_mask=mask).logits.isfinite().all()
    kw = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=2)
    batched = model.generate(ids, attention_mask=mask, **kw)[:, ids.shape[1]:]
    for row, prompt in zip(batched, prompts):
        single = model.generate(torch.tensor([prompt]), **kw)[0, len(prompt):]
        assert torch.equal(row, single)
    # the chat model's path: embeddings in, only new tokens out
    embeds = model.get_input_embeddings()(ids)
    from_embeds = model.generate(inputs_embeds=embeds, attention_mask=mask, **kw)
    assert torch.equal(from_embeds, batched)
    assert torch.equal(model.generate(inputs_embeds=embeds, attention_mask=mask, use_cache=False, **kw), batched)


def test_beam_search_sampling_and_streaming_run():
    model = randomized(tiny_internlm2())
    ids = torch.randint(3, 97, (1, 5))
    beams = model.generate(ids, max_new_tokens=6, num_beams=3, num_return_sequences=3, do_sample=False,
                           eos_token_id=None, pad_token_id=2, output_scores=True, return_dict_in_generate=True)
    assert beams.sequences.shape == (3, 11)
    assert torch.equal(beams.sequences[:, :5], ids.expand(3, -1))
    # the same beams, with the same scores, as transformers' own LLaMA beam search over the same network
    llama_kwargs = dict(max_new_tokens=6, num_beams=3, num_return_sequences=3, do_sample=False, eos_token_id=None,
                        pad_token_id=2, output_scores=True, return_dict_in_generate=True)
    reference = to_llama(model).generate(ids, **llama_kwargs)
    assert torch.equal(beams.sequences, reference.sequences)
    close(beams.sequences_scores, reference.sequences_scores, tol=1e-4)

    class Collect(BaseStreamer):
        def __init__(self):
            self.chunks = []

        def put(self, value):
            self.chunks.append(value.reshape(-1).tolist())

        def end(self):
            self.chunks.append(None)

    streamer = Collect()
    torch.manual_seed(3)
    sampled = model.generate(ids, max_new_tokens=6, do_sample=True, top_p=0.8, temperature=0.8, eos_token_id=None,
                             pad_token_id=2, streamer=streamer)
    assert streamer.chunks[0] == ids[0].tolist() and streamer.chunks[-1] is None
    assert sum(streamer.chunks[1:-1], []) == sampled[0, 5:].tolist()
    torch.manual_seed(3)
    assert torch.equal(sampled, model.generate(ids, max_new_tokens=6, do_sample=True, top_p=0.8, temperature=0.8,
                                               eos_token_id=None, pad_token_id=2))


@pytest.mark.parametrize("shard, tied", [(None, False), ("60KB", False), (None, True), ("60KB", True)])
def test_save_pretrained_round_trip_in_the_published_format(tmp_path, shard, tied):
    model = randomized(tiny_internlm2(tie_word_embeddings=tied, rope_scaling={"type": "dynamic", "factor": 2.0},
                                      attn_implementation="flash_attention_2"))
    model.save_pretrained(tmp_path, **({"max_shard_size": shard} if shard else {}))
    if shard:
        assert (tmp_path / "model.safetensors.index.json").is_file()
        assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    names = set(checkpoint_shapes(tmp_path))
    assert "model.layers.1.attention.wqkv.weight" in names and "model.tok_embeddings.weight" in names
    assert ("output.weight" in names) != tied  # a tied head is not written twice
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["InternLM2ForCausalLM"] and config["model_type"] == "internlm2"
    assert config["auto_map"] == PUBLISHED_LLM_CONFIG["auto_map"]
    assert config["attn_implementation"] == "flash_attention_2"
    assert config["rope_scaling"] == {"type": "dynamic", "factor": 2.0}

    loaded = InternLM2ForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.attn_implementation == "flash_attention_2"
    if tied:
        assert loaded.output.weight.data_ptr() == loaded.model.tok_embeddings.weight.data_ptr()
    ids = torch.randint(3, 97, (2, 7))
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    kw = dict(max_new_tokens=5, num_beams=2, do_sample=False, eos_token_id=None, pad_token_id=2)
    assert torch.equal(loaded.generate(ids, **kw), model.generate(ids, **kw))


def test_auto_classes_resolve_without_remote_code(tmp_path):
    register_internlm2()
    model = randomized(tiny_internlm2())
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), InternLM2Config)
    auto = AutoModelForCausalLM.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    assert type(auto) is InternLM2ForCausalLM and auto.dtype == torch.bfloat16
    ids = torch.randint(3, 97, (1, 6))
    # The loaded bf16 weights are the fp32 ones rounded to bf16: in float32 they give exactly the logits of the
    # rounded model (0.0 measured), and within bf16's rounding of the fp32 model's (largest difference 0.020 over
    # 20 seeds, logits up to about 2.5: 8 mantissa bits, ~0.4% per weight).
    rounded = copy.deepcopy(model).to(torch.bfloat16).float()
    close(auto.float()(ids).logits, rounded(ids).logits, tol=1e-6)
    close(auto.float()(ids).logits, model(ids).logits, tol=0.03)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = randomized(tiny_internlm2(rope_scaling={"type": "linear", "factor": 2.0})).train()
    ids = torch.randint(3, 97, (2, 10))

    def grads():
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    enable_activation_checkpointing(model)
    assert model.model.gradient_checkpointing
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        close(checkpointed[name], plain[name], tol=1e-6)
    model.gradient_checkpointing_disable()


def test_loss_honours_num_items_in_batch():
    model = randomized(tiny_internlm2())
    ids = torch.randint(3, 97, (2, 8))
    labels = ids.clone()
    labels[0, :4] = -100
    mean = model(ids, labels=labels).loss
    kept = (labels[:, 1:] != -100).sum()
    summed = model(ids, labels=labels, num_items_in_batch=kept * 2).loss
    close(summed, mean / 2)


def test_bf16_forward_tracks_fp32():
    model = randomized(tiny_internlm2())
    ids = torch.randint(3, 97, (2, 10))
    ref = model(ids).logits
    low = model.to(torch.bfloat16)(ids).logits
    assert low.dtype == torch.float32  # the head's output is upcast as in the reference
    assert ((low - ref).abs().max() / ref.abs().max()).item() < 0.05


def test_published_config_round_trip(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(PUBLISHED_LLM_CONFIG))
    config = InternLM2Config.from_pretrained(tmp_path)
    for key, value in PUBLISHED_LLM_CONFIG.items():
        if key != "torch_dtype":
            assert getattr(config, key) == value, key
    config.save_pretrained(tmp_path / "again")
    written = json.loads((tmp_path / "again" / "config.json").read_text())
    for key, value in PUBLISHED_LLM_CONFIG.items():
        assert written[key] == value, key


@pytest.mark.parametrize("overrides, message", [
    (dict(rope_scaling={"type": "yarn", "factor": 2.0}), "rope_scaling"),
    (dict(rope_scaling={"type": "dynamic", "factor": 0.5}), "rope_scaling"),
    (dict(hidden_size=66), "not divisible by num_attention_heads"),
    (dict(num_key_value_heads=3), "not a multiple of num_key_value_heads"),
    (dict(rope_pos_id_version="v2pe"), "V2PE"),
])
def test_bad_configs_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_internlm2(**overrides)


def test_bad_inputs_are_named():
    model = randomized(tiny_internlm2())
    ids = torch.randint(3, 97, (2, 5))
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model(ids, inputs_embeds=model.get_input_embeddings()(ids))
    with pytest.raises(ValueError, match=r"attention_mask must be \(batch, past \+ seq\)"):
        model(ids, attention_mask=torch.ones(2, 4))


def test_meta_device_model_has_the_published_names_and_shapes():
    config = InternLM2Config(**{k: v for k, v in PUBLISHED_LLM_CONFIG.items() if k != "architectures"})
    with torch.device("meta"):
        model = InternLM2ForCausalLM(config)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == read_manifest("InternVL2-2B.tsv", prefix="language_model.")
    assert isinstance(model.get_decoder(), InternLM2Model)
