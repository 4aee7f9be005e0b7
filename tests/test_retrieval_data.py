"""internvl.data.retrieval: upstream's caption cleaning, the Flickr30K and COCO caption formats read from
hand-written files, and the synthetic Flickr30K writer."""
import json

import pytest

from internvl.datakit import SyntheticImages
from internvl.data.caption_benchmarks import load_image_list
from internvl.errors import DataError, MissingFileError
from internvl.data.retrieval import (chinese_reference_captions, coco_caption_json, pre_caption, read_coco_captions,
                                     read_flickr_captions, write_flickr30k)

KIT = SyntheticImages(num_classes=4, image_size=32)


def test_pre_caption_is_upstreams_cleaning():
    assert pre_caption('A Dog (brown)  runs!! "Fast"; see: #1 ~ok*.') == "a dog brown runs fast see 1 ok"
    assert pre_caption("  two   spaces\n") == "two spaces"
    assert pre_caption("commas, stay - and dashes") == "commas, stay - and dashes"
    long = " ".join(f"w{i}" for i in range(60))
    assert pre_caption(long) == " ".join(f"w{i}" for i in range(50))
    assert pre_caption(long, max_words=3) == "w0 w1 w2"
    # Chinese punctuation is not in upstream's set; only the ASCII marks go.
    assert pre_caption("一只狗（棕色）在跑。Run!") == "一只狗（棕色）在跑。run"
    assert pre_caption(["A.", "B!"]) == ["a", "b"]


def test_flickr_caption_file_as_upstream_reads_it(tmp_path):
    path = tmp_path / "flickr30k_cn_test.txt"
    path.write_text("image,caption\n"
                    "1009692167.jpg,在警车前，一条训练有素的警犬坐在它的警官身旁。\n"
                    "\n"
                    "1009692167.jpg,A man, a dog.jpg, and a car\n"
                    "22.jpg,x\n", encoding="utf-8")
    rows = read_flickr_captions(path)
    assert [(r.image, r.caption, r.line) for r in rows] == [
        ("1009692167.jpg", "在警车前，一条训练有素的警犬坐在它的警官身旁。", 2),
        ("1009692167.jpg", "A man, a dog.jpg, and a car", 4),  # split at the first ".jpg,"
        ("22.jpg", "x", 5)]


@pytest.mark.parametrize("content, message", [
    ("image,caption\n1.jpg,ok\n2.png,a caption\n", r"flickr\.txt:3: malformed line '2\.png,a caption'"),
    ("image,caption\n1.jpg,   \n", r"flickr\.txt:2: malformed"),
    ("1.jpg,first caption\n2.jpg,second\n", r"flickr\.txt:1: expected the header line 'image,caption'"),
    ("image,caption\n", "holds no captions"),
])
def test_flickr_caption_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "flickr.txt"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_flickr_captions(path)


def test_missing_caption_file_is_named(tmp_path):
    with pytest.raises(MissingFileError, match=r"nope\.txt.*data/README\.md"):
        read_flickr_captions(tmp_path / "nope.txt")


def test_coco_caption_format_and_karpathy_list(tmp_path):
    coco = tmp_path / "coco-cn_test.json"
    coco.write_text(json.dumps({
        "images": [{"id": 573854, "file_name": "train2014/COCO_train2014_000000573854.jpg"},
                   {"id": 7, "file_name": "val2014/COCO_val2014_000000000007.jpg"}],
        "annotations": [{"image_id": 7, "id": 1, "caption": "一只猫"}, {"image_id": 573854, "id": 2, "caption": "狗"},
                        {"image_id": 7, "id": 3, "caption": "猫在睡觉"}]}, ensure_ascii=False), encoding="utf-8")
    images = read_coco_captions(coco)
    assert [(i.image_id, i.file_name, i.captions) for i in images] == [
        (573854, "train2014/COCO_train2014_000000573854.jpg", ("狗",)),
        (7, "val2014/COCO_val2014_000000000007.jpg", ("一只猫", "猫在睡觉"))]

    karpathy = tmp_path / "coco_karpathy_train.json"  # BLIP: one entry per caption (train) or a list (test)
    karpathy.write_text(json.dumps([
        {"image": "val2014/COCO_val2014_000000000042.jpg", "caption": "a", "image_id": "coco_42"},
        {"image": "val2014/COCO_val2014_000000000042.jpg", "caption": "b", "image_id": "coco_42"},
        {"image": "train2014/COCO_train2014_000000000009.jpg", "caption": ["c", "d"]}]))
    images = read_coco_captions(karpathy)
    assert [(i.image_id, i.captions) for i in images] == [(42, ("a", "b")), (9, ("c", "d"))]


