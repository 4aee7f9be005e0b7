"""`make demo`'s pipeline end to end at a smaller size: data -> save/reload -> features -> probe."""
from internvl import demo


def test_demo_probe_beats_chance(tmp_path, capsys):
    val_acc = demo.main(["--out", str(tmp_path), "--num-classes", "8", "--train-per-class", "24",
                         "--val-per-class", "8", "--image-size", "56"])
    printed = capsys.readouterr().out
    assert "val Acc@1" in printed and "chance 12.5" in printed
    assert (tmp_path / "tiny-internvit" / "config.json").is_file()
    assert (tmp_path / "synthetic-imagenet" / "meta_data" / "train.txt").is_file()
    assert val_acc > 2 * 12.5
