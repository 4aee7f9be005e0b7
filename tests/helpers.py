"""Tiny configs shared by the tests (published architectures, shrunk)."""
from pathlib import Path

from internvl import InternVisionConfig

FIXTURES = Path(__file__).parent / "fixtures"


# What distinguishes the two published families; everything else is shrunk alike.
_FAMILY_FIELDS = {
    "6b": dict(qkv_bias=False, qk_normalization=True, norm_type="rms_norm"),       # InternViT-6B
    "300m": dict(qkv_bias=True, qk_normalization=False, norm_type="layer_norm"),   # InternViT-300M-448px
}


def tiny_vit(family: str, **overrides) -> InternVisionConfig:
    cfg = dict(hidden_size=64, num_attention_heads=4, intermediate_size=256, num_hidden_layers=3,
               image_size=56, patch_size=14, initializer_factor=0.5, **_FAMILY_FIELDS[family])
    cfg.update(overrides)
    return InternVisionConfig(**cfg)


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
