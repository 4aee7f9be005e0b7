"""``make demo-classification``: the linear-probing pipeline end to end on a CPU, on built-in defaults.

1. write the synthetic data kit's stand-in of every dataset of ``classification.dataset.DATASETS`` under
   the output folder (``--out``, or the ``DEMO_OUT`` environment variable; default ``demo_output/``):
   ImageNet-1K (train/val folders and ``meta_data`` lists), ImageNet-ReaL (``real.json``), ImageNetV2,
   ImageNet-A/R (class subsets, R drawn as renditions) and ImageNet-Sketch;
2. write a tiny InternViT of the 6B recipe as a classification ``.pth`` (the format of
   ``intern_vit_6b_224px.pth``), randomly initialised: there are no small published weights;
3. train the linear probe with ``classification/main.py`` and ``configs/tiny/intern_vit_tiny_synthetic.yaml``;
4. evaluate the trained head on every variant with ``--eval --resume``, printing upstream's lines.

The frozen backbone is random, so the probe measures what a random InternViT already encodes
(colour, coarse shape) -- well above chance, far from the 88.2% of the published InternViT-6B.
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent / "configs" / "tiny"
CONFIG = CONFIGS / "intern_vit_tiny_synthetic.yaml"
TRAIN_SET = "imagenet"  # the probe trains on it and reports on its val split; every other set is --eval only


def write_data(out: Path, kit, train_per_class: int, val_per_class: int) -> dict[str, Path]:
    """Every dataset of the table under ``out/synthetic-<name>``, each from its own block of sample indices
    (no image is shared between sets); the training set with its train split."""
    from classification.dataset import DATASETS, write_imagenet_lists

    roots = {name: out / f"synthetic-{name.replace('_', '-')}" for name in DATASETS}
    for root in roots.values():
        shutil.rmtree(root, ignore_errors=True)
    n_train, n_val = kit.num_classes * train_per_class, kit.num_classes * val_per_class
    write_imagenet_lists(roots[TRAIN_SET], {"train": n_train, "val": n_val}, kit)
    start = n_train + n_val
    for name, spec in DATASETS.items():
        if name != TRAIN_SET:
            spec.write_synthetic(roots[name], kit, val_per_class, start)
            start += n_val
    return roots


def tiny_backbone_config(image_size: int):
    """The backbone of configs/tiny/intern_vit_tiny_synthetic.yaml: InternViT-6B's recipe at 1.8M parameters."""
    from internvl.models.intern_vit import InternVisionConfig

    return InternVisionConfig(hidden_size=192, num_attention_heads=3, intermediate_size=768, num_hidden_layers=4,
                              image_size=image_size, patch_size=14, norm_type="rms_norm", qk_normalization=True,
                              qkv_bias=False, initializer_factor=0.1)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("DEMO_OUT") or "demo_output"),
                        help="where data, weights and runs go (default: $DEMO_OUT, else demo_output)")
    parser.add_argument("--num-classes", type=int, default=16)
    parser.add_argument("--train-per-class", type=int, default=48)
    parser.add_argument("--val-per-class", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=112, help="a multiple of the patch size 14")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from classification.dataset import DATASETS
    from classification.main import run
    from internvl.datakit import SyntheticImages, write_intern_vit_pth

    start = time.time()
    kit = SyntheticImages(num_classes=args.num_classes, image_size=args.image_size, seed=args.seed)
    roots = write_data(args.out, kit, args.train_per_class, args.val_per_class)
    backbone = write_intern_vit_pth(args.out / "pretrained" / f"intern_vit_tiny_{args.image_size}px.pth",
                                    tiny_backbone_config(args.image_size), args.seed)
    runs = args.out / "work_dirs"
    shutil.rmtree(runs, ignore_errors=True)  # a fresh run, not an auto-resume of the last demo
    common = ["--output", str(runs), "--opts", "MODEL.NUM_CLASSES", str(args.num_classes),
              "DATA.CLASS_NAMES", str(roots[TRAIN_SET] / "classes.txt"), "DATA.IMG_SIZE", str(args.image_size),
              "MODEL.INTERN_VIT_6B.PRETRAIN_SIZE", str(args.image_size),
              "MODEL.INTERN_VIT_6B.PRETRAINED", str(backbone), "TRAIN.EPOCHS", str(args.epochs), "SEED", str(args.seed)]

    print(f"\n=== linear probe: {kit.num_classes} synthetic classes, {args.train_per_class} train images each ===")
    results = {TRAIN_SET: run(["--cfg", str(CONFIG), *common, "DATA.DATA_PATH", str(roots[TRAIN_SET])])}
    checkpoint = runs / CONFIG.stem / f"ckpt_epoch_{args.epochs - 1}.pth"
    for name, spec in DATASETS.items():
        if name == TRAIN_SET:
            continue
        print(f"\n=== evaluate on {name} ===")
        cfg = CONFIGS / f"{CONFIG.stem}{spec.config_suffix}.yaml"
        results[name] = run(["--cfg", str(cfg), "--eval", "--resume", str(checkpoint), *common,
                             "DATA.DATA_PATH", str(roots[name])])

    print(f"\nlinear probe on a frozen random tiny InternViT ({time.time() - start:.0f} s; data, weights and runs "
          f"in {args.out}):")
    print(f"  {'dataset':<16} {'images':>6} {'Acc@1':>6} {'chance':>7}")
    for name, result in results.items():
        top1 = result.get("real_acc1", result["acc1"])  # A/R are scored over the classes present only
        print(f"  {name:<16} {result['num_images']:>6} {top1:>6.1f} {100 / result['classes']:>7.1f}")
    return results


if __name__ == "__main__":
    from internvl.cli import run_main

    raise SystemExit(run_main(main))
