"""`make demo` (classification.demo) end to end at a reduced size: data, backbone, probe, every evaluation."""
import torch

from classification import demo


def test_demo_trains_a_probe_well_above_chance_and_evaluates_every_set(tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread avoids OpenMP stalls on a busy machine
    try:
        results = demo.main(["--out", str(tmp_path), "--num-classes", "8", "--train-per-class", "16",
                             "--val-per-class", "6", "--image-size", "56", "--epochs", "12"])
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert "linear probe on a frozen random tiny InternViT" in printed
    assert set(results) == {"imagenet", "imagenet-real", "imagenetv2", "imagenet_a", "imagenet_r", "imagenet_sketch"}
    assert results["imagenet"]["num_images"] == 48 and results["imagenet_a"]["num_images"] == 24
    assert results["imagenet"]["acc1"] > 2 * 100 / 8  # chance is 12.5%
    assert "real_acc1" in results["imagenet-real"]
    assert (tmp_path / "work_dirs" / "intern_vit_tiny_synthetic" / "ckpt_epoch_11.pth").is_file()
    assert (tmp_path / "synthetic-imagenet" / "meta_data" / "train.txt").is_file()
    assert (tmp_path / "pretrained" / "intern_vit_tiny_56px.pth").is_file()
