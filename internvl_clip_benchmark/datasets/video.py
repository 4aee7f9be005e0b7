"""Video datasets: ``msrvtt`` (zero-shot retrieval) and ``kinetics400`` / ``kinetics600`` / ``kinetics700``
(zero-shot classification), ``--num_frames N`` frames per video.

A video is what an image is to the image datasets: its ``N`` frames (upstream's MSR-VTT sampling, at the
centres of equal intervals, :func:`internvl.data.video.interval_centres`) each go through the model's
transform, and its feature is the mean of its frame features. The frame features are kept by the
feature store (``--feature_cache_dir``) under the videos, the transform and ``N``, so another language,
task or template set reuses them and another ``N`` encodes again. Every video is opened when the dataset
is built, before the model loads: all that are missing, undecodable or too short for ``N`` frames are
listed by path in one error (none is skipped).

``msrvtt`` (``--language en``)::

    <root>/msrvtt_test1k.json          [{"video": "video7020.mp4", "caption": "..."}, ...]  (--annotation_file
                                       names another); one caption per video, as upstream's 1k-A test file
    <root>/videos/all/video7020.mp4    the videos, names relative to videos/all/

``kinetics400`` / ``kinetics600`` / ``kinetics700`` (``--split val`` for the published numbers), either::

    <root>/<split>/<class name>/<video>.mp4         a folder per class ("air_drumming" reads "air drumming")

or a CSV (``<root>/annotations/<split>.csv``, or ``--annotation_file``), with a header, either Kinetics' own
``label,youtube_id,time_start,time_end,split[,is_cc]`` (video ``<root>/<split>/<youtube_id>_<start:06d>_
<end:06d>.mp4``) or ``path,label`` (``path`` relative to ``<root>``). Classes are the sorted class names
(labels in that order, as torchvision's folder datasets number them). Prompts: :data:`KINETICS_TEMPLATES`.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Optional, Sequence

from torch.utils.data import Dataset

from internvl.data.synthetic import SyntheticImages
from internvl.data.video import (MSRVTT_METADATA, MSRVTT_VIDEOS, SYNTHETIC_VIDEO_FRAMES, VideoFrames, check_videos,
                                 read_msrvtt, synthetic_video, write_video)
from internvl.errors import ConfigError, DataError, MissingFileError

from ..features import ImageView
from .common import DATA_HELP, classification_prompts

__all__ = ["MSRVTT_LAYOUT", "KINETICS_LAYOUT", "KINETICS_TEMPLATES", "ListedVideos", "build_msrvtt",
           "build_kinetics", "write_kinetics"]

MSRVTT_LAYOUT = f"{MSRVTT_METADATA} and the videos in {MSRVTT_VIDEOS}/"
KINETICS_LAYOUT = "<split>/<class name>/*.mp4, or annotations/<split>.csv with the videos"
# CLIP's 28 Kinetics-700 prompts (openai/CLIP, data/prompts.md): 4 openings x 7 phrasings. The InternVL paper
# does not print its video templates; --custom_template_file (key "kinetics400", ...) gives others.
KINETICS_TEMPLATES = [f"{opening} {phrase}." for opening in ("a photo of", "a video of", "a example of",
                                                              "a demonstration of")
                      for phrase in ("{c}", "a person {c}", "a person using {c}", "a person doing {c}",
                                     "a person during {c}", "a person performing {c}", "a person practicing {c}")]


class ListedVideos(Dataset):
    """``(frames (num_frames, 3, H, W), target)`` per listed video: the target is a list of captions (a
    retrieval set) or a label (a classification set, with ``classes`` and ``templates``), as CLIP Benchmark's
    metrics read a dataset; :meth:`image_view` hands the feature store the frames and their cache key."""

    def __init__(self, paths: Sequence[str], targets: Sequence, transform, where: Sequence[str], num_frames: int,
                 classes: Optional[list] = None, templates: Optional[list] = None):
        self.paths, self.targets, self.where = list(paths), list(targets), list(where)
        self.transform, self.num_frames, self.classes, self.templates = transform, num_frames, classes, templates
        self._frames = VideoFrames(self.paths, num_frames, transform, self.where)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return self._frames[index], self.targets[index]

    def image_view(self) -> ImageView:
        return ImageView(self.paths, self.targets, self._frames, self.classes,
                         key={"num_frames": self.num_frames, "sampling": "interval_centres"})


def _check(paths: list, where: list, num_frames: int, listed_in) -> None:
    check_videos(paths, num_frames, where, listed_in=listed_in, help_text=DATA_HELP)


def build_msrvtt(root: Path, transform, split: str = "test", language: str = "en", annotation_file: Optional[str] = None,
                 num_frames: int = 1, **_) -> ListedVideos:
    if split != "test":
        raise ConfigError(f"msrvtt has the 1k-A test split only, not --split {split}")
    metadata = Path(annotation_file) if annotation_file else root / MSRVTT_METADATA
    if not metadata.is_file():
        raise MissingFileError(f"{metadata} not found: msrvtt reads it (or --annotation_file); {DATA_HELP}")
    pairs = read_msrvtt(metadata, root / MSRVTT_VIDEOS)
    paths, where = [p.video for p in pairs], [p.where for p in pairs]
    _check(paths, where, num_frames, metadata)
    return ListedVideos(paths, [[p.caption] for p in pairs], transform, where, num_frames)


def _read_csv(path: Path, root: Path, split: str) -> tuple[list, list, list]:
    """``(paths, class names, where)`` of a Kinetics CSV (see the module doc)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = set(reader.fieldnames or [])
        official = {"label", "youtube_id", "time_start", "time_end"} <= fields
        if not official and not {"path", "label"} <= fields:
            raise DataError(f"{path}:1: expected the header label,youtube_id,time_start,time_end,split (Kinetics) or "
                            f"path,label; got {','.join(reader.fieldnames or [])!r}")
        paths, names, where = [], [], []
        for number, row in enumerate(reader, start=2):
            label = (row.get("label") or "").strip()
            if not label:
                raise DataError(f"{path}:{number}: empty label")
            if official:
                try:
                    start, end = int(float(row["time_start"])), int(float(row["time_end"]))
                except (TypeError, ValueError):
                    raise DataError(f"{path}:{number}: time_start / time_end are not numbers: "
                                    f"{row['time_start']!r}, {row['time_end']!r}") from None
                video = root / (row.get("split") or split).strip() / f"{row['youtube_id']}_{start:06d}_{end:06d}.mp4"
            else:
                video = root / row["path"].strip()
            paths.append(str(video))
            names.append(label)
            where.append(f"{path}:{number}")
    if not paths:
        raise DataError(f"{path} lists no videos after its header")
    return paths, names, where


