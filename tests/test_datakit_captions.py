"""Caption benchmark writers: the upstream files, field names and layouts, references, refusal to overwrite."""
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from internvl.datakit import SyntheticImages
from internvl.data.caption_benchmarks import reference_captions, write_coco_karpathy, write_flickr30k_karpathy, write_nocaps

KIT = SyntheticImages(num_classes=4, image_size=32)


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _check_coco_caption_file(content: dict, ids: list[int], per_image: int) -> None:
    """COCO caption format: every image listed once, ``per_image`` annotations each, unique annotation ids."""
    assert [image["id"] for image in content["images"]] == ids
    annotations = content["annotations"]
    assert all(set(a) == {"image_id", "caption", "id"} for a in annotations)
    assert len({a["id"] for a in annotations}) == len(annotations) == per_image * len(ids)
    for image_id in ids:
        captions = [a["caption"] for a in annotations if a["image_id"] == image_id]
        assert captions == reference_captions(KIT.sample(image_id), per_image)


def test_reference_captions_start_with_the_kit_caption_and_name_its_attributes():
    for index in range(8):
        s = KIT.sample(index)
        refs = reference_captions(s, 10)
        assert refs[0] == s.caption_en and len(set(refs)) == 10
        assert reference_captions(s, 5) == refs[:5]
        for ref in refs:
            assert s.shape in ref and s.colour in ref.lower()
        # Every reference but the terse ones also says where the shape is.
        assert sum(s.position in ref for ref in refs) >= 8
    with pytest.raises(ValueError, match="1..10"):
        reference_captions(KIT.sample(0), 11)


def test_coco_karpathy_layout_matches_blip_and_the_coco_caption_format(tmp_path):
    root = write_coco_karpathy(tmp_path / "coco", 5, KIT, start=7)
    ids = list(range(7, 12))
    assert _files(root) == sorted([f"val2014/COCO_val2014_{i:012d}.jpg" for i in ids]
                                  + ["annotations/coco_karpathy_test.json", "annotations/coco_karpathy_test_gt.json"])
    entries = json.loads((root / "annotations" / "coco_karpathy_test.json").read_text())
    assert isinstance(entries, list) and len(entries) == 5
    for entry, image_id in zip(entries, ids):
        assert set(entry) == {"image", "caption"}
        # Upstream's id rule: the digits after the last '_' of the file name.
        assert int(entry["image"].split("_")[-1].replace(".jpg", "")) == image_id
        assert entry["caption"] == reference_captions(KIT.sample(image_id), 5)
        with Image.open(root / entry["image"]) as image:
            assert image.format == "JPEG" and image.size == (32, 32) and image.mode == "RGB"
    gt = json.loads((root / "annotations" / "coco_karpathy_test_gt.json").read_text())
    assert set(gt) == {"annotations", "images"} and all(set(image) == {"id"} for image in gt["images"])
    _check_coco_caption_file(gt, ids, 5)


def test_flickr30k_karpathy_layout(tmp_path):
    root = write_flickr30k_karpathy(tmp_path / "flickr30k", 4, KIT)
    assert _files(root) == sorted([f"Images/{i:06d}.jpg" for i in range(4)] + ["flickr30k_test_karpathy.json"])
    content = json.loads((root / "flickr30k_test_karpathy.json").read_text())
    assert set(content) == {"images", "annotations"}
    assert content["images"] == [{"file_name": f"Images/{i:06d}.jpg", "id": i} for i in range(4)]
    _check_coco_caption_file(content, list(range(4)), 5)


def test_nocaps_layout_matches_the_published_val_file(tmp_path):
    root = write_nocaps(tmp_path / "nocaps", 6, KIT, start=20)
    ids = list(range(20, 26))
    content = json.loads((root / "nocaps_val_4500_captions.json").read_text())
    assert {"info", "licenses", "images", "annotations"} <= set(content)
    assert _files(root) == sorted([f"images/{image['file_name']}" for image in content["images"]]
                                  + ["nocaps_val_4500_captions.json"])
    for image, image_id in zip(content["images"], ids):
        assert re.fullmatch(r"[0-9a-f]{16}", image["open_images_id"])
        assert image["file_name"] == image["open_images_id"] + ".jpg"
        assert (image["height"], image["width"]) == (32, 32)
        with Image.open(root / "images" / image["file_name"]) as file:
            assert file.size == (32, 32)
    assert {image["domain"] for image in content["images"]} == {"in-domain", "near-domain", "out-domain"}
    _check_coco_caption_file(content, ids, 10)


def test_upstream_reader_pycocotools_loads_the_reference_files(tmp_path):
    """Upstream scores with ``COCO(gt).loadRes(results)``: our files must pass its checks."""
    coco_module = pytest.importorskip("pycocotools.coco")
    write_coco_karpathy(tmp_path / "coco", 3, KIT)
    write_nocaps(tmp_path / "nocaps", 3, KIT)
    for gt in (tmp_path / "coco/annotations/coco_karpathy_test_gt.json",
               tmp_path / "nocaps/nocaps_val_4500_captions.json"):
        coco = coco_module.COCO(str(gt))
        assert sorted(coco.getImgIds()) == [0, 1, 2]
        results = coco.loadRes([{"image_id": i, "caption": "a shape"} for i in range(3)])
        assert len(results.getAnnIds()) == 3 and all(len(coco.imgToAnns[i]) >= 5 for i in range(3))


def test_writers_refuse_to_overwrite_and_are_deterministic(tmp_path):
    for writer in (write_coco_karpathy, write_flickr30k_karpathy, write_nocaps):
        a = writer(tmp_path / "a" / writer.__name__, 2, KIT)
        b = writer(tmp_path / "b" / writer.__name__, 2, SyntheticImages(num_classes=4, image_size=32))
        assert _files(a) == _files(b) and all((a / f).read_bytes() == (b / f).read_bytes() for f in _files(a))
        before = {f: (a / f).read_bytes() for f in _files(a)}
        with pytest.raises(FileExistsError, match="already exists"):
            writer(a, 3, KIT)
        assert {f: (a / f).read_bytes() for f in _files(a)} == before  # nothing touched
        with pytest.raises(ValueError, match="num_images >= 1"):
            writer(tmp_path / "empty" / writer.__name__, 0, KIT)
    # An existing image folder alone (say, a real download) is refused too.
    (tmp_path / "real" / "val2014").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="val2014"):
        write_coco_karpathy(tmp_path / "real", 2, KIT)
    assert not (tmp_path / "real" / "annotations").exists()
