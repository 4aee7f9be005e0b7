"""Class-folder layouts: ImageNet-A, ImageNet-R and ImageNet-Sketch (and the class folders of an
ImageFolder-style ImageNet-1K): ``DATA_PATH/<class>/**/<image>``, reader and synthetic writers.

A folder's label is the position of its name in the class list (:func:`read_class_names`:
``DATA.CLASS_NAMES``, or the ImageNet-1K synsets ``n01440764`` ... when ``MODEL.NUM_CLASSES`` is
1000), never its position among the folders that happen to exist. ImageNet-A and -R hold 200 of the
1000 classes: the evaluation keeps the logits of the classes present (``EvalSet.class_subset``).

Synthetic writers (images from :mod:`internvl.data.synthetic`, index ``start`` on)::

    write_class_subset(root, n, classes, kit)    root/<class>/<index>.jpg for the classes in ``classes``
    write_imagenet_sketch(root, n, kit)          root/<class>/<index>.JPEG, every class, grey contours

``root/classes.txt`` lists every class in label order. ``folder_names`` renames the kit's classes on
disk (one name per kit class, in label order), e.g. to ImageNet wnids for the 1000-synset path.
``style`` draws a set in another domain, as the real sets are: ``"sketch"`` (grey contour drawing),
``"rendition"`` (posterized flat colours, like ImageNet-R's cartoons and paintings).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Sequence

from PIL import Image, ImageFilter, ImageOps

from internvl.data.synthetic import SyntheticImages, save_jpeg
from internvl.errors import DataError, MissingFileError

from .pipeline import DATA_HELP, IMG_EXTENSIONS, EvalSet, ImageDataset, images_under

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- reader
def class_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise MissingFileError(f"dataset folder not found: {root}; {DATA_HELP}")
    return sorted(p for p in root.iterdir() if p.is_dir())


def read_class_names(config, fallback_root: Optional[Path] = None) -> tuple[list[str], str]:
    """The class list of folder layouts, and where it came from (for error messages).

    ``DATA.CLASS_NAMES`` (one name per line, in label order) if set; else the ImageNet-1K synsets
    when ``MODEL.NUM_CLASSES`` is 1000; else the sorted folders of ``fallback_root`` (the train split
    of an ImageFolder) if given.
    """
    num_classes = config.MODEL.NUM_CLASSES
    if config.DATA.CLASS_NAMES:
        path = Path(config.DATA.CLASS_NAMES)
        if not path.is_file():
            raise MissingFileError(f"DATA.CLASS_NAMES: {path} not found")
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(names) != num_classes:
            raise DataError(f"DATA.CLASS_NAMES: {path} lists {len(names)} classes but MODEL.NUM_CLASSES is "
                            f"{num_classes}")
        if len(set(names)) != len(names):
            raise DataError(f"DATA.CLASS_NAMES: {path} lists a class more than once")
        return names, f"DATA.CLASS_NAMES={path}"
    if num_classes == 1000:
        return imagenet_synsets(), "the ImageNet-1K synsets"
    if fallback_root is not None:
        names = [p.name for p in class_folders(fallback_root)]
        if len(names) != num_classes:
            raise DataError(f"{fallback_root} has {len(names)} class folders but MODEL.NUM_CLASSES is {num_classes}")
        return names, f"the class folders of {fallback_root}"
    raise DataError(f"MODEL.NUM_CLASSES={num_classes} is not ImageNet-1K's 1000: set DATA.CLASS_NAMES to a file "
                    "listing the classes in label order, so that class folders map to the right labels")


def imagenet_synsets() -> list[str]:
    """The 1000 ImageNet-1K wnids in label order (sorted: ``n01440764`` is label 0)."""
    from timm.data import ImageNetInfo
    return list(ImageNetInfo("imagenet-1k").label_names())


def scan_class_folders(root: Path, class_names: Sequence[str], class_names_source: str) -> list[tuple[str, int]]:
    """``root/<class>/**/image`` -> ``[(path, label)]`` with label = position of ``<class>`` in ``class_names``."""
    folders = class_folders(root)
    if not folders:
        raise DataError(f"{root} has no class folders; {DATA_HELP}")
    index = {name: i for i, name in enumerate(class_names)}
    samples = []
    for folder in folders:
        if folder.name not in index:
            raise DataError(f"{folder}: class {folder.name!r} is not in the class list ({class_names_source}, "
                            f"{len(class_names)} classes); set DATA.CLASS_NAMES to the file listing this "
                            "dataset's classes in label order")
        samples += [(str(p), index[folder.name]) for p in images_under(folder)]
    if not samples:
        raise DataError(f"no images ({', '.join(IMG_EXTENSIONS)}) under {root}")
    return samples


def read_class_subset(config, transform) -> EvalSet:
    """ImageNet-A / -R: the classes whose folders are present, the logits restricted to them."""
    data_path = Path(config.DATA.DATA_PATH)
    names, source = read_class_names(config)
    samples = scan_class_folders(data_path, names, source)
    subset = sorted({label for _, label in samples})
    logger.info("%s: %d classes present of %d; logits restricted to them", data_path, len(subset), len(names))
    return EvalSet(ImageDataset(samples, transform, str(data_path)), config.DATA.DATASET, class_subset=subset)


def read_all_classes(config, transform) -> EvalSet:
    """ImageNet-Sketch: class folders scored over every class."""
    data_path = Path(config.DATA.DATA_PATH)
    names, source = read_class_names(config)
    return EvalSet(ImageDataset(scan_class_folders(data_path, names, source), transform, str(data_path)),
                   config.DATA.DATASET)


# --------------------------------------------------------------------------- synthetic writers
def _sketch(image: Image.Image) -> Image.Image:
    return ImageOps.autocontrast(ImageOps.grayscale(image).filter(ImageFilter.CONTOUR)).convert("RGB")


def _rendition(image: Image.Image) -> Image.Image:
    return ImageOps.posterize(image.filter(ImageFilter.SMOOTH_MORE), 2)


_STYLES = {None: lambda image: image, "sketch": _sketch, "rendition": _rendition}


def _styled(image: Image.Image, style: Optional[str]) -> Image.Image:
    if style not in _STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {sorted(map(str, _STYLES))}")
    return _STYLES[style](image)


def _folder_names(kit: SyntheticImages, folder_names: Optional[Sequence[str]]) -> list[str]:
    names = list(folder_names) if folder_names is not None else list(kit.classes)
    if len(names) != kit.num_classes or len(set(names)) != len(names):
        raise ValueError(f"folder_names must name each of the kit's {kit.num_classes} classes once, got {names}")
    return names


def _empty_root(root: str | os.PathLike, names: Sequence[str]) -> Path:
    """``root`` for a dataset whose class folders sit directly under it: must be new or empty."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; remove it first, a writer never mixes datasets")
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in names))
    return root


