"""Video input shared by the apps: the one frame reader, frame sampling, MSR-VTT metadata, synthetic videos.

The reader decodes with ``decord`` when it is installed (what upstream uses), else with PyAV
(``pip install av``). InternVL-Chat's ``load_video`` (:mod:`.chat_image`), the MSR-VTT retrieval of
``video_retrieval/`` and the video datasets of the clip_benchmark CLI all read frames through
:func:`read_frames`::

    from internvl.data.video import read_frames, interval_centres
    frames = read_frames("video7020.mp4", lambda length, fps: interval_centres(length, 8))   # 8 PIL images

Sampling of the zero-shot video evaluations (upstream's ``video_retrieval/test_msrvtt.py``): ``n`` frames
at the centres of intervals of ``ceil(length / n)`` frames (:func:`interval_centres`). Like upstream's
assertion, a video for which that gives other than ``n`` frames inside the video is an error
(:class:`FrameCountError`), never a silently shorter clip.

MSR-VTT's 1k-A test metadata (the JSON upstream reads): a list of ``{"video": "video7020.mp4", "caption":
"..."}``, one entry per (video, caption) pair, video names relative to the video folder
(:func:`read_msrvtt`; :func:`write_msrvtt` writes a synthetic one). :func:`check_videos` opens every video
before any model is loaded and reports all that are missing, cannot be decoded or are too short, by path.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple, Union

from ..errors import DataError, MissingDependencyError, MissingFileError
from ..fileio import read_json

__all__ = ["VideoDecodeError", "FrameCountError", "video_backend", "video_length", "read_frames",
           "interval_centres", "check_videos", "VideoFrames", "VideoCaption", "read_msrvtt", "synthetic_video", "write_video",
           "write_msrvtt", "MSRVTT_METADATA", "MSRVTT_VIDEOS", "SYNTHETIC_VIDEO_FRAMES"]

if TYPE_CHECKING:
    from PIL import Image

PathLike = Union[str, os.PathLike]
Indices = Union[Sequence[int], Callable[[int, float], Sequence[int]]]

MSRVTT_METADATA = "msrvtt_test1k.json"  # where a dataset root keeps the metadata (the clip_benchmark layout)
MSRVTT_VIDEOS = "videos/all"  # and the videos (MSR-VTT's archive unpacks to videos/all/video<id>.mp4)
SYNTHETIC_VIDEO_FRAMES = 16  # every frame count 1..16 samples cleanly with interval_centres (1, 2, 3, 4, 8, 16)


class VideoDecodeError(DataError):
    """A video exists but cannot be opened or decoded. The message names the file."""


class FrameCountError(DataError):
    """Frame sampling asked for frames a video does not have. The message names the file and the counts."""


def video_backend() -> str:
    """``"decord"`` when installed, else ``"av"``; MissingDependencyError when neither is."""
    for name in ("decord", "av"):
        try:
            __import__(name)
            return name
        except ImportError:
            continue
    raise MissingDependencyError("reading videos needs a video reader: pip install av (or decord)")


def _open_av(path: str):
    import av

    container = av.open(path)
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{path} has no video stream")
    return container, container.streams.video[0]


def _av_length(container, stream) -> Tuple[int, float]:
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    length = stream.frames
    if not length:  # some containers omit the count: decode to count, then rewind
        length = sum(1 for _ in container.decode(stream))
        container.seek(0)
    return int(length), fps


def _wrap(path: str, err: Exception) -> Exception:
    if isinstance(err, (DataError, MissingDependencyError)):
        return err
    return VideoDecodeError(f"cannot decode video {path}: {type(err).__name__}: {err}")


def video_length(path: PathLike) -> Tuple[int, float]:
    """``(number of frames, frames per second)`` of a video, from its header when it has the count."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"video not found: {path}")
    backend = video_backend()
    try:
        if backend == "decord":
            import decord

            reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
            return len(reader), float(reader.get_avg_fps())
        container, stream = _open_av(path)
        with container:
            return _av_length(container, stream)
    except Exception as err:  # the readers raise their own types (av.error.InvalidDataError, decord.DECORDError...)
        raise _wrap(path, err) from err


