"""classification.dataset: every layout's reader against its synthetic writer, the dataset table, labels, samplers,
bad input."""
import json
import re

import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder

from classification.config import load_config
from classification.dataset import (BadImageError, ImageDataset, TrainBatchSampler, UnreadableImages, build_eval_set,
                                    build_train_set, build_transform, eval_batches, load_real_labels, read_image_list,
                                    write_class_subset, write_image_folder, write_imagenet_lists, write_imagenet_real,
                                    write_imagenet_sketch, write_imagenetv2)
from internvl.datakit import SyntheticImages
from internvl.errors import ConfigError, DataError, MissingFileError

KIT = SyntheticImages(num_classes=8, image_size=28, seed=3)


def config(data_path, dataset="imagenet", classes=None, **opts):
    items = ["DATA.DATA_PATH", str(data_path), "DATA.DATASET", dataset, "MODEL.NUM_CLASSES", "8",
             "DATA.IMG_SIZE", "28", "MODEL.INTERN_VIT_6B.PATCH_SIZE", "14"]
    if classes:
        items += ["DATA.CLASS_NAMES", str(classes)]
    for key, value in opts.items():
        items += [key.replace("__", "."), str(value)]
    return load_config("classification/configs/intern_vit_6b_1k_224.yaml", items, eval=dataset != "imagenet")


def test_write_image_folder_layout_reads_back_with_torchvision(tmp_path):
    kit = SyntheticImages(num_classes=4, image_size=16)
    root = write_image_folder(tmp_path / "synth", {"train": 12, "val": 8}, kit)
    assert (root / "classes.txt").read_text().splitlines() == kit.classes
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    expected = sorted([f"train/{kit.classes[i % 4]}/{i:06d}.png" for i in range(12)]
                      + [f"val/{kit.classes[i % 4]}/{i:06d}.png" for i in range(12, 20)])
    assert files == expected
    for split in ("train", "val"):
        folder = ImageFolder(root / split)
        assert folder.class_to_idx == {name: label for label, name in enumerate(kit.classes)}
        for path, target in folder.samples:
            index = int(path.rsplit("/", 1)[1].split(".")[0])
            assert target == kit.sample(index).label
    # PNG is lossless: the file holds exactly the sample's pixels.
    assert Image.open(root / expected[0]).tobytes() == kit.sample(int(expected[0][-10:-4])).image.tobytes()
    with pytest.raises(FileExistsError):
        write_image_folder(root, {"train": 4}, kit)
    with pytest.raises(ValueError, match="fewer than"):
        write_image_folder(tmp_path / "small", {"train": 3}, kit)


def test_write_imagenet_lists_matches_upstream_convention(tmp_path):
    kit = SyntheticImages(num_classes=4, image_size=16)
    root = write_imagenet_lists(tmp_path / "imagenet", {"train": 10, "val": 6}, kit)
    assert (root / "classes.txt").read_text().splitlines() == kit.classes
    seen = {}
    for split, n in (("train", 10), ("val", 6)):
        lines = (root / "meta_data" / f"{split}.txt").read_text().splitlines()
        assert len(lines) == n
        listed = set()
        for line in lines:
            path, label = line.split(" ")  # upstream splits on one space into exactly two fields
            class_dir, name = path.split("/")
            assert re.fullmatch(r"\d{6}\.JPEG", name) and kit.classes[int(label)] == class_dir
            assert int(label) == kit.sample(int(name[:6])).label
            with Image.open(root / split / path) as image:
                assert image.format == "JPEG" and image.size == (16, 16)
            listed.add(path)
        on_disk = {p.relative_to(root / split).as_posix() for p in (root / split).rglob("*") if p.is_file()}
        assert on_disk == listed
        seen[split] = {int(p.split("/")[1][:6]) for p in listed}
    assert seen == {"train": set(range(10)), "val": set(range(10, 16))}  # disjoint, consecutive blocks
    assert sorted(p.name for p in (root / "meta_data").iterdir()) == ["train.txt", "val.txt"]


