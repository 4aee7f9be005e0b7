"""classification.config / optim and the launch script: upstream keys and values, errors that name the key,
LR scaling and schedules against timm's, the command line, train_in1k.sh."""
import os
import subprocess
from pathlib import Path

import pytest
import torch

from classification.config import load_config
from classification.dataset import DATASETS
from classification.engine import scale_lr
from classification.main import parse_option
from classification.optim import LRSchedule, build_optimizer, param_groups
from internvl.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "classification" / "configs"
DATA_PATHS = {"imagenet-real": "./data/imagenet-1k", "imagenetv2": "./data/imagenetv2",  # data/README.md's layout
              "imagenet_a": "./data/imagenet-a", "imagenet_r": "./data/imagenet-r",
              "imagenet_sketch": "./data/imagenet-sketch"}
VARIANTS = {f"intern_vit_6b_1k_224{DATASETS[name].config_suffix}": (name, path) for name, path in DATA_PATHS.items()}


def test_the_published_recipe_loads_with_upstream_values():
    c = load_config(CONFIGS / "intern_vit_6b_1k_224.yaml")
    assert (c.DATA.BATCH_SIZE, c.DATA.TRANSFORM, c.DATA.DATA_PATH, c.DATA.DATASET) == (
        128, "build_transform_for_linear_probe", "./data/imagenet-1k", "imagenet")
    vit = c.MODEL.INTERN_VIT_6B
    assert (vit.EMBED_DIM, vit.NUM_HEADS, vit.DEPTH, vit.MLP_RATIO, vit.PATCH_SIZE, vit.INIT_VALUES) == (
        3200, 25, 48, 4, 14, 0.1)
    assert vit.QK_NORMALIZATION and not vit.QKV_BIAS and vit.FREEZE_VIT and vit.CLS_TARGET == "cls_patch_concat"
    assert vit.PRETRAINED == "./pretrained/intern_vit_6b_224px.pth"
    assert (c.TRAIN.EPOCHS, c.TRAIN.WARMUP_EPOCHS, c.TRAIN.BASE_LR, c.TRAIN.WEIGHT_DECAY, c.TRAIN.OPTIMIZER.NAME) == (
        10, 1, 0.1, 0.0, "sgd")
    assert c.AUG.MIXUP == 0.8 and c.MODEL.LABEL_SMOOTHING == 0.1  # upstream defaults the recipe does not override
    assert c.MODEL.NAME == "intern_vit_6b_1k_224" and c.OUTPUT == "intern_vit_6b_1k_224"


@pytest.mark.parametrize("recipe", ["intern_vit_6b_1k_224", "tiny/intern_vit_tiny_synthetic"])
def test_every_dataset_of_the_table_has_an_evaluation_config_of_each_recipe(recipe):
    assert set(DATASETS) == {"imagenet", *DATA_PATHS}
    for name, spec in DATASETS.items():
        c = load_config(CONFIGS / f"{recipe}{spec.config_suffix}.yaml", eval=True)
        assert c.DATA.DATASET == name
        if spec.test_only:  # the config check reads the table
            with pytest.raises(ConfigError, match=f"DATA.DATASET: {name} has only a test split"):
                load_config(CONFIGS / f"{recipe}{spec.config_suffix}.yaml")


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_evaluation_config_is_the_recipe_on_another_set(name):
    dataset, path = VARIANTS[name]
    c = load_config(CONFIGS / f"{name}.yaml", eval=True)
    base = load_config(CONFIGS / "intern_vit_6b_1k_224.yaml", eval=True)
    assert (c.DATA.DATASET, c.DATA.DATA_PATH, c.MODEL.NAME) == (dataset, path, name)
    assert {k: v for k, v in c.MODEL.items() if k != "NAME"} == {k: v for k, v in base.MODEL.items() if k != "NAME"}
    assert (c.TRAIN, c.AUG, c.TEST, c.DATA.TRANSFORM) == (base.TRAIN, base.AUG, base.TEST, base.DATA.TRANSFORM)
    if dataset != "imagenet-real":  # ReaL re-scores ImageNet-1K val: that config can also train
        with pytest.raises(ConfigError, match=f"DATA.DATASET: {dataset} has only a test split"):
            load_config(CONFIGS / f"{name}.yaml")


