"""segmentation/: the InternViT dense backbone, heads, sliding-window inference, checkpoints, optimizer."""
import math

import pytest
import torch
from torch import nn

from internvl.datakit import write_intern_vit_pth
from internvl.datakit.checkpoints import tiny_vision_config
from internvl.errors import CheckpointError, ConfigError
from internvl.models.intern_vit import InternVisionModel
from segmentation.backbone import InternViTBackbone, InternViTBackboneConfig, MMSegInternViT6B, build_backbone
from segmentation.heads import segmentation_loss
from segmentation.model import build_segmentor, convert_mmseg_state_dict, slide_windows
from segmentation.optim import PolyLR, build_optimizer

TINY = dict(type="InternViT6B", pretrain_size=56, img_size=112, patch_size=14, embed_dim=64, depth=4, num_heads=4,
            with_cp=False, use_flash_attn=False, pretrained=None)
TINY_VIT = tiny_vision_config("6b", num_hidden_layers=4)  # what TINY's pretrained .pth holds


def tiny_model(**backbone):
    upernet = backbone.pop("upernet", False)
    bb = {**TINY, "out_indices": [0, 1, 2, 3] if upernet else [2], "with_fpn": upernet, **backbone}
    if upernet:
        head = dict(type="UPerHead", in_channels=[64] * 4, in_index=[0, 1, 2, 3], channels=16, num_classes=5,
                    norm_cfg=dict(type="SyncBN", requires_grad=True))
        aux = dict(type="FCNHead", in_channels=64, in_index=1, channels=8, num_convs=1, concat_input=False,
                   num_classes=5, loss_decode=dict(type="CrossEntropyLoss", loss_weight=0.4))
    else:
        head = dict(type="FCNHead", in_channels=64, channels=64, num_convs=0, dropout_ratio=0.0, concat_input=False,
                    num_classes=5, with_norm=True)
        aux = None
    return build_segmentor(dict(type="EncoderDecoder", backbone=bb, decode_head=head, auxiliary_head=aux,
                                test_cfg=dict(mode="slide", crop_size=(56, 56), stride=(28, 28))))


@pytest.fixture(scope="module")
def tiny_pth(tmp_path_factory):
    return write_intern_vit_pth(tmp_path_factory.mktemp("vit") / "tiny.pth", TINY_VIT)


@pytest.mark.parametrize("with_fpn,out_indices,expected", [
    (False, [2], [(64, 8, 8)]),                     # linear probing: one map at stride 14
    (False, [0, 3], [(64, 8, 8), (64, 8, 8)]),
    (True, [0, 1, 2, 3], [(64, 32, 32), (64, 16, 16), (64, 8, 8), (64, 4, 4)]),  # strides 3.5 / 7 / 14 / 28
])
def test_backbone_feature_shapes(with_fpn, out_indices, expected):
    backbone = build_backbone({**TINY, "out_indices": out_indices, "with_fpn": with_fpn})
    maps = backbone(torch.randn(2, 3, 112, 112)).feature_maps
    assert [tuple(m.shape[1:]) for m in maps] == expected and all(m.shape[0] == 2 for m in maps)
    # Upstream's 0-based layer numbers are transformers' stages (1-based): layer 2 -> stage3.
    assert backbone.out_features == [f"stage{i + 1}" for i in out_indices]


def test_backbone_maps_are_the_selected_layers_tokens_without_the_class_token():
    backbone = build_backbone({**TINY, "out_indices": [1, 3]}).eval()
    image = torch.randn(1, 3, 56, 84)
    states = backbone.vit(image, output_hidden_states=True).hidden_states
    maps = backbone(image).feature_maps
    for index, feature in zip([1, 3], maps):
        tokens = states[index + 1][0, 1:]  # hidden_states[0] is the embedding output
        torch.testing.assert_close(feature[0].flatten(1).T, tokens)


def test_pretrained_backbone_keeps_its_weights_and_resizes_position_embeddings(tiny_pth):
    reference = InternVisionModel.from_classification_checkpoint(tiny_pth, config=TINY_VIT).eval()
    backbone = build_backbone({**TINY, "pretrained": str(tiny_pth), "out_indices": [3]}).eval()
    vit = backbone.vit
    assert vit.embeddings.position_embedding.shape == (1, 8 * 8 + 1, 64)  # 56 px (4x4) -> 112 px (8x8)
    assert vit.config.image_size == 112
    own, ref = vit.state_dict(), reference.state_dict()
    for name in ref:
        if name != "embeddings.position_embedding":
            torch.testing.assert_close(own[name], ref[name], rtol=0, atol=0, msg=name)
    torch.testing.assert_close(vit.embeddings.position_embedding, reference.embeddings.interpolate_pos_embed(8, 8))
    # ... so the backbone computes what the published model computes at 112 px (on-the-fly interpolation).
    image = torch.randn(1, 3, 112, 112)
    expected = reference(image).last_hidden_state[0, 1:].T.reshape(64, 8, 8)
    torch.testing.assert_close(backbone(image).feature_maps[0][0], expected, rtol=1e-4, atol=1e-5)


