"""internvl.train.distributed, internvl.train.checkpoints, internvl.train.precision: launcher detection, real 2-process gloo groups, logging, seeding, checkpoints, dtypes."""
import contextlib
import json
import logging
import os
import random
import re
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from internvl.train.distributed import DistInfo, LaunchEnv, all_gather_object, all_reduce_sum, barrier, cleanup_distributed, detect_launch_env, init_distributed, parse_slurm_nodelist, seed_everything, setup_logging
from internvl.fileio import atomic_save, load_checkpoint
from internvl.train.precision import autocast, default_dtype_for, resolve_dtype
from internvl.train.checkpoints import latest_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict:
    """The test process's environment without any launcher variables, GPUs hidden."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and not k.startswith("SLURM_")}
    env.update(CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
    return env


# --------------------------------------------------------------------------- SLURM node lists
@pytest.mark.parametrize("nodelist, hosts", [
    ("host", ["host"]),
    ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
    ("gpu-a[1-2],gpu-b5", ["gpu-a1", "gpu-a2", "gpu-b5"]),
    ("node[8-10]", ["node8", "node9", "node10"]),
    ("node[098-101]", ["node098", "node099", "node100", "node101"]),
    ("a,b[3],c", ["a", "b3", "c"]),
    ("rack[1-2]-node[01-02]", ["rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02"]),
    ("SH-IDC1-10-140-[0-1]-[7,9]", ["SH-IDC1-10-140-0-7", "SH-IDC1-10-140-0-9",
                                    "SH-IDC1-10-140-1-7", "SH-IDC1-10-140-1-9"]),
])
def test_parse_slurm_nodelist(nodelist, hosts):
    assert parse_slurm_nodelist(nodelist) == hosts


@pytest.mark.parametrize("bad", ["", "node[01", "node]1", "node[]", "a,,b", "node[3-1]", "node[x]", "n[1-2]]"])
def test_parse_slurm_nodelist_rejects_malformed(bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        parse_slurm_nodelist(bad)


# --------------------------------------------------------------------------- launcher detection
TORCHRUN = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3", "MASTER_ADDR": "10.1.2.3", "MASTER_PORT": "1234"}
SLURM = {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "SLURM_NODELIST": "node[07-08]"}


def test_detect_single_process():
    assert detect_launch_env({"PATH": "/bin"}) == LaunchEnv("single", 0, 1, 0, None, None)


def test_detect_torchrun():
    assert detect_launch_env(TORCHRUN) == LaunchEnv("torchrun", 3, 8, 3, "10.1.2.3", 1234)


def test_detect_torchrun_wins_inside_a_slurm_step():
    """``srun torchrun ...``: torchrun's per-process variables, not the per-node SLURM task."""
    assert detect_launch_env({**SLURM, **TORCHRUN}).launcher == "torchrun"


def test_detect_slurm_first_host_and_default_port():
    assert detect_launch_env(SLURM) == LaunchEnv("slurm", 5, 16, 1, "node07", 29500)


def test_detect_slurm_job_nodelist_and_overrides():
    env = {k: v for k, v in SLURM.items() if k != "SLURM_NODELIST"}
    assert detect_launch_env({**env, "SLURM_JOB_NODELIST": "gpu[3-4]"}).master_addr == "gpu3"
    overridden = detect_launch_env({**SLURM, "MASTER_ADDR": "10.0.0.9", "MASTER_PORT": "4321"})
    assert (overridden.master_addr, overridden.master_port) == ("10.0.0.9", 4321)


