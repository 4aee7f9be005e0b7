"""Where a Trainer run resumes (internvl.train.hf.resume_checkpoint) and when it is already finished
(finished_run): the one definition internvl_g and internvl_chat share, on hand-written checkpoint directories
with real files (safetensors weights, a torch.save optimizer state, the Trainer's state, the completion marker)."""
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from internvl.errors import CheckpointError, ConfigError, MissingFileError
from internvl.train.hf import COMPLETE_MARKER, finished_run, resume_checkpoint


def _checkpoint(output_dir: Path, step: int, complete: bool = True) -> Path:
    path = output_dir / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"weight": torch.full((8, 8), float(step))}, str(path / "model.safetensors"))
    torch.save({"state": {0: {"exp_avg": torch.ones(8, 8)}}, "param_groups": [{"lr": 1e-3}]}, path / "optimizer.pt")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    if complete:
        (path / COMPLETE_MARKER).write_text(json.dumps({"global_step": step}))
    return path


def _args(output_dir: Path, **overrides) -> SimpleNamespace:
    return SimpleNamespace(**{"output_dir": str(output_dir), "resume_from_checkpoint": None,
                              "overwrite_output_dir": False, **overrides})


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[:-64])


DAMAGES = {
    "truncated model.safetensors": (lambda c: _truncate(c / "model.safetensors"), "model.safetensors"),
    "garbage optimizer.pt": (lambda c: (c / "optimizer.pt").write_bytes(b"garbage"), "optimizer.pt"),
    "empty trainer_state.json": (lambda c: (c / "trainer_state.json").write_text(""), "trainer_state.json"),
}


def test_the_newest_complete_checkpoint_and_an_interrupted_one_deleted(tmp_path, caplog):
    _checkpoint(tmp_path, 2)
    _checkpoint(tmp_path, 4)
    partial = _checkpoint(tmp_path, 6, complete=False)  # the kill came before every process had written its part
    with caplog.at_level(logging.WARNING):
        assert resume_checkpoint(_args(tmp_path)) == str(tmp_path / "checkpoint-4")
    assert not partial.exists()
    assert [r.getMessage() for r in caplog.records if "checkpoint-6" in r.getMessage()] == [
        f"deleting {partial}: the run that wrote it stopped before it was complete"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_newest_checkpoint_is_skipped_and_named_in_one_line(tmp_path, caplog, damage):
    spoil, file = DAMAGES[damage]
    _checkpoint(tmp_path, 2)
    spoil(_checkpoint(tmp_path, 4))
    with caplog.at_level(logging.WARNING):
        assert resume_checkpoint(_args(tmp_path)) == str(tmp_path / "checkpoint-2")
    lines = [r.getMessage() for r in caplog.records if "checkpoint-4" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert lines[0].startswith(f"resuming from {tmp_path / 'checkpoint-2'} instead of the newer "
                               f"{tmp_path / 'checkpoint-4'}, which is damaged ({file}: "), lines[0]
    # kept for the user to look at, under a name the Trainer's checkpoint rotation does not count
    assert (tmp_path / "damaged-checkpoint-4").is_dir() and not (tmp_path / "checkpoint-4").exists()
    assert f"kept as {tmp_path / 'damaged-checkpoint-4'}" in lines[0]


def test_other_processes_find_the_same_checkpoint_and_touch_nothing(tmp_path, caplog):
    _checkpoint(tmp_path, 2)
    DAMAGES["garbage optimizer.pt"][0](_checkpoint(tmp_path, 4))
    partial = _checkpoint(tmp_path, 6, complete=False)
    with caplog.at_level(logging.WARNING):
        assert resume_checkpoint(_args(tmp_path), is_main=False) == str(tmp_path / "checkpoint-2")
    assert partial.exists() and (tmp_path / "checkpoint-4").exists() and not caplog.records


def test_every_complete_checkpoint_damaged_is_an_error_naming_each(tmp_path):
    DAMAGES["empty trainer_state.json"][0](_checkpoint(tmp_path, 2))
    DAMAGES["truncated model.safetensors"][0](_checkpoint(tmp_path, 4))
    with pytest.raises(CheckpointError) as err:
        resume_checkpoint(_args(tmp_path))
    message = str(err.value)
    assert "none of the 2 checkpoints" in message and "\n" not in message
    assert f"{tmp_path / 'checkpoint-4'}: model.safetensors: not a complete safetensors file" in message
    assert f"{tmp_path / 'checkpoint-2'}: trainer_state.json: not valid JSON" in message


def test_an_output_dir_with_files_and_no_checkpoint(tmp_path):
    assert resume_checkpoint(_args(tmp_path / "new")) is None
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds files and no complete checkpoint"):
        resume_checkpoint(_args(tmp_path))
    assert resume_checkpoint(_args(tmp_path, overwrite_output_dir=True)) is None


def test_an_explicit_checkpoint_must_exist(tmp_path):
    with pytest.raises(MissingFileError, match="--resume_from_checkpoint .*checkpoint-9: no such directory"):
        resume_checkpoint(_args(tmp_path, resume_from_checkpoint=str(tmp_path / "checkpoint-9")))
    _checkpoint(tmp_path, 2)
    assert resume_checkpoint(_args(tmp_path, resume_from_checkpoint=str(tmp_path / "checkpoint-2"))) == str(
        tmp_path / "checkpoint-2")


def _trainer(output_dir: Path, max_steps: int) -> SimpleNamespace:
    return SimpleNamespace(args=SimpleNamespace(output_dir=str(output_dir), max_steps=max_steps))


@pytest.mark.parametrize("state, max_steps, finished", [
    ({"global_step": 4}, 4, 4),        # the run is complete: nothing to train, its results are kept
    ({"global_step": 4}, 6, None),     # the same output, a longer run: it resumes
    ("", 4, None),                     # a state that cannot be read is no finished run
    ({"log_history": []}, 4, None),
    (None, 4, None),                   # no final state: the run never finished
])
def test_finished_run(tmp_path, caplog, state, max_steps, finished):
    if state is not None:
        (tmp_path / "trainer_state.json").write_text(state if isinstance(state, str) else json.dumps(state))
    with caplog.at_level(logging.INFO, logger="internvl.train.hf"):
        assert finished_run(_trainer(tmp_path, max_steps)) == finished
    said = [r.getMessage() for r in caplog.records if "already holds this run" in r.getMessage()]
    assert said == ([f"{tmp_path} already holds this run, complete at step 4: nothing to do (its results are kept; "
                     "to train again, choose a new --output_dir)"] if finished else [])


def test_a_second_run_on_the_same_output_dir_stops_and_leaves_the_first_runs_checkpoint(tmp_path):
    """Mutation killed: no lock (the second run would take the first run's checkpoint in progress for an
    interrupted one and delete it)."""
    import subprocess
    import sys

    _checkpoint(tmp_path, 2)
    in_progress = _checkpoint(tmp_path, 4, complete=False)  # the first run is writing it
    first = subprocess.Popen([sys.executable, "-c", "import sys, time; from internvl.train.hf import hold_output_dir; "
                              f"hold_output_dir({str(tmp_path)!r}); print('held', flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"--output_dir .* is in use by another run \(process {first.pid}\)"):
            resume_checkpoint(_args(tmp_path))
        assert in_progress.is_dir()
    finally:
        first.kill()
        first.wait()
    # the first run gone (killed: the lock goes with it), the same command resumes
    assert resume_checkpoint(_args(tmp_path)) == str(tmp_path / "checkpoint-2") and not in_progress.exists()
