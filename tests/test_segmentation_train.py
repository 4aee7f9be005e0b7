"""segmentation/: train.py / test.py end to end on the synthetic ADE20K (learning, kill and resume, errors)."""
import json

import numpy as np
import pytest
import torch

from internvl.cli import run_main
from internvl.errors import CheckpointError
from segmentation import test as seg_test
from segmentation import train as seg_train

from segmentation_helpers import TINY_LINEAR, TINY_UPERNET, remove_log_handlers, tiny_options, write_tiny_setup


@pytest.fixture(autouse=True, scope="module")
def _own_log_handlers():
    yield
    remove_log_handlers()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return write_tiny_setup(tmp_path_factory.mktemp("seg"))


def train_args(setup, work_dir, config=TINY_LINEAR, **extra):
    data, pth = setup
    return [str(config), "--work-dir", str(work_dir), "--workers", "0", *tiny_options(data, pth, **extra)]


@pytest.fixture(scope="module")
def trained(setup, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("linear")
    result = seg_train.main(train_args(setup, work_dir, **{"evaluation.interval": 60,
                                                           "checkpoint_config.interval": 30}))
    return work_dir, result


def test_linear_probe_on_a_frozen_tiny_internvit_learns_the_synthetic_segmentation(setup, trained):
    work_dir, result = trained
    # Chance: always "background", the majority class. Its mIoU is its pixel share / 5 classes.
    data, _ = setup
    labels = np.concatenate([np.asarray(__import__("PIL.Image").Image.open(p)).ravel()
                             for p in sorted((data / "annotations/validation").glob("*.png"))])
    labelled = labels[labels > 0]
    majority_miou = 100 * (labelled == 1).mean() / 5
    assert result["mIoU"] > max(2 * majority_miou, 40), (result["mIoU"], majority_miou)
    assert result["best_mIoU"] == result["mIoU"] and (work_dir / "best_mIoU_iter_60.pth").is_file()
    assert (work_dir / "tensorboard").is_dir() and "Iter [60/60]" in (work_dir / "train.log").read_text()
    # A frozen backbone is not saved: a checkpoint is the head (and its BN statistics), not a ViT copy.
    checkpoint = torch.load(work_dir / "iter_60.pth", weights_only=True)
    assert sorted(checkpoint["state_dict"]) == ["decode_head.classifier.bias", "decode_head.classifier.weight",
                                                "decode_head.norm.bias", "decode_head.norm.num_batches_tracked",
                                                "decode_head.norm.running_mean", "decode_head.norm.running_var",
                                                "decode_head.norm.weight"]
    assert checkpoint["meta"]["iter"] == 60 and "optimizer" in checkpoint


def test_test_py_reproduces_the_training_evaluation(setup, trained, tmp_path):
    work_dir, result = trained
    data, pth = setup
    out = seg_test.main([str(TINY_LINEAR), str(work_dir / "iter_60.pth"), "--eval", "mIoU", "--workers", "0",
                         "--work-dir", str(tmp_path), "--show-dir", str(tmp_path / "show"),
                         *tiny_options(data, pth)])
    assert out["mIoU"] == pytest.approx(result["mIoU"]) and out["aAcc"] == pytest.approx(result["aAcc"])
    assert len(list((tmp_path / "show").glob("ADE_val_*.png"))) == 12
    saved = json.loads(next(tmp_path.glob("eval_*.json")).read_text())
    assert saved["mIoU"] == pytest.approx(out["mIoU"]) and saved["classes"][0] == "background"


def test_a_checkpoint_of_another_architecture_is_refused_naming_the_key(setup, trained, capsys, caplog):
    work_dir, _ = trained
    data, pth = setup
    with pytest.raises(CheckpointError, match=r"iter_60\.pth was trained with model\.backbone\.out_indices=\[2\]"):
        seg_test.main([str(TINY_UPERNET), str(work_dir / "iter_60.pth"), "--eval", "mIoU", "--workers", "0",
                       *tiny_options(data, pth)])
    # and through the command-line wrapper: one line, exit status 1
    status = run_main(seg_test.main, [str(TINY_LINEAR), str(work_dir / "nope.pth"), "--eval", "mIoU",
                                      *tiny_options(data, pth)])
    assert status == 1 and "error: checkpoint not found:" in capsys.readouterr().err + caplog.text


def test_kill_and_resume_continues_exactly(setup, tmp_path, monkeypatch):
    options = {"runner.max_iters": 8, "checkpoint_config.interval": 4, "data.samples_per_gpu": 4,
               "log_config.interval": 2}
    seg_train.main(train_args(setup, tmp_path / "straight", config=TINY_UPERNET, **options) + ["--no-validate"])

    from segmentation.optim import PolyLR
    apply = PolyLR.apply

    def killed_at_6(self, optimizer, t, base_lr):
        if t == 6:
            raise KeyboardInterrupt  # Ctrl-C / a preempted job, after iter_4.pth was written
        return apply(self, optimizer, t, base_lr)

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(PolyLR, "apply", killed_at_6)
    with pytest.raises(KeyboardInterrupt):
        seg_train.main(train_args(setup, resumed, config=TINY_UPERNET, **options) + ["--no-validate"])
    assert sorted(p.name for p in resumed.glob("iter_*.pth")) == ["iter_4.pth"]
    monkeypatch.setattr(PolyLR, "apply", apply)
    seg_train.main(train_args(setup, resumed, config=TINY_UPERNET, **options) + ["--no-validate"])
    assert "resumed from" in (resumed / "train.log").read_text()
    a = torch.load(tmp_path / "straight" / "iter_8.pth", weights_only=True)
    b = torch.load(resumed / "iter_8.pth", weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for name in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][name], a["state_dict"][name], msg=name)
    assert b["optimizer"]["state"].keys() == a["optimizer"]["state"].keys()


