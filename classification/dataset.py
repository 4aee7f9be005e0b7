"""Datasets, transforms and samplers of the linear-probing pipeline (``DATA.DATASET``):

    imagenet         DATA_PATH/{train,val}/ + DATA_PATH/meta_data/{train,val}.txt ("relative/path label"),
                     or plain class folders DATA_PATH/{train,val}/<class>/ when there is no list
    imagenet-real    the ImageNet-1K val split, scored against DATA_PATH/real.json (ReaL multi-labels)
    imagenetv2       DATA_PATH/ImageNetV2-matched-frequency/<label>/*.jpeg (folders named 0..999)
    imagenet_a/_r    DATA_PATH/<wnid>/* for a subset of the classes (200 of 1000): logits are restricted to
                     the classes whose folders are present, in label order
    imagenet_sketch  DATA_PATH/<wnid>/*

Folder layouts map a folder to its label through the class list (``DATA.CLASS_NAMES``, or the
ImageNet-1K synsets when ``MODEL.NUM_CLASSES`` is 1000), never through the folders that happen to
exist. Every problem with the data is an error naming the file (and line): a missing folder or list,
a line that does not parse, a label outside ``MODEL.NUM_CLASSES``, an image that cannot be read
(skipped instead, up to ``DATA.MAX_BAD_IMAGES``, and counted).

Training batches come from :class:`TrainBatchSampler`: a seeded shuffle per epoch, sharded over
processes, each sample carrying its own augmentation seed. Every batch is therefore a function of
(seed, epoch, position) alone, which is what lets a run resume mid-epoch and end with the weights of
an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from internvl.runtime import shard_indices
from internvl.transforms import ImageDecodeError, open_image
from internvl.transforms import build_transform as build_eval_geometry

logger = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IMAGENETV2_FOLDER = "ImageNetV2-matched-frequency"
DATA_HELP = "see data/README.md (Image classification) for the expected layout"


class DataError(ValueError):
    """The dataset on disk does not have the expected layout or content; the message names the file."""


class BadImageError(RuntimeError):
    """More unreadable images than ``DATA.MAX_BAD_IMAGES`` allows; the message names the last one."""


# --------------------------------------------------------------------------- sample lists
def read_image_list(list_file: Path, image_root: Path, num_classes: int) -> list[tuple[str, int]]:
    """``relative/path label`` lines (upstream ``meta_data/<split>.txt``) -> ``[(path, label)]``.

    Blank lines are skipped; anything else that is not a path and an integer label in
    ``0..num_classes-1`` is an error naming ``file:line``.
    """
    if not list_file.is_file():
        raise DataError(f"list file not found: {list_file}; {DATA_HELP}")
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


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())


def _class_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}; {DATA_HELP}")
    return sorted(p for p in root.iterdir() if p.is_dir())


def scan_class_folders(root: Path, class_names: Sequence[str], class_names_source: str) -> list[tuple[str, int]]:
    """``root/<class>/**/image`` -> ``[(path, label)]`` with label = position of ``<class>`` in ``class_names``."""
    folders = _class_folders(root)
    if not folders:
        raise DataError(f"{root} has no class folders; {DATA_HELP}")
    index = {name: i for i, name in enumerate(class_names)}
    samples = []
    for folder in folders:
        if folder.name not in index:
            raise DataError(f"{folder}: class {folder.name!r} is not in the class list ({class_names_source}, "
                            f"{len(class_names)} classes); set DATA.CLASS_NAMES to the file listing this "
                            "dataset's classes in label order")
        samples += [(str(p), index[folder.name]) for p in _images_under(folder)]
    if not samples:
        raise DataError(f"no images ({', '.join(IMG_EXTENSIONS)}) under {root}")
    return samples


def scan_imagenetv2(data_path: Path, num_classes: int) -> list[tuple[str, int]]:
    """ImageNetV2: ``<DATA_PATH>/ImageNetV2-matched-frequency/<label>/*`` (or ``<DATA_PATH>/<label>/*``)."""
    root = data_path / IMAGENETV2_FOLDER if (data_path / IMAGENETV2_FOLDER).is_dir() else data_path
    folders = _class_folders(root)
    samples = []
    for folder in folders:
        if not folder.name.isdigit():
            raise DataError(f"{folder}: ImageNetV2 class folders are named by label (0..{num_classes - 1}); "
                            f"expected {data_path}/{IMAGENETV2_FOLDER}/<label>/")
        label = int(folder.name)
        if label >= num_classes:
            raise DataError(f"{folder}: label {label} is outside 0..{num_classes - 1} "
                            f"(MODEL.NUM_CLASSES={num_classes})")
        samples += [(str(p), label) for p in _images_under(folder)]
    if not samples:
        raise DataError(f"no ImageNetV2 images under {root}; expected {data_path}/{IMAGENETV2_FOLDER}/<label>/*.jpeg")
    return samples


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
            raise DataError(f"DATA.CLASS_NAMES: {path} not found")
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(names) != num_classes:
            raise DataError(f"DATA.CLASS_NAMES: {path} lists {len(names)} classes but MODEL.NUM_CLASSES is "
                            f"{num_classes}")
        if len(set(names)) != len(names):
            raise DataError(f"DATA.CLASS_NAMES: {path} lists a class more than once")
        return names, f"DATA.CLASS_NAMES={path}"
    if num_classes == 1000:
        from timm.data import ImageNetInfo
        return list(ImageNetInfo("imagenet-1k").label_names()), "the ImageNet-1K synsets"
    if fallback_root is not None:
        names = [p.name for p in _class_folders(fallback_root)]
        if len(names) != num_classes:
            raise DataError(f"{fallback_root} has {len(names)} class folders but MODEL.NUM_CLASSES is {num_classes}")
        return names, f"the class folders of {fallback_root}"
    raise DataError(f"MODEL.NUM_CLASSES={num_classes} is not ImageNet-1K's 1000: set DATA.CLASS_NAMES to a file "
                    "listing the classes in label order, so that class folders map to the right labels")


def load_real_labels(data_path: Path, filenames: Sequence[str]) -> list[list[int]]:
    """ReaL label sets for ``filenames`` (ImageNet val file names), from ``real.json`` (or ``meta_data/real.json``).

    ``real.json`` holds one list of labels per val image in file-number order
    (entry i is ``ILSVRC2012_val_{i+1:08d}.JPEG``); an empty list means ReaL gives the image no label.
    """
    candidates = [data_path / "real.json", data_path / "meta_data" / "real.json"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise DataError(f"ReaL labels not found: none of {', '.join(map(str, candidates))} exists; download "
                        "real.json from github.com/google-research/reassessed-imagenet")
    with open(path, encoding="utf-8") as f:
        real = json.load(f)
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


# --------------------------------------------------------------------------- dataset
class Item(NamedTuple):
    image: Optional[torch.Tensor]  # None when the file could not be read
    label: int
    index: int
    error: Optional[tuple[str, str]]  # (path, why it could not be read) for an unreadable file


class ImageDataset(Dataset):
    """``(path, label)`` samples read as RGB and transformed; a key may carry an augmentation seed.

    ``dataset[i]`` or ``dataset[(i, (seed, epoch))]``: with a seed, the transform's random draws
    (torch, numpy and python ``random``) come from a generator seeded by (seed, epoch, i) alone,
    in any worker process and in any order. An unreadable image gives an :class:`Item` with the
    error instead of raising, so that the main process decides whether to skip it.
    """

    def __init__(self, samples: list[tuple[str, int]], transform: Callable, name: str = ""):
        self.samples = samples
        self.transform = transform
        self.name = name

    def __len__(self) -> int:
        return len(self.samples)

    def filenames(self) -> list[str]:
        return [path for path, _ in self.samples]

    def __getitem__(self, key) -> Item:
        index, seed = key if isinstance(key, tuple) else (key, None)
        path, label = self.samples[index]
        try:
            image = open_image(path)
        except (FileNotFoundError, ImageDecodeError) as e:
            return Item(None, label, index, (path, str(e)))
        with seeded(seed, index):
            return Item(self.transform(image), label, index, None)


@contextlib.contextmanager
def seeded(seed: Optional[tuple], index: int):
    """Seed torch / numpy / random from ``(*seed, index)`` inside the block, restoring their states after."""
    if seed is None:
        yield
        return
    state = int(np.random.SeedSequence([*seed, index]).generate_state(1)[0])
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(state)  # the CPU generator only: GPU generators are left alone
        random.seed(state)
        np.random.seed(state)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class Batch(NamedTuple):
    inputs: Optional[torch.Tensor]  # images or cached features; None if every sample was unreadable
    targets: torch.Tensor
    indices: torch.Tensor
    errors: list  # (path, message) of the unreadable samples left out of this batch


def collate(items: list[Item]) -> Batch:
    good = [item for item in items if item.error is None]
    inputs = torch.stack([item.image for item in good]) if good else None
    return Batch(inputs, torch.tensor([item.label for item in good], dtype=torch.long),
                 torch.tensor([item.index for item in good], dtype=torch.long),
                 [item.error for item in items if item.error is not None])


class UnreadableImages:
    """Counts the distinct unreadable files this process met; more than ``limit`` stops the run."""

    def __init__(self, limit: int):
        self.limit = limit
        self.seen: dict[str, str] = {}  # path -> why

    def __len__(self) -> int:
        return len(self.seen)

    def add(self, errors: Sequence[tuple[str, str]]) -> None:
        for path, message in errors:
            if path in self.seen:  # met again in a later epoch
                continue
            self.seen[path] = message
            if len(self.seen) > self.limit:
                raise BadImageError(f"{message}; {len(self.seen)} unreadable images exceed DATA.MAX_BAD_IMAGES="
                                    f"{self.limit} (raise it to skip such images, or fix the dataset)")
            logger.warning("skipping an unreadable image (%d of at most %d): %s", len(self.seen), self.limit,
                           message)


# --------------------------------------------------------------------------- transforms
def _interpolation(name: str):
    from torchvision.transforms import InterpolationMode
    return {"bicubic": InterpolationMode.BICUBIC, "lanczos": InterpolationMode.LANCZOS,
            "hamming": InterpolationMode.HAMMING}.get(name, InterpolationMode.BILINEAR)


def build_transform(is_train: bool, config):
    """The train or eval transform named by ``DATA.TRANSFORM`` (upstream ``dataset/build.py``)."""
    from torchvision import transforms as T

    size, mean, std = config.DATA.IMG_SIZE, tuple(config.AUG.MEAN), tuple(config.AUG.STD)
    name = config.DATA.TRANSFORM
    center_crop = build_eval_geometry(size, "center_crop", crop_pct=1.0, mean=mean, std=std)
    if name == "build_deterministic_transform":
        return center_crop
    if name == "build_transform_for_linear_probe":
        if not is_train:
            return center_crop
        return T.Compose([T.RandomResizedCrop(size, interpolation=T.InterpolationMode.BICUBIC),
                          T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    # build_transform: timm's RandAugment recipe for training, resize/crop for evaluation
    if is_train:
        from timm.data import create_transform
        transform = create_transform(
            input_size=size, is_training=True,
            color_jitter=config.AUG.COLOR_JITTER if config.AUG.COLOR_JITTER > 0 else None,
            auto_augment=config.AUG.AUTO_AUGMENT if config.AUG.AUTO_AUGMENT != "none" else None,
            re_prob=config.AUG.REPROB, re_mode=config.AUG.REMODE, re_count=config.AUG.RECOUNT,
            interpolation=config.DATA.INTERPOLATION, mean=mean, std=std)
        if size <= 32:  # tiny images: a padded random crop instead of a random resized crop
            transform.transforms[0] = T.RandomCrop(size, padding=4)
        return transform
    interpolation = _interpolation(config.DATA.INTERPOLATION)
    if config.TEST.CROP:
        if config.DATA.INTERPOLATION == "bicubic":
            return center_crop
        geometry = [T.Resize(size, interpolation=interpolation), T.CenterCrop(size)]
    elif config.AUG.RANDOM_RESIZED_CROP:
        geometry = [T.RandomResizedCrop((size, size), interpolation=interpolation)]
    else:
        geometry = [T.Resize((size, size), interpolation=interpolation)]
    return T.Compose([*geometry, T.ToTensor(), T.Normalize(mean, std)])


# --------------------------------------------------------------------------- building the sets
@dataclass
class EvalSet:
    """What evaluation needs beyond images and labels."""

    dataset: Dataset
    kind: str  # DATA.DATASET
    # ImageNet-A/R: the labels (in label order) whose logits are kept; None = all classes
    class_subset: Optional[list[int]] = None
    # ImageNet-ReaL: the ReaL label set of each sample, by dataset index
    real_labels: Optional[list[list[int]]] = None


def _imagenet_split(config, split: str, transform) -> ImageDataset:
    data_path = Path(config.DATA.DATA_PATH)
    if not data_path.is_dir():
        raise DataError(f"DATA.DATA_PATH={str(data_path)!r} is not a folder; {DATA_HELP}")
    list_file = data_path / "meta_data" / f"{split}.txt"
    split_dir = data_path / split
    if list_file.is_file():
        if not split_dir.is_dir():
            raise DataError(f"dataset folder not found: {split_dir} (the images listed in {list_file}); {DATA_HELP}")
        samples = read_image_list(list_file, split_dir, config.MODEL.NUM_CLASSES)
    elif split_dir.is_dir() and any(p.is_dir() for p in split_dir.iterdir()):
        train_dir = data_path / "train"
        names, source = read_class_names(config, fallback_root=train_dir if train_dir.is_dir() else split_dir)
        samples = scan_class_folders(split_dir, names, source)
    else:
        raise DataError(f"{data_path}: neither a list file meta_data/{split}.txt nor class folders under {split}/ "
                        f"found; {DATA_HELP}")
    return ImageDataset(samples, transform, name=f"{data_path}/{split}")


def build_train_set(config) -> ImageDataset:
    return _imagenet_split(config, "train", build_transform(True, config))


def build_train_feature_source(config) -> ImageDataset:
    """The train images under the eval (deterministic) transform: what the feature cache is computed from."""
    return _imagenet_split(config, "train", build_transform(False, config))


def build_eval_set(config) -> EvalSet:
    """The evaluation set of ``DATA.DATASET`` (ImageNet-1K val or one of its variants)."""
    kind = config.DATA.DATASET
    transform = build_transform(False, config)
    data_path = Path(config.DATA.DATA_PATH)
    if kind in ("imagenet", "imagenet-real"):
        dataset = _imagenet_split(config, "val", transform)
        if kind == "imagenet":
            return EvalSet(dataset, kind)
        return EvalSet(dataset, kind, real_labels=load_real_labels(data_path, dataset.filenames()))
    if kind == "imagenetv2":
        return EvalSet(ImageDataset(scan_imagenetv2(data_path, config.MODEL.NUM_CLASSES), transform, str(data_path)),
                       kind)
    names, source = read_class_names(config)
    samples = scan_class_folders(data_path, names, source)
    dataset = ImageDataset(samples, transform, str(data_path))
    if kind == "imagenet_sketch":
        return EvalSet(dataset, kind)
    subset = sorted({label for _, label in samples})  # imagenet_a / imagenet_r: the classes present
    logger.info("%s: %d classes present of %d; logits restricted to them", data_path, len(subset), len(names))
    return EvalSet(dataset, kind, class_subset=subset)


# --------------------------------------------------------------------------- samplers and loaders
class TrainBatchSampler:
    """Shuffled, sharded, fixed-size batches of ``(index, (seed, epoch))`` keys; resumable mid-epoch.

    The shuffle is ``torch.randperm`` seeded with ``seed + epoch`` and padded to a multiple of the
    process count by repeating its start (as ``DistributedSampler``); process ``rank`` takes every
    ``num_replicas``-th index and drops its last incomplete batch. ``set_epoch(epoch, start_batch)``
    starts the next iteration at batch ``start_batch`` of that epoch.
    """

    def __init__(self, dataset_len: int, batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        if dataset_len < 1:
            raise ValueError("cannot sample batches from an empty dataset")
        self.dataset_len, self.batch_size = dataset_len, batch_size
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.num_samples = math.ceil(dataset_len / num_replicas)
        self.batches_per_epoch = self.num_samples // batch_size
        self.epoch, self.start_batch = 0, 0
        if self.batches_per_epoch == 0:
            raise ValueError(f"{dataset_len} samples over {num_replicas} processes give less than one batch of "
                             f"{batch_size} per process; lower DATA.BATCH_SIZE")

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        """Batches the next iteration yields (the rest of the epoch after ``start_batch``)."""
        return self.batches_per_epoch - self.start_batch

    def epoch_indices(self) -> list[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.dataset_len, generator=g).tolist()
        total = self.num_samples * self.num_replicas
        while len(order) < total:
            order += order[:total - len(order)]
        return order[self.rank:total:self.num_replicas]

    def __iter__(self):
        mine, b, key = self.epoch_indices(), self.batch_size, (self.seed, self.epoch)
        for start in range(self.start_batch * b, self.batches_per_epoch * b, b):
            yield [(i, key) for i in mine[start:start + b]]


def eval_batches(dataset_len: int, batch_size: int, num_replicas: int = 1, rank: int = 0,
                 sequential: bool = False) -> list[list[int]]:
    """This process's evaluation batches: its contiguous shard (``internvl.runtime.shard_indices``: every
    index once over all processes, no padding), or all indices in every process with ``sequential``."""
    mine = list(range(dataset_len)) if sequential else list(shard_indices(dataset_len, num_replicas, rank))
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


def make_loader(dataset: Dataset, batch_sampler, config, device: torch.device) -> DataLoader:
    workers = config.DATA.NUM_WORKERS
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers, collate_fn=collate,
                      pin_memory=config.DATA.PIN_MEMORY and device.type == "cuda", persistent_workers=workers > 0)