@pytest.mark.parametrize("environ, message", [
    ({**TORCHRUN, "WORLD_SIZE": "eight"}, "WORLD_SIZE='eight' is not an integer"),
    ({**TORCHRUN, "WORLD_SIZE": "0"}, "WORLD_SIZE=0 must be >= 1"),
    ({k: v for k, v in TORCHRUN.items() if k != "LOCAL_RANK"}, "LOCAL_RANK is not set"),
    ({k: v for k, v in TORCHRUN.items() if k != "MASTER_ADDR"}, "MASTER_ADDR is not set"),
    ({**TORCHRUN, "RANK": "8"}, "RANK=8 is not below WORLD_SIZE=8"),
    ({**SLURM, "SLURM_PROCID": "16"}, "SLURM_PROCID=16 is not below SLURM_NTASKS=16"),
    ({**SLURM, "SLURM_LOCALID": "-1"}, "SLURM_LOCALID=-1 must be >= 0"),
    ({**SLURM, "MASTER_PORT": "http"}, "MASTER_PORT='http' is not an integer"),
    ({k: v for k, v in SLURM.items() if k != "SLURM_NODELIST"}, "SLURM_NODELIST"),
])
def test_detect_bad_environment_names_the_variable(environ, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        detect_launch_env(environ)


@pytest.fixture
def no_launcher_env(monkeypatch):
    for name in list(os.environ):
        if name in LAUNCH_VARS or name.startswith("SLURM_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_init_single_process_collectives_are_identity(no_launcher_env):
    info = init_distributed()
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert info == DistInfo(0, 1, 0, device, None)
    assert info.is_main and not info.distributed
    t = torch.tensor([1.0, 2.0])
    assert all_reduce_sum(t) is t and t.tolist() == [1.0, 2.0]
    assert all_gather_object({"a": 1}) == [{"a": 1}]
    barrier()


def test_init_torchrun_world_size_one_creates_a_group(no_launcher_env):
    for name, value in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                            MASTER_PORT=str(free_port())).items():
        no_launcher_env.setenv(name, value)
    try:
        info = init_distributed(backend="gloo")
        assert (info.rank, info.world_size, info.backend, info.distributed, info.is_main) == (0, 1, "gloo", True, True)
        assert all_reduce_sum(torch.tensor([2.0])).item() == 2.0
        assert all_gather_object("x") == ["x"]
        assert init_distributed().backend == "gloo"  # an existing group is reused, not re-created
    finally:
        cleanup_distributed()
    assert not torch.distributed.is_initialized()


def test_init_distributed_rejects_bad_env_before_anything(no_launcher_env):
    no_launcher_env.setenv("SLURM_PROCID", "0")
    no_launcher_env.setenv("SLURM_NTASKS", "two")
    with pytest.raises(ValueError, match="SLURM_NTASKS='two'"):
        init_distributed()


# --------------------------------------------------------------------------- real 2-process runs
WORKER = """
import json, os, sys, torch
from internvl.train.distributed import all_gather_object, all_reduce_sum, barrier, cleanup_distributed, init_distributed
info = init_distributed()
total = all_reduce_sum(torch.tensor([float(info.rank + 1), 10.0]))
gathered = all_gather_object({"rank": info.rank, "pid": os.getpid()})
barrier()
print(json.dumps({"rank": info.rank, "world_size": info.world_size, "local_rank": info.local_rank,
                  "backend": info.backend, "device": str(info.device), "total": total.tolist(),
                  "gathered_ranks": [g["rank"] for g in gathered], "pids": [g["pid"] for g in gathered],
                  "env": {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}}))
cleanup_distributed()
"""


def run_two_processes(tmp_path, per_rank_env) -> list:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [subprocess.Popen([sys.executable, str(script)], env={**clean_env(), **per_rank_env(rank)}, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            proc.kill()
    return sorted(results, key=lambda r: r["rank"])


def check_two_ranks(results):
    assert [r["rank"] for r in results] == [0, 1]
    for r in results:
        assert (r["world_size"], r["backend"], r["device"]) == (2, "gloo", "cpu")
        assert r["total"] == [3.0, 20.0]  # (0 + 1) + (1 + 1), 10 + 10
        assert r["gathered_ranks"] == [0, 1]
    assert results[0]["pids"] == results[1]["pids"] and len(set(results[0]["pids"])) == 2


def test_two_process_gloo_torchrun_env(tmp_path):
    port = str(free_port())
    results = run_two_processes(tmp_path, lambda rank: dict(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                                                            MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
    check_two_ranks(results)
    assert [r["local_rank"] for r in results] == [0, 1]


def test_two_process_gloo_slurm_env_only(tmp_path):
    """Only SLURM's variables (plus the port): the rendezvous host comes from the node list."""
    port = str(free_port())
    results = run_two_processes(tmp_path, lambda rank: dict(SLURM_PROCID=str(rank), SLURM_NTASKS="2",
                                                            SLURM_LOCALID=str(rank), SLURM_NODELIST="localhost",
                                                            MASTER_PORT=port))
    check_two_ranks(results)
    for r in results:  # exported for env:// and for libraries that read torch's variables
        assert r["env"] == {"RANK": str(r["rank"]), "WORLD_SIZE": "2", "LOCAL_RANK": str(r["rank"]),
                            "MASTER_ADDR": "localhost"}


# --------------------------------------------------------------------------- logging and seeding
@pytest.fixture
def root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level


def ours(root):
    return [h for h in root.handlers if getattr(h, "_internvl_runtime", False)]


def test_setup_logging_is_idempotent_and_writes_rank0_file(root_logger, tmp_path, capsys):
    log_file = tmp_path / "out" / "log_rank0.txt"
    setup_logging(0, log_file=log_file)
    setup_logging(0, log_file=log_file)
    assert len(ours(root_logger)) == 2  # one stream, one file: not doubled
    logging.getLogger("demo").info("hello")
    for handler in ours(root_logger):
        handler.flush()
    lines = log_file.read_text().splitlines()
    assert len(lines) == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[rank0\] INFO demo: hello", lines[0])
    assert capsys.readouterr().err.count("hello") == 1


def test_setup_logging_other_ranks_warn_only_and_write_no_file(root_logger, tmp_path, capsys):
    setup_logging(1, log_file=tmp_path / "log_rank0.txt")
    logging.getLogger("demo").info("hidden")
    logging.getLogger("demo").warning("shown")
    err = capsys.readouterr().err
    assert "hidden" not in err and "[rank1] WARNING demo: shown" in err
    assert not (tmp_path / "log_rank0.txt").exists()


def test_seed_everything_reproducible_and_rank_dependent():
    def draw():
        return random.random(), float(np.random.rand()), torch.rand(3).tolist()

    assert seed_everything(42, rank=3) == 45
    first = draw()
    seed_everything(42, rank=3)
    assert draw() == first
    seed_everything(42, rank=0)
    assert draw() != first


# --------------------------------------------------------------------------- checkpoints
class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def test_atomic_save_failure_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "ckpt" / "model.pth"  # parent created on demand
    atomic_save({"weight": torch.ones(2)}, path)
    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_save({"weight": torch.zeros(2), "bad": Unpicklable()}, path)
    assert os.listdir(path.parent) == ["model.pth"]
    assert torch.equal(load_checkpoint(path)["weight"], torch.ones(2))


def test_latest_checkpoint_by_number_not_mtime_or_name(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    assert latest_checkpoint(tmp_path) is None
    for name in ("checkpoint-10.pth", "checkpoint-9.pth", "checkpoint-best.pth", ".checkpoint-11.pth.x1.tmp"):
        (tmp_path / name).write_bytes(b"")
    os.utime(tmp_path / "checkpoint-10.pth", (1, 1))  # older mtime than checkpoint-9
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-10.pth"
    (tmp_path / "step_200.bin").write_bytes(b"")
    assert latest_checkpoint(tmp_path, pattern="step_*.bin") == tmp_path / "step_200.bin"
    with pytest.raises(ValueError, match="exactly one"):
        latest_checkpoint(tmp_path, pattern="checkpoint.pth")


def test_save_checkpoint_keep_last_prunes_by_number(tmp_path):
    for epoch in (8, 9, 10):
        save_checkpoint({"epoch": epoch}, tmp_path, f"checkpoint-{epoch}.pth", keep_last=2)
    (tmp_path / "other-1.pth").write_bytes(b"")  # a different pattern is never touched
    save_checkpoint({"epoch": 11}, tmp_path, "checkpoint-11.pth", keep_last=2)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-10.pth", "checkpoint-11.pth", "other-1.pth"]
    assert load_checkpoint(latest_checkpoint(tmp_path)) == {"epoch": 11}
    with pytest.raises(ValueError, match="'best.pth'"):
        save_checkpoint({}, tmp_path, "best.pth", keep_last=1)


def test_load_checkpoint_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.pth"))):
        load_checkpoint(tmp_path / "nope.pth")
    atomic_save(torch.ones(1), tmp_path / "tensor.pth")
    with pytest.raises(TypeError, match="tensor.pth holds a Tensor"):
        load_checkpoint(tmp_path / "tensor.pth")


def test_resume_state_round_trips(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3, "rng": torch.get_rng_state()}
    loaded = load_checkpoint(save_checkpoint(state, tmp_path, "checkpoint-3.pth"))
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["weight"], model.weight.detach())
    assert torch.equal(loaded["optimizer"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


# --------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("name, dtype", [
    ("fp32", torch.float32), ("float32", torch.float32), ("float", torch.float32), ("FP32", torch.float32),
    ("fp16", torch.float16), ("float16", torch.float16), ("half", torch.float16),
    ("bf16", torch.bfloat16), ("bfloat16", torch.bfloat16), (" BF16 ", torch.bfloat16),
    (torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32),
])
def test_resolve_dtype(name, dtype):
    assert resolve_dtype(name) is dtype


def test_resolve_dtype_auto_follows_the_device():
    assert resolve_dtype("auto", "cpu") is torch.float32
    assert resolve_dtype("Auto", torch.device("cpu")) is torch.float32
    with pytest.raises(ValueError, match="needs the device"):
        resolve_dtype("auto")


@pytest.mark.parametrize("bad", ["int8", "fp8", torch.int64])
def test_resolve_dtype_rejects_and_lists_accepted(bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))) as err:
        resolve_dtype(bad)
    assert "bf16" in str(err.value) and "fp32" in str(err.value)


def test_autocast_cpu():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    assert isinstance(autocast("cpu", torch.float32), contextlib.nullcontext)
    assert isinstance(autocast("cpu", None), contextlib.nullcontext)
    with autocast("cpu", torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16
    with pytest.warns(UserWarning, match="float16 autocast on cpu"):
        ctx = autocast(torch.device("cpu"), torch.float16)
    with ctx:
        assert (a @ b).dtype == torch.float32


def test_autocast_cuda_context_and_default_dtype():
    with warnings.catch_warnings():  # torch warns when CUDA is absent
        warnings.simplefilter("ignore")
        ctx = autocast("cuda:0", torch.float16)
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda" and ctx.fast_dtype == torch.float16
    assert default_dtype_for("cpu") is torch.float32


@pytest.mark.parametrize("half, trains, device, elsewhere, weights, compute", [
    (None, True, "cuda", False, torch.float32, None),  # no half precision asked for
    (torch.float32, False, "cuda", False, torch.float32, None),
    (torch.bfloat16, True, "cpu", False, torch.float32, None),  # CPUs run fp32
    (torch.bfloat16, False, "cuda", False, torch.bfloat16, None),  # frozen: stored in bf16 (ToBFloat16Hook)
    (torch.float16, True, "cuda", False, torch.float32, torch.float16),  # trained: fp32 weights, autocast
    (torch.bfloat16, True, None, True, torch.bfloat16, None),  # DeepSpeed keeps the fp32 masters
    (torch.bfloat16, True, None, False, torch.float32, torch.bfloat16),
])
def test_the_one_precision_policy(half, trains, device, elsewhere, weights, compute):
    from internvl.train.precision import precision_policy
    policy = precision_policy(half, trains=trains, device=device, master_weights_elsewhere=elsewhere)
    assert (policy.weights, policy.autocast) == (weights, compute)
    assert policy.loss_scaling == (compute == torch.float16)
