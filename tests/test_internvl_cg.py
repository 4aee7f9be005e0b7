"""InternVL-C/G: reference semantics, both checkpoint formats, captions, image sizes, text conventions."""
import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from cg_helpers import randomized_internvl_cg, tiny_internvl_cg_config, write_tiny_internvl_cg
from helpers import read_manifest
from test_intern_vit import reference_forward as reference_vit
from transformers import AutoConfig, AutoModel

from internvl.models.internvl_cg import (MODES, InternVLConfig, InternVLModel, load_internvl_c_pth, register_internvl_cg,
                                  rename_internvl_c_pth)
from internvl.models.processing_internvl_cg import CAPTION_PROMPT, build_cg_tokenizer, image_transform


def rel_err(actual, expected):
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


# ---- the published forward, restated step by step ---------------------------------------------------
# From the published modeling_internvl.py / modeling_qllama.py: additive masks of finfo.min (causal via
# _make_causal_mask, padding via _expand_mask, the query block zeroed by use_zero_attention_mask), scores
# clamped at finfo.min, softmax in fp32, rotary cos/sin gathered by position id, cross-attention in layers
# whose index is a multiple of cross_attention_frequency when the sequence holds the queries (the
# reference hard-codes 96 = num_query_token of the published model), attention pooling of the mean token.

def ref_rms_norm(x, weight, eps):
    variance = x.float().pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def ref_causal_mask(batch, length, dtype):
    mask = torch.full((length, length), torch.finfo(dtype).min)
    cond = torch.arange(length)
    mask.masked_fill_(cond < (cond + 1).view(length, 1), 0)
    return mask[None, None].expand(batch, 1, length, length)


def ref_expand_mask(mask, dtype):
    batch, length = mask.shape
    inverted = 1.0 - mask[:, None, None, :].expand(batch, 1, length, length).to(dtype)
    return inverted.masked_fill(inverted.bool(), torch.finfo(dtype).min)


def ref_rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def ref_qllama(sd, cfg, embeds, mask, vision, num_query):
    """LlamaModel.forward_train of the reference over ``embeds`` with a 4D additive ``mask``."""
    q_cfg = cfg.qllama_config
    batch, length, width = embeds.shape
    heads, eps = q_cfg.num_attention_heads, q_cfg.rms_norm_eps
    head_dim = width // heads
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    freqs = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]  # positions 0..length-1
    h = embeds
    for i in range(q_cfg.num_hidden_layers):
        p = f"qllama.model.layers.{i}."
        x = ref_rms_norm(h, sd[p + "input_layernorm.weight"], eps)
        q, k, v = (F.linear(x, sd[p + f"self_attn.{n}_proj.weight"]).view(batch, length, heads, head_dim)
                   .transpose(1, 2) for n in "qkv")
        q, k = q * cos + ref_rotate_half(q) * sin, k * cos + ref_rotate_half(k) * sin
        scores = q @ k.transpose(2, 3) / math.sqrt(head_dim)
        if mask is not None:
            scores = torch.max(scores + mask, torch.tensor(torch.finfo(scores.dtype).min))
        out = (F.softmax(scores, dim=-1, dtype=torch.float32) @ v).transpose(1, 2).reshape(batch, length, width)
        h = h + F.linear(out, sd[p + "self_attn.o_proj.weight"])
        if p + "cross_attn.q_proj.weight" in sd and length >= num_query and vision is not None:
            queries, text = h[:, :num_query], h[:, num_query:]
            x = ref_rms_norm(queries, sd[p + "cross_attn.norm1.weight"], eps)
            cq = F.linear(x, sd[p + "cross_attn.q_proj.weight"]).view(batch, num_query, heads, head_dim).transpose(1, 2)
            vis = ref_rms_norm(vision, sd[p + "cross_attn.norm2.weight"], eps)
            ck, cv = (F.linear(vis, sd[p + f"cross_attn.{n}_proj.weight"]).view(batch, -1, heads, head_dim)
                      .transpose(1, 2) for n in "kv")
            attn = F.softmax(cq @ ck.transpose(2, 3) / math.sqrt(head_dim), dim=-1, dtype=torch.float32)
            out = (attn @ cv).transpose(1, 2).reshape(batch, num_query, width)
            h = torch.cat([queries + F.linear(out, sd[p + "cross_attn.o_proj.weight"]), text], dim=1)
        x = ref_rms_norm(h, sd[p + "post_attention_layernorm.weight"], eps)
        gate, up = F.linear(x, sd[p + "mlp.gate_proj.weight"]), F.linear(x, sd[p + "mlp.up_proj.weight"])
        h = h + F.linear(F.silu(gate) * up, sd[p + "mlp.down_proj.weight"])
    return ref_rms_norm(h, sd["qllama.model.norm.weight"], eps)


