"""internvl_g.train_data: the named datasets and users' own, one sample per cleaned caption with a negative of
another image, upstream's augmentation and tokenization, and every bad input as an error naming the file and
line (or entry, or flag)."""
import json
import random

import pytest
import torch

from internvl.datakit import SyntheticImages
from internvl.datakit.checkpoints import write_tiny_internvl_cg
from internvl.errors import ConfigError, DataError, MissingFileError
from internvl.models.processing_internvl_cg import build_cg_tokenizer
from internvl.data.retrieval import write_coco_karpathy_train, write_flickr30k
from internvl_g.train_data import (DATASETS, RetrievalTrainDataset, collate, read_samples, resolve_dataset,
                                   train_transform)

KIT = SyntheticImages(num_classes=4, image_size=64)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_cg_tokenizer(write_tiny_internvl_cg(tmp_path_factory.mktemp("ckpt")), "retrieval").tokenizer


def test_named_datasets_are_upstreams_paths_and_own_data_needs_both_paths(tmp_path):
    assert resolve_dataset("flickr30k_cn_train") == DATASETS["flickr30k_cn_train"]
    assert DATASETS["coco_karpathy_train"].annotation == "./data/coco/annotations/coco_karpathy_train.json"
    moved = resolve_dataset("flickr30k_en_train", data_root="/x/Images")
    assert (moved.root, moved.annotation) == ("/x/Images", "./data/flickr30k/flickr30k_train_karpathy.txt")
    # Upstream tells the format by the name; a file suffix or --dataset_format tells it otherwise.
    assert resolve_dataset("my_coco_format", "r", "a.txt").format == "coco"
    assert resolve_dataset("mine", "r", "a.json").format == "coco"
    assert resolve_dataset("mine", "r", "a.txt").format == "flickr"
    assert resolve_dataset("mine", "r", "a.json", dataset_format="flickr").format == "flickr"
    with pytest.raises(ConfigError, match=r"--dataset_name 'mine' is not a known dataset .*--data_root.*--annotation"):
        resolve_dataset("mine", data_root="r")
    with pytest.raises(ConfigError, match="--dataset_format"):
        resolve_dataset("mine", "r", "a.csv")


def test_flickr_and_coco_samples(tmp_path):
    root = write_flickr30k(tmp_path / "flickr30k", 3, split="train", languages=("en", "cn"), kit=KIT)
    samples = read_samples(resolve_dataset("flickr30k_cn_train", str(root / "Images"),
                                           str(root / "flickr30k_cn_train.txt")))
    assert len(samples) == 15 and [s.image_id for s in samples] == [i for i in range(3) for _ in range(5)]
    assert samples[5].image.endswith("Images/000001.jpg") and samples[5].where.endswith("flickr30k_cn_train.txt:7")
    coco = write_coco_karpathy_train(tmp_path / "coco", 2, per_image=3, kit=KIT, start=10)
    samples = read_samples(resolve_dataset("coco_karpathy_train", str(coco),
                                           str(coco / "annotations" / "coco_karpathy_train.json")))
    assert [s.image_id for s in samples] == [0, 0, 0, 1, 1, 1]
    assert samples[3].image == str(coco / "train2014" / "COCO_train2014_000000000011.jpg")
    assert all(s.caption == s.caption.lower() and "." not in s.caption for s in samples)  # upstream's cleaning


def test_a_sample_as_upstream_builds_it(tmp_path, tokenizer):
    captions = tmp_path / "captions.txt"
    captions.write_text("image,caption\n1.jpg,A Red circle.\n1.jpg,the red circle!\n2.jpg,A blue SQUARE\n")
    for name in ("1.jpg", "2.jpg"):
        KIT.sample(0).image.save(tmp_path / name)
    dataset = RetrievalTrainDataset(read_samples(resolve_dataset("mine", str(tmp_path), str(captions))), tokenizer,
                                    image_size=42, max_seq_length=40, pad_to_max_length=True)
    item = dataset[0]
    assert item["pixel_values"].shape == (3, 42, 42) and item["image_ids"].tolist() == [0]

    def text(field):
        ids = item[f"{field}_input_ids"][item[f"{field}_attention_mask"].bool()].tolist()
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert item[f"{field}_input_ids"].shape == (40,)  # --pad_to_max_length
        return tokenizer.decode(ids, skip_special_tokens=True)

    # The random choices are a function of (seed, epoch, index): repeatable, new every epoch.
    torch.testing.assert_close(dataset[0]["pixel_values"], item["pixel_values"])
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0]["pixel_values"], item["pixel_values"])
    assert text("positive") == "a red circle"
    assert text("negative") == "a blue square"  # the only caption of another image
    assert text("summarize").replace(" ", "") == "summarize:aredcircle"
    # Without --pad_to_max_length the collator pads each text field to the longest of the batch with 0.
    dataset.padding = False
    batch = collate([dataset[0], dataset[2]])
    lengths = batch["positive_attention_mask"].sum(1)
    assert batch["positive_input_ids"].shape[1] == lengths.max() and (batch["positive_input_ids"][
        batch["positive_attention_mask"] == 0] == 0).all()
    assert batch["image_ids"].tolist() == [[0], [1]]


