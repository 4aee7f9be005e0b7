"""``flickr30k``: Flickr30K (``--language en``), Flickr30K-CN (``cn``) and CLIP Benchmark's machine-translated
Chinese captions (``zh``), 1000 test images with 5 captions each, in upstream's layout::

    <root>/Images/<image id>.jpg                 (CLIP Benchmark's flat layout, <root>/<image id>.jpg, also works)
    <root>/flickr30k_test_karpathy.txt           en
    <root>/flickr30k_cn_test.txt                 cn (upstream ships it: clip_benchmark/data/flickr30k/)
    <root>/flickr30k_test_zh.txt                 zh

The caption files are the Flickr30K format of :mod:`internvl.data.retrieval` (``image,caption`` header,
``<id>.jpg,<caption>`` lines); ``--split`` picks ``test`` / ``val`` / ``train`` in the names and
``--annotation_file`` replaces the file. Captions are cleaned with upstream's ``pre_caption``, every language.
The synthetic writer is :func:`internvl.data.retrieval.write_flickr30k` (en, cn), shared with the
retrieval fine-tuning that trains on the same files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from internvl.data.retrieval import pre_caption, read_flickr_captions, write_flickr30k

from .common import ListedImages, caption_file, check_images_exist

__all__ = ["CAPTION_FILES", "LAYOUT", "build", "write_flickr30k"]

CAPTION_FILES = {"en": "flickr30k_{split}_karpathy.txt", "cn": "flickr30k_cn_{split}.txt", "zh": "flickr30k_{split}_zh.txt"}
LAYOUT = "Images/<id>.jpg and flickr30k_<split>_karpathy.txt (en) / flickr30k_cn_<split>.txt (cn) / flickr30k_<split>_zh.txt (zh)"


def build(root: Path, transform, split: str = "test", language: str = "en",
          annotation_file: Optional[str] = None, **_) -> ListedImages:
    captions_path = caption_file(root, CAPTION_FILES[language].format(split=split), annotation_file, "flickr30k",
                                 language, split)
    image_dir = root / "Images" if (root / "Images").is_dir() else root
    captions: dict[str, list[str]] = {}
    where: dict[str, str] = {}
    for row in read_flickr_captions(captions_path):
        captions.setdefault(row.image, []).append(pre_caption(row.caption))
        where.setdefault(row.image, f"{captions_path}:{row.line}")
    paths = [str(image_dir / image) for image in captions]
    check_images_exist(paths, list(where.values()), captions_path)
    return ListedImages(paths, list(captions.values()), transform, list(where.values()))
