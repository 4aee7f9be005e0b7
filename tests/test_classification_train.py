"""classification/main.py end to end on synthetic data: training, logs and checkpoints, resuming after a
crash to the same weights (and past a damaged checkpoint), the feature cache, every evaluation set against a
hand computation (ImageNet-A with the 1000 ImageNet classes too), bad images, errors as the user sees them."""
import logging
import os
import re
import shutil
import stat
from pathlib import Path

import pytest
import torch
from helpers import tiny_vit_6b_family
from PIL import Image

from classification.checkpoint import read_checkpoint
from classification.config import load_config
from classification.dataset import DATASETS, BadImageError, build_eval_set, write_class_subset
from classification.dataset.class_folders import imagenet_synsets
from classification.demo import write_data
from classification.main import run
from classification.model import build_model
from internvl.datakit import SyntheticImages, write_intern_vit_pth
from internvl.cli import run_main
from internvl.errors import CheckpointError, ConfigError

CONFIGS = Path("classification/configs/tiny")
BACKBONE = tiny_vit_6b_family()  # 56 px, hidden 64, 3 layers
NUM_CLASSES = 8


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    kit = SyntheticImages(num_classes=NUM_CLASSES, image_size=56, seed=1)
    roots = write_data(root, kit, train_per_class=12, val_per_class=5)
    roots["backbone"] = write_intern_vit_pth(root / "backbone.pth", BACKBONE, seed=1)
    roots["work"] = root / "work_dirs"
    return roots


def args(data, output, *opts, cfg="intern_vit_tiny_synthetic", dataset="imagenet"):
    return ["--cfg", str(CONFIGS / f"{cfg}.yaml"), "--output", str(output), "--opts",
            "DATA.DATA_PATH", str(data[dataset]), "DATA.CLASS_NAMES", str(data["imagenet"] / "classes.txt"),
            "MODEL.NUM_CLASSES", str(NUM_CLASSES), "DATA.IMG_SIZE", "56", "DATA.BATCH_SIZE", "16",
            "MODEL.INTERN_VIT_6B.PRETRAINED", str(data["backbone"]), "MODEL.INTERN_VIT_6B.PRETRAIN_SIZE", "56",
            "MODEL.INTERN_VIT_6B.EMBED_DIM", "64", "MODEL.INTERN_VIT_6B.NUM_HEADS", "4",
            "MODEL.INTERN_VIT_6B.DEPTH", "3", "MODEL.INTERN_VIT_6B.INIT_VALUES", "0.5",
            "TRAIN.EPOCHS", "2", "PRINT_FREQ", "2", "EVAL_FREQ", "1", *map(str, opts)]


RANDOM_AUG = ["DATA.TRANSFORM", "build_transform_for_linear_probe", "TRAIN.FEATURE_CACHE", "False",
              "AUG.MIXUP", "0.8", "AUG.CUTMIX", "1.0", "MODEL.LABEL_SMOOTHING", "0.1"]


def test_training_writes_logs_tensorboard_checkpoints_and_the_upstream_lines(data, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    result = run(args(data, tmp_path, *RANDOM_AUG, "TRAIN.EMA.ENABLE", "True", "TRAIN.EMA.DECAY", "0.9"))
    run_dir = tmp_path / "intern_vit_tiny_synthetic"
    log = (run_dir / "log_rank0.txt").read_text()
    assert re.search(r"Train: \[1/2\]\[0/6\]\teta 0:00:\d\d lr \d\.\d{6}\ttime .*loss .*grad_norm .*"
                     r"\d+\.\d images/s\tmem 0MB", log)
    assert re.search(r"\[Epoch:1\] \* Acc@1 \d+\.\d{3} Acc@5 \d+\.\d{3}\n", log)
    assert re.search(r"Accuracy of the network on the 40 test images: \d+\.\d%", log)
    assert "Accuracy of the ema network on the 40 test images" in log and "Max accuracy" in log
    assert result["num_images"] == 40 and result["global_step"] == 12
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in run_dir.glob("ckpt_*.pth")) == ["ckpt_epoch_1.pth", "ckpt_epoch_best.pth",
                                                                  "ckpt_epoch_ema_best.pth"]  # SAVE_CKPT_NUM 1
    checkpoint = torch.load(run_dir / "ckpt_epoch_1.pth", weights_only=True)  # plain data, config as YAML text
    assert sorted(checkpoint["model"]) == sorted(checkpoint["model_ema"]) == [
        "head.bias", "head.weight", "norm.bias", "norm.num_batches_tracked", "norm.running_mean",
        "norm.running_var", "norm.weight"]  # the head only: the frozen backbone is not copied per epoch
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 12 and "BASE_LR" in checkpoint["config"]
    # LR scaled to the total batch: 1.6 x 16 / 512
    assert "BASE_LR 0.05" in log and (run_dir / "config.yaml").is_file()