def test_checkpoint_that_does_not_fit_the_config_names_the_key(tiny_pth):
    with pytest.raises(CheckpointError, match="hidden_size"):
        build_backbone({**TINY, "embed_dim": 96, "num_heads": 4, "pretrained": str(tiny_pth), "out_indices": [3]})
    with pytest.raises(ConfigError, match="model.backbone.out_indice"):
        build_backbone({**TINY, "out_indice": [3]})
    with pytest.raises(ConfigError, match=r"out_indices=\[4\]"):
        build_backbone({**TINY, "out_indices": [4]})


def test_frozen_vit_trains_only_the_pyramid_and_heads():
    model = tiny_model(upernet=True, freeze_vit=True)
    losses = model.forward_train(torch.randn(2, 3, 56, 56), torch.randint(0, 5, (2, 56, 56)))
    losses["loss"].backward()
    assert all(p.grad is None for p in model.backbone.vit.parameters())
    assert model.backbone.up1[0].weight.grad is not None and model.decode_head.classifier.weight.grad is not None
    assert not any(k.startswith("backbone.vit.") for k in model.trainable_state_dict())
    assert "backbone.up1.0.weight" in model.trainable_state_dict()


def test_transformers_upernet_uses_the_registered_backbone():
    from transformers import AutoBackbone, UperNetConfig, UperNetForSemanticSegmentation

    config = InternViTBackboneConfig(vision_config=tiny_vision_config("6b", num_hidden_layers=4),
                                     out_indices=[1, 2, 3, 4], with_fpn=True)
    assert isinstance(AutoBackbone.from_config(config), InternViTBackbone)
    model = UperNetForSemanticSegmentation(UperNetConfig(backbone_config=config, num_labels=5, hidden_size=16,
                                                         auxiliary_channels=8, auxiliary_in_channels=64)).eval()
    assert isinstance(model.backbone, InternViTBackbone)
    with torch.no_grad():
        out = model(pixel_values=torch.randn(1, 3, 56, 56), labels=torch.randint(0, 5, (1, 56, 56)))
    assert out.logits.shape == (1, 5, 56, 56) and torch.isfinite(out.loss)


def test_mmseg_adapter_builds_from_upstream_arguments_through_an_mmengine_registry():
    from mmengine.registry import Registry

    from segmentation.backbone import register_mmseg

    registry = Registry("model")
    assert register_mmseg(registry)
    backbone = registry.build({**TINY, "out_indices": [1, 3]})
    assert isinstance(backbone, MMSegInternViT6B)
    maps = backbone(torch.randn(1, 3, 56, 56))
    assert isinstance(maps, tuple) and [tuple(m.shape) for m in maps] == [(1, 64, 4, 4)] * 2
    assert all(m.dtype == torch.float32 for m in maps)


def test_slide_windows_follow_mmsegmentation():
    # 504 x 700, crop 504, stride 322: one row, two columns, the last shifted back to end at the border.
    assert slide_windows(504, 700, (504, 504), (322, 322)) == [(0, 504, 0, 504), (0, 504, 196, 700)]
    # smaller than the crop: one window of the image's size
    assert slide_windows(300, 400, (504, 504), (322, 322)) == [(0, 300, 0, 400)]
    windows = slide_windows(700, 1000, (504, 504), (322, 322))
    assert len(windows) == 2 * 3 and all((y2 - y1, x2 - x1) == (504, 504) for y1, y2, x1, x2 in windows)
    covered = torch.zeros(700, 1000)
    for y1, y2, x1, x2 in windows:
        covered[y1:y2, x1:x2] += 1
    assert covered.min() >= 1


