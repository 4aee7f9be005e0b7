"""QLLaMA: the text path is transformers' LLaMA, the query path follows the published masks, the KV
cache and generation agree with full recomputation."""
import pytest
import torch
from transformers import LlamaForCausalLM

from internvl.compat import enable_activation_checkpointing, output_cache
from internvl.models.qllama import QLLAMA_7B_CONFIG, QLLaMAForCausalLM, qllama_config

VISION_WIDTH = 48


def tiny_config(**overrides):
    fields = dict(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  max_position_embeddings=128, rms_norm_eps=1e-6, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                  tie_word_embeddings=False)
    queries = overrides.pop("num_query_token", 6)
    frequency = overrides.pop("cross_attention_frequency", 2)
    fields.update(overrides)
    return qllama_config(num_query_token=queries, cross_attention_frequency=frequency, **fields)


def randomized(config, seed=0) -> QLLaMAForCausalLM:
    torch.manual_seed(seed)
    model = QLLaMAForCausalLM(config, vision_hidden_size=VISION_WIDTH).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(("norm1.weight", "norm2.weight")):
                param.copy_(1 + 0.3 * torch.randn_like(param))
            else:
                param.normal_(0, 0.1 if "embed" not in name else 1.0)
    return model


def hf_llama(model: QLLaMAForCausalLM) -> LlamaForCausalLM:
    """transformers' LLaMA with the same weights (the cross-attention blocks have no counterpart)."""
    llama = LlamaForCausalLM(model.config).eval()
    state = {k: v for k, v in model.state_dict().items() if ".cross_attn." not in k}
    llama.load_state_dict(state, strict=True)
    return llama


def rel_err(actual, expected):
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


# ---- the text path is LLaMA ------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [{}, {"num_key_value_heads": 2}, {"rope_scaling": {"type": "linear", "factor": 2.0}},
                                       {"rope_theta": 500.0, "attention_bias": True}])
