"""Zero-shot MSR-VTT retrieval with InternVL-C/G: upstream's ``video_retrieval/test_msrvtt.py``, same numbers.

What it computes, as upstream does: ``--num-frames`` frames per video at the centres of equal intervals
(:func:`internvl.data.video.interval_centres`), each frame through the model's image transform (upstream's
``CLIPImageProcessor``: shorter side to the image size, center crop, bicubic, ImageNet mean/std), the video
feature the mean of its frame features (``encode_image(mode=--mode)``), each caption ``summarize:`` +
caption, ``</s>`` appended, padded with id 0 to 80 tokens (``encode_text``), cosine similarities, then
recall@1/5/10 text -> video and video -> text, with upstream's dual-softmax re-scoring (its ``use_dsl=True``,
the numbers it prints) and without it (``..._no_dsl``). See :mod:`video_retrieval.metrics`.

Differences from upstream, all in what it accepts: the checkpoint is a flag (``--pretrained``, an HF
directory: OpenGVLab/InternVL-14B-224px or a fine-tune of it, LoRA adapters merged), frames are encoded in
batches of ``--batch-size`` videos, every video is opened before the model loads and the ones that are
missing, undecodable or too short for ``--num-frames`` are all listed by path (none skipped), and the
result is appended to ``--output`` as one JSON line.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Optional, Sequence

try:  # light imports only: --help answers without torch
    from internvl.errors import CheckpointError, ConfigError, MissingFileError, from_workers
    from internvl.fileio import append_json_line
    import video_retrieval  # noqa: F401 (the package, for the message below when it is not importable)
except ModuleNotFoundError as err:
    if err.name not in ("internvl", "video_retrieval"):
        raise
    raise SystemExit(f"error: {err}; install the suite (pip install -e . in the repository root) or put the "
                     "checkout on PYTHONPATH") from None

__all__ = ["MODEL_NAMES", "encode_videos", "encode_texts", "validate_msrvtt", "read_and_check", "load_model",
           "build_parser", "main"]

# clip_benchmark's names of the HF-directory models: the mode and the transform they stand for
MODEL_NAMES = {
    "internvl_c_classification_hf": ("InternVL-C", "classification"),
    "internvl_c_retrieval_hf": ("InternVL-C", "retrieval"),
    "internvl_g_classification_hf": ("InternVL-G", "classification"),
    "internvl_g_retrieval_hf": ("InternVL-G", "retrieval"),
}
DEFAULT_PRETRAINED = "pretrained/InternVL-14B-224px"
WEIGHTS_HELP = "see pretrained/README.md for the published checkpoints and where to put them"


def encode_videos(model, videos, mode: str, batch_size: int = 8, num_workers: int = 0, device: str = "cpu",
                  verbose: bool = True):
    """``(videos, D)``: the mean over each video's frames of ``model.encode_image(frames, mode)``, the frames of
    ``batch_size`` videos encoded in one call (``videos``: a dataset of ``(frames, 3, H, W)`` tensors)."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from internvl.data.workers import usable_workers

    dtype = next(model.parameters()).dtype
    workers = usable_workers(num_workers, "--num-workers")
    loader = DataLoader(videos, batch_size=batch_size, shuffle=False, num_workers=workers)
    rows = []
    with from_workers():  # a decode error raised in a worker keeps its one-line message
        for batch in tqdm(loader, desc="video features", disable=not verbose):
            b, t = batch.shape[:2]
            with torch.no_grad():
                features = model.encode_image(batch.flatten(0, 1).to(device, dtype), mode=mode)
            rows.append(features.float().unflatten(0, (b, t)).mean(1).cpu())
    return torch.cat(rows)


def encode_texts(model, tokenizer, captions: Sequence[str], batch_size: int = 32, device: str = "cpu",
                 verbose: bool = True):
    """``(texts, D)``: ``model.encode_text`` of each caption with the retrieval tokenizer's conventions."""
    import torch
    from tqdm import tqdm

    rows = []
    for start in tqdm(range(0, len(captions), batch_size), desc="text features", disable=not verbose):
        ids = tokenizer.tokenize(list(captions[start:start + batch_size])).input_ids
        with torch.no_grad():
            rows.append(model.encode_text(ids.to(device)).float().cpu())
    return torch.cat(rows)


def validate_msrvtt(model, tokenizer, transform, root: str, metadata: str, num_frames: int = 1,
                    mode: str = "InternVL-C", recall_k: Sequence[int] = (1, 5, 10), batch_size: int = 8,
                    num_workers: int = 0, device: str = "cpu", verbose: bool = True, pairs=None) -> dict:
    """Upstream's ``validate_msrvtt``: the metrics with DSL (upstream's keys) and without (``_no_dsl``).
    ``pairs``: the metadata as :func:`read_and_check` returned it (read and checked here when None)."""
    from internvl.data.video import VideoFrames
    from video_retrieval.metrics import retrieval_metrics
    if pairs is None:
        pairs = read_and_check(root, metadata, num_frames, recall_k)
    say = print if verbose else (lambda *a, **k: None)
    say("Computing text features", flush=True)
    texts = encode_texts(model, tokenizer, [p.caption for p in pairs], device=device, verbose=verbose)
    say("Computing video features", flush=True)
    videos = encode_videos(model, VideoFrames([p.video for p in pairs], num_frames, transform,
                                              [p.where for p in pairs]), mode,
                           batch_size, num_workers, device, verbose)
    say("Computing metrics", flush=True)
    texts = texts / texts.norm(dim=-1, keepdim=True)
    videos = videos / videos.norm(dim=-1, keepdim=True)
    scores = texts @ videos.T
    metrics = retrieval_metrics(scores, recall_k, use_dsl=True)
    metrics.update({f"{k}_no_dsl": v for k, v in retrieval_metrics(scores, recall_k, use_dsl=False).items()})
    return metrics


