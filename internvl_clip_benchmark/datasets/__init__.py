"""Datasets: CLIP Benchmark's, plus the InternVL additions, one module per family (reader and synthetic
writer side by side). A dataset of the additions is one :data:`DATASETS` entry.

==================================  ===========================  ==============================  =============
``--dataset``                       task                         ``--language``                  module
==================================  ===========================  ==============================  =============
flickr30k                           zeroshot_retrieval           en, cn (Flickr30K-CN), zh       flickr30k
mscoco_captions                     zeroshot_retrieval           en, cn (COCO-CN)                mscoco
multilingual_mscoco_captions (XTD)  zeroshot_retrieval           en es fr zh it ko ru jp de pl tr  xtd
birdsnap                            zeroshot_classification      en (others: custom names)       birdsnap
msrvtt (MSR-VTT 1k-A, videos)       zeroshot_retrieval           en                              video
kinetics400 / 600 / 700 (videos)    zeroshot_classification      en (others: custom names)       video
==================================  ===========================  ==============================  =============

The video datasets take ``num_frames`` (``--num_frames``): frames per video, whose features are averaged.

Everything else goes to CLIP Benchmark's ``build_dataset`` unchanged (its datasets, downloads, VTAB/TFDS,
``wds/...``). The additions never download: a missing root or file is an error naming what is expected.
``imagenet`` and ``webdataset`` hold synthetic writers of two CLIP Benchmark layouts the tests use.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from internvl.errors import ConfigError, MissingFileError

from . import birdsnap, flickr30k, mscoco, video, xtd
from .common import DATA_HELP

__all__ = ["DatasetSpec", "DATASETS", "build_dataset", "classification_languages"]


@dataclass(frozen=True)
class DatasetSpec:
    task: str
    languages: Optional[tuple[str, ...]]  # None: any the builder accepts (custom class names)
    build: Callable  # (root: Path, transform, split=, language=, annotation_file=, custom_*_file=) -> Dataset
    layout: str  # what the root holds, for messages
    video: bool = False  # its samples are videos: build also takes num_frames=


DATASETS = {
    "flickr30k": DatasetSpec("zeroshot_retrieval", tuple(flickr30k.CAPTION_FILES), flickr30k.build, flickr30k.LAYOUT),
    "mscoco_captions": DatasetSpec("zeroshot_retrieval", tuple(mscoco.CAPTION_FILES), mscoco.build, mscoco.LAYOUT),
    "multilingual_mscoco_captions": DatasetSpec("zeroshot_retrieval", xtd.LANGUAGES, xtd.build, xtd.LAYOUT),
    "birdsnap": DatasetSpec("zeroshot_classification", None, birdsnap.build, birdsnap.LAYOUT),
    "msrvtt": DatasetSpec("zeroshot_retrieval", ("en",), video.build_msrvtt, video.MSRVTT_LAYOUT, video=True),
    **{name: DatasetSpec("zeroshot_classification", None, functools.partial(video.build_kinetics, name),
                         video.KINETICS_LAYOUT, video=True)
       for name in ("kinetics400", "kinetics600", "kinetics700")},
}


def _laion_datasets_dir() -> Path:
    import clip_benchmark.datasets

    return Path(clip_benchmark.datasets.__file__).parent


def classification_languages() -> list[str]:
    """The languages CLIP Benchmark packages class names for (``<lang>_classnames.json``)."""
    return sorted(p.name[:-len("_classnames.json")] for p in _laion_datasets_dir().glob("*_classnames.json"))


def _build_ours(name: str, spec: DatasetSpec, root: str, transform, split: str, language: str, task: str,
                num_frames: int = 1, **kwargs):
    if task != spec.task:
        raise ConfigError(f"{name} is a {spec.task.replace('zeroshot_', 'zero-shot ')} dataset; use --task "
                          f"{spec.task} (or --task auto), not {task}")
    if spec.languages is not None and language not in spec.languages:
        raise ConfigError(f"--language {language} is not available for {name}; it has: {', '.join(spec.languages)}")
    if not os.path.isdir(root):
        raise MissingFileError(f"--dataset_root {root} does not exist; {name} expects it to hold {spec.layout}; "
                               f"{DATA_HELP}")
    if spec.video:
        kwargs["num_frames"] = num_frames
    return spec.build(Path(root), transform, split=split, language=language, **kwargs)


def build_dataset(dataset_name, root="root", transform=None, split="test", download=True, annotation_file=None,
                  language="en", task="zeroshot_classification", wds_cache_dir=None, custom_classname_file=None,
                  custom_template_file=None, num_frames=1, **kwargs):
    """CLIP Benchmark's ``build_dataset`` with the InternVL additions (same signature, plus ``num_frames``: frames
    per video of the video datasets)."""
    spec = DATASETS.get(dataset_name)
    if num_frames < 1:
        raise ConfigError(f"--num_frames must be >= 1, got {num_frames}")
    if spec is not None:
        return _build_ours(dataset_name, spec, root, transform, split, language, task, num_frames=num_frames,
                           annotation_file=annotation_file or None, custom_classname_file=custom_classname_file,
                           custom_template_file=custom_template_file)
    from clip_benchmark.datasets.builder import build_dataset as laion_build_dataset

    if task in ("zeroshot_classification", "linear_probe") and not custom_classname_file \
            and language not in classification_languages():
        raise ConfigError(f"--language {language}: CLIP Benchmark has class names in {', '.join(classification_languages())} "
                          "only; pass --custom_classname_file (and --custom_template_file) for another language")
    try:
        return laion_build_dataset(dataset_name, root=root, transform=transform, split=split, download=download,
                                   annotation_file=annotation_file, language=language, task=task,
                                   wds_cache_dir=wds_cache_dir, custom_classname_file=custom_classname_file,
                                   custom_template_file=custom_template_file, **kwargs)
    except (ValueError, AssertionError) as e:  # CLIP Benchmark's own checks of names, splits and languages
        raise ConfigError(f"CLIP Benchmark cannot build {dataset_name!r} ({split}, {language}): {e}") from None
