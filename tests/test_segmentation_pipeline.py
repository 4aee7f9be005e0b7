"""segmentation's training pipeline against MMSegmentation 0.x's definitions (``mmseg/datasets/pipelines/
transforms.py``: ``Resize`` with ``ratio_range``, ``RandomCrop`` with ``cat_max_ratio``, ``RandomFlip``,
``PhotoMetricDistortion`` on BGR images, ``Pad`` with ``seg_pad_val``), restated below with a numpy ``Generator``
in place of ``numpy.random`` (the same draws in the same order), on hand-made images; and every shipped config
trains with upstream's pipeline (``configs/_base_/datasets/ade20k_504x504.py``)."""
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from segmentation.config import load_config
from segmentation.transforms import Pad, PhotoMetricDistortion, RandomCrop, build_pipeline

CONFIGS = Path(__file__).resolve().parents[1] / "segmentation" / "configs"
MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


# ---- MMSegmentation 0.30, restated ------------------------------------------------------------------------------
def mmseg_rescale(img, seg, scale):
    """``mmcv.imrescale`` (keep ratio, bilinear; nearest for the label) to the ``(long, short)`` scale."""
    h, w = img.shape[:2]
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    size = int(w * factor + 0.5), int(h * factor + 0.5)
    return (cv2.resize(img, size, interpolation=cv2.INTER_LINEAR),
            cv2.resize(seg, size, interpolation=cv2.INTER_NEAREST))


def mmseg_random_crop(img, seg, crop, cat_max_ratio, rng, ignore_index=255):
    def bbox():
        margin_h, margin_w = max(img.shape[0] - crop[0], 0), max(img.shape[1] - crop[1], 0)
        offset_h, offset_w = rng.integers(0, margin_h + 1), rng.integers(0, margin_w + 1)
        return offset_h, offset_h + crop[0], offset_w, offset_w + crop[1]

    y1, y2, x1, x2 = bbox()
    if cat_max_ratio < 1.0:
        for _ in range(10):
            labels, cnt = np.unique(seg[y1:y2, x1:x2], return_counts=True)
            cnt = cnt[labels != ignore_index]
            if len(cnt) > 1 and np.max(cnt) / np.sum(cnt) < cat_max_ratio:
                break
            y1, y2, x1, x2 = bbox()
    return img[y1:y2, x1:x2], seg[y1:y2, x1:x2]


def mmseg_photometric(bgr, rng, brightness_delta=32, contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue_delta=18):
    def convert(img, alpha=1, beta=0):
        return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def contrast_step(img):
        return convert(img, alpha=rng.uniform(*contrast)) if rng.integers(2) else img

    img = bgr
    if rng.integers(2):
        img = convert(img, beta=rng.uniform(-brightness_delta, brightness_delta))
    mode = rng.integers(2)
    if mode == 1:
        img = contrast_step(img)
    if rng.integers(2):
        img = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        img[:, :, 1] = convert(img[:, :, 1], alpha=rng.uniform(*saturation))
        img = cv2.cvtColor(img, cv2.COLOR_HSV2BGR)
    if rng.integers(2):
        img = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        img[:, :, 0] = (img[:, :, 0].astype(int) + rng.integers(-hue_delta, hue_delta)) % 180
        img = cv2.cvtColor(img, cv2.COLOR_HSV2BGR)
    if mode == 0:
        img = contrast_step(img)
    return img


def mmseg_train(rgb, seg, rng, img_scale, crop):
    """upstream's train_pipeline after loading (labels already reduced): Resize(img_scale, ratio_range=(0.5, 2.0)),
    RandomCrop(crop, cat_max_ratio=0.75), RandomFlip(prob=0.5), PhotoMetricDistortion(), Normalize(to_rgb=True),
    Pad(size=crop, pad_val=0, seg_pad_val=255). mmcv loads BGR; Normalize's to_rgb turns it to RGB."""
    ratio = rng.random() * (2.0 - 0.5) + 0.5
    img, seg = mmseg_rescale(rgb[..., ::-1].copy(), seg, (int(img_scale[0] * ratio), int(img_scale[1] * ratio)))
    img, seg = mmseg_random_crop(img, seg, crop, 0.75, rng)
    flip = rng.random() < 0.5
    if flip:
        img, seg = img[:, ::-1], seg[:, ::-1]
    img = mmseg_photometric(np.ascontiguousarray(img), rng)
    img = (img[..., ::-1].astype(np.float32) - MEAN) / STD
    pad = ((0, max(crop[0] - img.shape[0], 0)), (0, max(crop[1] - img.shape[1], 0)))
    return np.pad(img, pad + ((0, 0),), constant_values=0), np.pad(seg, pad, constant_values=255), flip


