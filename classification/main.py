"""InternViT linear probing on ImageNet-1K and evaluation on ImageNet-ReaL / V2 / A / R / Sketch.

    torchrun --nproc_per_node 8 classification/main.py --cfg classification/configs/intern_vit_6b_1k_224.yaml
    torchrun --nproc_per_node 8 classification/main.py --eval \\
        --cfg classification/configs/intern_vit_6b_1k_224.yaml --resume pretrained/intern_vit_6b_224px_head.pth
    python -m classification.main --cfg ... --opts TRAIN.EPOCHS 1 DATA.BATCH_SIZE 32   # one process, CPU or GPU

The same file runs under torchrun, SLURM srun (``classification/train_in1k.sh``) and as one plain
process; ``--local-rank`` of the older launcher is accepted. Runs write to ``<--output>/<config
name>/``: ``log_rank0.txt``, ``config.yaml``, ``tensorboard/`` and the checkpoints; with
``TRAIN.AUTO_RESUME`` a restarted run continues from the most advanced readable checkpoint there.
An error the user can fix (a config key, a missing file, too many unreadable images) ends the run
with one ``error: ...`` line (``INTERNVL_DEBUG=1`` adds the traceback), a bug with its traceback; both
also go to ``log_rank0.txt``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from classification.config import check_inputs, get_config, run_name
from internvl.cli import run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser("InternViT linear probing and evaluation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True, metavar="FILE", help="path to the YAML config")
    parser.add_argument("--opts", nargs="+", default=None, help="override config keys: KEY VALUE [KEY VALUE ...]")
    parser.add_argument("--batch-size", type=int, help="batch size per process (DATA.BATCH_SIZE)")
    parser.add_argument("--dataset", help="DATA.DATASET")
    parser.add_argument("--data-path", help="DATA.DATA_PATH")
    parser.add_argument("--pretrained", help="whole-classifier weights to start from (MODEL.PRETRAINED)")
    parser.add_argument("--resume", help="checkpoint to resume or, with --eval, to evaluate (MODEL.RESUME)")
    parser.add_argument("--accumulation-steps", type=int, help="gradient accumulation steps")
    parser.add_argument("--use-checkpoint", action="store_true", help="gradient checkpointing (unfrozen backbone)")
    parser.add_argument("--amp-opt-level", choices=["O0", "O1", "O2"], help="O0 disables mixed precision")
    parser.add_argument("--output", default="work_dirs", metavar="PATH",
                        help="root of the run folders: <output>/<config name>/ (default: work_dirs)")
    parser.add_argument("--tag", help="tag of the experiment")
    parser.add_argument("--eval", action="store_true", help="evaluate only")
    parser.add_argument("--throughput", action="store_true", help="measure inference throughput only")
    parser.add_argument("--save-ckpt-num", type=int, help="epoch checkpoints to keep (SAVE_CKPT_NUM)")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=None,
                        help="accepted for torch.distributed.launch; the rank is read from the environment")
    return parser


def parse_option(argv=None):
    """``(args, config)`` of a command line."""
    args = build_parser().parse_args(argv)
    return args, get_config(args)


def run(argv=None) -> dict:
    """The command line: parse ``argv``, join the process group (if launched by torchrun / srun), log to
    ``<--output>/<config name>/log_rank0.txt``, run (:func:`classification.engine.main`), clean up."""
    args = build_parser().parse_args(argv)  # --help answers before torch is imported
    from internvl.train.distributed import cleanup_distributed, init_distributed, setup_logging

    info = init_distributed()
    try:
        # The log file first, so that a bad config key is reported there too (for an existing --cfg file:
        # a mistyped path leaves no folder behind).
        setup_logging(info.rank, Path(args.output) / run_name(args.cfg) / "log_rank0.txt"
                      if Path(args.cfg).is_file() else None)
        config = get_config(args)
        check_inputs(config)  # before the model code is even imported, let alone a 6B backbone loaded
        from classification.engine import main
        return main(config, info)
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    raise SystemExit(run_main(run))
