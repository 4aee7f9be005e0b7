"""The ``clip_benchmark`` command: LAION's CLI from the ``clip-benchmark`` package, with the InternVL additions.

Every flag, dataset, collection, multi-model / multi-language run and ``--distributed`` sharding is CLIP
Benchmark's own (``clip_benchmark eval --help``). What this module adds:

* ``--model_type internvl`` (:mod:`.models`) and the datasets of :mod:`.datasets`;
* ``--recall_k`` defaults to ``1 5 10`` with ``--model_type internvl`` (upstream's default), else CLIP
  Benchmark's ``5``;
* results are appended to ``--output`` as JSON lines (:mod:`.evaluate`), and ``build`` reads JSON-lines
  files as well as CLIP Benchmark's one-document JSON files;
* ``--feature_cache_dir DIR``: keep image features on disk across commands (:mod:`.features`);
* ``--tokenizer_dir DIR``: where the ``.pth`` model names find their tokenizer (:mod:`.models`).

How it hooks in: CLIP Benchmark's parser is built by its ``get_parser_args`` and extended here; its
``main_eval`` expands the runs and calls ``clip_benchmark.cli.run`` once per (model, dataset, language),
which is bound to :func:`.evaluate.run` (and ``build_dataset`` to ours) for the duration of :func:`main`.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import os
import sys
from typing import Optional, Sequence

from . import MODEL_TYPE, register

__all__ = ["build_parser", "main", "console_main", "build_csv", "DEFAULT_RECALL_K"]

DEFAULT_RECALL_K = {MODEL_TYPE: [1, 5, 10]}
LAION_RECALL_K = [5]
PROG = "clip_benchmark"


@contextlib.contextmanager
def _argv(argv: list):
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


def build_parser() -> argparse.ArgumentParser:
    """CLIP Benchmark's parser (model types registered) with this CLI's flags and defaults."""
    from clip_benchmark import cli as laion_cli

    register()
    with _argv([PROG]):  # its get_parser_args parses sys.argv; give it nothing to parse
        parser, _ = laion_cli.get_parser_args()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    evaluation = subparsers.choices["eval"]
    recall = next(a for a in evaluation._actions if a.dest == "recall_k")
    recall.help += " Default: 1 5 10 with --model_type internvl (as upstream InternVL), else 5."
    evaluation.set_defaults(recall_k=None)
    for action in evaluation._actions:
        if action.dest == "output":
            action.help += " Each run appends its result to it as one JSON line."
    group = evaluation.add_argument_group("InternVL additions")
    group.add_argument("--feature_cache_dir", default=None, type=str,
                       help="keep image features here across commands, keyed by model weights (content), transform "
                            "and image files; without it, features are still reused within one command")
    group.add_argument("--num_frames", default=1, type=int,
                       help="video datasets (msrvtt, kinetics400/600/700): frames per video, at the centres of equal "
                            "intervals; the video feature is their mean (default 1, as upstream)")
    group.add_argument("--tokenizer_dir", default=None, type=str,
                       help="for the .pth InternVL-C names: the directory with its LLaMA tokenizer (tokenizer.model) "
                            "and config.json; default: the .pth's folder if it has tokenizer.model, else "
                            "InternVL-14B-224px/ beside it")
    return parser


@contextlib.contextmanager
def _bound_to(session):
    """Bind CLIP Benchmark's per-run function and dataset builder to ours while its main_eval runs."""
    from clip_benchmark import cli as laion_cli

    from .datasets import build_dataset
    from .evaluate import run

    laion_run, laion_build = laion_cli.run, laion_cli.build_dataset
    bound = functools.wraps(run)(lambda args: run(args, session))
    bound.laion_run = laion_run
    laion_cli.run, laion_cli.build_dataset = bound, build_dataset
    try:
        yield
    finally:
        laion_cli.run, laion_cli.build_dataset = laion_run, laion_build


def build_csv(files: Sequence[str], output: str) -> int:
    """``clip_benchmark build``: one CSV row per result of every JSON / JSON-lines file (or folder of them),
    columns in order of first appearance."""
    from .evaluate import read_results

    paths = []
    for path in files:
        if os.path.isdir(path):
            paths += sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith((".json", ".jsonl")))
        else:
            paths.append(path)
    rows, fields = [], {}
    for path in paths:
        for result in read_results(path):
            row = {**result.get("metrics", {}), **{k: v for k, v in result.items() if k != "metrics"}}
            row["model_fullname"] = f"{row.get('model')} {row.get('pretrained')}"
            rows.append(row)
            fields.update(dict.fromkeys(row))
    with open(output, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} results from {len(paths)} file(s) written to {output}")
    return 0


def main(argv: Optional[Sequence[str]] = None, session=None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``); ``session`` (an :class:`.evaluate.Session`) lets a
    caller keep the loaded model and features across calls."""
    from clip_benchmark import cli as laion_cli

    from .evaluate import Session

    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if not hasattr(args, "which"):
        parser.print_help()
        return 0
    if args.which == "build":
        return build_csv(args.files, args.output)
    if args.recall_k is None:
        args.recall_k = DEFAULT_RECALL_K.get(args.model_type, LAION_RECALL_K)
    session = session or Session(args.feature_cache_dir, args.tokenizer_dir, verbose=args.verbose)
    with _bound_to(session):
        laion_cli.main_eval(args)
    return 0


def console_main() -> int:
    """The ``clip_benchmark`` console script."""
    from internvl.cli import run_main

    return run_main(main)


if __name__ == "__main__":
    from internvl.cli import run_main

    raise SystemExit(run_main(main))
