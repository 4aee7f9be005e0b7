"""Tiny configs shared by the tests (published architectures, shrunk)."""
from pathlib import Path

from internvl import InternVisionConfig
from internvl.datakit.checkpoints import tiny_vision_config

FIXTURES = Path(__file__).parent / "fixtures"


def tiny_vit(family: str, **overrides) -> InternVisionConfig:
    return tiny_vision_config(family, **overrides)


def tiny_vit_6b_family(**overrides) -> InternVisionConfig:
    """RMSNorm, qk-normalization, no qkv bias: the InternViT-6B recipe at toy size."""
    return tiny_vit("6b", **overrides)


def tiny_vit_300m_family(**overrides) -> InternVisionConfig:
    """LayerNorm, qkv bias, no qk-normalization: the InternViT-300M-448px recipe at toy size."""
    return tiny_vit("300m", **overrides)


def read_manifest(name: str, prefix: str = "") -> dict:
    """{tensor name: shape tuple} from a checkpoint manifest, keeping names under ``prefix`` (stripped)."""
    shapes = {}
    for line in (FIXTURES / "manifests" / name).read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        tensor, shape = line.split("\t")
        if tensor.startswith(prefix):
            shapes[tensor[len(prefix):]] = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
    return shapes