class Crash(RuntimeError):
    pass


@pytest.mark.parametrize("save_steps", [1, 0])
def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(data, tmp_path, monkeypatch, save_steps):
    opts = [*RANDOM_AUG, "TRAIN.EMA.ENABLE", "True", "TRAIN.EMA.DECAY", "0.9", "TRAIN.ACCUMULATION_STEPS", "2",
            "DATA.BATCH_SIZE", "8", "TRAIN.SAVE_STEPS", save_steps, "EVAL_FREQ", "5"]
    run(args(data, tmp_path / "whole", *opts))

    step = torch.optim.SGD.step
    calls = []

    def crashing_step(self, *a, **kw):  # dies in the 4th update of epoch 1 (6 updates an epoch)
        calls.append(1)
        if len(calls) == 10:
            raise Crash("killed")
        return step(self, *a, **kw)

    monkeypatch.setattr(torch.optim.SGD, "step", crashing_step)
    with pytest.raises(Crash):
        run(args(data, tmp_path / "killed", *opts))
    monkeypatch.setattr(torch.optim.SGD, "step", step)
    run_dir = tmp_path / "killed" / "intern_vit_tiny_synthetic"
    expected = ["ckpt_epoch_0.pth", "ckpt_step_9.pth"] if save_steps else ["ckpt_epoch_0.pth"]
    assert sorted(p.name for p in run_dir.glob("ckpt_*_[0-9]*.pth")) == expected
    run(args(data, tmp_path / "killed", *opts))  # TRAIN.AUTO_RESUME picks up the latest checkpoint
    resumed_from = "epoch 1, batch 6, update 9" if save_steps else "epoch 1, batch 0, update 6"
    assert f"resumed {run_dir / expected[-1]}: {resumed_from}" in (run_dir / "log_rank0.txt").read_text()

    whole = torch.load(tmp_path / "whole" / run_dir.name / "ckpt_epoch_1.pth", weights_only=True)
    resumed = torch.load(run_dir / "ckpt_epoch_1.pth", weights_only=True)
    for part in ("model", "model_ema"):
        for key, value in whole[part].items():
            assert torch.equal(value, resumed[part][key]), (part, key)
    for key, value in whole["optimizer"]["state"].items():
        assert torch.equal(value["momentum_buffer"], resumed["optimizer"]["state"][key]["momentum_buffer"])
    assert whole["global_step"] == resumed["global_step"] == 12


def test_auto_resume_passes_over_a_damaged_newest_checkpoint(data, tmp_path, caplog):
    opts = ["SAVE_CKPT_NUM", "2", "EVAL_FREQ", "5"]
    old_umask = os.umask(0o027)
    try:
        run(args(data, tmp_path, *opts))
    finally:
        os.umask(old_umask)
    run_dir = tmp_path / "intern_vit_tiny_synthetic"
    assert stat.S_IMODE((run_dir / "ckpt_epoch_1.pth").stat().st_mode) == 0o640  # the umask's, not 0600
    newest = run_dir / "ckpt_epoch_1.pth"
    newest.write_bytes(newest.read_bytes()[:1000])  # cut short, as by a full disk during a copy
    caplog.set_level(logging.INFO)
    result = run(args(data, tmp_path, *opts, "TRAIN.EPOCHS", "3"))
    assert f"skipping {newest}, it cannot be read ({newest} cannot be read: the file is damaged" in caplog.text
    assert f"resumed {run_dir / 'ckpt_epoch_0.pth'}: epoch 1, batch 0, update 6" in caplog.text
    assert result["global_step"] == 18 and torch.load(newest, weights_only=True)["epoch"] == 1  # rewritten


