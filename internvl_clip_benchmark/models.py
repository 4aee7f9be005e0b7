"""The ``internvl`` model type of CLIP Benchmark: upstream's six model names on :mod:`internvl.models.internvl_cg`.

A CLIP Benchmark loader returns ``(model, transform, tokenizer)`` such that ``model.encode_image(
transform(image) batch)``, ``model.encode_text(tokenizer(texts).to(device))`` are the features LAION's
metrics compare (:func:`load_internvl`, registered as ``TYPE2FUNC["internvl"]``).

==============================  ==============  ===========  ======================================
``--model``                     ``--pretrained``  features    transform
==============================  ==============  ===========  ======================================
internvl_c_classification       ``.pth`` file   InternVL-C   resize shorter side + center crop
internvl_c_retrieval            ``.pth`` file   InternVL-C   resize to a square
internvl_c_classification_hf    HF directory    InternVL-C   resize shorter side + center crop
internvl_c_retrieval_hf         HF directory    InternVL-C   resize to a square
internvl_g_classification_hf    HF directory    InternVL-G   resize shorter side + center crop
internvl_g_retrieval_hf         HF directory    InternVL-G   resize to a square
==============================  ==============  ===========  ======================================

Both transforms are bicubic with the ImageNet mean/std, at the model's image size (``force_image_size``
of an HF directory when set: a 364 px retrieval fine-tune evaluates at 364; 224 for the ``.pth``).
Text: the checkpoint's LLaMA tokenizer, ``summarize:`` before every text, ``</s>`` appended, truncated to
80 tokens, right-padded with id 0 to the longest text of the batch; the text feature is the hidden state
at ``</s>``. (Upstream's HF loader pads to 80: the same features, since attention is causal and the
padding comes after ``</s>``.)

An HF directory whose ``config.json`` sets ``use_backbone_lora`` / ``use_qllama_lora`` (a LoRA
fine-tune) has its adapters merged into the weights on load, as upstream does.

The ``.pth`` holds weights only. Its tokenizer (the 49,954-piece LLaMA tokenizer that InternVL-14B-224px
also ships) and, at a size other than the published one, its ``config.json`` come from a companion
directory: ``--tokenizer_dir`` when given, else the folder of the ``.pth`` when it holds
``tokenizer.model``, else ``InternVL-14B-224px/`` beside the ``.pth`` (upstream's ``pretrained/`` layout).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch import nn

from internvl.errors import CheckpointError, ConfigError, MissingFileError

__all__ = ["ModelSpec", "MODELS", "load_internvl", "InternVLForBenchmark", "RetrievalTokenizer", "weight_files",
           "text_files", "PTH_COMPANION"]

WEIGHTS_HELP = "see pretrained/README.md for the published checkpoints and where to put them"
PTH_COMPANION = "InternVL-14B-224px"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str  # "pth" (internvl_c_13b_224px.pth) or "hf" (a directory)
    mode: str  # "InternVL-C" or "InternVL-G"
    task: str  # the transform: "classification" (center crop) or "retrieval" (squash)


MODELS = {spec.name: spec for spec in (
    ModelSpec("internvl_c_classification", "pth", "InternVL-C", "classification"),
    ModelSpec("internvl_c_retrieval", "pth", "InternVL-C", "retrieval"),
    ModelSpec("internvl_c_classification_hf", "hf", "InternVL-C", "classification"),
    ModelSpec("internvl_c_retrieval_hf", "hf", "InternVL-C", "retrieval"),
    ModelSpec("internvl_g_classification_hf", "hf", "InternVL-G", "classification"),
    ModelSpec("internvl_g_retrieval_hf", "hf", "InternVL-G", "retrieval"),
)}


class RetrievalTokenizer:
    """``tokenizer(texts) -> LongTensor (batch, length)`` as CLIP Benchmark calls it: the retrieval
    conventions of :func:`internvl.models.processing_internvl_cg.build_cg_tokenizer`, trimmed to the longest text."""

    def __init__(self, checkpoint_dir: Union[str, os.PathLike]):
        from internvl.models.processing_internvl_cg import build_cg_tokenizer

        self.directory = Path(checkpoint_dir)
        self.cg = build_cg_tokenizer(self.directory, task="retrieval")

    def __call__(self, texts: Union[str, Sequence[str]]) -> torch.Tensor:
        ids = self.cg.tokenize(texts).input_ids
        return ids[:, :int((ids > 0).sum(1).max())]

    def __len__(self) -> int:
        return len(self.cg)


class InternVLForBenchmark(nn.Module):
    """``encode_image`` / ``encode_text`` of one mode of an :class:`internvl.InternVLModel`."""

    def __init__(self, model, mode: str):
        super().__init__()
        self.model, self.mode = model, mode

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images.to(self.model.dtype), mode=self.mode)

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(text)


def _spec(model_name: str) -> ModelSpec:
    if model_name not in MODELS:
        raise ConfigError(f"--model {model_name!r} is not an InternVL model name; with --model_type internvl use "
                          f"one of: {', '.join(MODELS)}")
    return MODELS[model_name]


def _check_source(spec: ModelSpec, pretrained: Path) -> None:
    if not pretrained.exists():
        raise MissingFileError(f"--pretrained {pretrained} does not exist; {spec.name} needs "
                               f"{'the PyTorch file internvl_c_13b_224px.pth' if spec.source == 'pth' else 'an HF directory such as InternVL-14B-224px'}; "
                               f"{WEIGHTS_HELP}")
    if spec.source == "pth" and pretrained.is_dir():
        raise CheckpointError(f"--model {spec.name} reads the PyTorch file internvl_c_13b_224px.pth, but --pretrained "
                              f"{pretrained} is a directory; for an HF directory use {spec.name}_hf")
    if spec.source == "hf" and not pretrained.is_dir():
        hint = (f"; for the PyTorch file use {spec.name[:-3]}" if spec.name[:-3] in MODELS
                else "; the .pth holds InternVL-C only: use internvl_c_classification / internvl_c_retrieval")
        raise CheckpointError(f"--model {spec.name} reads a Hugging Face directory (config.json + weights), but "
                              f"--pretrained {pretrained} is a file{hint}")


def _pth_companion(pth: Path, tokenizer_dir: Optional[Union[str, os.PathLike]]) -> Path:
    """The directory with the tokenizer (and, optionally, config.json) of a ``.pth`` (see the module doc)."""
    if tokenizer_dir is not None:
        candidates = [Path(tokenizer_dir)]
    else:
        candidates = [pth.parent, pth.parent / PTH_COMPANION]
    for candidate in candidates:
        if (candidate / "tokenizer.model").is_file():
            return candidate
    raise MissingFileError(
        f"no LLaMA tokenizer for {pth}: looked for tokenizer.model in {' and '.join(map(str, candidates))}. "
        f"The .pth holds weights only; download {PTH_COMPANION} beside it (pretrained/{PTH_COMPANION}, which ships "
        f"the same tokenizer) or pass --tokenizer_dir DIR; {WEIGHTS_HELP}")


def _c_only_config(companion: Path):
    """InternVL-C's config for a ``.pth``: the companion's InternViT / text decoder shapes (when it has a
    config.json), else the published ones; no queries, the vision tower's own image size."""
    from internvl.models.internvl_cg import InternVLConfig

    if not (companion / "config.json").is_file():
        return InternVLConfig(num_query_token=0)
    try:
        c = InternVLConfig.from_pretrained(companion)
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"cannot read {companion / 'config.json'} as an InternVL-C/G config: {e}") from None
    return InternVLConfig(vision_config=c.vision_config.to_dict(), qllama_config=c.qllama_config.to_dict(),
                          clip_embed_dim=c.clip_embed_dim, attn_pool_num_heads=c.attn_pool_num_heads,
                          num_query_token=0, cross_attention_frequency=c.cross_attention_frequency)


