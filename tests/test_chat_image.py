"""Dynamic tiling and frame sampling: choices computed by hand from the reference rules."""
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from internvl.data.chat_image import (dynamic_preprocess, find_closest_aspect_ratio, frame_indices, load_image, load_video,
                                 target_grids)
from internvl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageDecodeError


def grid_of(width, height, max_num=12, min_num=1, image_size=448):
    return find_closest_aspect_ratio(width / height, target_grids(min_num, max_num), width, height, image_size)


def test_target_grids_are_every_grid_within_the_tile_budget_fewest_first():
    grids = target_grids(1, 6)
    assert set(grids) == {(i, j) for i in range(1, 7) for j in range(1, 7) if i * j <= 6}
    assert [c * r for c, r in grids] == sorted(c * r for c, r in grids)
    assert set(target_grids(2, 4)) == {(1, 2), (2, 1), (1, 3), (3, 1), (2, 2), (1, 4), (4, 1)}
    with pytest.raises(ValueError, match="min_num"):
        target_grids(3, 2)


@pytest.mark.parametrize("size, max_num, expected", [
    ((800, 600), 12, (4, 3)),    # 4:3 exactly: 4 columns x 3 rows
    ((1600, 400), 12, (4, 1)),   # 4:1
    ((1500, 500), 6, (3, 1)),    # 3:1 within 6 tiles
    ((448, 448), 12, (1, 1)),    # square ties 1x1 / 2x2 / 3x3; 448^2 px is not > half of 2x2's 4*448^2
    ((900, 900), 12, (2, 2)),    # 810000 px > 0.5*4*448^2 = 401408, but not > 0.5*9*448^2 = 903168
    ((1000, 1000), 12, (3, 3)),  # 1e6 px > 903168: the 3x3 grid wins the tie
    ((300, 1000), 12, (1, 3)),   # 0.3: 1x3 and 2x6 tie at |0.3 - 1/3|; 3e5 px is not > 0.5*12*448^2
    ((672, 448), 2, (2, 1)),     # 1.5 ties 1x1 (1.0) and 2x1 (2.0); 301056 px > 0.5*2*448^2 = 200704
    ((300, 200), 2, (1, 1)),     # the same ratio, but 60000 px is too small for two tiles
])
def test_closest_aspect_ratio_choices(size, max_num, expected):
    assert grid_of(*size, max_num=max_num) == expected


def test_min_num_forces_more_tiles():
    assert grid_of(448, 448, min_num=2, max_num=4) == (2, 2)


def two_colour_image(width, height, left=(255, 0, 0), right=(0, 0, 255)):
    image = Image.new("RGB", (width, height), right)
    image.paste(Image.new("RGB", (width // 2, height), left), (0, 0))
    return image


def test_tiles_are_row_major_crops_of_the_resized_image_plus_a_thumbnail():
    # 112x56 with 28 px tiles: ratio 2 -> 2x1 (the 4x2 tie needs > 0.5*8*28^2 = 3136 px; 6272 px wins it,
    # so cap at 4 tiles to get 2x1)
    image = two_colour_image(112, 56)
    tiles = dynamic_preprocess(image, max_num=4, image_size=28, use_thumbnail=True)
    assert len(tiles) == 3 and all(t.size == (28, 28) for t in tiles)
    assert tiles[0].getpixel((14, 14)) == (255, 0, 0) and tiles[1].getpixel((14, 14)) == (0, 0, 255)
    assert tiles[2].getpixel((3, 14)) == (255, 0, 0) and tiles[2].getpixel((24, 14)) == (0, 0, 255)
    assert len(dynamic_preprocess(image, max_num=4, image_size=28, use_thumbnail=False)) == 2
    # one tile: no thumbnail even when asked
    assert len(dynamic_preprocess(image, max_num=1, image_size=28, use_thumbnail=True)) == 1
    # 2 rows: tile order is left-to-right, then top-to-bottom
    tall = Image.new("RGB", (56, 56), (0, 255, 0))
    tall.paste(Image.new("RGB", (28, 28), (255, 0, 0)), (28, 0))  # top-right quadrant red
    tiles = dynamic_preprocess(tall, min_num=4, max_num=4, image_size=28)
    assert [t.getpixel((14, 14)) for t in tiles] == [(0, 255, 0), (255, 0, 0), (0, 255, 0), (0, 255, 0)]


def test_load_image_normalizes_every_tile(tmp_path):
    path = tmp_path / "two.png"
    two_colour_image(112, 56).save(path)
    pixels = load_image(path, input_size=28, max_num=4)
    assert pixels.shape == (3, 3, 28, 28) and pixels.dtype == torch.float32
    red = torch.tensor([(1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], -IMAGENET_MEAN[1] / IMAGENET_STD[1],
                        -IMAGENET_MEAN[2] / IMAGENET_STD[2]])
    assert torch.allclose(pixels[0, :, 14, 14], red, atol=1e-5)
    # a PIL image (any mode) gives the same tensor as its file
    assert torch.equal(load_image(Image.open(path), input_size=28, max_num=4), pixels)
    assert torch.equal(load_image(two_colour_image(112, 56).convert("RGBA"), input_size=28, max_num=4), pixels)
    assert load_image(path, input_size=28, max_num=4, use_thumbnail=False).shape[0] == 2


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        load_image(bad)


@pytest.mark.parametrize("bound, fps, max_frame, segments, expected", [
    (None, 30, 99, 4, [12, 37, 62, 86]),  # segment 24.75: mid-points 12.375 + round(24.75 * i)
    ((1.0, 2.0), 10, 99, 2, [12, 17]),    # frames 10..20, segment 5
    (None, 25, 10, 4, [1, 3, 6, 9]),      # segment 2.5: round(2.5) = 2 and round(7.5) = 8 (half to even)
    # the end is clipped to the last frame; segments of 7/8 frame: 4.4375 -> 4 twice, as the reference does
    ((0.0, 100.0), 1, 7, 8, [0, 1, 2, 3, 4, 4, 5, 6]),
])
def test_frame_indices(bound, fps, max_frame, segments, expected):
    assert frame_indices(bound, fps, max_frame, num_segments=segments) == expected


def test_frame_indices_match_numpy_rounding():
    for max_frame in range(1, 60):
        for segments in (3, 4, 8):
            seg = max_frame / segments
            ref = [int(seg / 2 + np.round(seg * i)) for i in range(segments)]
            assert frame_indices(None, 30, max_frame, num_segments=segments) == ref


def test_load_video_without_a_reader_says_what_to_install(tmp_path, monkeypatch):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00" * 64)
    monkeypatch.setitem(sys.modules, "decord", None)  # None in sys.modules makes the import fail
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(ImportError, match="pip install av"):
        load_video(video)
    with pytest.raises(FileNotFoundError, match="nothing.mp4"):
        load_video(tmp_path / "nothing.mp4")


def test_load_video_with_pyav(tmp_path, monkeypatch):
    av = pytest.importorskip("av")
    monkeypatch.setitem(sys.modules, "decord", None)
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:  # 20 frames at 10 fps; frame i is grey level 10 * i
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(20):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 10 * i, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    pixels, num_patches = load_video(path, num_segments=4, input_size=28)
    assert num_patches == [1, 1, 1, 1] and pixels.shape == (4, 3, 28, 28)
    expected = frame_indices(None, 10, 19, num_segments=4)  # [2, 7, 12, 16]
    grey = pixels[:, 0, 14, 14] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    assert torch.allclose(grey * 255, torch.tensor([10.0 * i for i in expected]), atol=4)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="bad.mp4"):
        load_video(bad)
