"""Image loading and the evaluation transforms every InternVL model uses.

All published InternVL models normalize with the ImageNet mean/std and resize bicubically. Two
geometries cover them:

    "resize"       resize to a square (retrieval and captioning of InternVL-C/G, every InternVL-Chat tile)
    "center_crop"  resize the shorter side to size / crop_pct, then center crop (classification);
                   crop_pct=1.0 is what CLIPImageProcessor does with the published
                   preprocessor_config.json (shortest_edge = crop_size, bicubic)

    from internvl.data.transforms import build_transform, open_image
    transform = build_transform(224, "center_crop")
    pixel_values = transform(open_image("cat.jpg")).unsqueeze(0)
"""
from __future__ import annotations

import os
from typing import Sequence

from PIL import Image, UnidentifiedImageError

from ..errors import DataError, MissingFileError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageDecodeError", "open_image", "build_transform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageDecodeError(DataError):
    """An image file exists but cannot be decoded. The message names the file."""


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open ``path`` as an RGB PIL image, fully decoded.

    Raises FileNotFoundError or ImageDecodeError naming the file, so a data loader can report (or
    count and skip) the exact sample instead of failing later inside a worker."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # convert() forces the full decode inside the try
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageDecodeError(f"cannot decode image {path}: {e}") from e


def build_transform(image_size: int, mode: str = "resize", crop_pct: float = 1.0,
                    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
    """PIL image -> normalized float tensor (3, image_size, image_size), bicubic, see module doc."""
    from torchvision import transforms as T

    bicubic = T.InterpolationMode.BICUBIC
    if mode == "resize":
        geometry = [T.Resize((image_size, image_size), interpolation=bicubic)]
    elif mode == "center_crop":
        if not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
        geometry = [T.Resize(int(image_size / crop_pct), interpolation=bicubic), T.CenterCrop(image_size)]
    else:
        raise ValueError(f"unknown transform mode {mode!r}: use 'resize' or 'center_crop'")
    return T.Compose([T.Lambda(_to_rgb), *geometry, T.ToTensor(), T.Normalize(mean, std)])


def _to_rgb(image: Image.Image) -> Image.Image:
    # a module-level function, not a lambda: DataLoader workers pickle the transform (spawn start method)
    return image if image.mode == "RGB" else image.convert("RGB")
