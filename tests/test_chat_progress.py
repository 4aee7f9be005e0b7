"""What a run shows while it trains: each logged step once (the run's line, not also the Trainer's dict), none of
the warnings a CPU run used to repeat every time (more loader workers than CPUs, pinned memory without an
accelerator, the Trainer aligning the special tokens), and `make demo`'s progress lines (the demo at a reduced
size)."""
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from chat_finetune_helpers import base_checkpoint, finetune_argv
from chat_finetune_helpers import _drop_run_logging  # noqa: F401 (autouse fixture)
from internvl_chat import finetune
from internvl_chat.chat_data.chat_jsonl import write_synthetic_chat_data

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("disable_tqdm", ["True", "False"])  # the Trainer's PrinterCallback / ProgressCallback
def test_each_logged_step_is_printed_once_and_loader_workers_fit_the_cpus(tmp_path, capfd, disable_tqdm):
    meta = write_synthetic_chat_data(tmp_path / "data", 8, kinds=("caption",))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        finetune.main(finetune_argv(base_checkpoint(tmp_path), meta, tmp_path / "out", "--max_steps", "2",
                                    "--dataloader_num_workers", str(cpus + 2), "--disable_tqdm", disable_tqdm))
    output = "".join(capfd.readouterr())
    for step in (1, 2):
        assert len(re.findall(rf'step {step}: {{"loss": ', output)) == 1, output
    assert "{'loss'" not in output  # the Trainer's own copy of the line
    assert f"--dataloader_num_workers {cpus + 2} lowered to {cpus}" in output
    assert not [w for w in caught if "worker processes in total" in str(w.message)]
    assert not [w for w in caught if "pin_memory" in str(w.message)]  # a CPU run pins nothing
    assert "PAD/BOS/EOS tokens that differ" not in output  # the Trainer's per-run token alignment warning
    log = (tmp_path / "out" / "training_log.txt").read_text()
    assert len(re.findall(r'step 1: {"loss": ', log)) == 1


def test_the_demo_runs_at_a_reduced_size_and_shows_its_training_progress(tmp_path):
    """`make demo` (python -m internvl_chat.demo), 32 training samples for 2 epochs: 4 steps of 16, each logged."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "internvl_chat.demo", "--out", str(tmp_path / "demo"),
                           "--train-samples", "32", "--test-samples", "8", "--epochs", "2"],
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    progress = re.findall(r"^  step (\d+)/4: loss (\d+\.\d+), learning rate \S+ \(\d+ s\)$", out, re.M)
    assert [int(step) for step, _ in progress] == [1, 2, 3, 4], out
    fine_tuning = out.index("=== 4. LoRA fine-tuning")
    assert fine_tuning < out.index("  step 1/4:") < out.index("=== 5.")  # shown while it trains, not after
    assert "caption metrics on held-out synthetic images" in out and "LoRA fine-tuned" in out
    assert (tmp_path / "demo" / "work_dirs" / "merged" / "model.safetensors").is_file()
