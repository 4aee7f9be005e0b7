"""Tiny checkpoints, data and flags shared by the fine-tuning tests (tests/test_chat_finetune_*.py)."""
from __future__ import annotations

import functools
import logging
import shutil
from pathlib import Path

import pytest

from internvl.datakit.checkpoints import write_chat_tokenizer, write_tiny_internvl_chat
from internvl.models.tokenization import load_tokenizer

TEMPLATE_OF = {"internlm2": "internlm2-chat", "qwen2": "Hermes-2", "phi3": "phi3-chat", "llama": "internvl2_5"}
# The data flags of the tiny checkpoints: 56 px tiles of 14 px patches -> 4 tokens per tile.
DATA_FLAGS = ["--force_image_size", "56", "--down_sample_ratio", "0.5", "--max_seq_length", "512"]


@functools.lru_cache(maxsize=None)
def _tokenizer_dir(llm: str, root: str) -> str:
    path = Path(root) / f"tok-{llm}"
    write_chat_tokenizer(path, llm)
    return str(path)


def training_tokenizer(tmp_root: Path, llm: str):
    """The tokenizer as training loads it (slow, as upstream's --use_fast_tokenizer False)."""
    path = _tokenizer_dir(llm, str(tmp_root))
    return load_tokenizer(path) if llm == "internlm2" else load_tokenizer(path, use_fast=False)


@functools.lru_cache(maxsize=None)
def _base(llm: str, root: str) -> str:
    path = Path(root) / f"base-{llm}"
    write_tiny_internvl_chat(path, llm=llm, seed=0)
    return str(path)


def base_checkpoint(tmp_root: Path, llm: str = "internlm2", copy_to: Path = None) -> Path:
    """A tiny InternVL2-style checkpoint (written once per session root); ``copy_to`` for a private copy."""
    path = Path(_base(llm, str(tmp_root)))
    if copy_to is not None:
        shutil.copytree(path, copy_to)
        return copy_to
    return path


def finetune_argv(base: Path, meta: Path, out: Path, *extra: str, llm: str = "internlm2") -> list:
    """A short LoRA run of the tiny model (override any flag by appending it)."""
    return ["--model_name_or_path", str(base), "--conv_style", TEMPLATE_OF[llm], "--meta_path", str(meta),
            "--output_dir", str(out), *DATA_FLAGS, "--freeze_llm", "True", "--freeze_mlp", "True",
            "--freeze_backbone", "True", "--use_llm_lora", "4", "--per_device_train_batch_size", "4",
            "--num_train_epochs", "1", "--learning_rate", "1e-2", "--logging_steps", "1", "--save_strategy", "no",
            "--do_train", "True", "--grad_checkpoint", "False", "--report_to", "none", "--dataloader_num_workers", "0",
            "--disable_tqdm", "True", "--seed", "0", *extra]


@pytest.fixture(autouse=True)
def _drop_run_logging():
    """The entry points run in-process install the run's log handlers (internvl.train.distributed.setup_logging) on the
    stderr pytest captured for that test; remove them afterwards, as a finished process would."""
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_internvl_runtime", False)]:
        root.removeHandler(handler)
        handler.close()
