"""``make demo``: the suite's main job end to end on built-in defaults, on a CPU.

1. write a synthetic ImageNet-style dataset (images + ``meta_data/{train,val}.txt`` lists);
2. build a tiny InternViT of the 6B recipe (RMSNorm, qk-normalization, layer scale), save it with
   ``save_pretrained`` and load it back with ``from_pretrained``, exactly as a published checkpoint;
3. extract frozen features the way the linear-probing recipe does (class token concatenated with the
   mean of the patch tokens);
4. fit a linear probe (BatchNorm without affine, then a linear layer) and report top-1 accuracy beside chance.

The backbone is randomly initialised, so the probe measures what a random InternViT already encodes
(colour and coarse shape); the published weights of InternViT-6B reach 88.2% on ImageNet-1K.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from internvl import InternVisionConfig, InternVisionModel
from internvl.datakit import SyntheticImages, write_imagenet_lists
from internvl.runtime import seed_everything, setup_logging

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
log = logging.getLogger("internvl.demo")


def read_list(root: Path, split: str) -> list[tuple[Path, int]]:
    """``meta_data/<split>.txt``: one ``relative/path label`` line per image, paths under ``root/<split>``."""
    list_file = root / "meta_data" / f"{split}.txt"
    items = []
    for line_no, line in enumerate(list_file.read_text().splitlines(), 1):
        parts = line.rsplit(" ", 1)
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"{list_file}:{line_no}: expected 'relative/path label', got {line!r}")
        items.append((root / split / parts[0], int(parts[1])))
    return items


def load_pixels(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        pixels = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
        pixels = pixels.view(image.height, image.width, 3).permute(2, 0, 1).float() / 255
    return (pixels - IMAGENET_MEAN) / IMAGENET_STD


@torch.no_grad()
def extract_features(model: InternVisionModel, items: list[tuple[Path, int]], batch_size: int):
    feats, labels = [], []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        tokens = model(torch.stack([load_pixels(p) for p, _ in chunk])).last_hidden_state
        feats.append(torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], dim=-1))  # cls_patch_concat
        labels += [label for _, label in chunk]
    return torch.cat(feats), torch.tensor(labels)


def fit_linear_probe(train_x, train_y, num_classes: int, epochs: int = 300, lr: float = 0.01):
    """Full-batch AdamW on standardised features: the BatchNorm + Linear head of the probing recipe."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    head = torch.nn.Linear(train_x.shape[1], num_classes)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    x = (train_x - mean) / std
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(head(x), train_y).backward()
        opt.step()
    return lambda feats: head((feats - mean) / std)


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="where data and checkpoint go")
    parser.add_argument("--num-classes", type=int, default=16)
    parser.add_argument("--train-per-class", type=int, default=48)
    parser.add_argument("--val-per-class", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=112, help="a multiple of the patch size 14")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    setup_logging()
    seed_everything(args.seed)
    start = time.time()

    data_root = args.out / "synthetic-imagenet"
    shutil.rmtree(data_root, ignore_errors=True)
    kit = SyntheticImages(num_classes=args.num_classes, image_size=args.image_size, seed=args.seed)
    write_imagenet_lists(data_root, {"train": args.num_classes * args.train_per_class,
                                     "val": args.num_classes * args.val_per_class}, kit)
    train_items, val_items = read_list(data_root, "train"), read_list(data_root, "val")
    log.info("wrote %d train / %d val images (%d classes, %dpx) under %s",
             len(train_items), len(val_items), args.num_classes, args.image_size, data_root)

    config = InternVisionConfig(hidden_size=192, num_attention_heads=3, intermediate_size=768, num_hidden_layers=4,
                                image_size=args.image_size, patch_size=14, norm_type="rms_norm",
                                qk_normalization=True, qkv_bias=False, initializer_factor=0.1)
    checkpoint = args.out / "tiny-internvit"
    InternVisionModel(config).save_pretrained(checkpoint)
    model = InternVisionModel.from_pretrained(checkpoint).eval()
    log.info("tiny InternViT (%.1fM parameters) saved and reloaded from %s",
             sum(p.numel() for p in model.parameters()) / 1e6, checkpoint)

    train_x, train_y = extract_features(model, train_items, batch_size=64)
    val_x, val_y = extract_features(model, val_items, batch_size=64)
    probe = fit_linear_probe(train_x, train_y, args.num_classes)
    with torch.no_grad():
        train_acc = (probe(train_x).argmax(1) == train_y).float().mean().item() * 100
        val_acc = (probe(val_x).argmax(1) == val_y).float().mean().item() * 100
    chance = 100 / args.num_classes
    print(f"linear probe on frozen tiny-InternViT features ({args.num_classes} synthetic classes, "
          f"{len(train_items)} train / {len(val_items)} val images)")
    print(f" * train Acc@1 {train_acc:.1f}   val Acc@1 {val_acc:.1f}   (chance {chance:.1f}, "
          f"{val_acc / chance:.1f}x chance)   [{time.time() - start:.0f} s]")
    return val_acc


if __name__ == "__main__":
    main()
