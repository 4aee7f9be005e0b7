"""ImageNetV2 (matched-frequency): reader and synthetic writer.

``DATA_PATH/ImageNetV2-matched-frequency/<label>/*.jpeg`` (or ``DATA_PATH/<label>/*``): the folders are
named by the ImageNet-1K label, ``0`` .. ``999``. The release unpacks to
``imagenetv2-matched-frequency-format-val/``; rename it (data/README.md).

``write_imagenetv2(root, n, kit)`` writes ``root/ImageNetV2-matched-frequency/<label>/<index>.jpeg``
from the synthetic kit (folders ``0`` .. ``num_classes - 1``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from internvl.data.synthetic import SyntheticImages, new_dataset_root, save_jpeg
from internvl.errors import DataError

from .class_folders import class_folders
from .pipeline import EvalSet, ImageDataset, images_under

IMAGENETV2_FOLDER = "ImageNetV2-matched-frequency"


def scan_imagenetv2(data_path: Path, num_classes: int) -> list[tuple[str, int]]:
    """``[(path, label)]`` of ``<DATA_PATH>/ImageNetV2-matched-frequency/<label>/*`` (or ``<DATA_PATH>/<label>/*``)."""
    root = data_path / IMAGENETV2_FOLDER if (data_path / IMAGENETV2_FOLDER).is_dir() else data_path
    samples = []
    for folder in class_folders(root):
        if not folder.name.isdigit():
            raise DataError(f"{folder}: ImageNetV2 class folders are named by label (0..{num_classes - 1}); "
                            f"expected {data_path}/{IMAGENETV2_FOLDER}/<label>/")
        label = int(folder.name)
        if label >= num_classes:
            raise DataError(f"{folder}: label {label} is outside 0..{num_classes - 1} "
                            f"(MODEL.NUM_CLASSES={num_classes})")
        samples += [(str(p), label) for p in images_under(folder)]
    if not samples:
        raise DataError(f"no ImageNetV2 images under {root}; expected {data_path}/{IMAGENETV2_FOLDER}/<label>/*.jpeg")
    return samples


def read_imagenetv2(config, transform) -> EvalSet:
    data_path = Path(config.DATA.DATA_PATH)
    samples = scan_imagenetv2(data_path, config.MODEL.NUM_CLASSES)
    return EvalSet(ImageDataset(samples, transform, str(data_path)), config.DATA.DATASET)


def write_imagenetv2(root: str | os.PathLike, num_images: int, kit: Optional[SyntheticImages] = None,
                     start: int = 0) -> Path:
    """Write ``root/ImageNetV2-matched-frequency/<label>/<index>.jpeg`` (folders ``0``..``num_classes-1``)."""
    kit = kit or SyntheticImages()
    root = new_dataset_root(root, {IMAGENETV2_FOLDER: range(num_images)}, kit)
    for index in range(start, start + num_images):
        s = kit.sample(index)
        save_jpeg(s.image, root / IMAGENETV2_FOLDER / str(s.label) / f"{index:06d}.jpeg")
    return root


def synthetic_imagenetv2(root: Path, kit: SyntheticImages, per_class: int, start: int) -> Path:
    """The stand-in of the evaluation table: ``per_class`` images of each class, from sample ``start`` on."""
    return write_imagenetv2(root, per_class * kit.num_classes, kit, start=start)