def test_a_misspelled_config_key_ends_the_run_with_one_line(setup, tmp_path, capsys, caplog):
    config = tmp_path / "typo.py"
    config.write_text(f"_base_ = ['{TINY_LINEAR}']\nmodel = dict(decode_head=dict(num_clases=5))\n")
    assert run_main(seg_train.main, [str(config), "--work-dir", str(tmp_path / "w")]) == 1
    # stderr, or the log handlers an earlier run in this process installed
    shown = (capsys.readouterr().err + caplog.text).strip().splitlines()
    assert any("error: " in line and "unknown key model.decode_head.num_clases" in line for line in shown)
    assert "Traceback" not in "".join(shown)


@pytest.mark.parametrize("scores, best_iter", [((30.0, 20.0), 2), ((20.0, 30.0), 4), ((25.0, 25.0), 2)])
def test_the_best_checkpoint_is_the_best_of_two_evaluations(setup, tmp_path, monkeypatch, scores, best_iter):
    # The loop, its checkpoints and the best-keeping are real; the evaluation's scores are scripted (a second
    # evaluation worse than, better than, tied with the first) so the comparison alone decides.
    import segmentation.engine
    calls = []

    def scripted(model, dataset, info, *args, **kwargs):
        calls.append(len(calls))
        return {"mIoU": scores[len(calls) - 1], "aAcc": 50.0, "mAcc": 40.0, "num_images": len(dataset)}

    monkeypatch.setattr(segmentation.engine, "evaluate", scripted)
    work_dir = tmp_path / "best"
    result = seg_train.main(train_args(setup, work_dir, **{"runner.max_iters": 4, "evaluation.interval": 2,
                                                           "checkpoint_config.interval": 2,
                                                           "data.samples_per_gpu": 2}))
    assert len(calls) == 2
    assert sorted(p.name for p in work_dir.glob("best_*.pth")) == [f"best_mIoU_iter_{best_iter}.pth"]
    assert result["best_iter"] == best_iter and result["best_mIoU"] == max(scores)
    best = torch.load(work_dir / f"best_mIoU_iter_{best_iter}.pth", weights_only=True)
    assert best["meta"]["iter"] == best_iter and best["meta"]["best_iter"] == best_iter
    last = torch.load(work_dir / "iter_4.pth", weights_only=True)["meta"]
    assert (last["best_mIoU"], last["best_iter"]) == (max(scores), best_iter)  # a resumed run keeps comparing
