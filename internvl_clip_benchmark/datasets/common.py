"""What the dataset modules share: map-style datasets over listed image files, the up-front check that
every listed image exists, and the zero-shot prompts of a classification set."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Sequence

from torch.utils.data import Dataset

from internvl.errors import ConfigError, MissingFileError
from internvl.fileio import read_json

from ..features import ImageFiles, ImageView

__all__ = ["ListedImages", "caption_file", "check_images_exist", "DATA_HELP", "classification_prompts"]

DATA_HELP = "see data/README.md (clip_benchmark) for the layout and where to download it"


def check_images_exist(paths: Sequence[str], where: Sequence[str], listed_in: os.PathLike) -> None:
    """Every listed image must be there before a model is loaded: the count and the first few are named."""
    missing = [i for i, path in enumerate(paths) if not os.path.isfile(path)]
    if missing:
        shown = "\n  ".join(f"{paths[i]} ({where[i]})" for i in missing[:5])
        raise MissingFileError(f"{len(missing)} of {len(paths)} images listed in {listed_in} are missing, e.g.:\n  "
                               f"{shown}\n{DATA_HELP}")


class ListedImages(Dataset):
    """``(transform(image), target)`` per listed image file, as CLIP Benchmark's metrics read a dataset: the
    target is a list of captions (a retrieval set; ``classes`` and ``templates`` are None) or a label (a
    classification set, with its ``classes`` and zero-shot ``templates``). ``where[i]`` says where image
    ``i`` was listed (file and line or entry), for messages."""

    def __init__(self, paths: Sequence[str], targets: Sequence, transform: Optional[Callable], where: Sequence[str],
                 classes: Optional[list] = None, templates: Optional[list] = None):
        self.paths, self.targets, self.where = list(paths), list(targets), list(where)
        self.transform, self.classes, self.templates = transform, classes, templates
        self._images = ImageFiles(self.paths, transform, self.where)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return self._images[index], self.targets[index]

    def image_view(self) -> ImageView:
        return ImageView(self.paths, self.targets, self._images, self.classes)


def caption_file(root: Path, name: str, annotation_file: Optional[str], dataset: str, language: str,
                 split: str) -> Path:
    """``--annotation_file`` when given, else ``root / name``; it must exist."""
    path = Path(annotation_file) if annotation_file else root / name
    if not path.is_file():
        raise MissingFileError(f"{path} not found: {dataset} --language {language} --split {split} reads it; "
                               f"{DATA_HELP}")
    return path


def _laion_file(name: str) -> Path:
    import clip_benchmark.datasets

    return Path(clip_benchmark.datasets.__file__).parent / name


def _read_prompt_file(path: str, flag: str) -> dict:
    """CLIP Benchmark's lookup of a --custom_*_file: the path, else the name in its datasets folder."""
    candidate = Path(path) if os.path.exists(path) else _laion_file(path)
    if not candidate.is_file():
        raise MissingFileError(f"{flag} {path} not found (looked in the working directory and in "
                               f"{_laion_file('')})")
    return read_json(candidate, flag, "a JSON object: dataset name -> list", kind=dict, error=ConfigError)


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
    return classes, read_json(packaged, "CLIP Benchmark's template file", kind=dict)["imagenet1k"]
