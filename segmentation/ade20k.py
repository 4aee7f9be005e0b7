"""ADE20K (``ADEChallengeData2016``, SceneParsing 150 classes): the reader, and the synthetic writer of the
same layout.

Layout (``data/ade/ADEChallengeData2016``, as MMSegmentation and upstream expect it)::

    images/training/ADE_train_00000001.jpg ...        annotations/training/ADE_train_00000001.png ...
    images/validation/ADE_val_00000001.jpg ...        annotations/validation/ADE_val_00000001.png ...

An annotation is a single-channel PNG of the image's size: 0 = unlabelled, k = class k (1..150). With
``reduce_zero_label=True`` (always, for ADE20K) 0 becomes the ignore index 255 and k becomes k - 1.
Images are listed by scanning ``img_dir`` for ``img_suffix`` (sorted), or from a ``split`` file of names.

``max_image_num`` (upstream's few-shot option) keeps a random subset: the list is shuffled with
``random.Random(seed)`` and cut to that length, so the same seed always gives the same subset (the run
writes its list to ``<work_dir>/train_subset.txt``).

Checked while reading, each an error naming the file: a missing dataset folder or annotation, an
unreadable file, an annotation whose size differs from its image, a label outside ``0..num_classes-1``
(after the zero-label reduction) other than the ignore index.

:func:`write_synthetic_ade20k` writes the same layout from the synthetic kit: class 1 = background,
class ``2 + k`` = the kit's class k (a coloured shape), 0 = the antialiased rim of each shape (partly
covered pixels, left unlabelled as ADE20K leaves boundaries), and ``classes.txt`` with the names of the
classes after the reduction (``background``, ``blue_circle``, ...).
"""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from internvl.errors import ConfigError, DataError, MissingFileError

logger = logging.getLogger(__name__)

__all__ = ["ADE20K_CLASSES", "ADE20K_PALETTE", "ADE20KDataset", "DATASET_ARGS", "read_image", "read_label",
           "few_shot_subset", "write_synthetic_ade20k", "build_dataset"]

ADE20K_CLASSES = (
    'wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed', 'windowpane', 'grass', 'cabinet',
    'sidewalk', 'person', 'earth', 'door', 'table', 'mountain', 'plant', 'curtain', 'chair', 'car', 'water',
    'painting', 'sofa', 'shelf', 'house', 'sea', 'mirror', 'rug', 'field', 'armchair', 'seat', 'fence', 'desk',
    'rock', 'wardrobe', 'lamp', 'bathtub', 'railing', 'cushion', 'base', 'box', 'column', 'signboard',
    'chest of drawers', 'counter', 'sand', 'sink', 'skyscraper', 'fireplace', 'refrigerator', 'grandstand',
    'path', 'stairs', 'runway', 'case', 'pool table', 'pillow', 'screen door', 'stairway', 'river', 'bridge',
    'bookcase', 'blind', 'coffee table', 'toilet', 'flower', 'book', 'hill', 'bench', 'countertop', 'stove',
    'palm', 'kitchen island', 'computer', 'swivel chair', 'boat', 'bar', 'arcade machine', 'hovel', 'bus',
    'towel', 'light', 'truck', 'tower', 'chandelier', 'awning', 'streetlight', 'booth', 'television receiver',
    'airplane', 'dirt track', 'apparel', 'pole', 'land', 'bannister', 'escalator', 'ottoman', 'bottle',
    'buffet', 'poster', 'stage', 'van', 'ship', 'fountain', 'conveyer belt', 'canopy', 'washer', 'plaything',
    'swimming pool', 'stool', 'barrel', 'basket', 'waterfall', 'tent', 'bag', 'minibike', 'cradle', 'oven',
    'ball', 'food', 'step', 'tank', 'trade name', 'microwave', 'pot', 'animal', 'bicycle', 'lake', 'dishwasher',
    'screen', 'blanket', 'sculpture', 'hood', 'sconce', 'vase', 'traffic light', 'tray', 'ashcan', 'fan',
    'pier', 'crt screen', 'plate', 'monitor', 'bulletin board', 'shower', 'radiator', 'glass', 'clock', 'flag',)
