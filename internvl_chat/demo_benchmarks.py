"""``make demo-benchmarks``: the base and the fine-tuned tiny model of ``make demo`` side by side on the benchmark suite.

1. reuse ``make demo``'s base checkpoint and its merged LoRA fine-tune under ``--out`` (the same ``DEMO_OUT``), or
   run ``make demo`` (:func:`internvl_chat.demo.main`) first when they are not there;
2. write a few synthetic benchmark sets in upstream's layouts (``python -m internvl_chat.eval synthetic``);
3. evaluate both checkpoints with ``python -m internvl_chat.eval run`` on those tasks and on ``qa-custom`` over the
   demo's held-out caption JSONL (scored with ANLS), into one results folder;
4. print its ``summary.md``: one row per checkpoint, one column per headline metric.

The model is tiny and random before its fine-tune on captions: the table shows the mechanics (what a fine-tune
did to each task's number), not real skills. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Optional, Sequence

#: what ``make demo`` writes under its ``--out``
BASE = Path("pretrained/InternVL2-tiny")
TUNED = Path("work_dirs/merged")
VAL_META = Path("data/val/val.json")
TASKS = "vqa-textvqa-val,pope,scienceqa"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m internvl_chat.demo_benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("demo_output/internvl_chat"),
                   help="make demo's output folder (reused when it holds both checkpoints)")
    p.add_argument("--tasks", default=TASKS, help="synthetic benchmark tasks (python -m internvl_chat.eval tasks)")
    p.add_argument("-n", type=int, default=8, help="questions per synthetic task (about)")
    p.add_argument("--batch-size", type=int, default=20, help="questions per generate call")
    p.add_argument("--retrain", action="store_true", help="run make demo again even if its checkpoints exist")
    return p


def ensure_demo_checkpoints(out: Path, retrain: bool = False) -> tuple[Path, Path, bool]:
    """``(base, fine-tuned, reused)``: make demo's checkpoints under ``out``, made by running it when missing."""
    base, tuned = out / BASE, out / TUNED
    reused = not retrain and all((p / "config.json").is_file() for p in (base, tuned)) and (out / VAL_META).is_file()
    if not reused:
        from . import demo

        demo.main(["--out", str(out)])
        for path in (base / "config.json", tuned / "config.json", out / VAL_META):
            if not path.is_file():
                raise FileNotFoundError(f"make demo did not write {path}; internvl_chat/demo_benchmarks.py names "
                                        "the paths it expects (BASE, TUNED, VAL_META)")
    return base, tuned, reused


def main(argv: Optional[Sequence[str]] = None) -> str:
    args = build_parser().parse_args(argv)
    from .demo import run_quietly
    from .eval.__main__ import main as eval_main

    start = time.time()
    out = args.out
    base, tuned, reused = ensure_demo_checkpoints(out, args.retrain)
    print(f"=== demo-benchmarks: {'reusing' if reused else 'made'} make demo's checkpoints ===\n  base:       {base}\n"
          f"  fine-tuned: {tuned} (LoRA on synthetic captions, merged)")
    bench = out / "benchmarks"
    shutil.rmtree(bench, ignore_errors=True)  # a fresh table: exactly these two rows
    data, results = bench / "data", bench / "results"
    status, _ = run_quietly(eval_main, ["synthetic", "--data-root", str(data), "--tasks", args.tasks, "-n", str(args.n)])
    if status:
        raise SystemExit(f"python -m internvl_chat.eval synthetic --tasks {args.tasks} failed")
    print(f"  synthetic sets of {args.tasks} ({args.n} questions each) under {data}\n"
          f"  qa-custom: {out / VAL_META} (held-out captions, --metric anls)")
    for checkpoint in (base, tuned):
        flags = ["run", "--checkpoint", str(checkpoint), "--tasks", args.tasks + ",qa-custom", "--data-root",
                 str(data), "--out-dir", str(results), "--num-workers", "0", "--batch-size", str(args.batch_size),
                 "--meta-path", str(out / VAL_META), "--metric", "anls"]
        step = time.time()
        status, log = run_quietly(eval_main, flags)
        if status:
            raise SystemExit(f"python -m internvl_chat.eval {' '.join(flags)} failed:\n{log}")
        print(f"  evaluated {checkpoint} in {time.time() - step:.0f} s")
    table = (results / "summary.md").read_text()
    print(f"\n{results / 'summary.md'} ({time.time() - start:.0f} s in all; results files and summary.json beside it):"
          f"\n\n{table}")
    return table


if __name__ == "__main__":
    main()
