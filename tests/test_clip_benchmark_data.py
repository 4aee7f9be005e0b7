"""clip_benchmark datasets: Flickr30K(-CN), COCO(-CN), XTD and Birdsnap read from hand-written files in the
upstream layouts, their synthetic writers read back, and every bad input named."""
import json

import pytest
import torch
from PIL import Image

from internvl.datakit import SyntheticImages
from internvl.errors import ConfigError, DataError, MissingFileError
from internvl.data.retrieval import write_flickr30k
from internvl_clip_benchmark.datasets import build_dataset
from internvl_clip_benchmark.datasets.birdsnap import write_birdsnap
from internvl_clip_benchmark.datasets.mscoco import write_mscoco_captions
from internvl_clip_benchmark.datasets.xtd import write_xtd
from internvl_clip_benchmark.features import image_view

KIT = SyntheticImages(num_classes=4, image_size=32)


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    KIT.sample(0).image.save(path)


def _build(name, root, language="en", task="zeroshot_retrieval", **kwargs):
    return build_dataset(name, root=str(root), transform=None, split="test", language=language, task=task, **kwargs)


def test_flickr30k_cn_upstream_layout_and_cleaning(tmp_path):
    root = tmp_path / "flickr30k"
    for name in ("1009692167.jpg", "22.jpg"):
        _image(root / "Images" / name)
    (root / "flickr30k_cn_test.txt").write_text(
        "image,caption\n1009692167.jpg,在警车前，一条警犬（德国牧羊犬）坐着。\n22.jpg,A Dog: running!\n"
        "1009692167.jpg,警察站着\n", encoding="utf-8")
    ds = _build("flickr30k", root, "cn")
    assert ds.paths == [str(root / "Images" / "1009692167.jpg"), str(root / "Images" / "22.jpg")]
    assert ds.targets == [["在警车前，一条警犬（德国牧羊犬）坐着。", "警察站着"], ["a dog running"]]
    image, captions = ds[1]
    assert isinstance(image, Image.Image) and captions == ["a dog running"]
    # CLIP Benchmark's own layout keeps the images in the root itself.
    flat = tmp_path / "flat"
    _image(flat / "22.jpg")
    (flat / "flickr30k_test_karpathy.txt").write_text("image,caption\n22.jpg,Two.\n")
    assert _build("flickr30k", flat).paths == [str(flat / "22.jpg")]


def test_coco_en_images_in_val2014_and_coco_cn_relative_to_root(tmp_path):
    root = tmp_path / "mscoco_captions"
    _image(root / "val2014" / "COCO_val2014_000000000007.jpg")
    _image(root / "train2014" / "COCO_train2014_000000573854.jpg")
    (root / "coco_test_karpathy.json").write_text(json.dumps({
        "images": [{"id": 7, "file_name": "COCO_val2014_000000000007.jpg"}],
        "annotations": [{"image_id": 7, "id": 1, "caption": "A cat."}, {"image_id": 7, "id": 2, "caption": "Cat!"}]}))
    (root / "coco-cn_test.json").write_text(json.dumps({
        "images": [{"id": 573854, "file_name": "train2014/COCO_train2014_000000573854.jpg"},
                   {"id": 7, "file_name": "val2014/COCO_val2014_000000000007.jpg"}],
        "annotations": [{"image_id": 573854, "id": 1, "caption": "一只狗。"}, {"image_id": 7, "id": 2, "caption": "猫"}]},
        ensure_ascii=False), encoding="utf-8")
    en = _build("mscoco_captions", root, "en")
    assert en.paths == [str(root / "val2014" / "COCO_val2014_000000000007.jpg")] and en.targets == [["a cat", "cat"]]
    cn = _build("mscoco_captions", root, "cn")
    assert cn.paths == [str(root / "train2014" / "COCO_train2014_000000573854.jpg"),
                        str(root / "val2014" / "COCO_val2014_000000000007.jpg")]
    assert cn.targets == [["一只狗。"], ["猫"]]


