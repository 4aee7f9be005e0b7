"""What the dataset modules share: map-style datasets over listed image files, the up-front check that
every listed image exists, and the zero-shot prompts of a classification set."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Optional, Sequence

from torch.utils.data import Dataset

from internvl.errors import ConfigError, MissingFileError

from ..features import ImageFiles, ImageView

__all__ = ["CaptionedImages", "LabelledImages", "check_images_exist", "DATA_HELP", "classification_prompts"]

DATA_HELP = "see data/README.md (clip_benchmark) for the layout and where to download it"


def check_images_exist(paths: Sequence[str], where: Sequence[str], listed_in: os.PathLike) -> None:
    """Every listed image must be there before a model is loaded: the count and the first few are named."""
    missing = [i for i, path in enumerate(paths) if not os.path.isfile(path)]
    if missing:
        shown = "\n  ".join(f"{paths[i]} ({where[i]})" for i in missing[:5])
        raise MissingFileError(f"{len(missing)} of {len(paths)} images listed in {listed_in} are missing, e.g.:\n  "
                               f"{shown}\n{DATA_HELP}")


class CaptionedImages(Dataset):
    """A retrieval set: ``(transform(image), [captions])`` per image, as CLIP Benchmark's retrieval metric
    reads it. ``where[i]`` says where image ``i`` was listed (file and line or entry), for messages."""

    classes = None
    templates = None

    def __init__(self, paths: Sequence[str], captions: Sequence[Sequence[str]], transform: Optional[Callable],
                 where: Sequence[str]):
        self.paths, self.captions, self.where = list(paths), [list(c) for c in captions], list(where)
        self.transform = transform
        self._images = ImageFiles(self.paths, transform, self.where)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return self._images[index], self.captions[index]

    def image_view(self) -> ImageView:
        return ImageView(self.paths, self.captions, self._images)


class LabelledImages(Dataset):
    """A classification set: ``(transform(image), label)``, with ``classes`` and ``templates`` for the
    zero-shot classifier."""

    def __init__(self, paths: Sequence[str], labels: Sequence[int], classes: list, templates: list,
                 transform: Optional[Callable], where: Sequence[str]):
        self.paths, self.targets, self.where = list(paths), list(labels), list(where)
        self.classes, self.templates, self.transform = classes, templates, transform
        self._images = ImageFiles(self.paths, transform, self.where)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return self._images[index], self.targets[index]

    def image_view(self) -> ImageView:
        return ImageView(self.paths, self.targets, self._images, self.classes)


def _laion_file(name: str) -> Path:
    import clip_benchmark.datasets

    return Path(clip_benchmark.datasets.__file__).parent / name


def _read_prompt_file(path: str, flag: str) -> dict:
    """CLIP Benchmark's lookup of a --custom_*_file: the path, else the name in its datasets folder."""
    candidate = Path(path) if os.path.exists(path) else _laion_file(path)
    if not candidate.is_file():
        raise MissingFileError(f"{flag} {path} not found (looked in the working directory and in "
                               f"{_laion_file('')})")
    try:
        return json.loads(candidate.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ConfigError(f"{flag} {candidate} is not valid JSON: {e}") from None


def classification_prompts(dataset_name: str, language: str, classes: Optional[list], templates: dict[str, list],
                           custom_classname_file: Optional[str] = None,
                           custom_template_file: Optional[str] = None) -> tuple[list, list]:
    """``(classes, templates)`` of a classification set with CLIP Benchmark's precedence: the custom files
    (key ``dataset_name``; templates fall back to ``imagenet1k``) over the dataset's own
    ``templates[language]``, which falls back to CLIP Benchmark's ``<language>`` ImageNet templates.
    ``classes`` are the dataset's own class names (in ``templates``' language)."""
    if custom_classname_file:
        names = _read_prompt_file(custom_classname_file, "--custom_classname_file")
        if dataset_name not in names:
            raise ConfigError(f"--custom_classname_file {custom_classname_file} has no key {dataset_name!r} "
                              f"(keys: {sorted(names)[:10]})")
        classes = names[dataset_name]
    if custom_template_file:
        custom = _read_prompt_file(custom_template_file, "--custom_template_file")
        chosen = custom.get(dataset_name, custom.get("imagenet1k"))
        if chosen is None:
            raise ConfigError(f"--custom_template_file {custom_template_file} has neither {dataset_name!r} nor "
                              "'imagenet1k'")
        return classes, chosen
    if language in templates:
        return classes, templates[language]
    packaged = _laion_file(f"{language}_zeroshot_classification_templates.json")
    if not packaged.is_file():
        raise ConfigError(f"no zero-shot templates in language {language!r} for {dataset_name}; pass "
                          "--custom_template_file")
    return classes, json.loads(packaged.read_text(encoding="utf-8"))["imagenet1k"]
