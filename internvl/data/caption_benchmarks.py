"""The caption benchmarks of the zero-shot captioning evaluations (COCO Karpathy test, Flickr30K Karpathy
test, NoCaps val): where their files live, their reader, and their synthetic writers, side by side.

InternVL-G (``internvl_g/evaluate.sh``) and InternVL-Chat (``internvl_chat/evaluate.sh``) caption the same
sets in the same upstream layouts, so the format knowledge lives here, once::

    from internvl.data.caption_benchmarks import BENCHMARKS, CaptionDataset, load_image_list
    spec = BENCHMARKS["coco"]
    items = load_image_list(data_root / spec.image_list, data_root / spec.image_root, spec.list_format)
    dataset = CaptionDataset(items, transform)          # (transform(image), image_id) per listed image

The reader checks every entry before a model is loaded: a wrong format names the file, the entry and
the fields expected; an id listed with two files and missing images are errors. It is the one reader of
COCO caption files (:func:`read_coco_captions`: the COCO caption format and BLIP's Karpathy list), which the
retrieval data (:mod:`internvl.data.retrieval`) and CLIP Benchmark's ``mscoco_captions`` read too, with one
image-id rule (:func:`karpathy_image_id`: ``image_id`` when an entry has one, else the number after the last
``_`` of the ``.jpg`` name, upstream's rules for its training and its caption evaluation).

Synthetic writers (tests and demos; images from :mod:`internvl.data.synthetic`):

``<id>`` below is the global sample index (``start`` .. ``start + num_images - 1``); it is the image
id of every format, so an image's references are found by the index it was drawn from. Write
benchmarks from different ``start`` blocks and they never share an image.

``write_coco_karpathy(root, num_images)`` -- ``root`` is ``data/coco``::

    root/val2014/COCO_val2014_<id:012d>.jpg
    root/annotations/coco_karpathy_test.json       [{"image": "val2014/COCO_val2014_000000000007.jpg",
                                                     "caption": ["...", ...]}, ...]
    root/annotations/coco_karpathy_test_gt.json    {"annotations": [{"image_id": 7, "caption": "...", "id": 35}, ...],
                                                    "images": [{"id": 7}, ...]}

  The image list is BLIP's Karpathy test file (the evaluator derives the image id from the digits
  after the last ``_`` of the file name, as upstream does); the ground truth is the COCO caption
  format that ``pycocotools.COCO`` loads.

``write_flickr30k_karpathy(root, num_images)`` -- ``root`` is ``data/flickr30k``::

    root/Images/<id:06d>.jpg
    root/flickr30k_test_karpathy.json              {"images": [{"file_name": "Images/000007.jpg", "id": 7}, ...],
                                                    "annotations": [{"image_id": 7, "caption": "...", "id": 35}, ...]}

  One COCO-format file is both the image list (paths relative to ``root``) and the ground truth.

``write_nocaps(root, num_images)`` -- ``root`` is ``data/nocaps``::

    root/images/<open_images_id>.jpg
    root/nocaps_val_4500_captions.json             {"info": {...}, "licenses": [],
                                                    "images": [{"id": 7, "file_name": "0000000000000007.jpg",
                                                                "open_images_id": "0000000000000007", "height": 64,
                                                                "width": 64, "domain": "near-domain"}, ...],
                                                    "annotations": [{"image_id": 7, "id": 70, "caption": "..."}, ...]}

  As the published nocaps val file: file names relative to ``root/images``, 10 references per
  image, images cycling through the in-, near- and out-domain splits.

References: COCO and Flickr30K carry 5 captions per image, NoCaps 10, as the real sets do. They
are ``reference_captions(sample, k)``: the kit's own English caption first, then rephrasings of the
same attributes with the casing and punctuation of human captions (the PTB tokenizer lowercases
and drops punctuation before scoring), so a model that learned the kit scores well but no single
phrasing matches all references.

Every writer refuses to write over an existing file or image folder, so a dataset is never a mix
of two runs (or of a real download and synthetic images).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Optional, Sequence

from ..errors import DataError, MissingFileError
from ..fileio import read_json
from .transforms import ImageDecodeError, open_image

if TYPE_CHECKING:  # the writers import the data kit (and torch) when they run, not the reader
    from .synthetic import Sample, SyntheticImages

__all__ = ["BENCHMARKS", "CaptionBenchmark", "CaptionImage", "load_image_list", "CaptionDataset", "CaptionedImage",
           "read_coco_captions", "karpathy_image_id", "KARPATHY_EXPECTED", "COCO_EXPECTED", "CAPTION_FILE_EXPECTED",
           "reference_captions", "write_coco_karpathy", "write_flickr30k_karpathy", "write_nocaps"]

@dataclass(frozen=True)
class CaptionBenchmark:
    """Where a benchmark's files live, relative to the data root (the upstream layout)."""

    image_root: str  # image paths in the image list are relative to this
    image_list: str  # which images to caption
    references: str  # COCO-format reference captions
    list_format: str  # "karpathy" (a list of {"image", "caption"}) or "coco" ({"images", "annotations"})