def test_unknown_keys_are_errors_that_name_them(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  INTERN_VIT_6B:\n    EMBED_DIMS: 3200\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key MODEL.INTERN_VIT_6B.EMBED_DIMS "
                                          r"\(valid keys in MODEL.INTERN_VIT_6B: .*EMBED_DIM,"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"--opts: unknown config key TRAIN.EPOCH \(valid keys in TRAIN: "):
        load_config(CONFIGS / "intern_vit_6b_1k_224.yaml", ["TRAIN.EPOCH", "3"])
    with pytest.raises(ConfigError, match="Type mismatch .* for config key: TRAIN.EPOCHS"):
        load_config(CONFIGS / "intern_vit_6b_1k_224.yaml", ["TRAIN.EPOCHS", "ten"])
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_base_files_then_the_file_then_opts_and_ints_for_floats(tmp_path):
    (tmp_path / "base.yaml").write_text("DATA:\n  BATCH_SIZE: 7\n  IMG_SIZE: 112\nTRAIN:\n  EPOCHS: 3\n")
    (tmp_path / "child.yaml").write_text("BASE: [base.yaml]\nTRAIN:\n  EPOCHS: 4\n  BASE_LR: 1\nAUG:\n  MIXUP: 0\n")
    c = load_config(tmp_path / "child.yaml", ["TRAIN.EPOCHS", "5", "AUG.CUTMIX", "0"])
    assert (c.DATA.BATCH_SIZE, c.DATA.IMG_SIZE, c.TRAIN.EPOCHS) == (7, 112, 5)
    assert c.TRAIN.BASE_LR == 1.0 and c.AUG.MIXUP == 0.0 and c.AUG.CUTMIX == 0.0
    assert isinstance(c.TRAIN.BASE_LR, float) and c.MODEL.NAME == "child"


def test_values_this_implementation_cannot_honour_are_rejected():
    recipe = CONFIGS / "intern_vit_6b_1k_224.yaml"
    for opts, message in ((["DATA.ZIP_MODE", "True"], "DATA.ZIP_MODE: is not supported"),
                          (["DATA.DATASET", "imagenet22K"], "DATA.DATASET: 'imagenet22K' is not one of"),
                          (["MODEL.INTERN_VIT_6B.CLS_TARGET", "gap"], "CLS_TARGET: 'gap' is not one of"),
                          (["DATA.IMG_SIZE", "230"], "DATA.IMG_SIZE: 230 is not a multiple of"),
                          (["TRAIN.FEATURE_CACHE", "True"], "TRAIN.FEATURE_CACHE: needs a deterministic"),
                          (["TRAIN.FEATURE_CACHE", "True", "DATA.TRANSFORM", "build_deterministic_transform"],
                           "mixup/cutmix mix pixels"),
                          (["TRAIN.FEATURE_CACHE", "True", "DATA.TRANSFORM", "build_deterministic_transform",
                            "AUG.MIXUP", "0", "AUG.CUTMIX", "0", "MODEL.INTERN_VIT_6B.CLS_TARGET",
                            "attention_pooling"], "attention_pooling head trains on every token")):
        with pytest.raises(ConfigError, match=message):
            load_config(recipe, opts)


def test_command_line_flags_and_the_older_launchers_local_rank():
    _, c = parse_option(["--cfg", str(CONFIGS / "intern_vit_6b_1k_224.yaml"), "--local-rank", "3", "--eval",
                            "--resume", "head.pth", "--batch-size", "16", "--output", "runs",
                            "--accumulation-steps", "2", "--opts", "TRAIN.EPOCHS", "1"])
    assert (c.LOCAL_RANK, c.EVAL_MODE, c.MODEL.RESUME, c.DATA.BATCH_SIZE) == (3, True, "head.pth", 16)
    assert (c.OUTPUT, c.TRAIN.ACCUMULATION_STEPS, c.TRAIN.EPOCHS) == ("runs/intern_vit_6b_1k_224", 2, 1)
    _, c = parse_option(["--cfg", str(CONFIGS / "intern_vit_6b_1k_224.yaml"), "--local_rank=0"])
    assert c.OUTPUT == "work_dirs/intern_vit_6b_1k_224" and not c.EVAL_MODE


def test_learning_rates_scale_with_the_total_batch():
    c = load_config(CONFIGS / "intern_vit_6b_1k_224.yaml", ["TRAIN.WARMUP_LR", "0.001", "TRAIN.MIN_LR", "0.0005"])
    scaled = scale_lr(c, world_size=8)  # 128 x 8 = 1024 images: twice the reference 512
    assert (scaled.TRAIN.BASE_LR, scaled.TRAIN.WARMUP_LR, scaled.TRAIN.MIN_LR) == pytest.approx((0.2, 0.002, 0.001))
    c = load_config(CONFIGS / "intern_vit_6b_1k_224.yaml", ["TRAIN.ACCUMULATION_STEPS", "4", "DATA.BATCH_SIZE", "32"])
    assert scale_lr(c, world_size=2).TRAIN.BASE_LR == pytest.approx(0.1 * 32 * 2 * 4 / 512)
    assert c.TRAIN.BASE_LR == 0.1  # the loaded config is not modified


