"""InternVL-Chat fine-tuning and evaluation throughput, each figure against a peer measured in the same run.

    python benchmarks/chat_finetune.py            # all four parts, tiny model on the CPU, about 7 minutes
    python benchmarks/chat_finetune.py packing    # or: padding, loader, captions

padding   training samples/s and the fraction of padding tokens, --group_by_length against random batches, on
          mixed-length synthetic data (captions, 4-turn QA, two-image questions, pure text; batches of 8);
loader    data-loading images/s (the published 448 px tiles, dynamic tiling up to 6 tiles + thumbnail, JPEG
          augmentation) with the scripts' default workers, and training samples/s of the tiny model fed by the
          loader against the same steps fed from memory: near 1.0 means the loader is not the bottleneck;
packing   one epoch of LoRA training on 192 samples of mixed lengths (images of mixed sizes, dynamic tiling up to
          6 tiles + thumbnail at 112 px = 16 tokens a tile): random batches, --group_by_length with upstream's
          length estimate, with the exact lengths, and --use_packed_ds (one pack of 8 samples' mean tokens per
          step, --strict_mode False); samples/s, trained tokens/s, the padding fraction of the batches the
          model really got, and each run's peak resident memory (each run is its own process);
captions  batched caption evaluation (batch_chat, --batch-size 16) against one image at a time (chat), same
          images and answers.

The model is the data kit's tiny InternVL2-2B-shaped checkpoint (InternViT-300M recipe at 64 wide, a 2-layer
internlm2) at 56 px tiles, so the figures measure the pipeline around the model more than the model.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from timing import timed  # noqa: E402  (benchmarks/timing.py, beside this script)

FLAGS = ["--conv_style", "internlm2-chat", "--force_image_size", "56", "--down_sample_ratio", "0.5",
         "--max_seq_length", "1024"]


def _setup(root: Path):
    from internvl.datakit.checkpoints import write_tiny_internvl_chat
    from internvl_chat.chat_data.chat_jsonl import write_synthetic_chat_data

    base = root / "base"
    write_tiny_internvl_chat(base, "internlm2")
    meta = write_synthetic_chat_data(root / "mixed", 256, kinds=("caption", "qa", "multi", "text", "qa", "caption_zh"))
    return base, meta


def _train(base: Path, meta: Path, out: Path, *extra: str) -> dict:
    from internvl_chat import finetune

    finetune.main(["--model_name_or_path", str(base), "--meta_path", str(meta), "--output_dir", str(out), *FLAGS,
                   "--freeze_backbone", "True", "--freeze_llm", "True", "--use_llm_lora", "8",
                   "--per_device_train_batch_size", "8", "--max_steps", "24", "--learning_rate", "1e-3",
                   "--save_strategy", "no", "--report_to", "none", "--do_train", "True", "--disable_tqdm", "True",
                   "--logging_steps", "100", "--grad_checkpoint", "False", *extra])
    return json.loads((out / "train_results.json").read_text())


def _padding(dataset, group: bool, batch_size: int, num_chunks: int) -> tuple[float, float]:
    """``(padding fraction, rank imbalance)`` of the sampler's batches: padded tokens over all tokens, and the
    mean over steps of the largest chunk's padded tokens over the mean chunk's (1.0: every rank equally busy)."""
    from internvl_chat.chat_data.dataset import ChatSampler

    real = [len(dataset[i]["input_ids"]) for i in range(len(dataset))]
    sampler = ChatSampler(dataset.lengths if group else [0] * len(real), dataset.sizes, batch_size, num_chunks,
                          group_by_length=group, seed=0)
    order = [i for i, _ in sampler]
    padded = tokens = 0
    imbalance = []
    step = batch_size * num_chunks
    for start in range(0, len(order) - step + 1, step):
        chunks = [[real[i] for i in order[start + c * batch_size:start + (c + 1) * batch_size]]
                  for c in range(num_chunks)]
        work = [max(chunk) * len(chunk) for chunk in chunks]
        padded += sum(work)
        tokens += sum(map(sum, chunks))
        imbalance.append(max(work) / (sum(work) / num_chunks))
    return 1 - tokens / padded, sum(imbalance) / len(imbalance)


def _dataset(base: Path, meta: Path, *extra: str):
    from internvl_chat.arguments import parse_data_args
    from internvl_chat.chat_data.build import build_training_data, data_options, load_training_tokenizer

    model_args, data_args, _ = parse_data_args(["--model_name_or_path", str(base), "--meta_path", str(meta), *FLAGS,
                                                *extra], "benchmark")
    tokenizer, _ = load_training_tokenizer(str(base), data_args.max_seq_length)
    dataset, _ = build_training_data(str(meta), tokenizer, data_options(model_args, data_args))
    return dataset


def padding(root: Path, base: Path, meta: Path) -> None:
    dataset = _dataset(base, meta)
    runs = {group: _train(base, meta, root / f"pad{group}", "--group_by_length", str(group), "--dataloader_num_workers",
                          "1") for group in (False, True)}
    print(f"\n[padding] {len(dataset)} mixed samples (captions, 4-turn QA, two images, text)")
    print(f"  {'sampler':<16} {'padding, 1 GPU x batch 8':>25} {'samples/s':>10} {'padding, 8 GPUs x 2 acc. x 4':>29} "
          f"{'rank imbalance':>15}")
    for group, name in ((False, "random"), (True, "group_by_length")):
        one, _ = _padding(dataset, group, 8, 1)
        many, imbalance = _padding(dataset, group, 4, 16)
        print(f"  {name:<16} {100 * one:>24.1f}% {runs[group]['train_samples_per_second']:>10.2f} {100 * many:>28.1f}% "
              f"{imbalance:>15.2f}")
    print(f"  samples/s with group_by_length: "
          f"{runs[True]['train_samples_per_second'] / runs[False]['train_samples_per_second']:.2f}x")


SIZES = [(112, 112), (400, 120), (120, 400), (240, 226), (60, 60), (600, 580), (340, 112), (180, 500)]
SIZED_FLAGS = ["--force_image_size", "112", "--dynamic_image_size", "True", "--use_thumbnail", "True",
               "--max_dynamic_patch", "6"]


def _child(spec: dict) -> None:
    """One training run in this process (``packing``): count the tokens of the batches the model gets."""
    import resource

    from internvl_chat import finetune
    from internvl_chat.chat_data import dataset as dataset_module, packing as packing_module

    torch.set_num_threads(spec["threads"])
    counts = {"real": 0, "padded": 0, "samples": 0, "rows": 0}
    plain, packed = dataset_module.collate, packing_module.packed_collate

    def counting_plain(features):
        batch = plain(features)
        counts["real"] += sum(len(f["input_ids"]) for f in features)
        counts["padded"] += batch["input_ids"].numel()
        counts["samples"] += len(features)
        return batch

    def counting_packed(features, options):
        batch = packed(features, options)
        counts["real"] += sum(len(item["input_ids"]) for pack in features for item in pack)
        counts["padded"] += batch["input_ids"].numel()
        counts["samples"] += sum(len(pack) for pack in features)
        counts["rows"] += len(features)
        return batch

    dataset_module.collate, packing_module.packed_collate = counting_plain, counting_packed
    if spec["estimate"]:  # group by upstream's estimate instead of the exact lengths
        dataset_module.ChatDataset.lengths = property(lambda self: self.estimated_lengths())
    out = Path(spec["out"])
    finetune.main(["--model_name_or_path", spec["base"], "--meta_path", spec["meta"], "--output_dir", str(out),
                   *FLAGS, *SIZED_FLAGS, "--freeze_backbone", "True", "--freeze_llm", "True", "--use_llm_lora", "8",
                   "--num_train_epochs", "1", "--learning_rate", "1e-3", "--save_strategy", "no", "--report_to",
                   "none", "--do_train", "True", "--disable_tqdm", "True", "--logging_steps", "1000",
                   "--grad_checkpoint", "False", "--dataloader_num_workers", "0", *spec["extra"]])
    runtime = json.loads((out / "train_results.json").read_text())["train_runtime"]
    print("RESULT " + json.dumps(dict(counts, runtime=runtime,
                                      rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))


def _run_child(spec: dict) -> dict:
    import subprocess

    done = subprocess.run([sys.executable, __file__, "_child", json.dumps(spec)], capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"benchmark run {spec['extra']} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def packing(root: Path, base: Path, threads: int) -> None:
    from PIL import Image

    from internvl_chat.chat_data.chat_jsonl import write_synthetic_chat_data

    meta = write_synthetic_chat_data(root / "sized", 192, name="sized",
                                     kinds=("caption", "qa", "multi", "text", "qa", "caption_zh"))
    for i, path in enumerate(sorted((root / "sized" / "images").glob("*.jpg"))):
        Image.open(path).convert("RGB").resize(SIZES[i % len(SIZES)]).save(path)
    dataset = _dataset(base, meta, *SIZED_FLAGS)
    exact, estimate = dataset.lengths, [n for d in dataset.datasets for n in d.estimated_lengths()]
    pack = round(8 * sum(exact) / len(exact))
    runs = [("random batches of 8", False, []),
            ("group_by_length, upstream's estimate", True, ["--group_by_length", "True"]),
            ("group_by_length, exact lengths", False, ["--group_by_length", "True"]),
            (f"packed, {pack} tokens a row", False, ["--use_packed_ds", "True", "--max_packed_tokens", str(pack),
                                                     "--strict_mode", "False", "--per_device_train_batch_size", "1"])]
    print(f"\n[packing] {len(exact)} samples, {min(exact)}..{max(exact)} tokens (mean {sum(exact) / len(exact):.0f}); "
          f"upstream's estimate {min(estimate)}..{max(estimate)}; one epoch each, LoRA, {threads} thread(s)")
    print(f"  {'order':<38} {'padding':>8} {'samples/s':>10} {'tokens/s':>9} {'peak RSS':>9}")
    for name, use_estimate, extra in runs:
        extra = extra if "--per_device_train_batch_size" in extra else extra + ["--per_device_train_batch_size", "8"]
        r = packed = _run_child({"base": str(base), "meta": str(meta), "out": str(root / f"run{len(name)}{use_estimate}"),
                        "extra": extra, "estimate": use_estimate, "threads": threads})
        print(f"  {name:<38} {100 * (1 - r['real'] / r['padded']):>7.1f}% {r['samples'] / r['runtime']:>10.2f} "
              f"{r['real'] / r['runtime']:>9.0f} {r['rss_mb']:>7.0f} MB")
    print(f"  packed: {packed['rows']} packs for {packed['samples']} samples; --strict_mode True would pad every row to "
          f"{pack} tokens: {100 * (1 - packed['real'] / (packed['rows'] * pack)):.1f}% padding")


def loader(root: Path, base: Path, meta: Path, workers: int) -> None:
    from internvl.data.synthetic import SyntheticImages
    from internvl_chat.chat_data.chat_jsonl import write_synthetic_chat_data
    from internvl_chat.chat_data.dataset import collate

    big = write_synthetic_chat_data(root / "big", 64, kit=SyntheticImages(image_size=700), name="big",
                                    kinds=("caption", "qa"), data_augment=True)
    dataset = _dataset(base, big, "--force_image_size", "448", "--dynamic_image_size", "True", "--use_thumbnail",
                       "True", "--max_dynamic_patch", "6", "--max_seq_length", "4096")
    batches = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=workers, collate_fn=collate)

    def load():
        tiles = 0
        for batch in batches:
            assert not batch["bad_samples"], batch["bad_samples"]  # a void item would be timed as a sample
            tiles += len(batch["pixel_values"])
        return tiles

    seconds, tiles = timed(load)
    print(f"\n[loader] 448 px tiles of 700 px images (up to 6 tiles + thumbnail, JPEG augmentation), {workers} workers:")
    print(f"  {tiles / seconds:.1f} tiles/s = {len(dataset) / seconds:.1f} samples/s ({tiles / len(dataset):.1f} "
          "tiles per sample)")

    fed = _train(base, meta, root / "fed", "--dataloader_num_workers", str(workers))
    from internvl_chat import trainer as trainer_module

    dataset_small = _dataset(base, meta)
    items = [dataset_small[i] for i in range(len(dataset_small))]
    original = trainer_module.ChatTrainer.get_train_dataloader

    def from_memory(self):
        sampler = self._get_train_sampler()
        order = [i for i, _ in sampler]
        batches = [collate([items[i] for i in order[s:s + 8]]) for s in range(0, len(order), 8)]
        loader = torch.utils.data.DataLoader(batches, batch_size=None)
        return self.accelerator.prepare(loader)

    trainer_module.ChatTrainer.get_train_dataloader = from_memory
    try:
        memory = _train(base, meta, root / "memory2", "--dataloader_num_workers", "0")
    finally:
        trainer_module.ChatTrainer.get_train_dataloader = original
    ratio = fed["train_samples_per_second"] / memory["train_samples_per_second"]
    print(f"  training (tiny model, 56 px): {fed['train_samples_per_second']:.2f} samples/s fed by the loader "
          f"({workers} workers) vs {memory['train_samples_per_second']:.2f} from memory: {ratio:.2f}x")


def captions(root: Path, base: Path, images: int) -> None:
    from internvl.data.caption_benchmarks import BENCHMARKS, CaptionDataset, load_image_list, write_coco_karpathy
    from internvl.models.chat_model import InternVLChatModel
    from internvl.models.tokenization import load_tokenizer
    from internvl_chat.evaluate_caption import PROMPT, Tiler, collate_tiles

    write_coco_karpathy(root / "coco", images)
    spec = BENCHMARKS["coco"]
    items = load_image_list(root / spec.image_list, root / spec.image_root, spec.list_format)
    model, tokenizer = InternVLChatModel.from_pretrained(base).eval(), load_tokenizer(base)
    dataset = CaptionDataset(items, Tiler(56, True, 6, True))
    generation = dict(max_new_tokens=30, min_new_tokens=8, do_sample=False, num_beams=1)

    def batched(size):
        out = []
        for pixel_values, counts, keys in torch.utils.data.DataLoader(dataset, batch_size=size,
                                                                       collate_fn=collate_tiles):
            out += model.batch_chat(tokenizer, pixel_values, [PROMPT] * len(keys), generation, num_patches_list=counts)
        return out

    def single():
        return [model.chat(tokenizer, dataset[i][0], PROMPT, generation) for i in range(len(dataset))]

    with torch.inference_mode():
        batched(4)  # warm-up
        t_batch, a_batch = timed(lambda: batched(16))
        t_single, a_single = timed(single)
    print(f"\n[captions] {images} images, greedy 8..30 tokens: batch 16 {images / t_batch:.2f} images/s vs one at a time "
          f"{images / t_single:.2f} images/s: {t_single / t_batch:.2f}x; identical answers: {a_batch == a_single}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if sys.argv[1:2] == ["_child"]:
        return _child(json.loads(sys.argv[2]))
    parser.add_argument("parts", nargs="*", default=["padding", "packing", "loader", "captions"])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--workers", type=int, default=4, help="loader processes (the scripts' default)")
    parser.add_argument("--images", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import logging

    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base, meta = _setup(root)
        if "padding" in args.parts:
            padding(root, base, meta)
        if "packing" in args.parts:
            packing(root, base, args.threads)
        if "loader" in args.parts:
            loader(root, base, meta, args.workers)
        if "captions" in args.parts:
            captions(root, base, args.images)


if __name__ == "__main__":
    main()
