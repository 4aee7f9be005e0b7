"""shell/launch.sh: mode choice, the exact srun / torchrun command lines, and real runs (single process, fake srun);
every runnable script of the repository dry-runs (DRY_RUN=1) without a GPU and on an 8-GPU node."""
import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "shell" / "launch.sh"
PY = sys.executable
LAUNCH_VARS = {"GPUS", "GPUS_PER_NODE", "PARTITION", "JOB_NAME", "QUOTA_TYPE", "CPUS_PER_TASK", "SRUN_ARGS", "NNODES",
               "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "PYTHON", "DRY_RUN", "CUDA_VISIBLE_DEVICES", "PYTHONPATH",
               "RANK", "WORLD_SIZE", "LOCAL_RANK"}

PROGRAM = """
import json, os, sys
print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "pythonpath": os.environ["PYTHONPATH"].split(os.pathsep),
                  "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES")}))
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
"""

FAKE_NVIDIA_SMI = """#!/usr/bin/env bash
for i in 0 1 2 3; do echo "GPU $i: NVIDIA H100 80GB HBM3 (UUID: GPU-$i)"; done
"""

# A stand-in for SLURM's srun: records its arguments, then starts --ntasks copies of the command with the
# variables srun gives each task.
FAKE_SRUN = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$SRUN_LOG"
ntasks=1
while [[ $1 == -* ]]; do
    case $1 in
        -p) shift ;;
        --ntasks=*) ntasks=${1#--ntasks=} ;;
    esac
    shift
done
pids=()
for ((i = 0; i < ntasks; i++)); do
    SLURM_PROCID=$i SLURM_NTASKS=$ntasks SLURM_LOCALID=$i SLURM_NODELIST=localhost "$@" &
    pids+=($!)
done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
exit $rc
"""


@pytest.fixture
def bash(tmp_path):
    """Run a bash snippet after `set -euo pipefail; source shell/launch.sh`, from a directory outside the repo."""
    (tmp_path / "prog.py").write_text(PROGRAM)
    fakebin = tmp_path / "bin"
    fakebin.mkdir()

    def run(snippet: str, fakes: tuple = (), **env):
        for name in fakes:
            (fakebin / name).write_text({"nvidia-smi": FAKE_NVIDIA_SMI, "srun": FAKE_SRUN}[name])
            (fakebin / name).chmod(0o755)
        base = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and not k.startswith("SLURM_")}
        base.update(PYTHON=PY, PATH=f"{fakebin}{os.pathsep}{os.environ['PATH']}", SRUN_LOG=str(tmp_path / "srun.log"))
        script = f"set -euo pipefail\nsource {shlex.quote(str(LAUNCH))}\n{snippet}\n"
        return subprocess.run(["bash", "-c", script], cwd=tmp_path, env={**base, **env}, capture_output=True,
                              text=True, timeout=120)

    return run


# Joins the process group the launcher set up, sums the ranks, prints one JSON record per process.
DDP_PROGRAM = (
    "import json, sys, torch\n"
    "from internvl.train.distributed import all_reduce_sum, cleanup_distributed, init_distributed\n"
    "info = init_distributed()\n"
    "total = all_reduce_sum(torch.tensor([float(info.rank + 1)])).item()\n"
    # One write per record: the processes share a pipe, and print() under -u writes the newline separately.
    "sys.stdout.write(json.dumps({'rank': info.rank, 'world': info.world_size, 'backend': info.backend,"
    " 'total': total}) + '\\n')\n"
    "cleanup_distributed()\n")


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_gpus0_runs_one_cpu_process_and_returns_its_status(bash, tmp_path):
    result = bash('EXIT_CODE=3 launch prog.py a "b c" && rc=0 || rc=$?\necho "after rc=$rc"', GPUS="0")
    out, after = result.stdout.strip().splitlines()
    assert json.loads(out) == {"argv": ["a", "b c"], "cwd": str(tmp_path), "pythonpath": [str(REPO)],
                               "cuda_visible": ""}
    assert after == "after rc=3"  # the sourcing shell goes on, even under set -e
    assert result.stderr.strip() == "launch: single CPU process: GPUS=0"


def test_no_visible_gpu_and_one_process_runs_plain_python(bash):
    for gpus in ({}, {"GPUS": "1"}):
        result = bash("launch prog.py", fakes=("nvidia-smi",), CUDA_VISIBLE_DEVICES="", PYTHONPATH="/elsewhere", **gpus)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["pythonpath"] == [str(REPO), "/elsewhere"]
        assert "single CPU process: no CUDA GPU visible" in result.stderr


def test_no_visible_gpu_with_gpus_2_runs_two_gloo_processes(bash, tmp_path):
    """GPUS=2 on a laptop: torchrun starts two CPU processes that form a gloo group."""
    (tmp_path / "ddp.py").write_text(DDP_PROGRAM)
    result = bash("launch ddp.py", fakes=("nvidia-smi",), GPUS="2", CUDA_VISIBLE_DEVICES="", MASTER_PORT=free_port())
    assert result.returncode == 0, result.stderr
    records = sorted((json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")),
                     key=lambda r: r["rank"])
    assert records == [{"rank": r, "world": 2, "backend": "gloo", "total": 3.0} for r in (0, 1)]
    assert "torchrun on the CPU: 2 processes (gloo)" in result.stderr
    refused = bash("launch ddp.py && rc=0 || rc=$?\necho rc=$rc", fakes=("nvidia-smi",), GPUS="4", NNODES="2",
                   CUDA_VISIBLE_DEVICES="")
    assert refused.stdout.strip() == "rc=2" and "multi-node runs need GPUs" in refused.stderr


def test_dry_run_srun_command(bash, tmp_path):
    result = bash("launch prog.py --cfg x.yaml", DRY_RUN="1", PARTITION="p1", GPUS="16", GPUS_PER_NODE="8",
                  QUOTA_TYPE="reserved", JOB_NAME="probe", SRUN_ARGS="-x bad-node --time=60")
    assert result.returncode == 0, result.stderr
    assert shlex.split(result.stdout) == [
        "srun", "-p", "p1", "--job-name=probe", "--gres=gpu:8", "--ntasks=16", "--ntasks-per-node=8",
        "--cpus-per-task=10", "--kill-on-bad-exit=1", "--quotatype=reserved", "-x", "bad-node", "--time=60",
        PY, "-u", "prog.py", "--cfg", "x.yaml"]
    assert "launch: srun: PARTITION=p1, 16 tasks, 8 per node" in result.stderr


def test_dry_run_srun_defaults(bash):
    result = bash("launch -m internvl_g.train", DRY_RUN="1", PARTITION="p1", GPUS="4", CPUS_PER_TASK="6")
    argv = shlex.split(result.stdout)
    assert "--gres=gpu:4" in argv and "--ntasks-per-node=4" in argv and "--cpus-per-task=6" in argv
    assert "--job-name=internvl" in argv and not any(a.startswith("--quotatype") for a in argv)
    assert argv[-4:] == [PY, "-u", "-m", "internvl_g.train"]


def test_dry_run_torchrun_command(bash):
    result = bash("launch prog.py a", fakes=("nvidia-smi",), DRY_RUN="1", GPUS="4", GPUS_PER_NODE="4")
    assert result.returncode == 0, result.stderr
    assert shlex.split(result.stdout) == [
        PY, "-m", "torch.distributed.run", "--nnodes=1", "--node_rank=0", "--nproc_per_node=4",
        "--master_addr=127.0.0.1", "--master_port=29500", "prog.py", "a"]
    assert "launch: torchrun: 4 GPU(s) visible" in result.stderr


def test_torchrun_uses_visible_gpus_and_multi_node_settings(bash):
    visible = bash("launch prog.py", fakes=("nvidia-smi",), DRY_RUN="1", CUDA_VISIBLE_DEVICES="2,3")
    assert "--nproc_per_node=2" in shlex.split(visible.stdout)
    multi = bash("launch prog.py", fakes=("nvidia-smi",), DRY_RUN="1", GPUS="16", NNODES="2", NODE_RANK="1",
                 MASTER_ADDR="10.0.0.1", MASTER_PORT="29900")
    argv = shlex.split(multi.stdout)
    assert {"--nnodes=2", "--node_rank=1", "--nproc_per_node=8", "--master_addr=10.0.0.1",
            "--master_port=29900"} <= set(argv)


@pytest.mark.parametrize("env, message", [
    (dict(GPUS="four"), "GPUS=four must be an integer >= 0"),
    (dict(GPUS="16", NNODES="2"), "NNODES=2 needs MASTER_ADDR"),
    (dict(GPUS="12", GPUS_PER_NODE="8"), "GPUS=12 is not NNODES=1 x GPUS_PER_NODE=8"),
    (dict(PARTITION="p1", GPUS="0"), "GPUS=0 must be an integer >= 1"),
    (dict(MASTER_PORT="http"), "MASTER_PORT=http must be an integer >= 1"),
])
def test_errors_name_the_variable_and_do_not_exit_the_shell(bash, env, message):
    result = bash('launch prog.py && rc=0 || rc=$?\necho "after rc=$rc"', fakes=("nvidia-smi",), **env)
    assert result.stdout.strip() == "after rc=2"
    assert f"launch: error: {message}" in result.stderr


def test_fake_srun_runs_the_program_as_slurm_tasks(bash, tmp_path):
    """The srun path end to end: 2 tasks, each joins a gloo group from SLURM's variables alone."""
    (tmp_path / "ddp.py").write_text(DDP_PROGRAM)
    port = free_port()
    result = bash("launch ddp.py", fakes=("srun",), PARTITION="p1", GPUS="2", QUOTA_TYPE="spot", MASTER_PORT=port,
                  CUDA_VISIBLE_DEVICES="")
    assert result.returncode == 0, result.stderr
    records = sorted((json.loads(line) for line in result.stdout.splitlines()), key=lambda r: r["rank"])
    assert records == [{"rank": r, "world": 2, "backend": "gloo", "total": 3.0} for r in (0, 1)]
    srun_args = (tmp_path / "srun.log").read_text().splitlines()
    assert srun_args[:3] == ["-p", "p1", "--job-name=internvl"] and "--quotatype=spot" in srun_args
    assert srun_args[-3:] == [PY, "-u", "ddp.py"]


# ------------------------------------------------------------------------ every launching script, dry-run
# Each runnable script of the repository (a #! line; the sourced libraries, shell/launch.sh and the common.sh
# files, have none), by pattern: its arguments, the program it launches, the variables of an 8-GPU node (the
# full internvl_g fine-tunes are upstream's 32-GPU srun jobs). The families' own tests check their flags
# (test_chat_shell.py, test_internvl_g_finetune.py, ...); this one that none is left out or fails to launch.
SCRIPT_DRY_RUNS = {
    "internvl_chat/shell/*/2nd_finetune/*.sh": ((), "-m internvl_chat.finetune", {}),
    "internvl_g/shell/finetune/*.sh": ((), "-m internvl_g.finetune", {"PARTITION": "VC2"}),
    "internvl_g/shell/*_finetune/*.sh": ((), "-m internvl_g.finetune", {}),
    "internvl_chat/evaluate.sh": (("ckpt", "caption"), "-m internvl_chat.evaluate_caption", {}),
    "internvl_g/evaluate.sh": (("ckpt", "caption"), "-m internvl_g.evaluate_caption", {}),
    "clip_benchmark/test_*.sh": ((), "clip_benchmark/cli.py eval", {}),
    "segmentation/dist_train.sh": (("cfg.py", "2"), "-m segmentation.train cfg.py", {}),
    "segmentation/dist_test.sh": (("cfg.py", "ckpt.pth", "2"), "-m segmentation.test cfg.py ckpt.pth", {}),
    "segmentation/slurm_train.sh": (("p1", "job", "cfg.py"), "-m segmentation.train cfg.py", {}),
    "segmentation/slurm_test.sh": (("p1", "job", "cfg.py", "ckpt.pth"), "-m segmentation.test cfg.py ckpt.pth", {}),
    "classification/train_in1k.sh": ((), "classification/main.py --cfg", {}),
}
SHELL_SCRIPTS = sorted(str(p.relative_to(REPO)) for p in REPO.glob("*/**/*.sh")
                       if ".venv" not in p.parts and p.read_text().startswith("#!"))


def _patterns_of(script: str) -> list:
    return [pattern for pattern in SCRIPT_DRY_RUNS if Path(script).match(pattern)
            and len(Path(script).parts) == len(Path(pattern).parts)]


def test_every_launching_script_has_a_dry_run():
    assert len(SHELL_SCRIPTS) >= 33 and all(len(_patterns_of(s)) == 1 for s in SHELL_SCRIPTS), \
        [(s, _patterns_of(s)) for s in SHELL_SCRIPTS if len(_patterns_of(s)) != 1]
    assert all(any(Path(s).match(p) for s in SHELL_SCRIPTS) for p in SCRIPT_DRY_RUNS)  # no stale pattern


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_every_script_dry_runs_without_a_gpu_and_on_eight(script, tmp_path):
    """DRY_RUN=1 from a scratch directory: without a GPU (any GPUS too) the launch is on the CPU, without DeepSpeed;
    on an 8-GPU node (a stand-in nvidia-smi) it is torchrun or srun."""
    args, program, gpu_env = SCRIPT_DRY_RUNS[_patterns_of(script)[0]]
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    base = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS | {"BATCH_SIZE", "OUTPUT_DIR", "MODEL"}
            and not k.startswith("SLURM_")}
    base.update(PATH=f"{fakebin}{os.pathsep}/usr/bin:/bin", DRY_RUN="1", PYTHON="python")

    def dry_run(**env):
        done = subprocess.run(["bash", str(REPO / script), *args], env={**base, **env}, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (script, env, done.stderr)
        launches = [line for line in done.stdout.splitlines() if program in line]
        assert launches, (script, env, done.stdout)
        return launches

    slurm = script.startswith("segmentation/slurm_")
    for gpus in ({}, {"GPUS": "2"}):  # no GPU visible
        for line in dry_run(CUDA_VISIBLE_DEVICES="", **gpus):
            assert line.startswith("srun -p p1 " if slurm else "python ") and "--deepspeed" not in line, line
            if "finetune" in program:
                assert "--use_cpu True" in line, line
    (fakebin / "nvidia-smi").write_text(FAKE_NVIDIA_SMI.replace("0 1 2 3", "0 1 2 3 4 5 6 7"))
    (fakebin / "nvidia-smi").chmod(0o755)
    for line in dry_run(**gpu_env):
        assert line.startswith(("srun -p ", "python -m torch.distributed.run ", "python -u ")), line
        assert "--use_cpu True" not in line, line