def test_negatives_are_uniform_over_other_images(tmp_path, tokenizer):
    root = write_flickr30k(tmp_path / "flickr30k", 4, split="train", per_image=2, kit=KIT)
    dataset = RetrievalTrainDataset(read_samples(resolve_dataset(
        "flickr30k_en_train", str(root / "Images"), str(root / "flickr30k_train_karpathy.txt"))), tokenizer, 28)
    rng = random.Random(1)
    picks = [dataset.negative_index(0, rng) for _ in range(600)]
    assert set(picks) == set(range(2, 8))  # every caption of the three other images, never one of image 0
    assert min(picks.count(i) for i in range(2, 8)) > 60


def test_training_augmentation_crops_half_to_all_and_flips():
    image = KIT.sample(3).image.resize((100, 100))
    transform = train_transform(56)
    torch.manual_seed(0)
    outputs = torch.stack([transform(image) for _ in range(8)])
    assert outputs.shape == (8, 3, 56, 56)
    assert len({round(float(o.sum()), 3) for o in outputs}) == 8  # random crops / flips, not one resize
    crop = transform.transforms[0]
    assert crop.scale == (0.5, 1.0) and crop.interpolation.value == "bicubic"


@pytest.mark.parametrize("content, error, message", [
    ("image,caption\n1.jpg,ok\n2.png,a caption\n", DataError, r"captions\.txt:3: malformed line '2\.png,a caption'"),
    ("image,caption\n1.jpg,a caption\n2.jpg,   \n", DataError, r"captions\.txt:3: malformed"),
    ("image,caption\n1.jpg,a caption\n2.jpg,...!!\n", DataError, r"captions\.txt:3: the caption '\.\.\.!!' is empty"),
    ("image,caption\n1.jpg,a caption\n3.jpg,no such image\n", MissingFileError,
     r"1 image\(s\) listed in .*captions\.txt do not exist .*3\.jpg \(.*captions\.txt:3\)"),
    ("image,caption\n1.jpg,one image\n1.jpg,only\n", DataError, "at least two"),
])
def test_bad_flickr_files_name_file_and_line(tmp_path, content, error, message):
    for name in ("1.jpg", "2.jpg"):
        KIT.sample(0).image.save(tmp_path / name)
    (tmp_path / "captions.txt").write_text(content)
    with pytest.raises(error, match=message):
        read_samples(resolve_dataset("mine_flickr", str(tmp_path), str(tmp_path / "captions.txt")))


@pytest.mark.parametrize("entries, message", [
    ([{"caption": "a cat", "image_id": "coco_1"}], r"entry 0 of .*train\.json.* has no string 'image'"),
    ([{"image": "1.jpg", "image_id": "coco_1"}], r"entry 0 of .*train\.json.* has no caption text"),
    ({"annotations": []}, r"train\.json: expected COCO captions"),
])
def test_bad_coco_files_name_the_entry(tmp_path, entries, message):
    (tmp_path / "train.json").write_text(json.dumps(entries))
    with pytest.raises(DataError, match=message):
        read_samples(resolve_dataset("mine_coco", str(tmp_path), str(tmp_path / "train.json")))


def test_missing_roots_and_unreadable_images_are_named(tmp_path, tokenizer):
    (tmp_path / "captions.txt").write_text("image,caption\n1.jpg,a\n2.jpg,b\n")
    with pytest.raises(MissingFileError, match=r"image directory not found: .*nowhere"):
        read_samples(resolve_dataset("mine", str(tmp_path / "nowhere"), str(tmp_path / "captions.txt")))
    (tmp_path / "1.jpg").write_bytes(b"not a jpeg")
    KIT.sample(0).image.save(tmp_path / "2.jpg")
    samples = read_samples(resolve_dataset("mine", str(tmp_path), str(tmp_path / "captions.txt")))
    dataset = RetrievalTrainDataset(samples, tokenizer, 28)
    with pytest.raises(DataError, match=r"cannot decode image .*1\.jpg.*listed at .*captions\.txt:2"):
        dataset[0]
