"""The datasets of the linear-probing pipeline: one table, one module per dataset family.

``DATA.DATASET`` names an entry of :data:`DATASETS`; each entry holds the set's reader and its synthetic
writer, both in the module of its family, and the suffix of its evaluation configs::

    imagenet         imagenet.py       DATA_PATH/{train,val}/ + meta_data/{train,val}.txt, or class folders
    imagenet-real    imagenet.py       the ImageNet-1K val split, scored against DATA_PATH/real.json
    imagenetv2       imagenetv2.py     DATA_PATH/ImageNetV2-matched-frequency/<label>/*.jpeg
    imagenet_a, _r   class_folders.py  DATA_PATH/<wnid>/* for 200 of the 1000 classes: logits restricted to them
    imagenet_sketch  class_folders.py  DATA_PATH/<wnid>/*

Adding a dataset: its reader and synthetic writer in its family's module (or a new one), one
:class:`DatasetSpec` line below, and its evaluation configs (``configs/<recipe><config_suffix>.yaml``,
published and tiny). The config check, the demo and the tests take the list from this table.

Every problem with the data is an error naming the file (and line): a missing folder or list, a line
that does not parse, a label outside ``MODEL.NUM_CLASSES``, an image that cannot be read (skipped
instead, up to ``DATA.MAX_BAD_IMAGES``, and counted). ``pipeline.py`` holds what every set goes
through (image reading, transforms, samplers, loaders).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from internvl.data.synthetic import SyntheticImages
from internvl.errors import ConfigError

from . import class_folders, imagenet, imagenetv2
from .class_folders import read_class_names, scan_class_folders, write_class_subset, write_imagenet_sketch
from .imagenet import load_real_labels, read_image_list, write_image_folder, write_imagenet_lists, write_imagenet_real
from .imagenetv2 import IMAGENETV2_FOLDER, scan_imagenetv2, write_imagenetv2
from .pipeline import (IMG_EXTENSIONS, BadImageError, Batch, EvalSet, ImageDataset, Item, TrainBatchSampler,
                       UnreadableImages, build_transform, collate, eval_batches, make_loader, seeded)

__all__ = ["DATASETS", "DatasetSpec", "build_train_set", "build_train_feature_source", "build_eval_set",
           # readers and synthetic writers, by family
           "read_image_list", "load_real_labels", "write_imagenet_lists", "write_image_folder", "write_imagenet_real",
           "IMAGENETV2_FOLDER", "scan_imagenetv2", "write_imagenetv2",
           "read_class_names", "scan_class_folders", "write_class_subset", "write_imagenet_sketch",
           # what every set goes through
           "IMG_EXTENSIONS", "BadImageError", "Batch", "EvalSet", "ImageDataset", "Item", "TrainBatchSampler",
           "UnreadableImages", "build_transform", "collate", "eval_batches", "make_loader", "seeded"]


@dataclass(frozen=True)
class DatasetSpec:
    """One value of ``DATA.DATASET``."""

    name: str
    title: str
    read: Callable  # (config, transform) -> EvalSet: the evaluation set at DATA.DATA_PATH
    # (root, kit, per_class, start) -> root: a stand-in in the same layout from the synthetic kit,
    # per_class images of each class it holds, drawn from sample index start on
    write_synthetic: Callable[[Path, SyntheticImages, int, int], Path]
    config_suffix: str  # configs/<recipe><config_suffix>.yaml evaluates <recipe> on this set
    test_only: bool = True  # no train split: --eval only


DATASETS = {d.name: d for d in (
    DatasetSpec("imagenet", "ImageNet-1K", imagenet.read_val, imagenet.synthetic_imagenet_val, "", test_only=False),
    DatasetSpec("imagenet-real", "ImageNet-ReaL", imagenet.read_real, imagenet.synthetic_imagenet_real,
            "_test_imagenet_real", test_only=False),  # ReaL re-scores ImageNet-1K val: its config can train
    DatasetSpec("imagenetv2", "ImageNetV2", imagenetv2.read_imagenetv2, imagenetv2.synthetic_imagenetv2,
            "_test_imagenetv2"),
    DatasetSpec("imagenet_a", "ImageNet-A", class_folders.read_class_subset, class_folders.synthetic_imagenet_a,
            "_test_imagenet_a"),
    DatasetSpec("imagenet_r", "ImageNet-R", class_folders.read_class_subset, class_folders.synthetic_imagenet_r,
            "_test_imagenet_r"),
    DatasetSpec("imagenet_sketch", "ImageNet-Sketch", class_folders.read_all_classes,
            class_folders.synthetic_imagenet_sketch, "_test_imagenet_sketch"),
)}


def build_train_set(config) -> ImageDataset:
    """The ImageNet-1K train split under the train transform."""
    return imagenet.read_split(config, "train", build_transform(True, config))


def build_train_feature_source(config) -> ImageDataset:
    """The train images under the eval (deterministic) transform: what the feature cache is computed from."""
    return imagenet.read_split(config, "train", build_transform(False, config))


def build_eval_set(config) -> EvalSet:
    """The evaluation set of ``DATA.DATASET`` (ImageNet-1K val or one of its variants)."""
    if config.DATA.DATASET not in DATASETS:
        raise ConfigError(f"DATA.DATASET={config.DATA.DATASET!r} is not one of {', '.join(DATASETS)}")
    return DATASETS[config.DATA.DATASET].read(config, build_transform(False, config))
