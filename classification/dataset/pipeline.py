"""What every dataset of the linear-probing pipeline goes through: images read and transformed
(:class:`ImageDataset`), unreadable files counted against ``DATA.MAX_BAD_IMAGES``, batches, samplers
and loaders. The on-disk formats are read in the family modules beside this one.

Training batches come from :class:`TrainBatchSampler`: a seeded shuffle per epoch, sharded over
processes, each sample carrying its own augmentation seed. Every batch is therefore a function of
(seed, epoch, position) alone, which is what lets a run resume mid-epoch and end with the weights of
an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import logging
import math
import random
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from internvl.errors import ConfigError, DataError
from internvl.train.distributed import shard_indices
from internvl.data.transforms import ImageDecodeError, open_image
from internvl.data.transforms import build_transform as build_eval_geometry

logger = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DATA_HELP = "see data/README.md (Image classification) for the expected layout"


class BadImageError(DataError):
    """More unreadable images than ``DATA.MAX_BAD_IMAGES`` allows; the message names the last one."""


def images_under(folder: Path) -> list[Path]:
    """The image files under ``folder`` (recursively), sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())


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
            raise ConfigError(f"{dataset_len} samples over {num_replicas} processes give less than one batch of "
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
    """This process's evaluation batches: its contiguous shard (``internvl.train.distributed.shard_indices``: every
    index once over all processes, no padding), or all indices in every process with ``sequential``."""
    mine = list(range(dataset_len)) if sequential else list(shard_indices(dataset_len, num_replicas, rank))
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


def make_loader(dataset: Dataset, batch_sampler, config, device: torch.device) -> DataLoader:
    workers = config.DATA.NUM_WORKERS
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers, collate_fn=collate,
                      pin_memory=config.DATA.PIN_MEMORY and device.type == "cuda", persistent_workers=workers > 0)


class EvalSet(NamedTuple):
    """An evaluation set and what scoring it needs beyond images and labels."""

    dataset: ImageDataset
    kind: str  # DATA.DATASET
    # ImageNet-A/R: the labels (in label order) whose logits are kept; None = all classes
    class_subset: Optional[list[int]] = None
    # ImageNet-ReaL: the ReaL label set of each sample, by dataset index
    real_labels: Optional[list[list[int]]] = None
