"""The four segmentation launchers (dist_train.sh, dist_test.sh, slurm_train.sh, slurm_test.sh) dry-run
(``DRY_RUN=1``, shell/launch.sh): the exact command each starts, from a folder outside the repository, and the
arguments it hands over are ones train.py / test.py accept."""
import os
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SEG = REPO / "segmentation"
CONFIG = "segmentation/configs/intern_vit_6b/linear_probing/linear_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.py"
LAUNCH_VARS = {"GPUS", "GPUS_PER_NODE", "PARTITION", "JOB_NAME", "QUOTA_TYPE", "CPUS_PER_TASK", "SRUN_ARGS", "NNODES",
               "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "PORT", "PYTHON", "DRY_RUN", "CUDA_VISIBLE_DEVICES",
               "RANK", "WORLD_SIZE", "LOCAL_RANK"}


@pytest.fixture
def dry_run(tmp_path):
    """Run a launcher with DRY_RUN=1 (8 GPUs visible through a stand-in nvidia-smi); returns its argv."""
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    smi = fakebin / "nvidia-smi"
    smi.write_text("#!/usr/bin/env bash\nfor i in 0 1 2 3 4 5 6 7; do echo \"GPU $i: NVIDIA H100 (UUID: GPU-$i)\"; done\n")
    smi.chmod(0o755)

    def run(script: str, *args: str, **env) -> list[str]:
        environ = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
        environ.update(PATH=f"{fakebin}{os.pathsep}{environ['PATH']}", DRY_RUN="1", PYTHON="python3", **env)
        done = subprocess.run(["bash", str(SEG / script), *args], cwd=tmp_path, env=environ, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return shlex.split(done.stdout.strip())

    return run


def test_dist_train_runs_torchrun_on_the_node_s_gpus(dry_run):
    argv = dry_run("dist_train.sh", CONFIG, "8", "--work-dir", "work_dirs/x")
    assert argv == ["python3", "-m", "torch.distributed.run", "--nnodes=1", "--node_rank=0", "--nproc_per_node=8",
                    "--master_addr=127.0.0.1", "--master_port=29300", "-m", "segmentation.train", CONFIG,
                    "--launcher", "pytorch", "--deterministic", "--work-dir", "work_dirs/x"]
    from segmentation.train import parse_args
    args = parse_args(argv[argv.index("segmentation.train") + 1:])
    assert args.config == CONFIG and args.deterministic and args.work_dir == "work_dirs/x"
    assert "--master_port=29400" in dry_run("dist_train.sh", CONFIG, "8", PORT="29400")


def test_dist_test_runs_torchrun_with_the_checkpoint(dry_run):
    argv = dry_run("dist_test.sh", CONFIG, "work_dirs/x/iter_80000.pth", "4", "--eval", "mIoU")
    assert argv == ["python3", "-m", "torch.distributed.run", "--nnodes=1", "--node_rank=0", "--nproc_per_node=4",
                    "--master_addr=127.0.0.1", "--master_port=29510", "-m", "segmentation.test", CONFIG,
                    "work_dirs/x/iter_80000.pth", "--launcher", "pytorch", "--eval", "mIoU"]
    from segmentation.test import parse_args
    args = parse_args(argv[argv.index("segmentation.test") + 1:])
    assert args.checkpoint == "work_dirs/x/iter_80000.pth" and args.eval == ["mIoU"]


def test_slurm_train_runs_srun_with_upstream_s_defaults(dry_run):
    argv = dry_run("slurm_train.sh", "VC5", "seg6b", CONFIG, "--no-validate", GPUS="16")
    assert argv == ["srun", "-p", "VC5", "--job-name=seg6b", "--gres=gpu:8", "--ntasks=16", "--ntasks-per-node=8",
                    "--cpus-per-task=5", "--kill-on-bad-exit=1", "python3", "-u", "-m", "segmentation.train", CONFIG,
                    "--launcher", "slurm", "--no-validate"]
    from segmentation.train import parse_args
    assert parse_args(argv[argv.index("segmentation.train") + 1:]).no_validate


def test_slurm_test_runs_srun_with_the_checkpoint(dry_run):
    argv = dry_run("slurm_test.sh", "VC5", "eval6b", CONFIG, "ckpt.pth", "--eval", "mIoU", QUOTA_TYPE="reserved")
    assert argv == ["srun", "-p", "VC5", "--job-name=eval6b", "--gres=gpu:8", "--ntasks=8", "--ntasks-per-node=8",
                    "--cpus-per-task=5", "--kill-on-bad-exit=1", "--quotatype=reserved", "python3", "-u", "-m",
                    "segmentation.test", CONFIG, "ckpt.pth", "--launcher", "slurm", "--eval", "mIoU"]


@pytest.mark.parametrize("script, needs", [("dist_train.sh", 2), ("dist_test.sh", 3), ("slurm_train.sh", 3),
                                           ("slurm_test.sh", 4)])
def test_too_few_arguments_print_the_usage(tmp_path, script, needs):
    done = subprocess.run(["bash", str(SEG / script), *["x"] * (needs - 1)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "DRY_RUN": "1"})
    assert done.returncode == 2 and done.stderr.startswith("usage:") and not done.stdout
