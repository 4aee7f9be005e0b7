"""Layer-wise learning-rate decay written once (internvl.train.layer_decay) on the models' layer maps: each app's
groups equal, tensor for tensor, those of the three hand-written implementations it replaced (fixture
``layer_decay_groups.json``, generated once from internvl_g/layer_decay.py, segmentation/optim.py and
classification/optim.py at commit ba7e2fa, on the tiny models below with the same seeds and arguments)."""
import json

import pytest
import torch
from helpers import FIXTURES, tiny_vit_6b_family

from internvl import InternVisionModel
from internvl.datakit.checkpoints import tiny_internvl_cg_config
from internvl.errors import ConfigError
from internvl.models.internvl_cg import InternVLModel
from internvl.train.layer_decay import layer_decay_groups, layer_scale

BEFORE = json.loads((FIXTURES / "layer_decay_groups.json").read_text())


def _same(groups, case):
    expected = BEFORE[case]
    assert [g["names"] for g in groups] == [g["names"] for g in expected], case
    for ours, theirs in zip(groups, expected):
        assert ours["lr_scale"] == pytest.approx(theirs["lr_scale"], rel=1e-12, abs=0), (case, ours["names"][0])
        assert ours["weight_decay"] == theirs["weight_decay"], (case, ours["names"][0])
        if "lr" in theirs:
            assert ours["lr"] == pytest.approx(theirs["lr"], rel=1e-12, abs=0), (case, ours["names"][0])


@pytest.mark.parametrize("case, overrides, lora", [("internvl_g_full", {}, False),
                                                   ("internvl_g_c_only", {"num_query_token": 0}, False),
                                                   ("internvl_g_lora", {}, True)])
def test_internvl_g_groups_are_those_of_before(case, overrides, lora):
    from internvl_g.layer_decay import layer_decay_param_groups
    torch.manual_seed(0)
    model = InternVLModel(tiny_internvl_cg_config(**overrides))
    if lora:
        model.requires_grad_(False)
        model.wrap_backbone_lora(r=4, lora_alpha=8)
        model.wrap_qllama_lora(r=4, lora_alpha=8)
        model.text_projection.requires_grad_(True)
    _same(layer_decay_param_groups(model, 1e-3, 0.05, 0.5, 0.8), case)


ADAMW = dict(type="AdamW", lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05, amsgrad=False)


@pytest.mark.parametrize("case, upernet, optimizer", [
    ("segmentation_upernet_decay", True, dict(constructor="CustomLayerDecayOptimizerConstructor",
                                              paramwise_cfg=dict(num_layers=4, layer_decay_rate=0.5))),
    ("segmentation_upernet_rate1", True, dict(constructor="LayerDecayOptimizerConstructor",
                                              paramwise_cfg=dict(num_layers=4, layer_decay_rate=1.0))),
    ("segmentation_linear_default", False, {})])
def test_segmentation_groups_are_those_of_before(case, upernet, optimizer):
    from test_segmentation_model import tiny_model

    from segmentation.optim import build_optimizer
    model = tiny_model(upernet=upernet)
    _same(build_optimizer(model, {**ADAMW, **optimizer}).param_groups, case)


def test_segmentation_num_layers_of_the_config_counts():
    # The tiny configs inherit the 6B's num_layers=48 with rate 1.0: one rate for all, as before.
    from test_segmentation_model import tiny_model

    from segmentation.optim import build_optimizer
    groups = build_optimizer(tiny_model(), {**ADAMW, "constructor": "CustomLayerDecayOptimizerConstructor",
                                            "paramwise_cfg": dict(num_layers=48, layer_decay_rate=1.0)}).param_groups
    assert {g["lr_scale"] for g in groups} == {1.0}
    groups = build_optimizer(tiny_model(), {**ADAMW, "constructor": "CustomLayerDecayOptimizerConstructor",
                                            "paramwise_cfg": dict(num_layers=6, layer_decay_rate=0.5)}).param_groups
    scales = {name: g["lr_scale"] for g in groups for name in g["names"]}  # ids 0..7 counted from 6 layers
    assert scales["backbone.vit.embeddings.patch_embedding.weight"] == 0.5 ** 7
    assert scales["backbone.vit.encoder.layers.1.attn.qkv.weight"] == 0.5 ** 5
    assert scales["decode_head.classifier.weight"] == 1.0