def ref_attention_pool(sd, prefix, x, heads):
    dim = x.shape[-1]

    def norm(t, name):
        return F.layer_norm(t, (dim,), sd[f"{prefix}.{name}.weight"], sd[f"{prefix}.{name}.bias"], 1e-5)

    batch, n, _ = x.shape
    q = norm(x.mean(1, keepdim=True), "norm1_q")
    k, v = norm(x, "norm1_k"), norm(x, "norm1_v")
    a = f"{prefix}.cross_attn."
    q = F.linear(q, sd[a + "q.weight"], sd[a + "q_bias"]).reshape(batch, 1, heads, -1).permute(0, 2, 1, 3)
    k = F.linear(k, sd[a + "k.weight"], sd[a + "k_bias"]).reshape(batch, n, heads, -1).permute(0, 2, 1, 3)
    v = F.linear(v, sd[a + "v.weight"], sd[a + "v_bias"]).reshape(batch, n, heads, -1).permute(0, 2, 1, 3)
    attn = ((q * (dim // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(batch, 1, -1)
    return F.linear(out, sd[a + "proj.weight"], sd[a + "proj.bias"]).squeeze(1)


def ref_vision(sd, cfg, pixels):
    vision_sd = {k[len("vision_model."):]: v for k, v in sd.items() if k.startswith("vision_model.")}
    return reference_vit(vision_sd, cfg.vision_config, pixels)[0]


def ref_encode_image(sd, cfg, pixels, mode):
    vit = ref_vision(sd, cfg, pixels)
    backbone = ref_attention_pool(sd, "clip_projector", vit, cfg.attn_pool_num_heads)
    if mode == "InternVL-C":
        return backbone
    queries = sd["query_tokens"].repeat(pixels.shape[0], 1, 1)
    mask = ref_expand_mask(torch.ones(queries.shape[:2], dtype=torch.long), queries.dtype)
    out = ref_qllama(sd, cfg, queries, mask, vit, cfg.num_query_token)
    image = ref_attention_pool(sd, "clip_projector2", out, cfg.attn_pool_num_heads)
    return backbone / backbone.norm(dim=1, keepdim=True) + image / image.norm(dim=1, keepdim=True)


def ref_encode_text(sd, cfg, text):
    mask = text > 0
    embeds = sd["qllama.model.embed_tokens.weight"][text]
    full_mask = ref_expand_mask(mask, embeds.dtype) + ref_causal_mask(text.shape[0], text.shape[1], embeds.dtype)
    out = ref_qllama(sd, cfg, embeds, full_mask, None, cfg.num_query_token)
    return out[torch.arange(out.shape[0]), mask.sum(1) - 1] @ sd["text_projection"]


def ref_logits(sd, cfg, pixels, text, mode):
    image = ref_encode_image(sd, cfg, pixels, mode)
    text_features = ref_encode_text(sd, cfg, text)
    image, text_features = image / image.norm(dim=1, keepdim=True), text_features / text_features.norm(dim=1,
                                                                                                        keepdim=True)
    logits = sd["logit_scale"].exp() * image @ text_features.t()
    return logits, logits.t()


def ref_greedy_caption(sd, cfg, pixels, prompt, max_new_tokens, min_new_tokens, eos=2):
    """Greedy decoding, recomputing the whole sequence every step (the queries never see the text, so this
    is what the reference's cached decoding computes); one image at a time. Returns the tokens (padded with
    0 after EOS, as generate does) and each step's logits."""
    vit = ref_vision(sd, cfg, pixels)
    q = cfg.num_query_token
    captions, step_logits = [], []
    for b in range(pixels.shape[0]):
        tokens, logits_b = [], []
        while len(tokens) < max_new_tokens and (not tokens or tokens[-1] != eos):
            ids = torch.tensor([prompt.tolist() + tokens])
            embeds = torch.cat([sd["query_tokens"], sd["qllama.model.embed_tokens.weight"][ids]], dim=1)
            mask = ref_expand_mask(torch.ones(embeds.shape[:2], dtype=torch.long), embeds.dtype)
            mask = mask + ref_causal_mask(1, embeds.shape[1], embeds.dtype)
            mask[:, :, :q, :q] = 0  # use_zero_attention_mask
            hidden = ref_qllama(sd, cfg, embeds, mask, vit[b:b + 1], q)
            logits = hidden[0, -1] @ sd["qllama.lm_head.weight"].t()
            logits_b.append(logits.clone())
            if len(tokens) < min_new_tokens:
                logits[eos] = -float("inf")
            tokens.append(int(logits.argmax()))
        captions.append(tokens + [0] * (max_new_tokens - len(tokens)))
        step_logits.append(torch.stack(logits_b))
    return torch.tensor(captions), step_logits


# ---- fixtures -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A complete tiny checkpoint directory (weights, tokenizer, processor config)."""
    return write_tiny_internvl_cg(tmp_path_factory.mktemp("internvl_14b_tiny"), seed=0)


@pytest.fixture(scope="module")
def model(checkpoint):
    return InternVLModel.from_pretrained(checkpoint).eval()


@pytest.fixture(scope="module")
def texts(checkpoint):
    return build_cg_tokenizer(checkpoint).tokenize(["a red circle on a striped background", "一只蓝色的三角形",
                                                    "縞模様の背景に赤い円があります"]).input_ids


def pixels(n=2, size=56, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---- reference semantics ----------------------------------------------------------------------------

@torch.no_grad()
@pytest.mark.parametrize("mode", MODES)
def test_logits_match_the_reference(model, texts, mode):
    sd, image = model.state_dict(), pixels()
    logits_per_image, logits_per_text = model(image=image, text=texts, mode=mode)
    ref_image, ref_text = ref_logits(sd, model.config, image, texts, mode)
    assert logits_per_image.shape == (2, 3)
    assert rel_err(logits_per_image, ref_image) < 1e-4
    assert torch.equal(logits_per_text, logits_per_image.t())
    assert rel_err(model.encode_image(image, mode), ref_encode_image(sd, model.config, image, mode)) < 1e-4


@torch.no_grad()
def test_encode_text_matches_the_reference(model, texts):
    assert (texts[:, -1] == 0).all() and (texts > 0).sum(1).min() > 3  # right-padded to 80
    assert rel_err(model.encode_text(texts), ref_encode_text(model.state_dict(), model.config, texts)) < 1e-4


@torch.no_grad()
def test_modes_differ_as_designed(model, texts):
    """C: the pooled InternViT feature. G: unit(C) + unit(pooled QLLaMA queries). Text: same in both."""
    image = pixels()
    c = model.encode_image(image, "InternVL-C")
    g = model.encode_image(image, "InternVL-G")
    vision, queries = model.get_image_features(image)
    assert torch.allclose(c, model.clip_projector(vision), atol=1e-6)
    pooled = model.clip_projector2(queries)
    assert torch.allclose(g, c / c.norm(dim=1, keepdim=True) + pooled / pooled.norm(dim=1, keepdim=True), atol=1e-6)
    assert not torch.allclose(model(image, texts, mode="InternVL-C")[0], model(image, texts, mode="InternVL-G")[0])
    # the text side does not depend on the mode: the C and G logits differ only through the image features
    for mode, feats in (("InternVL-C", c), ("InternVL-G", g)):
        text = model.encode_text(texts)
        expected = model.logit_scale.exp() * F.normalize(feats, dim=1) @ F.normalize(text, dim=1).t()
        assert torch.allclose(model(image, texts, mode=mode)[0], expected, atol=1e-5)


@torch.no_grad()
def test_greedy_caption_matches_the_reference(model, checkpoint):
    tokenizer = build_cg_tokenizer(checkpoint, task="caption")
    prompt = tokenizer.tokenize([CAPTION_PROMPT] * 2)
    image = pixels()
    out = model.generate(pixel_values=image, input_ids=prompt.input_ids, attention_mask=prompt.attention_mask,
                         num_beams=1, do_sample=False, min_new_tokens=4, max_new_tokens=7,
                         return_dict_in_generate=True, output_logits=True)
    ref_tokens, ref_step_logits = ref_greedy_caption(model.state_dict(), model.config, image, prompt.input_ids[0], 7, 4)
    assert torch.equal(out.sequences, ref_tokens)
    assert out.sequences[0].tolist() != out.sequences[1].tolist()  # the captions depend on the image
    for b, ref in enumerate(ref_step_logits):
        ours = torch.stack([step[b] for step in out.logits[:len(ref)]])
        assert rel_err(ours, ref) < 1e-4


@torch.no_grad()
def test_model_card_caption_call(model, checkpoint):
    """The published usage: num_beams=5, min_new_tokens=8 and no length limit (20 new tokens at most)."""
    tokenizer = build_cg_tokenizer(checkpoint, task="caption")
    prompt = tokenizer.tokenize([tokenizer.prompt] * 2)
    pred = model.generate(pixel_values=pixels(), input_ids=prompt.input_ids, attention_mask=prompt.attention_mask,
                          num_beams=5, min_new_tokens=8)
    assert 8 <= pred.shape[1] <= 20 and (pred[:, :8] != 2).all()
    captions = tokenizer.batch_decode(pred)
    assert len(captions) == 2 and all(c and c == c.strip() and "</s>" not in c for c in captions)


@torch.no_grad()
@pytest.mark.parametrize("kwargs", [{"num_beams": 5, "min_new_tokens": 8},
                                    {"num_beams": 3, "num_return_sequences": 2, "do_sample": True}])
def test_beams_share_one_prefill_per_image(model, kwargs):
    """generate runs the queries and the prompt once per image, then expands the cache to the beams; the
    result equals the reference way, where every beam recomputes them from the expanded image features."""
    image, prompt = pixels(), torch.tensor([[1, 5, 6, 7], [0, 1, 8, 9]])
    mask = (prompt > 0).long()
    calls = []  # (rows, positions) of each decoder pass
    hook = model.qllama.model.layers[0].register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[:2]))
    torch.manual_seed(0)
    ours = model.generate(pixel_values=image, input_ids=prompt, attention_mask=mask, max_new_tokens=9, **kwargs)
    hook.remove()
    q, expand = model.num_query_token, max(kwargs["num_beams"], kwargs.get("num_return_sequences", 1))
    assert calls[0] == (2, q + 3) and calls[1] == (2 * expand, 1) and set(calls[2:]) == {(2 * expand, 1)}
    vision = model.vision_model(pixel_values=image).last_hidden_state
    embeds = torch.cat([model.query_tokens.expand(2, -1, -1), model.get_input_embeddings()(prompt)], dim=1)
    torch.manual_seed(0)
    reference = model.qllama.generate(inputs_embeds=embeds, attention_mask=torch.cat([torch.ones(2, q).long(), mask], 1),
                                      vision_hidden_states=vision, max_new_tokens=9, **kwargs)
    assert torch.equal(ours, reference)


# ---- formats ----------------------------------------------------------------------------------------------

def meta_shapes(config):
    with torch.device("meta"):
        model = InternVLModel(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def test_published_size_matches_the_hf_manifest():
    assert meta_shapes(InternVLConfig()) == read_manifest("InternVL-14B-224px.tsv")


def test_pth_names_map_onto_the_internvl_c_model():
    manifest = read_manifest("internvl_c_13b_224px.pth.tsv")
    renamed = {rename_internvl_c_pth(k): v for k, v in manifest.items()}
    assert None not in renamed
    assert renamed == meta_shapes(InternVLConfig(num_query_token=0))
    assert all(rename_internvl_c_pth(rename_internvl_c_pth(k), to_hf=False) == k for k in manifest)


@torch.no_grad()
@pytest.mark.parametrize("tie", [False, True])
def test_save_and_reload_give_the_same_logits_and_captions(tmp_path, tie, texts):
    model = randomized_internvl_cg(tiny_internvl_cg_config(vocab_size=1000, qllama={"tie_word_embeddings": tie}))
    lm_head, embed = model.qllama.lm_head.weight, model.qllama.model.embed_tokens.weight
    assert (lm_head is embed) == tie  # untied keeps its own qllama.lm_head
    model.save_pretrained(tmp_path, max_shard_size="200KB")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["InternVLModel"] and config["model_type"] == "internvl"
    assert config["auto_map"]["AutoModel"] == "modeling_internvl.InternVLModel"
    assert config["qllama_config"]["num_query_token"] == 8 and config["qllama_config"]["hidden_act"] == "silu"
    assert config["vision_config"]["hidden_size"] == 64 and config["tie_word_embeddings"] is tie
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    assert ("qllama.lm_head.weight" in index) is not tie
    loaded = InternVLModel.from_pretrained(tmp_path).eval()
    assert (loaded.qllama.lm_head.weight is loaded.qllama.model.embed_tokens.weight) == tie
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    image = pixels()
    for mode in MODES:
        assert torch.equal(loaded(image, texts, mode=mode)[0], model(image, texts, mode=mode)[0])
    prompt = torch.tensor([[1, 5, 6, 7]] * 2)
    for kwargs in ({"num_beams": 1, "do_sample": False}, {"num_beams": 5, "min_new_tokens": 8}):
        ours = model.generate(pixel_values=image, input_ids=prompt, max_new_tokens=10, **kwargs)
        assert torch.equal(loaded.generate(pixel_values=image, input_ids=prompt, max_new_tokens=10, **kwargs), ours)
        assert ours.shape[1] <= 10 and (ours[:, :8] != 2).all()  # new tokens only; EOS not before 8


def test_auto_classes_and_bfloat16(checkpoint, model, texts):
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    register_internvl_cg()
    try:
        assert isinstance(AutoModel.from_pretrained(checkpoint), InternVLModel)
    finally:  # give "internvl" back to transformers' own InternVL3 classes for the rest of the session
        CONFIG_MAPPING._extra_content.pop("internvl", None)
        MODEL_MAPPING._extra_content.pop(InternVLConfig, None)
    if "internvl" in CONFIG_MAPPING._mapping:  # transformers >= 4.52 has its own "internvl" (InternVL3 -hf)
        assert type(AutoConfig.for_model("internvl")).__module__.startswith("transformers.")
    bf16 = InternVLModel.from_pretrained(checkpoint, torch_dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    image = pixels()
    with torch.no_grad():
        for mode in MODES:
            out = bf16(image, texts, mode=mode)[0]
            # bf16 rounding of the weights alone moves these logits by ~0.01, a bf16 forward by ~0.03
            assert out.dtype == torch.bfloat16 and rel_err(out, model(image, texts, mode=mode)[0]) < 0.06


def pth_state_dict(model: InternVLModel) -> dict:
    """The InternVL-C part of ``model`` in the layout of internvl_c_13b_224px.pth."""
    out = {}
    for name, tensor in model.state_dict().items():
        pth_name = rename_internvl_c_pth(name, to_hf=False)
        if pth_name is not None and not re.match(r"qllama\.model\.layers\.\d+\.cross_attn\.", name):
            out[pth_name] = tensor.clone()
    return out


@torch.no_grad()
@pytest.mark.parametrize("nesting", [None, "module"])
def test_internvl_c_pth_loads_into_the_same_class(tmp_path, model, texts, nesting):
    sd = pth_state_dict(model)
    assert not any("query" in k or "lm_head" in k or "cross_attn.q_proj" in k for k in sd)
    torch.save({nesting: sd} if nesting else sd, tmp_path / "internvl_c_13b_224px.pth")
    config = tiny_internvl_cg_config(vocab_size=model.config.qllama_config.vocab_size, num_query_token=0)
    c_model = load_internvl_c_pth(tmp_path / "internvl_c_13b_224px.pth", config=config)
    assert not c_model.has_generative_part and c_model.qllama.lm_head is None
    image = pixels()
    assert torch.equal(c_model(image, texts, mode="InternVL-C")[0], model(image, texts, mode="InternVL-C")[0])
    with pytest.raises(ValueError, match="InternVL-C-only"):
        c_model(image, texts, mode="InternVL-G")
    with pytest.raises(ValueError, match="cannot caption"):
        c_model.generate(pixel_values=image, input_ids=texts[:2, :4])
    c_model.save_pretrained(tmp_path / "hf")  # and on into the HF layout
    reloaded = InternVLModel.from_pretrained(tmp_path / "hf")
    assert torch.equal(reloaded(image, texts)[0], c_model(image, texts)[0])
    bf16 = load_internvl_c_pth(sd, config=config, torch_dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16


def test_internvl_c_pth_config_is_checked_against_the_shapes(model):
    sd = pth_state_dict(model)
    vocab = model.config.qllama_config.vocab_size
    with pytest.raises(ValueError, match="vision_config"):
        load_internvl_c_pth(sd)  # the published InternViT-6B config does not fit a tiny checkpoint
    bad = tiny_internvl_cg_config(vocab_size=vocab, num_query_token=0, qllama={"intermediate_size": 96})
    with pytest.raises(ValueError, match=r"qllama_config.intermediate_size=96 .* say 128"):
        load_internvl_c_pth(sd, config=bad)
    with pytest.raises(ValueError, match="num_query_token=0"):
        load_internvl_c_pth(sd, config=tiny_internvl_cg_config(vocab_size=vocab))
    with pytest.raises(ValueError, match="unexpected tensors.*head.weight"):
        load_internvl_c_pth({**sd, "head.weight": torch.zeros(2)}, config=bad)
    with pytest.raises(FileNotFoundError, match="internvl_c_13b_224px.pth"):
        load_internvl_c_pth("/nonexistent/internvl_c_13b_224px.pth")


# ---- image sizes ---------------------------------------------------------------------------------------

@torch.no_grad()
def test_any_multiple_of_14_runs(model, texts):
    image = pixels(size=70)
    for mode in MODES:
        ref = ref_logits(model.state_dict(), model.config, image, texts, mode)[0]
        assert rel_err(model(image, texts, mode=mode)[0], ref) < 1e-4


@torch.no_grad()
def test_force_image_size(tmp_path, checkpoint, model, texts):
    resized = InternVLModel.from_pretrained(checkpoint, force_image_size=70).eval()
    assert resized.vision_model.embeddings.position_embedding.shape[1] == 1 + 5 * 5
    assert resized.config.force_image_size == 70 and resized.image_size == 70
    image = pixels(size=70)
    assert torch.allclose(resized(image, texts, mode="InternVL-G")[0], model(image, texts, mode="InternVL-G")[0],
                          atol=1e-5)  # the stored embedding is the on-the-fly interpolation
    resized.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["force_image_size"] == 70
    reloaded = InternVLModel.from_pretrained(tmp_path)
    assert torch.equal(reloaded(image, texts)[0], resized(image, texts)[0])
    # the published layout of a fine-tuned model: vision_config at 224 (here 56), force_image_size 70
    config = json.loads((tmp_path / "config.json").read_text())
    config["vision_config"]["image_size"] = 56
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert torch.equal(InternVLModel.from_pretrained(tmp_path)(image, texts)[0], resized(image, texts)[0])
    assert image_transform(reloaded.config)(_image()).shape == (3, 70, 70)


def _image():
    from PIL import Image
    return Image.new("RGB", (90, 60), (200, 30, 30))


def test_image_transforms_by_task():
    from internvl.data.transforms import build_transform

    image = _image()
    retrieval = image_transform(56)(image)
    assert retrieval.shape == (3, 56, 56) and torch.equal(retrieval, build_transform(56, "resize")(image))
    assert torch.equal(image_transform(56, "classification")(image), build_transform(56, "center_crop")(image))
    with pytest.raises(ValueError, match="task"):
        image_transform(56, "detection")


# ---- text conventions ------------------------------------------------------------------------------------

def test_retrieval_tokenizer_conventions(checkpoint):
    tok = build_cg_tokenizer(checkpoint, task="retrieval")
    enc = tok.tokenize(["a red circle", "a blue square on a dotted background " * 40])
    ids, mask = enc.input_ids, enc.attention_mask
    assert ids.shape == (2, 80) and tok.pad_token_id == 0
    n = int(mask[0].sum())
    assert ids[0, 0] == 1 and ids[0, n - 1] == 2 and (ids[0, n:] == 0).all()  # <s> ... </s> then pad 0
    assert ids[1, -1] == 2 and mask[1].all()  # truncated to 80, EOS kept
    prefix = tok.tokenizer("summarize:", add_special_tokens=False).input_ids
    assert ids[0, 1:1 + len(prefix)].tolist() == prefix
    assert tok.decode(ids[0], skip_special_tokens=True) == "summarize:a red circle"
    # the SentencePiece model itself, as the published (slow, legacy) LLaMA tokenizer applies it
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(checkpoint / "tokenizer.model"))
    expected = [1] + sp.encode("summarize:a red circle") + [2]
    assert ids[0].tolist() == expected + [0] * (80 - len(expected))


@pytest.mark.parametrize("text", ["一张熊猫的照片", "二匹の猫の写真", "صورة قطتين", "una foto di un panda rosso 🐼"])
def test_multilingual_text_round_trips(checkpoint, text):
    tok = build_cg_tokenizer(checkpoint)
    ids = tok.tokenize([text]).input_ids[0]
    real = ids[ids > 0]
    assert len(real) < 80 and real[-1] == 2
    # byte fallback: no <unk>, whose id 0 is also the padding that encode_text masks out
    assert tok.unk_token_id == 0 and 0 not in tok.tokenizer("summarize:" + text).input_ids
    assert tok.decode(real, skip_special_tokens=True) == "summarize:" + text


def test_caption_tokenizer_conventions(checkpoint):
    tok = build_cg_tokenizer(checkpoint, task="caption")
    enc = tok.tokenize()
    assert enc.input_ids[0, 0] == 1 and enc.input_ids[0, -1] != 2 and enc.attention_mask.all()  # no EOS
    assert tok.decode(enc.input_ids[0], skip_special_tokens=True) == "English caption:"
    batch = tok.tokenize(["English caption:", "a red circle on a striped background. English caption:"])
    assert batch.attention_mask[0, 0] == 0 and batch.input_ids[0, -1] != 0  # left padding for generation
    assert tok.batch_decode(torch.tensor([[5, 6, 2, 0, 0]])) == [tok.decode([5, 6]).strip()]


def test_missing_tokenizer_files_are_named(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.model \+ tokenizer_config\.json.*config\.json"):
        build_cg_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        build_cg_tokenizer(tmp_path / "missing")
    with pytest.raises(ValueError, match="task"):
        build_cg_tokenizer(tmp_path, task="vqa")


# ---- bad input ---------------------------------------------------------------------------------------------

def test_bad_mode_and_config(model, texts):
    with pytest.raises(ValueError, match="InternVL-X"):
        model(pixels(), texts, mode="InternVL-X")
    with pytest.raises(ValueError, match="attn_pool_num_heads=5"):
        tiny_internvl_cg_config(attn_pool_num_heads=5)
    with pytest.raises(ValueError, match="force_image_size=60"):
        tiny_internvl_cg_config(force_image_size=60)
    with pytest.raises(ValueError, match="one prompt per image"):
        model.generate(pixel_values=pixels(), input_ids=torch.tensor([[1, 5]]))
    with pytest.raises(FileNotFoundError, match="InternVL-14B-224px"):
        InternVLModel.from_pretrained("/nonexistent/InternVL-14B-224px")


def test_lora_fields_wrap_vision_and_qllama():
    pytest.importorskip("peft")
    model = InternVLModel(tiny_internvl_cg_config(use_backbone_lora=4, use_qllama_lora=4))
    lora = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    assert any(n.startswith("vision_model.") for n in lora) and any(n.startswith("qllama.") for n in lora)
    assert not any(p.requires_grad for n, p in model.named_parameters()
                   if n.startswith(("vision_model.", "qllama.")) and "lora_" not in n)
    # alpha = 2 x rank, the training script's, on both towers (scaling alpha / r = 2)
    scalings = {m.scaling["default"] for m in model.modules() if hasattr(m, "scaling") and "default" in m.scaling}
    assert scalings == {2.0}
