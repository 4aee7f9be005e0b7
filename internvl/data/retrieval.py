"""Image-text retrieval data shared by the retrieval fine-tuning (``internvl_g``) and the zero-shot retrieval
evaluation (``clip_benchmark``): the Flickr30K caption files, COCO caption files, upstream's caption
cleaning, and their synthetic writers. Which split file a subproject opens is the subproject's business;
the formats are read and written here, once::

    from internvl.data.retrieval import pre_caption, read_flickr_captions, read_coco_captions
    rows = read_flickr_captions("data/flickr30k/flickr30k_cn_test.txt")   # FlickrCaption(image, caption, line)
    images = read_coco_captions("data/mscoco_captions/coco-cn_test.json")  # CaptionedImage(file_name, captions, ...)
    pre_caption("A dog (brown) runs!")                                     # 'a dog brown runs'

Formats
-------

Flickr30K caption file (``flickr30k_{split}_karpathy.txt``, Flickr30K-CN ``flickr30k_cn_{split}.txt``):
UTF-8 text, a header line ``image,caption``, then one caption per line, ``<image id>.jpg,<caption>``,
split at the first ``.jpg,`` (captions may hold commas); an image has as many lines as captions. Images
live in ``<root>/Images/<image id>.jpg``. Empty lines are ignored. Read by upstream's ``FlickrDataset``
(training) and by the CLIP Benchmark ``flickr30k`` dataset (evaluation).

COCO caption files, two layouts of one content (image file name + captions), both read by
:func:`read_coco_captions` (defined in :mod:`internvl.data.caption_benchmarks`, the one reader of COCO caption
files: the caption evaluations read their image lists with it too):

* COCO caption format (``coco_{split}_karpathy.json`` of CLIP Benchmark, COCO-CN ``coco-cn_{split}.json``):
  ``{"images": [{"id": 7, "file_name": ...}], "annotations": [{"image_id": 7, "caption": ...}]}``;
* BLIP's Karpathy list (``coco_karpathy_{split}.json``): ``[{"image": "val2014/COCO_val2014_...jpg",
  "caption": "..." or [...], "image_id": "coco_7"}]``; an image listed once per caption (train) or with a list
  of captions (test). The image id is ``image_id`` (an integer, or the number after the last ``_`` of
  ``"coco_<n>"``), else the number after the last ``_`` of the ``.jpg`` file name: upstream's rules for its
  training and caption-evaluation files, which give the same number on BLIP's files.

Caption cleaning (:func:`pre_caption`, upstream's ``pre_caption`` of training and evaluation): lower-case,
each of ``.!"()*#:;~`` becomes a space, runs of spaces collapse to one, leading/trailing spaces go, and
at most 50 space-separated words are kept. Chinese text passes through unchanged but for those ASCII
marks.

Synthetic writers (tests and demos; images from :mod:`internvl.data.synthetic`, caption ``k`` of
an image in English from :func:`internvl.data.caption_benchmarks.reference_captions`, in Chinese from
:func:`chinese_reference_captions`):

``write_flickr30k(root, num_images, split, languages)`` -- ``root`` is ``data/flickr30k``::

    root/Images/<index:06d>.jpg
    root/flickr30k_<split>_karpathy.txt     (language "en")   image,caption / 000007.jpg,A red circle ...
    root/flickr30k_cn_<split>.txt           (language "cn")   image,caption / 000007.jpg,图片左上方有...

  ``<index>`` is the kit's sample index (``start`` .. ``start + num_images - 1``), so splits written from
  disjoint ``start`` blocks share the ``Images/`` folder and never an image, as the real splits do.

``write_coco_karpathy_train(root, num_images)`` -- ``root`` is ``data/coco``, BLIP's training list, one entry per
caption, as the retrieval fine-tune reads it::

    root/train2014/COCO_train2014_<index:012d>.jpg
    root/annotations/coco_karpathy_train.json   [{"image": "train2014/COCO_train2014_...jpg", "caption": "...",
                                                  "image_id": "coco_<index>"}, ...]
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from .caption_benchmarks import CaptionedImage, read_coco_captions, reference_captions
from .synthetic import ZH, Sample, SyntheticImages, save_jpeg
from ..errors import DataError, MissingFileError

__all__ = ["pre_caption", "FlickrCaption", "read_flickr_captions", "write_flickr_captions", "FLICKR30K_CAPTION_FILES",
           "flickr30k_caption_file", "CaptionedImage", "read_coco_captions", "coco_caption_json",
           "chinese_reference_captions", "write_flickr30k", "write_coco_karpathy_train"]

_PUNCTUATION = re.compile(r"([.!\"()*#:;~])")
_SPACES = re.compile(r"\s{2,}")


def pre_caption(caption: Union[str, Sequence[str]], max_words: int = 50) -> Union[str, list[str]]:
    """Upstream's caption cleaning (see the module doc); a list is cleaned element-wise."""
    if not isinstance(caption, str):
        return [pre_caption(c, max_words) for c in caption]
    caption = _SPACES.sub(" ", _PUNCTUATION.sub(" ", caption.lower())).rstrip("\n").strip(" ")
    words = caption.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else caption