@pytest.mark.parametrize("case, kwargs, decay", [
    ("classification_unfrozen_decay", dict(freeze_backbone=False), 0.5),
    ("classification_unfrozen_attn_pool", dict(freeze_backbone=False, cls_target="attention_pooling"), 0.7),
    ("classification_unfrozen_no_decay", dict(freeze_backbone=False), 0.0),
    ("classification_frozen", {}, 0.5)])
def test_classification_groups_are_those_of_before(case, kwargs, decay):
    from classification.model import InternViTClassifier
    from classification.optim import param_groups
    model = InternViTClassifier(InternVisionModel(tiny_vit_6b_family()), 5, **kwargs)
    _same(param_groups(model, 0.05, decay), case)


def test_the_vision_and_qllama_layer_maps():
    model = InternVLModel(tiny_internvl_cg_config())  # InternViT depth 3, QLLaMA depth 4
    vit, qllama = model.vision_model, model.qllama
    assert [vit.layer_id(n) for n in ("embeddings.class_embedding", "embeddings.patch_embedding.weight",
                                      "encoder.layers.0.attn.qkv.weight", "encoder.layers.2.ls2",
                                      "base_model.model.encoder.layers.1.mlp.fc1.lora_A.default.weight",
                                      "base_model.model.embeddings.position_embedding", "post_norm.weight")] == \
        [0, 0, 1, 3, 2, 0, 4]
    assert [qllama.layer_id(n) for n in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                                         "model.layers.3.mlp.up_proj.weight", "model.norm.weight", "lm_head.weight",
                                         "base_model.model.model.layers.1.mlp.down_proj.lora_B.default.weight")] == \
        [0, 1, 4, 5, 5, 2]


def test_scale_and_grouping_of_the_library_function():
    assert layer_scale(0, 3, 0.5) == 0.5 ** 4 and layer_scale(4, 3, 0.5) == 1.0 and layer_scale(6, 3, 0.5) == 1.0
    params = {name: torch.nn.Parameter(torch.zeros(shape)) for name, shape in
              [("a.weight", (2, 2)), ("a.bias", (2,)), ("b.weight", (2, 2)), ("t", ()), ("frozen", (2, 2))]}
    params["frozen"].requires_grad_(False)
    layer = {"a.weight": 0, "a.bias": 0, "b.weight": 2, "t": 1, "frozen": 0}
    groups = layer_decay_groups(params.items(), layer.get, 1, 0.5, 0.1, lr=2.0)
    assert [(g["group_name"], g["names"], g["lr_scale"], g["lr"], g["weight_decay"]) for g in groups] == [
        ("layer_0_decay", ["a.weight"], 0.25, 0.5, 0.1), ("layer_0_no_decay", ["a.bias"], 0.25, 0.5, 0.0),
        ("layer_2_decay", ["b.weight"], 1.0, 2.0, 0.1), ("layer_1_decay", ["t"], 0.5, 1.0, 0.1)]  # 0-d: decayed
    merged = layer_decay_groups(params.items(), layer.get, 1, 1.0, 0.1, no_weight_decay={"b.weight"},
                                group_by="scale")
    assert [(g["names"], g["weight_decay"]) for g in merged] == [(["a.weight", "t"], 0.1),
                                                                 (["a.bias", "b.weight"], 0.0)]
    towers = layer_decay_groups(params.items(), lambda n: ("x" if n.startswith("a") else "y", layer[n]),
                                {"x": 1, "y": 3}, {"x": 0.5, "y": 0.9}, 0.0)
    assert {g["group_name"]: g["lr_scale"] for g in towers} == pytest.approx(
        {"x_layer_0_decay": 0.25, "x_layer_0_no_decay": 0.25, "y_layer_2_decay": 0.9 ** 2, "y_layer_1_decay": 0.9 ** 3})
    with pytest.raises(ConfigError, match="no trainable parameters"):
        layer_decay_groups([("frozen", params["frozen"])], layer.get, 1, 0.5, 0.1)