def _model_type_of(directory: Path) -> Optional[str]:
    try:
        return json.loads((directory / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def _load_pth(pth: Path, companion: Path, dtype: torch.dtype):
    from internvl.models.intern_vit import load_state_dict_file
    from internvl.models.internvl_cg import load_internvl_c_pth

    try:
        state_dict = load_state_dict_file(pth)
    except Exception as e:  # noqa: BLE001 - torch.load of a damaged file raises anything (IndexError, EOFError, ...)
        raise CheckpointError(f"cannot read {pth} as a PyTorch checkpoint ({type(e).__name__}: {e}); expected "
                              f"internvl_c_13b_224px.pth; {WEIGHTS_HELP}") from None
    try:
        return load_internvl_c_pth(state_dict, config=_c_only_config(companion), torch_dtype=dtype)
    except (ValueError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"cannot load {pth} as internvl_c_13b_224px.pth (InternVL-C): {e}") from None


def _load_hf(directory: Path, dtype: torch.dtype):
    from internvl.models.internvl_cg import InternVLModel

    if not (directory / "config.json").is_file():
        raise CheckpointError(f"{directory} is not a Hugging Face checkpoint directory: it has no config.json; "
                              f"{WEIGHTS_HELP}")
    model_type = _model_type_of(directory)
    if model_type != "internvl":
        raise CheckpointError(f"{directory}/config.json has model_type {model_type!r}, not 'internvl': it is not an "
                              "InternVL-C/G checkpoint (OpenGVLab/InternVL-14B-224px or a fine-tune of it)")
    try:
        model = InternVLModel.from_pretrained(directory, dtype=dtype, low_cpu_mem_usage=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"cannot load {directory} as InternVL-C/G: {e}") from None
    model.merge_lora()  # a LoRA fine-tune: the adapters folded into the weights, as upstream's evaluation does
    return model


def weight_files(model_name: str, pretrained: Union[str, os.PathLike],
                 tokenizer_dir: Optional[Union[str, os.PathLike]] = None) -> list[Path]:
    """The files the image features of ``model_name`` depend on: what a feature cache fingerprints."""
    spec, pretrained = _spec(model_name), Path(pretrained)
    if spec.source == "pth":
        config = _pth_companion(pretrained, tokenizer_dir) / "config.json"
        return [pretrained] + ([config] if config.is_file() else [])
    names = ("config.json", "*.safetensors", "*.bin", "*.index.json")
    return sorted({f for pattern in names for f in pretrained.glob(pattern) if f.is_file()})


def text_files(model_name: str, pretrained: Union[str, os.PathLike],
               tokenizer_dir: Optional[Union[str, os.PathLike]] = None) -> list[Path]:
    """The files the text features of ``model_name`` depend on (a zero-shot classifier's cache key): the weight
    files and the tokenizer files of the directory the tokenizer is read from."""
    spec, pretrained = _spec(model_name), Path(pretrained)
    companion = _pth_companion(pretrained, tokenizer_dir) if spec.source == "pth" else pretrained
    from internvl.models.modeling_utils import TOKENIZER_FILES

    tokenizer = [companion / name for name in TOKENIZER_FILES if (companion / name).is_file()]
    return sorted(set(weight_files(model_name, pretrained, tokenizer_dir)) | set(tokenizer))


def load_internvl(model_name: str, pretrained: Union[str, os.PathLike], cache_dir: Optional[str] = None,
                  device: Union[str, torch.device] = "cpu", tokenizer_dir: Optional[Union[str, os.PathLike]] = None,
                  dtype: Optional[torch.dtype] = None):
    """CLIP Benchmark's loader for ``--model_type internvl``: ``(model, transform, tokenizer)``.

    ``cache_dir`` (CLIP Benchmark's ``--model_cache_dir``) is unused: nothing is downloaded. ``dtype``
    defaults to float16 on CUDA (as upstream evaluates) and float32 on the CPU."""
    from internvl.models.processing_internvl_cg import image_transform

    spec, pretrained = _spec(model_name), Path(pretrained).expanduser()
    _check_source(spec, pretrained)
    device = torch.device(device)
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    if spec.source == "pth":
        companion = _pth_companion(pretrained, tokenizer_dir)
        model = _load_pth(pretrained, companion, dtype)
    else:
        companion = pretrained
        model = _load_hf(pretrained, dtype)
    if spec.mode == "InternVL-G" and not model.has_generative_part:
        raise CheckpointError(f"{pretrained} holds InternVL-C only (num_query_token=0): it has no QLLaMA queries for "
                              f"{spec.name}; use {spec.name.replace('internvl_g_', 'internvl_c_')}")
    try:
        tokenizer = RetrievalTokenizer(companion)
    except FileNotFoundError as e:
        raise MissingFileError(f"{e}; {WEIGHTS_HELP}") from None
    model.requires_grad_(False)
    model = model.to(device).eval()
    return InternVLForBenchmark(model, spec.mode), image_transform(model.config, task=spec.task), tokenizer
