"""The fine-tuning data format of InternVL-Chat: a meta json naming JSONL annotation files, read and
checked here, with the synthetic writer beside the reader.

Meta json (``--meta_path``), one entry per dataset, as upstream::

    {"my_captions": {"root": "data/my_images/", "annotation": "data/my_captions.jsonl",
                     "data_augment": false, "repeat_time": 1, "length": 1200, "max_dynamic_patch": 6}}

``root`` and ``annotation`` are required; relative paths are relative to the directory the command
runs in (upstream's scripts run in ``internvl_chat/``). ``data_augment`` (default false) re-encodes
each tile as JPEG of a random quality 75-100; ``repeat_time`` (default 1) repeats the file (an
integer) or keeps the first fraction of its lines (below 1); ``length`` is documentation only;
``max_dynamic_patch`` overrides the flag for this dataset. Any other key is an error.

JSONL annotation, one sample per line; the four kinds mix freely in one file::

    {"id": 0, "conversations": [{"from": "human", "value": "Hello"}, {"from": "gpt", "value": "Hi!"}]}
    {"id": 1, "image": "a.jpg", "conversations": [{"from": "human", "value": "<image>\\nWhat is it?"},
                                                 {"from": "gpt", "value": "A cat."}]}
    {"id": 2, "image": ["a.jpg", "b.jpg"], "conversations": [
        {"from": "human", "value": "Image-1: <image>\\nImage-2: <image>\\nWhat differs?"}, {"from": "gpt", "value": "..."}]}
    {"id": 3, "video": "clip.mp4", "conversations": [{"from": "human", "value": "<video>\\nWhat happens?"},
                                                    {"from": "gpt", "value": "..."}]}

Turns alternate ``human`` / ``gpt`` and end with ``gpt``; a leading ``system`` turn replaces the
template's system message. A single image without ``<image>`` gets ``<image>\\n`` in front of the first
question (a video: ``<video>\\n``); several images need one ``<image>`` each, in order. A line may
carry ``"length"`` (its token count) for ``--group_by_length``. Each rule broken is reported as
``file:line: what is wrong``.

Synthetic data (tests, ``make demo``): :func:`write_synthetic_chat_data`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

from internvl.errors import ConfigError, DataError, MissingFileError

__all__ = ["IMAGE_PLACEHOLDER", "VIDEO_PLACEHOLDER", "DatasetSpec", "ChatSample", "SampleProblem", "read_meta",
           "read_lines", "parse_sample", "load_samples", "write_synthetic_chat_data", "CAPTION_QUESTION"]

IMAGE_PLACEHOLDER = "<image>"
VIDEO_PLACEHOLDER = "<video>"
ROLES = ("human", "gpt")
# Special strings the data may not write itself: they would break the image-token bookkeeping.
RESERVED = ("<img>", "</img>", "<IMG_CONTEXT>")
META_KEYS = {"root", "annotation", "data_augment", "repeat_time", "length", "max_dynamic_patch"}
CAPTION_QUESTION = "Provide a one-sentence caption for the provided image."  # upstream's caption prompt


class SampleProblem(DataError):
    """One sample cannot be used; ``where`` is ``file:line``."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of the meta json."""

    name: str
    root: str
    annotation: str
    data_augment: bool = False
    repeat_time: float = 1
    length: Optional[int] = None
    max_dynamic_patch: Optional[int] = None


@dataclass
class ChatSample:
    """A checked JSONL line: the conversation and the media it refers to (paths joined with ``root``)."""

    where: str  # "file:line"
    turns: list  # [(role, text)], roles alternating human/gpt, ending with gpt
    system: Optional[str] = None
    images: list = field(default_factory=list)
    video: Optional[str] = None
    length: Optional[int] = None  # the line's own "length", if any

    @property
    def kind(self) -> str:
        if self.video is not None:
            return "video"
        return {0: "text", 1: "image"}.get(len(self.images), "multi-image")


def _where(path, line: Optional[int] = None) -> str:
    return f"{path}:{line}" if line is not None else str(path)


