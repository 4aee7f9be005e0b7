"""internvl.train.checkpoints and internvl.fileio: the permissions they are written with, damaged files named as such
(and passed over by auto-resume), and the one unwrap of trainer-wrapped state dicts."""
import logging
import os
import stat

import pytest
import torch
from helpers import tiny_vit_6b_family

from internvl import InternVisionModel
from internvl.errors import CheckpointError, MissingFileError
from internvl.models.intern_vit import load_state_dict_file
from internvl.fileio import atomic_save, load_checkpoint, load_torch_file, unwrap_state_dict
from internvl.train.checkpoints import load_latest_checkpoint, save_checkpoint


@pytest.fixture
def umask():
    def set_umask(mask):
        os.umask(mask)

    old = os.umask(0o022)
    yield set_umask
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_save_gives_the_file_the_umasks_permissions(tmp_path, umask, mask, mode):
    umask(mask)
    path = atomic_save({"w": torch.ones(2)}, tmp_path / "ckpt.pth")
    assert stat.S_IMODE(path.stat().st_mode) == mode  # colleagues read it when the umask lets them
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]  # no temp file left


def damage(path, how: str):
    data = path.read_bytes()
    path.write_bytes({"truncated": data[:len(data) // 2], "tail": data[:-10], "empty": b"",
                      "garbage": b"not a checkpoint" * 8}[how])
    return path


@pytest.mark.parametrize("how", ["truncated", "tail", "empty", "garbage"])
def test_a_damaged_file_is_an_error_naming_it(tmp_path, how):
    path = damage(atomic_save({"model": {"w": torch.ones(300)}}, tmp_path / "ckpt.pth"), how)
    for load in (load_torch_file, load_checkpoint, load_state_dict_file):
        with pytest.raises(CheckpointError, match=rf"{path} cannot be read: the file is damaged or incomplete"):
            load(path)
    with pytest.raises(MissingFileError, match="checkpoint not found: .*other.pth"):
        load_torch_file(tmp_path / "other.pth")


def test_a_damaged_classification_pth_names_the_file(tmp_path):
    path = tmp_path / "intern_vit_6b_224px.pth"
    from internvl.datakit import write_intern_vit_pth
    damage(write_intern_vit_pth(path, tiny_vit_6b_family()), "truncated")
    with pytest.raises(CheckpointError, match=rf"{path} cannot be read: the file is damaged"):
        InternVisionModel.from_classification_checkpoint(path, config=tiny_vit_6b_family())


def test_resuming_passes_over_damaged_newest_checkpoints_and_says_which(tmp_path, caplog):
    for step in (1, 2, 3, 10):
        save_checkpoint({"step": step}, tmp_path, f"checkpoint-{step}.pth")
    damage(tmp_path / "checkpoint-10.pth", "truncated")
    damage(tmp_path / "checkpoint-3.pth", "tail")
    caplog.set_level(logging.WARNING)
    path, state = load_latest_checkpoint(tmp_path)
    assert path == tmp_path / "checkpoint-2.pth" and state == {"step": 2}
    skipped = [r.getMessage() for r in caplog.records]
    assert len(skipped) == 2 and "skipping " + str(tmp_path / "checkpoint-10.pth") in skipped[0]
    assert "checkpoint-3.pth" in skipped[1] and "damaged or incomplete" in skipped[1]
    # the caller's order of candidates is kept
    assert load_latest_checkpoint([tmp_path / "checkpoint-1.pth", tmp_path / "checkpoint-2.pth"])[1] == {"step": 1}
    assert load_latest_checkpoint(tmp_path / "nothing-here") is None
    for step in (1, 2):
        damage(tmp_path / f"checkpoint-{step}.pth", "empty")
    with pytest.raises(CheckpointError, match=r"none of the 4 checkpoints to resume from can be read: .*"
                                              r"checkpoint-10.pth.*checkpoint-1.pth"):
        load_latest_checkpoint(tmp_path)


def test_unwrap_state_dict_finds_the_tensors_however_they_are_wrapped():
    sd = {"head.weight": torch.ones(2, 3), "head.bias": torch.zeros(2)}
    for wrapped in (sd, {"model": sd, "optimizer": {}, "epoch": 3}, {"module": sd, "buffer_names": []},
                    {"state_dict": sd}, {"model": {"module": sd}}, {"module": {"model": sd}},
                    {"module": {f"module.{k}": v for k, v in sd.items()}}):
        assert unwrap_state_dict(wrapped) == sd
    with pytest.raises(CheckpointError, match="x.pth: both 'model' and 'module' hold a dict"):
        unwrap_state_dict({"model": sd, "module": sd}, "x.pth")
    with pytest.raises(CheckpointError, match=r"x.pth: no state dict .* at \['model'\].*found \[\]"):
        unwrap_state_dict({"model": {}}, "x.pth")
    with pytest.raises(CheckpointError, match=r"no state dict \(tensors by name\) at the top level.*'epoch'"):
        unwrap_state_dict({"epoch": 3, "w": torch.ones(1)}, "x.pth")


def test_the_backbone_loader_and_the_classification_reader_unwrap_alike(tmp_path):
    """One helper: a DeepSpeed-in-trainer file loads through both."""
    from classification.checkpoint import model_tensors, read_checkpoint

    sd = InternVisionModel(tiny_vit_6b_family()).state_dict()
    path = tmp_path / "wrapped.pth"
    torch.save({"model": {"module": sd}, "epoch": 1}, path)
    from_backbone_loader = load_state_dict_file(path)
    from_classification = model_tensors(read_checkpoint(path), path)
    assert from_backbone_loader.keys() == from_classification.keys() == sd.keys()
