"""The whole segmentation pipeline on a CPU in about a minute, with nothing downloaded:

    python -m segmentation.demo                 # from the repository root
    python -m segmentation.demo --config segmentation/configs/tiny/upernet_intern_vit_tiny_synthetic.py

writes what the tiny configs read (skipped when present): the synthetic ADE20K
(``data/ade_synthetic/ADEChallengeData2016``) and a randomly initialised tiny InternViT of the 6B recipe
saved as upstream's classification ``.pth`` (``pretrained/tiny_intern_vit_6b_recipe.pth``); then trains
with ``segmentation/train.py`` (work dir ``work_dirs/<config name>``) and evaluates the last checkpoint with
``segmentation/test.py``. The backbone is random, so the linear probe learns from colour and texture only,
yet clearly beats predicting the background everywhere.
"""
from __future__ import annotations

import argparse
from pathlib import Path

DATA = Path("data/ade_synthetic/ADEChallengeData2016")
BACKBONE = Path("pretrained/tiny_intern_vit_6b_recipe.pth")
CONFIG = Path(__file__).resolve().parent / "configs" / "tiny" / "linear_intern_vit_tiny_synthetic.py"


def prepare(data: Path = DATA, backbone: Path = BACKBONE) -> None:
    from internvl.datakit import SyntheticImages, write_intern_vit_pth
    from internvl.datakit.checkpoints import tiny_vision_config

    from .ade20k import write_synthetic_ade20k

    if not (data / "images").exists():
        write_synthetic_ade20k(data, {"training": 64, "validation": 16}, SyntheticImages(num_classes=4, image_size=112))
        print(f"wrote the synthetic ADE20K to {data}")
    if not backbone.exists():
        write_intern_vit_pth(backbone, tiny_vision_config("6b", num_hidden_layers=4))
        print(f"wrote a tiny InternViT (6B recipe, 4 layers, width 64, 56 px) to {backbone}")


def main(argv=None) -> dict:
    from . import test, train

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(CONFIG), help="a tiny config (default: linear probing)")
    args = parser.parse_args(argv)
    prepare()
    work_dir = Path("work_dirs") / Path(args.config).stem
    train.main([args.config, "--work-dir", str(work_dir)])
    last = max(work_dir.glob("iter_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
    result = test.main([args.config, str(last), "--eval", "mIoU", "--work-dir", str(work_dir)])
    print(f"{Path(args.config).name}: mIoU {result['mIoU']:.2f}, aAcc {result['aAcc']:.2f} on the synthetic "
          f"validation set (work dir {work_dir})")
    return result


if __name__ == "__main__":
    from internvl.cli import run_main
    raise SystemExit(run_main(main))
