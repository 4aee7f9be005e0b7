"""Two CPU processes (torchrun, gloo): DDP training on a feature cache sharded over the processes, and a
distributed evaluation that counts each image once -- the same numbers as one process scoring everything."""
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import torch
from helpers import tiny_vit_6b_family

from classification.dataset import write_imagenet_lists
from classification.main import run
from internvl.datakit import SyntheticImages, write_intern_vit_pth

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_training_and_evaluation_count_every_image_once(tmp_path):
    kit = SyntheticImages(num_classes=8, image_size=56, seed=2)
    data = write_imagenet_lists(tmp_path / "data", {"train": 64, "val": 45}, kit)  # 45: shards of 23 and 22
    backbone = write_intern_vit_pth(tmp_path / "backbone.pth", tiny_vit_6b_family(), seed=2)
    opts = ["DATA.DATA_PATH", str(data), "DATA.CLASS_NAMES", str(data / "classes.txt"), "MODEL.NUM_CLASSES", "8", "DATA.IMG_SIZE", "56", "DATA.BATCH_SIZE", "16",
            "MODEL.INTERN_VIT_6B.PRETRAINED", str(backbone), "MODEL.INTERN_VIT_6B.PRETRAIN_SIZE", "56",
            "MODEL.INTERN_VIT_6B.EMBED_DIM", "64", "MODEL.INTERN_VIT_6B.NUM_HEADS", "4",
            "MODEL.INTERN_VIT_6B.DEPTH", "3", "MODEL.INTERN_VIT_6B.INIT_VALUES", "0.5", "TRAIN.EPOCHS", "2"]
    cfg = str(REPO / "classification" / "configs" / "tiny" / "intern_vit_tiny_synthetic.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(free_port()), "-m", "classification.main", "--cfg", cfg,
                           "--output", str(tmp_path / "runs"), "--opts", *opts],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "intern_vit_tiny_synthetic"
    log = (run_dir / "log_rank0.txt").read_text()
    assert "2 process(es) on cpu" in log and "[rank1]" not in log
    assert "feature cache: 64 x 128 features written" in log
    assert re.search(r"Train: \[1/2\]\[1/2\].*images/s", log)  # 64 images / 2 processes / batch 16
    acc1, acc5 = map(float, re.findall(r"\[Epoch:1\] \* Acc@1 (\S+) Acc@5 (\S+)", log)[-1])
    assert "Accuracy of the network on the 45 test images" in log

    # One process, the same head: the same numbers over the same 45 images.
    torch.set_num_threads(1)
    single = run(["--cfg", cfg, "--eval", "--resume", str(run_dir / "ckpt_epoch_1.pth"),
                  "--output", str(tmp_path / "single"), "--opts", *opts])
    assert single["num_images"] == 45
    assert (round(single["acc1"], 3), round(single["acc5"], 3)) == (acc1, acc5)
