"""``python -m internvl_chat.eval``: run, score, list or write synthetic data for the benchmark tasks.

    python -m internvl_chat.eval run --checkpoint DIR --tasks vqa-textvqa-val,pope [--dynamic ...]
    python -m internvl_chat.eval score TASK RESULTS_FILE [--data-root data]    # last line: the metrics as JSON
    python -m internvl_chat.eval tasks [NAMES]       # the implemented tasks and groups; NAMES: check them
    python -m internvl_chat.eval synthetic --data-root DIR --tasks NAMES [-n 4]   # a tiny set per task
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from internvl.cli import run_main
from internvl.errors import ConfigError

from . import framework


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m internvl_chat.eval", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="evaluate a checkpoint on tasks (what evaluate.sh runs)",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    framework.add_run_flags(run)
    score = sub.add_parser("score", help="re-score a results file (ours or upstream's)")
    score.add_argument("task")
    score.add_argument("results", help="the results file (mme: the folder of its 14 .txt files)")
    score.add_argument("--data-root", default="data")
    tasks = sub.add_parser("tasks", help="list the tasks; with names, check them (one line per unknown name)")
    tasks.add_argument("names", nargs="?", default="")
    synthetic = sub.add_parser("synthetic", help="write a tiny synthetic set of tasks in upstream's layout")
    synthetic.add_argument("--data-root", required=True)
    synthetic.add_argument("--tasks", required=True)
    synthetic.add_argument("-n", type=int, default=4, help="questions per task (about)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        framework.check_run_flags(parser, args)
        framework.evaluate(args)
        return 0
    if args.command == "tasks":
        if args.names:
            try:
                print(",".join(t.name for t in framework.resolve_tasks(args.names)))
            except ConfigError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
            return 0
        tasks, groups = framework.registry()
        for name, members in groups.items():
            print(f"{name}: {','.join(members)}")
        print("tasks: " + ", ".join(tasks))
        print("captions (internvl_chat.evaluate_caption): " + ", ".join(framework.CAPTION_TASKS))
        return 0
    if args.command == "synthetic":
        for task in framework.resolve_tasks(args.tasks):
            task.write_synthetic(Path(args.data_root), args.n)
            print(f"wrote {task.name} under {args.data_root}")
        return 0
    (task,) = framework.resolve_tasks([args.task]) if args.task not in framework.registry()[1] else [None]
    if task is None:
        raise ConfigError(f"score takes one task, not the group {args.task!r}")
    results = Path(args.results)
    if not results.exists():
        raise ConfigError(f"{args.task}: results file {results} does not exist")
    metrics = task.score(results, Path(args.data_root))
    if metrics is None:
        raise ConfigError(task.unscored(results))
    print(json.dumps(metrics), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
