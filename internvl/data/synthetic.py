"""The synthetic data kit: one small, learnable, deterministic image set that every subproject's
tests and demos use in place of real data::

    from internvl.datakit import SyntheticImages, SyntheticDataset
    kit = SyntheticImages(num_classes=16, image_size=64, seed=0)
    s = kit.sample(7)          # Sample: image, label, class_name, captions, QA pairs, bbox...
    kit.coverage(7)            # the shape's per-pixel coverage in [0, 1]: the segmentation ground truth
    ds = SyntheticDataset(200, kit, transform=to_tensor)   # (image, label) pairs, in memory

Each image is one coloured shape on a low-contrast textured background:

    colours      red, green, blue, yellow
    shapes       circle, square, triangle, cross
    positions    top left, top right, bottom left, bottom right, center
    backgrounds  noise, stripes, checkerboard, gradient

A class is a (colour, shape) pair named ``<colour>_<shape>`` ("red_circle"). ``num_classes``
(1..16) picks the first classes of a Latin-square order, so any 4 consecutive classes use every
colour and every shape once and a subset is never solvable by colour alone. Label ids follow the
sorted class names, as torchvision's ImageFolder and ImageNet's sorted wnids assign them, so a
written folder read back by ImageFolder yields exactly ``Sample.label``.

Determinism: ``sample(index)`` is a pure function of (seed, index, num_classes, image_size).
``label = index % num_classes`` (classes balanced); position, background, size, offset, rotation
and colour jitter come from ``numpy.random.default_rng([seed, index])``; the image is composited
with numpy arithmetic from a shape mask drawn by PIL, so the pixels are the same bytes on every
machine (the only libm calls are four scalar cos/sin per image). Encoded files are byte-identical
wherever the zlib / libjpeg builds are the same.

Splits: writers take ``splits={"train": n, "val": m}`` and give each split the next block of
indices in dict order (train 0..n-1, val n..n+m-1), so splits never share a sample. A writer
refuses to write a split whose folder already exists rather than mix old and new files.

The writers of each on-disk format live beside the format's reader, in the subproject that reads
it (e.g. ``classification.dataset.imagenet.write_imagenet_lists``); they build on ``split_ranges``,
``new_dataset_root`` and ``save_jpeg`` here.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = ["COLOURS", "SHAPES", "POSITIONS", "BACKGROUNDS", "BACKGROUND_ADJECTIVES", "ZH", "QA", "Sample",
           "SyntheticImages",
           "SyntheticDataset", "split_ranges", "new_dataset_root", "save_jpeg"]

# Shape colours before jitter: saturated, so they stand out from the grey backgrounds.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 45, 45), "green": (45, 170, 60), "blue": (45, 80, 215), "yellow": (230, 205, 45)}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
# Shape centre as a fraction of the image side (x, y).
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (0.28, 0.28), "top right": (0.72, 0.28), "bottom left": (0.28, 0.72),
    "bottom right": (0.72, 0.72), "center": (0.5, 0.5)}
BACKGROUNDS: tuple[str, ...] = ("noise", "stripes", "checkerboard", "gradient")
BACKGROUND_ADJECTIVES = {"noise": "noisy", "stripes": "striped", "checkerboard": "checkered",
                         "gradient": "gradient"}  # "on a <adjective> background" in captions
# Chinese for every vocabulary term.
ZH: dict[str, str] = {
    "red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色",
    "circle": "圆形", "square": "正方形", "triangle": "三角形", "cross": "十字形",
    "top left": "左上方", "top right": "右上方", "bottom left": "左下方", "bottom right": "右下方",
    "center": "中间",
    "noise": "噪点", "stripes": "条纹", "checkerboard": "棋盘格", "gradient": "渐变色"}

# Unit polygons centred on the origin (y points down); the circle is drawn as an ellipse.
_CROSS_W = 0.34
_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)],
    "triangle": [(0.0, -1.1), (0.95, 0.55), (-0.95, 0.55)],
    "cross": [(-_CROSS_W, -1), (_CROSS_W, -1), (_CROSS_W, -_CROSS_W), (1, -_CROSS_W), (1, _CROSS_W),
              (_CROSS_W, _CROSS_W), (_CROSS_W, 1), (-_CROSS_W, 1), (-_CROSS_W, _CROSS_W), (-1, _CROSS_W),
              (-1, -_CROSS_W), (-_CROSS_W, -_CROSS_W)],
}
_SUPERSAMPLE = 4  # the mask is drawn at 4x and box-averaged: antialiased edges from exact arithmetic
_MAX_CLASSES = len(COLOURS) * len(SHAPES)


@dataclass(frozen=True)
class QA:
    """One question with its short answer, in English and Chinese; ``kind`` is the attribute asked."""
    kind: str  # "colour", "shape", "position" or "background"
    question_en: str
    answer_en: str
    question_zh: str
    answer_zh: str


@dataclass(frozen=True)
class Sample:
    index: int
    image: Image.Image  # RGB, image_size x image_size
    label: int
    class_name: str  # "<colour>_<shape>", filesystem-safe
    colour: str
    shape: str
    position: str
    background: str
    bbox: tuple[int, int, int, int]  # (x0, y0, x1, y1) pixels around the shape, x1/y1 exclusive
    caption_en: str
    caption_zh: str
    qa: tuple[QA, ...]


def _class_pairs(num_classes: int) -> list[tuple[str, str]]:
    """The (colour, shape) pairs of the first ``num_classes`` classes, in label order."""
    colours, n = list(COLOURS), len(SHAPES)  # as many colours as shapes: a Latin square
    # Class k has colour k % 4 and shape (k + k // 4) % 4.
    latin = [(colours[k % n], SHAPES[(k + k // n) % n]) for k in range(_MAX_CLASSES)]
    return sorted(latin[:num_classes], key=lambda pair: f"{pair[0]}_{pair[1]}")


def _captions(colour: str, shape: str, position: str, background: str) -> tuple[str, str, tuple[QA, ...]]:
    caption_en = (f"a {colour} {shape} in the {position} of the image, "
                  f"on a {BACKGROUND_ADJECTIVES[background]} background")
    caption_zh = f"图片{ZH[position]}有一个{ZH[colour]}的{ZH[shape]}，背景是{ZH[background]}。"
    qa = (QA("colour", "What colour is the shape?", colour, "图中的形状是什么颜色？", ZH[colour]),
          QA("shape", "What shape is in the image?", shape, "图中是什么形状？", ZH[shape]),
          QA("position", "Where is the shape in the image?", position,
             "形状在图片的什么位置？", ZH[position]),
          QA("background", "What pattern is the background?", background, "背景是什么图案？", ZH[background]))
    return caption_en, caption_zh, qa


def _background(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    """A low-contrast, nearly grey texture as float HxWx3 in 0..255."""
    tone = rng.uniform(90, 170) + rng.uniform(-12, 12, size=3)  # slight tint, never a shape colour
    amplitude = rng.uniform(10, 20)
    theta = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    u = (xx * math.cos(theta) + yy * math.sin(theta)) / size  # distance along a random direction
    if kind == "noise":
        texture = rng.uniform(-1, 1, size=(size, size))
    elif kind == "stripes":
        phase = u / rng.uniform(0.12, 0.25) + rng.uniform(0, 1)
        texture = np.where(phase % 1 < 0.5, 1.0, -1.0)
    elif kind == "checkerboard":
        cell = size * rng.uniform(0.08, 0.2)
        texture = np.where((xx // cell + yy // cell) % 2 == 0, 1.0, -1.0)
    else:  # gradient
        texture = 2 * (u - u.min()) / (u.max() - u.min()) - 1
    return tone + amplitude * texture[..., None]


def _shape_alpha(shape: str, cx: float, cy: float, radius: float, angle: float, size: int) -> np.ndarray:
    """Coverage of the shape in [0, 1] per pixel, HxW."""
    k = _SUPERSAMPLE
    mask = Image.new("L", (size * k, size * k), 0)
    draw = ImageDraw.Draw(mask)
    if shape == "circle":
        draw.ellipse([(cx - radius) * k, (cy - radius) * k, (cx + radius) * k, (cy + radius) * k], fill=255)
    else:
        c, s = math.cos(angle), math.sin(angle)
        draw.polygon([((cx + radius * (x * c - y * s)) * k, (cy + radius * (x * s + y * c)) * k)
                      for x, y in _POLYGONS[shape]], fill=255)
    # Sums of 16 bytes and a division by 16 are exact in float64: the same bits everywhere.
    return np.asarray(mask, dtype=np.float64).reshape(size, k, size, k).mean(axis=(1, 3)) / 255


class SyntheticImages:
    """The generator: ``sample(index)`` is a pure function of (seed, index, num_classes, image_size)."""

    def __init__(self, num_classes: int = 16, image_size: int = 64, seed: int = 0):
        if not 1 <= num_classes <= _MAX_CLASSES:
            raise ValueError(f"num_classes must be in 1..{_MAX_CLASSES} (colours x shapes), got {num_classes}")
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels for the shapes to be recognisable, "
                             f"got {image_size}")
        self.num_classes, self.image_size, self.seed = num_classes, image_size, seed
        self._pairs = _class_pairs(num_classes)
        self.classes: list[str] = [f"{colour}_{shape}" for colour, shape in self._pairs]  # label -> class name

    def __repr__(self) -> str:
        return f"SyntheticImages(num_classes={self.num_classes}, image_size={self.image_size}, seed={self.seed})"

    def _layout(self, index: int) -> tuple[np.random.Generator, str, str, str, str, np.ndarray]:
        """The random draws of sample ``index`` up to its shape's coverage: ``(rng, colour, shape, position,
        background, alpha)``, with ``rng`` positioned for the rest of the sample (fill colour, texture)."""
        if index < 0:
            raise ValueError(f"sample index must be non-negative, got {index}")
        size = self.image_size
        colour, shape = self._pairs[index % self.num_classes]
        rng = np.random.default_rng([self.seed, index])
        position = list(POSITIONS)[rng.integers(len(POSITIONS))]
        background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
        # Jitter size, placement, rotation and hue a little: a model has to learn, but clearly can.
        radius = size * rng.uniform(0.16, 0.22)
        fx, fy = POSITIONS[position]
        cx, cy = size * (fx + rng.uniform(-0.04, 0.04)), size * (fy + rng.uniform(-0.04, 0.04))
        angle = math.radians(rng.uniform(-15, 15))
        return rng, colour, shape, position, background, _shape_alpha(shape, cx, cy, radius, angle, size)

    def coverage(self, index: int) -> np.ndarray:
        """How much of each pixel of ``sample(index).image`` the shape covers: float64 HxW in [0, 1]
        (1 inside, 0 on the background, fractions on the antialiased edge). The image is composited
        from exactly this array, so it is the ground truth of a per-pixel (segmentation) label."""
        return self._layout(index)[-1]

    def sample(self, index: int) -> Sample:
        rng, colour, shape, position, background, alpha = self._layout(index)
        size = self.image_size
        label = index % self.num_classes
        fill = np.clip(np.array(COLOURS[colour]) + rng.uniform(-25, 25, size=3), 0, 255)

        alpha = alpha[..., None]
        pixels = _background(rng, background, size) * (1 - alpha) + fill * alpha
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
        ys, xs = np.nonzero(alpha[..., 0])
        bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)

        caption_en, caption_zh, qa = _captions(colour, shape, position, background)
        return Sample(index=index, image=image, label=label, class_name=self.classes[label], colour=colour,
                      shape=shape, position=position, background=background, bbox=bbox,
                      caption_en=caption_en, caption_zh=caption_zh, qa=qa)


class SyntheticDataset(torch.utils.data.Dataset):
    """``n`` samples starting at index ``offset``, as ``(transform(image), label)`` pairs."""

    def __init__(self, n: int, kit: Optional[SyntheticImages] = None, offset: int = 0,
                 transform: Optional[Callable] = None):
        self.kit = kit or SyntheticImages()
        self.n, self.offset, self.transform = n, offset, transform
        self.classes = self.kit.classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for a SyntheticDataset of {self.n} samples")
        s = self.kit.sample(self.offset + i)
        return (s.image if self.transform is None else self.transform(s.image)), s.label


def split_ranges(splits: dict[str, int]) -> dict[str, range]:
    """Consecutive, disjoint index blocks, one per split, in dict order."""
    ranges, start = {}, 0
    for name, n in splits.items():
        if n < 0:
            raise ValueError(f"split {name!r} has a negative size: {n}")
        ranges[name] = range(start, start + n)
        start += n
    return ranges


def new_dataset_root(root: str | os.PathLike, splits: dict[str, range], kit: SyntheticImages) -> Path:
    root = Path(root)
    for name in splits:
        if (root / name).exists():
            raise FileExistsError(f"{root / name} already exists; remove it first, a writer never mixes datasets")
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in kit.classes))
    return root


def save_jpeg(image: Image.Image, path: Path) -> None:
    """How every writer stores a kit image as JPEG (creating the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # No chroma subsampling: at 32-64 px it would bleed the shape colour into the background.
    image.save(path, format="JPEG", quality=95, subsampling=0)
