"""Linear-probe training speed of classification/main.py; every figure is measured in this run.

    python benchmarks/classification.py                 # CPU, ViT-S/14-size InternViT of the 6B recipe, 224 px
    python benchmarks/classification.py --device cuda --hidden 3200 --heads 25 --depth 48 --batch 32

Three ways to train the head on a frozen backbone, through the pipeline's own code (the train loop
``classification.engine.train_one_epoch``, data loading, transforms, optimizer):

1. ``torch.no_grad`` around the backbone (``MODEL.INTERN_VIT_6B.FROZEN_FORWARD: no_grad``);
2. ``torch.inference_mode`` (the default): no version counters or view tracking on the backbone's tensors;
3. the feature cache (``TRAIN.FEATURE_CACHE``, not in upstream): the backbone runs once over the train set
   with the deterministic transform, then every epoch trains the head on the stored features. Its
   speed-up is measured against recomputing the same features every epoch, over ``--epochs`` real
   epochs, and projected to the published recipe's 10 epochs.

Images are synthetic (``internvl.datakit``) and the backbone random: speed does not depend on either.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from classification.checkpoint import TrainState
from classification.config import load_config
from classification.dataset import (TrainBatchSampler, UnreadableImages, build_train_feature_source,
                                    build_train_set, make_loader, write_imagenet_lists)
from classification.features import build_feature_cache
from classification.engine import Training, amp_dtype_for, build_criterion, train_one_epoch
from classification.model import build_model
from classification.optim import LRSchedule, build_optimizer
from internvl.datakit import SyntheticImages
from internvl.train.distributed import DistInfo

CONFIG = Path(__file__).resolve().parents[1] / "classification" / "configs" / "tiny" / "intern_vit_tiny_synthetic.yaml"


def make_config(args, data: Path, output: Path, **overrides):
    opts = {"DATA.DATA_PATH": data, "DATA.CLASS_NAMES": data / "classes.txt", "DATA.IMG_SIZE": args.image_size,
            "DATA.BATCH_SIZE": args.batch, "DATA.NUM_WORKERS": args.workers, "MODEL.NUM_CLASSES": 16,
            "MODEL.INTERN_VIT_6B.PRETRAINED": "", "MODEL.INTERN_VIT_6B.PRETRAIN_SIZE": args.image_size,
            "MODEL.INTERN_VIT_6B.EMBED_DIM": args.hidden, "MODEL.INTERN_VIT_6B.NUM_HEADS": args.heads,
            "MODEL.INTERN_VIT_6B.DEPTH": args.depth, "PRINT_FREQ": 10**6, "OUTPUT": output,
            "DATA.TRANSFORM": "build_transform_for_linear_probe", "TRAIN.FEATURE_CACHE": False, **overrides}
    return load_config(CONFIG, [str(x) for kv in opts.items() for x in kv])


def epoch_seconds(config, model, dataset, info: DistInfo, epochs: int, uses_features: bool = False) -> list[float]:
    """Wall-clock seconds of each of ``epochs`` training epochs of the head over ``dataset``."""
    sampler = TrainBatchSampler(len(dataset), config.DATA.BATCH_SIZE, seed=config.SEED)
    loader = make_loader(dataset, sampler, config, info.device)
    state = TrainState(model, build_optimizer(config, model), torch.amp.GradScaler(info.device.type, enabled=False),
                       None, config)
    run = Training(state, model, build_criterion(config), LRSchedule.from_config(config, sampler.batches_per_epoch),
                   info, UnreadableImages(0), amp_dtype_for(config, info.device), uses_features=uses_features)
    times = []
    for epoch in range(epochs):
        state.epoch = epoch
        sampler.set_epoch(epoch)
        if info.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_one_epoch(run, loader)
        if info.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--images", type=int, default=64, help="train images (one epoch)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of no_grad / inference_mode")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the cache vs recompute comparison")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (DATA.NUM_WORKERS)")
    args = parser.parse_args()
    logging.disable(logging.INFO)  # the pipeline's progress lines; this script prints the figures
    device = torch.device(args.device)
    info = DistInfo(0, 1, 0, device, None)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        kit = SyntheticImages(num_classes=16, image_size=args.image_size, seed=0)
        data = write_imagenet_lists(tmp / "data", {"train": args.images, "val": 16}, kit)
        config = make_config(args, data, tmp / "run")
        torch.manual_seed(0)
        model = build_model(config).to(device)
        params = sum(p.numel() for p in model.backbone.parameters()) / 1e6
        load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
        print(f"== linear-probe training, {device} ({torch.get_num_threads()} CPU threads{load}), "
              f"InternViT-6B recipe at "
              f"hidden {args.hidden} / depth {args.depth} ({params:.1f}M parameters), {args.image_size} px, batch "
              f"{args.batch}, {args.images} images an epoch (data written in {time.perf_counter() - start:.1f} s) ==")

        # 1-2: the frozen backbone under no_grad vs inference_mode, alternating to share the machine's noise
        train_set = build_train_set(config)
        with torch.inference_mode():  # warm-up: allocator, kernels
            model(torch.randn(args.batch, 3, args.image_size, args.image_size, device=device))
        rates = {"no_grad": [], "inference_mode": []}
        for _ in range(args.rounds):
            for mode in rates:
                model.frozen_forward = mode
                rates[mode] += [args.images / t for t in epoch_seconds(config, model, train_set, info, 1)]
        no_grad, inference = statistics.median(rates["no_grad"]), statistics.median(rates["inference_mode"])
        print(f"  backbone under torch.no_grad         {no_grad:8.1f} images/s")
        print(f"  backbone under torch.inference_mode  {inference:8.1f} images/s   "
              f"({inference / no_grad:.2f}x no_grad)")

        # 3: the feature cache vs recomputing the same (deterministic) features every epoch
        model.frozen_forward = "inference_mode"
        fixed = make_config(args, data, tmp / "run", **{"DATA.TRANSFORM": "build_deterministic_transform",
                                                       "AUG.MIXUP": 0.0, "AUG.CUTMIX": 0.0})
        recompute = sum(epoch_seconds(fixed, model, build_train_set(fixed), info, args.epochs))
        cached_cfg = make_config(args, data, tmp / "run", **{"DATA.TRANSFORM": "build_deterministic_transform",
                                                            "AUG.MIXUP": 0.0, "AUG.CUTMIX": 0.0,
                                                            "TRAIN.FEATURE_CACHE": True})
        start = time.perf_counter()
        features = build_feature_cache(model, build_train_feature_source(cached_cfg), cached_cfg, info,
                                       amp_dtype_for(cached_cfg, device), UnreadableImages(0))
        build = time.perf_counter() - start
        on_cache = epoch_seconds(cached_cfg, model, features, info, args.epochs, uses_features=True)
        cached = build + sum(on_cache)
        head_rate = args.images / statistics.median(on_cache)
        print(f"  feature cache: built in {build:.2f} s ({args.images / build:.1f} images/s), then "
              f"{head_rate:,.0f} images/s per epoch on it")
        print(f"  {args.epochs} epochs, recomputing the features: {recompute:7.2f} s")
        print(f"  {args.epochs} epochs, feature cache:            {cached:7.2f} s   ({recompute / cached:.2f}x faster)")
        per_epoch = recompute / args.epochs
        projected = (10 * per_epoch) / (build + 10 * statistics.median(on_cache))
        print(f"  the published recipe's 10 epochs, from these timings: {projected:.1f}x faster with the cache")


if __name__ == "__main__":
    main()
