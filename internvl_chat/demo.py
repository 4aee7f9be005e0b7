"""``make demo``: the InternVL2 fine-tuning workflow end to end on a CPU, with a tiny InternVL2-shaped model.

1. write a base checkpoint in the published InternVL2-2B layout (InternViT-300M recipe + internlm2 language
   model, tiny and random: there are no small published weights) and synthetic data: a fine-tuning set
   (meta json + JSONL of caption conversations), a held-out set in the same format, and a held-out caption
   test in the COCO Karpathy layout;
2. check the training data (``python -m internvl_chat.chat_data check``);
3. evaluate the base model's captions on both held-out sets (``evaluate_caption``: ``coco`` and ``custom``);
4. LoRA fine-tune it (``internvl_chat.finetune`` with the 2B LoRA recipe's flags, scaled down);
5. evaluate the LoRA output directory as it is, then merge it (``tools/merge_lora.py``);
6. load the merged directory like the original and answer a question about a held-out image;

and print the before / after table. Everything runs in this process; nothing is downloaded.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

CAPTION_KINDS = ("caption",)
TRAIN_BATCH = 16


class _Progress(logging.Handler):
    """The fine-tuning's logged steps (``step N: {"loss": ...}``, the run's own log line) as one short line each on
    the terminal, while the rest of the run's output goes to its buffer and training_log.txt."""

    def __init__(self, stream, total_steps: int):
        super().__init__(logging.INFO)
        self.stream, self.total, self.start = stream, total_steps, time.time()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not message.startswith("step ") or '"loss"' not in message:
            return
        step, values = message[len("step "):].split(": ", 1)
        values = json.loads(values)
        self.stream.write(f"  step {step}/{self.total}: loss {values['loss']:.4f}, learning rate "
                          f"{values.get('learning_rate', 0):.2e} ({time.time() - self.start:.0f} s)\n")
        self.stream.flush()