def test_xtd_json_and_raw_files(tmp_path):
    root = tmp_path / "mscoco_captions"
    _image(root / "train2014" / "COCO_train2014_000000061844.jpg")
    _image(root / "val2014" / "COCO_val2014_000000000042.jpg")
    absolute = str(root / "val2014" / "COCO_val2014_000000000042.jpg")  # CLIP Benchmark writes absolute paths
    (root / "multilingual_mscoco_captions-jp.json").write_text(json.dumps(
        {"image_paths": ["train2014/COCO_train2014_000000061844.jpg", absolute],
         "annotations": ["赤い円があります。", "猫 (Cat)!"], "indicies": [0, 1]}, ensure_ascii=False), encoding="utf-8")
    jp = _build("multilingual_mscoco_captions", root, "jp")
    assert jp.paths == [str(root / "train2014" / "COCO_train2014_000000061844.jpg"), absolute]
    assert jp.targets == [["赤い円があります。"], ["猫 (Cat)!"]]  # XTD captions are not cleaned
    (root / "test_image_names.txt").write_text("COCO_train2014_000000061844.jpg\nCOCO_val2014_000000000042.jpg\n")
    (root / "test_1kcaptions_fr.txt").write_text("un cercle rouge\nun chat\n", encoding="utf-8")
    fr = _build("multilingual_mscoco_captions", root, "fr")
    assert fr.paths == jp.paths[:1] + [absolute] and fr.targets == [["un cercle rouge"], ["un chat"]]

    (root / "test_1kcaptions_ko.txt").write_text("하나\n")
    with pytest.raises(DataError, match=r"test_image_names\.txt has 2 lines but .*test_1kcaptions_ko\.txt has 1"):
        _build("multilingual_mscoco_captions", root, "ko")
    (root / "test_image_names.txt").write_text("COCO_train2014_000000061844.jpg\ncat.jpg\n")
    with pytest.raises(DataError, match=r"test_image_names\.txt:2: 'cat\.jpg' is not a COCO file name"):
        _build("multilingual_mscoco_captions", root, "fr")
    with pytest.raises(MissingFileError, match=r"multilingual_mscoco_captions-ru\.json, or .*test_1kcaptions_ru\.txt"):
        _build("multilingual_mscoco_captions", root, "ru")
    with pytest.raises(ConfigError, match=r"--language cn is not available for multilingual_mscoco_captions; "
                                          r"it has: en, es, fr, zh, it, ko, ru, jp"):
        _build("multilingual_mscoco_captions", root, "cn")


def test_birdsnap_labels_by_species_folder(tmp_path):
    root = tmp_path / "birdsnap"
    _image(root / "Coopers_Hawk" / "0561.jpg")
    _image(root / "Acadian_Flycatcher" / "0001.jpg")
    (root / "species.txt").write_text("id\tcommon\tscientific\tdir\n1\tAcadian Flycatcher\tEmpidonax virescens\t"
                                      "acadian_flycatcher\n2\tCooper's Hawk\tAccipiter cooperii\tcoopers_hawk\n")
    (root / "test_images_valid.txt").write_text("path\nCoopers_Hawk/0561.jpg\nAcadian_Flycatcher/0001.jpg\n")
    ds = _build("birdsnap", root, task="zeroshot_classification")
    assert ds.targets == [1, 0] and ds.classes == ["Acadian Flycatcher", "Cooper's Hawk"]
    assert ds.templates == ["a photo of a {c}, a type of bird."]
    (root / "test_images_valid.txt").write_text("path\nCoopers_Hawk/0561.jpg\nRed_Kite/0002.jpg\n")
    with pytest.raises(DataError, match=r"test_images_valid\.txt:3: 'Red_Kite/0002\.jpg' is in folder 'red_kite'"):
        _build("birdsnap", root, task="zeroshot_classification")
    with pytest.raises(ConfigError, match="birdsnap's class names are English"):
        _build("birdsnap", root, "cn", task="zeroshot_classification")