ADE20K_PALETTE = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80), (140, 140, 140),
    (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7), (150, 5, 61), (120, 120, 70),
    (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3), (0, 102, 200),
    (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220),
    (255, 9, 92), (112, 9, 255), (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10),
    (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 140),
    (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0), (0, 0, 255),
    (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255), (11, 200, 200), (255, 82, 0), (0, 255, 245),
    (0, 61, 255), (0, 255, 112), (0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0),
    (0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0),
    (0, 255, 153), (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194), (0, 255, 82),
    (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255), (0, 255, 163), (255, 153, 0),
    (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255), (163, 255, 0), (255, 235, 0), (8, 184, 170),
    (133, 0, 255), (0, 255, 92), (184, 0, 255), (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112),
    (92, 255, 0), (0, 224, 255), (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0),
    (255, 0, 163), (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255), (255, 255, 0),
    (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255),
    (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255), (184, 255, 0), (0, 133, 255), (255, 214, 0),
    (25, 194, 194), (102, 255, 0), (92, 0, 255),)


def read_image(path: str | os.PathLike):
    """The image at ``path`` as an RGB PIL image; an unreadable file is a DataError naming it."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise MissingFileError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path}: cannot read the image ({err})") from None


def read_label(path: str | os.PathLike, image_shape: Optional[tuple] = None, reduce_zero_label: bool = False,
               num_classes: Optional[int] = None, ignore_index: int = 255, image_path=None) -> np.ndarray:
    """The label map at ``path`` (uint8, HxW), zero label reduced if asked, and checked (module doc)."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as label:
            if label.mode not in ("L", "P", "I", "I;16"):
                raise DataError(f"{path}: an annotation is a single-channel PNG of class ids, got mode {label.mode}")
            seg = np.asarray(label)
    except FileNotFoundError:
        raise MissingFileError(f"annotation not found: {path} (the label of {image_path})") from None
    except UnidentifiedImageError as err:
        raise DataError(f"{path}: cannot read the annotation ({err})") from None
    if image_shape is not None and seg.shape[:2] != tuple(image_shape[:2]):
        raise DataError(f"{path}: annotation is {seg.shape[1]}x{seg.shape[0]} (WxH) but its image {image_path} "
                        f"is {image_shape[1]}x{image_shape[0]}")
    if seg.max(initial=0) > 255:
        raise DataError(f"{path}: label values up to {seg.max()} do not fit the uint8 label maps of ADE20K")
    seg = seg.astype(np.uint8)
    if reduce_zero_label:
        seg = seg - 1  # uint8: 0 wraps to 255, the ignore index
        seg[seg == 254] = 255
    if num_classes is not None:
        bad = np.unique(seg[(seg >= num_classes) & (seg != ignore_index)])
        if bad.size:
            shown = [int(v) + int(reduce_zero_label) for v in bad[:5]]
            raise DataError(f"{path}: label values {shown} are outside the {num_classes} classes "
                            f"(1..{num_classes} with reduce_zero_label, 0 = unlabelled)" if reduce_zero_label else
                            f"{path}: label values {shown} are outside 0..{num_classes - 1} and not the "
                            f"ignore index {ignore_index}")
    return seg


def few_shot_subset(items: list, max_image_num: Optional[int], seed: int) -> list:
    """Upstream's ``max_image_num``: shuffle (here with ``random.Random(seed)``, reproducible) and keep the first N."""
    if max_image_num is None:
        return list(items)
    if max_image_num < 1:
        raise ConfigError(f"max_image_num={max_image_num} must be at least 1")
    items = list(items)
    random.Random(seed).shuffle(items)
    return items[:max_image_num]


# MMSegmentation's CustomDataset arguments (+ upstream's max_image_num); `type` picks the dataset family.
DATASET_ARGS = dict(type="ADE20KDataset", data_root=None, img_dir=None, ann_dir=None, pipeline=None, split=None,
                    img_suffix=".jpg", seg_map_suffix=".png", reduce_zero_label=True, ignore_index=255,
                    classes=None, palette=None, test_mode=False, max_image_num=None, gt_seg_map_loader_cfg=None,
                    file_client_args=None)


