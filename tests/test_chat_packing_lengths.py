"""Exact sample lengths (internvl_chat/chat_data/lengths.py): equal to what the dataset builds, cached next to
the data, recomputed when a flag that changes them changes."""
import json
from pathlib import Path

import pytest
from PIL import Image

from chat_finetune_helpers import training_tokenizer
from internvl_chat.chat_data import lengths as lengths_mod
from internvl_chat.chat_data.build import build_training_data
from internvl_chat.chat_data.chat_jsonl import write_synthetic_chat_data
from internvl_chat.chat_data.dataset import DataOptions

SIZES = [(56, 56), (200, 60), (60, 200), (120, 113), (30, 30), (300, 290), (170, 56), (90, 250)]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("chatlengths")


@pytest.fixture(scope="module")
def meta(root):
    """Caption, QA, two images, pure text, video; the images re-saved at mixed sizes so tiling differs."""
    meta = write_synthetic_chat_data(root / "mixed", 10, kinds=("caption", "qa", "multi", "text", "video"),
                                     video_frames=4)
    for i, path in enumerate(sorted((root / "mixed" / "images").glob("*.jpg"))):
        Image.open(path).convert("RGB").resize(SIZES[i % len(SIZES)]).save(path)
    return meta


def _options(**overrides):
    flags = dict(template="internlm2-chat", num_image_token=4, image_size=56, max_seq_length=512,
                 dynamic_image_size=True, use_thumbnail=True, max_dynamic_patch=6, min_num_frame=2, max_num_frame=5)
    flags.update(overrides)
    return DataOptions(**flags)


def test_lengths_are_the_tokens_and_tiles_the_dataset_builds(root, meta):
    tokenizer = training_tokenizer(root, "internlm2")
    dataset, problems = build_training_data(str(meta), tokenizer, _options())
    assert not problems
    inner = dataset.datasets[0]
    kinds = {s.kind for s in inner.samples}
    assert kinds == {"image", "multi-image", "text", "video"}
    tiles_seen = set()
    for epoch in (0, 1):
        lengths = dataset.epoch_lengths(epoch)
        for i in range(len(dataset)):
            item = dataset[(i, epoch)]
            assert "bad_sample" not in item
            assert lengths[i] == len(item["input_ids"]), (i, epoch, inner.samples[i].kind)
            if epoch == 0:
                assert dataset.tiles[i] == item["pixel_values"].shape[0], i
                tiles_seen.add(dataset.tiles[i])
    assert len(tiles_seen) >= 3  # the sizes really gave different tilings
    # upstream's estimate misses the template and gives every sample num_image_token x (6 + 1) image tokens
    estimate = inner.estimated_lengths()
    text = next(i for i, s in enumerate(inner.samples) if s.kind == "text")
    assert estimate[text] < inner.lengths[text] and estimate != inner.lengths


def test_the_cache_is_reused_and_a_changed_flag_recomputes(root, meta, monkeypatch):
    tokenizer = training_tokenizer(root, "internlm2")
    dataset, _ = build_training_data(str(meta), tokenizer, _options())
    first = dataset.lengths
    cache = lengths_mod.cache_path(dataset.datasets[0])
    assert cache.is_file() and json.loads(cache.read_text())["tokens"] == first

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed a length the cache holds")

    monkeypatch.setattr(lengths_mod, "sample_length", refuse)
    again, _ = build_training_data(str(meta), tokenizer, _options())
    assert again.lengths == first  # read from the cache: sample_length was never called
    monkeypatch.undo()

    fewer, _ = build_training_data(str(meta), tokenizer, _options(max_dynamic_patch=2))
    smaller = fewer.lengths  # a changed flag: recomputed (not the stale cache), and written back
    assert smaller != first and all(a <= b for a, b in zip(smaller, first))
    assert json.loads(cache.read_text())["key"]["max_dynamic_patch"] == 2
    assert [fewer[i]["input_ids"].shape[0] for i in range(len(fewer))] == smaller

    # a rewritten JSONL (new size / mtime) is noticed too
    annotation = Path(dataset.datasets[0].spec.annotation)
    lines = annotation.read_text().splitlines()
    annotation.write_text("\n".join(lines[:4]) + "\n")
    shorter, _ = build_training_data(str(meta), tokenizer, _options(max_dynamic_patch=2))
    assert shorter.lengths == smaller[:4]
    annotation.write_text("\n".join(lines) + "\n")
