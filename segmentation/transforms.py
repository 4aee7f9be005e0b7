"""MMSegmentation 0.30's data pipeline steps that upstream's ADE20K configs use, on numpy + OpenCV.

Each step is a callable on a ``results`` dict, as in MMSegmentation::

    img        HxWx3 uint8 RGB, float32 after Normalize     seg        HxW uint8 labels (255 = ignore)
    ori_shape  (h, w) of the file                           scale      target scale for Resize
    rng        numpy Generator of this sample               filename / seg_filename, num_classes, ignore_index

Randomness comes from ``results["rng"]``, a generator the dataset seeds from (run seed, epoch, sample),
so an augmented sample is the same however many loader workers or processes draw it, and after a
resume. Resizing follows mmcv (``cv2.INTER_LINEAR`` for images, ``INTER_NEAREST`` for labels, sizes
``int(x * scale + 0.5)``). Images are RGB from the start (MMSegmentation loads BGR and converts in
``Normalize(to_rgb=True)``); the HSV steps convert from RGB, which gives the same hue and saturation.

:func:`build_pipeline` turns a config's list of ``dict(type=..., ...)`` into steps; an unknown step or
argument is an error naming its place (``data.train.pipeline[2].ratio_range``).
"""
from __future__ import annotations

import inspect
from typing import Callable, Optional

import numpy as np

from internvl.errors import ConfigError

__all__ = ["build_pipeline", "TRANSFORMS", "rescale_size"]

TRANSFORMS: dict[str, type] = {}


def _register(cls):
    TRANSFORMS[cls.__name__] = cls
    return cls


def _cv2():
    import cv2
    cv2.setNumThreads(0)  # loader workers run in parallel already
    return cv2