def read_meta(meta_path: str | os.PathLike, extra_keys: Iterable[str] = ()) -> list[DatasetSpec]:
    """The datasets of a meta json, every field checked (see the module doc). ``extra_keys``: further keys an
    entry may have, read by the caller (the evaluation's ``metric``); the fine-tuning allows none."""
    meta_path = Path(meta_path)
    if not meta_path.is_file():
        raise MissingFileError(f"--meta_path {meta_path}: no such file (a JSON object naming the datasets; "
                               "see internvl_chat/README.md)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{meta_path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not meta:
        found = "an empty object" if meta == {} else f"a JSON {type(meta).__name__}"
        raise ConfigError(f"{meta_path}: expected a JSON object of datasets, "
                          f'{{"name": {{"root": ..., "annotation": "....jsonl"}}, ...}}; found {found}')
    specs = []
    for name, entry in meta.items():
        where = f"{meta_path}: dataset {name!r}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be an object with 'root' and 'annotation', found {entry!r}")
        known = META_KEYS | set(extra_keys)
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(known)}")
        for key in ("root", "annotation"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ConfigError(f"{where} has no {key!r} (a path string); every dataset needs 'root' (the folder "
                                  "image paths are relative to) and 'annotation' (its .jsonl file)")
        annotation = entry["annotation"]
        if not annotation.endswith(".jsonl"):
            raise ConfigError(f"{where}: annotation {annotation!r} is not a .jsonl file (one JSON sample per line)")
        if not Path(annotation).is_file():
            raise MissingFileError(f"{where}: annotation file {annotation} does not exist (relative paths are "
                                   f"relative to the current directory, {os.getcwd()})")
        repeat = entry.get("repeat_time", 1)
        if isinstance(repeat, bool) or not isinstance(repeat, (int, float)) or not repeat > 0 \
                or not math.isfinite(repeat):
            raise ConfigError(f"{where}: repeat_time must be a number > 0, found {repeat!r}")
        if repeat > 1 and repeat != int(repeat):
            raise ConfigError(f"{where}: repeat_time {repeat} is above 1 and not an integer; use a whole number "
                              "of repeats, or a fraction below 1 to keep the first part of the file")
        augment = entry.get("data_augment", False)
        if not isinstance(augment, bool):
            raise ConfigError(f"{where}: data_augment must be true or false, found {augment!r}")
        max_patch = entry.get("max_dynamic_patch")
        if max_patch is not None and (isinstance(max_patch, bool) or not isinstance(max_patch, int) or max_patch < 1):
            raise ConfigError(f"{where}: max_dynamic_patch must be an integer >= 1, found {max_patch!r}")
        length = entry.get("length")
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 0):
            raise ConfigError(f"{where}: length must be a non-negative integer, found {length!r}")
        specs.append(DatasetSpec(name, entry["root"], annotation, augment,
                                 int(repeat) if repeat >= 1 else repeat, length, max_patch))
    return specs