def test_writers_are_deterministic(tmp_path):
    kit = SyntheticImages(num_classes=4, image_size=16)
    a = write_imagenet_lists(tmp_path / "a", {"train": 4}, kit)
    b = write_imagenet_lists(tmp_path / "b", {"train": 4}, SyntheticImages(num_classes=4, image_size=16))
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_imagenet_lists_read_back_with_their_labels(tmp_path):
    root = write_imagenet_lists(tmp_path / "in1k", {"train": 16, "val": 8}, KIT)
    train = build_train_set(config(root))
    val = build_eval_set(config(root)).dataset
    assert len(train) == 16 and len(val) == 8
    assert [label for _, label in val.samples] == [KIT.sample(16 + i).label for i in range(8)]
    item = val[3]
    assert item.error is None and item.image.shape == (3, 28, 28) and item.label == KIT.sample(19).label


def test_plain_image_folders_are_accepted_with_the_train_folders_as_class_order(tmp_path):
    root = write_imagenet_lists(tmp_path / "in1k", {"train": 16, "val": 8}, KIT)
    (root / "meta_data" / "val.txt").unlink()
    val = build_eval_set(config(root)).dataset
    assert sorted(label for _, label in val.samples) == sorted(KIT.sample(16 + i).label for i in range(8))


def test_list_errors_name_the_file_and_line(tmp_path):
    root = write_imagenet_lists(tmp_path / "in1k", {"train": 8, "val": 8}, KIT)
    lines = (root / "meta_data" / "train.txt").read_text().splitlines()
    (root / "meta_data" / "train.txt").write_text("\n".join(lines[:2] + ["no_label_here.JPEG"] + lines[3:]))
    with pytest.raises(DataError, match=r"meta_data/train.txt:3: expected 'relative/path label'"):
        build_train_set(config(root))
    (root / "meta_data" / "train.txt").write_text("\n".join(lines[:4] + ["red_circle/x.JPEG 8"]))
    with pytest.raises(DataError, match=r"train.txt:5: label 8 is outside 0..7 \(MODEL.NUM_CLASSES=8\)"):
        build_train_set(config(root))
    with pytest.raises(MissingFileError, match="list file not found: .*nothing.txt"):
        read_image_list(root / "nothing.txt", root, 8)
    with pytest.raises(MissingFileError, match="DATA.DATA_PATH=.*missing.* is not a folder"):
        build_train_set(config(tmp_path / "missing"))
    (root / "meta_data" / "train.txt").unlink()
    import shutil
    shutil.rmtree(root / "train")
    with pytest.raises(MissingFileError, match="neither a list file meta_data/train.txt nor class folders under train/"):
        build_train_set(config(root))


def test_unreadable_images_are_named_and_skipped_only_up_to_the_limit(tmp_path):
    root = write_imagenet_lists(tmp_path / "in1k", {"train": 8, "val": 8}, KIT)
    dataset = build_train_set(config(root))
    broken, _ = dataset.samples[2]
    with open(broken, "wb") as f:
        f.write(b"not a jpeg")
    item = dataset[2]
    assert item.image is None and item.error[0] == broken and broken in item.error[1]
    missing = dataset.samples[5][0]
    (tmp_path / "gone").mkdir()
    __import__("os").replace(missing, tmp_path / "gone" / "x.JPEG")
    assert "image not found" in dataset[5].error[1] and missing in dataset[5].error[1]

    strict = UnreadableImages(limit=0)
    with pytest.raises(BadImageError, match=f"{broken}.*1 unreadable images exceed DATA.MAX_BAD_IMAGES=0"):
        strict.add([item.error])
    lenient = UnreadableImages(limit=2)
    lenient.add([item.error, item.error, dataset[5].error])  # a file met twice counts once
    assert len(lenient) == 2
    with pytest.raises(BadImageError, match="3 unreadable images exceed DATA.MAX_BAD_IMAGES=2"):
        lenient.add([("other.JPEG", "cannot decode image other.JPEG")])