def test_synthetic_writers_read_back(tmp_path):
    flickr = write_flickr30k(tmp_path / "flickr30k", 4, languages=("en", "cn"), kit=KIT)
    coco = write_mscoco_captions(tmp_path / "coco", 4, kit=KIT, start=10)
    write_xtd(coco, 3, languages=("en", "zh", "jp"), kit=KIT, start=20)
    write_xtd(tmp_path / "xtd_raw", 3, languages=("ru",), layout="raw", kit=KIT, start=20)
    birds = write_birdsnap(tmp_path / "birdsnap", 8, kit=KIT)
    assert [len(_build("flickr30k", flickr, lang).targets[0]) for lang in ("en", "cn")] == [5, 5]
    cn = _build("mscoco_captions", coco, "cn")
    assert [len(c) for c in cn.targets] == [1, 1, 2, 1]  # 2 captions for every third image, as COCO-CN varies
    assert any("train2014" in p for p in cn.paths) and any("val2014" in p for p in cn.paths)
    assert len(_build("mscoco_captions", coco, "en").paths) == 4
    zh = _build("multilingual_mscoco_captions", coco, "zh")
    assert zh.targets[0] == [KIT.sample(20).caption_zh]
    ru = _build("multilingual_mscoco_captions", tmp_path / "xtd_raw", "ru")
    assert ru.paths == [p.replace(str(coco), str(tmp_path / "xtd_raw")) for p in zh.paths]
    b = _build("birdsnap", birds, task="zeroshot_classification")
    assert b.targets == [KIT.sample(i).label for i in range(8)] and b.classes == [c.replace("_", " ") for c in KIT.classes]
    with pytest.raises(FileExistsError):
        write_xtd(coco, 1, languages=("en",), kit=KIT, start=30)


def test_bad_roots_and_files_are_named(tmp_path):
    with pytest.raises(MissingFileError, match=r"--dataset_root .*nowhere does not exist; flickr30k expects it to "
                                               r"hold Images/<id>\.jpg and flickr30k_<split>_karpathy\.txt.*data/README"):
        _build("flickr30k", tmp_path / "nowhere")
    root = write_flickr30k(tmp_path / "flickr30k", 3, kit=KIT)
    with pytest.raises(MissingFileError, match=r"flickr30k_cn_test\.txt not found: flickr30k --language cn"):
        _build("flickr30k", root, "cn")
    (root / "Images" / "000001.jpg").unlink()
    with pytest.raises(MissingFileError, match=r"1 of 3 images listed in .*flickr30k_test_karpathy\.txt are missing"
                                               r", e\.g\.:\n  .*000001\.jpg \(.*flickr30k_test_karpathy\.txt:7\)"):
        _build("flickr30k", root)
    (root / "Images" / "000001.jpg").write_bytes(b"not a jpeg")
    ds = _build("flickr30k", root)
    with pytest.raises(DataError, match=r"cannot decode image .*000001\.jpg.* \(.*flickr30k_test_karpathy\.txt:7\)"):
        ds[1]
    with pytest.raises(ConfigError, match="flickr30k is a zero-shot retrieval dataset; use --task zeroshot_retrieval"):
        _build("flickr30k", root, task="zeroshot_classification")
    with pytest.raises(ConfigError, match=r"--language xx: CLIP Benchmark has class names in ar, cn, en, it, jp"):
        _build("imagenet1k", root, "xx", task="zeroshot_classification")


def test_torchvision_folders_give_a_reusable_view(tmp_path):
    from internvl_clip_benchmark.datasets.imagenet import write_imagenet_val

    root = write_imagenet_val(tmp_path / "imagenet-1k", 8, kit=KIT)
    ds = build_dataset("imagenet1k", root=str(root), transform=lambda im: torch.zeros(1), split="test",
                       task="zeroshot_classification", custom_classname_file=str(root / "classnames.json"))
    view = image_view(ds)
    # ImageFolder orders by wnid folder; image ILSVRC2012_val_<n> is kit sample n - 1
    assert view.targets == [KIT.sample(int(p[-13:-5]) - 1).label for p in view.paths] == [t for _, t in ds]
    assert view.paths == [p for p, _ in ds.samples] and ds.classes == [c.replace("_", " ") for c in KIT.classes]