def read_frames(path: PathLike, indices: Indices) -> List["Image.Image"]:
    """The frames ``indices`` of a video as RGB PIL images, in the order given.

    ``indices`` is a list of frame numbers, or a function ``(number of frames, fps) -> list`` called once
    the video is open (how :func:`interval_centres` and the chat sampling choose). A missing file, an
    undecodable one, or an index past the frames that decode is an error naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"video not found: {path}")
    backend = video_backend()
    try:
        if backend == "decord":
            import decord

            reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
            chosen = [int(i) for i in (indices(len(reader), float(reader.get_avg_fps())) if callable(indices)
                                       else indices)]
            _check_range(path, chosen, len(reader))
            from PIL import Image

            return [Image.fromarray(a).convert("RGB") for a in reader.get_batch(chosen).asnumpy()]
        container, stream = _open_av(path)
        with container:
            length, fps = _av_length(container, stream)
            chosen = [int(i) for i in (indices(length, fps) if callable(indices) else indices)]
            _check_range(path, chosen, length)
            wanted, frames = set(chosen), {}
            last = max(chosen, default=-1)
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted:
                    frames[i] = frame.to_image().convert("RGB")
                if i >= last:
                    break
    except Exception as err:
        raise _wrap(path, err) from err
    missing = sorted(wanted - frames.keys())
    if missing:
        raise VideoDecodeError(f"{path}: the container reports {length} frames but frames {missing} could not be "
                               "decoded; the file may be truncated")
    return [frames[i] for i in chosen]


def _check_range(path: str, chosen: Sequence[int], length: int) -> None:
    bad = [i for i in chosen if not 0 <= i < length]
    if bad:
        raise FrameCountError(f"{path}: frames {bad} asked for, but the video has {length} frames (0..{length - 1})")


def interval_centres(length: int, num_frames: int, path: Optional[PathLike] = None) -> List[int]:
    """Upstream's MSR-VTT sampling: ``interval = ceil(length / num_frames)``, one frame at the centre of each
    interval (``arange(0, length, interval) + interval // 2``).

    Where that gives other than ``num_frames`` frames inside the video (``num_frames`` larger than the
    video, and some short videos: 10 frames at 4 gives 1, 4, 7, 10), upstream's assertion fails; here a
    :class:`FrameCountError` says which video, its length and what to pass instead."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if length < 1:
        raise FrameCountError(f"{path or 'video'}: has no frames")
    interval = math.ceil(length / num_frames)
    chosen = [i + interval // 2 for i in range(0, length, interval)]
    if len(chosen) != num_frames or chosen[-1] >= length:
        fits = [n for n in range(1, min(length, num_frames) + 1) if _samples_cleanly(length, n)]
        inside = [i for i in chosen if i < length]
        shown = chosen if len(chosen) <= 8 else f"{len(chosen)} frames, {chosen[0]}..{chosen[-1]}"
        raise FrameCountError(
            f"{path or 'video'}: {length} frames, and {num_frames} at interval centres (interval {interval}: "
            f"{shown}) give {len(inside)} inside the video, not {num_frames} as upstream asserts; use fewer frames "
            f"({fits[-1] if fits else 1} work for this video)")
    return chosen


def _samples_cleanly(length: int, num_frames: int) -> bool:
    interval = math.ceil(length / num_frames)
    count = len(range(0, length, interval))
    return count == num_frames and (count - 1) * interval + interval // 2 < length


def check_videos(paths: Sequence[str], num_frames: int, where: Optional[Sequence[str]] = None,
                 listed_in: Optional[PathLike] = None, help_text: str = "") -> List[int]:
    """Open every video before a model is loaded: the length of each, or one error that counts and lists, by
    path, every video that is missing, cannot be decoded, or is too short for ``num_frames`` frames."""
    where = where or [""] * len(paths)
    source = f" listed in {listed_in}" if listed_in else ""
    missing = [i for i, path in enumerate(paths) if not os.path.isfile(path)]
    if missing:
        shown = "\n  ".join(paths[i] + (f" ({where[i]})" if where[i] else "") for i in missing[:5])
        raise MissingFileError(f"{len(missing)} of {len(paths)} videos{source} are missing, e.g.:\n  {shown}"
                               f"{chr(10) + help_text if help_text else ''}")
    lengths, failed = [], []
    for i, path in enumerate(paths):
        try:
            length, _ = video_length(path)
            interval_centres(length, num_frames, path)
        except DataError as err:
            failed.append(f"{err}" + (f" ({where[i]})" if where[i] else ""))
            length = 0
        lengths.append(length)
    if failed:
        raise VideoDecodeError(f"{len(failed)} of {len(paths)} videos{source} cannot be used at {num_frames} frames "
                               "each (none was skipped):\n  " + "\n  ".join(failed))
    return lengths


class VideoFrames:
    """A map-style dataset: item ``i`` is ``(num_frames, 3, H, W)``, the :func:`interval_centres` frames of
    video ``i`` through ``transform`` (a PIL image -> tensor). ``where[i]`` (where the video was listed) is
    added to a decode error's message."""

    def __init__(self, paths: Sequence[str], num_frames: int, transform: Callable,
                 where: Optional[Sequence[str]] = None):
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.paths, self.num_frames, self.transform, self.where = list(paths), num_frames, transform, where

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        import torch

        path = self.paths[index]
        try:
            frames = read_frames(path, lambda length, fps: interval_centres(length, self.num_frames, path))
        except DataError as err:
            if self.where:
                raise type(err)(f"{err} ({self.where[index]})") from None
            raise
        return torch.stack([self.transform(frame) for frame in frames])


# ---- MSR-VTT metadata ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoCaption:
    video: str  # the path, video root joined
    caption: str
    where: str  # "<metadata file> entry <i>", for messages


def read_msrvtt(metadata: PathLike, video_root: PathLike) -> List[VideoCaption]:
    """The (video, caption) pairs of an MSR-VTT metadata JSON (see the module doc), in file order."""
    metadata = Path(metadata)
    entries = read_json(metadata, "MSR-VTT metadata", 'a non-empty JSON list of {"video": ..., "caption": ...}',
                        kind=list, hint="see data/README.md, MSR-VTT")
    if not entries:
        raise DataError(f"{metadata}: expected a non-empty JSON list of {{\"video\": ..., \"caption\": ...}} "
                        "entries, got an empty list")
    pairs = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("video"), str) \
                or not isinstance(entry.get("caption"), str):
            raise DataError(f"{metadata} entry {i}: expected {{\"video\": <file name>, \"caption\": <one string>}}, "
                            f"got {json.dumps(entry, ensure_ascii=False)[:200]}")
        pairs.append(VideoCaption(os.path.join(os.fspath(video_root), entry["video"]), entry["caption"],
                                  f"{metadata} entry {i}"))
    return pairs


# ---- synthetic videos ---------------------------------------------------------------------------------------

_MOVES = {"right": (1, 1), "left": (1, -1), "down": (0, 1), "up": (0, -1)}  # (axis: 0 rows / 1 columns, sign)


def synthetic_video(kit, index: int, num_frames: int = SYNTHETIC_VIDEO_FRAMES,
                    travel: float = 0.2) -> Tuple[List["Image.Image"], str, object]:
    """``(frames, caption, sample)``: sample ``index`` of a :class:`internvl.data.synthetic.SyntheticImages`
    kit with the camera panning so that the shape moves ``travel`` of the frame towards the centre, in
    ``num_frames`` equal steps (the scene wraps around at the edges). The caption is the sample's English
    caption of the first frame, then ``", moving <direction>"``."""
    import numpy as np
    from PIL import Image

    sample = kit.sample(index)
    fx, fy = {"top left": (0, 0), "top right": (1, 0), "bottom left": (0, 1), "bottom right": (1, 1),
              "center": (0.5, 0.5)}[sample.position]
    rng = np.random.default_rng([kit.seed, index, 7])
    choices = [d for d, ok in (("right", fx < 1), ("left", fx > 0), ("down", fy < 1), ("up", fy > 0)) if ok]
    direction = choices[int(rng.integers(len(choices)))]
    axis, sign = _MOVES[direction]
    pixels = np.asarray(sample.image)
    step = travel * kit.image_size / max(num_frames - 1, 1)
    frames = [Image.fromarray(np.roll(pixels, sign * int(round(step * t)), axis=axis))
              for t in range(num_frames)]
    return frames, f"{sample.caption_en}, moving {direction}", sample


def write_video(path: PathLike, frames: Sequence["Image.Image"], fps: int = 8) -> Path:
    """Write RGB frames as an H.264 mp4 (MPEG-4 part 2 where libx264 is missing) through PyAV, nearly
    lossless (the synthetic shapes must keep their colours)."""
    import av
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = frames[0].size
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p" if codec == "libx264" else "yuv420p"
        stream.options = {"crf": "4"} if codec == "libx264" else {"qscale": "2"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.asarray(image.convert("RGB")), format="rgb24")))
        container.mux(stream.encode(None))
    os.replace(tmp, path)
    return path