def test_cosine_and_step_schedules_equal_timms():
    from timm.scheduler.cosine_lr import CosineLRScheduler
    from timm.scheduler.step_lr import StepLRScheduler
    for name, cls, kw in (("cosine", CosineLRScheduler, dict(t_initial=50, lr_min=1e-3, cycle_limit=1)),
                          # upstream ran timm 0.6, whose step schedule counted warmup steps too
                          ("step", StepLRScheduler, dict(decay_t=12, decay_rate=0.5, warmup_prefix=False))):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.4)
        reference = cls(optimizer, warmup_lr_init=0.01, warmup_t=5, t_in_epochs=False, **kw)
        ours = LRSchedule(name, 0.4, 0.01, 1e-3, total_steps=50, warmup_steps=5, decay_steps=12, decay_rate=0.5)
        for t in range(60):
            reference.step_update(t)
            assert ours.lr(t) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12), (name, t)
    linear = LRSchedule("linear", 1.0, 0.0, 0.0, total_steps=11, warmup_steps=1)
    assert [round(linear.lr(t), 6) for t in (0, 1, 6, 11)] == [0.0, 1.0, 0.505, 0.01]


def test_no_weight_decay_on_norms_and_biases_and_layer_decay_by_block():
    from helpers import tiny_vit_6b_family

    from classification.model import InternViTClassifier
    from internvl import InternVisionModel
    model = InternViTClassifier(InternVisionModel(tiny_vit_6b_family()), 5, freeze_backbone=False)
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.5)
    decay = {name: g["weight_decay"] for g in groups for name in g["names"]}
    scale = {name: g["lr_scale"] for g in groups for name in g["names"]}
    # upstream's rule: 1-D tensors and biases are not decayed (the position embedding is 3-D: it is)
    assert decay["head.weight"] == decay["blocks.0.attn.qkv.weight"] == decay["pos_embed"] == 0.05
    assert decay["head.bias"] == decay["norm.weight"] == decay["blocks.2.ls1.gamma"] == 0
    assert scale["blocks.2.mlp.fc1.weight"] == 0.5 and scale["blocks.0.mlp.fc1.weight"] == 0.125
    assert scale["patch_embed.proj.weight"] == scale["cls_token"] == 0.0625 and scale["head.weight"] == 1
    frozen = InternViTClassifier(InternVisionModel(tiny_vit_6b_family()), 5)
    c = load_config(CONFIGS / "intern_vit_6b_1k_224.yaml")
    optimizer = build_optimizer(c, frozen)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["nesterov"]
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 4  # norm.weight/bias, head.weight/bias


def test_train_in1k_sh_launches_main_py_through_shell_launch(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("GPUS", "GPUS_PER_NODE", "PARTITION", "QUOTA_TYPE")}
    script = REPO / "classification" / "train_in1k.sh"
    cfg = "classification/configs/intern_vit_6b_1k_224.yaml"
    out = subprocess.run(["bash", str(script), "mypart", "probe", cfg, "--eval", "--resume", "head.pth"],
                         env={**env, "DRY_RUN": "1", "GPUS": "16", "QUOTA_TYPE": "reserved"}, cwd=REPO,
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == [
        "srun", "-p", "mypart", "--job-name=probe", "--gres=gpu:8", "--ntasks=16", "--ntasks-per-node=8",
        "--cpus-per-task=10", "--kill-on-bad-exit=1", "--quotatype=reserved", "python", "-u",
        str(script.parent / "main.py"), "--cfg", cfg, "--output", "work_dirs", "--eval", "--resume", "head.pth"]
    out = subprocess.run(["bash", str(script), "--eval"], env={**env, "DRY_RUN": "1", "PARTITION": "p2"},
                         cwd=tmp_path, capture_output=True, text=True, check=True)  # the launch variables' form
    assert out.stdout.split()[:3] == ["srun", "-p", "p2"] and out.stdout.split()[-5:] == [
        "--cfg", str(script.parent / "configs" / "intern_vit_6b_1k_224.yaml"), "--output", "work_dirs", "--eval"]
    out = subprocess.run(["bash", str(script), "mypart", "probe"], env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "usage:" in out.stderr  # upstream's form needs all three
    out = subprocess.run(["bash", str(script), "missing.yaml"], env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "config file not found: missing.yaml" in out.stderr