def test_sliding_window_equals_whole_image_where_they_must_agree():
    model = tiny_model().eval()
    # 1. An image of the crop's size is one window: the same network call.
    image = torch.randn(1, 3, 56, 56)
    model.test_cfg["mode"] = "whole"
    whole = model.inference(image)
    model.test_cfg["mode"] = "slide"
    torch.testing.assert_close(model.inference(image), whole)
    # 2. For a per-pixel network every window agrees with the whole image, so stitching and averaging the
    # overlaps must give the whole-image logits exactly, for any size and stride, batched or one by one.
    conv = nn.Conv2d(3, 5, 1)
    model.encode_decode = lambda x: conv(x)
    image = torch.randn(1, 3, 98, 154)
    for crop, stride in (((56, 56), (28, 28)), ((56, 70), (42, 30)), ((112, 112), (28, 28))):
        model.test_cfg.update(crop_size=crop, stride=stride)
        batched = model.inference(image)
        torch.testing.assert_close(batched, conv(image))
        torch.testing.assert_close(model.inference(image, window_batch=1), batched)
    # Resizing to the file's size happens after stitching.
    assert model.inference(image, ori_shape=(100, 150)).shape == (1, 5, 100, 150)


def test_upstream_checkpoint_names_load_into_the_model():
    model = tiny_model(upernet=True).eval()
    with torch.no_grad():  # non-trivial statistics, so that a BN loaded under the wrong name shows
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    from internvl.models.intern_vit import rename_timm_hf

    def mmseg_name(name):  # the inverse of the conversion: upstream's names for our tensors
        if name.startswith("backbone.vit."):
            return "backbone." + rename_timm_hf(name[len("backbone.vit."):], to_hf=False)
        return name.replace(".classifier.", ".conv_seg.").replace(".batch_norm.", ".bn.")

    upstream = {mmseg_name(k): v.clone() for k, v in model.state_dict().items()}
    assert "decode_head.fpn_bottleneck.bn.running_var" in upstream and "backbone.blocks.0.ls1.gamma" in upstream
    assert "decode_head.conv_seg.weight" in upstream and "auxiliary_head.convs.0.conv.weight" in upstream
    assert convert_mmseg_state_dict(upstream).keys() == model.state_dict().keys()
    other = tiny_model(upernet=True).eval()
    other.load_checkpoint_state(upstream, "upstream.pth")
    image = torch.randn(1, 3, 56, 56)
    torch.testing.assert_close(other.encode_decode(image), model.encode_decode(image))


def test_checkpoint_of_another_model_is_refused_naming_tensors():
    model = tiny_model(upernet=True)
    linear_state = tiny_model().trainable_state_dict()
    with pytest.raises(CheckpointError, match=r"ckpt\.pth does not match.*missing \(.*decode_head\."):
        model.load_checkpoint_state(linear_state, "ckpt.pth")
    other = tiny_model(upernet=True).state_dict()
    other["decode_head.classifier.weight"] = torch.zeros(7, 16, 1, 1)
    with pytest.raises(CheckpointError, match=r"decode_head.classifier.weight: checkpoint \(7, 16, 1, 1\)"):
        model.load_checkpoint_state(other, "ckpt.pth")


def test_loss_averages_over_all_pixels_as_mmsegmentation_0x():
    logits = torch.randn(1, 3, 2, 2)
    labels = torch.tensor([[[0, 1], [255, 2]]])
    per_pixel = [-torch.log_softmax(logits[0, :, i, j], 0)[labels[0, i, j]] for i, j in ((0, 0), (0, 1), (1, 1))]
    torch.testing.assert_close(segmentation_loss(logits, labels), sum(per_pixel) / 4)  # ignored pixel counts
    torch.testing.assert_close(segmentation_loss(logits, labels, avg_non_ignore=True), sum(per_pixel) / 3)
    torch.testing.assert_close(segmentation_loss(logits, labels, loss_weight=0.4), 0.4 * sum(per_pixel) / 4)


def test_layer_decay_groups_as_upstream():
    model = tiny_model(upernet=True)  # ViT trainable: depth 4 -> ids 0..5, scale = rate ** (5 - id)
    optimizer = build_optimizer(model, dict(type="AdamW", lr=1.0, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05,
                                            amsgrad=False, constructor="CustomLayerDecayOptimizerConstructor",
                                            paramwise_cfg=dict(num_layers=4, layer_decay_rate=0.5)))
    found = {}
    for group in optimizer.param_groups:
        for name in group["names"]:
            found[name] = (group["lr_scale"], group["weight_decay"])
    assert found["backbone.vit.embeddings.patch_embedding.weight"] == (0.5 ** 5, 0.05)
    assert found["backbone.vit.embeddings.position_embedding"] == (0.5 ** 5, 0.0)
    assert found["backbone.vit.embeddings.class_embedding"] == (0.5 ** 5, 0.0)
    assert found["backbone.vit.encoder.layers.0.attn.qkv.weight"] == (0.5 ** 4, 0.05)
    assert found["backbone.vit.encoder.layers.3.mlp.fc1.weight"] == (0.5 ** 1, 0.05)
    assert found["backbone.vit.encoder.layers.3.mlp.fc1.bias"] == (0.5 ** 1, 0.0)
    assert found["backbone.vit.encoder.layers.2.ls1"] == (0.5 ** 2, 0.0)  # 1-D
    assert found["backbone.up1.0.weight"] == (1.0, 0.05)
    assert found["decode_head.classifier.weight"] == (1.0, 0.05)
    assert len(found) == sum(p.requires_grad for p in model.parameters())


