"""What the part-B benchmark families (MMBench / CCBench, ScienceQA, SEED, MMVP, Tiny-LVLM, MMMU, the GPT-judge
tasks, MVBench) share: one generation request (:class:`Item`), its pixels, data-file lookup, results-file names.

A family module (``mmbench.py``, ``multiple_choice.py``, ...) reads upstream's files under ``data/`` into
:class:`Item` s, each carrying the exact prompt upstream gives ``model.chat``; the evaluation loop generates one
answer per item; the family's ``finish`` turns the items and answers into upstream's results file, and its
``score`` reads such a file back (one written by upstream's scripts too) into a dict of metrics.

``data_root`` is the folder upstream calls ``data/`` (``internvl_chat/data`` in upstream's checkout). A path
upstream writes relative to its working directory (``data/scienceqa/images/...``) is read relative to the folder
above ``data_root``.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from PIL import Image

from internvl.data.chat_image import load_image
from internvl.errors import DataError, MissingFileError

ImageSource = Union[str, os.PathLike, Image.Image, Callable[[], Image.Image]]


@dataclass
class Item:
    """One question for the model: ``question`` is passed to ``model.chat`` as it is (without ``<image>``
    chat puts ``<image>\\n`` in front, as upstream relies on); ``images`` are tiled by :func:`item_pixels`
    unless ``pixels`` builds the input itself (MMMU's first-image rule, video frames); ``record`` is what the
    task's results file keeps beside the answer."""
    key: str
    question: str
    images: List[ImageSource] = field(default_factory=list)
    record: dict = field(default_factory=dict)
    max_new_tokens: int = 100
    min_new_tokens: int = 1
    pixels: Optional[Callable[..., Tuple[torch.Tensor, Optional[List[int]]]]] = None


def open_source(source: ImageSource) -> Image.Image:
    if callable(source) and not isinstance(source, Image.Image):
        source = source()
    return source


def image_tiles(image: ImageSource, input_size: int, dynamic: bool, max_num: int,
                use_thumbnail: bool) -> torch.Tensor:
    """Upstream's per-image input: with ``--dynamic`` the dynamic tiles (at most ``max_num``, thumbnail as the
    model's config says), else the whole image resized to one tile."""
    return load_image(open_source(image), input_size=input_size, max_num=max_num if dynamic else 1,
                      use_thumbnail=use_thumbnail)


def item_pixels(item: Item, input_size: int, dynamic: bool, max_num: int,
                use_thumbnail: bool) -> Tuple[Optional[torch.Tensor], Optional[List[int]]]:
    """``(pixel_values, num_patches_list)`` for ``item``; ``num_patches_list`` is None for one image."""
    if item.pixels is not None:
        return item.pixels(input_size=input_size, dynamic=dynamic, max_num=max_num, use_thumbnail=use_thumbnail)
    if not item.images:
        return None, None
    tiles = [image_tiles(im, input_size, dynamic, max_num, use_thumbnail) for im in item.images]
    if len(tiles) == 1:
        return tiles[0], None
    return torch.cat(tiles), [len(t) for t in tiles]


def need_file(data_root: Union[str, os.PathLike], relative: str, task: str, source: str) -> Path:
    """``data_root / relative``, or a one-line error naming the task, the file and where to get it."""
    path = Path(data_root) / relative
    if not path.exists():
        raise MissingFileError(f"{task}: {path} not found; {source} (layouts in data/README.md)")
    return path


def cwd_path(data_root: Union[str, os.PathLike], path: str) -> Path:
    """A path upstream writes relative to its working directory (``data/...``), read beside ``data_root``."""
    if os.path.isabs(path):
        return Path(path)
    if path.startswith("data/") or path.startswith("./data/"):
        return Path(data_root) / path.split("data/", 1)[1]
    return Path(data_root).parent / path


def read_jsonl(path: Union[str, os.PathLike]) -> List[dict]:
    """Every line of a JSONL file; a malformed line is an error naming ``file:line``."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: not a JSON object ({err.msg}); fix or remove the line") from None
    return rows


def read_json(path: Union[str, os.PathLike]) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise MissingFileError(f"{path} not found") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None


def require_keys(row: dict, keys: Sequence[str], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise DataError(f"{where}: missing key(s) {', '.join(map(repr, missing))}")


def time_prefix() -> str:
    """The stamp upstream puts in its results-file names (``%y%m%d%H%M%S``, local time)."""
    return time.strftime("%y%m%d%H%M%S", time.localtime())


def write_json(obj: Any, path: Union[str, os.PathLike], indent: Optional[int] = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent)
    os.replace(tmp, path)
    return path


def write_jsonl(rows: Sequence[dict], path: Union[str, os.PathLike]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)
    return path


def option_post_process(pred: str, option: dict) -> str:
    """The answer post-processing of upstream's MMBench, SEED, MMVP and MMMU scripts (one letter, else the
    first character when it is an option letter, else the first option whose text occurs in the answer,
    else the answer as it is). An empty answer stays empty (upstream's code raises IndexError on it)."""
    pred = pred.strip()
    if not pred:
        return pred
    option_candidate = list(option.keys())
    if len(pred) == 1:
        return pred
    elif len(pred) != 1 and pred[0] in option_candidate:
        return pred[0]
    elif len(pred) != 1 and pred[0] not in option_candidate:
        for k, v in option.items():
            if v in pred:
                return k
    return pred
