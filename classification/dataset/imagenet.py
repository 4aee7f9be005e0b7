"""ImageNet-1K and ImageNet-ReaL: reader and synthetic writers.

ImageNet-1K (``DATA.DATASET: imagenet``), upstream's layout::

    DATA_PATH/{train,val}/...                 the images
    DATA_PATH/meta_data/{train,val}.txt       "relative/path label" per line, the path relative to the split

or, without a list, class folders ``DATA_PATH/{train,val}/<class>/...`` (a torchvision ImageFolder,
labelled through the class list of :func:`~.class_folders.read_class_names`). Upstream opens
``meta_data/`` relative to the working directory (``classification/meta_data``); here it sits beside
the splits so one root holds a whole dataset.

ImageNet-ReaL (``imagenet-real``): the ImageNet-1K val split scored against ``DATA_PATH/real.json``
(or ``meta_data/real.json``), one list of labels per val image in file-number order (entry *i*
belongs to ``ILSVRC2012_val_{i+1:08d}.JPEG``); an empty list means ReaL gives the image no label.

Synthetic writers (images from :mod:`internvl.data.synthetic`; ``<index>`` is the zero-padded
sample index, e.g. 000123)::

    write_imagenet_lists(root, splits)   root/<split>/<class>/<index>.JPEG, root/meta_data/<split>.txt
                                         ("<class>/<index>.JPEG <label>"), root/classes.txt
    write_image_folder(root, splits)     root/<split>/<class>/<index>.png (lossless), root/classes.txt
    write_imagenet_real(root, n)         root/val/ILSVRC2012_val_00000001.JPEG ... (flat, numbered from 1),
                                         root/meta_data/val.txt, root/real.json, root/classes.txt

``splits={"train": n, "val": m}`` gives each split the next block of sample indices from ``start``,
so splits never share an image; ``real.json`` mixes every case of the ReaL metric (no label, the
original label, the original plus another, another only).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from internvl.data.synthetic import SyntheticImages, new_dataset_root, save_jpeg, split_ranges
from internvl.errors import DataError, MissingFileError

from .class_folders import read_class_names, scan_class_folders
from .pipeline import DATA_HELP, EvalSet, ImageDataset


# --------------------------------------------------------------------------- reader
def read_image_list(list_file: Path, image_root: Path, num_classes: int) -> list[tuple[str, int]]:
    """``relative/path label`` lines (upstream ``meta_data/<split>.txt``) -> ``[(path, label)]``.

    Blank lines are skipped; anything else that is not a path and an integer label in
    ``0..num_classes-1`` is an error naming ``file:line``.
    """
    if not list_file.is_file():
        raise MissingFileError(f"list file not found: {list_file}; {DATA_HELP}")
    samples = []
    with open(list_file, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise DataError(f"{list_file}:{line_no}: expected 'relative/path label', got {line!r}")
            label = int(parts[1])
            if not 0 <= label < num_classes:
                raise DataError(f"{list_file}:{line_no}: label {label} is outside 0..{num_classes - 1} "
                                f"(MODEL.NUM_CLASSES={num_classes})")
            samples.append((str(image_root / parts[0]), label))
    if not samples:
        raise DataError(f"{list_file} lists no images")
    return samples


def read_split(config, split: str, transform) -> ImageDataset:
    """The ``train`` or ``val`` split of ``DATA.DATA_PATH``: its list file, or its class folders."""
    data_path = Path(config.DATA.DATA_PATH)
    if not data_path.is_dir():
        raise MissingFileError(f"DATA.DATA_PATH={str(data_path)!r} is not a folder; {DATA_HELP}")
    list_file = data_path / "meta_data" / f"{split}.txt"
    split_dir = data_path / split
    if list_file.is_file():
        if not split_dir.is_dir():
            raise MissingFileError(f"dataset folder not found: {split_dir} (the images listed in {list_file}); "
                                   f"{DATA_HELP}")
        samples = read_image_list(list_file, split_dir, config.MODEL.NUM_CLASSES)
    elif split_dir.is_dir() and any(p.is_dir() for p in split_dir.iterdir()):
        train_dir = data_path / "train"
        names, source = read_class_names(config, fallback_root=train_dir if train_dir.is_dir() else split_dir)
        samples = scan_class_folders(split_dir, names, source)
    else:
        raise MissingFileError(f"{data_path}: neither a list file meta_data/{split}.txt nor class folders under "
                               f"{split}/ found; {DATA_HELP}")
    return ImageDataset(samples, transform, name=f"{data_path}/{split}")


def read_val(config, transform) -> EvalSet:
    return EvalSet(read_split(config, "val", transform), config.DATA.DATASET)


def load_real_labels(data_path: Path, filenames: Sequence[str]) -> list[list[int]]:
    """ReaL label sets for ``filenames`` (ImageNet val file names), from ``real.json`` (or ``meta_data/real.json``)."""
    candidates = [data_path / "real.json", data_path / "meta_data" / "real.json"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise MissingFileError(f"ReaL labels not found: none of {', '.join(map(str, candidates))} exists; download "
                               "real.json from github.com/google-research/reassessed-imagenet")
    with open(path, encoding="utf-8") as f:
        try:
            real = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} is not valid JSON ({e}); expected a list of label lists") from None
    if not isinstance(real, list) or not all(isinstance(x, list) for x in real):
        raise DataError(f"{path}: expected a list of label lists, one per val image")
    by_name = {f"ILSVRC2012_val_{i + 1:08d}.JPEG": labels for i, labels in enumerate(real)}
    out = []
    for name in filenames:
        base = os.path.basename(name)
        if base not in by_name:
            raise DataError(f"{name}: no ReaL labels for this file in {path} ({len(real)} entries, keyed by the "
                            "official val names ILSVRC2012_val_00000001.JPEG ...)")
        out.append([int(y) for y in by_name[base]])
    return out


def read_real(config, transform) -> EvalSet:
    dataset = read_split(config, "val", transform)
    real = load_real_labels(Path(config.DATA.DATA_PATH), dataset.filenames())
    return EvalSet(dataset, config.DATA.DATASET, real_labels=real)


# --------------------------------------------------------------------------- synthetic writers
def _blocks(splits: dict[str, int], start: int) -> dict[str, range]:
    return {name: range(r.start + start, r.stop + start) for name, r in split_ranges(splits).items()}


def write_image_folder(root: str | os.PathLike, splits: dict[str, int], kit: Optional[SyntheticImages] = None,
                       start: int = 0) -> Path:
    """Write ``root/<split>/<class_name>/<index>.png`` (torchvision ImageFolder) and ``root/classes.txt``."""
    kit = kit or SyntheticImages()
    for name, n in splits.items():
        if n < kit.num_classes:  # ImageFolder numbers the class folders it finds: all must be there
            raise ValueError(f"split {name!r} has {n} images, fewer than the {kit.num_classes} classes")
    ranges = _blocks(splits, start)
    root = new_dataset_root(root, ranges, kit)
    for name, indices in ranges.items():
        for index in indices:
            s = kit.sample(index)
            path = root / name / s.class_name / f"{index:06d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            s.image.save(path, format="PNG")
    return root


def write_imagenet_lists(root: str | os.PathLike, splits: dict[str, int], kit: Optional[SyntheticImages] = None,
                         start: int = 0) -> Path:
    """Write upstream's layout: ``root/<split>/<class_name>/<index>.JPEG``, ``root/meta_data/<split>.txt``
    ("<class_name>/<index>.JPEG <label>" lines) and ``root/classes.txt``."""
    kit = kit or SyntheticImages()
    ranges = _blocks(splits, start)
    root = new_dataset_root(root, ranges, kit)
    (root / "meta_data").mkdir(exist_ok=True)
    for name, indices in ranges.items():
        lines = []
        for index in indices:
            s = kit.sample(index)
            relative = f"{s.class_name}/{index:06d}.JPEG"
            save_jpeg(s.image, root / name / relative)
            lines.append(f"{relative} {s.label}\n")
        (root / "meta_data" / f"{name}.txt").write_text("".join(lines))
    return root


def write_imagenet_real(root: str | os.PathLike, num_images: int, kit: Optional[SyntheticImages] = None,
                        start: int = 0, unlabeled_rate: float = 0.1, multi_rate: float = 0.15,
                        relabel_rate: float = 0.1) -> Path:
    """Write an ImageNet-1K-style val split with ReaL labels (``real.json``), see the module doc.

    The ReaL label set of each image is drawn from ``numpy.random.default_rng([seed, index, 1])``:
    with probability ``unlabeled_rate`` it is empty (ReaL excludes the image), ``multi_rate`` the
    original label plus another class, ``relabel_rate`` another class only (the original label was
    wrong), else the original label alone.
    """
    kit = kit or SyntheticImages()
    if not 0 <= unlabeled_rate + multi_rate + relabel_rate <= 1:
        raise ValueError("unlabeled_rate + multi_rate + relabel_rate must be within [0, 1]")
    if kit.num_classes < 2 and (multi_rate or relabel_rate):
        raise ValueError("multi-label and relabelled images need at least 2 classes")
    root = new_dataset_root(root, {"val": range(num_images)}, kit)
    (root / "meta_data").mkdir(exist_ok=True)
    lines, real = [], []
    for number, index in enumerate(range(start, start + num_images), 1):
        s = kit.sample(index)
        name = f"ILSVRC2012_val_{number:08d}.JPEG"
        save_jpeg(s.image, root / "val" / name)
        lines.append(f"{name} {s.label}\n")
        rng = np.random.default_rng([kit.seed, index, 1])
        u = rng.random()
        other = int((s.label + 1 + rng.integers(max(kit.num_classes - 1, 1))) % kit.num_classes)
        if u < unlabeled_rate:
            real.append([])
        elif u < unlabeled_rate + multi_rate:
            real.append(sorted([s.label, other]))
        elif u < unlabeled_rate + multi_rate + relabel_rate:
            real.append([other])
        else:
            real.append([s.label])
    (root / "meta_data" / "val.txt").write_text("".join(lines))
    (root / "real.json").write_text(json.dumps(real))
    return root


# The stand-ins of the evaluation table (classification.dataset.DATASETS): ``per_class`` images of
# each class, from sample ``start`` on.
def synthetic_imagenet_val(root: Path, kit: SyntheticImages, per_class: int, start: int) -> Path:
    return write_imagenet_lists(root, {"val": per_class * kit.num_classes}, kit, start=start)


def synthetic_imagenet_real(root: Path, kit: SyntheticImages, per_class: int, start: int) -> Path:
    return write_imagenet_real(root, per_class * kit.num_classes, kit, start=start)
