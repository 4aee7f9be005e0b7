"""Caption evaluation of InternVL-Chat: COCO Karpathy test, Flickr30K Karpathy test, NoCaps val, and your own data.

    GPUS=1 bash evaluate.sh pretrained/InternVL2-2B caption-coco --dynamic --auto       # run in internvl_chat/
    python -m internvl_chat.evaluate_caption --checkpoint DIR --datasets coco,flickr30k,nocaps
    python -m internvl_chat.evaluate_caption --checkpoint DIR --datasets custom --meta-path my_val.json

As upstream's ``eval/caption/evaluate_caption.py``: the question ``Provide a one-sentence caption for the
provided image.`` through ``model.chat``'s prompt, greedy decoding (``--num-beams``, forced to 1 with
``--dynamic`` as upstream), 8 to 30 new tokens, sampling only with ``--temperature`` > 0; tiles resized to
the model's size (``--dynamic``: dynamic tiling with at most ``--max-num`` tiles and the model's thumbnail
setting); BLEU-1..4, METEOR, ROUGE-L, CIDEr with pycocoevalcap (Java needed). Unlike upstream, images are
captioned in batches (``--batch-size``, answers equal to one at a time) and ranks take contiguous shards.

``custom`` evaluates on data in the fine-tuning format (a meta json and its JSONL files, e.g. a held-out
split, or the training data itself): every ``gpt`` turn is a reference and the model answers the
``human`` turn before it, given the conversation's earlier turns (with their reference answers) as
history. Single-image and pure-text first questions are batched, the rest answered one by one. The
answers file lists each with its ``file:line``, question and reference.

A LoRA fine-tuning output directory evaluates as it is (the adapters are applied on load); so does a
merged one. ``--auto`` spreads the language model's layers over the visible GPUs (harmless on one).
Results: ``<out-dir>/<dataset>_<yymmddHHMMSS>.json`` and ``..._scores.json``, and upstream's result line.
"""
from __future__ import annotations

import argparse
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from internvl.data.caption_benchmarks import BENCHMARKS, CaptionDataset, load_image_list
from internvl.eval.caption_eval import caption_in_shards, check_caption_args, report_captions
from internvl.eval.caption_metrics import check_java, load_coco_references, print_summaries
from internvl.cli import run_main
from internvl.errors import DataError

from .loading import (add_inference_flags, generation_config, greedy_with_dynamic, load_model, max_tiles)

if TYPE_CHECKING:  # torch itself is imported where it is used, so --help and flag errors are instant
    import torch

log = logging.getLogger("internvl_chat.evaluate_caption")

PROMPT = "Provide a one-sentence caption for the provided image."
CUSTOM = "custom"


# ------------------------------------------------------------------------------------------------ flags
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m internvl_chat.evaluate_caption", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="InternVL-Chat directory (fine-tuned, LoRA or merged)")
    p.add_argument("--datasets", default="coco,flickr30k,nocaps",
                   help=f"comma-separated, from {', '.join(BENCHMARKS)} and {CUSTOM} (needs --meta-path)")
    p.add_argument("--meta-path", "--meta_path", dest="meta_path", help="custom: meta json of the data to evaluate on")
    p.add_argument("--max-samples", type=int, help="custom: evaluate only the first N samples")
    p.add_argument("--data-root", default="data", help="directory holding coco/, flickr30k/, nocaps/")
    p.add_argument("--out-dir", default="results")
    p.add_argument("--prompt", default=PROMPT, help="the caption question of the benchmarks")
    p.add_argument("--batch-size", type=int, default=8, help="questions per generate call, per rank")
    p.add_argument("--min-new-tokens", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=30)
    p.add_argument("--num-segments", type=int, default=8, help="frames of a video sample")
    add_inference_flags(p, None, "most tiles per image with --dynamic (default: the checkpoint's max_dynamic_patch, "
                                 "as it was trained)")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_caption_args(parser, args, [*BENCHMARKS, CUSTOM], positive=("num_segments",))
    if args.max_num is not None and args.max_num < 1:
        parser.error("--max-num must be >= 1")
    if CUSTOM in args.datasets and not args.meta_path:
        parser.error(f"--datasets {CUSTOM} needs --meta-path (a meta json in the fine-tuning format)")
    greedy_with_dynamic(args)
    return args


# ------------------------------------------------------------------------------------------------ model
# ------------------------------------------------------------------------------------------------ inputs
class Tiler:
    """Image -> ``(tiles, 3, S, S)``: one resized tile, or dynamic tiling with ``--dynamic`` (as upstream)."""

    def __init__(self, image_size: int, dynamic: bool, max_num: int, use_thumbnail: bool):
        from internvl.data.transforms import build_transform

        self.transform = build_transform(image_size, "resize")
        self.image_size, self.dynamic, self.max_num, self.use_thumbnail = image_size, dynamic, max_num, use_thumbnail

    def __call__(self, image) -> torch.Tensor:
        import torch

        from internvl.data.chat_image import dynamic_preprocess

        tiles = (dynamic_preprocess(image, max_num=self.max_num, image_size=self.image_size,
                                    use_thumbnail=self.use_thumbnail) if self.dynamic else [image])
        return torch.stack([self.transform(tile) for tile in tiles])


