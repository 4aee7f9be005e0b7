"""segmentation/: two CPU processes (torchrun, gloo): DDP training, and an evaluation whose counts are summed
over the processes -- the same metrics as one process scoring every image."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from segmentation import test as seg_test

from segmentation_helpers import TINY_LINEAR, remove_log_handlers, tiny_options, write_tiny_setup

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _own_log_handlers():
    yield
    remove_log_handlers()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_training_and_sharded_evaluation(tmp_path):
    data, pth = write_tiny_setup(tmp_path, train=16, val=7)  # 7 images: shards of 4 and 3
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    options = tiny_options(data, pth, **{"runner.max_iters": 4, "evaluation.interval": 4,
                                         "checkpoint_config.interval": 4, "data.samples_per_gpu": 2})
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(free_port()), "-m", "segmentation.train", str(TINY_LINEAR),
                           "--work-dir", str(tmp_path / "run"), "--workers", "0", *options],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "2 process(es)" in log
    distributed = json.loads((tmp_path / "run" / "last_result.json").read_text())
    assert distributed["num_images"] == 7
    single = seg_test.main([str(TINY_LINEAR), str(tmp_path / "run" / "iter_4.pth"), "--eval", "mIoU",
                            "--workers", "0", *tiny_options(data, pth)])
    for key in ("aAcc", "mIoU", "mAcc"):
        assert distributed[key] == pytest.approx(single[key], abs=1e-6), key
    assert distributed["IoU"] == pytest.approx(single["IoU"], abs=1e-6, nan_ok=True)
