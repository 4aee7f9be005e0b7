"""Tiny checkpoints and synthetic datasets in upstream's clip_benchmark layout, to try every command on a CPU::

    python -m internvl_clip_benchmark.demo demo_output/clip_benchmark
    cd demo_output/clip_benchmark
    python -m internvl_clip_benchmark eval --model_type internvl --language en cn --task zeroshot_retrieval \\
        --dataset flickr30k --dataset_root ./data/flickr30k --model internvl_c_retrieval \\
        --pretrained ./pretrained/internvl_c_13b_224px.pth --output result.json

Writes (random weights: the numbers are chance-level, every code path runs as with the real ones)::

    pretrained/InternVL-14B-224px/          a tiny InternVL-C/G HF directory (config, safetensors, LLaMA tokenizer)
    pretrained/internvl_c_13b_224px.pth     its InternVL-C weights in the original .pth layout
    data/imagenet-1k/                       torchvision ImageNet val + classnames.json (--custom_classname_file)
    data/flickr30k/                         Images/, flickr30k_test_karpathy.txt, flickr30k_cn_test.txt
    data/mscoco_captions/                   val2014/, train2014/, coco_test_karpathy.json, coco-cn_test.json,
                                            multilingual_mscoco_captions-<lang>.json (XTD, 8 languages)
    data/birdsnap/                          species.txt, test_images_valid.txt, <Species>/<n>.jpg
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Optional

__all__ = ["write_demo", "XTD_LANGUAGES"]

XTD_LANGUAGES = ("en", "es", "fr", "zh", "it", "ko", "ru", "jp")


def write_demo(out: os.PathLike, images: int = 16, kit=None) -> Path:
    """Write the checkpoints and datasets of the module doc under ``out`` (must be new or empty);
    each dataset has ``images`` images (at least 10: upstream's recall@10), from disjoint sample blocks."""
    from internvl.datakit import SyntheticImages
    from internvl.datakit.checkpoints import write_tiny_internvl_c_pth, write_tiny_internvl_cg
    from internvl.models.internvl_cg import InternVLModel
    from internvl.data.retrieval import write_flickr30k

    from .datasets.birdsnap import write_birdsnap
    from .datasets.imagenet import write_imagenet_val
    from .datasets.mscoco import write_mscoco_captions
    from .datasets.xtd import write_xtd

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new directory")
    kit = kit or SyntheticImages(num_classes=4, image_size=64)
    hf = write_tiny_internvl_cg(out / "pretrained" / "InternVL-14B-224px")
    write_tiny_internvl_c_pth(out / "pretrained" / "internvl_c_13b_224px.pth", model=InternVLModel.from_pretrained(hf))
    data = out / "data"
    write_imagenet_val(data / "imagenet-1k", images, kit=kit)
    write_flickr30k(data / "flickr30k", images, languages=("en", "cn"), kit=kit, start=10_000)
    write_mscoco_captions(data / "mscoco_captions", images, kit=kit, start=20_000)
    write_xtd(data / "mscoco_captions", images, languages=XTD_LANGUAGES, kit=kit, start=30_000)
    write_birdsnap(data / "birdsnap", images, kit=kit, start=40_000)
    return out


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m internvl_clip_benchmark.demo",
                                     description="Write tiny checkpoints and synthetic datasets in upstream's "
                                                 "clip_benchmark layout.")
    parser.add_argument("out", nargs="?", default="demo_output/clip_benchmark")
    parser.add_argument("--images", type=int, default=16, help="images per dataset (>= 10)")
    args = parser.parse_args(argv)
    if args.images < 10:
        parser.error("--images must be at least 10 (upstream reports recall@10)")
    out = write_demo(args.out, args.images)
    print(f"wrote tiny checkpoints to {out / 'pretrained'} and synthetic datasets to {out / 'data'}; from {out}, run "
          "the commands of clip_benchmark/README.md (Try it on a CPU)")
    return 0


if __name__ == "__main__":
    from internvl.cli import run_main

    raise SystemExit(run_main(main))