def collate_tiles(batch):
    """``[(tiles, key), ...]`` -> ``(all tiles, tiles per item, keys)``; text-only items have ``tiles=None``."""
    import torch

    tiles, keys = zip(*batch)
    present = [t for t in tiles if t is not None]
    return (torch.cat(present) if present else None), [0 if t is None else len(t) for t in tiles], list(keys)


@dataclass
class Question:
    """One answer to predict: the question, the conversation before it, its media, its reference(s)."""

    key: int
    where: str
    question: str
    history: list = field(default_factory=list)
    images: list = field(default_factory=list)
    video: Optional[str] = None
    references: list = field(default_factory=list)
    tile_counts: list = field(default_factory=list)  # tiles of each image, for multi-image questions
    system: Optional[str] = None  # the sample's own system message, if it has one

    @property
    def batchable(self) -> str:
        """``"image"`` / ``"text"`` for the questions batch_chat can answer together, else ``""``."""
        if self.history or self.video or self.system is not None:
            return ""
        if not self.images:
            return "text"
        return "image" if len(self.images) == 1 and self.question.count("<image>") == 1 else ""


def custom_questions(meta_path: str, max_samples: Optional[int] = None) -> list:
    """Every gpt turn of every sample of the meta json's datasets (see the module doc)."""
    from .chat_data.chat_jsonl import load_samples, read_meta

    questions, problems, taken = [], [], 0
    for spec in read_meta(meta_path):
        samples, bad = load_samples(spec)
        problems += bad
        for sample in samples:
            if max_samples is not None and taken >= max_samples:
                break
            taken += 1
            history = []
            for k in range(0, len(sample.turns), 2):
                question, answer = sample.turns[k][1], sample.turns[k + 1][1]
                questions.append(Question(len(questions), f"{sample.where}#{k // 2 + 1}", question, list(history),
                                          sample.images, sample.video, [answer], system=sample.system))
                history.append((question, answer))
    if problems:
        shown = "\n  ".join(str(p) for p in problems[:10])
        raise DataError(f"{len(problems)} sample(s) of {meta_path} are unusable:\n  {shown}\nrun `python -m "
                        "internvl_chat.chat_data check` on the same meta json for the whole list")
    if not questions:
        raise DataError(f"{meta_path}: no sample to evaluate on")
    return questions


class QuestionDataset:  # map-style, for a torch DataLoader
    """``(tiles or None, key)`` per question; a video's frames one tile each."""

    def __init__(self, questions: Sequence[Question], tiler: Tiler, num_segments: int):
        self.questions, self.tiler, self.num_segments = list(questions), tiler, num_segments

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, index: int):
        from internvl.data.chat_image import load_video
        from internvl.data.transforms import open_image

        q = self.questions[index]
        if q.video:
            tiles, _ = load_video(q.video, num_segments=self.num_segments, input_size=self.tiler.image_size, max_num=1)
            return tiles, q.key
        if not q.images:
            return None, q.key
        import torch

        return torch.cat([self.tiler(open_image(path)) for path in q.images]), q.key


def _prompt_of(q: Question, num_frames: int) -> tuple[str, list]:
    """The question (and history) as the model gets it: ``<video>`` becomes training's frame lines."""
    def frames(text: str) -> str:
        lines = "".join(f"Frame-{i}: <image>\n" for i in range(1, num_frames + 1))
        return text.replace("<video>\n", lines).replace("<video>", lines)

    if q.video:
        return frames(q.question), [(frames(a), b) for a, b in q.history]
    return q.question, list(q.history)


def answer_batch(model, tokenizer, q_by_key: dict, batch, generation: dict, dtype) -> list:
    pixel_values, counts, keys = batch
    device = model.get_input_embeddings().weight.device
    pixel_values = pixel_values.to(device, dtype) if pixel_values is not None else None
    questions = [q_by_key[k] for k in keys]
    if len(keys) > 1 or questions[0].batchable:
        answers = model.batch_chat(tokenizer, pixel_values, [q.question for q in questions], generation,
                                   num_patches_list=counts if pixel_values is not None else None)
        return list(zip(keys, answers))
    q = questions[0]
    question, history = _prompt_of(q, counts[0] if q.video else 0)
    per_image = [1] * counts[0] if q.video else q.tile_counts if len(q.images) > 1 else [counts[0]]
    default_system = model.system_message
    if q.system is not None:  # as in training: the sample's system turn replaces the template's message
        model.system_message = q.system
    try:
        answer = model.chat(tokenizer, pixel_values, question, generation, history=history or None,
                            num_patches_list=per_image if pixel_values is not None else None)
    finally:
        model.system_message = default_system
    return [(keys[0], answer)]