def test_poly_schedule_with_linear_warmup():
    schedule = PolyLR(max_iters=100, power=1.0, min_lr=0.0, warmup="linear", warmup_iters=10, warmup_ratio=1e-6)
    assert schedule.factor(0, 4e-5) == pytest.approx(4e-5 * 1e-6)
    # t=5: poly 4e-5 * 0.95, warmup factor 1 - 0.5 * (1 - 1e-6)
    assert schedule.factor(5, 4e-5) == pytest.approx(4e-5 * 0.95 * (1 - 0.5 * (1 - 1e-6)))
    assert schedule.factor(10, 4e-5) == pytest.approx(4e-5 * 0.9)
    assert schedule.factor(99, 4e-5) == pytest.approx(4e-5 * 0.01)
    power = PolyLR(max_iters=10, power=0.9, min_lr=1e-4)
    assert power.factor(5, 0.01) == pytest.approx((0.01 - 1e-4) * 0.5 ** 0.9 + 1e-4)
    assert not math.isnan(schedule.factor(100, 4e-5))


def test_backbone_saves_and_loads_as_a_transformers_model(tmp_path):
    backbone = build_backbone({**TINY, "out_indices": [0, 1, 2, 3], "with_fpn": True}).eval()
    backbone.save_pretrained(tmp_path / "backbone")
    # (AutoBackbone.from_pretrained of a local folder asks the hub first in transformers 5.24: use the class)
    loaded = InternViTBackbone.from_pretrained(str(tmp_path / "backbone")).eval()
    assert isinstance(loaded, InternViTBackbone) and loaded.out_indices == backbone.out_indices
    image = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        for a, b in zip(loaded(image).feature_maps, backbone(image).feature_maps):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("with_cp", [False, True])
def test_layers_after_the_last_out_index_do_not_run_or_train(with_cp):
    backbone = build_backbone({**TINY, "out_indices": [1], "with_cp": with_cp}).train()
    calls = []
    backbone.vit.encoder.layers[3].register_forward_hook(lambda *args: calls.append(1))
    maps = backbone(torch.randn(2, 3, 56, 56)).feature_maps
    maps[0].square().mean().backward()
    layers = backbone.vit.encoder.layers
    assert layers[1].mlp.fc2.weight.grad is not None and layers[0].attn.qkv.weight.grad is not None
    assert layers[2].mlp.fc2.weight.grad is None
    assert calls == ([1] if with_cp else [])  # checkpointing runs the whole stack, as the published model


def test_an_hf_internvit_directory_loads_like_the_classification_pth(tiny_pth, tmp_path):
    vit = InternVisionModel.from_classification_checkpoint(tiny_pth, config=TINY_VIT)
    vit.save_pretrained(tmp_path / "InternViT-tiny")
    args = {**TINY, "out_indices": [2], "with_fpn": False}
    from_dir = build_backbone({**args, "pretrained": str(tmp_path / "InternViT-tiny")}).eval()
    from_pth = build_backbone({**args, "pretrained": str(tiny_pth)}).eval()
    image = torch.randn(1, 3, 112, 112)
    torch.testing.assert_close(from_dir(image).feature_maps[0], from_pth(image).feature_maps[0])
    with pytest.raises(CheckpointError, match="num_hidden_layers=6 but the checkpoint has 4"):
        build_backbone({**args, "depth": 6, "pretrained": str(tmp_path / "InternViT-tiny")})


