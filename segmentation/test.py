"""Evaluate a segmentation checkpoint on the config's test set (mIoU, mAcc, aAcc, per-class IoU / Acc).

    python segmentation/test.py CONFIG CHECKPOINT --eval mIoU
    bash segmentation/dist_test.sh CONFIG CHECKPOINT 8 --eval mIoU
    GPUS=8 bash segmentation/slurm_test.sh PARTITION JOB CONFIG CHECKPOINT --eval mIoU

CHECKPOINT is one of this pipeline's (``iter_<n>.pth``, ``best_mIoU_iter_<n>.pth``) or one of upstream's
released MMSegmentation checkpoints (``linear_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.pth``, ...);
a frozen backbone's weights come from the config's ``pretrained``. Inference is sliding-window as the
config's ``test_cfg`` says; ``--show-dir`` writes each prediction as a palette PNG; with ``--work-dir`` the
metrics are also written to ``<work_dir>/eval_<time>.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

logger = logging.getLogger("segmentation")


def parse_args(argv=None):
    from segmentation.train import add_run_arguments  # the options train.py and test.py share

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="test config file")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--eval", nargs="+", default=[], help="metrics: mIoU (reports aAcc and mAcc too)")
    parser.add_argument("--work-dir", "--work_dir", help="where the metrics JSON and the log go")
    parser.add_argument("--show-dir", "--show_dir", help="write the predictions as palette PNGs here")
    parser.add_argument("--aug-test", action="store_true", help="multi-scale / flip testing (not supported)")
    add_run_arguments(parser)
    parser.add_argument("--window-batch", type=int, help="sliding windows per forward (default: all of an image)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)  # first: --help and flag errors need no torch
    import torch

    from internvl.errors import ConfigError
    from internvl.train.distributed import cleanup_distributed, init_distributed, setup_logging
    from segmentation.ade20k import build_dataset
    from segmentation.config import DATA_ARGS, load_config, section, to_plain
    from segmentation.engine import build_model, evaluate, load_weights

    unknown = [m for m in args.eval if m not in ("mIoU", "aAcc", "mAcc")]
    if unknown:
        raise ConfigError(f"--eval {' '.join(unknown)}: supported metrics are mIoU, aAcc, mAcc (reported together)")
    if args.aug_test:
        raise ConfigError("--aug-test (multi-scale / flip testing) is not supported")
    if not args.eval and not args.show_dir:
        raise ConfigError("nothing to do: pass --eval mIoU and/or --show-dir DIR")
    cfg = load_config(args.config, dict(args.cfg_options))
    info = init_distributed()
    work_dir = Path(args.work_dir) if args.work_dir else None
    setup_logging(info.rank, work_dir / "test.log" if work_dir else None)
    try:
        data = section(cfg, "data", DATA_ARGS)
        if data.get("test") is None:
            raise ConfigError(f"{args.config}: no data.test")
        dataset = build_dataset(to_plain(data["test"]), 0, "data.test")
        model = build_model(cfg, info.device, args.backbone_dtype)
        load_weights(model, args.checkpoint, to_plain(cfg.model))
        logger.info("evaluating %s on %d images of %s", args.checkpoint, len(dataset), dataset.img_dir)
        workers = args.workers if args.workers is not None else data["workers_per_gpu"]
        from tqdm.contrib.logging import logging_redirect_tqdm
        with torch.inference_mode(), logging_redirect_tqdm():
            result = evaluate(model, dataset, info, workers, Path(args.show_dir) if args.show_dir else None,
                              args.window_batch)
        logger.info("aAcc: %.2f, mIoU: %.2f, mAcc: %.2f", result["aAcc"], result["mIoU"], result["mAcc"])
        if work_dir is not None and info.is_main:
            out = work_dir / f"eval_{time.strftime('%Y%m%d_%H%M%S')}.json"
            out.write_text(json.dumps({"config": args.config, "checkpoint": args.checkpoint,
                                       "classes": list(dataset.classes), **result}, indent=1))
            logger.info("metrics written to %s", out)
        return result
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    from internvl.cli import run_main
    raise SystemExit(run_main(main))
