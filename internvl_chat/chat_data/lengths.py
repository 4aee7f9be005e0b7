"""Exact sample lengths: the tokens a sample will have, and its tiles, without decoding any image.

``--group_by_length`` and ``--use_packed_ds`` order and pack samples by length. Upstream estimates it (the
texts' tokens plus ``num_image_token x (max_dynamic_patch + use_thumbnail)`` for every sample, pure text
included, without the template); here a length is what :class:`.dataset.ChatDataset` will really build: the
conversation run through the template and tokenizer, with the image tokens of the tiles each image gets from
dynamic tiling. An image's size comes from its file header (``PIL.Image.open(...).size`` reads no pixels); a
video's frame count is the sample's own draw for the epoch (:meth:`ChatDataset.rng`), so no video is decoded.
A sample that will turn out unusable (missing or unreadable image, a tokenization mismatch) has length 1, its
void item's.

The lengths of a dataset are computed once and cached next to its JSONL file, as
``<annotation>.lengths.json``, keyed by the JSONL's size and modification time, the dataset's entry in the
meta json, the flags that change lengths (template, tile size and tokens, tiling, ``--max_seq_length``, the
frame range) and the tokenizer (class, vocabulary size, path). A changed key recomputes and rewrites the file;
a folder that cannot be written keeps the lengths in memory (logged once). Images changed in place behind an
unchanged JSONL are not noticed: delete the ``.lengths.json`` file after editing images.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

from .preprocess import UnusableSample

if TYPE_CHECKING:  # pragma: no cover
    from .dataset import ChatDataset

__all__ = ["sample_length", "dataset_lengths", "cache_key", "cache_path"]

log = logging.getLogger(__name__)

_VERSION = 1


def _image_size(path: str) -> tuple[int, int]:
    """Width and height from the file header (PIL opens lazily: no pixel is decoded)."""
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise UnusableSample(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UnusableSample(f"cannot read the header of image {path}: {err}") from None


def sample_length(dataset: "ChatDataset", index: int, epoch: int = 0) -> tuple[int, int]:
    """``(tokens, tiles)`` of sample ``index`` as :meth:`ChatDataset.build` will make it in ``epoch``
    (only video samples depend on the epoch); ``(1, 1)`` for a sample that will be a void item."""
    from .dataset import count_tiles, video_turns

    sample = dataset.samples[index]
    options = dataset.options
    try:
        if sample.video is not None:
            frames = dataset.rng(index, epoch).randint(options.min_num_frame, options.max_num_frame)
            turns, counts = video_turns(sample.turns, frames), [1] * frames
        else:
            sizes = [_image_size(path) for path in sample.images]
            max_num = dataset.tiles_per_image(len(sizes))
            turns, counts = sample.turns, [count_tiles(w, h, options, max_num) for w, h in sizes]
        tokenized = dataset.tokenize(sample, turns, counts)
    except UnusableSample:
        return 1, 1
    return len(tokenized.input_ids), max(1, sum(counts))  # a pure-text sample carries one (skipped) white tile


def cache_key(dataset: "ChatDataset") -> dict:
    """What the lengths depend on (see the module doc)."""
    spec, options, tokenizer = dataset.spec, dataset.options, dataset.tokenizer
    stat = os.stat(spec.annotation)
    return {"version": _VERSION, "annotation": os.fspath(spec.annotation), "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns, "root": os.fspath(spec.root), "repeat_time": spec.repeat_time,
            "max_dynamic_patch": dataset.max_dynamic_patch, "samples": len(dataset.samples),
            "template": options.template, "num_image_token": options.num_image_token,
            "image_size": options.image_size, "max_seq_length": options.max_seq_length,
            "dynamic_image_size": options.dynamic_image_size, "use_thumbnail": options.use_thumbnail,
            "min_dynamic_patch": options.min_dynamic_patch, "min_num_frame": options.min_num_frame,
            "max_num_frame": options.max_num_frame, "tokenizer": type(tokenizer).__name__,
            "vocab": len(tokenizer), "tokenizer_path": str(getattr(tokenizer, "name_or_path", ""))}


def cache_path(dataset: "ChatDataset") -> Path:
    annotation = Path(dataset.spec.annotation)
    return annotation.with_name(annotation.name + ".lengths.json")


def _read_cache(path: Path, key: dict):
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("ignoring the unreadable length cache %s (%s); recomputing", path, err)
        return None
    if stored.get("key") != key:
        return None
    tokens, tiles = stored.get("tokens"), stored.get("tiles")
    if not (isinstance(tokens, list) and isinstance(tiles, list) and len(tokens) == len(tiles) == key["samples"]):
        log.warning("ignoring the malformed length cache %s; recomputing", path)
        return None
    return tokens, tiles


def dataset_lengths(dataset: "ChatDataset", use_cache: bool = True) -> tuple[list, list]:
    """``(tokens, tiles)`` of every sample of ``dataset`` for epoch 0, from the cache when it is current."""
    key = cache_key(dataset)
    path = cache_path(dataset)
    if use_cache:
        cached = _read_cache(path, key)
        if cached is not None:
            log.info("dataset %s: sample lengths from %s", dataset.spec.name, path)
            return cached
    pairs = [sample_length(dataset, i) for i in range(len(dataset.samples))]
    tokens, tiles = [p[0] for p in pairs], [p[1] for p in pairs]
    if use_cache:
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        try:  # atomically: ranks computing at once each write the same content
            tmp.write_text(json.dumps({"key": key, "tokens": tokens, "tiles": tiles}), encoding="utf-8")
            os.replace(tmp, path)
            log.info("dataset %s: %d sample lengths computed and cached in %s", dataset.spec.name, len(tokens), path)
        except OSError as err:
            log.warning("dataset %s: cannot write the length cache %s (%s); lengths are recomputed at every start",
                        dataset.spec.name, path, err)
    return tokens, tiles

