"""segmentation/: mmseg-style configs (_base_ inheritance through mmengine) and their validation."""
from pathlib import Path

import pytest

from internvl.errors import ConfigError, MissingFileError
from segmentation.config import config_dir, load_config

UPSTREAM = sorted((config_dir() / "intern_vit_6b").glob("*/*.py"))
TINY = config_dir() / "tiny"


def test_every_shipped_config_loads_with_upstream_values():
    assert len(UPSTREAM) == 8
    for path in UPSTREAM + sorted(TINY.glob("*.py")):
        load_config(path)
    linear = load_config(config_dir() / "intern_vit_6b/linear_probing/"
                         "linear_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.py")
    assert linear.model.backbone.out_indices == [44] and linear.model.backbone.freeze_vit
    assert linear.model.decode_head.type == "FCNHead" and linear.model.decode_head.num_convs == 0
    assert "auxiliary_head" not in linear.model  # the Segmenter base's head was deleted, not merged
    assert linear.optimizer.type == "AdamW" and "momentum" not in linear.optimizer  # _delete_ of the SGD base
    assert linear.runner.max_iters == 80000 and linear.lr_config.warmup_iters == 1500
    few = load_config(config_dir() / "intern_vit_6b/few_shot/linear_intern_vit_6b_504_5k_ade20k_bs16_lr4e-5_1of16.py")
    assert few.data.train.max_image_num == 20210 // 16 and few.runner.max_iters == 5000
    assert few.optimizer.paramwise_cfg.layer_decay_rate == 0.95 and few.model.backbone.drop_path_rate == 0.4
    head = load_config(config_dir() / "intern_vit_6b/head_tuning/"
                       "upernet_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.py")
    assert head.model.auxiliary_head.in_index == 1 and head.model.auxiliary_head.loss_decode.loss_weight == 0.4
    assert head.model.decode_head.pool_scales == (1, 2, 3, 6) and head.model.decode_head.channels == 1536


def test_inheritance_through_two_levels_and_cfg_options():
    cfg = load_config(TINY / "upernet_intern_vit_tiny_synthetic.py", {"data.samples_per_gpu": 3})
    # from the tiny linear config ...
    assert cfg.model.backbone.embed_dim == 64 and cfg.optimizer.lr == 1e-2 and cfg.runner.max_iters == 60
    # ... which keeps upstream's linear-probing values it does not override ...
    assert cfg.model.backbone.init_values == 0.1 and cfg.lr_config.warmup_ratio == 1e-6
    assert cfg.optimizer.betas == (0.9, 0.999) and cfg.model.backbone.freeze_vit
    # ... and its own overrides
    assert cfg.model.backbone.with_fpn and cfg.model.decode_head.type == "UPerHead"
    assert cfg.optimizer.weight_decay == 0.05 and cfg.data.samples_per_gpu == 3


@pytest.mark.parametrize("text,key", [
    ("optimzer = dict(lr=1.0)", "unknown key config.optimzer; did you mean 'optimizer'"),
    ("model = dict(decode_head=dict(chanels=8))", "unknown key model.decode_head.chanels; did you mean 'channels'"),
    ("model = dict(backbone=dict(drop_path=0.1))", "unknown key model.backbone.drop_path"),
    ("lr_config = dict(warmup_iter=5)", "unknown key lr_config.warmup_iter"),
    ("data = dict(train=dict(max_images=5))", "unknown key data.train.max_images"),
    ("model = dict(test_cfg=dict(strides=(1, 1)))", "unknown key model.test_cfg.strides"),
])
def test_a_misspelled_key_is_an_error_naming_it(tmp_path, text, key):
    path = tmp_path / "bad.py"
    path.write_text(f"_base_ = ['{TINY / 'linear_intern_vit_tiny_synthetic.py'}']\n{text}\n")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_pipeline_steps_are_checked_and_missing_bases_named(tmp_path):
    from segmentation.ade20k import build_dataset

    cfg = load_config(TINY / "linear_intern_vit_tiny_synthetic.py")
    train = cfg.data.train.to_dict()
    train["pipeline"] = [dict(type="LoadImageFromFile"), dict(type="Resize", img_scale=(8, 8), ratio_rang=(1, 2))]
    with pytest.raises(ConfigError, match=r"unknown key data\.train\.pipeline\[1\]\.ratio_rang for Resize"):
        build_dataset(train, 0, "data.train")
    train["pipeline"] = [dict(type="RandomCorp", crop_size=(8, 8))]
    with pytest.raises(ConfigError, match=r"pipeline\[0\]\.type='RandomCorp'.*did you mean 'RandomCrop'"):
        build_dataset(train, 0, "data.train")
    path = tmp_path / "orphan.py"
    path.write_text("_base_ = ['./does_not_exist.py']\n")
    with pytest.raises(MissingFileError, match="does_not_exist"):
        load_config(path)


def test_merged_configs_equal_upstream_s():
    """Each config, merged through its _base_ chain, holds upstream's values (tests/fixtures/segmentation/
    upstream_configs.json: upstream's eight configs merged by mmengine from OpenGVLab/InternVL's files)."""
    import json
    import os

    from segmentation.config import to_plain

    def plain(value):
        value = to_plain(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    upstream = json.loads((Path(__file__).parent / "fixtures/segmentation/upstream_configs.json").read_text())
    assert sorted(upstream) == sorted(str(p.relative_to(config_dir() / "intern_vit_6b")) for p in UPSTREAM)
    for name, expected in upstream.items():
        cfg = load_config(config_dir() / "intern_vit_6b" / name)
        ours = {key: plain(cfg[key]) for key in expected}
        for merged in (ours, expected):  # the one path written differently: ./pretrained/... vs pretrained/...
            merged["model"]["backbone"]["pretrained"] = os.path.normpath(merged["model"]["backbone"]["pretrained"])
        assert ours == expected, name
