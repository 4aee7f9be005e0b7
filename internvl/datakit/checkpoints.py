"""Tiny checkpoint directories in the published layouts, with random weights.

Nothing in this repository may download weights, yet every pipeline reads a checkpoint directory. These
writers produce what an OpenGVLab directory holds, at toy size: ``config.json`` with the nested configs,
safetensors weights, the tokenizer files (a SentencePiece model trained on the synthetic captions, with the
special tokens at the ids the published tokenizers use) and, for InternVL-C/G, ``preprocessor_config.json``.
Tests, benchmarks and the README try-outs use them; from a shell::

    python -m internvl.datakit.checkpoints internvl-cg   tiny-internvl-cg
    python -m internvl.datakit.checkpoints internvl-chat tiny-internvl-chat --llm qwen2

The weights are random, not trained: outputs are noise, but every code path runs as on a real model.
All weights are random (norm weights and layer scales around 1), so no term of a forward can hide behind
an identity initialisation in a parity test.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .tokenizer import train_sentencepiece

__all__ = ["CHAT_SPECIAL_TOKENS", "CHAT_VOCAB_SIZE", "CHAT_LLMS", "tiny_vision_config", "randomize_weights", "tiny_internvl_cg_config",
           "write_tiny_internvl_cg", "write_tiny_internvl_c_pth", "tiny_chat_config", "write_chat_tokenizer",
           "write_tiny_internvl_chat", "write_intern_vit_pth"]

# The added tokens of OpenGVLab/InternVL2-2B's tokenizer, in the order of their ids (92538 ... 92552).
CHAT_SPECIAL_TOKENS = ["<|plugin|>", "<|interpreter|>", "<|action_end|>", "<|action_start|>", "<|im_end|>",
                       "<|im_start|>", "<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>",
                       "<box>", "</box>"]

# What distinguishes the two published InternViT families; everything else is shrunk alike.
_VIT_FAMILY_FIELDS = {
    "6b": dict(qkv_bias=False, qk_normalization=True, norm_type="rms_norm"),       # InternViT-6B
    "300m": dict(qkv_bias=True, qk_normalization=False, norm_type="layer_norm"),   # InternViT-300M-448px
}

# The language models of the InternVL2 family, shrunk: the published switches (rope, norms, pad id) kept.
_CHAT_LLM_FIELDS = {
    "internlm2": dict(architectures=["InternLM2ForCausalLM"], model_type="internlm2", bias=False,
                      rope_theta=1000000, rope_scaling={"type": "dynamic", "factor": 2.0}, pad_token_id=2,
                      rms_norm_eps=1e-5),
    "qwen2": dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", rope_theta=1000000.0, rms_norm_eps=1e-6),
    "llama": dict(architectures=["LlamaForCausalLM"], model_type="llama", rope_theta=500000.0, rms_norm_eps=1e-5),
    "phi3": dict(architectures=["Phi3ForCausalLM"], model_type="phi3", pad_token_id=0, rms_norm_eps=1e-5),
}
CHAT_LLMS = tuple(_CHAT_LLM_FIELDS)
_CHAT_TEMPLATES = {"internlm2": "internlm2-chat", "qwen2": "Hermes-2", "llama": "internvl2_5", "phi3": "phi3-chat"}
# Phi-3's own chat tokens (its template's role markers and separator), added after the image tokens, and
# its pad token <|endoftext|>, as Phi-3-mini's tokenizer has them.
_PHI3_CHAT_TOKENS = ["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"]


def tiny_vision_config(family: str = "6b", **overrides):
    """A 3-layer, 64-wide InternViT of the ``"6b"`` or ``"300m"`` family at 56 px (4x4 patches of 14)."""
    from ..models.intern_vit import InternVisionConfig

    if family not in _VIT_FAMILY_FIELDS:
        raise ValueError(f"unknown InternViT family {family!r}: use one of {sorted(_VIT_FAMILY_FIELDS)}")
    fields = dict(hidden_size=64, num_attention_heads=4, intermediate_size=256, num_hidden_layers=3,
                  image_size=56, patch_size=14, initializer_factor=0.5, **_VIT_FAMILY_FIELDS[family])
    fields.update(overrides)
    return InternVisionConfig(**fields)


def randomize_weights(model: nn.Module, seed: int = 0, std: float = 0.08, embedding_std: float = 0.08,
                      fill: Optional[dict] = None) -> nn.Module:
    """Overwrite every parameter with seeded noise: norm weights and layer scales ``1 + 0.3 n``, embeddings
    (and ``query_tokens``) ``embedding_std * n``, everything else ``std * n``; ``fill`` sets named
    parameters to a constant (e.g. ``{"logit_scale": 2.0}``). Returns the model in eval mode."""
    # Norm layers by class name: ours, torch's LayerNorm and transformers' LlamaRMSNorm, Qwen2RMSNorm, ...
    around_one = {f"{name}.weight" for name, module in model.named_modules()
                  if "norm" in type(module).__name__.lower()}
    embeddings = {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, nn.Embedding)}
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            if fill and name in fill:
                param.fill_(fill[name])
            elif name in around_one or name.endswith(("ls1", "ls2")):
                param.copy_(1 + 0.3 * noise)
            elif name in embeddings or name == "query_tokens":
                param.copy_(embedding_std * noise)
            else:
                param.copy_(std * noise)
    return model.eval()


def write_intern_vit_pth(path: str | os.PathLike, config=None, seed: int = 0) -> Path:
    """Save a randomly initialised InternViT (``config``: an ``InternVisionConfig``, default
    :func:`tiny_vision_config` ``("6b")``) as the classification ``.pth`` of ``intern_vit_6b_224px.pth``:
    a flat state dict under the timm-style names (``pos_embed``, ``blocks.0.attn.qkv.weight`` ...) that
    classification and segmentation load as their backbone. The global RNG is left as it was."""
    from ..models.intern_vit import InternVisionModel, rename_timm_hf

    config = config or tiny_vision_config("6b")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = InternVisionModel(config)
    finally:
        torch.random.set_rng_state(generator_state)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({rename_timm_hf(k, to_hf=False): v for k, v in model.state_dict().items()}, path)
    return path


@functools.lru_cache(maxsize=None)
def _sentencepiece_bytes(vocab_size: int) -> bytes:
    """A LLaMA / InternLM2-style tokenizer.model, trained once per process and size."""
    with tempfile.TemporaryDirectory() as tmp:
        return train_sentencepiece(tmp, vocab_size=vocab_size).read_bytes()


def _write_sentencepiece(out_dir: Path, vocab_size: int, dummy_prefix: bool = True) -> int:
    """Write ``tokenizer.model``; return its number of pieces. ``dummy_prefix=False`` switches off
    SentencePiece's leading space on every encoded text, as InternLM2's tokenizer.model has it."""
    import sentencepiece as spm

    data = _sentencepiece_bytes(vocab_size)
    if not dummy_prefix:
        from sentencepiece import sentencepiece_model_pb2

        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(data)
        proto.normalizer_spec.add_dummy_prefix = False
        data = proto.SerializeToString()
    (out_dir / "tokenizer.model").write_bytes(data)
    return spm.SentencePieceProcessor(model_proto=data).get_piece_size()


# ---------------------------------------------------------------------------------------------- InternVL-C/G

def tiny_internvl_cg_config(vocab_size: int = 300, **overrides):
    """InternViT-6B recipe (width 64, 3 layers, 56 px) + QLLaMA (width 64, 4 layers, cross-attention in
    layers 0 and 2, 8 queries), 32-d embeddings. ``overrides`` go to ``InternVLConfig``; a ``qllama``
    dict updates the QLLaMA fields."""
    from ..models.internvl_cg import InternVLConfig

    qllama = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                  num_attention_heads=4, hidden_act="silu", max_position_embeddings=256, rms_norm_eps=1e-6,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    qllama.update(overrides.pop("qllama", {}))
    fields = dict(vision_config=tiny_vision_config("6b").to_dict(), qllama_config=qllama, clip_embed_dim=32,
                  attn_pool_num_heads=4, num_query_token=8, cross_attention_frequency=2)
    fields.update(overrides)
    return InternVLConfig(**fields)


def write_tiny_internvl_cg(out_dir: str | os.PathLike, seed: int = 0, tokenizer_vocab: int = 400,
                           **config_overrides) -> Path:
    """Write a tiny InternVL-C/G directory laid out as OpenGVLab/InternVL-14B-224px: ``config.json``,
    ``model.safetensors``, ``tokenizer.model``, ``tokenizer_config.json`` (LlamaTokenizer) and
    ``preprocessor_config.json``. The model's vocabulary is the tokenizer's (``tokenizer_vocab`` pieces: 1000
    merges English words, about 3x fewer tokens per caption than 400, for models that train). ``config_overrides``
    go to :func:`tiny_internvl_cg_config` (e.g. ``force_image_size=70``)."""
    from ..models.internvl_cg import InternVLModel
    from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_size = _write_sentencepiece(out_dir, tokenizer_vocab)
    config = tiny_internvl_cg_config(vocab_size=vocab_size, **config_overrides)
    model = randomize_weights(InternVLModel(config), seed, embedding_std=1.0, fill={"logit_scale": 2.0})
    model.save_pretrained(out_dir)
    _write_json(out_dir / "tokenizer_config.json", {
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
        "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None, "clean_up_tokenization_spaces": False,
        "model_max_length": 1000000000000000019884624838656, "sp_model_kwargs": {}})
    # As published: CLIPImageProcessor, shorter side to the size, center crop, bicubic, ImageNet mean/std.
    _write_json(out_dir / "preprocessor_config.json", {
        "crop_size": config.image_size, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": list(IMAGENET_MEAN),
        "image_std": list(IMAGENET_STD), "resample": 3, "size": config.image_size})
    return out_dir


def write_tiny_internvl_c_pth(path: str | os.PathLike, model=None, seed: int = 0, **config_overrides) -> Path:
    """Write an InternVL-C checkpoint laid out as the original ``internvl_c_13b_224px.pth``: one state dict
    under its names (timm ``vision_model`` blocks, ``transformer.*``, ``text_projection``, ``logit_scale``,
    ``clip_projector.*``), nothing else -- no config, no tokenizer.

    ``model``: an :class:`InternVLModel` whose InternVL-C part (InternViT, the text decoder without its
    cross-attention, ``text_projection``, ``logit_scale``, ``clip_projector``) is written, so a tiny
    C/G directory and this file hold the same InternVL-C weights. Without it a random tiny model of
    :func:`tiny_internvl_cg_config` (``num_query_token=0``, ``config_overrides`` applied) is written.
    """
    import torch

    from ..models.internvl_cg import InternVLConfig, InternVLModel, rename_internvl_c_pth

    if model is None:
        config = tiny_internvl_cg_config(**{**config_overrides, "num_query_token": 0})
        model = randomize_weights(InternVLModel(config), seed, embedding_std=1.0, fill={"logit_scale": 2.0})
    elif config_overrides:
        raise ValueError("config_overrides apply to a new random model only, not to a given model")
    c = model.config
    c_only = InternVLConfig(vision_config=c.vision_config.to_dict(), qllama_config=c.qllama_config.to_dict(),
                            clip_embed_dim=c.clip_embed_dim, attn_pool_num_heads=c.attn_pool_num_heads,
                            num_query_token=0, cross_attention_frequency=c.cross_attention_frequency,
                            force_image_size=c.force_image_size)
    with torch.device("meta"):
        keep = set(InternVLModel(c_only).state_dict())
    weights = model.state_dict()
    if keep - set(weights):
        raise ValueError(f"the model lacks InternVL-C tensors {sorted(keep - set(weights))[:3]} (LoRA-wrapped? merge "
                         "the adapters first)")
    state = {rename_internvl_c_pth(k, to_hf=False): weights[k].detach().clone() for k in keep}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


# -------------------------------------------------------------------------------------------- InternVL-Chat

_CHAT_SPM_VOCAB = 1000
CHAT_VOCAB_SIZE = _CHAT_SPM_VOCAB + len(CHAT_SPECIAL_TOKENS)


def tiny_chat_config(llm: str = "internlm2", template: Optional[str] = None, llm_overrides: Optional[dict] = None,
                     **overrides):
    """InternViT-300M family (56 px tiles, 4x4 patches -> 4 image tokens) + a 2-layer ``llm`` with GQA
    (``internlm2``, ``qwen2``, ``llama`` or ``phi3``), with the vocabulary of :func:`write_chat_tokenizer`."""
    from ..models.chat_model import InternVLChatConfig

    if llm not in _CHAT_LLM_FIELDS:
        raise ValueError(f"unknown language model {llm!r}: use one of {', '.join(CHAT_LLMS)}")
    vocab_size = CHAT_VOCAB_SIZE + (len(_PHI3_CHAT_TOKENS) if llm == "phi3" else 0)
    llm_config = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=1, eos_token_id=2, **_CHAT_LLM_FIELDS[llm])
    llm_config.update(llm_overrides or {})
    fields = dict(vision_config=tiny_vision_config("300m").to_dict(), llm_config=llm_config,
                  template=template or _CHAT_TEMPLATES[llm], force_image_size=56, downsample_ratio=0.5,
                  ps_version="v2", select_layer=-1, dynamic_image_size=True, use_thumbnail=True,
                  min_dynamic_patch=1, max_dynamic_patch=6)
    fields.update(overrides)
    return InternVLChatConfig(**fields)


def write_chat_tokenizer(out_dir: str | os.PathLike, llm: str = "internlm2"):
    """Write the tokenizer files of a tiny ``llm`` chat checkpoint; return the tokenizer as
    :func:`internvl.models.tokenization.load_tokenizer` reads it back.

    InternLM2 gets the published ``tokenizer_config.json`` layout (``InternLM2Tokenizer``, the special
    tokens at fixed ids right after the SentencePiece vocabulary); the other language models get
    transformers' LLaMA tokenizer over the same model with the same special tokens added. As the published
    tokenizers: InternLM2's encodes text without SentencePiece's leading space; Qwen2's adds no ``<s>``; Phi-3's also has ``<|system|>``, ``<|user|>``, ``<|assistant|>``,
    ``<|end|>`` and pads with ``<|endoftext|>``."""
    from ..models.tokenization import load_tokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pieces = _write_sentencepiece(out_dir, _CHAT_SPM_VOCAB, dummy_prefix=llm != "internlm2")
    if llm == "internlm2":
        entry = dict(lstrip=False, normalized=False, rstrip=False, single_word=False, special=True)
        decoder = {str(i): dict(content=tok, **entry) for i, tok in enumerate(["<unk>", "<s>", "</s>"])}
        decoder.update({str(pieces + i): dict(content=tok, **entry) for i, tok in enumerate(CHAT_SPECIAL_TOKENS)})
        _write_json(out_dir / "tokenizer_config.json", {
            "added_tokens_decoder": decoder, "additional_special_tokens": CHAT_SPECIAL_TOKENS,
            "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]},
            "bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>",
            "clean_up_tokenization_spaces": False, "model_max_length": 8192, "tokenizer_class": "InternLM2Tokenizer"})
    else:
        from transformers import LlamaTokenizer

        # Through from_pretrained, which builds the tokenizer from tokenizer.model in transformers 4 (slow
        # class) and 5 (converted to a tokenizers one) alike.
        _write_json(out_dir / "tokenizer_config.json", {"tokenizer_class": "LlamaTokenizer", "legacy": False,
                                                            "add_bos_token": llm != "qwen2"})
        tokenizer = LlamaTokenizer.from_pretrained(str(out_dir), legacy=False)
        tokenizer.add_special_tokens({"additional_special_tokens": CHAT_SPECIAL_TOKENS})
        tokenizer.pad_token = tokenizer.unk_token
        if llm == "phi3":
            tokenizer.add_tokens(_PHI3_CHAT_TOKENS, special_tokens=True)
            tokenizer.pad_token = "<|endoftext|>"
        tokenizer.save_pretrained(out_dir)
        if llm == "phi3":  # Phi-3-mini's files list its chat tokens as added tokens only, not as additional specials
            for name in ("tokenizer_config.json", "special_tokens_map.json"):
                if not (out_dir / name).is_file():
                    continue
                config = json.loads((out_dir / name).read_text())
                for key in ("additional_special_tokens", "extra_special_tokens"):  # transformers 4 / 5 name
                    if isinstance(config.get(key), list):
                        config[key] = [t for t in config[key]
                                       if (t if isinstance(t, str) else t["content"]) not in _PHI3_CHAT_TOKENS]
                _write_json(out_dir / name, config)
    tokenizer = load_tokenizer(out_dir)
    expected = pieces + len(CHAT_SPECIAL_TOKENS) + (len(_PHI3_CHAT_TOKENS) if llm == "phi3" else 0)
    if len(tokenizer) != expected:
        raise RuntimeError(f"tokenizer written to {out_dir} has {len(tokenizer)} tokens, expected {expected}")
    return tokenizer


def write_tiny_internvl_chat(out_dir: str | os.PathLike, llm: str = "internlm2", seed: int = 0, **config_overrides):
    """Write a tiny InternVL2-style directory (config.json, model.safetensors, tokenizer files with the
    image special tokens); return ``(model, tokenizer)``. ``config_overrides`` go to :func:`tiny_chat_config`."""
    from ..models.chat_model import InternVLChatModel

    model = randomize_weights(InternVLChatModel(tiny_chat_config(llm, **config_overrides)), seed)
    model.save_pretrained(out_dir)
    return model, write_chat_tokenizer(out_dir, llm)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m internvl.datakit.checkpoints",
                                     description="Write a tiny random checkpoint in a published layout.")
    parser.add_argument("kind", choices=["internvl-cg", "internvl-chat"])
    parser.add_argument("out_dir")
    parser.add_argument("--llm", default="internlm2", choices=CHAT_LLMS, help="language model of internvl-chat")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if Path(args.out_dir).exists() and any(Path(args.out_dir).iterdir()):
        parser.error(f"{args.out_dir} exists and is not empty; choose a new directory")
    if args.kind == "internvl-cg":
        write_tiny_internvl_cg(args.out_dir, seed=args.seed)
    else:
        write_tiny_internvl_chat(args.out_dir, llm=args.llm, seed=args.seed)
    print(f"wrote a tiny random {args.kind} checkpoint to {args.out_dir}")


if __name__ == "__main__":
    main()
