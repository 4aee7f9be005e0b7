"""The loop every caption evaluation shares (InternVL-G's ``internvl_g/evaluate_caption.py`` and InternVL-Chat's
``internvl_chat/evaluate_caption.py``): shard the set over the ranks, caption it batch by batch, gather the
captions in set order, and on rank 0 score them and write the results::

    from internvl.eval.caption_eval import caption_in_shards, report_captions

    merged = caption_in_shards(dataset, caption_batch, info, batch_size=8, num_workers=2, collate_fn=collate,
                               desc="coco captions")           # [(id, caption)] of every rank, in set order
    report_captions("coco", merged, references, out_dir, prompt, settings={...})   # rank 0 scores and writes

``caption_batch(batch) -> [(id, caption), ...]`` is the model-specific part. Ranks take contiguous shards
(:func:`internvl.train.distributed.shard_indices`), so no image is captioned twice and the gathered list is in the
order of the set.
"""
from __future__ import annotations

import itertools
import json
import logging
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from .caption_metrics import average_length, score_captions, summary_line

# torch and the runtime are imported where they are used: the evaluators' --help and flag checks stay instant.

__all__ = ["check_caption_args", "caption_in_shards", "report_captions"]

log = logging.getLogger(__name__)


def check_caption_args(parser, args, known: Sequence[str], positive: Sequence[str] = ()) -> None:
    """The flag checks every caption evaluator shares: ``args.datasets`` (comma-separated) becomes a list of names
    from ``known``; ``--batch-size``, ``--num-beams``, ``--max-new-tokens`` and the ``positive`` flags are >= 1;
    ``0 <= --min-new-tokens <= --max-new-tokens``; ``--num-workers`` >= 0. Errors go through ``parser.error``."""
    args.datasets = [name.strip() for name in args.datasets.split(",") if name.strip()]
    unknown = [name for name in args.datasets if name not in known]
    if unknown or not args.datasets:
        parser.error(f"--datasets: unknown {unknown or 'empty list'}; choose from {', '.join(known)}")
    for flag in ("batch_size", "num_beams", "max_new_tokens", *positive):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    if not 0 <= args.min_new_tokens <= args.max_new_tokens:
        parser.error("--min-new-tokens must be between 0 and --max-new-tokens")
    if args.num_workers < 0:
        parser.error("--num-workers must be >= 0")


def caption_in_shards(dataset, caption_batch: Callable, info, batch_size: int, num_workers: int,
                      collate_fn: Callable, desc: str = "captioning") -> list:
    """Caption this rank's shard of ``dataset`` with ``caption_batch`` and return every rank's ``(id, caption)``
    pairs in the order of the set (``info``: :class:`internvl.train.distributed.DistInfo`)."""
    import torch
    from tqdm import tqdm

    from ..train.distributed import all_gather_object, shard_indices

    shard = torch.utils.data.Subset(dataset, shard_indices(len(dataset), info.world_size, info.rank))
    loader = torch.utils.data.DataLoader(shard, batch_size=batch_size, num_workers=num_workers,
                                         collate_fn=collate_fn, pin_memory=info.device.type == "cuda")
    start, local = time.perf_counter(), []
    for batch in tqdm(loader, desc=desc, disable=not info.is_main, dynamic_ncols=True):
        captions = caption_batch(batch)
        if not local:
            log.info("first captions: %s", [caption for _, caption in captions[:4]])
        local.extend(captions)
    seconds = time.perf_counter() - start
    merged = list(itertools.chain.from_iterable(all_gather_object(local)))
    log.info("%s: %d captions, %.2f per second on rank %d", desc, len(merged), len(local) / max(seconds, 1e-9),
             info.rank)
    return merged


def report_captions(name: str, merged: Sequence, references: Mapping, out_dir: str | Path, prompt: str,
                    settings: Optional[dict] = None, records: Optional[list] = None,
                    is_main: bool = True) -> Optional[list]:
    """On rank 0: write ``<name>_<yymmddHHMMSS>.json`` (``records``, by default upstream's ``[{"image_id",
    "caption"}]``), score ``merged`` against ``references``, print upstream's result line and write
    ``<name>_<stamp>_scores.json`` (scores, average length, ``settings``). Returns ``[name, prompt, average
    length, scores]`` on rank 0, None elsewhere; every rank waits for rank 0."""
    from ..train.distributed import barrier

    summary = None
    if is_main:
        avg_length = average_length(caption for _, caption in merged)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%y%m%d%H%M%S", time.localtime())
        captions_file = out_dir / f"{name}_{stamp}.json"
        if records is None:
            records = [{"image_id": int(i), "caption": c} for i, c in merged]
        captions_file.write_text(json.dumps(records, ensure_ascii=False))
        log.info("evaluating %s: %d captions", name, len(merged))
        scores = score_captions(references, dict(merged))
        print(summary_line(name, prompt, avg_length, scores), flush=True)
        scores_file = out_dir / f"{name}_{stamp}_scores.json"
        scores_file.write_text(json.dumps({"dataset": name, "prompt": prompt, "average_length": avg_length,
                                           "scores": scores, "num_images": len(merged),
                                           "captions_file": captions_file.name, **(settings or {})}, indent=2))
        log.info("wrote %s and %s", captions_file, scores_file)
        summary = [name, prompt, avg_length, scores]
    barrier()  # the other ranks wait while rank 0 scores
    return summary