# ------------------------------------------------------------------------------------------------ main
def evaluate(args: argparse.Namespace) -> list:
    from internvl.train.distributed import cleanup_distributed, init_distributed, seed_everything, setup_logging

    info = init_distributed()
    setup_logging(info.rank, log_file=Path(args.out_dir) / "log_rank0.txt")  # errors too (run_main)
    seed_everything(args.seed, info.rank)
    random.seed(args.seed)
    try:
        if info.is_main:
            log.info("java: %s", check_java())
        data_root = Path(args.data_root)
        sets = {}
        for name in args.datasets:  # every annotation file read and checked before the model loads
            if name == CUSTOM:
                sets[name] = custom_questions(args.meta_path, args.max_samples)
            else:
                spec = BENCHMARKS[name]
                sets[name] = load_image_list(data_root / spec.image_list, data_root / spec.image_root,
                                             spec.list_format)
        model, tokenizer, dtype = load_model(args, info.device)
        args.max_num = max_tiles(model.config, args.max_num)
        tiler = Tiler(model.config.image_size, args.dynamic, args.max_num, model.config.use_thumbnail)
        generation = generation_config(args, args.max_new_tokens, args.min_new_tokens)
        log.info("%s on %s in %s, %d rank(s); %d px tiles%s; %s", args.checkpoint, info.device,
                 str(dtype).replace("torch.", ""), info.world_size, tiler.image_size,
                 f", dynamic up to {args.max_num}" if args.dynamic else "", generation)
        settings = {"checkpoint": str(args.checkpoint), "dtype": str(dtype).replace("torch.", ""),
                    "world_size": info.world_size, "generation": generation, "dynamic": args.dynamic,
                    "max_num": args.max_num, "batch_size": args.batch_size}
        summaries = []
        for name, items in sets.items():
            if name == CUSTOM:
                summary = _evaluate_custom(items, model, tokenizer, tiler, generation, dtype, args, info, settings)
            else:
                summary = _evaluate_benchmark(name, items, data_root, model, tokenizer, tiler, generation, dtype, args,
                                              info, settings)
            if summary:
                summaries.append(summary)
        print_summaries(summaries, info.is_main)
        return summaries
    finally:
        cleanup_distributed()


def _evaluate_benchmark(name, items, data_root, model, tokenizer, tiler, generation, dtype, args, info, settings):
    import torch

    references = load_coco_references(data_root / BENCHMARKS[name].references) if info.is_main else {}

    def caption(batch):
        pixel_values, counts, keys = batch
        pixel_values = pixel_values.to(model.get_input_embeddings().weight.device, dtype)
        answers = model.batch_chat(tokenizer, pixel_values, [args.prompt] * len(keys), generation,
                                   num_patches_list=counts)
        return list(zip(keys, answers))

    with torch.inference_mode():
        merged = caption_in_shards(CaptionDataset(items, tiler), caption, info, args.batch_size, args.num_workers,
                                   collate_tiles, desc=f"{name} captions")
    return report_captions(name, merged, references, args.out_dir, args.prompt, settings, is_main=info.is_main)


def _evaluate_custom(questions, model, tokenizer, tiler, generation, dtype, args, info, settings):
    import torch

    from internvl.data.transforms import open_image

    by_key = {q.key: q for q in questions}
    for q in questions:  # tiles per image of multi-image questions (sizes only: no pixels decoded twice)
        if len(q.images) > 1:
            q.tile_counts = [len(tiler(open_image(p))) for p in q.images]
    merged = []
    with torch.inference_mode():
        for group in ("image", "text", ""):
            chosen = [q for q in questions if q.batchable == group]
            if not chosen:
                continue
            dataset = QuestionDataset(chosen, tiler, args.num_segments)
            merged += caption_in_shards(
                dataset, lambda batch: answer_batch(model, tokenizer, by_key, batch, generation, dtype), info,
                args.batch_size if group else 1, args.num_workers, collate_tiles,
                desc=f"{CUSTOM} answers ({group or 'one by one'})")
    merged.sort(key=lambda pair: pair[0])
    references = {q.key: q.references for q in questions}
    records = [{"id": k, "where": by_key[k].where, "question": by_key[k].question, "answer": a,
                "references": by_key[k].references} for k, a in merged]
    return report_captions(CUSTOM, merged, references, args.out_dir, f"{args.meta_path}", settings, records=records,
                           is_main=info.is_main)


def main(argv: Optional[Sequence[str]] = None) -> int:
    evaluate(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
