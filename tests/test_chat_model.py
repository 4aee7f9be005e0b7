"""InternVLChatModel: published format, reference forward semantics, chat / batch_chat, errors.

Every behaviour is checked with each of the three language models (InternLM2, Qwen2, LLaMA)."""
import json
import math
import threading

import pytest
import torch
import torch.nn.functional as F
from chat_helpers import (LLMS, SPECIAL_TOKENS, VOCAB_SIZE, tiny_chat_config, tiny_model, write_checkpoint,
                          write_tokenizer)
from helpers import read_manifest
from test_intern_vit import reference_forward as vit_reference_forward
from transformers import AutoModel, GenerationConfig, LlamaTokenizer, Qwen2Config, TextIteratorStreamer

from internvl.compat import CAN_SAVE_BIN, rope_settings
from internvl.models.chat_model import InternVLChatConfig, InternVLChatModel, register_internvl_chat
from internvl.models.conversation import get_conv_template, image_prefix, video_prefix
from internvl.models.internlm2 import InternLM2Config

# config.json of OpenGVLab/InternVL2-2B as published (PretrainedConfig defaults left out).
PUBLISHED_CONFIG = {
    "architectures": ["InternVLChatModel"],
    "auto_map": {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                 "AutoModel": "modeling_internvl_chat.InternVLChatModel",
                 "AutoModelForCausalLM": "modeling_internvl_chat.InternVLChatModel"},
    "downsample_ratio": 0.5, "dynamic_image_size": True, "force_image_size": 448,
    "llm_config": {
        "architectures": ["InternLM2ForCausalLM"], "attn_implementation": "flash_attention_2",
        "auto_map": {"AutoConfig": "configuration_internlm2.InternLM2Config",
                     "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
                     "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"},
        "bias": False, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 2048,
        "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 32768,
        "model_type": "internlm2", "num_attention_heads": 16, "num_hidden_layers": 24, "num_key_value_heads": 8,
        "pad_token_id": 2, "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 2.0, "type": "dynamic"},
        "rope_theta": 1000000, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True,
        "vocab_size": 92553},
    "max_dynamic_patch": 12, "min_dynamic_patch": 1, "model_type": "internvl_chat", "ps_version": "v2",
    "select_layer": -1, "template": "internlm2-chat", "torch_dtype": "bfloat16", "use_backbone_lora": 0,
    "use_llm_lora": 0, "use_thumbnail": True,
    "vision_config": {
        "architectures": ["InternVisionModel"], "attention_dropout": 0.0, "drop_path_rate": 0.0, "dropout": 0.0,
        "hidden_act": "gelu", "hidden_size": 1024, "image_size": 448, "initializer_factor": 1.0,
        "initializer_range": 0.02, "intermediate_size": 4096, "layer_norm_eps": 1e-06, "model_type": "intern_vit_6b",
        "norm_type": "layer_norm", "num_attention_heads": 16, "num_channels": 3, "num_hidden_layers": 24,
        "patch_size": 14, "qk_normalization": False, "qkv_bias": True, "torch_dtype": "bfloat16",
        "use_flash_attn": True},
}

