"""segmentation/: the ADE20K layout (reader + synthetic writer), pipelines, few-shot subsets, bad input."""
import numpy as np
import pytest
from PIL import Image

from internvl.errors import DataError, MissingFileError
from segmentation.ade20k import ADE20K_CLASSES, ADE20KDataset, build_dataset, few_shot_subset
from segmentation.config import load_config, to_plain
from segmentation.transforms import LoadAnnotations, LoadImageFromFile, ResizeToMultiple, SETR_Resize, Resize

from segmentation_helpers import KIT, TINY_LINEAR, write_tiny_setup


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_setup(tmp_path_factory.mktemp("ade"), train=12, val=4)[0]


def load_pipeline():
    return [LoadImageFromFile(), LoadAnnotations(reduce_zero_label=True)]


def test_synthetic_ade20k_reads_back_with_the_kit_s_pixels_as_labels(data):
    assert (data / "images/training/ADE_train_00000001.jpg").is_file()
    assert (data / "annotations/validation/ADE_val_00000004.png").is_file()
    dataset = ADE20KDataset(data, "images/training", "annotations/training", load_pipeline(), classes="classes.txt")
    assert len(dataset) == 12 and dataset.classes == ("background", *KIT.classes)
    for index in range(4):
        item = dataset[index]
        coverage, sample = KIT.coverage(index), KIT.sample(index)
        seg = item["seg"]
        assert item["img"].shape == (112, 112, 3) and seg.shape == (112, 112)
        # reduce_zero_label: 1 (background) -> 0, 2 + k (the kit's class k) -> 1 + k, 0 (the rim) -> 255
        assert (seg[coverage == 1] == 1 + sample.label).all() and (seg[coverage == 0] == 0).all()
        assert (seg[(coverage > 0) & (coverage < 1)] == 255).all()
    assert ADE20KDataset(data, "images/training", None, [LoadImageFromFile()]).classes == ADE20K_CLASSES


def test_train_pipeline_is_reproducible_per_sample_and_epoch(data):
    cfg = load_config(TINY_LINEAR, {"data.train.data_root": str(data)})
    dataset = build_dataset(to_plain(cfg.data.train), seed=3, where="data.train")
    a, b, c = dataset[(5, 0)], dataset[(5, 0)], dataset[(5, 1)]
    assert a["img"].shape == (3, 112, 112) and a["seg"].shape == (112, 112)
    assert (a["img"] == b["img"]).all() and (a["seg"] == b["seg"]).all()
    assert not (a["img"] == c["img"]).all()  # another epoch draws another augmentation
    values = set(np.unique(a["seg"].numpy()).tolist())
    assert values <= {0, 1, 2, 3, 4, 255}


def test_resizes_follow_mmcv_and_upstream():
    rng = np.random.default_rng(0)
    results = {"img": np.zeros((100, 130, 3), np.uint8), "scale": (448, 168), "rng": rng}
    # SETR_Resize: short side max(168, crop 112) = 168, long side by the aspect ratio: 130 * 1.68 = 218.4 -> 218
    out = SETR_Resize(keep_ratio=True, crop_size=(112, 112), setr_multi_scale=True)(dict(results))
    assert out["img"].shape[:2] == (168, 218)
    assert ResizeToMultiple(size_divisor=14)(out)["img"].shape[:2] == (168, 224)
    # plain keep-ratio Resize (few-shot test pipeline): min(448 / 130, 168 / 100) = 1.68 as well here
    wide = {"img": np.zeros((100, 500, 3), np.uint8), "rng": rng}
    assert Resize(img_scale=(448, 168))(wide)["img"].shape[:2] == (90, 448)  # long side bound: 448 / 500
    assert SETR_Resize(img_scale=(448, 168), crop_size=(112, 112), setr_multi_scale=True)(
        {"img": np.zeros((100, 500, 3), np.uint8), "rng": rng})["img"].shape[:2] == (168, 840)


def test_few_shot_subsets_are_reproducible_by_seed(data):
    items = list(range(100))
    assert few_shot_subset(items, 10, seed=1) == few_shot_subset(items, 10, seed=1)
    assert few_shot_subset(items, 10, seed=1) != few_shot_subset(items, 10, seed=2)
    assert len(set(few_shot_subset(items, 10, seed=1))) == 10
    a = ADE20KDataset(data, "images/training", "annotations/training", [], max_image_num=5, seed=7)
    b = ADE20KDataset(data, "images/training", "annotations/training", [], max_image_num=5, seed=7)
    assert a.items == b.items and len(a) == 5


def test_bad_dataset_roots_name_the_missing_folder(tmp_path, data):
    with pytest.raises(MissingFileError, match=str(tmp_path / "nowhere")):
        ADE20KDataset(tmp_path / "nowhere", "images/training", "annotations/training", [])
    with pytest.raises(MissingFileError, match=r"data\.train\.ann_dir: .*annotations/train "):
        ADE20KDataset(data, "images/training", "annotations/train", [], where="data.train")


def test_bad_annotations_are_errors_naming_the_file(tmp_path):
    from segmentation.ade20k import write_synthetic_ade20k
    root = write_synthetic_ade20k(tmp_path / "ade", {"training": 3}, KIT)
    dataset = ADE20KDataset(root, "images/training", "annotations/training", load_pipeline(), classes="classes.txt")
    small = root / "annotations/training/ADE_train_00000002.png"
    Image.fromarray(np.ones((50, 60), np.uint8)).save(small)
    with pytest.raises(DataError, match=f"{small}: annotation is 60x50 .* is 112x112"):
        dataset[1]
    bad = root / "annotations/training/ADE_train_00000003.png"
    label = np.ones((112, 112), np.uint8)
    label[0, 0] = 9  # class 9 of a 5-class set (8 after the zero reduction)
    Image.fromarray(label).save(bad)
    with pytest.raises(DataError, match=rf"{bad}: label values \[9\] are outside the 5 classes"):
        dataset[2]
    label[0, 0] = 255  # 255 stays the ignore index
    Image.fromarray(label).save(bad)
    assert dataset[2]["seg"][0, 0] == 255
    (root / "annotations/training/ADE_train_00000001.png").unlink()
    with pytest.raises(MissingFileError, match="annotation not found: .*ADE_train_00000001.png"):
        ADE20KDataset(root, "images/training", "annotations/training", [])
