"""Tiny InternVL-C/G models and checkpoint directories for the tests (published layout, shrunk)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from helpers import tiny_vit_6b_family

from internvl.internvl_cg import InternVLConfig, InternVLModel
from internvl.transforms import IMAGENET_MEAN, IMAGENET_STD


def tiny_internvl_cg_config(vocab_size: int = 300, **overrides) -> InternVLConfig:
    """InternViT-6B recipe (width 64, 3 layers, 56 px) + QLLaMA (width 64, 4 layers, cross-attention in
    layers 0 and 2, 8 queries), 32-d embeddings. ``overrides`` go to :class:`InternVLConfig`; a
    ``qllama`` dict updates the QLLaMA fields."""
    qllama = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                  num_attention_heads=4, hidden_act="silu", max_position_embeddings=256, rms_norm_eps=1e-6,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    qllama.update(overrides.pop("qllama", {}))
    cfg = dict(vision_config=tiny_vit_6b_family().to_dict(), qllama_config=qllama, clip_embed_dim=32,
               attn_pool_num_heads=4, num_query_token=8, cross_attention_frequency=2)
    cfg.update(overrides)
    return InternVLConfig(**cfg)


def randomized_internvl_cg(config: InternVLConfig, seed: int = 0) -> InternVLModel:
    """A model whose every tensor is random (norms, layer scales, queries, biases too), so no term can
    hide behind an identity initialisation."""
    generator = torch.Generator().manual_seed(seed)
    model = InternVLModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "layernorm.weight", "ls1", "ls2",
                              "norm1_q.weight", "norm1_k.weight", "norm1_v.weight", "q_norm.weight",
                              "k_norm.weight")):
                param.copy_(1 + 0.3 * noise)
            elif name == "logit_scale":
                param.fill_(2.0)
            elif name in ("query_tokens", "qllama.model.embed_tokens.weight"):
                param.copy_(noise)
            else:
                param.copy_(0.08 * noise)
    return model


def write_tiny_internvl_cg(out_dir: str | os.PathLike, seed: int = 0, **config_overrides) -> Path:
    """Write a complete tiny InternVL-C/G checkpoint directory, as OpenGVLab/InternVL-14B-224px is laid out:
    ``config.json``, ``model.safetensors``, ``tokenizer.model`` (a SentencePiece model trained on the
    synthetic captions, :func:`internvl.datakit.train_sentencepiece`), ``tokenizer_config.json`` and
    ``preprocessor_config.json``. The model's vocabulary is the tokenizer's; weights are random (seeded).
    ``config_overrides`` go to :func:`tiny_internvl_cg_config` (e.g. ``force_image_size=70``)."""
    import sentencepiece as spm

    from internvl.datakit import train_sentencepiece

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sp_path = train_sentencepiece(out_dir, vocab_size=400)
    vocab_size = spm.SentencePieceProcessor(model_file=str(sp_path)).get_piece_size()
    config = tiny_internvl_cg_config(vocab_size=vocab_size, **config_overrides)
    randomized_internvl_cg(config, seed).save_pretrained(out_dir)
    write_tokenizer_config(out_dir)
    write_preprocessor_config(out_dir, config.image_size)
    return out_dir


def write_tokenizer_config(out_dir: Path) -> None:
    """``tokenizer_config.json`` with the published LLaMA tokenizer fields."""
    config = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
              "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
              "clean_up_tokenization_spaces": False, "model_max_length": 1000000000000000019884624838656,
              "sp_model_kwargs": {}}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def write_preprocessor_config(out_dir: Path, image_size: int) -> None:
    """``preprocessor_config.json`` as published: CLIPImageProcessor, shorter side to the size, center
    crop, bicubic (resample 3), ImageNet mean/std."""
    config = {"crop_size": image_size, "do_center_crop": True, "do_normalize": True, "do_resize": True,
              "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": list(IMAGENET_MEAN),
              "image_std": list(IMAGENET_STD), "resample": 3, "size": image_size}
    (out_dir / "preprocessor_config.json").write_text(json.dumps(config, indent=2))


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run a module's tests on one intra-op thread: tiny models gain nothing from more, and on a shared
    machine a descheduled OpenMP worker stalls every small op (measured: 200x slower generation)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