# ---- hand-made images --------------------------------------------------------------------------------------------
def hand_made(height=60, width=90):
    """An image of colour gradients and blocks, and its ADE-style label (0 unlabelled; 1 covers most of it)."""
    yy, xx = np.mgrid[:height, :width]
    rgb = np.stack([(xx * 255 // width), (yy * 255 // height), ((xx + yy) * 7 % 256)], -1).astype(np.uint8)
    label = np.ones((height, width), np.uint8)
    label[5:25, 60:85] = 2
    label[40:52, 10:22] = 3
    label[:, :3] = 0
    rgb[label == 2] = (200, 30, 40)
    rgb[label == 3] = (20, 180, 60)
    return rgb, label


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("handmade")
    rgb, label = hand_made()
    Image.fromarray(rgb).save(root / "img.png")
    Image.fromarray(label).save(root / "seg.png")
    return root / "img.png", root / "seg.png", rgb, label


def run_pipeline(steps, image, label, seed):
    results = {"filename": str(image), "seg_filename": str(label), "index": 0, "num_classes": 5,
               "ignore_index": 255, "rng": np.random.default_rng(seed)}
    for step in steps:
        results = step(results)
    return results


@pytest.mark.parametrize("config", ["tiny/linear_intern_vit_tiny_synthetic.py",
                                    "tiny/upernet_intern_vit_tiny_synthetic.py"])
def test_the_train_pipeline_of_a_config_is_mmseg_s_on_a_hand_made_image(files, config):
    image, label, rgb, seg = files
    cfg = load_config(CONFIGS / config)
    steps = build_pipeline(cfg.data.train.pipeline, "data.train.pipeline")
    crop = tuple(cfg.crop_size)
    reduced = seg - 1
    reduced[reduced == 254] = 255  # reduce_zero_label
    padded = flipped = 0
    for seed in range(24):
        ours = run_pipeline(steps, image, label, seed)
        img, lab, flip = mmseg_train(rgb, reduced, np.random.default_rng(seed), (448, 112), crop)
        np.testing.assert_allclose(ours["img"].numpy().transpose(1, 2, 0), img, atol=1e-4, err_msg=f"seed {seed}")
        np.testing.assert_array_equal(ours["seg"].numpy(), lab, err_msg=f"seed {seed}")
        padded += (lab[-1] == 255).all()
        flipped += flip
    assert padded and flipped  # the seeds exercise the padding and the flip


@pytest.mark.parametrize("config", sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.glob("intern_vit_6b/*/*.py")))
def test_every_shipped_config_trains_with_upstream_s_augmentation(config):
    cfg = load_config(CONFIGS / config)
    steps = build_pipeline(cfg.data.train.pipeline, "data.train.pipeline")
    kinds = [type(step).__name__ for step in steps]
    assert kinds == ["LoadImageFromFile", "LoadAnnotations", "Resize", "RandomCrop", "RandomFlip",
                     "PhotoMetricDistortion", "Normalize", "Pad", "DefaultFormatBundle", "Collect"]
    by_kind = dict(zip(kinds, steps))
    assert by_kind["Resize"].img_scale == (2016, 504) and by_kind["Resize"].ratio_range == (0.5, 2.0)
    assert by_kind["RandomCrop"].crop_size == (504, 504) and by_kind["RandomCrop"].cat_max_ratio == 0.75
    assert by_kind["RandomFlip"].prob == 0.5
    pmd = by_kind["PhotoMetricDistortion"]
    assert (pmd.brightness_delta, pmd.contrast_range, pmd.saturation_range, pmd.hue_delta) == (
        32, (0.5, 1.5), (0.5, 1.5), 18)
    assert by_kind["Pad"].size == (504, 504) and (by_kind["Pad"].pad_val, by_kind["Pad"].seg_pad_val) == (0, 255)


def test_random_crop_avoids_a_dominated_window_as_mmseg():
    rgb, label = hand_made()
    seg = label.copy()
    dominated = {0.75: 0, 1.0: 0}
    for seed in range(40):
        for ratio in dominated:
            results = RandomCrop((24, 24), cat_max_ratio=ratio)({"img": rgb, "seg": seg,
                                                                 "rng": np.random.default_rng(seed)})
            img, lab = mmseg_random_crop(rgb, seg, (24, 24), ratio, np.random.default_rng(seed))
            np.testing.assert_array_equal(results["img"], img)
            np.testing.assert_array_equal(results["seg"], lab)
            labels, counts = np.unique(lab[lab != 255], return_counts=True)
            dominated[ratio] += counts.max() / counts.sum() >= 0.75
    assert dominated[0.75] < dominated[1.0] / 2  # most random 24x24 windows are nearly all class 1


def test_photometric_distortion_is_mmseg_s_on_rgb():
    rgb, _ = hand_made()
    changed = 0
    for seed in range(16):
        ours = PhotoMetricDistortion()({"img": rgb, "rng": np.random.default_rng(seed)})["img"]
        theirs = mmseg_photometric(rgb[..., ::-1].copy(), np.random.default_rng(seed))[..., ::-1]
        np.testing.assert_array_equal(ours, theirs, err_msg=f"seed {seed}")
        changed += not np.array_equal(ours, rgb)
    assert changed >= 12  # each of four parts applies with probability 1/2


def test_pad_fills_the_label_with_the_ignore_index():
    img = np.full((5, 7, 3), 9.0, np.float32)
    seg = np.zeros((5, 7), np.uint8)
    out = Pad(size=(8, 10), pad_val=0, seg_pad_val=255)({"img": img, "seg": seg})
    assert out["img"].shape == (8, 10, 3) and out["seg"].shape == (8, 10)
    assert (out["seg"][:5, :7] == 0).all() and (out["seg"][5:] == 255).all() and (out["seg"][:, 7:] == 255).all()
    assert (out["img"][:5, :7] == 9).all() and (out["img"][5:] == 0).all() and (out["img"][:, 7:] == 0).all()
