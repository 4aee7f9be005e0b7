"""Shared by the segmentation tests: a synthetic ADE20K and a tiny InternViT .pth, written once per session."""
from pathlib import Path

from internvl.datakit import SyntheticImages, write_intern_vit_pth
from internvl.datakit.checkpoints import tiny_vision_config
from segmentation.ade20k import write_synthetic_ade20k
from segmentation.config import config_dir

TINY_LINEAR = config_dir() / "tiny" / "linear_intern_vit_tiny_synthetic.py"
TINY_UPERNET = config_dir() / "tiny" / "upernet_intern_vit_tiny_synthetic.py"
KIT = SyntheticImages(num_classes=4, image_size=112)


def write_tiny_setup(root: Path, train: int = 48, val: int = 12) -> tuple[Path, Path]:
    """``(data_root, backbone .pth)`` as the tiny configs expect them, under ``root``."""
    data = write_synthetic_ade20k(root / "ADEChallengeData2016", {"training": train, "validation": val}, KIT)
    pth = write_intern_vit_pth(root / "tiny_intern_vit_6b_recipe.pth", tiny_vision_config("6b", num_hidden_layers=4))
    return data, pth


def tiny_options(data: Path, pth: Path, **extra) -> list[str]:
    """``--cfg-options`` pointing a tiny config at the files of :func:`write_tiny_setup`."""
    options = {"model.backbone.pretrained": pth, "data.train.data_root": data, "data.val.data_root": data,
               "data.test.data_root": data, **extra}
    return ["--cfg-options", *[f"{k}={v}" for k, v in options.items()]]


def remove_log_handlers() -> None:
    """Take down the handlers ``setup_logging`` installed in this process (train.py / test.py run in-process),
    so that later tests see stderr as their own."""
    import logging
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_internvl_runtime", False)]:
        root.removeHandler(handler)
        handler.close()
