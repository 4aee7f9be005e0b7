"""``mscoco_captions``: COCO Karpathy test (``--language en``, 5000 images, 25,010 captions) and COCO-CN test
(``cn``, 1000 images, 1053 captions), in upstream's layout::

    <root>/val2014/COCO_val2014_<id>.jpg  <root>/train2014/COCO_train2014_<id>.jpg
    <root>/coco_test_karpathy.json       en: COCO captions, file names relative to val2014/ (train2014/ for --split train)
    <root>/coco-cn_test.json             cn: COCO captions, file names relative to <root> ("train2014/..." or
                                         "val2014/..."; upstream ships it: clip_benchmark/data/mscoco_captions/)

Both are COCO caption files (:func:`internvl.data.retrieval.read_coco_captions`; BLIP's Karpathy list
works too); ``--annotation_file`` replaces the file. Captions are cleaned with upstream's ``pre_caption``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence

from internvl.data.caption_benchmarks import reference_captions
from internvl.data.synthetic import SyntheticImages, save_jpeg
from internvl.data.retrieval import chinese_reference_captions, coco_caption_json, pre_caption, read_coco_captions

from .common import ListedImages, caption_file, check_images_exist

__all__ = ["CAPTION_FILES", "LAYOUT", "build", "write_mscoco_captions"]

CAPTION_FILES = {"en": "coco_{split}_karpathy.json", "cn": "coco-cn_{split}.json"}
LAYOUT = ("val2014/, train2014/ and coco_<split>_karpathy.json (en; file names relative to val2014/) / "
          "coco-cn_<split>.json (cn; file names relative to the root)")


def _image_dir(root: Path, split: str, language: str) -> Path:
    if language == "cn":
        return root
    return root / ("train2014" if split == "train" else "val2014")  # as CLIP Benchmark unpacks the archives


def build(root: Path, transform, split: str = "test", language: str = "en",
          annotation_file: Optional[str] = None, **_) -> ListedImages:
    captions_path = caption_file(root, CAPTION_FILES[language].format(split=split), annotation_file,
                                 "mscoco_captions", language, split)
    image_dir = _image_dir(root, split, language)
    images = read_coco_captions(captions_path)
    paths = [str(image_dir / image.file_name) for image in images]
    where = [image.entry for image in images]
    check_images_exist(paths, where, captions_path)
    return ListedImages(paths, [pre_caption(list(image.captions)) for image in images], transform, where)


def write_mscoco_captions(root: os.PathLike, num_images: int, split: str = "test",
                          languages: Sequence[str] = ("en", "cn"), kit: Optional[SyntheticImages] = None,
                          start: int = 0) -> Path:
    """Write ``num_images`` synthetic images as the COCO Karpathy (``en``: 5 English captions each, all in
    val2014/) and COCO-CN (``cn``: 1 Chinese caption each, 2 for every third image; the odd indices in
    train2014/, as COCO-CN mixes both) ``split`` under ``root``. Image ``<index>`` is
    ``COCO_<val|train>2014_<index:012d>.jpg``. Refuses to overwrite any file."""
    kit = kit or SyntheticImages()
    root = Path(root)
    files = {language: root / CAPTION_FILES[language].format(split=split) for language in languages}
    entries: dict[str, list] = {language: [] for language in languages}
    planned = {}
    for index in range(start, start + num_images):
        if "en" in languages:
            planned[f"val2014/COCO_val2014_{index:012d}.jpg"] = index
        if "cn" in languages:
            folder = "train2014" if index % 2 else "val2014"
            planned[f"{folder}/COCO_{folder}_{index:012d}.jpg"] = index
    for path in [*files.values(), *(root / name for name in planned)]:
        if path.exists():
            raise FileExistsError(f"{path} already exists; remove it first, a writer never mixes datasets")
    for name, index in planned.items():
        save_jpeg(kit.sample(index).image, root / name)
    for index in range(start, start + num_images):
        s = kit.sample(index)
        if "en" in languages:
            entries["en"].append((index, f"COCO_val2014_{index:012d}.jpg", reference_captions(s, 5)))
        if "cn" in languages:
            folder = "train2014" if index % 2 else "val2014"
            entries["cn"].append((index, f"{folder}/COCO_{folder}_{index:012d}.jpg",
                                  chinese_reference_captions(s, 2 if index % 3 == 0 else 1)))
    for language, path in files.items():
        path.write_text(json.dumps(coco_caption_json(entries[language]), ensure_ascii=False), encoding="utf-8")
    return root