def test_real_labels_follow_the_official_val_names(tmp_path):
    root = write_imagenet_real(tmp_path / "real", 40, KIT, start=100)
    real = json.loads((root / "real.json").read_text())
    assert len(real) == 40 and (root / "val" / "ILSVRC2012_val_00000001.JPEG").is_file()
    kinds = {"empty": 0, "same": 0, "multi": 0, "relabel": 0}
    for i, labels in enumerate(real):
        true = KIT.sample(100 + i).label
        kinds["empty" if not labels else "same" if labels == [true] else "multi" if true in labels else "relabel"] += 1
    assert all(kinds.values()), kinds  # every case of the ReaL metric occurs
    eval_set = build_eval_set(config(root, "imagenet-real"))
    names = [p.rsplit("/", 1)[1] for p in eval_set.dataset.filenames()]
    assert eval_set.real_labels == [real[int(n[15:23]) - 1] for n in names]
    with pytest.raises(DataError, match="no ReaL labels for this file"):
        load_real_labels(root, ["val/some_other_name.JPEG"])
    (root / "real.json").unlink()
    with pytest.raises(MissingFileError, match="ReaL labels not found.*real.json.*reassessed-imagenet"):
        build_eval_set(config(root, "imagenet-real"))


def test_imagenetv2_labels_come_from_the_folder_names(tmp_path):
    root = write_imagenetv2(tmp_path / "v2", 24, KIT, start=50)
    eval_set = build_eval_set(config(root, "imagenetv2"))
    assert sorted(label for _, label in eval_set.dataset.samples) == sorted(KIT.sample(50 + i).label for i in range(24))
    assert all(f"/{label}/" in path for path, label in eval_set.dataset.samples)
    (root / "ImageNetV2-matched-frequency" / "extra").mkdir()
    with pytest.raises(DataError, match="extra: ImageNetV2 class folders are named by label"):
        build_eval_set(config(root, "imagenetv2"))


def test_a_and_r_subsets_keep_full_labels_and_derive_the_classes_present(tmp_path):
    subset = [KIT.classes[i] for i in (1, 4, 6)]
    root = write_class_subset(tmp_path / "a", 12, subset, KIT, start=70, style="rendition")
    assert {p.name for p in root.iterdir() if p.is_dir()} == set(subset)
    eval_set = build_eval_set(config(root, "imagenet_a", classes=root / "classes.txt"))
    assert eval_set.class_subset == [1, 4, 6]
    assert {label for _, label in eval_set.dataset.samples} == {1, 4, 6}
    with pytest.raises(DataError, match="set DATA.CLASS_NAMES"):  # 8 classes are not ImageNet-1K's 1000
        build_eval_set(config(root, "imagenet_r"))
    (root / "unknown_class").mkdir()
    with pytest.raises(DataError, match="class 'unknown_class' is not in the class list"):
        build_eval_set(config(root, "imagenet_r", classes=root / "classes.txt"))


def test_wnid_folders_take_their_labels_from_the_1000_imagenet_synsets(tmp_path):
    """MODEL.NUM_CLASSES 1000 without a class list: a folder's label is its wnid's place among the synsets."""
    from pathlib import Path

    from classification.dataset.class_folders import imagenet_synsets
    wnids = imagenet_synsets()
    assert len(wnids) == 1000 and wnids[:2] == ["n01440764", "n01443537"] and wnids == sorted(wnids)
    chosen = [1, 100, 207, 333, 500, 640, 800, 999]  # the ImageNet-1K label of each of the kit's 8 classes
    root = write_class_subset(tmp_path / "a", 12, KIT.classes[::2], KIT, start=70,
                              folder_names=[wnids[i] for i in chosen])
    eval_set = build_eval_set(config(root, "imagenet_a", MODEL__NUM_CLASSES=1000))
    assert eval_set.class_subset == [1, 207, 500, 800]
    assert [label for _, label in eval_set.dataset.samples] == [
        chosen[KIT.sample(int(Path(path).stem)).label] for path, _ in eval_set.dataset.samples]


