"""``make demo``: the linear-probing pipeline end to end on a CPU, on built-in defaults.

1. write the synthetic data kit's ImageNet layouts under ``demo_output/``: ImageNet-1K (train/val folders
   and ``meta_data`` lists), ImageNet-ReaL (``real.json``), ImageNetV2, ImageNet-A/R (class subsets,
   R drawn as renditions) and ImageNet-Sketch;
2. write a tiny InternViT of the 6B recipe as a classification ``.pth`` (the format of
   ``intern_vit_6b_224px.pth``), randomly initialised: there are no small published weights;
3. train the linear probe with ``classification/main.py`` and ``configs/tiny/intern_vit_tiny_synthetic.yaml``;
4. evaluate the trained head on every variant with ``--eval --resume``, printing upstream's lines.

The frozen backbone is random, so the probe measures what a random InternViT already encodes
(colour, coarse shape) -- well above chance, far from the 88.2% of the published InternViT-6B.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: import the package from the repository root, not this folder
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from classification.main import run
from internvl.datakit import (SyntheticImages, write_class_subset, write_imagenet_lists, write_imagenet_real,
                              write_imagenet_sketch, write_imagenetv2, write_intern_vit_pth)
from internvl.intern_vit import InternVisionConfig

CONFIGS = Path(__file__).resolve().parent / "configs" / "tiny"
CONFIG = CONFIGS / "intern_vit_tiny_synthetic.yaml"
VARIANTS = {  # DATA.DATASET -> (config suffix, data folder)
    "imagenet-real": ("_test_imagenet_real", "synthetic-imagenet-real"),
    "imagenetv2": ("_test_imagenetv2", "synthetic-imagenetv2"),
    "imagenet_a": ("_test_imagenet_a", "synthetic-imagenet-a"),
    "imagenet_r": ("_test_imagenet_r", "synthetic-imagenet-r"),
    "imagenet_sketch": ("_test_imagenet_sketch", "synthetic-imagenet-sketch"),
}


def write_data(out: Path, kit: SyntheticImages, train_per_class: int, val_per_class: int) -> dict[str, Path]:
    """Every layout, each from its own block of sample indices (no image is shared between sets)."""
    n, n_train, n_val = kit.num_classes, kit.num_classes * train_per_class, kit.num_classes * val_per_class
    roots = {"imagenet": out / "synthetic-imagenet", **{k: out / folder for k, (_, folder) in VARIANTS.items()}}
    for root in roots.values():
        shutil.rmtree(root, ignore_errors=True)
    start = n_train + n_val
    write_imagenet_lists(roots["imagenet"], {"train": n_train, "val": n_val}, kit)
    write_imagenet_real(roots["imagenet-real"], n_val, kit, start=start)
    write_imagenetv2(roots["imagenetv2"], n_val, kit, start=start + n_val)
    half = max(n // 2, 1)
    write_class_subset(roots["imagenet_a"], half * val_per_class, kit.classes[::2], kit, start=start + 2 * n_val)
    write_class_subset(roots["imagenet_r"], half * val_per_class, kit.classes[1::2] or kit.classes, kit,
                       start=start + 3 * n_val, style="rendition")
    write_imagenet_sketch(roots["imagenet_sketch"], n_val, kit, start=start + 4 * n_val)
    return roots


def tiny_backbone_config(image_size: int) -> InternVisionConfig:
    """The backbone of configs/tiny/intern_vit_tiny_synthetic.yaml: InternViT-6B's recipe at 1.8M parameters."""
    return InternVisionConfig(hidden_size=192, num_attention_heads=3, intermediate_size=768, num_hidden_layers=4,
                              image_size=image_size, patch_size=14, norm_type="rms_norm", qk_normalization=True,
                              qkv_bias=False, initializer_factor=0.1)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="where data, weights and runs go")
    parser.add_argument("--num-classes", type=int, default=16)
    parser.add_argument("--train-per-class", type=int, default=48)
    parser.add_argument("--val-per-class", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=112, help="a multiple of the patch size 14")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.time()

    kit = SyntheticImages(num_classes=args.num_classes, image_size=args.image_size, seed=args.seed)
    roots = write_data(args.out, kit, args.train_per_class, args.val_per_class)
    backbone = write_intern_vit_pth(args.out / "pretrained" / f"intern_vit_tiny_{args.image_size}px.pth",
                                    tiny_backbone_config(args.image_size), args.seed)
    runs = args.out / "work_dirs"
    shutil.rmtree(runs, ignore_errors=True)  # a fresh run, not an auto-resume of the last demo
    common = ["--output", str(runs), "--opts", "MODEL.NUM_CLASSES", str(args.num_classes),
              "DATA.CLASS_NAMES", str(roots["imagenet"] / "classes.txt"), "DATA.IMG_SIZE", str(args.image_size),
              "MODEL.INTERN_VIT_6B.PRETRAIN_SIZE", str(args.image_size),
              "MODEL.INTERN_VIT_6B.PRETRAINED", str(backbone), "TRAIN.EPOCHS", str(args.epochs), "SEED", str(args.seed)]

    print(f"\n=== linear probe: {kit.num_classes} synthetic classes, {args.train_per_class} train images each ===")
    results = {"imagenet": run(["--cfg", str(CONFIG), *common, "DATA.DATA_PATH", str(roots["imagenet"])])}
    checkpoint = runs / CONFIG.stem / f"ckpt_epoch_{args.epochs - 1}.pth"
    for dataset, (suffix, _) in VARIANTS.items():
        print(f"\n=== evaluate on {dataset} ===")
        cfg = CONFIGS / f"{CONFIG.stem}{suffix}.yaml"
        results[dataset] = run(["--cfg", str(cfg), "--eval", "--resume", str(checkpoint), *common,
                                "DATA.DATA_PATH", str(roots[dataset])])

    print(f"\nlinear probe on a frozen random tiny InternViT ({time.time() - start:.0f} s):")
    print(f"  {'dataset':<16} {'images':>6} {'Acc@1':>6} {'chance':>7}")
    for dataset, result in results.items():
        top1 = result.get("real_acc1", result["acc1"])
        classes = kit.num_classes if dataset not in ("imagenet_a", "imagenet_r") else len(
            {p.name for p in roots[dataset].iterdir() if p.is_dir()})
        print(f"  {dataset:<16} {result['num_images']:>6} {top1:>6.1f} {100 / classes:>7.1f}")
    return results


if __name__ == "__main__":
    main()