@pytest.mark.parametrize("content, message", [
    ({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 2, "caption": "x"}]},
     r"annotations\[0\] .* image id 2, which 'images' does not list"),
    ({"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
      "annotations": [{"image_id": 1, "caption": "x"}]}, r"1 image\(s\) .* have no caption, e\.g\. images\[1\]"),
    ({"images": [{"id": "1", "file_name": "a.jpg"}], "annotations": []}, r"images\[0\] .* needs an integer 'id'"),
    ([{"image": "a_1.jpg", "caption": ""}], r"entry 0 .* has no caption text"),
    ({"captions": []}, r"found an object with keys \['captions'\]"),
])
def test_coco_caption_errors_name_the_entry(tmp_path, content, message):
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match=message):
        read_coco_captions(path)


def test_coco_caption_json_round_trips(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(coco_caption_json([(3, "x.jpg", ["a", "b"]), (5, "y.jpg", ["c"])])))
    assert [(i.image_id, i.file_name, i.captions) for i in read_coco_captions(path)] == [
        (3, "x.jpg", ("a", "b")), (5, "y.jpg", ("c",))]


def test_synthetic_flickr30k_en_and_cn(tmp_path):
    root = write_flickr30k(tmp_path / "flickr30k", 3, split="test", languages=("en", "cn"), kit=KIT, start=5)
    assert sorted(p.name for p in (root / "Images").iterdir()) == ["000005.jpg", "000006.jpg", "000007.jpg"]
    en, cn = read_flickr_captions(root / "flickr30k_test_karpathy.txt"), read_flickr_captions(root / "flickr30k_cn_test.txt")
    assert (root / "flickr30k_cn_test.txt").read_text(encoding="utf-8").startswith("image,caption\n")
    assert len(en) == len(cn) == 15
    assert [r.caption for r in cn if r.image == "000006.jpg"] == chinese_reference_captions(KIT.sample(6), 5)
    assert en[0].caption == KIT.sample(5).caption_en
    # Another split of the same root shares Images/, never an image or a caption file.
    write_flickr30k(root, 2, split="train", languages=("en",), kit=KIT, start=0)
    assert len(read_flickr_captions(root / "flickr30k_train_karpathy.txt")) == 10
    with pytest.raises(FileExistsError, match="000005.jpg"):
        write_flickr30k(root, 1, split="val", kit=KIT, start=5)


def test_one_reader_and_one_image_id_rule_for_retrieval_and_captioning(tmp_path):
    """The caption evaluation (load_image_list) and the retrieval data (read_coco_captions) read a Karpathy list
    with one reader: an ``image_id`` wins ("coco_<n>" -> n, upstream's training rule), else the number after the
    last '_' of the .jpg name (upstream's caption evaluation); BLIP's own entries give the same number both ways."""
    (tmp_path / "val2014").mkdir()
    names = ["val2014/COCO_val2014_000000391895.jpg", "val2014/COCO_val2014_000000000013.jpg",
             "val2014/COCO_val2014_000000000007.jpg"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    listing = tmp_path / "coco_karpathy_test.json"
    listing.write_text(json.dumps([
        {"image": names[0], "caption": ["a"], "image_id": "coco_391895"},  # BLIP: both rules agree
        {"image": names[1], "caption": ["b"], "image_id": "coco_12"},  # the image_id wins over the name
        {"image": names[2], "caption": ["c"]}]))  # BLIP's test list: the name
    ids = [391895, 12, 7]
    assert [i.image_id for i in read_coco_captions(listing)] == ids
    assert [i.image_id for i in load_image_list(listing, tmp_path, "karpathy")] == ids
    assert [i.path for i in load_image_list(listing, tmp_path, "karpathy")] == [tmp_path / n for n in names]
    # An image to caption needs no caption; a retrieval image does.
    listing.write_text(json.dumps([{"image": names[2]}]))
    assert [i.image_id for i in load_image_list(listing, tmp_path, "karpathy")] == [7]
    with pytest.raises(DataError, match=r"entry 0 of .* has no caption text"):
        read_coco_captions(listing)
    # The COCO layout asked for, a Karpathy list found (and the other way round): the expected format is named.
    with pytest.raises(DataError, match=r"expected a COCO-format caption file.*found a JSON list"):
        read_coco_captions(listing, layout="coco")
