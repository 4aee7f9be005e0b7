"""Image and video input of InternVL-Chat: dynamic-resolution tiling and frame sampling.

InternVL 1.5 / 2 / 2.5 cut an image into ``input_size`` x ``input_size`` tiles (448 for the
published models) on the grid whose aspect ratio is closest to the image's, among grids of
``min_num..max_num`` tiles, and add a downscaled thumbnail of the whole image when there is more
than one tile. Each tile becomes ``num_image_token`` (256) language-model tokens::

    from internvl.data.chat_image import load_image, load_video

    pixel_values = load_image("photo.jpg", max_num=12)              # (tiles, 3, 448, 448)
    pixel_values, num_patches_list = load_video("clip.mp4", num_segments=8)

Video needs a frame reader: ``decord`` (what the reference uses) or PyAV (``pip install av``).
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple, Union

import torch
from PIL import Image

from ..errors import DataError, MissingFileError
from .transforms import build_transform, open_image
from .video import read_frames

__all__ = ["target_grids", "find_closest_aspect_ratio", "dynamic_preprocess", "load_image", "frame_indices",
           "sample_video_frames", "load_video"]

Grid = Tuple[int, int]  # (columns, rows) of tiles


def target_grids(min_num: int = 1, max_num: int = 12) -> List[Grid]:
    """Every (columns, rows) grid with ``min_num <= columns * rows <= max_num`` tiles, fewest tiles first.

    Grids with the same tile count keep the order in which the reference visits them (the
    iteration order of a Python set of int pairs, which is deterministic), because that order
    decides exact ties in :func:`find_closest_aspect_ratio`."""
    if min_num < 1 or max_num < min_num:
        raise ValueError(f"need 1 <= min_num <= max_num, got min_num={min_num}, max_num={max_num}")
    grids = {(i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1)
             if min_num <= i * j <= max_num}
    return sorted(grids, key=lambda grid: grid[0] * grid[1])


def find_closest_aspect_ratio(aspect_ratio: float, target_ratios: Sequence[Grid], width: int, height: int,
                              image_size: int) -> Grid:
    """The grid whose columns/rows ratio is closest to ``aspect_ratio`` (width / height).

    On a tie (the same ratio at several sizes, e.g. 1x1, 2x2, 3x3 for a square image) a later,
    larger grid wins only if the image has more than half the pixels that grid's tiles hold, so
    small images are not blown up into many tiles."""
    best_diff, best = float("inf"), (1, 1)
    area = width * height
    for grid in target_ratios:
        diff = abs(aspect_ratio - grid[0] / grid[1])
        if diff < best_diff:
            best_diff, best = diff, grid
        elif diff == best_diff and area > 0.5 * image_size * image_size * grid[0] * grid[1]:
            best = grid
    return best


def dynamic_preprocess(image: Image.Image, min_num: int = 1, max_num: int = 12, image_size: int = 448,
                       use_thumbnail: bool = False) -> List[Image.Image]:
    """Cut ``image`` into tiles of ``image_size`` pixels, row by row (see the module doc).

    The image is resized (bicubic) to exactly ``columns * image_size`` x ``rows * image_size``,
    so it is stretched, never cropped or padded. With ``use_thumbnail`` and more than one tile,
    the whole image resized to one tile comes last."""
    width, height = image.size
    if width < 1 or height < 1:
        raise ValueError(f"cannot tile an empty image ({width}x{height})")
    cols, rows = find_closest_aspect_ratio(width / height, target_grids(min_num, max_num), width, height,
                                           image_size)
    resized = image.resize((cols * image_size, rows * image_size), Image.BICUBIC)
    tiles = [resized.crop((c * image_size, r * image_size, (c + 1) * image_size, (r + 1) * image_size))
             for r in range(rows) for c in range(cols)]
    if use_thumbnail and len(tiles) > 1:
        tiles.append(image.resize((image_size, image_size), Image.BICUBIC))
    return tiles


def _as_rgb(image: Union[str, os.PathLike, Image.Image]) -> Image.Image:
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    return open_image(image)  # FileNotFoundError / ImageDecodeError naming the file


def load_image(image: Union[str, os.PathLike, Image.Image], input_size: int = 448, max_num: int = 12,
               use_thumbnail: bool = True, min_num: int = 1) -> torch.Tensor:
    """A path or PIL image -> ``(tiles, 3, input_size, input_size)`` pixel values (ImageNet mean/std).

    ``max_num=1`` gives one tile of the whole image (the setting for video frames)."""
    transform = build_transform(input_size, "resize")
    tiles = dynamic_preprocess(_as_rgb(image), min_num=min_num, max_num=max_num, image_size=input_size,
                               use_thumbnail=use_thumbnail)
    return torch.stack([transform(tile) for tile in tiles])


def frame_indices(bound: Optional[Tuple[float, float]], fps: float, max_frame: int, first_idx: int = 0,
                  num_segments: int = 32) -> List[int]:
    """Indices of ``num_segments`` frames, one from the middle of each of equal segments.

    ``bound`` is a (start, end) time in seconds; ``None`` means the whole video. ``max_frame`` is
    the last valid index. Segment boundaries are rounded half-to-even, as numpy rounds."""
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    start, end = bound if bound else (-100000, 100000)
    start_idx = max(first_idx, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    seg_size = float(end_idx - start_idx) / num_segments
    # Python's round() rounds half to even, exactly as np.round does.
    return [int(start_idx + seg_size / 2 + round(seg_size * i)) for i in range(num_segments)]


def sample_video_frames(path: str, num_segments: int, bound) -> List[Image.Image]:
    """The sampled frames of ``path``, through the one video reader (:func:`internvl.data.video.read_frames`)."""
    def chosen(length: int, fps: float) -> List[int]:
        if not fps or not length:
            raise DataError(f"{path}: the video stream reports no frame rate or no frames")
        return frame_indices(bound, fps, length - 1, num_segments=num_segments)

    return read_frames(path, chosen)


def load_video(path: Union[str, os.PathLike], num_segments: int = 32, bound: Optional[Tuple[float, float]] = None,
               input_size: int = 448, max_num: int = 1, use_thumbnail: bool = True) -> Tuple[torch.Tensor, List[int]]:
    """Sample ``num_segments`` frames of a video and tile each like :func:`load_image`.

    Returns ``(pixel_values, num_patches_list)``: all tiles of all frames stacked, and the tile
    count of each frame, as ``InternVLChatModel.chat`` takes them with a ``Frame1: <image>\\n...``
    prompt (:func:`internvl.models.conversation.video_prefix`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"video not found: {path}")
    try:
        frames = sample_video_frames(path, num_segments, bound)
    except (ImportError, ValueError):
        raise
    except Exception as err:  # the readers raise their own error types for undecodable files
        raise DataError(f"cannot decode video {path}: {err}") from err
    pixel_values = [load_image(frame, input_size=input_size, max_num=max_num, use_thumbnail=use_thumbnail)
                    for frame in frames]
    return torch.cat(pixel_values), [len(p) for p in pixel_values]