def read_lines(spec: DatasetSpec) -> list[tuple[int, str]]:
    """``(line number, text)`` of the annotation's non-blank lines after ``repeat_time``: a fraction keeps the
    first ``int(n * repeat_time)`` lines, an integer repeats the list."""
    try:
        text = Path(spec.annotation).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{spec.annotation}: not UTF-8 text ({e})") from None
    lines = [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if spec.repeat_time < 1:
        return lines[:int(len(lines) * spec.repeat_time)]
    return lines * int(spec.repeat_time)


def _check_text(where: str, turn: int, value: str) -> None:
    for token in RESERVED:
        if token in value:
            raise SampleProblem(where, f"conversations[{turn}].value contains {token!r}, which the model reserves "
                                       "for image features; write '<image>' where an image goes")


def parse_sample(where: str, text: str, root: str, check_files: bool = True) -> ChatSample:
    """One JSONL line -> :class:`ChatSample`, or :class:`SampleProblem` naming what is wrong."""
    try:
        item = json.loads(text)
    except json.JSONDecodeError as e:
        raise SampleProblem(where, f"not valid JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(item, dict):
        raise SampleProblem(where, f"expected a JSON object, found a JSON {type(item).__name__}")
    conversations = item.get("conversations")
    if conversations is None:
        raise SampleProblem(where, "no 'conversations' key (a list of {\"from\": \"human\"|\"gpt\", \"value\": ...})")
    if not isinstance(conversations, list) or not conversations:
        raise SampleProblem(where, "'conversations' is empty or not a list; a sample needs at least one human "
                                   "question and one gpt answer")
    system, turns = None, []
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict):
            raise SampleProblem(where, f"conversations[{i}] is not an object with 'from' and 'value'")
        for key in ("from", "value"):
            if key not in turn:
                raise SampleProblem(where, f"conversations[{i}] has no {key!r}")
        role, value = turn["from"], turn["value"]
        if not isinstance(value, str) or not value.strip():
            raise SampleProblem(where, f"conversations[{i}].value is empty or not a string")
        _check_text(where, i, value)
        if role == "system" and i == 0:
            system = value
            continue
        expected = ROLES[len(turns) % 2]
        if role != expected:
            hint = " ('system' may only be the first turn)" if role == "system" else ""
            raise SampleProblem(where, f"conversations[{i}].from is {role!r}, expected {expected!r}: turns alternate "
                                       f"'human' and 'gpt', starting with 'human'{hint}")
        turns.append((role, value))
    if not turns:
        raise SampleProblem(where, "the conversation has no human/gpt turns")
    if turns[-1][0] != "gpt":
        raise SampleProblem(where, f"the last turn is from 'human' (conversations[{len(conversations) - 1}]); a "
                                   "sample must end with the gpt answer to train on")

    image, video = item.get("image"), item.get("video")
    if image in ("", []):
        image = None  # upstream treats an empty image field as a pure-text sample
    if video == "":
        video = None
    if image is not None and video is not None:
        raise SampleProblem(where, "has both 'image' and 'video'; a sample has one or the other")
    images = [image] if isinstance(image, str) else image if image is not None else []
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise SampleProblem(where, f"'image' must be a path or a list of paths, found {image!r}")
    if video is not None and not isinstance(video, str):
        raise SampleProblem(where, f"'video' must be a path, found {video!r}")

    for i, (role, value) in enumerate(turns):
        if role == "gpt" and (IMAGE_PLACEHOLDER in value or VIDEO_PLACEHOLDER in value):
            raise SampleProblem(where, "a gpt answer contains '<image>' or '<video>'; placeholders go in the human "
                                       "turns")
    if system is not None and (IMAGE_PLACEHOLDER in system or VIDEO_PLACEHOLDER in system):
        raise SampleProblem(where, "the system turn contains '<image>' or '<video>'; placeholders go in the human "
                                   "turns")
    n_image = sum(value.count(IMAGE_PLACEHOLDER) for _, value in turns)
    n_video = sum(value.count(VIDEO_PLACEHOLDER) for _, value in turns)
    if video is not None:
        if n_image or n_video > 1:
            raise SampleProblem(where, f"a video sample needs at most one '<video>' and no '<image>' (found "
                                       f"{n_video} and {n_image}); its frames are inserted where '<video>' is")
        if n_video == 0:
            turns[0] = (turns[0][0], VIDEO_PLACEHOLDER + "\n" + turns[0][1])
    else:
        if n_video:
            raise SampleProblem(where, "'<video>' in a sample without a 'video' file")
        if len(images) == 1 and n_image == 0:
            turns[0] = (turns[0][0], IMAGE_PLACEHOLDER + "\n" + turns[0][1])  # as upstream
        elif n_image != len(images):
            raise SampleProblem(where, f"the conversation has {n_image} '<image>' placeholder(s) for {len(images)} "
                                       "image(s); write one '<image>' per image, in the order of the 'image' list")

    images = [os.path.join(root, p) for p in images]
    video = os.path.join(root, video) if video is not None else None
    if check_files:
        for path in images + ([video] if video else []):
            if not os.path.isfile(path):
                raise SampleProblem(where, f"file not found: {path} (paths are relative to the dataset root {root!r})")
    length = item.get("length")
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 0):
        raise SampleProblem(where, f"'length' must be a non-negative integer (the sample's token count), found "
                                   f"{length!r}")
    return ChatSample(where, turns, system, images, video, length)