def _read_folders(folder: Path) -> tuple[list, list, list]:
    paths, names = [], []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for video in sorted(class_dir.iterdir()):
            if video.is_file() and not video.name.startswith("."):
                paths.append(str(video))
                names.append(class_dir.name)
    if not paths:
        raise DataError(f"{folder} has no class folders with videos; expected {KINETICS_LAYOUT}")
    return paths, names, [f"class folder {Path(p).parent.name}" for p in paths]


def build_kinetics(name: str, root: Path, transform, split: str = "val", language: str = "en",
                   annotation_file: Optional[str] = None, custom_classname_file: Optional[str] = None,
                   custom_template_file: Optional[str] = None, num_frames: int = 1, **_) -> ListedVideos:
    if language != "en" and not custom_classname_file:
        raise ConfigError(f"{name}'s class names are English; --language {language} needs --custom_classname_file "
                          f"with a {name!r} key")
    csv_file = Path(annotation_file) if annotation_file else root / "annotations" / f"{split}.csv"
    if annotation_file and not csv_file.is_file():
        raise MissingFileError(f"--annotation_file {csv_file} not found")
    if csv_file.is_file():
        paths, names, where = _read_csv(csv_file, root, split)
        listed_in = csv_file
    elif (root / split).is_dir():
        paths, names, where = _read_folders(root / split)
        listed_in = root / split
    else:
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise MissingFileError(f"{name} --split {split}: neither {csv_file} nor the folder {root / split} exists "
                               f"(folders in {root}: {', '.join(present) or 'none'}); expected {KINETICS_LAYOUT}; "
                               f"{DATA_HELP}")
    raw = sorted(set(names))
    index = {n: i for i, n in enumerate(raw)}
    _check(paths, where, num_frames, listed_in)
    classes = [n.replace("_", " ") for n in raw]
    classes, templates = classification_prompts(name, language, classes, {"en": KINETICS_TEMPLATES},
                                                custom_classname_file, custom_template_file)
    if len(classes) != len(raw):
        raise ConfigError(f"--custom_classname_file gives {len(classes)} class names for {name}, but {listed_in} has "
                          f"{len(raw)} classes")
    return ListedVideos(paths, [index[n] for n in names], transform, where, num_frames, classes, templates)


def write_kinetics(root: os.PathLike, num_videos: int, kit: Optional[SyntheticImages] = None, start: int = 0,
                   split: str = "val", layout: str = "folders", num_frames: int = SYNTHETIC_VIDEO_FRAMES) -> Path:
    """Synthetic Kinetics: the kit's classes as actions ("red_circle" folders, prompts "red circle"),
    ``num_videos`` moving-shape videos (samples ``start...``), as class folders (``layout="folders"``) or as
    Kinetics' CSV (``layout="csv"``: ``annotations/<split>.csv`` and ``<split>/<id>_<start>_<end>.mp4``).
    Refuses to overwrite."""
    if layout not in ("folders", "csv"):
        raise ValueError(f"layout must be 'folders' or 'csv', got {layout!r}")
    kit = kit or SyntheticImages()
    root = Path(root)
    if (root / split).exists():
        raise FileExistsError(f"{root / split} already exists; remove it first, a writer never mixes datasets")
    rows = ["label,youtube_id,time_start,time_end,split"]
    for index in range(start, start + num_videos):
        frames, _, sample = synthetic_video(kit, index, num_frames)
        if layout == "folders":
            write_video(root / split / sample.class_name / f"{index:06d}.mp4", frames)
        else:
            youtube_id = f"syn{index:08d}"
            write_video(root / split / f"{youtube_id}_{0:06d}_{2:06d}.mp4", frames)
            rows.append(f"{sample.class_name},{youtube_id},0,2,{split}")
    if layout == "csv":
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"{split}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root