def test_the_feature_cache_trains_the_head_that_recomputing_trains(data, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    common = ["DATA.TRANSFORM", "build_deterministic_transform", "AUG.MIXUP", "0", "AUG.CUTMIX", "0",
              "TRAIN.EPOCHS", "3", "EVAL_FREQ", "5"]
    run(args(data, tmp_path / "recompute", *common, "TRAIN.FEATURE_CACHE", "False"))
    cached = run(args(data, tmp_path / "cache", *common, "TRAIN.FEATURE_CACHE", "True"))
    name = "intern_vit_tiny_synthetic/ckpt_epoch_2.pth"
    a = torch.load(tmp_path / "recompute" / name, weights_only=True)["model"]
    b = torch.load(tmp_path / "cache" / name, weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    caplog.clear()
    again = run(args(data, tmp_path / "cache", *common, "TRAIN.FEATURE_CACHE", "True", "TRAIN.AUTO_RESUME", "False"))
    assert "feature cache: reusing" in caplog.text and again["acc1"] == cached["acc1"]
    with pytest.raises(ConfigError, match="TRAIN.FEATURE_CACHE: needs a deterministic train transform"):
        run(args(data, tmp_path / "x", "TRAIN.FEATURE_CACHE", "True", "DATA.TRANSFORM",
                 "build_transform_for_linear_probe"))


def upstream_style_head(path, num_classes, seed=0):
    """A random head (non-trivial norm statistics) saved as upstream's release does, yacs config included."""
    from yacs.config import CfgNode
    g = torch.Generator().manual_seed(seed)
    width = 2 * BACKBONE.hidden_size
    head = {"norm.weight": 1 + 0.2 * torch.randn(width, generator=g),
            "norm.bias": 0.1 * torch.randn(width, generator=g),
            "norm.running_mean": 0.3 * torch.randn(width, generator=g),
            "norm.running_var": 1 + torch.rand(width, generator=g),
            "norm.num_batches_tracked": torch.tensor(100),
            "head.weight": torch.randn(num_classes, width, generator=g),
            "head.bias": 0.1 * torch.randn(num_classes, generator=g)}
    torch.save({"model": head, "epoch": 9, "max_accuracy": 88.2, "config": CfgNode({"TAG": "default"})}, path)
    return path


def expected_metrics(config, head_file) -> dict:
    """Score the evaluation set of ``config`` image by image, outside the pipeline."""
    model = build_model(config, dtype=torch.float32).eval()
    model.load_state_dict(read_checkpoint(head_file)["model"], strict=False)
    eval_set = build_eval_set(config)
    top1 = top5 = 0
    real1, real5, real_n = 0, 0, 0
    for index in range(len(eval_set.dataset)):
        item = eval_set.dataset[index]
        with torch.no_grad():
            logits = model(item.image[None])[0]
        label = item.label
        if eval_set.class_subset is not None:
            logits, label = logits[eval_set.class_subset], eval_set.class_subset.index(label)
        ranked = logits.argsort(descending=True)[:5].tolist()
        top1 += ranked[0] == label
        top5 += label in ranked
        if eval_set.real_labels is not None and eval_set.real_labels[index]:
            real_n += 1
            real1 += ranked[0] in eval_set.real_labels[index]
            real5 += any(p in eval_set.real_labels[index] for p in ranked)
    n = len(eval_set.dataset)
    out = {"num_images": n, "acc1": 100 * top1 / n, "acc5": 100 * top5 / n}
    if eval_set.real_labels is not None:
        out.update(real_acc1=100 * real1 / real_n, real_acc5=100 * real5 / real_n, real_images=real_n)
    return out


@pytest.mark.parametrize("variant", sorted(DATASETS))
def test_evaluation_of_a_released_head_matches_a_hand_computation(data, tmp_path, caplog, variant):
    caplog.set_level(logging.INFO)
    head = upstream_style_head(tmp_path / "head.pth", NUM_CLASSES)
    suffix = DATASETS[variant].config_suffix
    argv = args(data, tmp_path, cfg=f"intern_vit_tiny_synthetic{suffix}", dataset=variant)
    result = run(argv[:4] + ["--eval", "--resume", str(head)] + argv[4:])
    config = load_config(CONFIGS / f"intern_vit_tiny_synthetic{suffix}.yaml", argv[argv.index("--opts") + 1:],
                         eval=True)
    expected = expected_metrics(config, head)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-9), key
    if variant == "imagenet-real":
        assert re.search(rf"\* ReaL Acc@1 {expected['real_acc1']:.3f} Acc@5 {expected['real_acc5']:.3f} loss ",
                         caplog.text)
        assert f"ReaL Accuracy of the network on the {expected['num_images']} test images: " \
               f"{expected['real_acc1']:.1f}%" in caplog.text
    else:
        assert f" * Acc@1 {expected['acc1']:.3f} Acc@5 {expected['acc5']:.3f}" in caplog.text
        assert f"Accuracy of the network on the {expected['num_images']} test images: " \
               f"{expected['acc1']:.1f}%" in caplog.text


def test_imagenet_a_with_the_1000_imagenet_classes_keeps_the_logits_of_the_wnids_present(data, tmp_path):
    """The published setting: NUM_CLASSES 1000, no class list, folders named by wnid (200 of them in the real set)."""
    wnids = imagenet_synsets()
    chosen = [3, 150, 207, 388, 511, 640, 817, 999]  # the ImageNet-1K label of each of the kit's 8 classes
    kit = SyntheticImages(num_classes=NUM_CLASSES, image_size=56, seed=1)
    root = write_class_subset(tmp_path / "imagenet-a", 16, kit.classes[::2], kit, start=5000,
                              folder_names=[wnids[i] for i in chosen])
    head = upstream_style_head(tmp_path / "head.pth", 1000)
    opts = ["MODEL.NUM_CLASSES", "1000", "DATA.CLASS_NAMES", ""]
    argv = args(dict(data, imagenet_a=root), tmp_path, *opts, cfg="intern_vit_tiny_synthetic_test_imagenet_a",
                dataset="imagenet_a")
    result = run(argv[:4] + ["--eval", "--resume", str(head)] + argv[4:])

    config = load_config(CONFIGS / "intern_vit_tiny_synthetic_test_imagenet_a.yaml", argv[argv.index("--opts") + 1:],
                         eval=True)
    model = build_model(config, dtype=torch.float32).eval()
    model.load_state_dict(read_checkpoint(head)["model"], strict=False)
    present = [chosen[i] for i in range(0, NUM_CLASSES, 2)]  # ImageNet labels 3, 207, 511, 817
    eval_set = build_eval_set(config)
    top1 = 0
    for index, (path, _) in enumerate(eval_set.dataset.samples):
        label = chosen[kit.sample(int(Path(path).stem)).label]
        with torch.no_grad():
            logits = model(eval_set.dataset[index].image[None])[0, present]  # 4 of the 1000 logits
        top1 += present[int(logits.argmax())] == label
    assert result["num_images"] == 16 and result["classes"] == 4
    assert result["acc1"] == pytest.approx(100 * top1 / 16, abs=1e-9) and result["acc5"] == 100.0


def test_a_head_for_another_class_count_is_a_clear_error(data, tmp_path):
    head = upstream_style_head(tmp_path / "head1000.pth", 1000)
    with pytest.raises(CheckpointError, match=r"head.weight has shape \(1000, 128\) in the checkpoint but \(8, 128\) "
                                         r"in the model \(MODEL.NUM_CLASSES=8"):
        run(["--cfg", str(CONFIGS / "intern_vit_tiny_synthetic.yaml"), "--eval", "--resume", str(head),
             *args(data, tmp_path)[2:]])


def test_unreadable_training_images_stop_the_run_unless_a_limit_allows_them(data, tmp_path, caplog):
    broken = tmp_path / "imagenet"
    shutil.copytree(data["imagenet"], broken)
    victim = sorted((broken / "train").rglob("*.JPEG"))[5]
    victim.write_bytes(b"\xff\xd8 truncated")
    local = dict(data, imagenet=broken)
    with pytest.raises(BadImageError, match=rf"{victim}.*exceed DATA.MAX_BAD_IMAGES=0"):
        run(args(local, tmp_path / "strict", "TRAIN.EPOCHS", "1"))
    caplog.set_level(logging.WARNING)
    result = run(args(local, tmp_path / "lenient", "TRAIN.EPOCHS", "2", "DATA.MAX_BAD_IMAGES", "1",
                      "DATA.NUM_WORKERS", "2"))  # reported from worker processes too
    assert result["unreadable_images"] == 1 and str(victim) in caplog.text
    assert "1 unreadable images were skipped" in caplog.text
    with Image.open(sorted((broken / "train").rglob("*.JPEG"))[6]) as image:
        assert image.size == (56, 56)  # the others were left alone


@pytest.mark.parametrize("case", ["config key", "missing data", "unreadable images", "bug"])
def test_user_errors_are_one_line_and_bugs_a_traceback_both_in_the_log(data, tmp_path, monkeypatch, capsys, case):
    monkeypatch.delenv("INTERNVL_DEBUG", raising=False)
    local = dict(data)
    opts = ["TRAIN.EPOCHS", "1"]
    expected = {"config key": "error: --opts: unknown config key TRAIN.EPOCH (valid keys in TRAIN: ",
                "missing data": f"error: DATA.DATA_PATH: {tmp_path / 'nowhere'} not found; see data/README.md",
                "unreadable images": "exceed DATA.MAX_BAD_IMAGES=0",
                "bug": "unexpected error (a bug; please report it with this traceback): RuntimeError('boom')"}[case]
    if case == "config key":
        opts += ["TRAIN.EPOCH", "3"]
    elif case == "missing data":
        local["imagenet"] = tmp_path / "nowhere"
    elif case == "unreadable images":
        local["imagenet"] = tmp_path / "imagenet"
        shutil.copytree(data["imagenet"], local["imagenet"])
        sorted((local["imagenet"] / "train").rglob("*.JPEG"))[3].write_bytes(b"\xff\xd8 truncated")
    else:
        def broken(*_, **__):
            raise RuntimeError("boom")
        monkeypatch.setattr("classification.engine.build_model", broken)
    assert run_main(run, args(local, tmp_path, *opts)) == 1
    log = (tmp_path / "intern_vit_tiny_synthetic" / "log_rank0.txt").read_text()
    stderr = capsys.readouterr().err
    for shown in (log, stderr):
        assert expected in shown
        assert ("Traceback" in shown) == (case == "bug")
    if case != "bug":
        assert len([line for line in log.splitlines() if " ERROR " in line]) == 1
