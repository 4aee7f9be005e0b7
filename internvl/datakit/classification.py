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

The evaluation variants of ImageNet used by the linear-probing table (``classification/``), each
written from a block of sample indices starting at ``start`` so that it never shares an image
with a train/val set written from the indices before it:

``write_imagenet_real(root, n)`` -- ImageNet-1K val named as the real one, with ReaL labels::

    root/classes.txt
    root/val/ILSVRC2012_val_00000001.JPEG ...  (flat, numbered from 1 like the real val set)
    root/meta_data/val.txt                   "ILSVRC2012_val_00000001.JPEG <label>" per line
    root/real.json                           one list of labels per val image, in file-number order:
                                             [] (no label: excluded), [y], [y, other] or [other]

``write_imagenetv2(root, n)`` -- ImageNetV2 (matched-frequency), folders named by label::

    root/ImageNetV2-matched-frequency/<label>/<index>.jpeg     label = 0 .. num_classes-1

``write_class_subset(root, n, classes)`` -- ImageNet-A / ImageNet-R: class folders for a subset of
the classes only (200 of 1000 for the real sets); the label of a folder is its position in the
full class list (``root/classes.txt``), not in the subset::

    root/<class_name>/<index>.jpg

``write_imagenet_sketch(root, n)`` -- ImageNet-Sketch: one folder per class, grey line drawings::

    root/<class_name>/<index>.JPEG

``style`` draws a variant in another domain, as the real sets are: ``"sketch"`` (grey contour
drawing), ``"rendition"`` (posterized flat colours, like ImageNet-R's cartoons and paintings).

``write_intern_vit_pth(path, config)`` -- a randomly initialised InternViT saved as the classification
``.pth`` of upstream (``intern_vit_6b_224px.pth``: timm-style names such as ``blocks.0.attn.qkv.weight``),
the backbone file the classification pipeline loads.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from .synthetic import SyntheticImages, new_dataset_root, save_jpeg, split_ranges

__all__ = ["write_image_folder", "write_imagenet_lists", "write_imagenet_real", "write_imagenetv2",
           "write_class_subset", "write_imagenet_sketch", "write_intern_vit_pth"]

IMAGENETV2_FOLDER = "ImageNetV2-matched-frequency"


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
            save_jpeg(s.image, root / name / relative)
            lines.append(f"{relative} {s.label}\n")
        (root / "meta_data" / f"{name}.txt").write_text("".join(lines))
    return root


def _sketch(image: Image.Image) -> Image.Image:
    return ImageOps.autocontrast(ImageOps.grayscale(image).filter(ImageFilter.CONTOUR)).convert("RGB")


def _rendition(image: Image.Image) -> Image.Image:
    return ImageOps.posterize(image.filter(ImageFilter.SMOOTH_MORE), 2)


_STYLES = {None: lambda image: image, "sketch": _sketch, "rendition": _rendition}


def _styled(image: Image.Image, style: Optional[str]) -> Image.Image:
    if style not in _STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {sorted(map(str, _STYLES))}")
    return _STYLES[style](image)


def _empty_root(root: str | os.PathLike, kit: SyntheticImages) -> Path:
    """``root`` for a dataset whose class folders sit directly under it: must be new or empty."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; remove it first, a writer never mixes datasets")
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in kit.classes))
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


def write_imagenetv2(root: str | os.PathLike, num_images: int, kit: Optional[SyntheticImages] = None,
                     start: int = 0) -> Path:
    """Write ``root/ImageNetV2-matched-frequency/<label>/<index>.jpeg`` (folders ``0``..``num_classes-1``)."""
    kit = kit or SyntheticImages()
    root = new_dataset_root(root, {IMAGENETV2_FOLDER: range(num_images)}, kit)
    for index in range(start, start + num_images):
        s = kit.sample(index)
        save_jpeg(s.image, root / IMAGENETV2_FOLDER / str(s.label) / f"{index:06d}.jpeg")
    return root


def write_class_subset(root: str | os.PathLike, num_images: int, classes: Sequence[str],
                       kit: Optional[SyntheticImages] = None, start: int = 0,
                       style: Optional[str] = None) -> Path:
    """Write ImageNet-A/R-style ``root/<class_name>/<index>.jpg`` for the classes in ``classes`` only.

    Images are the samples from index ``start`` on whose class is in ``classes`` (so the subset
    stays balanced); ``root/classes.txt`` lists every class of the kit, in label order.
    """
    kit = kit or SyntheticImages()
    unknown = sorted(set(classes) - set(kit.classes))
    if unknown:
        raise ValueError(f"classes {unknown} are not classes of {kit!r} ({kit.classes})")
    if not classes:
        raise ValueError("classes is empty: a subset needs at least one class")
    root = _empty_root(root, kit)
    wanted = {kit.classes.index(name) for name in classes}
    index, written = start, 0
    while written < num_images:
        if index % kit.num_classes in wanted:  # the label of a sample is index % num_classes
            s = kit.sample(index)
            save_jpeg(_styled(s.image, style), root / s.class_name / f"{index:06d}.jpg")
            written += 1
        index += 1
    return root


def write_imagenet_sketch(root: str | os.PathLike, num_images: int, kit: Optional[SyntheticImages] = None,
                          start: int = 0) -> Path:
    """Write ImageNet-Sketch-style ``root/<class_name>/<index>.JPEG``: every class, drawn as grey contours."""
    kit = kit or SyntheticImages()
    if num_images < kit.num_classes:
        raise ValueError(f"{num_images} images cannot cover the {kit.num_classes} classes of a Sketch-style set")
    root = _empty_root(root, kit)
    for index in range(start, start + num_images):
        s = kit.sample(index)
        save_jpeg(_styled(s.image, "sketch"), root / s.class_name / f"{index:06d}.JPEG")
    return root


def write_intern_vit_pth(path: str | os.PathLike, config=None, seed: int = 0) -> Path:
    """Save a randomly initialised InternViT (``config``: an ``InternVisionConfig``, default a tiny one of
    the 6B recipe) under the classification checkpoint names of ``intern_vit_6b_224px.pth``."""
    import torch

    from ..intern_vit import InternVisionModel, rename_timm_hf
    from .checkpoints import tiny_vision_config

    config = config or tiny_vision_config("6b")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = InternVisionModel(config)
    finally:
        torch.random.set_rng_state(generator_state)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({rename_timm_hf(k, to_hf=False): v for k, v in model.state_dict().items()}, path)
    return path