def read_and_check(root: str, metadata: str, num_frames: int, recall_k: Sequence[int] = (1, 5, 10)):
    """The metadata's (video, caption) pairs, every video opened: one error lists all that cannot be used."""
    from internvl.data.video import check_videos, read_msrvtt
    pairs = read_msrvtt(metadata, root)
    if max(recall_k) > len(pairs):
        raise ConfigError(f"recall@{max(recall_k)} needs at least that many videos; {metadata} lists {len(pairs)}")
    check_videos([p.video for p in pairs], num_frames, [p.where for p in pairs], listed_in=metadata,
                 help_text="see data/README.md (MSR-VTT)")
    return pairs


def load_model(pretrained: str, mode: str, task: str, device: str, dtype=None):
    """``(model, tokenizer, transform)`` of an InternVL-C/G HF directory, ready for ``mode`` (``dtype``: default
    bfloat16 on CUDA, as upstream, float32 on the CPU)."""
    import torch
    from internvl.compat import dtype_kwargs
    from internvl.models.internvl_cg import InternVLModel
    from internvl.models.processing_internvl_cg import build_cg_tokenizer, image_transform

    directory = Path(pretrained).expanduser()
    if not directory.exists():
        raise MissingFileError(f"--pretrained {directory} does not exist; it is an InternVL-C/G HF directory such as "
                               f"InternVL-14B-224px; {WEIGHTS_HELP}")
    if not (directory / "config.json").is_file():
        raise CheckpointError(f"--pretrained {directory} is not a Hugging Face directory (no config.json); for "
                              "internvl_c_13b_224px.pth use the clip_benchmark CLI's msrvtt dataset "
                              f"(clip_benchmark/README.md); {WEIGHTS_HELP}")
    dtype = dtype or (torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32)
    try:
        model = InternVLModel.from_pretrained(directory, low_cpu_mem_usage=True, **dtype_kwargs(dtype))
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"cannot load {directory} as InternVL-C/G: {e}") from None
    model.merge_lora()
    if mode == "InternVL-G" and not model.has_generative_part:
        raise CheckpointError(f"{directory} holds InternVL-C only (num_query_token=0); use --mode InternVL-C")
    try:
        tokenizer = build_cg_tokenizer(directory, task="retrieval")
    except (OSError, ValueError) as e:
        raise MissingFileError(f"no retrieval tokenizer in {directory}: {e}") from None
    model.requires_grad_(False)
    return model.to(device).eval(), tokenizer, image_transform(model.config, task=task)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="test_msrvtt.py", description="Zero-shot MSR-VTT text-video retrieval "
                                     "with InternVL-C/G (upstream's video_retrieval/test_msrvtt.py).")
    parser.add_argument("--video-root", required=True, help="folder the metadata's video names are relative to")
    parser.add_argument("--metadata", required=True, help="MSR-VTT 1k-A test JSON: [{\"video\", \"caption\"}, ...]")
    parser.add_argument("--mode", default=None, choices=["InternVL-C", "InternVL-G"],
                        help="which features (default InternVL-C, or the one --model names)")
    parser.add_argument("--num-frames", type=int, default=1, help="frames per video (default 1, as upstream)")
    parser.add_argument("--pretrained", default=DEFAULT_PRETRAINED,
                        help=f"InternVL-C/G HF directory (default {DEFAULT_PRETRAINED}; a fine-tune works too)")
    parser.add_argument("--model", default=None, choices=sorted(MODEL_NAMES),
                        help="clip_benchmark's name of an HF model: sets the mode and the transform (retrieval: "
                             "resize to a square; classification: center crop). Without it: upstream's center crop")
    parser.add_argument("--recall-k", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--batch-size", type=int, default=8, help="videos per forward pass (x --num-frames frames)")
    parser.add_argument("--num-workers", type=int, default=4, help="DataLoader workers decoding videos")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--output", default=None, help="append the result to this file as one JSON line")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    if args.num_frames < 1:
        raise ConfigError(f"--num-frames must be >= 1, got {args.num_frames}")
    mode, task = args.mode or "InternVL-C", "classification"
    if args.model:
        mode, task = MODEL_NAMES[args.model]
        if args.mode and args.mode != mode:
            raise ConfigError(f"--model {args.model} computes {mode} features but --mode is {args.mode}; give one")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pairs = read_and_check(args.video_root, args.metadata, args.num_frames, args.recall_k)  # before the model loads
    start = time.perf_counter()
    model, tokenizer, transform = load_model(args.pretrained, mode, task, device)
    metrics = validate_msrvtt(model, tokenizer, transform, args.video_root, args.metadata, args.num_frames, mode,
                              args.recall_k, args.batch_size, args.num_workers, device, verbose=not args.quiet,
                              pairs=pairs)
    print(json.dumps(metrics))
    if args.output:
        record = {"dataset": "msrvtt", "model": args.model or mode, "pretrained": args.pretrained,
                  "task": "zeroshot_retrieval", "mode": mode, "num_frames": args.num_frames, "metrics": metrics,
                  "seconds": round(time.perf_counter() - start, 1)}
        append_json_line(args.output, record)
    return 0


if __name__ == "__main__":
    from internvl.cli import run_main

    raise SystemExit(run_main(main))
