"""``multilingual_mscoco_captions``: XTD, 1000 COCO images with one caption each in 11 languages (upstream
evaluates en, es, fr, zh, it, ko, ru, jp), in upstream's layout (the root is the COCO root)::

    <root>/train2014/COCO_train2014_<id>.jpg ...    (a few XTD images are in val2014/)
    <root>/multilingual_mscoco_captions-<lang>.json {"image_paths": ["train2014/COCO_train2014_...jpg", ...],
                                                     "annotations": ["caption", ...]}

The JSON is what upstream's and CLIP Benchmark's XTD loaders write (image paths relative to the root, or
absolute); without it the raw XTD10 files are read instead, as github.com/adobe-research/
Cross-lingual-Test-Dataset-XTD10 publishes them (``XTD10/``, ``STAIR/`` for jp, ``MIC/`` for fr and de)::

    <root>/test_image_names.txt                     one COCO file name per line (COCO_train2014_...jpg)
    <root>/test_1kcaptions_<lang>.txt               line i: the caption of image i

Captions are used as written (upstream applies no cleaning to XTD). ``--annotation_file`` replaces the JSON.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Optional, Sequence

from internvl.data.synthetic import SyntheticImages, save_jpeg
from internvl.errors import ConfigError, DataError, MissingFileError
from internvl.fileio import read_json

from .common import DATA_HELP, ListedImages, check_images_exist

__all__ = ["LANGUAGES", "LAYOUT", "build", "write_xtd", "CAPTION_WORDS"]

LANGUAGES = ("en", "es", "fr", "zh", "it", "ko", "ru", "jp", "de", "pl", "tr")
ANNOTATION = "multilingual_mscoco_captions-{language}.json"
RAW_IMAGES, RAW_CAPTIONS = "test_image_names.txt", "test_1kcaptions_{language}.txt"
LAYOUT = (f"{ANNOTATION.format(language='<lang>')} (or {RAW_IMAGES} + {RAW_CAPTIONS.format(language='<lang>')}) "
          "and the COCO images they name")
_COCO_NAME = re.compile(r"COCO_(train2014|val2014)_\d+\.jpg$")


def _read_xtd_json(path: Path) -> tuple[list[str], list[str], list[str]]:
    expected = "{'image_paths': [...], 'annotations': [...]} (one caption per image)"
    content = read_json(path, "XTD caption file", expected, kind=dict)
    if not isinstance(content.get("image_paths"), list) or not isinstance(content.get("annotations"), list):
        raise DataError(f"{path}: expected {expected}; found keys {sorted(content)}")
    paths, captions = content["image_paths"], content["annotations"]
    if len(paths) != len(captions):
        raise DataError(f"{path}: {len(paths)} image_paths but {len(captions)} annotations; they pair up one to one")
    for i, (image, caption) in enumerate(zip(paths, captions)):
        if not isinstance(image, str) or not isinstance(caption, str) or not caption.strip():
            raise DataError(f"{path}: entry {i} ({image!r}, {caption!r}) needs an image path and a non-empty caption")
    return paths, captions, [f"{path}: entry {i}" for i in range(len(paths))]


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise MissingFileError(f"{path} not found; {DATA_HELP}")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e})") from None


def _read_raw(names_file: Path, captions_file: Path) -> tuple[list[str], list[str], list[str]]:
    names, captions = _read_lines(names_file), _read_lines(captions_file)
    if len(names) != len(captions):
        raise DataError(f"{names_file} has {len(names)} lines but {captions_file} has {len(captions)}; line i of "
                        "each belongs to image i")
    paths = []
    for number, (name, caption) in enumerate(zip(names, captions), start=1):
        match = _COCO_NAME.search(name.strip())
        if not match:
            raise DataError(f"{names_file}:{number}: {name!r} is not a COCO file name (COCO_train2014_<id>.jpg)")
        if not caption.strip():
            raise DataError(f"{captions_file}:{number}: empty caption")
        paths.append(f"{match[1]}/{name.strip()}")
    return paths, captions, [f"{captions_file}:{n}" for n in range(1, len(paths) + 1)]


def build(root: Path, transform, split: str = "test", language: str = "en",
          annotation_file: Optional[str] = None, **_) -> ListedImages:
    if split != "test":
        raise ConfigError(f"multilingual_mscoco_captions (XTD) has a test split only, not --split {split}")
    annotation = Path(annotation_file) if annotation_file else root / ANNOTATION.format(language=language)
    raw_names, raw_captions = root / RAW_IMAGES, root / RAW_CAPTIONS.format(language=language)
    if annotation.is_file():
        paths, captions, where = _read_xtd_json(annotation)
        listed_in = annotation
    elif not annotation_file and raw_names.is_file() and raw_captions.is_file():
        paths, captions, where = _read_raw(raw_names, raw_captions)
        listed_in = raw_captions
    else:
        raise MissingFileError(f"no XTD captions for --language {language}: expected {annotation}"
                               + ("" if annotation_file else f", or {raw_names} + {raw_captions}") + f"; {DATA_HELP}")
    paths = [os.path.join(root, p) for p in paths]  # an absolute path stays as it is
    check_images_exist(paths, where, listed_in)
    return ListedImages(paths, [[c] for c in captions], transform, where)


# ---- synthetic writer --------------------------------------------------------------------------------------

# The kit's colours and shapes in the XTD languages, and how a caption puts them together.
CAPTION_WORDS = {
    "es": ("{shape} de color {colour}", dict(red="rojo", green="verde", blue="azul", yellow="amarillo"),
           dict(circle="círculo", square="cuadrado", triangle="triángulo", cross="cruz")),
    "fr": ("{shape} de couleur {colour}", dict(red="rouge", green="vert", blue="bleu", yellow="jaune"),
           dict(circle="cercle", square="carré", triangle="triangle", cross="croix")),
    "it": ("{shape} di colore {colour}", dict(red="rosso", green="verde", blue="blu", yellow="giallo"),
           dict(circle="cerchio", square="quadrato", triangle="triangolo", cross="croce")),
    "ko": ("{colour} {shape}", dict(red="빨간색", green="초록색", blue="파란색", yellow="노란색"),
           dict(circle="원", square="사각형", triangle="삼각형", cross="십자가")),
    "ru": ("{colour} {shape}", dict(red="красный", green="зелёный", blue="синий", yellow="жёлтый"),
           dict(circle="круг", square="квадрат", triangle="треугольник", cross="крест")),
    "jp": ("{colour}{shape}", dict(red="赤い", green="緑の", blue="青い", yellow="黄色い"),
           dict(circle="円", square="四角形", triangle="三角形", cross="十字")),
    "de": ("{shape} in {colour}", dict(red="Rot", green="Grün", blue="Blau", yellow="Gelb"),
           dict(circle="Kreis", square="Quadrat", triangle="Dreieck", cross="Kreuz")),
}


def _caption(sample, language: str) -> str:
    if language == "en":
        return sample.caption_en
    if language == "zh":
        return sample.caption_zh
    if language not in CAPTION_WORDS:
        raise ValueError(f"the synthetic XTD writer has no captions in {language!r}; it writes en, zh and "
                         f"{', '.join(CAPTION_WORDS)}")
    template, colours, shapes = CAPTION_WORDS[language]
    return template.format(colour=colours[sample.colour], shape=shapes[sample.shape])


def write_xtd(root: os.PathLike, num_images: int, languages: Sequence[str] = ("en", "es", "fr", "zh", "it", "ko", "ru", "jp"),
              layout: str = "json", kit: Optional[SyntheticImages] = None, start: int = 0) -> Path:
    """Write ``num_images`` synthetic images as ``<root>/train2014/COCO_train2014_<index:012d>.jpg`` and their
    caption in each of ``languages``, as the upstream JSON (``layout="json"``, paths relative to the root)
    or as the raw XTD10 text files (``layout="raw"``). Refuses to overwrite any file."""
    if layout not in ("json", "raw"):
        raise ValueError(f"layout must be 'json' or 'raw', got {layout!r}")
    kit = kit or SyntheticImages()
    root = Path(root)
    names = [f"COCO_train2014_{index:012d}.jpg" for index in range(start, start + num_images)]
    if layout == "json":
        outputs = [root / ANNOTATION.format(language=language) for language in languages]
    else:
        outputs = [root / RAW_IMAGES] + [root / RAW_CAPTIONS.format(language=language) for language in languages]
    for path in [*outputs, *(root / "train2014" / name for name in names)]:
        if path.exists():
            raise FileExistsError(f"{path} already exists; remove it first, a writer never mixes datasets")
    samples = [kit.sample(index) for index in range(start, start + num_images)]
    for name, s in zip(names, samples):
        save_jpeg(s.image, root / "train2014" / name)
    for language in languages:
        captions = [_caption(s, language) for s in samples]
        if layout == "json":
            content = {"image_paths": [f"train2014/{name}" for name in names], "annotations": captions,
                       "indicies": list(range(num_images))}
            (root / ANNOTATION.format(language=language)).write_text(json.dumps(content, ensure_ascii=False),
                                                                      encoding="utf-8")
        else:
            (root / RAW_CAPTIONS.format(language=language)).write_text("\n".join(captions) + "\n", encoding="utf-8")
    if layout == "raw":
        (root / RAW_IMAGES).write_text("\n".join(names) + "\n")
    return root