BENCHMARKS = {
    "coco": CaptionBenchmark("coco", "coco/annotations/coco_karpathy_test.json",
                             "coco/annotations/coco_karpathy_test_gt.json", "karpathy"),
    "flickr30k": CaptionBenchmark("flickr30k", "flickr30k/flickr30k_test_karpathy.json",
                                  "flickr30k/flickr30k_test_karpathy.json", "coco"),
    "nocaps": CaptionBenchmark("nocaps/images", "nocaps/nocaps_val_4500_captions.json",
                               "nocaps/nocaps_val_4500_captions.json", "coco"),
}


@dataclass(frozen=True)
class CaptionImage:
    image_id: int
    path: Path
    entry: str  # where it was listed, for error messages: "entry 12 of <file>: {...}"


@dataclass(frozen=True)
class CaptionedImage:
    """One image of a COCO caption file, as :func:`read_coco_captions` reads it."""

    file_name: str  # as listed: relative to the image root of the split
    captions: tuple[str, ...]  # in file order (empty when read with captions=False)
    image_id: int
    entry: str  # where it was listed, for messages: "images[3] of <file>: {...}" / "entry 3 of <file>: {...}"


KARPATHY_EXPECTED = ("the COCO Karpathy test format: a JSON list of "
                     "{'image': 'val2014/COCO_val2014_000000391895.jpg', 'caption': [...]} "
                     "(the image id is the number after the last '_')")
COCO_EXPECTED = ("a COCO-format caption file: a JSON object with 'images' (a list of {'id': int, 'file_name': str}) "
                 "and 'annotations' (a list of {'image_id': int, 'caption': str})")
CAPTION_FILE_EXPECTED = ("COCO captions: {'images': [{'id': int, 'file_name': str}], 'annotations': "
                         "[{'image_id': int, 'caption': str}]}, or BLIP's Karpathy list [{'image': str, 'caption': str "
                         "or [str], 'image_id': ...}]")
_EXPECTED = {"karpathy": KARPATHY_EXPECTED, "coco": COCO_EXPECTED, None: CAPTION_FILE_EXPECTED}
_DATA_HINT = "see data/README.md for the data layout"
_ID_AFTER_UNDERSCORE = re.compile(r"(?:^|_)(\d+)$")
_ID_IN_FILE_NAME = re.compile(r"_(\d+)\.jpg$")


def karpathy_image_id(entry: dict) -> Optional[int]:
    """The image id of an entry of BLIP's Karpathy list, by upstream's rules: its ``image_id`` (an integer, or
    the number after the last ``_`` of a string such as ``"coco_391895"``: upstream's retrieval training), else
    the number after the last ``_`` of the ``.jpg`` file name (``val2014/COCO_val2014_000000391895.jpg`` ->
    391895: upstream's caption evaluation). BLIP's files give the same number both ways. None: no id."""
    value = entry.get("image_id")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        match = _ID_AFTER_UNDERSCORE.search(value)
    else:
        match = _ID_IN_FILE_NAME.search(entry.get("image", ""))
    return int(match[1]) if match else None


