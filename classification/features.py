"""Feature cache (``TRAIN.FEATURE_CACHE``; not in upstream): run the frozen backbone over the train set
once, store what the head consumes, and train the head on the stored features in every epoch.

Valid only when the train transform is deterministic (``DATA.TRANSFORM: build_deterministic_transform``)
and nothing mixes pixels (no mixup/cutmix): then each epoch would feed the head exactly these
features, and recomputing them is pure waste -- the backbone is >99% of the compute of a probe.
``config.check_config`` enforces both. The head sees the same numbers as without the cache, up to
float rounding of the backbone's batched matmuls.

Layout, in the run folder so that a resumed run reuses it::

    <OUTPUT>/feature_cache/train-<key>.npy        float32 (num_samples, feature_dim), memory-mapped
    <OUTPUT>/feature_cache/train-<key>.valid.npy  bool: False where the image could not be read
    <OUTPUT>/feature_cache/train-<key>.json       written last: the cache is complete

``<key>`` hashes everything the features depend on (backbone weights file, architecture, head
type, image size, normalization, the sample list, precision), so a changed setting never reads a
stale cache. Every process computes the rows of its shard into the one shared file (the run folder
must be on a file system all processes see, as for checkpoints); the page cache then serves all
processes of a node from one copy.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from internvl.train.distributed import all_gather_object, barrier
from internvl.train.precision import autocast

from .dataset import ImageDataset, Item, UnreadableImages, eval_batches, make_loader

logger = logging.getLogger(__name__)


def _file_fingerprint(path: str) -> dict:
    if not path:
        return {"path": None}
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file())
        return {"path": str(p.resolve()), "files": [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]}
    stat = p.stat()
    return {"path": str(p.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cache_key(config, dataset: ImageDataset, amp_dtype: Optional[torch.dtype]) -> str:
    """A digest of everything the cached features depend on."""
    vit = config.MODEL.INTERN_VIT_6B
    samples = hashlib.sha1()
    for path, label in dataset.samples:
        samples.update(f"{path}\t{label}\n".encode())
    described = {
        "backbone": _file_fingerprint(vit.PRETRAINED or ""),
        "random_backbone_seed": None if vit.PRETRAINED else config.SEED,
        "architecture": [vit.PATCH_SIZE, vit.PRETRAIN_SIZE, vit.QKV_BIAS, vit.EMBED_DIM, vit.NUM_HEADS, vit.MLP_RATIO,
                         vit.INIT_VALUES, vit.QK_NORMALIZATION, vit.DEPTH, vit.NORM_TYPE],
        "head_input": [vit.CLS_TARGET, vit.ATTN_POOL_NUM_HEADS, vit.CLIP_EMBED_DIM],
        "pixels": [config.DATA.IMG_SIZE, config.DATA.TRANSFORM, list(config.AUG.MEAN), list(config.AUG.STD)],
        "samples": samples.hexdigest(),
        "precision": str(amp_dtype),
    }
    return hashlib.sha1(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


class FeatureDataset(Dataset):
    """Rows of the cache as :class:`Item` s (``image`` holds the feature vector); keys as ``ImageDataset``."""

    def __init__(self, features_path: Path, valid_path: Path, samples: list[tuple[str, int]]):
        self.features_path, self.valid_path, self.samples = features_path, valid_path, samples
        self._features = self._valid = None  # opened lazily: in each worker process

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self):
        return {**self.__dict__, "_features": None, "_valid": None}

    def __getitem__(self, key) -> Item:
        index = key[0] if isinstance(key, tuple) else key
        if self._features is None:
            self._features = np.load(self.features_path, mmap_mode="r")
            self._valid = np.load(self.valid_path, mmap_mode="r")
        path, label = self.samples[index]
        if not self._valid[index]:
            return Item(None, label, index, (path, f"cannot read image {path} (it was unreadable when the feature "
                                                   f"cache {self.features_path} was built)"))
        return Item(torch.from_numpy(np.array(self._features[index])), label, index, None)


@torch.no_grad()
def build_feature_cache(model, dataset: ImageDataset, config, info, amp_dtype: Optional[torch.dtype],
                        unreadable: UnreadableImages) -> FeatureDataset:
    """Compute (or reuse) the cache of ``model.forward_features`` over ``dataset``; see the module doc."""
    directory = Path(config.OUTPUT) / "feature_cache"
    key = cache_key(config, dataset, amp_dtype)
    stem = directory / f"train-{key}"
    features_path, valid_path, done_path = (stem.with_suffix(".npy"), Path(f"{stem}.valid.npy"),
                                            stem.with_suffix(".json"))
    result = FeatureDataset(features_path, valid_path, dataset.samples)
    if all_gather_object(done_path.is_file())[0]:  # rank 0's view decides for everyone
        logger.info("feature cache: reusing %s", features_path)
        return result

    n, dim = len(dataset), model.num_features
    if info.is_main:
        directory.mkdir(parents=True, exist_ok=True)
        np.lib.format.open_memmap(features_path, mode="w+", dtype=np.float32, shape=(n, dim)).flush()
        np.lib.format.open_memmap(valid_path, mode="w+", dtype=np.bool_, shape=(n,)).flush()
    barrier()
    features = np.load(features_path, mmap_mode="r+")
    valid = np.load(valid_path, mmap_mode="r+")
    batches = eval_batches(n, config.DATA.BATCH_SIZE, info.world_size, info.rank)
    loader = make_loader(dataset, batches, config, info.device)
    was_training = model.training
    model.eval()
    start, done = time.time(), 0
    for step, batch in enumerate(loader):
        unreadable.add(batch.errors)
        if batch.inputs is not None:
            with torch.inference_mode(), autocast(info.device, amp_dtype):
                rows = model.forward_features(batch.inputs.to(info.device, non_blocking=True))
            index = batch.indices.numpy()
            features[index] = rows.float().cpu().numpy()
            valid[index] = True
            done += len(index)
        if step % config.PRINT_FREQ == 0 or step == len(batches) - 1:
            rate = done / max(time.time() - start, 1e-9)
            eta = (len(batches) - step - 1) * (time.time() - start) / (step + 1)
            logger.info("feature cache: [%d/%d] %.1f images/s, eta %.0f s", step + 1, len(batches), rate, eta)
    features.flush()
    valid.flush()
    del features, valid
    model.train(was_training)
    barrier()
    if info.is_main:
        meta = {"key": key, "num_samples": n, "dim": dim, "dataset": dataset.name, "seconds": time.time() - start}
        tmp = done_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, done_path)  # written last: its presence means the cache is complete
        logger.info("feature cache: %d x %d features written to %s in %.1f s", n, dim, features_path,
                    meta["seconds"])
    barrier()
    return result

