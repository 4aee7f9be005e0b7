"""Image features computed once: reused in memory within a run, and on disk across runs (``--feature_cache_dir``).

Zero-shot classification and retrieval spend almost all their time in the image tower; the text side
changes with the language (XTD's eight, ImageNet's classnames in five) and the task, the images do not.
So the image features of a dataset are computed once per (model, transform, image set) and LAION's
metric code then runs over the stored features instead of the images (see :class:`FeatureModel`): the
numbers are the ones the image path gives, batch for batch.

Keys. In memory: the loaded model (the store forgets everything when another model is loaded), the
transform (its ``repr``: geometry, size, interpolation, mean/std), the image set (every file's path, size
and modification time, in order), device type and mixed precision. On disk the model is named by
content: the SHA-256 of every weight file (and ``config.json``), memoised in ``fingerprints.json`` by each
file's path, size, modification time and inode, so a 25 GB checkpoint is hashed once, and again only
when it changes. A retrained checkpoint written to the same path, another ``force_image_size``, the
other transform of a model name, a replaced image: each is another key, never a stale read::

    <feature_cache_dir>/fingerprints.json               weight file -> sha256 (by path, size, mtime, inode)
    <feature_cache_dir>/<sha256 of the key>.pt          {"key": {...}, "features": (N, D), as the model gave them}

Zero-shot classifiers are kept the same way (a second :class:`FeatureStore`, ``what="zero-shot classifier"``,
in the same folder): the text tower's class embeddings, ``(D, classes)``, keyed by the class names, the
templates, the language, device type and mixed precision, and on disk by the content of the weight and
tokenizer files. ImageNet's 1000 classes x 80 templates are encoded once; a second run and the other ImageNet
variants with the same class names (ImageNet-V2, ImageNet-Sketch) read them.

A dataset is reusable when its images are files it can list (:func:`image_view`): the InternVL
additions (Flickr30K, COCO, XTD, Birdsnap) and torchvision folder datasets (ImageNet and the
ImageFolder-based sets). Others (webdataset shards, TFDS/VTAB, CIFAR arrays) take LAION's image path.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from internvl.errors import MissingFileError, from_workers
from internvl.fileio import atomic_save
from internvl.data.transforms import ImageDecodeError, open_image
from internvl.data.workers import usable_workers

__all__ = ["ImageView", "image_view", "ImageFiles", "FeatureStore", "FeatureModel", "FeatureDataset",
           "content_fingerprint", "files_digest", "encode_images", "CACHE_VERSION"]

CACHE_VERSION = 1  # bump when the stored content or its meaning changes


@dataclass
class ImageView:
    """What feature reuse needs of a dataset: its image files in order, the target of each sample (a label,
    a label vector, or a list of captions) read without decoding images, and a dataset of the transformed
    images alone. A video dataset's ``images`` give ``(frames, 3, H, W)`` per video, and ``key`` names what
    else its features depend on (the frame count and sampling)."""

    paths: list[str]
    targets: list
    images: Dataset
    classes: Optional[list] = None
    key: dict = field(default_factory=dict)


class ImageFiles(Dataset):
    """``transform(image)`` of each file; a missing or undecodable file is an error naming it."""

    def __init__(self, paths: Sequence[str], transform: Optional[Callable], where: Optional[Sequence[str]] = None):
        self.paths, self.transform, self.where = list(paths), transform, where

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        entry = f" ({self.where[index]})" if self.where else ""
        try:
            image = open_image(self.paths[index])
        except (MissingFileError, ImageDecodeError) as e:  # named by open_image; add where it was listed
            raise type(e)(f"{e}{entry}") from None
        return self.transform(image) if self.transform is not None else image


def image_view(dataset) -> Optional[ImageView]:
    """An :class:`ImageView` of ``dataset`` when its images are listed files, else None."""
    if hasattr(dataset, "image_view"):
        return dataset.image_view()
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, list) and samples and hasattr(dataset, "targets") \
            and getattr(dataset, "loader", None) is not None:
        # torchvision DatasetFolder / ImageFolder / ImageNet
        targets = list(dataset.targets)
        if getattr(dataset, "target_transform", None) is not None:
            targets = [dataset.target_transform(t) for t in targets]
        paths = [path for path, _ in samples]
        return ImageView(paths, targets, ImageFiles(paths, dataset.transform), getattr(dataset, "classes", None))
    return None


class FeatureDataset(Dataset):
    """``(feature row, target)`` pairs that stand in for ``(image, target)`` in LAION's metric loops."""

    def __init__(self, features: torch.Tensor, targets: list, classes: Optional[list] = None):
        if len(features) != len(targets):
            raise ValueError(f"{len(features)} feature rows for {len(targets)} targets")
        self.features, self.targets, self.classes = features, targets, classes

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return self.features[index], self.targets[index]


