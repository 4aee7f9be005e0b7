"""The synthetic data kit: determinism, balance, bilingual text, and that it is learnable."""
import re
from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from internvl.datakit import BACKGROUNDS, COLOURS, POSITIONS, SHAPES, ZH, SyntheticDataset, SyntheticImages


def test_sample_is_a_pure_function_of_seed_and_index():
    a, b = SyntheticImages(image_size=32), SyntheticImages(image_size=32)
    assert a.sample(5).image.tobytes() == b.sample(5).image.tobytes()
    assert a.sample(5) == b.sample(5)  # every field, not only the pixels
    assert a.sample(5).image.tobytes() != a.sample(6).image.tobytes()
    assert a.sample(5).image.tobytes() != a.sample(5 + a.num_classes).image.tobytes()  # same class, new draw
    assert a.sample(5).image.tobytes() != SyntheticImages(image_size=32, seed=1).sample(5).image.tobytes()
    # Out-of-order access draws the same sample: no state is carried between calls.
    c = SyntheticImages(image_size=32)
    c.sample(100)
    assert c.sample(5).image.tobytes() == a.sample(5).image.tobytes()


def test_images_are_rgb_of_the_configured_size_with_the_shape_inside_its_bbox():
    kit = SyntheticImages(image_size=48)
    for i in range(20):
        s = kit.sample(i)
        assert s.image.mode == "RGB" and s.image.size == (48, 48)
        x0, y0, x1, y1 = s.bbox
        assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48
        # The shape colour dominates its box: its channel ordering shows (e.g. red > green, blue).
        r, g, b = np.asarray(s.image)[y0:y1, x0:x1].reshape(-1, 3).mean(0)
        expected = {"red": r > max(g, b), "green": g > max(r, b), "blue": b > max(r, g), "yellow": min(r, g) > b}
        assert expected[s.colour], (s.class_name, (r, g, b))


def test_coverage_is_the_shape_the_image_was_composited_from():
    kit = SyntheticImages(num_classes=4, image_size=48)
    for i in range(8):
        s, alpha = kit.sample(i), kit.coverage(i)
        assert alpha.shape == (48, 48) and alpha.min() >= 0 and alpha.max() <= 1
        assert np.array_equal(alpha, kit.coverage(i))  # deterministic, like the image
        ys, xs = np.nonzero(alpha)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == s.bbox
        pixels = np.asarray(s.image).astype(float)
        inside, outside = pixels[alpha == 1], pixels[alpha == 0]
        # Fully covered pixels are the one jittered fill colour (JPEG-free, exact up to rounding) and
        # differ from the background around them.
        assert np.ptp(inside, axis=0).max() <= 1
        assert np.abs(inside.mean(0) - outside.mean(0)).max() > 30


def test_classes_are_balanced_named_safely_and_sorted_like_imagefolder():
    kit = SyntheticImages()
    assert len(kit.classes) == 16 == len(set(kit.classes))
    assert kit.classes == sorted(kit.classes)
    assert all(re.fullmatch(r"[a-z]+_[a-z]+", name) for name in kit.classes)
    counts = Counter(kit.sample(i).label for i in range(160))
    assert counts == {label: 10 for label in range(16)}
    for i in range(16):
        s = kit.sample(i)
        assert s.class_name == kit.classes[s.label] == f"{s.colour}_{s.shape}"


def test_a_subset_of_classes_needs_both_colour_and_shape():
    kit = SyntheticImages(num_classes=4)
    pairs = [name.split("_") for name in kit.classes]
    assert {c for c, _ in pairs} == set(COLOURS) and {s for _, s in pairs} == set(SHAPES)
    assert {kit.sample(i).label for i in range(40)} == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticImages(num_classes=17)


def test_every_attribute_value_occurs():
    samples = [SyntheticImages(image_size=16).sample(i) for i in range(200)]
    assert {s.position for s in samples} == set(POSITIONS)
    assert {s.background for s in samples} == set(BACKGROUNDS)


def test_captions_and_qa_name_the_attributes_in_both_languages():
    kit = SyntheticImages(image_size=16)
    for i in range(24):
        s = kit.sample(i)
        for word in (s.colour, s.shape, s.position):
            assert word in s.caption_en
        for word in (s.colour, s.shape, s.position, s.background):
            assert ZH[word] in s.caption_zh
        assert s.caption_zh.startswith("图片") and s.caption_zh.endswith("。")
        answers = {qa.kind: qa for qa in s.qa}
        assert set(answers) == {"colour", "shape", "position", "background"}
        for kind, value in (("colour", s.colour), ("shape", s.shape), ("position", s.position),
                            ("background", s.background)):
            qa = answers[kind]
            assert qa.answer_en == value and qa.answer_zh == ZH[value]
            assert qa.question_en.endswith("?") and qa.question_zh.endswith("？")
    s = kit.sample(0)
    adjective = {"noise": "noisy", "stripes": "striped", "checkerboard": "checkered", "gradient": "gradient"}
    assert s.caption_en == (f"a {s.colour} {s.shape} in the {s.position} of the image, "
                            f"on a {adjective[s.background]} background")
    assert s.caption_zh == f"图片{ZH[s.position]}有一个{ZH[s.colour]}的{ZH[s.shape]}，背景是{ZH[s.background]}。"


def test_dataset_serves_images_and_labels_from_its_offset():
    kit = SyntheticImages(num_classes=4, image_size=16)
    ds = SyntheticDataset(10, kit, offset=3, transform=np.asarray)
    assert len(ds) == 10 and ds.classes == kit.classes
    image, label = ds[2]
    assert label == 5 % 4 and np.array_equal(image, np.asarray(kit.sample(5).image))
    with pytest.raises(IndexError):
        ds[10]


def _tensors(kit: SyntheticImages, indices: range) -> tuple[torch.Tensor, torch.Tensor]:
    samples = [kit.sample(i) for i in indices]
    images = torch.from_numpy(np.stack([np.asarray(s.image) for s in samples]))
    return images.permute(0, 3, 1, 2).float().div(255), torch.tensor([s.label for s in samples])


def test_a_tiny_cnn_learns_colour_and_shape():
    """16 classes, chance 1/16. Colour alone caps accuracy at 1/4, so passing needs shape too."""
    kit = SyntheticImages(num_classes=16, image_size=32)
    x_train, y_train = _tensors(kit, range(0, 640))
    x_test, y_test = _tensors(kit, range(640, 960))
    mean, std = x_train.mean((0, 2, 3), keepdim=True), x_train.std((0, 2, 3), keepdim=True)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1),
                          nn.Flatten(), nn.Linear(64, 16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        for batch in torch.randperm(len(x_train), generator=generator).split(64):
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy > 0.5, accuracy  # chance is 0.0625; colour alone reaches at most 0.25


def test_sentencepiece_is_llama_style_deterministic_and_covers_every_script(tmp_path):
    import sentencepiece as spm

    from internvl.datakit import MULTILINGUAL_LINES, train_sentencepiece

    a, b = train_sentencepiece(tmp_path / "a"), train_sentencepiece(tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()
    sp = spm.SentencePieceProcessor(model_file=str(a))
    assert [sp.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"] and sp.pad_id() == -1
    for text in (*MULTILINGUAL_LINES, "Привет 😀 ü"):  # the last line was never seen: byte fallback
        ids = sp.encode(text)
        assert sp.unk_id() not in ids and sp.decode(ids) == text