def write_class_subset(root: str | os.PathLike, num_images: int, classes: Sequence[str],
                       kit: Optional[SyntheticImages] = None, start: int = 0, style: Optional[str] = None,
                       folder_names: Optional[Sequence[str]] = None) -> Path:
    """Write ImageNet-A/R-style ``root/<class>/<index>.jpg`` for the kit classes in ``classes`` only.

    Images are the samples from index ``start`` on whose class is in ``classes`` (so the subset
    stays balanced); ``root/classes.txt`` lists every class, in label order.
    """
    kit = kit or SyntheticImages()
    unknown = sorted(set(classes) - set(kit.classes))
    if unknown:
        raise ValueError(f"classes {unknown} are not classes of {kit!r} ({kit.classes})")
    if not classes:
        raise ValueError("classes is empty: a subset needs at least one class")
    names = _folder_names(kit, folder_names)
    root = _empty_root(root, names)
    wanted = {kit.classes.index(name) for name in classes}
    index, written = start, 0
    while written < num_images:
        if index % kit.num_classes in wanted:  # the label of a sample is index % num_classes
            s = kit.sample(index)
            save_jpeg(_styled(s.image, style), root / names[s.label] / f"{index:06d}.jpg")
            written += 1
        index += 1
    return root


def write_imagenet_sketch(root: str | os.PathLike, num_images: int, kit: Optional[SyntheticImages] = None,
                          start: int = 0, folder_names: Optional[Sequence[str]] = None) -> Path:
    """Write ImageNet-Sketch-style ``root/<class>/<index>.JPEG``: every class, drawn as grey contours."""
    kit = kit or SyntheticImages()
    if num_images < kit.num_classes:
        raise ValueError(f"{num_images} images cannot cover the {kit.num_classes} classes of a Sketch-style set")
    names = _folder_names(kit, folder_names)
    root = _empty_root(root, names)
    for index in range(start, start + num_images):
        s = kit.sample(index)
        save_jpeg(_styled(s.image, "sketch"), root / names[s.label] / f"{index:06d}.JPEG")
    return root


# The stand-ins of the evaluation table (classification.dataset.DATASETS): ``per_class`` images of
# each class present, from sample ``start`` on. Like the real sets, A and R cover different halves of
# the classes, and R is drawn as renditions.
def synthetic_imagenet_a(root: Path, kit: SyntheticImages, per_class: int, start: int) -> Path:
    classes = kit.classes[::2]
    return write_class_subset(root, per_class * len(classes), classes, kit, start=start)


def synthetic_imagenet_r(root: Path, kit: SyntheticImages, per_class: int, start: int) -> Path:
    classes = kit.classes[1::2] or kit.classes
    return write_class_subset(root, per_class * len(classes), classes, kit, start=start, style="rendition")


def synthetic_imagenet_sketch(root: Path, kit: SyntheticImages, per_class: int, start: int) -> Path:
    return write_imagenet_sketch(root, per_class * kit.num_classes, kit, start=start)