def read_coco_captions(path: str | os.PathLike, layout: Optional[str] = None,
                       captions: bool = True) -> list[CaptionedImage]:
    """The images of a COCO caption file, in the order they are listed, with every entry checked.

    Two layouts of one content (see the module docs of this module and :mod:`internvl.data.retrieval`):
    ``"coco"``, the COCO caption format (``{"images": [{"id", "file_name"}], "annotations": [{"image_id",
    "caption"}]}``; ``file_name`` falls back to ``image``, as upstream reads it), and ``"karpathy"``, BLIP's
    Karpathy list (``[{"image", "caption": str or [str], "image_id"?}]``, one entry per image or per caption;
    the id by :func:`karpathy_image_id`). ``layout=None`` takes either.

    With ``captions`` (the retrieval sets), every image needs at least one caption; without it (the images
    to caption) captions are not read. A wrong layout, an entry without file name, id or caption, an
    annotation of an unlisted image, or one id listed with two file names is an error naming the file and
    the entry."""
    path = Path(path)
    expected = _EXPECTED[layout]
    content = read_json(path, "annotation file", expected, hint=_DATA_HINT)
    names: dict[int, str] = {}
    texts: dict[int, list[str]] = {}
    entries: dict[int, str] = {}

    def add_image(image_id: int, file_name, where: str) -> None:
        if not isinstance(file_name, str) or not file_name:
            raise DataError(f"{where} has no file name; expected {expected}")
        if names.setdefault(image_id, file_name) != file_name:
            raise DataError(f"image id {image_id} is listed twice: {entries[image_id]} and {where}, with two file "
                            f"names ({names[image_id]!r}, {file_name!r})")
        texts.setdefault(image_id, [])
        entries.setdefault(image_id, where)

    def add_caption(image_id: int, caption, where: str) -> None:
        if not isinstance(caption, str) or not caption.strip():
            raise DataError(f"{where} has no caption text; expected {expected}")
        texts[image_id].append(caption)

    is_coco = isinstance(content, dict) and isinstance(content.get("images"), list) \
        and (not captions or isinstance(content.get("annotations"), list))
    if layout in (None, "coco") and is_coco:
        for i, image in enumerate(content["images"]):
            where = f"images[{i}] of {path}: {str(image)[:160]}"
            image_id = image.get("id") if isinstance(image, dict) else None
            if not isinstance(image_id, int) or isinstance(image_id, bool):
                raise DataError(f"{where} needs an integer 'id' and a string 'file_name'; expected {expected}")
            add_image(image_id, image.get("file_name", image.get("image")), where)
        for i, annotation in enumerate(content["annotations"] if captions else ()):
            where = f"annotations[{i}] of {path}: {str(annotation)[:160]}"
            image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
            if image_id not in names:
                raise DataError(f"{where} refers to image id {image_id!r}, which 'images' does not list")
            add_caption(image_id, annotation.get("caption"), where)
    elif layout in (None, "karpathy") and isinstance(content, list):
        for i, entry in enumerate(content):
            where = f"entry {i} of {path}: {str(entry)[:160]}"
            if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
                raise DataError(f"{where} has no string 'image'; expected {expected}")
            image_id = karpathy_image_id(entry)
            if image_id is None:
                raise DataError(f"{where}: cannot read an image id from "
                                f"{entry.get('image_id', entry['image'])!r}; expected {expected}")
            add_image(image_id, entry["image"], where)
            if captions:
                caption = entry.get("caption")
                for text in caption if isinstance(caption, list) else [caption]:
                    add_caption(image_id, text, where)
    else:
        found = f"an object with keys {sorted(content)}" if isinstance(content, dict) else f"a JSON {type(content).__name__}"
        raise DataError(f"{path}: expected {expected}; found {found}")
    if not names:
        raise DataError(f"{path} lists no images")
    uncaptioned = [entries[i] for i, c in texts.items() if not c] if captions else []
    if uncaptioned:
        raise DataError(f"{len(uncaptioned)} image(s) of {path} have no caption, e.g. {uncaptioned[0]}; every image "
                        "of a retrieval set needs at least one")
    return [CaptionedImage(names[i], tuple(texts[i]), i, entries[i]) for i in names]