class FeatureModel(torch.nn.Module):
    """A CLIP Benchmark model whose "images" are already image features: ``encode_image`` passes them
    through (the frame features of a video, ``(batch, frames, D)``, averaged over the frames, as upstream's
    video feature), ``encode_text`` is the model's."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def encode_image(self, features: torch.Tensor) -> torch.Tensor:
        return features.float().mean(1).to(features.dtype) if features.ndim == 3 else features

    def encode_text(self, text):
        return self.model.encode_text(text)


@torch.no_grad()
def encode_images(model, images: Dataset, batch_size: int, num_workers: int, device: str, amp: bool,
                  verbose: bool = True) -> torch.Tensor:
    """``model.encode_image`` of every image, as rows on the CPU in the dtype the model gives them (mixed
    precision as LAION's metrics use it, ``torch.autocast(device type, enabled=amp)``, so the stored rows are
    exactly what its image loop would compare). Videos (``(frames, 3, H, W)`` items): the frames of a batch
    in one call, a row of ``(frames, D)`` features per video."""
    from tqdm import tqdm

    loader = DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=usable_workers(num_workers))
    device_type = torch.device(device).type
    rows = []
    with from_workers():  # a decode error raised in a worker keeps its one-line message
        for batch in tqdm(loader, desc="image features", disable=not verbose):
            with torch.autocast(device_type, enabled=amp):
                if batch.ndim == 5:  # videos: (batch, frames, 3, H, W)
                    rows.append(model.encode_image(batch.flatten(0, 1).to(device)).unflatten(0, batch.shape[:2]).cpu())
                else:
                    rows.append(model.encode_image(batch.to(device)).cpu())
    return torch.cat(rows)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def files_digest(paths: Sequence[str]) -> str:
    """Digest of a list of files by path, size and modification time (an image set's identity)."""
    h = hashlib.sha256()
    for path in paths:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise MissingFileError(f"image not found: {path}") from None
        h.update(f"{os.path.abspath(path)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()


def content_fingerprint(files: Sequence[os.PathLike], memo: Optional[Path] = None) -> str:
    """SHA-256 over the contents of ``files`` (name and digest of each). With ``memo`` (a JSON file),
    each file's digest is remembered by its path, size, mtime and inode and recomputed only when one of
    them changes."""
    cache = {}
    if memo is not None and memo.is_file():
        try:
            cache = json.loads(memo.read_text())
        except ValueError:
            cache = {}
    changed, parts = False, []
    for file in files:
        path = os.path.abspath(file)
        stat = os.stat(path)
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        entry = cache.get(path)
        if entry is None or entry.get("stamp") != stamp:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 24), b""):
                    h.update(chunk)
            entry = cache[path] = {"stamp": stamp, "sha256": h.hexdigest()}
            changed = True
        parts.append([os.path.basename(path), entry["sha256"]])
    if memo is not None and changed:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, memo)
    return _digest(parts)


class FeatureStore:
    """Tensors computed from one model, by key: in memory for the current model, on disk under ``cache_dir`` when
    given (see the module doc). ``what`` names them ("image features", "zero-shot classifier"); ``stats``
    counts where each request was served from."""

    def __init__(self, cache_dir: Optional[os.PathLike] = None, verbose: bool = True, what: str = "image features"):
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.verbose = verbose
        self.what = what  # in messages and in the disk key, so two stores share one folder
        self._memory: dict[str, torch.Tensor] = {}
        self.stats = {"computed": 0, "memory": 0, "disk": 0}

    def forget(self) -> None:
        """Drop the in-memory features (another model is being loaded)."""
        self._memory.clear()

    def model_fingerprint(self, files: Sequence[os.PathLike]) -> str:
        memo = self.cache_dir / "fingerprints.json" if self.cache_dir else None
        return content_fingerprint(files, memo)

    def _say(self, message: str) -> None:
        if self.verbose:
            print(message, flush=True)

    def get(self, key: dict, disk_key: Optional[dict], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The features for ``key`` (in memory) / ``disk_key`` (on disk; None: not cacheable on disk),
        computing them with ``compute()`` when neither has them."""
        memory_key = _digest(key)
        if memory_key in self._memory:
            self.stats["memory"] += 1
            self._say(f"{self.what}: reused from this run")
            return self._memory[memory_key]
        path = None
        if self.cache_dir is not None and disk_key is not None:
            path = self.cache_dir / f"{_digest({'version': CACHE_VERSION, 'what': self.what, **disk_key})}.pt"
            if path.is_file():
                stored = torch.load(path, map_location="cpu", weights_only=True)
                self.stats["disk"] += 1
                self._say(f"{self.what}: read from the cache {path}")
                self._memory[memory_key] = stored["features"]
                return stored["features"]
        start = time.perf_counter()
        features = compute()
        self.stats["computed"] += 1
        self._say(f"{self.what}: {len(features)} rows computed in {time.perf_counter() - start:.1f} s")
        if path is not None:
            atomic_save({"key": json.loads(json.dumps(disk_key, default=str)), "features": features}, path)
            self._say(f"{self.what}: saved to the cache {path}")
        self._memory[memory_key] = features
        return features
