"""``make demo-retrieval``: the stage-2 retrieval fine-tune end to end on a CPU, with a tiny InternVL-C/G.

In ``--out`` (default ``demo_output/internvl_g``), laid out as upstream's ``internvl_g/`` working directory:

1. ``pretrained/InternVL-14B-224px``: a tiny random InternVL-C/G in the published layout (there are no small
   published weights); ``data/flickr30k``: synthetic Flickr30K in upstream's layout, a training split and a
   held-out test split (``Images/``, ``flickr30k_{train,test}_karpathy.txt``);
2. zero-shot retrieval on the test split through the CLIP Benchmark CLI (``--model internvl_c_retrieval_hf`` and
   ``internvl_g_retrieval_hf``);
3. upstream's full fine-tuning script, ``sh internvl_g/shell/finetune/internvl_stage2_finetune_flickr_364_bs1024_
   ep10.sh``, run from ``--out`` with ``GPUS=0`` (one CPU process) and its flags scaled down for the CPU (given
   after the script's, they override them: steps, batch, learning rate, a 70 px image size, no bf16);
4. retrieval again, on the output directory ``work_dirs/internvl_stage2_finetune_flickr_364_bs1024_ep10``;

and print the before / after recall table. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "internvl_g" / "shell" / "finetune" / "internvl_stage2_finetune_flickr_364_bs1024_ep10.sh"
OUTPUT = "work_dirs/internvl_stage2_finetune_flickr_364_bs1024_ep10"
MODELS = ("internvl_c_retrieval_hf", "internvl_g_retrieval_hf")
METRICS = ("image_retrieval_recall@1", "text_retrieval_recall@1", "image_retrieval_recall@5",
           "text_retrieval_recall@5")


def retrieval(out: Path, pretrained: Path, results: Path) -> dict:
    """Recall of both model names on the test split, through the CLIP Benchmark CLI; ``{model: metrics}``.

    The CLI runs as its own command (``clip_benchmark eval``, as a user runs it): apps never import each other."""
    scores = {}
    for name in MODELS:
        subprocess.run([sys.executable, "-m", "internvl_clip_benchmark.cli", "eval", "--model_type", "internvl",
                        "--model", name, "--pretrained", str(pretrained), "--task", "zeroshot_retrieval",
                        "--dataset", "flickr30k", "--dataset_root", str(out / "data" / "flickr30k"), "--language",
                        "en", "--output", str(results), "--batch_size", "32", "--num_workers", "0", "--no_amp",
                        "--quiet"], check=True)
        scores[name] = json.loads(results.read_text().splitlines()[-1])["metrics"]
    return scores


def script_flags(steps: int, batch_size: int, learning_rate: float, seed: int) -> list[str]:
    """What the demo appends to upstream's script: its flags scaled down for a CPU (later flags win)."""
    return ["--max_steps", str(steps), "--per_device_train_batch_size", str(batch_size), "--learning_rate",
            str(learning_rate), "--warmup_steps", str(max(1, steps // 20)), "--force_image_size", "70",
            "--drop_path_rate", "0.0", "--bf16", "False", "--pad_to_max_length", "False", "--weight_decay", "0.0",
            "--save_steps", str(max(1, steps // 2)), "--logging_steps", str(max(1, steps // 10)), "--seed", str(seed),
            "--dataloader_num_workers", "1", "--disable_tqdm", "True"]


def script_command(out: Path, flags: Sequence[str], dry_run: bool = False) -> subprocess.CompletedProcess:
    """Upstream's full script with ``GPUS=0`` (one CPU process) and ``flags``, run from ``out``; with ``dry_run``
    it prints the command instead (``DRY_RUN=1``), else its log goes to ``out/finetune.log``."""
    env = {**os.environ, "GPUS": "0", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHON": sys.executable, "DRY_RUN": "1" if dry_run else "0"}
    if dry_run:
        return subprocess.run(["bash", str(SCRIPT), *flags], cwd=out, env=env, capture_output=True, text=True,
                              check=True)
    with open(out / "finetune.log", "w") as log:
        return subprocess.run(["bash", str(SCRIPT), *flags], cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT)


def write_demo_data(out: Path, train_images: int, test_images: int, seed: int = 0) -> Path:
    """The tiny checkpoint and the synthetic Flickr30K of step 1 under ``out``; returns the checkpoint."""
    from internvl.datakit import SyntheticImages
    from internvl.datakit.checkpoints import write_tiny_internvl_cg
    from internvl.data.retrieval import write_flickr30k

    kit = SyntheticImages(num_classes=8, image_size=64, seed=seed)
    pretrained = write_tiny_internvl_cg(out / "pretrained" / "InternVL-14B-224px", seed=seed, tokenizer_vocab=1000)
    write_flickr30k(out / "data" / "flickr30k", train_images, split="train", kit=kit)
    write_flickr30k(out / "data" / "flickr30k", test_images, split="test", kit=kit, start=100_000)  # held out
    return pretrained


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_output/internvl_g"), help="where everything goes")
    parser.add_argument("--train-images", type=int, default=64, help="training images, 5 captions each")
    parser.add_argument("--test-images", type=int, default=20, help="held-out images, 5 captions each")
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps of the fine-tune")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from internvl.errors import UserError

    start = time.time()
    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)  # a fresh run, not a resume of the last demo
    out.mkdir(parents=True)
    print("=== 1. a tiny InternVL-C/G (published layout, random weights) and synthetic Flickr30K ===")
    pretrained = write_demo_data(out, args.train_images, args.test_images, args.seed)
    print(f"  {pretrained}\n  {out / 'data' / 'flickr30k'}: {args.train_images} training and {args.test_images} "
          "held-out images, 5 captions each")

    print("\n=== 2. zero-shot retrieval on the test split (clip_benchmark eval --model_type internvl) ===")
    results = out / "results.json"
    before = retrieval(out, pretrained, results)

    print(f"\n=== 3. fine-tune: GPUS=0 sh {SCRIPT.relative_to(REPO)} --max_steps {args.steps} ... (from {out}) ===")
    train_start = time.time()
    finished = script_command(out, script_flags(args.steps, args.batch_size, args.learning_rate, args.seed))
    log = (out / "finetune.log").read_text()
    if finished.returncode:
        print(log[-3000:], file=sys.stderr)
        raise UserError(f"the fine-tuning script failed (exit status {finished.returncode}); see "
                        f"{out / 'finetune.log'}")
    losses = [line.split("{", 1)[1] for line in log.splitlines() if "'loss':" in line]
    for line in (losses[0], losses[-1]):
        print("  {" + line[:150])
    print(f"  trained in {time.time() - train_start:.0f} s; log: {out / 'finetune.log'}")

    print(f"\n=== 4. retrieval with the fine-tuned model ({OUTPUT}) ===")
    after = retrieval(out, out / OUTPUT, results)

    print(f"\nFlickr30K-format test split, {args.test_images} held-out images x 5 captions "
          f"({time.time() - start:.0f} s in all); image_retrieval = text -> image, text_retrieval = image -> text")
    print(f"  {'model':<26} {'weights':<12}" + "".join(f"{m.replace('_retrieval_recall', ''):>12}" for m in METRICS))
    for name in MODELS:
        for tag, scores in (("zero-shot", before[name]), ("fine-tuned", after[name])):
            print(f"  {name:<26} {tag:<12}" + "".join(f"{scores[m]:>12.3f}" for m in METRICS))
    print("\nThe same from a shell, in the output directory:\n"
          f"  cd {out} && python -m internvl_clip_benchmark eval --model_type internvl --task zeroshot_retrieval "
          "--dataset flickr30k --dataset_root ./data/flickr30k --model internvl_g_retrieval_hf "
          f"--pretrained ./{OUTPUT} --output result_ft.json")
    return {"before": before, "after": after}


if __name__ == "__main__":
    from internvl.cli import run_main

    raise SystemExit(run_main(main))