def test_text_path_equals_transformers_llama(overrides):
    model = randomized(tiny_config(**overrides))
    llama = hf_llama(model)
    ids = torch.randint(3, 97, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # right padding, as retrieval texts are
    mask[2, 4:] = 0
    ours = model(input_ids=ids, attention_mask=mask).logits
    ref = llama(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    assert rel_err(ours[real], ref[real]) < 1e-4


def test_text_generation_equals_transformers_llama():
    model = randomized(tiny_config())
    llama = hf_llama(model)
    ids = torch.randint(3, 97, (2, 5))
    for kwargs in ({"do_sample": False}, {"num_beams": 3, "do_sample": False}):
        ours = model.generate(input_ids=ids, max_new_tokens=7, min_new_tokens=7, **kwargs)
        ref = llama.generate(input_ids=ids, max_new_tokens=7, min_new_tokens=7, **kwargs)
        assert torch.equal(ours, ref), kwargs


# ---- queries -------------------------------------------------------------------------------------------

def query_inputs(model, batch=2, text_len=5, seed=1):
    generator = torch.Generator().manual_seed(seed)
    cfg = model.config
    queries = torch.randn(batch, cfg.num_query_token, cfg.hidden_size, generator=generator)
    text = torch.randint(3, cfg.vocab_size, (batch, text_len), generator=generator)
    vision = torch.randn(batch, 10, VISION_WIDTH, generator=generator)
    return queries, text, vision


def embeds_of(model, queries, text):
    return torch.cat([queries, model.get_input_embeddings()(text)], dim=1)


def test_cross_attention_every_nth_layer():
    model = QLLaMAForCausalLM(tiny_config(num_hidden_layers=5, cross_attention_frequency=2), vision_hidden_size=48)
    assert [layer.cross_attn is not None for layer in model.model.layers] == [True, False, True, False, True]
    assert model.model.layers[0].cross_attn.k_proj.weight.shape == (64, 48)
    c_only = QLLaMAForCausalLM(tiny_config(num_query_token=0), lm_head=False)
    assert not c_only.model.has_cross_attention and c_only.lm_head is None


def test_queries_see_each_other_and_the_image_but_not_the_text():
    model = randomized(tiny_config())
    queries, text, vision = query_inputs(model)
    q = model.config.num_query_token

    def run(queries, text, vision):
        return model.model(inputs_embeds=embeds_of(model, queries, text), vision_hidden_states=vision).last_hidden_state

    base = run(queries, text, vision)
    other_text = run(queries, torch.randint(3, 97, text.shape), vision)
    assert torch.allclose(base[:, :q], other_text[:, :q], atol=1e-6)  # text is invisible to the queries
    assert not torch.allclose(base[:, q:], other_text[:, q:])
    last_query_changed = queries.clone()
    last_query_changed[:, -1] += 1
    # bidirectional among the queries: the first one sees the last one
    assert not torch.allclose(run(last_query_changed, text, vision)[:, 0], base[:, 0])
    assert not torch.allclose(run(queries, text, vision + 1)[:, :q], base[:, :q])
    # the text is causal: the first text token does not see the second
    changed = text.clone()
    changed[:, 1] = (changed[:, 1] + 1) % 97
    assert torch.allclose(run(queries, changed, vision)[:, q], base[:, q], atol=1e-6)
    # queries only: the image-feature path of InternVL-G
    alone = model.model(inputs_embeds=queries, vision_hidden_states=vision).last_hidden_state
    assert torch.allclose(alone, base[:, :q], atol=1e-5)


def test_kv_cache_steps_equal_full_recomputation():
    model = randomized(tiny_config())
    queries, text, vision = query_inputs(model, text_len=7)
    q = model.config.num_query_token
    full = model(inputs_embeds=embeds_of(model, queries, text), vision_hidden_states=vision, use_cache=False).logits
    out = model(inputs_embeds=embeds_of(model, queries, text[:, :3]), vision_hidden_states=vision, use_cache=True)
    logits = [out.logits]
    cache = output_cache(out)
    for t in range(3, 7):  # image features passed again, as generate does: ignored once the queries are cached
        out = model(input_ids=text[:, t:t + 1], past_key_values=cache, vision_hidden_states=vision, use_cache=True)
        logits.append(out.logits)
        cache = output_cache(out)
    assert cache.get_seq_length() == q + 7
    assert rel_err(torch.cat(logits, 1), full) < 1e-5


def test_left_padded_prompts_match_unpadded_ones():
    model = randomized(tiny_config())
    queries, text, vision = query_inputs(model, text_len=6)
    q = model.config.num_query_token
    short = text[1:, 2:]  # a 4-token prompt, left-padded to 6 in the batch
    padded_text = torch.cat([torch.zeros(1, 2, dtype=torch.long), short], dim=1)
    batch_text = torch.cat([text[:1], padded_text])
    mask = torch.ones(2, q + 6, dtype=torch.long)
    mask[1, q:q + 2] = 0
    position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    batched = model(inputs_embeds=embeds_of(model, queries, batch_text), attention_mask=mask,
                    position_ids=position_ids, vision_hidden_states=vision).logits
    alone = model(inputs_embeds=embeds_of(model, queries[1:], short), vision_hidden_states=vision[1:]).logits
    assert rel_err(batched[1, -4:], alone[0, -4:]) < 1e-5
    assert batched.isfinite().all()


@pytest.mark.parametrize("kwargs", [{"num_beams": 1, "do_sample": False},
                                    {"num_beams": 4, "do_sample": False, "min_new_tokens": 6},
                                    {"num_beams": 3, "num_return_sequences": 2, "length_penalty": 0.5}])
def test_batched_generation_uses_the_cache_and_equals_one_at_a_time(kwargs):
    model = randomized(tiny_config())
    queries, text, vision = query_inputs(model)
    embeds = embeds_of(model, queries, text)
    mask = torch.ones(embeds.shape[:2], dtype=torch.long)
    lengths = []  # sequence length each forward pass sees
    model.model.layers[0].register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
    batched = model.generate(inputs_embeds=embeds, attention_mask=mask, vision_hidden_states=vision,
                             max_new_tokens=6, **kwargs)
    assert lengths == [embeds.shape[1]] + [1] * 5  # prefill, then one new token per step from the cache
    returns = kwargs.get("num_return_sequences", 1)
    assert batched.shape == (2 * returns, 6)  # new tokens only
    for i in range(2):  # beams and image features are expanded per sample, caches reordered per beam
        alone = model.generate(inputs_embeds=embeds[i:i + 1], attention_mask=mask[i:i + 1],
                               vision_hidden_states=vision[i:i + 1], max_new_tokens=6, **kwargs)
        assert torch.equal(alone, batched[i * returns:(i + 1) * returns])


def test_sampling_is_seeded():
    model = randomized(tiny_config())
    queries, text, vision = query_inputs(model)
    embeds = embeds_of(model, queries, text)
    mask = torch.ones(embeds.shape[:2], dtype=torch.long)

    def sample(seed):
        torch.manual_seed(seed)
        return model.generate(inputs_embeds=embeds, attention_mask=mask, vision_hidden_states=vision,
                              max_new_tokens=8, do_sample=True, top_k=20, top_p=0.9, temperature=1.5)

    assert torch.equal(sample(3), sample(3))


def test_labels_give_the_shifted_cross_entropy():
    model = randomized(tiny_config())
    ids = torch.randint(3, 97, (2, 9))
    labels = ids.clone()
    labels[:, :3] = -100
    out = model(input_ids=ids, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 97), labels[:, 1:].reshape(-1))
    assert torch.allclose(out.loss, expected)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = randomized(tiny_config()).train()
    queries, text, vision = query_inputs(model)

    def grads():
        model.zero_grad()
        model(inputs_embeds=embeds_of(model, queries, text), vision_hidden_states=vision, use_cache=False).logits.square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    enable_activation_checkpointing(model)
    assert model.model.gradient_checkpointing
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys() and any(".cross_attn." in k for k in plain)
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-6), name


def test_bad_query_inputs_are_explained():
    model = randomized(tiny_config())
    queries, text, vision = query_inputs(model)
    with pytest.raises(ValueError, match="query embeddings must come first"):
        model.model(inputs_embeds=queries[:, :3], vision_hidden_states=vision)
    with pytest.raises(ValueError, match="batch 1"):
        model.model(inputs_embeds=queries, vision_hidden_states=vision[:1])
    c_only = QLLaMAForCausalLM(tiny_config(num_query_token=0), lm_head=False)
    with pytest.raises(ValueError, match="no query tokens"):
        c_only.model(inputs_embeds=queries, vision_hidden_states=vision)
    with pytest.raises(ValueError, match="no lm_head"):
        c_only(input_ids=text)
    with pytest.raises(ValueError, match="exactly one of"):
        model.model()


def test_published_qllama_config():
    config = qllama_config(**QLLAMA_7B_CONFIG)
    with torch.device("meta"):
        model = QLLaMAForCausalLM(config, vision_hidden_size=3200)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["model.embed_tokens.weight"] == (49954, 4096)
    assert shapes["model.layers.30.cross_attn.k_proj.weight"] == (4096, 3200)
    assert "model.layers.31.cross_attn.q_proj.weight" not in shapes
    assert sum(1 for k in shapes if k.endswith("cross_attn.norm2.weight")) == 16
