"""A damaged checkpoint is named, file by file, whichever model class reads it."""
import pytest
import torch
from helpers import tiny_vit_6b_family

from internvl import InternVisionModel, InternVLChatModel, InternVLModel
from internvl.datakit.checkpoints import write_tiny_internvl_cg, write_tiny_internvl_chat
from internvl.errors import CheckpointError


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def _write(kind, directory):
    if kind == "vit":
        InternVisionModel(tiny_vit_6b_family()).save_pretrained(directory, max_shard_size="100KB")
        return InternVisionModel
    if kind == "cg":
        write_tiny_internvl_cg(directory)
        return InternVLModel
    write_tiny_internvl_chat(directory, "qwen2")
    return InternVLChatModel


@pytest.mark.parametrize("kind", ["vit", "cg", "chat"])
def test_a_truncated_safetensors_file_is_named(tmp_path, kind):
    cls = _write(kind, tmp_path)
    victim = sorted(tmp_path.glob("*.safetensors"))[-1]
    _truncate(victim)
    with pytest.raises(CheckpointError, match=rf"damaged weight files: {victim.name}: not a complete safetensors"):
        cls.from_pretrained(tmp_path)


def test_a_missing_shard_and_a_truncated_bin_are_named(tmp_path):
    InternVisionModel(tiny_vit_6b_family()).save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    shards = sorted((tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 1
    shards[0].unlink()
    with pytest.raises(CheckpointError, match=rf"{shards[0].name}: missing \(the shard index names it\)"):
        InternVisionModel.from_pretrained(tmp_path / "sharded")
    model = InternVisionModel(tiny_vit_6b_family())
    model.config.save_pretrained(tmp_path / "bin")
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    _truncate(tmp_path / "bin" / "pytorch_model.bin", keep=0.9)
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin: not a complete PyTorch checkpoint"):
        InternVisionModel.from_pretrained(tmp_path / "bin")