def load_samples(spec: DatasetSpec, check_files: bool = True) -> tuple[list[ChatSample], list[SampleProblem]]:
    """Every line of a dataset parsed and checked: ``(samples, problems)``; nothing is dropped unreported."""
    samples, problems = [], []
    for line, text in read_lines(spec):
        try:
            samples.append(parse_sample(_where(spec.annotation, line), text, spec.root, check_files))
        except SampleProblem as problem:
            problems.append(problem)
    return samples, problems


# ------------------------------------------------------------------------------------------------ synthetic


def _write_jsonl(path: Path, items: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")


def write_synthetic_chat_data(root: str | os.PathLike, num_samples: int, kit=None, start: int = 0,
                              kinds: Sequence[str] = ("caption",), name: str = "synthetic",
                              video_frames: int = 0, data_augment: bool = False) -> Path:
    """Write ``num_samples`` synthetic samples (images ``start ..``) and their meta json; return the meta path.

    ``root/images/<index>.jpg`` hold the kit's images; ``root/<name>.jsonl`` one sample per line, cycling
    through ``kinds``: ``caption`` (upstream's caption question, the kit's English caption),
    ``caption_zh``, ``qa`` (a multi-turn conversation of the kit's four questions), ``multi`` (two images,
    which is the red one), ``text`` (a pure-text question about a colour word) and ``video`` (needs
    ``video_frames`` > 0: an mp4 of the image shifting, written with PyAV). ``root/<name>.json`` is the
    meta json (paths absolute, so it works from any directory)."""
    from internvl.data.synthetic import ZH, SyntheticImages, save_jpeg
    from internvl.data.video import write_shifting_video

    known = {"caption", "caption_zh", "qa", "multi", "text", "video"}
    if set(kinds) - known or not kinds:
        raise ValueError(f"kinds must be from {sorted(known)}, got {list(kinds)}")
    kit = kit or SyntheticImages()
    root = Path(root).resolve()
    annotation = root / f"{name}.jsonl"
    if annotation.exists():
        raise FileExistsError(f"{annotation} already exists; remove it first, a writer never mixes datasets")

    def image(index: int) -> str:
        relative = f"images/{index:06d}.jpg"
        if not (root / relative).exists():
            save_jpeg(kit.sample(index).image, root / relative)
        return relative

    items = []
    for n in range(num_samples):
        index, kind = start + n, kinds[n % len(kinds)]
        s = kit.sample(index)
        if kind == "caption":
            conv = [("human", f"<image>\n{CAPTION_QUESTION}"), ("gpt", s.caption_en)]
            item = {"image": image(index)}
        elif kind == "caption_zh":
            conv = [("human", "<image>\n请用一句话描述这张图片。"), ("gpt", s.caption_zh)]
            item = {"image": image(index)}
        elif kind == "qa":
            conv = [turn for qa in s.qa for turn in (("human", qa.question_en), ("gpt", qa.answer_en))]
            conv[0] = ("human", "<image>\n" + conv[0][1])
            item = {"image": image(index)}
        elif kind == "multi":
            other = kit.sample(index + num_samples)
            conv = [("human", "Image-1: <image>\nImage-2: <image>\nWhat colours are the two shapes?"),
                    ("gpt", f"{s.colour} and {other.colour}")]
            item = {"image": [image(index), image(index + num_samples)]}
        elif kind == "text":
            conv = [("human", f"How do you say {s.colour} in Chinese?"), ("gpt", ZH[s.colour])]
            item = {}
        else:
            if video_frames < 1:
                raise ValueError("kind 'video' needs video_frames >= 1")
            relative = f"videos/{index:06d}.mp4"
            write_shifting_video(root / relative, s.image, video_frames)
            conv = [("human", "<video>\nWhat shape is moving?"), ("gpt", s.shape)]
            item = {"video": relative}
        items.append({"id": index, **item, "conversations": [{"from": r, "value": v} for r, v in conv]})
    _write_jsonl(annotation, items)
    meta = root / f"{name}.json"
    meta.write_text(json.dumps({name: {"root": str(root), "annotation": str(annotation), "data_augment": data_augment,
                                       "repeat_time": 1, "length": len(items)}}, indent=2))
    return meta