class ADE20KDataset(torch.utils.data.Dataset):
    """Items are ``pipeline(results)`` dicts. A key is an index, or ``(index, epoch)`` from the training
    sampler; the sample's random generator is seeded with ``(seed, epoch, index)``."""

    def __init__(self, data_root, img_dir: str, ann_dir: Optional[str], pipeline: Sequence[Callable],
                 split: Optional[str] = None, img_suffix: str = ".jpg", seg_map_suffix: str = ".png",
                 reduce_zero_label: bool = True, ignore_index: int = 255, classes=None, palette=None,
                 max_image_num: Optional[int] = None, seed: int = 0, where: str = "data"):
        root = Path(data_root) if data_root is not None else Path(".")
        if not root.is_dir():
            raise MissingFileError(f"{where}.data_root: dataset folder {root} does not exist; see data/README.md "
                                   "for the ADEChallengeData2016 layout (or write a synthetic one with "
                                   "python -m segmentation.ade20k)")
        self.img_dir = root / img_dir
        self.ann_dir = root / ann_dir if ann_dir is not None else None
        for key, folder in (("img_dir", self.img_dir), ("ann_dir", self.ann_dir)):
            if folder is not None and not folder.is_dir():
                raise MissingFileError(f"{where}.{key}: {folder} does not exist; an ADE20K root holds "
                                       "images/{training,validation} and annotations/{training,validation}")
        self.pipeline, self.seed = list(pipeline), seed
        self.reduce_zero_label, self.ignore_index = reduce_zero_label, ignore_index
        self.classes = _class_names(classes, root, where)
        self.palette = [tuple(c) for c in palette] if palette is not None else _palette(len(self.classes))
        names = self._names(root, split, img_suffix, where)
        if not names:
            raise DataError(f"{where}: no '{img_suffix}' images in {self.img_dir}")
        items = []
        for name in names:
            image = self.img_dir / f"{name}{img_suffix}"
            label = self.ann_dir / f"{name}{seg_map_suffix}" if self.ann_dir is not None else None
            if label is not None and not label.is_file():
                raise MissingFileError(f"annotation not found: {label} (the label of {image})")
            items.append((str(image), str(label) if label is not None else None))
        self.items = few_shot_subset(items, max_image_num, seed)
        if max_image_num is not None:
            logger.info("%s: %d of %d images kept (max_image_num=%d, seed %d)", where, len(self.items), len(items),
                        max_image_num, seed)

    def _names(self, root: Path, split: Optional[str], suffix: str, where: str) -> list[str]:
        if split is not None:
            path = root / split
            if not path.is_file():
                raise MissingFileError(f"{where}.split: {path} does not exist")
            names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            for number, name in enumerate(names, 1):
                if not (self.img_dir / f"{name}{suffix}").is_file():
                    raise MissingFileError(f"{path}:{number}: image {self.img_dir / (name + suffix)} does not exist")
            return names
        return sorted(str(p.relative_to(self.img_dir))[:-len(suffix)] for p in self.img_dir.rglob(f"*{suffix}"))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        image, label = self.items[index]
        results = {"filename": image, "seg_filename": label, "index": index, "num_classes": self.num_classes,
                   "ignore_index": self.ignore_index, "rng": np.random.default_rng([self.seed, epoch, index])}
        for step in self.pipeline:
            results = step(results)
        return results

    def ground_truth(self, index: int, shape: Optional[tuple] = None) -> np.ndarray:
        """The label map the metric scores ``index`` against (reduced, checked)."""
        image, label = self.items[index]
        if label is None:
            raise ConfigError(f"{image} has no annotation (ann_dir is not set): cannot evaluate")
        return read_label(label, shape, self.reduce_zero_label, self.num_classes, self.ignore_index, image)


def _class_names(classes, root: Path, where: str) -> tuple[str, ...]:
    if classes is None:
        return ADE20K_CLASSES
    if isinstance(classes, str):
        path = Path(classes) if Path(classes).is_file() else root / classes
        if not path.is_file():
            raise MissingFileError(f"{where}.classes: class list {classes} not found (also looked in {root})")
        return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    return tuple(classes)


def _palette(n: int) -> list[tuple[int, int, int]]:
    if n <= len(ADE20K_PALETTE):
        return list(ADE20K_PALETTE[:n])
    rng = np.random.default_rng(0)
    return list(ADE20K_PALETTE) + [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(n - 150)]