GREEDY = dict(max_new_tokens=6, do_sample=False)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One tiny checkpoint directory per language model: {llm: (dir, model, tokenizer)}."""
    out = {}
    for llm in LLMS:
        directory = tmp_path_factory.mktemp(llm)
        model, tokenizer = write_checkpoint(directory, llm)
        out[llm] = (directory, model, tokenizer)
    return out


def rel_err(actual, expected):
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


# ----------------------------------------------------------------------------------------------- config
def test_published_config_builds_the_published_model():
    config = InternVLChatConfig(**PUBLISHED_CONFIG)
    assert isinstance(config.llm_config, InternLM2Config) and config.llm_config.vocab_size == 92553
    assert config.llm_config.tie_word_embeddings is False and config.tie_word_embeddings is False
    assert config.vision_config.hidden_size == 1024 and config.image_size == 448
    with torch.device("meta"):
        model = InternVLChatModel(config)
    expected = read_manifest("InternVL2-2B.tsv")
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    assert model.num_image_token == 256  # (448 / 14)^2 patches, 2x2 pixel shuffle
    assert model.template == "internlm2-chat" and model.llm_arch_name == "InternLM2ForCausalLM"


def test_config_json_round_trip_keeps_the_published_layout(tmp_path):
    config = InternVLChatConfig(**PUBLISHED_CONFIG)
    config.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["model_type"] == "internvl_chat" and written["auto_map"] == PUBLISHED_CONFIG["auto_map"]
    for key in ("template", "ps_version", "downsample_ratio", "force_image_size", "select_layer",
                "dynamic_image_size", "use_thumbnail", "min_dynamic_patch", "max_dynamic_patch"):
        assert written[key] == PUBLISHED_CONFIG[key], key
    for nested in ("llm_config", "vision_config"):  # nested configs are written out in full
        for key, value in PUBLISHED_CONFIG[nested].items():
            assert written[nested][key] == value, (nested, key)
    again = InternVLChatConfig.from_pretrained(tmp_path)
    assert again.to_dict() == config.to_dict()


def test_config_json_keeps_rope_keys_that_transformers_4_reads(tmp_path):
    """transformers 5 writes RoPE only as rope_parameters; the published remote code (transformers 4) reads
    rope_theta / rope_scaling, and would silently fall back to defaults without them."""
    llm = Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=VOCAB_SIZE, rope_theta=1000000.0,
                      rope_scaling={"type": "linear", "factor": 2.0})
    InternVLChatConfig(vision_config=tiny_chat_config().vision_config, llm_config=llm,
                       template="Hermes-2").save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())["llm_config"]
    assert written["rope_theta"] == 1000000.0
    assert written["rope_scaling"]["factor"] == 2.0 and written["rope_scaling"]["type"] == "linear"
    again = InternVLChatConfig.from_pretrained(tmp_path).llm_config
    assert rope_settings(again) == rope_settings(llm)


def test_llm_config_object_without_architectures_is_matched_by_class():
    llm = Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=VOCAB_SIZE)
    config = InternVLChatConfig(vision_config=tiny_chat_config().vision_config, llm_config=llm, template="Hermes-2")
    assert config.llm_config.architectures == ["Qwen2ForCausalLM"]
    assert type(InternVLChatModel(config).language_model).__name__ == "Qwen2ForCausalLM"


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match=r"'MistralForCausalLM'.*InternLM2ForCausalLM, Qwen2ForCausalLM"):
        tiny_chat_config("llama", llm_overrides={"architectures": ["MistralForCausalLM"]})
    with pytest.raises(ValueError, match="ps_version"):
        tiny_chat_config(ps_version="v3")
    with pytest.raises(ValueError, match="downsample_ratio"):
        tiny_chat_config(downsample_ratio=0.3)
    with pytest.raises(ValueError, match="template is not set"):
        InternVLChatModel(InternVLChatConfig(**{**tiny_chat_config().to_dict(), "template": None}))
    with pytest.raises(KeyError, match="unknown conversation template 'vicuna'"):
        InternVLChatModel(tiny_chat_config(template="vicuna"))


@pytest.mark.parametrize("llm", ["llama", "internlm2"])
def test_lora_fields_wrap_both_towers(llm):
    pytest.importorskip("peft")
    model = InternVLChatModel(tiny_chat_config(llm, use_llm_lora=4, use_backbone_lora=4))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(n.startswith("vision_model.") for n in names) and any(n.startswith("language_model.") for n in names)
    assert all("lora_" in n or n.startswith("mlp1.") for n in names)
    # LoRA B starts at zero: the wrapped model computes what the plain one does
    plain = InternVLChatModel(tiny_chat_config(llm))
    plain.load_state_dict({k.replace("base_model.model.", "").replace(".base_layer", ""): v
                           for k, v in model.state_dict().items() if "lora_" not in k})
    ids = torch.randint(3, 900, (1, 7))
    torch.testing.assert_close(model.eval()(input_ids=ids).logits, plain.eval()(input_ids=ids).logits)


def test_unsupported_llm_in_a_checkpoint_directory_is_named(tmp_path):
    config = tiny_chat_config("llama").to_dict()
    config["llm_config"]["architectures"] = ["GemmaForCausalLM"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="GemmaForCausalLM.*does not support"):
        InternVLChatModel.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------------------------- weights
@pytest.mark.parametrize("llm", LLMS)
def test_save_and_load_round_trip(checkpoints, llm, tmp_path):
    directory, model, _ = checkpoints[llm]
    loaded = InternVLChatModel.from_pretrained(directory)
    assert set(loaded.state_dict()) == set(model.state_dict())
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    written = json.loads((directory / "config.json").read_text())
    assert written["architectures"] == ["InternVLChatModel"] and written["model_type"] == "internvl_chat"
    # sharded safetensors, and bf16 with low_cpu_mem_usage, load back the same tensors
    loaded.save_pretrained(tmp_path / "sharded", max_shard_size="200KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    bf16 = InternVLChatModel.from_pretrained(tmp_path / "sharded", torch_dtype=torch.bfloat16, low_cpu_mem_usage=True)
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    for name, tensor in bf16.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name].to(torch.bfloat16)), name
    # pytorch_model.bin, as older releases ship it (transformers 5 only reads that format, so write it by hand)
    if CAN_SAVE_BIN:
        loaded.save_pretrained(tmp_path / "bin", safe_serialization=False)
    else:
        loaded.config.save_pretrained(tmp_path / "bin")
        torch.save(loaded.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    assert (tmp_path / "bin" / "pytorch_model.bin").exists()
    for name, tensor in InternVLChatModel.from_pretrained(tmp_path / "bin").state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


def test_auto_model_resolves_without_remote_code(checkpoints):
    register_internvl_chat()
    directory, model, _ = checkpoints["qwen2"]
    loaded = AutoModel.from_pretrained(directory)
    assert isinstance(loaded, InternVLChatModel)
    assert torch.equal(loaded.mlp1[1].weight, model.mlp1[1].weight)


def test_weights_that_do_not_match_the_config_are_named(checkpoints, tmp_path):
    directory, model, _ = checkpoints["llama"]
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["llm_config"]["intermediate_size"] = 96
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"mlp\.(gate|up|down)_proj\.weight"):
        InternVLChatModel.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------------------------- features
def hand_shuffle(grid, version):
    """2x2 blocks concatenated row-major: out[i, j] = [x[2i, 2j], x[2i, 2j+1], x[2i+1, 2j], x[2i+1, 2j+1]];
    v1 stores block (i, j) at [j, i]."""
    n, h, w, c = grid.shape
    out = torch.empty((n, h // 2, w // 2, 4 * c) if version == "v2" else (n, w // 2, h // 2, 4 * c))
    for i in range(h // 2):
        for j in range(w // 2):
            block = torch.cat([grid[:, 2 * i, 2 * j], grid[:, 2 * i, 2 * j + 1], grid[:, 2 * i + 1, 2 * j],
                               grid[:, 2 * i + 1, 2 * j + 1]], dim=-1)
            if version == "v2":
                out[:, i, j] = block
            else:
                out[:, j, i] = block
    return out


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_pixel_shuffle_against_hand_computation(version):
    model = tiny_model("llama", ps_version=version)
    grid = torch.arange(2 * 4 * 6 * 3, dtype=torch.float32).reshape(2, 4, 6, 3)  # non-square: rows != columns
    out = model.pixel_shuffle(grid, 0.5)
    assert out.shape == ((2, 2, 3, 12) if version == "v2" else (2, 3, 2, 12))
    assert torch.equal(out, hand_shuffle(grid, version))
    # the first output cell holds input cells (0,0), (0,1), (1,0), (1,1)
    assert out[0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5, 18, 19, 20, 21, 22, 23]
    with pytest.raises(ValueError, match="divisible by 2"):
        model.pixel_shuffle(torch.zeros(1, 5, 4, 3), 0.5)


def reference_outputs(model, pixel_values, input_ids, labels=None, image_flags=None):
    """The forward written out step by step: InternViT (the reference restatement of test_intern_vit),
    select_layer, drop the class token, 2x2 pixel shuffle by hand, mlp1 as LayerNorm -> Linear -> GELU ->
    Linear, then the image features written over the <IMG_CONTEXT> embeddings one by one, then the LM."""
    cfg, sd = model.config, model.state_dict()
    vision_sd = {k[len("vision_model."):]: v for k, v in sd.items() if k.startswith("vision_model.")}
    _, _, hidden = vit_reference_forward(vision_sd, cfg.vision_config, pixel_values)
    feats = hidden[cfg.select_layer][:, 1:]
    side = math.isqrt(feats.shape[1])
    x = hand_shuffle(feats.reshape(feats.shape[0], side, side, -1), cfg.ps_version).flatten(1, 2)
    x = F.layer_norm(x, x.shape[-1:], sd["mlp1.0.weight"], sd["mlp1.0.bias"], 1e-5)
    x = F.linear(F.gelu(F.linear(x, sd["mlp1.1.weight"], sd["mlp1.1.bias"])), sd["mlp1.3.weight"], sd["mlp1.3.bias"])
    if image_flags is not None:
        x = x[image_flags.bool()]
    features = iter(x.reshape(-1, x.shape[-1]))
    embeds = F.embedding(input_ids, model.language_model.get_input_embeddings().weight).clone()
    for b in range(input_ids.shape[0]):
        for t in range(input_ids.shape[1]):
            if input_ids[b, t] == model.img_context_token_id:
                embeds[b, t] = next(features)
    assert next(features, None) is None
    logits = model.language_model(inputs_embeds=embeds).logits
    loss = None
    if labels is not None:
        terms = [-F.log_softmax(logits[b, t].float(), -1)[labels[b, t + 1]]
                 for b in range(labels.shape[0]) for t in range(labels.shape[1] - 1) if labels[b, t + 1] != -100]
        loss = torch.stack(terms).mean()
    return logits, loss


def prompt_ids(tokenizer, tiles, model, text="What is in the picture?"):
    image = "<img>" + "<IMG_CONTEXT>" * (model.num_image_token * tiles) + "</img>"
    return tokenizer(f"<|im_start|>user\n{image}\n{text}<|im_end|>", return_tensors="pt").input_ids


@pytest.mark.parametrize("llm, overrides", [("internlm2", {}), ("qwen2", {}), ("llama", {}), ("phi3", {}),
                                            ("internlm2", dict(select_layer=-2, ps_version="v1"))])
def test_forward_matches_the_reference_step_by_step(checkpoints, llm, overrides):
    _, _, tokenizer = checkpoints["llama" if llm == "phi3" else llm]
    model = tiny_model(llm, **overrides)
    model.img_context_token_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    pixels = torch.randn(3, 3, 56, 56)
    first, second = prompt_ids(tokenizer, 2, model), prompt_ids(tokenizer, 1, model, "Name the colour.")
    width = max(first.shape[1], second.shape[1])
    input_ids = torch.stack([F.pad(ids[0], (0, width - ids.shape[1]), value=2) for ids in (first, second)])
    labels = input_ids.clone()
    labels[:, :5] = -100
    labels[1, second.shape[1]:] = -100
    out = model(pixel_values=pixels, input_ids=input_ids, labels=labels)
    ref_logits, ref_loss = reference_outputs(model, pixels, input_ids, labels)
    assert out.logits.shape == (2, width, model.config.llm_config.vocab_size)
    assert rel_err(out.logits, ref_logits) < 1e-4
    assert abs(out.loss.item() - ref_loss.item()) < 1e-4 * ref_loss.item()
    loss, logits = model(pixel_values=pixels, input_ids=input_ids, labels=labels, return_dict=False)[:2]
    assert torch.equal(logits, out.logits) and torch.equal(loss, out.loss)


def test_image_flags_drop_padding_tiles_and_text_only_forward(checkpoints):
    _, model, tokenizer = checkpoints["qwen2"]
    model.img_context_token_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    input_ids = prompt_ids(tokenizer, 2, model)
    pixels = torch.randn(3, 3, 56, 56)
    flagged = model(pixel_values=pixels, input_ids=input_ids, image_flags=torch.tensor([[1], [0], [1]])).logits
    ref, _ = reference_outputs(model, pixels, input_ids, image_flags=torch.tensor([1, 0, 1]))
    assert rel_err(flagged, ref) < 1e-4
    # the flagged tile contributes nothing: the same as never giving it (a different vision batch shape, so
    # the last bits may differ)
    assert rel_err(flagged, model(pixel_values=pixels[[0, 2]], input_ids=input_ids).logits) < 1e-5
    text = tokenizer("no image here", return_tensors="pt").input_ids
    assert rel_err(model(input_ids=text).logits, model.language_model(input_ids=text).logits) < 1e-6


def test_image_token_count_mismatch_names_both_numbers(checkpoints):
    _, model, tokenizer = checkpoints["llama"]
    model.img_context_token_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    input_ids = prompt_ids(tokenizer, 2, model)  # room for 2 tiles x 4 tokens
    with pytest.raises(ValueError, match=r"hold 8 image context tokens .* give 12 feature vectors"):
        model(pixel_values=torch.randn(3, 3, 56, 56), input_ids=input_ids)
    with pytest.raises(ValueError, match="give 12 feature vectors"):
        model.generate(pixel_values=torch.randn(3, 3, 56, 56), input_ids=input_ids, max_new_tokens=2)
    model.img_context_token_id = None
    with pytest.raises(ValueError, match="img_context_token_id is not set"):
        model(pixel_values=torch.randn(2, 3, 56, 56), input_ids=input_ids)


def test_generate_with_precomputed_visual_features(checkpoints):
    _, model, tokenizer = checkpoints["internlm2"]
    model.img_context_token_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    input_ids = prompt_ids(tokenizer, 2, model)
    pixels = torch.randn(2, 3, 56, 56)
    direct = model.generate(pixel_values=pixels, input_ids=input_ids, max_new_tokens=5, do_sample=False)
    features = model.extract_feature(pixels)
    assert features.shape == (2, model.num_image_token, 64)
    reused = model.generate(pixel_values=pixels, input_ids=input_ids, visual_features=features, max_new_tokens=5,
                            do_sample=False)
    assert torch.equal(direct, reused) and direct.shape == (1, 5)  # new tokens only


# ----------------------------------------------------------------------------------------------- chat
SYSTEM = "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"


class PromptSpy:
    """Records the prompt ids that chat() / batch_chat() hand to generate()."""

    def __init__(self, model, monkeypatch):
        self.calls, self._generate = [], model.generate
        monkeypatch.setattr(model, "generate", self)

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self._generate(**kwargs)


def context(tiles, model):
    return "<img>" + "<IMG_CONTEXT>" * (model.num_image_token * tiles) + "</img>"


def greedy_by_forward(model, tokenizer, pixels, query, eos_id, steps):
    """Greedy decoding by full forward passes (no KV cache), the reference for generate()."""
    ids = tokenizer(query, return_tensors="pt").input_ids
    new = []
    for _ in range(steps):
        next_id = model(pixel_values=pixels, input_ids=torch.cat([ids, torch.tensor([new], dtype=torch.long)], 1)
                        ).logits[0, -1].argmax().item()
        if next_id == eos_id:
            break
        new.append(next_id)
    return tokenizer.decode(new, skip_special_tokens=True).strip()


@pytest.mark.parametrize("llm", LLMS)
def test_chat_prompt_and_answer(checkpoints, llm, monkeypatch):
    _, model, tokenizer = checkpoints[llm]
    spy = PromptSpy(model, monkeypatch)
    pixels = torch.randn(3, 3, 56, 56)
    config = dict(max_new_tokens=8, do_sample=False)
    answer = model.chat(tokenizer, pixels, "What is in the picture?", config)
    assert config == dict(max_new_tokens=8, do_sample=False)  # the caller's dict is left alone
    template = model.conv_template
    expected = (template.system_template.format(system_message=template.system_message) + template.sep
                + template.roles[0] + context(3, model) + "\nWhat is in the picture?" + template.sep
                + template.roles[1])
    assert torch.equal(spy.calls[0]["input_ids"], tokenizer(expected, return_tensors="pt").input_ids)
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert spy.calls[0]["eos_token_id"] == eos_id
    assert answer == greedy_by_forward(model, tokenizer, pixels, expected, eos_id, 8)


def test_internlm2_chat_prompt_is_byte_identical(checkpoints, monkeypatch):
    _, model, tokenizer = checkpoints["internlm2"]
    spy = PromptSpy(model, monkeypatch)
    model.chat(tokenizer, torch.randn(1, 3, 56, 56), "Describe it.", GREEDY)
    expected = (f"<|im_start|>system\n{SYSTEM}<|im_end|><|im_start|>user\n<img>{'<IMG_CONTEXT>' * 4}</img>\n"
                "Describe it.<|im_end|><|im_start|>assistant\n")
    assert torch.equal(spy.calls[0]["input_ids"], tokenizer(expected, return_tensors="pt").input_ids)


def test_system_message_of_the_checkpoint(checkpoints, monkeypatch, tmp_path):
    _, _, tokenizer = checkpoints["qwen2"]
    assert tiny_model("qwen2", system_message=None).system_message == SYSTEM  # published null: the template's
    model = tiny_model("qwen2", system_message="Answer briefly.")
    model.save_pretrained(tmp_path)
    model = InternVLChatModel.from_pretrained(tmp_path)
    spy = PromptSpy(model, monkeypatch)
    model.chat(tokenizer, None, "Hi", GREEDY)
    expected = "<|im_start|>system\nAnswer briefly.<|im_end|><|im_start|>user\nHi<|im_end|><|im_start|>assistant\n"
    assert torch.equal(spy.calls[0]["input_ids"], tokenizer(expected, return_tensors="pt").input_ids)

@pytest.mark.parametrize("llm", LLMS)
def test_multi_turn_history(checkpoints, llm, monkeypatch):
    _, model, tokenizer = checkpoints[llm]
    spy = PromptSpy(model, monkeypatch)
    pixels = torch.randn(2, 3, 56, 56)
    first, history = model.chat(tokenizer, pixels, "What is it?", GREEDY, return_history=True)
    assert history == [("<image>\nWhat is it?", first)]
    second, history = model.chat(tokenizer, pixels, "And the colour?", GREEDY, history=history, return_history=True)
    assert history == [("<image>\nWhat is it?", first), ("And the colour?", second)]
    t = model.conv_template
    expected = (t.system_template.format(system_message=t.system_message) + t.sep
                + t.roles[0] + context(2, model) + "\nWhat is it?" + t.sep + (t.roles[1] + first + t.sep if first
                                                                               else t.roles[1])
                + t.roles[0] + "And the colour?" + t.sep + t.roles[1])
    assert torch.equal(spy.calls[1]["input_ids"], tokenizer(expected, return_tensors="pt").input_ids)


@pytest.mark.parametrize("llm", LLMS)
def test_batch_chat_equals_chat_one_by_one(checkpoints, llm, monkeypatch):
    _, model, tokenizer = checkpoints[llm]
    pixels = torch.randn(6, 3, 56, 56)
    questions = ["What is it?", "Describe the picture in a long and detailed paragraph.", "Colour?"]
    tiles = [3, 1, 2]
    padding_side = tokenizer.padding_side
    batched = model.batch_chat(tokenizer, pixels, questions, dict(max_new_tokens=8), num_patches_list=tiles)
    assert tokenizer.padding_side == padding_side
    starts = [0, 3, 4]
    one_by_one = [model.chat(tokenizer, pixels[s:s + n], q, dict(max_new_tokens=8))
                  for s, n, q in zip(starts, tiles, questions)]
    assert batched == one_by_one
    assert any(batched)  # some answer is not empty, so the comparison says something
    texts = ["Hello.", "Tell me about a red circle on a striped background."]
    assert model.batch_chat(tokenizer, None, texts, GREEDY) == [model.chat(tokenizer, None, q, GREEDY) for q in texts]


@pytest.mark.parametrize("llm", LLMS)
def test_multi_image_video_and_pure_text_prompts(checkpoints, llm, monkeypatch):
    _, model, tokenizer = checkpoints[llm]
    spy = PromptSpy(model, monkeypatch)
    t = model.conv_template
    head = t.system_template.format(system_message=t.system_message) + t.sep + t.roles[0]
    tail = t.sep + t.roles[1]

    question = image_prefix(2) + "What differs?"
    model.chat(tokenizer, torch.randn(5, 3, 56, 56), question, GREEDY, num_patches_list=[3, 2])
    expected = head + f"Image-1: {context(3, model)}\nImage-2: {context(2, model)}\nWhat differs?" + tail
    assert torch.equal(spy.calls[-1]["input_ids"], tokenizer(expected, return_tensors="pt").input_ids)

    model.chat(tokenizer, torch.randn(3, 3, 56, 56), video_prefix(3) + "What happens?", GREEDY,
               num_patches_list=[1, 1, 1])
    frames = "".join(f"Frame{i}: {context(1, model)}\n" for i in (1, 2, 3))
    assert torch.equal(spy.calls[-1]["input_ids"], tokenizer(head + frames + "What happens?" + tail,
                                                             return_tensors="pt").input_ids)

    model.chat(tokenizer, None, "Hello!", GREEDY)
    assert torch.equal(spy.calls[-1]["input_ids"], tokenizer(head + "Hello!" + tail, return_tensors="pt").input_ids)
    assert spy.calls[-1]["pixel_values"] is None


@pytest.mark.parametrize("llm", LLMS)
def test_streaming_gives_the_answer_as_it_is_generated(checkpoints, llm):
    _, model, tokenizer = checkpoints[llm]
    pixels = torch.randn(2, 3, 56, 56)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=60)
    result = {}
    thread = threading.Thread(target=lambda: result.update(answer=model.chat(
        tokenizer, pixels, "Describe it.", dict(max_new_tokens=10, do_sample=False, streamer=streamer))))
    thread.start()
    pieces = list(streamer)
    thread.join()
    assert "".join(pieces).strip() == result["answer"] == model.chat(tokenizer, pixels, "Describe it.",
                                                                     dict(max_new_tokens=10, do_sample=False))


def test_generation_config_object_and_bf16_model(checkpoints):
    directory, model, tokenizer = checkpoints["internlm2"]
    pixels = torch.randn(2, 3, 56, 56)
    as_dict = model.chat(tokenizer, pixels, "Hi", dict(max_new_tokens=5, do_sample=False))
    assert model.chat(tokenizer, pixels, "Hi", GenerationConfig(max_new_tokens=5, do_sample=False)) == as_dict
    bf16 = InternVLChatModel.from_pretrained(directory, torch_dtype=torch.bfloat16).eval()
    greedy = dict(max_new_tokens=3, do_sample=False)
    answer = bf16.chat(tokenizer, pixels, "Hi", greedy)  # fp32 pixels are cast to the model's dtype
    assert answer and answer == bf16.chat(tokenizer, pixels.to(torch.bfloat16), "Hi", greedy)


def test_plain_template_stops_at_end_of_sequence(checkpoints, monkeypatch):
    _, _, tokenizer = checkpoints["llama"]
    model = tiny_model("llama", template="plain")
    spy = PromptSpy(model, monkeypatch)
    model.chat(tokenizer, torch.randn(1, 3, 56, 56), "a photo of", GREEDY)
    assert spy.calls[0]["eos_token_id"] == tokenizer.eos_token_id
    expected = f"{context(1, model)}\na photo of\n"
    assert torch.equal(spy.calls[0]["input_ids"], tokenizer(expected, return_tensors="pt").input_ids)


# ----------------------------------------------------------------------------------------------- bad input
def test_image_placeholder_count_must_match_the_images(checkpoints):
    _, model, tokenizer = checkpoints["internlm2"]
    pixels = torch.randn(3, 3, 56, 56)
    with pytest.raises(ValueError, match=r"2 '<image>' placeholder\(s\) but 1 image\(s\)"):
        model.chat(tokenizer, pixels, image_prefix(2) + "Compare.", GREEDY)
    with pytest.raises(ValueError, match=r"1 '<image>' placeholder\(s\) but 2 image\(s\)"):
        model.chat(tokenizer, pixels, "<image>\nCompare.", GREEDY, num_patches_list=[2, 1])
    with pytest.raises(ValueError, match=r"1 '<image>' placeholder\(s\) but 0 image"):
        model.chat(tokenizer, None, "<image>\nWhat is this?", GREEDY)
    with pytest.raises(ValueError, match="adds up to 2 tiles but pixel_values holds 3"):
        model.chat(tokenizer, pixels, image_prefix(2) + "Compare.", GREEDY, num_patches_list=[1, 1])
    with pytest.raises(ValueError, match=r"2 '<image>' placeholder\(s\) but 1 image"):
        model.batch_chat(tokenizer, pixels, ["<image> and <image>?", "x"], GREEDY, num_patches_list=[2, 1])
    with pytest.raises(ValueError, match="num_patches_list has 1 entries for 2 questions"):
        model.batch_chat(tokenizer, pixels, ["a", "b"], GREEDY, num_patches_list=[3])
    with pytest.raises(NotImplementedError, match="use chat"):
        model.batch_chat(tokenizer, pixels, ["a"], GREEDY, history=[])


def test_tokenizer_without_image_tokens_is_named(tmp_path, checkpoints, monkeypatch):
    _, model, _ = checkpoints["llama"]
    write_tokenizer(tmp_path / "full", "llama")  # for its SentencePiece model, alone in a directory of its own
    (tmp_path / "tokenizer.model").write_bytes((tmp_path / "full" / "tokenizer.model").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "legacy": False}))
    tokenizer = LlamaTokenizer.from_pretrained(tmp_path)  # no special tokens
    bare = LlamaTokenizer.from_pretrained(tmp_path)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    with pytest.raises(ValueError, match="tokenizer has no '<img>' token"):
        model.chat(tokenizer, torch.randn(1, 3, 56, 56), "What is it?", GREEDY)
    spy = PromptSpy(model, monkeypatch)  # text only: no image token is needed, and none is in the prompt
    model.chat(tokenizer, None, "Text only needs no image tokens.", GREEDY)
    template = get_conv_template(model.template)
    template.system_message = model.system_message
    template.append_message(template.roles[0], "Text only needs no image tokens.")
    template.append_message(template.roles[1], None)
    assert torch.equal(spy.calls[0]["input_ids"], tokenizer(template.get_prompt(), return_tensors="pt").input_ids)
    with pytest.raises(ValueError, match=r"no '<\|im_end\|>' token .*'internvl2_5' template"):
        model.chat(bare, None, "Hi", GREEDY)


def test_special_tokens_sit_where_the_checkpoint_puts_them(checkpoints):
    # InternLM2: the ids tokenizer_config.json assigns, right after the SentencePiece vocabulary
    tokenizer = checkpoints["internlm2"][2]
    assert [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(1000, 1000 + 15))



def test_tiles_of_another_size_than_the_model_name_both_sizes(checkpoints):
    """What a user hits running the 448 px README snippet on a 56 px checkpoint: the real cause, not a count."""
    _, model, tokenizer = checkpoints["internlm2"]
    with pytest.raises(ValueError, match=r"448x448 tiles but this model's tiles are 56x56 .*input_size="):
        model.chat(tokenizer, torch.randn(2, 3, 448, 448), "What is it?", GREEDY)