def test_published_configs_build_at_full_size_with_the_published_backbone_names():
    """On the meta device (no memory): upstream's head-tuning config gives InternViT-6B with the tensor names
    and shapes of intern_vit_6b_224px.pth (position embedding at 504 px), and a 504 px step runs."""
    from helpers import read_manifest

    from internvl.models.intern_vit import rename_timm_hf
    from segmentation.config import config_dir, load_config, to_plain

    head_tuning = "intern_vit_6b/head_tuning/upernet_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.py"
    cfg = load_config(config_dir() / head_tuning, {"model.backbone.pretrained": None})
    with torch.device("meta"):
        model = build_segmentor(to_plain(cfg.model))
        losses = model.forward_train(torch.empty(2, 3, 504, 504), torch.empty(2, 504, 504, dtype=torch.long))
    assert losses["loss"].shape == () and "aux.loss_ce" in losses
    published = {k: v for k, v in read_manifest("intern_vit_6b_224px.pth+head.tsv").items()
                 if not k.startswith(("norm.", "head."))}
    published["pos_embed"] = (1, 36 * 36 + 1, 3200)  # 224 px -> 504 px
    ours = {rename_timm_hf(k[len("backbone.vit."):], to_hf=False): tuple(v.shape)
            for k, v in model.state_dict().items() if k.startswith("backbone.vit.")}
    assert ours == published
    assert tuple(model.backbone.up1[0].weight.shape) == (3200, 3200, 2, 2)
    assert tuple(model.decode_head.classifier.weight.shape) == (150, 1536, 1, 1)


@pytest.mark.parametrize("device, hooks, requested, trains, expected", [
    ("cpu", [], "auto", True, (torch.float32, None)),
    ("cpu", [dict(type="ToFloat16Hook")], "auto", False, (torch.float32, None)),  # CPUs run fp32
    ("cuda", [dict(type="ToFloat16Hook")], "auto", False, (torch.float16, None)),  # frozen ViT stored in fp16
    ("cuda", [dict(type="ToFloat16Hook")], "auto", True, (torch.float32, torch.float16)),  # trained: autocast
    ("cuda", [], "bf16", True, (torch.bfloat16, None)),  # --backbone-dtype given: as given
])
def test_backbone_precision_follows_the_suite_policy(device, hooks, requested, trains, expected):
    from segmentation.engine import precision
    assert precision({"custom_hooks": hooks}, torch.device(device), requested, vit_trains=trains) == expected


def test_a_head_registered_by_name_builds_and_an_unknown_one_is_named():
    from segmentation.heads import HEADS, build_head, register_head

    class Pointwise(nn.Conv2d):  # a head takes the list of its feature maps
        def forward(self, maps):
            return super().forward(maps[0])

    @register_head("TestPointwiseHead")
    def pointwise(a, where):
        return Pointwise(a["in_channels"], a["num_classes"], 1), [a["in_index"]]

    try:
        model = build_segmentor(dict(type="EncoderDecoder", backbone={**TINY, "out_indices": [2]},
                                     decode_head=dict(type="TestPointwiseHead", in_channels=64, channels=64,
                                                      num_classes=5)))
        assert isinstance(model.decode_head, Pointwise) and model.decode_index == [-1]
        logits = model.encode_decode(torch.randn(1, 3, 56, 56))
        assert logits.shape == (1, 5, 56, 56)
    finally:
        del HEADS["TestPointwiseHead"]
    with pytest.raises(ConfigError, match=r"decode_head.type='PSPHead': supported heads are FCNHead, UPerHead"):
        build_head(dict(type="PSPHead", in_channels=64, channels=64, num_classes=5), "decode_head")


def test_checkpoint_files_are_read_through_internvl_fileio(tmp_path):
    # Wrapped as MMSegmentation ({'meta', 'state_dict'}) or as a DDP module ({'model': {'module.<name>'}}): the
    # same tensors load; a damaged file, a pickled object and a file without tensors are one-line errors naming it.
    from pathlib import PurePosixPath

    from segmentation.engine import load_weights

    source = tiny_model()
    state = source.trainable_state_dict()
    image = torch.randn(1, 3, 56, 56)
    expected = source.eval().encode_decode(image)
    for name, saved in [("mmseg.pth", {"meta": {"iter": 4}, "state_dict": state}),
                        ("ddp.pth", {"model": {f"module.{k}": v for k, v in state.items()}})]:
        torch.save(saved, tmp_path / name)
        model = tiny_model()
        load_weights(model, tmp_path / name, {})
        torch.testing.assert_close(model.eval().encode_decode(image), expected)
    whole = (tmp_path / "mmseg.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pth cannot be read: the file is damaged or incomplete"):
        load_weights(tiny_model(), tmp_path / "cut.pth", {})
    torch.save({"state_dict": state, "meta": {"work_dir": PurePosixPath("/runs")}}, tmp_path / "object.pth")
    with pytest.raises(CheckpointError, match=r"object\.pth holds objects other than tensors"):
        load_weights(tiny_model(), tmp_path / "object.pth", {})
    torch.save({"meta": {"iter": 4}}, tmp_path / "meta.pth")
    with pytest.raises(CheckpointError, match=r"meta\.pth: no state dict"):
        load_weights(tiny_model(), tmp_path / "meta.pth", {})