def load_image_list(path: str | Path, image_root: str | Path, list_format: str) -> list[CaptionImage]:
    """The images to caption, read as upstream's ``CaptionDataset`` reads them (:func:`read_coco_captions` with
    ``layout=list_format``, captions not read): a wrong format names the file, the entry and the fields
    expected; an id listed with two files and missing image files are errors (listing the first few), before
    any model is loaded."""
    if list_format not in ("karpathy", "coco"):
        raise ValueError(f"unknown image list format {list_format!r}: use 'karpathy' or 'coco'")
    path, image_root = Path(path), Path(image_root)
    items = [CaptionImage(image.image_id, image_root / image.file_name, image.entry)
             for image in read_coco_captions(path, layout=list_format, captions=False)]
    missing = [item for item in items if not item.path.is_file()]
    if missing:
        shown = "\n  ".join(f"{item.path} ({item.entry})" for item in missing[:5])
        raise MissingFileError(f"{len(missing)} of {len(items)} images listed in {path} are missing, e.g.:\n  "
                               f"{shown}\nimage paths are relative to {image_root}")
    return items


class CaptionDataset:
    """``(transform(image), image_id)`` per listed image (a map-style dataset for a DataLoader); an image
    that fails to decode names its entry."""

    def __init__(self, items: Sequence[CaptionImage], transform: Callable):
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        try:
            image = open_image(item.path)
        except FileNotFoundError as e:
            raise MissingFileError(f"{e} ({item.entry})") from None
        except ImageDecodeError as e:
            raise ImageDecodeError(f"{e} ({item.entry})") from None
        return self.transform(image), item.image_id


# ---- synthetic writers ---------------------------------------------------------------------------------

# Rephrasings after the kit's caption; the first four complete COCO / Flickr30K's five references.
_TEMPLATES = (
    "A {colour} {shape} on a {bg} background.",
    "There is a {colour} {shape} in the {position} of the picture.",
    "a {colour} {shape} placed in the {position}",
    "The image shows a {colour} {shape} in the {position}, against a {bg} pattern.",
    "A small {colour} {shape} sits in the {position} of a {bg} background.",
    "{Colour} {shape}, {position}, {bg} background.",
    "A {bg} background with a {colour} {shape} in the {position}.",
    "An image of a {colour} {shape}.",
    "The {colour} shape in the {position} is a {shape}.",
)
_NOCAPS_DOMAINS = ("in-domain", "near-domain", "out-domain")


def _background_adjective(background: str) -> str:
    from .synthetic import BACKGROUND_ADJECTIVES

    return BACKGROUND_ADJECTIVES[background]


def _kit_and_writer(kit: Optional[SyntheticImages]):
    from .synthetic import SyntheticImages, save_jpeg

    return kit or SyntheticImages(), save_jpeg


def reference_captions(sample: Sample, k: int = 5) -> list[str]:
    """``k`` (1..10) English reference captions of ``sample``: ``sample.caption_en`` and rephrasings."""
    if not 1 <= k <= len(_TEMPLATES) + 1:
        raise DataError(f"k must be in 1..{len(_TEMPLATES) + 1}, got {k}")
    words = dict(colour=sample.colour, Colour=sample.colour.capitalize(), shape=sample.shape,
                 position=sample.position, bg=_background_adjective(sample.background))
    return [sample.caption_en] + [template.format(**words) for template in _TEMPLATES[:k - 1]]


def _check_range(num_images: int, start: int) -> None:
    if num_images < 1 or start < 0:
        raise ValueError(f"need num_images >= 1 and start >= 0, got num_images={num_images}, start={start}")


def _refuse_existing(paths: Iterable[Path]) -> None:
    for path in paths:
        if path.exists():
            raise FileExistsError(f"{path} already exists; remove it first, a writer never mixes datasets")


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False))