def write_shifting_video(path: PathLike, image: "Image.Image", num_frames: int, fps: int = 4) -> Path:
    """A clip of ``num_frames`` frames of ``image`` shifting right one pixel per frame (:func:`write_video`): the
    chat data kit's and MVBench's synthetic videos."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(image.convert("RGB"))
    return write_video(path, [Image.fromarray(np.roll(pixels, i, axis=1)) for i in range(num_frames)], fps=fps)


def write_msrvtt(root: PathLike, n: int, kit=None, start: int = 0,
                 num_frames: int = SYNTHETIC_VIDEO_FRAMES) -> Path:
    """A synthetic MSR-VTT in the layout of data/README.md: ``root/videos/all/video<i>.mp4`` (sample
    ``start + i`` of ``kit``, moving) and ``root/msrvtt_test1k.json`` with one caption per video. Returns
    ``root``; ``--video-root root/videos/all --metadata root/msrvtt_test1k.json`` reads it."""
    from .synthetic import SyntheticImages

    kit = kit or SyntheticImages(num_classes=16, image_size=64)
    root = Path(root)
    if (root / MSRVTT_METADATA).exists():
        raise FileExistsError(f"{root / MSRVTT_METADATA} already exists; remove it first, a writer never mixes "
                              "datasets")
    entries = []
    for i in range(n):
        frames, caption, _ = synthetic_video(kit, start + i, num_frames)
        name = f"video{start + i}.mp4"
        write_video(root / MSRVTT_VIDEOS / name, frames)
        entries.append({"video": name, "caption": caption})
    (root / MSRVTT_METADATA).write_text(json.dumps(entries, indent=1), encoding="utf-8")
    return root
