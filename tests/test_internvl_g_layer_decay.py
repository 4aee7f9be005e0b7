"""Layer-wise learning-rate decay (--use_custom_trainer): upstream's layer ids and towers, the rate of every group
computed by hand, and the rates still in the optimizer after the learning-rate scheduler's first step."""
import pytest
import torch

from internvl.errors import ConfigError
from internvl_g.layer_decay import decay_rates_from_env, layer_decay_param_groups, layer_id, tower


@pytest.mark.parametrize("name, expected", [
    ("query_tokens", ("qllama", 0)),
    ("logit_scale", ("qllama", 0)),
    ("vision_model.embeddings.position_embedding", ("vit", 0)),
    ("vision_model.encoder.layers.0.attn.qkv.weight", ("vit", 1)),
    ("vision_model.encoder.layers.47.ls2", ("vit", 48)),
    ("vision_model.base_model.model.encoder.layers.3.mlp.fc1.lora_A.default.weight", ("vit", 4)),
    ("clip_projector.cross_attn.q.weight", ("vit", 50)),
    ("qllama.model.embed_tokens.weight", ("qllama", 0)),
    ("qllama.model.layers.31.cross_attn.k_proj.weight", ("qllama", 32)),
    ("qllama.base_model.model.model.layers.2.self_attn.q_proj.lora_B.default.weight", ("qllama", 3)),
    ("qllama.model.norm.weight", ("qllama", 34)),
    ("qllama.lm_head.weight", ("qllama", 34)),
    ("clip_projector2.norm1_q.weight", ("qllama", 34)),
    ("itm_head.weight", ("qllama", 34)),
    ("text_projection", ("qllama", 34)),
])
def test_layer_ids_and_towers_of_the_published_14b_names(name, expected):
    # InternViT-6B: 48 layers (+2 = 50); QLLaMA: 32 layers (+2 = 34)
    assert (tower(name), layer_id(name, 50, 34)) == expected


class _Named(torch.nn.Module):
    def __init__(self, shapes):
        super().__init__()
        self.names = list(shapes)
        for i, shape in enumerate(shapes.values()):
            self.register_parameter(f"p{i}", torch.nn.Parameter(torch.zeros(shape)))

    def named(self):
        return [(name, getattr(self, f"p{i}")) for i, name in enumerate(self.names)]


def test_group_learning_rates_and_weight_decay_by_hand():
    # InternViT depth 2 (layers +2 = 4), QLLaMA depth 3 (5); rates 0.5 and 0.8; lr 1.0, weight decay 0.1
    model = _Named({"vision_model.embeddings.patch_embedding.weight": (4, 3),
                    "vision_model.encoder.layers.1.norm1.weight": (4,),
                    "vision_model.encoder.layers.1.attn.proj.bias": (4,), "clip_projector.proj.weight": (4, 4),
                    "qllama.model.layers.0.mlp.up_proj.weight": (4, 4), "qllama.model.norm.weight": (4,),
                    "logit_scale": (), "text_projection": (4, 2)})
    ordered = layer_decay_param_groups(model.named(), 2, 3, 1.0, 0.1, 0.5, 0.8)
    assert ordered[0]["lr_scale"] == 1.0  # the first group has the full rate (the Trainer logs group 0's)
    groups = {g["group_name"]: g for g in ordered}
    expected = {  # group: (lr = rate ** (layers - id - 1), capped at 1; weight decay; tensors)
        "vit_layer_0_decay": (0.5 ** 3, 0.1, ["vision_model.embeddings.patch_embedding.weight"]),
        "vit_layer_2_no_decay": (0.5 ** 1, 0.0, ["vision_model.encoder.layers.1.norm1.weight",
                                                 "vision_model.encoder.layers.1.attn.proj.bias"]),
        "vit_layer_4_decay": (1.0, 0.1, ["clip_projector.proj.weight"]),  # 0.5 ** -1, capped
        "qllama_layer_1_decay": (0.8 ** 3, 0.1, ["qllama.model.layers.0.mlp.up_proj.weight"]),
        "qllama_layer_5_no_decay": (1.0, 0.0, ["qllama.model.norm.weight"]),
        "qllama_layer_0_decay": (0.8 ** 4, 0.1, ["logit_scale"]),  # 0-d: decayed, as upstream
        "qllama_layer_5_decay": (1.0, 0.1, ["text_projection"]),
    }
    assert set(groups) == set(expected)
    for name, (lr, decay, params) in expected.items():
        assert groups[name]["lr"] == pytest.approx(lr) and groups[name]["weight_decay"] == decay, name
        assert groups[name]["param_names"] == params


def test_frozen_tensors_get_no_group():
    model = _Named({"text_projection": (4, 2), "itm_head.weight": (2, 4)})
    model.p1.requires_grad_(False)
    groups = layer_decay_param_groups(model.named(), 2, 3, 1e-3, 0.05, 0.9, 0.9)
    assert [g["param_names"] for g in groups] == [["text_projection"]]


def test_decay_rates_from_the_environment():
    assert decay_rates_from_env({}) == (1.0, 1.0)
    assert decay_rates_from_env({"VIT_LAYER_DECAY_RATE": "0.9", "QLLAMA_LAYER_DECAY_RATE": "0.85"}) == (0.9, 0.85)
    with pytest.raises(ConfigError, match="QLLAMA_LAYER_DECAY_RATE='x' is not a number"):
        decay_rates_from_env({"QLLAMA_LAYER_DECAY_RATE": "x"})
    with pytest.raises(ConfigError, match=r"VIT_LAYER_DECAY_RATE=1.5 must be in \(0, 1\]"):
        decay_rates_from_env({"VIT_LAYER_DECAY_RATE": "1.5"})