# ---- Flickr30K caption files ------------------------------------------------------------------------------

FLICKR_HEADER = "image,caption"
_FLICKR_SEPARATOR = ".jpg,"
_FLICKR_EXPECTED = f"a header line '{FLICKR_HEADER}', then '<image id>.jpg,<caption>' lines"

# The caption file of each language, as upstream names them (root: data/flickr30k).
FLICKR30K_CAPTION_FILES = {"en": "flickr30k_{split}_karpathy.txt", "cn": "flickr30k_cn_{split}.txt"}


def flickr30k_caption_file(split: str, language: str) -> str:
    if language not in FLICKR30K_CAPTION_FILES:
        raise ValueError(f"no Flickr30K caption file for language {language!r}; "
                         f"known: {sorted(FLICKR30K_CAPTION_FILES)}")
    return FLICKR30K_CAPTION_FILES[language].format(split=split)


@dataclass(frozen=True)
class FlickrCaption:
    image: str  # "1000092795.jpg", relative to <root>/Images
    caption: str  # as written: clean it with pre_caption
    line: int  # 1-based line number in the file, for messages


def read_flickr_captions(path: Union[str, os.PathLike]) -> list[FlickrCaption]:
    """Every caption of a Flickr30K caption file, in file order (see the module doc). A missing file, a
    first line that is not the header, a line without ``.jpg,`` or with an empty caption is an error
    naming ``file:line``."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"caption file not found: {path} (expected {_FLICKR_EXPECTED}; "
                               "see data/README.md for where to get it)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e}); expected {_FLICKR_EXPECTED}") from None
    if not lines:
        raise DataError(f"{path} is empty; expected {_FLICKR_EXPECTED}")
    if _FLICKR_SEPARATOR in lines[0]:
        # Upstream skips the first line whatever it holds: a file without the header would lose a caption.
        raise DataError(f"{path}:1: expected the header line '{FLICKR_HEADER}', found a caption line "
                        f"{lines[0][:80]!r}; add the header")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        line = line.strip()
        if not line:
            continue
        image, separator, caption = line.partition(_FLICKR_SEPARATOR)
        if not separator or not image or not caption.strip():
            raise DataError(f"{path}:{number}: malformed line {line[:80]!r}; expected '<image id>.jpg,<caption>'")
        rows.append(FlickrCaption(image + ".jpg", caption, number))
    if not rows:
        raise DataError(f"{path} holds no captions; expected {_FLICKR_EXPECTED}")
    return rows


def write_flickr_captions(path: Union[str, os.PathLike], rows: Iterable[tuple[str, str]]) -> Path:
    """Write ``(image file name, caption)`` pairs as a Flickr30K caption file (header first)."""
    path = Path(path)
    lines = [FLICKR_HEADER]
    for image, caption in rows:
        if not image.endswith(".jpg") or "\n" in caption or not caption.strip():
            raise ValueError(f"cannot write ({image!r}, {caption!r}): the image must be a .jpg name and the "
                             "caption one non-empty line")
        lines.append(f"{image},{caption}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---- COCO caption files ----------------------------------------------------------------------------------

def coco_caption_json(images: Sequence[tuple[int, str, Sequence[str]]]) -> dict:
    """``(image id, file name, captions)`` triples -> the COCO caption format (annotation ids numbered
    in order from 1)."""
    annotations, next_id = [], 1
    for image_id, _, captions in images:
        for caption in captions:
            annotations.append({"image_id": image_id, "id": next_id, "caption": caption})
            next_id += 1
    return {"images": [{"id": image_id, "file_name": name} for image_id, name, _ in images],
            "annotations": annotations}


# ---- synthetic writers -------------------------------------------------------------------------------------

_ZH_TEMPLATES = (
    "{bg}背景上有一个{colour}的{shape}。",
    "一个{colour}{shape}位于图片的{position}。",
    "这是一张{colour}{shape}的图片。",
    "{position}是一个{colour}的{shape}，背景是{bg}图案。",
    "图中有一个{shape}，它是{colour}的。",
)


def chinese_reference_captions(sample: Sample, k: int = 5) -> list[str]:
    """``k`` (1..6) Chinese captions of ``sample``: ``sample.caption_zh`` and rephrasings of its attributes."""
    if not 1 <= k <= len(_ZH_TEMPLATES) + 1:
        raise ValueError(f"k must be in 1..{len(_ZH_TEMPLATES) + 1}, got {k}")
    words = dict(colour=ZH[sample.colour], shape=ZH[sample.shape], position=ZH[sample.position],
                 bg=ZH[sample.background])
    return [sample.caption_zh] + [template.format(**words) for template in _ZH_TEMPLATES[:k - 1]]


def _captions_in(language: str, sample: Sample, k: int) -> list[str]:
    return reference_captions(sample, k) if language == "en" else chinese_reference_captions(sample, k)


def write_flickr30k(root: Union[str, os.PathLike], num_images: int, split: str = "test",
                    languages: Sequence[str] = ("en",), per_image: int = 5, kit: Optional[SyntheticImages] = None,
                    start: int = 0) -> Path:
    """Write ``num_images`` images with ``per_image`` captions each as the Flickr30K ``split`` of each of
    ``languages`` ("en", "cn") under ``root`` (see the module doc). Refuses to overwrite a caption file or
    an image."""
    if num_images < 1 or start < 0:
        raise ValueError(f"need num_images >= 1 and start >= 0, got {num_images}, {start}")
    kit = kit or SyntheticImages()
    root = Path(root)
    files = {language: root / flickr30k_caption_file(split, language) for language in languages}
    images = {index: root / "Images" / f"{index:06d}.jpg" for index in range(start, start + num_images)}
    for path in [*files.values(), *images.values()]:
        if path.exists():
            raise FileExistsError(f"{path} already exists; remove it first, a writer never mixes datasets")
    rows: dict[str, list[tuple[str, str]]] = {language: [] for language in languages}
    for index, path in images.items():
        s = kit.sample(index)
        save_jpeg(s.image, path)
        for language in languages:
            rows[language] += [(path.name, caption) for caption in _captions_in(language, s, per_image)]
    for language, path in files.items():
        write_flickr_captions(path, rows[language])
    return root


def write_coco_karpathy_train(root: Union[str, os.PathLike], num_images: int, per_image: int = 5,
                              kit: Optional[SyntheticImages] = None, start: int = 0) -> Path:
    """Write ``num_images`` images with ``per_image`` English captions each as BLIP's COCO Karpathy training list
    under ``root`` (see the module doc). Refuses to overwrite the list or an image."""
    if num_images < 1 or start < 0:
        raise ValueError(f"need num_images >= 1 and start >= 0, got {num_images}, {start}")
    kit = kit or SyntheticImages()
    root = Path(root)
    listing = root / "annotations" / "coco_karpathy_train.json"
    images = {index: f"train2014/COCO_train2014_{index:012d}.jpg" for index in range(start, start + num_images)}
    for path in [listing, *(root / name for name in images.values())]:
        if path.exists():
            raise FileExistsError(f"{path} already exists; remove it first, a writer never mixes datasets")
    entries = []
    for index, name in images.items():
        s = kit.sample(index)
        save_jpeg(s.image, root / name)
        entries += [{"image": name, "caption": caption, "image_id": f"coco_{index}"}
                    for caption in _captions_in("en", s, per_image)]
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")
    return root
