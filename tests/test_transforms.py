"""Shared image loading and transforms."""
import numpy as np
import pytest
from PIL import Image
from transformers import CLIPImageProcessor

from internvl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageDecodeError, build_transform, open_image


def _image(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_center_crop_matches_clip_image_processor_with_published_config():
    # preprocessor_config.json of InternVL-14B-224px: shortest_edge 224, center crop 224, bicubic, ImageNet stats
    processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                                   resample=3, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))
    image = _image(300, 260)
    expected = processor(images=image, return_tensors="pt").pixel_values[0]
    got = build_transform(224, "center_crop")(image)
    assert got.shape == expected.shape == (3, 224, 224)
    # both resize with PIL bicubic; they differ only by uint8 rounding of the resized image
    assert (got - expected).abs().max() < 0.02


def test_resize_is_square_and_normalized():
    x = build_transform(56, "resize")(Image.new("RGB", (90, 30), (124, 116, 104)))
    assert x.shape == (3, 56, 56)
    assert x.abs().max() < 0.01  # the ImageNet mean colour maps to ~0


def test_grayscale_is_converted_and_bad_arguments_are_named():
    assert build_transform(28)(Image.new("L", (40, 40))).shape == (3, 28, 28)
    with pytest.raises(ValueError, match="unknown transform mode 'crop'"):
        build_transform(28, "crop")
    with pytest.raises(ValueError, match="crop_pct"):
        build_transform(28, "center_crop", crop_pct=1.5)


def test_open_image_names_missing_and_undecodable_files(tmp_path):
    good = tmp_path / "good.png"
    _image(20, 10).convert("L").save(good)
    assert open_image(good).mode == "RGB"
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        open_image(tmp_path / "missing.jpg")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        open_image(bad)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(ImageDecodeError, match="truncated.png"):
        open_image(truncated)