def _coco_caption_file(images: list[dict], references: dict[int, list[str]], per_image: int) -> dict:
    """COCO caption format: annotation ids are ``image_id * per_image + j``, unique across the file."""
    annotations = [{"image_id": image_id, "caption": caption, "id": image_id * per_image + j}
                   for image_id, captions in references.items() for j, caption in enumerate(captions)]
    return {"annotations": annotations, "images": images}


def write_coco_karpathy(root: str | os.PathLike, num_images: int, kit: Optional[SyntheticImages] = None,
                        start: int = 0) -> Path:
    """Write ``num_images`` images with 5 references each as the COCO Karpathy test split under ``root``
    (``data/coco``): ``val2014/`` images, ``annotations/coco_karpathy_test.json`` and
    ``annotations/coco_karpathy_test_gt.json`` (see the module doc)."""
    _check_range(num_images, start)
    kit, save_jpeg = _kit_and_writer(kit)
    root = Path(root)
    image_dir, test_file = root / "val2014", root / "annotations" / "coco_karpathy_test.json"
    gt_file = root / "annotations" / "coco_karpathy_test_gt.json"
    _refuse_existing((image_dir, test_file, gt_file))
    image_dir.mkdir(parents=True)
    entries, references = [], {}
    for index in range(start, start + num_images):
        s = kit.sample(index)
        relative = f"val2014/COCO_val2014_{index:012d}.jpg"
        save_jpeg(s.image, root / relative)
        references[index] = reference_captions(s, 5)
        entries.append({"image": relative, "caption": references[index]})
    _write_json(test_file, entries)
    _write_json(gt_file, _coco_caption_file([{"id": i} for i in references], references, 5))
    return root


def write_flickr30k_karpathy(root: str | os.PathLike, num_images: int, kit: Optional[SyntheticImages] = None,
                             start: int = 0) -> Path:
    """Write ``num_images`` images with 5 references each as the Flickr30K Karpathy test split under ``root``
    (``data/flickr30k``): ``Images/`` and the COCO-format ``flickr30k_test_karpathy.json``."""
    _check_range(num_images, start)
    kit, save_jpeg = _kit_and_writer(kit)
    root = Path(root)
    image_dir, annotation_file = root / "Images", root / "flickr30k_test_karpathy.json"
    _refuse_existing((image_dir, annotation_file))
    image_dir.mkdir(parents=True)
    images, references = [], {}
    for index in range(start, start + num_images):
        s = kit.sample(index)
        relative = f"Images/{index:06d}.jpg"
        save_jpeg(s.image, root / relative)
        references[index] = reference_captions(s, 5)
        images.append({"file_name": relative, "id": index})
    _write_json(annotation_file, _coco_caption_file(images, references, 5))
    return root


def write_nocaps(root: str | os.PathLike, num_images: int, kit: Optional[SyntheticImages] = None,
                 start: int = 0) -> Path:
    """Write ``num_images`` images with 10 references each as NoCaps val under ``root`` (``data/nocaps``):
    ``images/`` and ``nocaps_val_4500_captions.json`` (see the module doc)."""
    _check_range(num_images, start)
    kit, save_jpeg = _kit_and_writer(kit)
    root = Path(root)
    image_dir, annotation_file = root / "images", root / "nocaps_val_4500_captions.json"
    _refuse_existing((image_dir, annotation_file))
    image_dir.mkdir(parents=True)
    images, references = [], {}
    for index in range(start, start + num_images):
        s = kit.sample(index)
        open_images_id = f"{index:016x}"  # Open Images ids are 16 hex digits
        save_jpeg(s.image, image_dir / f"{open_images_id}.jpg")
        references[index] = reference_captions(s, 10)
        images.append({"id": index, "file_name": f"{open_images_id}.jpg", "open_images_id": open_images_id,
                       "height": kit.image_size, "width": kit.image_size,
                       "domain": _NOCAPS_DOMAINS[index % len(_NOCAPS_DOMAINS)]})
    content = {"info": {"description": "synthetic stand-in for nocaps val, written by internvl.data.caption_benchmarks"},
               "licenses": [], **_coco_caption_file(images, references, 10)}
    _write_json(annotation_file, content)
    return root