def rescale_size(width: int, height: int, scale) -> tuple[int, int]:
    """mmcv ``rescale_size`` for a ``(long, short)`` scale: the largest size with the aspect ratio kept and
    the long side <= max(scale), the short side <= min(scale). Returns ``((new_w, new_h), factor)``."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return (int(width * factor + 0.5), int(height * factor + 0.5)), factor


def _resize(array: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    cv2 = _cv2()
    if (array.shape[1], array.shape[0]) == tuple(size):
        return array
    return cv2.resize(array, tuple(size), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)


@_register
class LoadImageFromFile:
    """Read the image as RGB uint8 (``to_float32``, ``color_type``, ``imdecode_backend``,
    ``file_client_args`` are accepted with their only supported values)."""

    def __init__(self, to_float32: bool = False, color_type: str = "color", imdecode_backend: str = "cv2",
                 file_client_args: Optional[dict] = None):
        if to_float32 or color_type != "color":
            raise ConfigError("LoadImageFromFile: only to_float32=False, color_type='color' are supported")

    def __call__(self, results: dict) -> dict:
        from .ade20k import read_image  # the dataset module owns file reading and its errors
        image = read_image(results["filename"])
        results["img"] = np.asarray(image, dtype=np.uint8)
        results["ori_shape"] = results["img"].shape[:2]
        return results


@_register
class LoadAnnotations:
    """Read the label map; ``reduce_zero_label`` maps 0 -> 255 (ignored) and k -> k - 1 (ADE20K)."""

    def __init__(self, reduce_zero_label: bool = False, imdecode_backend: str = "pillow",
                 file_client_args: Optional[dict] = None):
        self.reduce_zero_label = reduce_zero_label

    def __call__(self, results: dict) -> dict:
        from .ade20k import read_label
        results["seg"] = read_label(results["seg_filename"], results.get("ori_shape"),
                                    self.reduce_zero_label, results.get("num_classes"),
                                    results.get("ignore_index", 255), results.get("filename"))
        return results


@_register
class Resize:
    """mmseg ``Resize`` with ``keep_ratio``: ``ratio_range`` draws ``ratio`` uniformly and rescales to
    ``int(img_scale * ratio)``; without it the scale is ``img_scale`` (or the one ``MultiScaleFlipAug`` set)."""

    def __init__(self, img_scale=None, multiscale_mode: str = "range", ratio_range=None, keep_ratio: bool = True,
                 min_size=None):
        if not keep_ratio or min_size is not None or multiscale_mode != "range":
            raise ConfigError("Resize: only keep_ratio=True with one img_scale (and ratio_range) is supported")
        if isinstance(img_scale, list):
            if len(img_scale) != 1:
                raise ConfigError(f"Resize: one img_scale is supported, got {img_scale}")
            img_scale = img_scale[0]
        self.img_scale = tuple(img_scale) if img_scale is not None else None
        self.ratio_range = tuple(ratio_range) if ratio_range is not None else None

    def target_scale(self, results: dict) -> tuple:
        if self.img_scale is None:
            if "scale" not in results:
                raise ConfigError("Resize without img_scale needs a MultiScaleFlipAug(img_scale=...) around it")
            return tuple(results["scale"])
        if self.ratio_range is not None:
            low, high = self.ratio_range
            ratio = results["rng"].random() * (high - low) + low
            return int(self.img_scale[0] * ratio), int(self.img_scale[1] * ratio)
        return self.img_scale

    def __call__(self, results: dict) -> dict:
        return _rescale(results, self.target_scale(results))


def _rescale(results: dict, scale) -> dict:
    height, width = results["img"].shape[:2]
    return _resize_to(results, rescale_size(width, height, scale)[0])


def _resize_to(results: dict, size: tuple[int, int]) -> dict:
    """Image (bilinear) and label map (nearest) to ``size`` = (width, height)."""
    results["img"] = _resize(results["img"], size)
    if results.get("seg") is not None:
        results["seg"] = _resize(results["seg"], size, nearest=True)
    results["img_shape"] = results["img"].shape[:2]
    return results


@_register
class SETR_Resize(Resize):  # noqa: N801 - upstream's name
    """Upstream's test-time resize: with ``setr_multi_scale`` the short side becomes
    ``max(min(scale), crop_size[0])``, the long side follows the aspect ratio."""

    def __init__(self, img_scale=None, multiscale_mode: str = "range", ratio_range=None, keep_ratio: bool = True,
                 crop_size=None, setr_multi_scale: bool = False):
        super().__init__(img_scale, multiscale_mode, ratio_range, keep_ratio)
        if setr_multi_scale and crop_size is None:
            raise ConfigError("SETR_Resize: setr_multi_scale=True needs crop_size")
        self.crop_size, self.setr_multi_scale = crop_size, setr_multi_scale

    def __call__(self, results: dict) -> dict:
        scale = self.target_scale(results)
        if self.setr_multi_scale:
            short = max(min(scale), self.crop_size[0])
            height, width = results["img"].shape[:2]
            scale = (short * height / width, short) if height > width else (short, short * width / height)
        return _rescale(results, scale)


@_register
class ResizeToMultiple:
    """Resize (bilinear) so both sides are the next multiple of ``size_divisor`` (the patch size, 14)."""

    def __init__(self, size_divisor: int = 32, interpolation=None):
        if interpolation not in (None, "bilinear"):
            raise ConfigError("ResizeToMultiple: only bilinear interpolation is supported")
        self.size_divisor = size_divisor

    def __call__(self, results: dict) -> dict:
        height, width = results["img"].shape[:2]
        d = self.size_divisor
        return _resize_to(results, (-(-width // d) * d, -(-height // d) * d))


@_register
class RandomCrop:
    """A random ``crop_size`` window; with ``cat_max_ratio < 1`` up to 10 draws avoid a window where one
    class covers more than that share of the labelled pixels (mmseg's rule, kept exactly)."""

    def __init__(self, crop_size, cat_max_ratio: float = 1.0, ignore_index: int = 255):
        self.crop_size, self.cat_max_ratio, self.ignore_index = tuple(crop_size), cat_max_ratio, ignore_index

    def _bbox(self, shape, rng) -> tuple[int, int, int, int]:
        margin_h, margin_w = max(shape[0] - self.crop_size[0], 0), max(shape[1] - self.crop_size[1], 0)
        y1, x1 = int(rng.integers(0, margin_h + 1)), int(rng.integers(0, margin_w + 1))
        return y1, y1 + self.crop_size[0], x1, x1 + self.crop_size[1]

    def __call__(self, results: dict) -> dict:
        rng, img = results["rng"], results["img"]
        y1, y2, x1, x2 = self._bbox(img.shape, rng)
        seg = results.get("seg")
        if self.cat_max_ratio < 1.0 and seg is not None:
            for _ in range(10):
                labels, counts = np.unique(seg[y1:y2, x1:x2], return_counts=True)
                counts = counts[labels != self.ignore_index]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                y1, y2, x1, x2 = self._bbox(img.shape, rng)
        results["img"] = img[y1:y2, x1:x2]
        if seg is not None:
            results["seg"] = seg[y1:y2, x1:x2]
        results["img_shape"] = results["img"].shape[:2]
        return results


@_register
class RandomFlip:
    """Horizontal flip with probability ``prob`` (None: never, as inside a test pipeline)."""

    def __init__(self, prob: Optional[float] = None, direction: str = "horizontal"):
        if direction != "horizontal":
            raise ConfigError("RandomFlip: only direction='horizontal' is supported")
        self.prob = prob

    def __call__(self, results: dict) -> dict:
        if self.prob and results["rng"].random() < self.prob:
            results["img"] = results["img"][:, ::-1]
            if results.get("seg") is not None:
                results["seg"] = results["seg"][:, ::-1]
            results["flip"] = True
        return results


@_register
class PhotoMetricDistortion:
    """mmseg's colour jitter, each part applied with probability 1/2: brightness, contrast (before or after
    the HSV parts, at random), saturation, hue."""

    def __init__(self, brightness_delta: int = 32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
                 hue_delta: int = 18):
        self.brightness_delta, self.hue_delta = brightness_delta, hue_delta
        self.contrast_range, self.saturation_range = tuple(contrast_range), tuple(saturation_range)

    @staticmethod
    def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def __call__(self, results: dict) -> dict:
        cv2, rng = _cv2(), results["rng"]
        img = np.ascontiguousarray(results["img"])
        if rng.integers(2):
            img = self._convert(img, beta=rng.uniform(-self.brightness_delta, self.brightness_delta))
        contrast_first = rng.integers(2) == 1
        if contrast_first and rng.integers(2):
            img = self._convert(img, alpha=rng.uniform(*self.contrast_range))
        if rng.integers(2):
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            hsv[..., 1] = self._convert(hsv[..., 1], alpha=rng.uniform(*self.saturation_range))
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if rng.integers(2):
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            shift = int(rng.integers(-self.hue_delta, self.hue_delta))  # high excluded, as numpy randint
            hsv[..., 0] = (hsv[..., 0].astype(int) + shift) % 180
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if not contrast_first and rng.integers(2):
            img = self._convert(img, alpha=rng.uniform(*self.contrast_range))
        results["img"] = img
        return results


@_register
class Normalize:
    """``(img - mean) / std`` in float32 (RGB order; ``to_rgb`` is accepted: images are RGB already)."""

    def __init__(self, mean, std, to_rgb: bool = True):
        if not to_rgb:
            raise ConfigError("Normalize: to_rgb=False (BGR models) is not supported")
        self.mean, self.std = np.array(mean, dtype=np.float32), np.array(std, dtype=np.float32)

    def __call__(self, results: dict) -> dict:
        results["img"] = (results["img"].astype(np.float32) - self.mean) / self.std
        return results


@_register
class Pad:
    """Pad bottom / right to ``size`` (or a multiple of ``size_divisor``): images with ``pad_val``, labels
    with ``seg_pad_val`` (255: ignored)."""

    def __init__(self, size=None, size_divisor=None, pad_val: float = 0, seg_pad_val: int = 255):
        if (size is None) == (size_divisor is None):
            raise ConfigError("Pad: give exactly one of size and size_divisor")
        self.size, self.size_divisor, self.pad_val, self.seg_pad_val = size, size_divisor, pad_val, seg_pad_val

    def __call__(self, results: dict) -> dict:
        height, width = results["img"].shape[:2]
        if self.size is not None:
            target = (max(self.size[0], height), max(self.size[1], width))
        else:
            d = self.size_divisor
            target = (-(-height // d) * d, -(-width // d) * d)
        pad = ((0, target[0] - height), (0, target[1] - width))
        results["img"] = np.pad(results["img"], pad + ((0, 0),), constant_values=self.pad_val)
        if results.get("seg") is not None:
            results["seg"] = np.pad(results["seg"], pad, constant_values=self.seg_pad_val)
        return results


@_register
class DefaultFormatBundle:
    """To tensors: ``img`` (3, H, W) float32, ``seg`` (H, W) int64."""

    def __call__(self, results: dict) -> dict:
        import torch
        results["img"] = torch.from_numpy(np.ascontiguousarray(results["img"].transpose(2, 0, 1)))
        if results.get("seg") is not None:
            results["seg"] = torch.from_numpy(np.ascontiguousarray(results["seg"])).long()
        return results


@_register
class ImageToTensor(DefaultFormatBundle):
    def __init__(self, keys=("img",)):
        if list(keys) != ["img"]:
            raise ConfigError("ImageToTensor: only keys=['img'] is supported")


@_register
class Collect:
    """Keep ``keys`` (``img``, ``gt_semantic_seg``) and the meta data the loop needs."""

    def __init__(self, keys, meta_keys=None):
        unknown = set(keys) - {"img", "gt_semantic_seg"}
        if unknown:
            raise ConfigError(f"Collect: unknown keys {sorted(unknown)} (img, gt_semantic_seg)")
        self.keys = list(keys)

    def __call__(self, results: dict) -> dict:
        out = {"img": results["img"], "ori_shape": results["ori_shape"], "filename": results["filename"],
               "index": results["index"]}
        if "gt_semantic_seg" in self.keys:
            out["seg"] = results["seg"]
        return out


@_register
class MultiScaleFlipAug:
    """Single-scale test-time wrapper: sets ``scale = img_scale`` for the inner steps. Multi-scale or
    flipped test augmentation (``img_ratios``, ``flip=True``; upstream's ``--aug-test``) is not supported."""

    def __init__(self, transforms, img_scale=None, img_ratios=None, flip: bool = False,
                 flip_direction: str = "horizontal"):
        if img_ratios is not None or flip:
            raise ConfigError("MultiScaleFlipAug: multi-scale / flip test augmentation is not supported "
                              "(set img_ratios=None, flip=False)")
        self.img_scale = tuple(img_scale) if img_scale is not None else None
        self.transforms = build_pipeline(transforms, "MultiScaleFlipAug.transforms")

    def __call__(self, results: dict) -> dict:
        if self.img_scale is not None:
            results["scale"] = self.img_scale
        for step in self.transforms:
            results = step(results)
        return results


def build_pipeline(steps: list, where: str) -> list[Callable]:
    """Config step dicts -> callables; an unknown ``type`` or argument is an error naming ``where[i].key``."""
    import difflib

    built = []
    for i, step in enumerate(steps):
        step = dict(step)
        kind = step.pop("type", None)
        if kind not in TRANSFORMS:
            close = difflib.get_close_matches(str(kind), list(TRANSFORMS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(TRANSFORMS))}"
            raise ConfigError(f"{where}[{i}].type={kind!r} is not a supported pipeline step{hint}")
        cls = TRANSFORMS[kind]
        params = inspect.signature(cls.__init__).parameters
        for key in step:
            if key not in params:
                raise ConfigError(f"unknown key {where}[{i}].{key} for {kind}; it takes "
                                  f"{', '.join(p for p in params if p != 'self') or 'no arguments'}")
        try:
            built.append(cls(**step))
        except ConfigError as err:
            raise ConfigError(f"{where}[{i}]: {err}") from None
    return built