def build_dataset(args: dict, seed: int, where: str) -> ADE20KDataset:
    """A config's ``data.train`` / ``data.val`` / ``data.test`` dict -> dataset (keys validated)."""
    from .backbone import check_keys
    from .transforms import build_pipeline

    check_keys(args, DATASET_ARGS, where)
    a = {**DATASET_ARGS, **args}
    if a["type"] != "ADE20KDataset":
        raise ConfigError(f"{where}.type={a['type']!r}: supported datasets: ADE20KDataset")
    for key in ("gt_seg_map_loader_cfg", "file_client_args"):
        if a[key] is not None:
            raise ConfigError(f"{where}.{key} is not supported (files are read from the local file system)")
    if a["img_dir"] is None or a["pipeline"] is None:
        raise ConfigError(f"{where}: img_dir and pipeline are required")
    return ADE20KDataset(a["data_root"], a["img_dir"], a["ann_dir"], build_pipeline(a["pipeline"], f"{where}.pipeline"),
                         split=a["split"], img_suffix=a["img_suffix"], seg_map_suffix=a["seg_map_suffix"],
                         reduce_zero_label=a["reduce_zero_label"], ignore_index=a["ignore_index"],
                         classes=a["classes"], palette=a["palette"], max_image_num=a["max_image_num"], seed=seed,
                         where=where)


# ------------------------------------------------------------------------------------------- synthetic writer
_SPLIT_PREFIX = {"training": "ADE_train", "validation": "ADE_val"}


def write_synthetic_ade20k(root: str | os.PathLike, splits: Optional[dict] = None, kit=None) -> Path:
    """Write ``root/images/<split>/ADE_<train|val>_<n>.jpg`` and ``root/annotations/<split>/...png`` from the
    synthetic kit (classes in the module doc); ``splits`` is ``{"training": n, "validation": m}``."""
    from PIL import Image

    from internvl.datakit import SyntheticImages, save_jpeg, split_ranges

    kit = kit or SyntheticImages(num_classes=4, image_size=112)
    splits = splits or {"training": 64, "validation": 16}
    unknown = set(splits) - set(_SPLIT_PREFIX)
    if unknown:
        raise ValueError(f"ADE20K splits are 'training' and 'validation', got {sorted(unknown)}")
    root = Path(root)
    for split in splits:
        for kind in ("images", "annotations"):
            if (root / kind / split).exists():
                raise FileExistsError(f"{root / kind / split} already exists; remove it first, a writer never "
                                      "mixes datasets")
    for split, indices in split_ranges(splits).items():
        (root / "annotations" / split).mkdir(parents=True)
        for number, index in enumerate(indices, 1):
            name = f"{_SPLIT_PREFIX[split]}_{number:08d}"
            sample, coverage = kit.sample(index), kit.coverage(index)
            label = np.where(coverage >= 1.0, 2 + sample.label, np.where(coverage <= 0.0, 1, 0)).astype(np.uint8)
            save_jpeg(sample.image, root / "images" / split / f"{name}.jpg")
            Image.fromarray(label, "L").save(root / "annotations" / split / f"{name}.png")
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in ("background", *kit.classes)))
    return root


def main(argv=None) -> None:
    import argparse

    from internvl.datakit import SyntheticImages

    parser = argparse.ArgumentParser(description="Write a synthetic ADEChallengeData2016-style dataset.")
    parser.add_argument("root", help="e.g. data/ade_synthetic/ADEChallengeData2016")
    parser.add_argument("--train", type=int, default=64, help="training images (default 64)")
    parser.add_argument("--val", type=int, default=16, help="validation images (default 16)")
    parser.add_argument("--classes", type=int, default=4, help="shape classes of the kit, 1..16 (default 4)")
    parser.add_argument("--image-size", type=int, default=112, help="image side in pixels (default 112)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    kit = SyntheticImages(num_classes=args.classes, image_size=args.image_size, seed=args.seed)
    root = write_synthetic_ade20k(args.root, {"training": args.train, "validation": args.val}, kit)
    print(f"wrote {args.train} training and {args.val} validation images ({kit.num_classes + 1} classes) to {root}")


if __name__ == "__main__":
    from internvl.cli import run_main
    raise SystemExit(run_main(main))
