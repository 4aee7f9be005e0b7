"""Every command of classification/README.md and shell/README.md, run as written.

The commands are read from the READMEs' ```bash blocks, so a README edit is tested as it stands. What a
command needs decides how far it runs here (no GPU, no cluster, no published weights, no ImageNet):

* ``bash classification/train_in1k.sh ...`` runs with ``DRY_RUN=1`` (the launcher prints the srun /
  torchrun command instead of starting it), the commands meant for GPU nodes on what looks like one (an
  ``nvidia-smi`` that lists 8 GPUs: the launcher asks it), and the ``main.py`` command line it prints must
  parse and load its config; ``GPUS=0 bash classification/train_in1k.sh`` runs for real, from a folder
  without the weights: the whole chain (script, launcher, ``main.py`` run as a file) ends in the one-line
  error naming the missing weights, also written to the run's log_rank0.txt;
* ``python classification/main.py`` / ``python -m classification.main`` / ``torchrun ... main.py``: the
  command line parses and its config loads (the runs themselves are tested on tiny configs elsewhere);
* ``make <target>``: ``make -n`` shows the command it runs (the demo itself: test_classification_demo.py);
* installing and downloading are not run (no network here).
"""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from classification.main import parse_option

REPO = Path(__file__).resolve().parents[1]
READMES = ("classification/README.md", "shell/README.md")
NOT_RUN = {"pip": "installs the package", "huggingface-cli": "downloads the published weights"}
LAUNCH_VARS = ("GPUS", "GPUS_PER_NODE", "PARTITION", "JOB_NAME", "QUOTA_TYPE", "CPUS_PER_TASK", "SRUN_ARGS", "NNODES",
               "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "DRY_RUN", "CUDA_VISIBLE_DEVICES", "RANK", "WORLD_SIZE",
               "LOCAL_RANK", "DEMO_OUT")


def readme_commands(readme: str) -> list[list[str]]:
    """The commands of the ```bash blocks as argument lists (continuations joined, comments dropped); a block
    that starts with ``#!`` is an example script, not commands."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (REPO / readme).read_text(), re.S):
        if block.startswith("#!"):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                commands.append(argv)
    return commands


COMMANDS = [(readme, argv) for readme in READMES for argv in readme_commands(readme)]


def split_env(argv: list[str]) -> tuple[dict, list[str]]:
    env = {}
    while argv and re.fullmatch(r"[A-Z_]+=.*", argv[0]):
        key, value = argv[0].split("=", 1)
        env[key] = value
        argv = argv[1:]
    return env, argv


def main_py_args(argv: list[str]) -> list[str]:
    """The arguments ``main.py`` gets from a python / torchrun command line."""
    for i, arg in enumerate(argv):
        if arg.endswith("classification/main.py"):
            return argv[i + 1:]
        if arg == "-m" and argv[i + 1] == "classification.main":
            return argv[i + 2:]
    raise AssertionError(f"no classification/main.py in {shlex.join(argv)}")


def clean_env(**extra) -> dict:
    """This environment without launch variables, with this interpreter first on PATH (an activated venv)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and not k.startswith("SLURM_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return {**env, **extra}


def test_the_readmes_have_the_commands_this_file_checks():
    assert len(COMMANDS) >= 15
    programs = {split_env(argv)[1][0] for _, argv in COMMANDS}
    assert programs <= {"bash", "python", "torchrun", "make", *NOT_RUN}, programs


@pytest.mark.parametrize("readme, argv", COMMANDS, ids=[shlex.join(argv)[:70] for _, argv in COMMANDS])
def test_readme_command_runs_as_written(readme, argv, monkeypatch, tmp_path):
    env, command = split_env(argv)
    program = command[0]
    if program in NOT_RUN:
        pytest.skip(f"{readme}: `{shlex.join(argv)}` {NOT_RUN[program]}")
    monkeypatch.chdir(REPO)  # the READMEs' commands run from the repository root
    if program == "make":
        target, assignments = command[1], dict(a.split("=", 1) for a in command[2:])
        # --no-print-directory: under `make test` the nested make would add "Entering directory" lines
        out = subprocess.run(["make", "--no-print-directory", "-n", *command[1:]], env=clean_env(**env),
                             capture_output=True, text=True, check=True).stdout
        expected = f"-m classification.demo --out '{assignments.get('DEMO_OUT', 'demo_output')}'"
        assert target == "demo-classification" and expected in out.splitlines()[-1], out
        return
    if program == "bash":
        assert command[1] == "classification/train_in1k.sh", argv
        if env == {"GPUS": "0"} and len(command) == 2:
            return run_for_real_without_weights(command, tmp_path)
        run_env = clean_env(**{**env, "DRY_RUN": "1"})
        if "GPUS" not in env or "NNODES" in env:  # the README's commands for GPU nodes ("GPUS=2": CPU processes)
            run_env["PATH"] = f"{fake_nvidia_smi(tmp_path)}{os.pathsep}{run_env['PATH']}"
        out = subprocess.run(command, env=run_env, capture_output=True, text=True)
        assert out.returncode == 0, f"{shlex.join(argv)}\n{out.stderr}"
        printed = shlex.split(out.stdout)
        partition = env.get("PARTITION") or (command[2] if len(command) > 2 and command[2][0] not in "-/" and not
                                             command[2].endswith(".yaml") else None)
        if partition:  # srun on that partition, for the README's PARTITION=... and upstream's positional form
            assert printed[:3] == ["srun", "-p", partition], printed
        else:
            assert printed[1:3] == ["-m", "torch.distributed.run"], printed
        args = main_py_args(printed)
        assert args[args.index("--output") + 1] == "work_dirs"
    else:
        args = main_py_args(command)
    _, config = parse_option(args)  # every flag exists and the config loads and passes its checks
    assert config.MODEL.NAME == Path(args[args.index("--cfg") + 1]).stem


def fake_nvidia_smi(tmp_path: Path) -> Path:
    """A folder with an ``nvidia-smi`` that lists 8 GPUs, as on the cluster nodes the READMEs describe."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvidia-smi").write_text(
        "#!/usr/bin/env bash\nfor i in 0 1 2 3 4 5 6 7; do echo \"GPU $i: NVIDIA H100 80GB HBM3 (UUID: GPU-$i)\"; done\n")
    (tmp_path / "bin" / "nvidia-smi").chmod(0o755)
    return tmp_path / "bin"


def run_for_real_without_weights(command: list[str], tmp_path: Path):
    """From a folder holding the scripts but not the weights: one error line naming them, in the log too."""
    for folder in ("classification", "shell"):
        (tmp_path / folder).symlink_to(REPO / folder)
    out = subprocess.run(command, cwd=tmp_path, env=clean_env(GPUS="0"), capture_output=True, text=True, timeout=300)
    message = ("error: MODEL.INTERN_VIT_6B.PRETRAINED: ./pretrained/intern_vit_6b_224px.pth not found; see "
               "pretrained/README.md")
    assert out.returncode == 1, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert "launch: single CPU process: GPUS=0" in out.stderr
    log = (tmp_path / "work_dirs" / "intern_vit_6b_1k_224" / "log_rank0.txt").read_text()
    assert message in log and "Traceback" not in log
