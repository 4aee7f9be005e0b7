"""Layer-wise learning-rate decay (--use_custom_trainer): upstream's layer ids and towers from InternVLModel's layer
map, the rate of every group computed by hand, and where the rates come from (--layer_decay_rate, else upstream's
environment variables)."""
import pytest
import torch

from internvl.datakit.checkpoints import tiny_internvl_cg_config
from internvl.errors import ConfigError
from internvl.models.internvl_cg import InternVLConfig, InternVLModel
from internvl_g.layer_decay import decay_rates, decay_rates_from_env, layer_decay_param_groups


@pytest.fixture(scope="module")
def published():
    with torch.device("meta"):
        return InternVLModel(InternVLConfig())  # InternVL-14B: InternViT-6B (48 layers), QLLaMA (32 layers)


@pytest.mark.parametrize("name, expected", [
    ("query_tokens", ("qllama", 0)),
    ("logit_scale", ("qllama", 0)),
    ("vision_model.embeddings.position_embedding", ("vit", 0)),
    ("vision_model.encoder.layers.0.attn.qkv.weight", ("vit", 1)),
    ("vision_model.encoder.layers.47.ls2", ("vit", 48)),
    ("vision_model.base_model.model.encoder.layers.3.mlp.fc1.lora_A.default.weight", ("vit", 4)),
    ("clip_projector.cross_attn.q.weight", ("vit", 49)),
    ("qllama.model.embed_tokens.weight", ("qllama", 0)),
    ("qllama.model.layers.31.cross_attn.k_proj.weight", ("qllama", 32)),
    ("qllama.base_model.model.model.layers.2.self_attn.q_proj.lora_B.default.weight", ("qllama", 3)),
    ("qllama.model.norm.weight", ("qllama", 33)),
    ("qllama.lm_head.weight", ("qllama", 33)),
    ("clip_projector2.norm1_q.weight", ("qllama", 33)),
    ("itm_head.weight", ("qllama", 33)),
    ("text_projection", ("qllama", 33)),
])
def test_layer_ids_and_towers_of_the_published_14b_names(published, name, expected):
    assert published.layer_id(name) == expected


def test_every_published_tensor_has_a_layer_in_range(published):
    for name, _ in published.named_parameters():
        tower, layer = published.layer_id(name)
        assert 0 <= layer <= {"vit": 49, "qllama": 33}[tower], name


def test_group_learning_rates_and_weight_decay_by_hand():
    # InternViT depth 3 (ids 0..4), QLLaMA depth 4 (ids 0..5); rates 0.5 and 0.8; lr 1.0, weight decay 0.1
    model = InternVLModel(tiny_internvl_cg_config())
    ordered = layer_decay_param_groups(model, 1.0, 0.1, 0.5, 0.8)
    assert ordered[0]["lr_scale"] == 1.0  # the first group has the full rate (the Trainer logs group 0's)
    assert [g["lr_scale"] for g in ordered] == sorted((g["lr_scale"] for g in ordered), reverse=True)
    found = {name: (g["group_name"], g["lr"], g["weight_decay"]) for g in ordered for name in g["names"]}
    expected = {  # lr = rate ** (depth + 1 - id)
        "vision_model.embeddings.patch_embedding.weight": ("vit_layer_0_decay", 0.5 ** 4, 0.1),
        "vision_model.encoder.layers.1.norm1.weight": ("vit_layer_2_no_decay", 0.5 ** 2, 0.0),
        "vision_model.encoder.layers.2.mlp.fc1.weight": ("vit_layer_3_decay", 0.5, 0.1),
        "clip_projector.cross_attn.q.weight": ("vit_layer_4_decay", 1.0, 0.1),
        "qllama.model.embed_tokens.weight": ("qllama_layer_0_decay", 0.8 ** 5, 0.1),
        "qllama.model.layers.0.mlp.up_proj.weight": ("qllama_layer_1_decay", 0.8 ** 4, 0.1),
        "qllama.model.norm.weight": ("qllama_layer_5_no_decay", 1.0, 0.0),
        "logit_scale": ("qllama_layer_0_decay", 0.8 ** 5, 0.1),  # 0-d: decayed, as upstream
        "query_tokens": ("qllama_layer_0_decay", 0.8 ** 5, 0.1),
        "text_projection": ("qllama_layer_5_decay", 1.0, 0.1),
        "itm_head.bias": ("qllama_layer_5_no_decay", 1.0, 0.0),
    }
    for name, (group, lr, decay) in expected.items():
        assert found[name][0] == group and found[name][1] == pytest.approx(lr) and found[name][2] == decay, name
    assert len(found) == sum(1 for _ in model.parameters())


def test_frozen_tensors_get_no_group():
    model = InternVLModel(tiny_internvl_cg_config())
    model.requires_grad_(False)
    model.text_projection.requires_grad_(True)
    groups = layer_decay_param_groups(model, 1e-3, 0.05, 0.9, 0.9)
    assert [g["names"] for g in groups] == [["text_projection"]]


def test_decay_rates_from_the_flag_or_the_environment():
    assert decay_rates_from_env({}) == (1.0, 1.0)
    assert decay_rates_from_env({"VIT_LAYER_DECAY_RATE": "0.9", "QLLAMA_LAYER_DECAY_RATE": "0.85"}) == (0.9, 0.85)
    with pytest.raises(ConfigError, match="QLLAMA_LAYER_DECAY_RATE='x' is not a number"):
        decay_rates_from_env({"QLLAMA_LAYER_DECAY_RATE": "x"})
    with pytest.raises(ConfigError, match=r"VIT_LAYER_DECAY_RATE=1.5 must be in \(0, 1\]"):
        decay_rates_from_env({"VIT_LAYER_DECAY_RATE": "1.5"})
    environ = {"VIT_LAYER_DECAY_RATE": "0.7", "QLLAMA_LAYER_DECAY_RATE": "0.6"}
    assert decay_rates(None, environ) == (0.7, 0.6)  # no flag: upstream's variables
    assert decay_rates([0.9], environ) == (0.9, 0.9)  # the flag wins; one number: both towers
    assert decay_rates([0.9, 0.8], environ) == (0.9, 0.8)
    with pytest.raises(ConfigError, match=r"--layer_decay_rate=0.0 must be in \(0, 1\]"):
        decay_rates([0.0])
    with pytest.raises(ConfigError, match="takes one rate .* or two .* got 3"):
        decay_rates([0.9, 0.9, 0.9])


def test_the_flag_is_in_the_help():
    from internvl_g.finetune import ModelArguments
    from transformers import HfArgumentParser
    parser = HfArgumentParser(ModelArguments)
    args, = parser.parse_args_into_dataclasses(["--model_name_or_path", "x", "--layer_decay_rate", "0.9", "0.8"])
    assert args.layer_decay_rate == [0.9, 0.8]
    assert "--layer_decay_rate" in parser.format_help() and "VIT_LAYER_DECAY_RATE" in parser.format_help()
