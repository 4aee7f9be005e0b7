"""The benchmark suite's batched generation (``--batch-size 16``) against upstream's one question at a time.

    python benchmarks/chat_eval.py                 # tiny model on the CPU, about a minute
    python benchmarks/chat_eval.py --n 64 --tasks vqa-textvqa-val,pope,refcoco-val

Both runs go through ``python -m internvl_chat.eval run`` on the same synthetic sets (the tiny InternVL2-2B-shaped
checkpoint of the data kit, 56 px tiles, ``--dynamic --max-num 2``); the answers of the two runs must be equal,
and the line printed last is the questions per second of each and their ratio, as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from timing import timed  # noqa: E402  (benchmarks/timing.py, beside this script)


def _answers(out: Path) -> dict:
    runs = json.loads((out / "summary.json").read_text())["runs"]
    return {r["task"]: [e.get("answer", e.get("text")) for e in json.loads(Path(r["results"]).read_text())]
            for r in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=48, help="questions per task (about)")
    parser.add_argument("--tasks", default="vqa-textvqa-val,pope,refcoco-val")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    from internvl.datakit.checkpoints import write_tiny_internvl_chat
    from internvl_chat.eval.__main__ import main as eval_main

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tiny_internvl_chat(root / "ckpt")
        eval_main(["synthetic", "--data-root", str(root / "data"), "--tasks", args.tasks, "-n", str(args.n)])
        seconds, answers = {}, {}
        for batch_size in (1, args.batch_size):
            out = root / f"batch{batch_size}"
            seconds[batch_size], _ = timed(lambda: eval_main([
                "run", "--checkpoint", str(root / "ckpt"), "--tasks", args.tasks, "--data-root", str(root / "data"),
                "--out-dir", str(out), "--num-workers", "0", "--batch-size", str(batch_size), "--dynamic",
                "--max-num", "2"]))
            answers[batch_size] = _answers(out)
        questions = sum(len(a) for a in answers[1].values())
        same = answers[1] == answers[args.batch_size]
        rates = {b: questions / s for b, s in seconds.items()}
        print(json.dumps({"questions": questions, "tasks": args.tasks, "identical_answers": same,
                          "questions_per_s_batch1": round(rates[1], 2),
                          f"questions_per_s_batch{args.batch_size}": round(rates[args.batch_size], 2),
                          "ratio": round(rates[args.batch_size] / rates[1], 2)}))
        if not same:
            raise SystemExit("the batched answers differ from one at a time")


if __name__ == "__main__":
    main()
