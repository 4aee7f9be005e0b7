"""Classification layouts written from the synthetic kit.

Layouts (``<index>`` is the zero-padded global sample index, e.g. 000123):

``write_image_folder(root, splits)`` -- torchvision ImageFolder::

    root/classes.txt                         class names, line i = label i
    root/<split>/<class_name>/<index>.png

``write_imagenet_lists(root, splits)`` -- the upstream InternVL classification layout
(``classification/dataset/cached_image_folder.py``: ``ImageCephDataset`` reads
``meta_data/<split>.txt``, splits each line on one space into a path relative to
``DATA_PATH/<split>`` and an int label)::

    root/classes.txt
    root/<split>/<class_name>/<index>.JPEG
    root/meta_data/<split>.txt               "<class_name>/<index>.JPEG <label>" per line

Upstream opens ``meta_data/`` relative to the working directory (``classification/meta_data``);
here it sits beside the splits so one root holds a whole dataset.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .synthetic import SyntheticImages, new_dataset_root, split_ranges

__all__ = ["write_image_folder", "write_imagenet_lists"]


def write_image_folder(root: str | os.PathLike, splits: dict[str, int],
                       kit: Optional[SyntheticImages] = None) -> Path:
    """Write ``root/<split>/<class_name>/<index>.png`` (torchvision ImageFolder) and ``root/classes.txt``."""
    kit = kit or SyntheticImages()
    for name, n in splits.items():
        if n < kit.num_classes:  # ImageFolder numbers the class folders it finds: all must be there
            raise ValueError(f"split {name!r} has {n} images, fewer than the {kit.num_classes} classes")
    ranges = split_ranges(splits)
    root = new_dataset_root(root, ranges, kit)
    for name, indices in ranges.items():
        for index in indices:
            s = kit.sample(index)
            path = root / name / s.class_name / f"{index:06d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            s.image.save(path, format="PNG")
    return root


def write_imagenet_lists(root: str | os.PathLike, splits: dict[str, int],
                         kit: Optional[SyntheticImages] = None) -> Path:
    """Write the upstream classification layout: ``root/<split>/<class_name>/<index>.JPEG``,
    ``root/meta_data/<split>.txt`` ("<class_name>/<index>.JPEG <label>" lines) and ``root/classes.txt``."""
    kit = kit or SyntheticImages()
    ranges = split_ranges(splits)
    root = new_dataset_root(root, ranges, kit)
    (root / "meta_data").mkdir(exist_ok=True)
    for name, indices in ranges.items():
        lines = []
        for index in indices:
            s = kit.sample(index)
            relative = f"{s.class_name}/{index:06d}.JPEG"
            (root / name / s.class_name).mkdir(parents=True, exist_ok=True)
            # No chroma subsampling: at 32-64 px it would bleed the shape colour into the background.
            s.image.save(root / name / relative, format="JPEG", quality=95, subsampling=0)
            lines.append(f"{relative} {s.label}\n")
        (root / "meta_data" / f"{name}.txt").write_text("".join(lines))
    return root