def run_quietly(function, *args):
    """Run a step with its console output (progress bars, the Java metric tools' chatter) into a buffer;
    returns ``(result, output)``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                result = function(*args)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
        sink.seek(0)
        return result, sink.read()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_output/internvl_chat"), help="where everything goes")
    parser.add_argument("--train-samples", type=int, default=320)
    parser.add_argument("--test-samples", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    from internvl.data.caption_benchmarks import write_coco_karpathy
    from internvl.data.chat_image import load_image
    from internvl.models.chat_model import InternVLChatModel
    from internvl.datakit.checkpoints import write_tiny_internvl_chat
    from internvl.models.tokenization import load_tokenizer

    from . import evaluate_caption, finetune
    from .chat_data.__main__ import main as data_main
    from .chat_data.chat_jsonl import CAPTION_QUESTION, write_synthetic_chat_data
    from .merge_lora import merge_lora

    start = time.time()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = args.out
    shutil.rmtree(out, ignore_errors=True)  # a fresh run, not a resume of the last demo
    base, train_dir, run_dir, merged = out / "pretrained/InternVL2-tiny", out / "data/train", out / "work_dirs/lora", \
        out / "work_dirs/merged"
    print("=== 1. base checkpoint (InternVL2-2B layout, tiny and random) and synthetic data ===")
    write_tiny_internvl_chat(base, llm="internlm2", seed=args.seed)
    train_meta = write_synthetic_chat_data(train_dir, args.train_samples, kinds=CAPTION_KINDS, name="captions")
    held_out = args.train_samples + 1000  # images never seen in training
    val_meta = write_synthetic_chat_data(out / "data/val", args.test_samples, start=held_out, name="val")
    write_coco_karpathy(out / "data/coco", args.test_samples, start=held_out + args.test_samples)
    print(f"  {base}\n  {train_meta} ({args.train_samples} caption conversations)\n  {val_meta} and "
          f"{out / 'data/coco'} ({args.test_samples} held-out images each)")

    data_flags = ["--conv_style", "internlm2-chat", "--force_image_size", "56", "--max_dynamic_patch", "1",
                  "--down_sample_ratio", "0.5", "--max_seq_length", "512"]
    print("\n=== 2. python -m internvl_chat.chat_data check ===")
    status, report = run_quietly(data_main, ["check", "--meta_path", str(train_meta), "--model_name_or_path", str(base),
                                        *data_flags])
    print("  " + report.strip().splitlines()[-1])
    if status:
        raise SystemExit(f"the data check failed:\n{report}")

    def evaluate(checkpoint: Path, tag: str) -> dict:
        flags = ["--checkpoint", str(checkpoint), "--datasets", "coco,custom", "--meta-path", str(val_meta),
                 "--data-root", str(out / "data"), "--out-dir", str(out / "results" / tag), "--batch-size", "20",
                 "--num-workers", "0"]
        summaries, _ = run_quietly(evaluate_caption.evaluate, evaluate_caption.parse_args(flags))
        return {name: scores for name, _, _, scores in summaries}

    print("\n=== 3. evaluate the base model (evaluate_caption: coco and custom) ===")
    before = evaluate(base, "base")

    print("\n=== 4. LoRA fine-tuning (internvl_chat.finetune) ===")
    total_steps = math.ceil(args.train_samples / TRAIN_BATCH) * args.epochs
    logging_steps = max(1, min(5, total_steps // 4))  # every 5 steps; a few lines at least in a short run
    train_flags = ["--model_name_or_path", str(base), "--meta_path", str(train_meta), "--output_dir", str(run_dir),
                   *data_flags, "--freeze_llm", "True", "--freeze_mlp", "False", "--freeze_backbone", "True",
                   "--use_llm_lora", "16", "--num_train_epochs", str(args.epochs), "--per_device_train_batch_size",
                   str(TRAIN_BATCH), "--learning_rate", "4e-3", "--weight_decay", "0.0", "--warmup_ratio", "0.03",
                   "--lr_scheduler_type", "cosine", "--logging_steps", str(logging_steps), "--save_strategy", "epoch",
                   "--save_total_limit", "1", "--do_train", "True", "--grad_checkpoint", "False",
                   "--group_by_length", "True", "--dataloader_num_workers", "1", "--report_to", "tensorboard",
                   "--seed", str(args.seed), "--disable_tqdm", "True"]
    train_start = time.time()
    # the progress lines go to the terminal itself: run_quietly points file descriptors 1 and 2 at its buffer
    sys.stdout.flush()
    terminal = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    progress = _Progress(terminal, total_steps)
    run_log = logging.getLogger("internvl_chat.finetune")
    run_log.addHandler(progress)
    try:
        run_quietly(finetune.main, train_flags)
    finally:
        run_log.removeHandler(progress)
        terminal.close()
    log = (run_dir / "training_log.txt").read_text().splitlines()
    losses = [line for line in log if '"loss"' in line]
    print(f"  {len(losses)} loss lines in {run_dir / 'training_log.txt'}; first and last:")
    for line in (losses[0], losses[-1]):
        print("   " + line.split("INFO internvl_chat.finetune: ")[-1])
    print(f"  trained in {time.time() - train_start:.0f} s")

    print("\n=== 5. evaluate the LoRA output directory as it is, then merge it (tools/merge_lora.py) ===")
    after = evaluate(run_dir, "lora")
    run_quietly(merge_lora, str(run_dir), str(merged))
    print(f"  merged into {merged}: " + ", ".join(sorted(p.name for p in merged.iterdir())))

    print("\n=== 6. load the merged directory as the original loads, and ask it about a held-out image ===")
    model = InternVLChatModel.from_pretrained(merged).eval()
    tokenizer = load_tokenizer(merged)
    image = out / "data/val/images" / f"{held_out:06d}.jpg"
    pixel_values = load_image(image, input_size=model.config.image_size, max_num=1)
    with torch.inference_mode():
        answer = model.chat(tokenizer, pixel_values, CAPTION_QUESTION, dict(max_new_tokens=30, do_sample=False))
    from internvl.data.synthetic import SyntheticImages

    print(f"  {image}\n  Q: {CAPTION_QUESTION}\n  A: {answer}\n  (truth: {SyntheticImages().sample(held_out).caption_en})")

    print(f"\ncaption metrics on held-out synthetic images ({time.time() - start:.0f} s in all):")
    print(f"  {'set':<26} {'model':<16} {'BLEU-4':>7} {'METEOR':>7} {'ROUGE-L':>8} {'CIDEr':>7}")
    for name, label in (("coco", "COCO Karpathy layout"), ("custom", "held-out JSONL (custom)")):
        for tag, scores in (("base", before[name]), ("LoRA fine-tuned", after[name])):
            print(f"  {label:<26} {tag:<16} {scores['Bleu_4']:>7.3f} {scores['METEOR']:>7.3f} {scores['ROUGE_L']:>8.3f} "
                  f"{scores['CIDEr']:>7.3f}")
    return {"before": before, "after": after, "answer": answer}


if __name__ == "__main__":
    main()