def test_sketch_covers_every_class_in_grey(tmp_path):
    root = write_imagenet_sketch(tmp_path / "sketch", 16, KIT, start=90)
    eval_set = build_eval_set(config(root, "imagenet_sketch", classes=root / "classes.txt"))
    assert {label for _, label in eval_set.dataset.samples} == set(range(8)) and eval_set.class_subset is None
    from PIL import Image
    with Image.open(eval_set.dataset.samples[0][0]) as image:
        r, _, b = image.convert("RGB").split()
        assert max(abs(a - c) for a, c in zip(r.getdata(), b.getdata())) <= 12  # grey up to JPEG noise


def test_variant_writers_never_overwrite(tmp_path):
    write_imagenetv2(tmp_path / "v2", 8, KIT)
    with pytest.raises(FileExistsError):
        write_imagenetv2(tmp_path / "v2", 8, KIT)
    write_imagenet_sketch(tmp_path / "s", 8, KIT)
    with pytest.raises(FileExistsError):
        write_class_subset(tmp_path / "s", 8, KIT.classes[:2], KIT)


def test_train_batches_shard_the_shuffle_and_resume_mid_epoch():
    n, batch, world = 23, 4, 2
    samplers = [TrainBatchSampler(n, batch, world, rank, seed=5) for rank in range(world)]
    for s in samplers:
        s.set_epoch(1)
    epochs = [[key for b in s for key in b] for s in samplers]
    per_rank = [[i for i, _ in keys] for keys in epochs]
    assert all(len(x) == samplers[0].batches_per_epoch * batch == 12 for x in per_rank)  # of 12: no partial batch
    assert all(key == (5, 1) for keys in epochs for _, key in keys)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(5 + 1)).tolist()
    padded = order + order[:1]  # 24 = 2 x 12: the shuffle's first index is repeated, as DistributedSampler does
    assert per_rank == [padded[0::2][:12], padded[1::2][:12]]
    assert set(per_rank[0]) & set(per_rank[1]) <= {order[0]}
    samplers[0].set_epoch(1, start_batch=2)
    assert [i for b in samplers[0] for i, _ in b] == per_rank[0][8:] and len(samplers[0]) == 1
    samplers[0].set_epoch(2)
    assert [i for b in samplers[0] for i, _ in b] != per_rank[0]
    with pytest.raises(ConfigError, match="lower DATA.BATCH_SIZE"):
        TrainBatchSampler(5, 4, 2, 0)


def test_eval_batches_score_every_sample_once():
    shards = [eval_batches(11, 3, 3, rank) for rank in range(3)]
    flat = sorted(i for shard in shards for b in shard for i in b)
    assert flat == list(range(11))
    assert [i for b in eval_batches(11, 3, 3, 1, sequential=True) for i in b] == list(range(11))


def test_seeded_augmentation_is_a_function_of_seed_epoch_and_index(tmp_path):
    root = write_imagenet_lists(tmp_path / "in1k", {"train": 8, "val": 8}, KIT)
    cfg = config(root, DATA__TRANSFORM="build_transform_for_linear_probe")
    dataset = ImageDataset(build_train_set(cfg).samples, build_transform(True, cfg))
    first = dataset[(4, (0, 1))].image
    torch.manual_seed(123)  # the global generator does not matter
    _ = dataset[(2, (0, 1))]
    assert torch.equal(dataset[(4, (0, 1))].image, first)
    assert not torch.equal(dataset[(4, (0, 2))].image, first)  # another epoch, another crop
    state = torch.get_rng_state()
    dataset[(4, (0, 1))]
    assert torch.equal(torch.get_rng_state(), state)  # and it leaves the global generator alone
