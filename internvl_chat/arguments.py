"""The flags of the chat fine-tune and of its data tools, and their two parsers: upstream's ``ModelArguments`` and
``DataTrainingArguments`` (names and defaults of ``internvl_chat/internvl/train/internvl_chat_finetune.py``), so
an upstream script runs unchanged, and ``DataToolArguments`` (``python -m internvl_chat.chat_data``).

:func:`parse_finetune_args` parses them beside the library's ``TrainingArguments`` with
:func:`internvl.train.hf.parse_args`, the one parser of both Trainer entry points (``internvl_g`` uses it too), which
alone knows upstream's flags that transformers renamed or removed (``--evaluation_strategy``, and in transformers 5
``--overwrite_output_dir``, ``--group_by_length``, ``--warmup_ratio``, ``--logging_dir``, ``--save_safetensors``):
accepted on every version; anything unknown is an error naming the flag. Upstream's packed-training flags are
accepted at their defaults only. :func:`parse_data_args` parses the model and data flags with the tools' own.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Sequence

from internvl.errors import ConfigError

__all__ = ["ModelArguments", "DataTrainingArguments", "parse_finetune_args", "parse_data_args"]


@dataclass
class ModelArguments:
    """Which model, and which of its parts train."""

    model_name_or_path: Optional[str] = field(default=None, metadata={
        "help": "InternVL-Chat checkpoint directory (config.json, weights, tokenizer files)"})
    vision_path: Optional[str] = field(default=None, metadata={
        "help": "InternViT directory, to build a new model with --llm_path (instead of --model_name_or_path)"})
    llm_path: Optional[str] = field(default=None, metadata={"help": "language model directory, with --vision_path"})
    mlp_path: Optional[str] = field(default=None, metadata={"help": "torch .pth state dict of the mlp1 projector"})
    freeze_llm: bool = field(default=False, metadata={"help": "freeze the language model"})
    freeze_backbone: bool = field(default=False, metadata={"help": "freeze the vision model"})
    freeze_mlp: bool = field(default=False, metadata={"help": "freeze the mlp1 projector"})
    unfreeze_vit_layers: int = field(default=0, metadata={
        "help": "train vision layers [N:] even when the vision model is frozen (-4: the last four)"})
    vision_select_layer: int = field(default=-1, metadata={"help": "vision layer that feeds the projector"})
    use_backbone_lora: int = field(default=0, metadata={"help": "LoRA rank for the vision model (0: none)"})
    use_llm_lora: int = field(default=0, metadata={"help": "LoRA rank for the language model (0: none)"})
    unfreeze_lm_head: bool = field(default=False, metadata={"help": "train the output layer of the language model"})
    grad_checkpoint: bool = field(default=True, metadata={"help": "gradient checkpointing in the language model"})
    drop_path_rate: float = field(default=0.0, metadata={"help": "stochastic depth of the vision model"})
    ps_version: str = field(default="v2", metadata={"help": "pixel shuffle version", "choices": ["v1", "v2"]})
    use_fast_tokenizer: bool = field(default=False, metadata={"help": "use the fast (Rust) tokenizer"})
    use_liger: bool = field(default=False, metadata={"help": "liger kernels (accepted; not used: no liger here)"})


@dataclass
class DataTrainingArguments:
    """The data and how samples are built."""

    max_seq_length: int = field(default=8192, metadata={"help": "longest tokenized sample; longer ones are cut"})
    force_image_size: int = field(default=448, metadata={"help": "tile size; differing from the checkpoint's "
                                                                  "resizes the position embeddings"})
    down_sample_ratio: float = field(default=0.5, metadata={"help": "pixel shuffle ratio (must be the model's)"})
    pad2square: bool = field(default=False, metadata={"help": "pad images to a square (without data_augment)"})
    conv_style: str = field(default="internlm2-chat", metadata={
        "help": "conversation template: internlm2-chat, Hermes-2, phi3-chat, internvl2_5"})
    meta_path: Optional[str] = field(default=None, metadata={"help": "meta json naming the JSONL datasets"})
    use_data_resampling: bool = field(default=False, metadata={
        "help": "draw datasets in proportion to the square root of their size"})
    dynamic_image_size: bool = field(default=False, metadata={"help": "dynamic-resolution tiling"})
    use_thumbnail: bool = field(default=False, metadata={"help": "add a whole-image tile when tiling"})
    min_dynamic_patch: int = field(default=1, metadata={"help": "fewest tiles per image"})
    max_dynamic_patch: int = field(default=12, metadata={"help": "most tiles per image (split across images)"})
    min_num_frame: int = field(default=8, metadata={"help": "fewest frames sampled from a video"})
    max_num_frame: int = field(default=32, metadata={"help": "most frames sampled from a video"})
    normalize_type: str = field(default="imagenet", metadata={"help": "pixel normalisation",
                                                              "choices": ["imagenet", "clip", "siglip"]})
    max_bad_samples: int = field(default=0, metadata={
        "help": "unusable samples that may be skipped (each logged with file:line and written to "
                "OUTPUT_DIR/bad_samples.jsonl); one more stops the run"})
    # Packed training (internvl_chat/chat_data/packing.py): upstream's flags and defaults.
    use_packed_ds: bool = field(default=False, metadata={
        "help": "pack several samples into each row (attention kept inside each sample)"})
    num_images_expected: int = field(default=40, metadata={"help": "packed: most tiles per pack"})
    max_packed_tokens: int = field(default=8192, metadata={"help": "packed: most tokens per pack"})
    max_buffer_size: int = field(default=20, metadata={"help": "packed: open packs while packing"})
    log_freq: int = field(default=1000, metadata={"help": "packed: log the packs' fill every N packs"})
    strict_mode: bool = field(default=True, metadata={
        "help": "packed: pad every pack to --max_packed_tokens tokens and --num_images_expected tiles"})
    replacement: bool = field(default=False, metadata={
        "help": "packed: draw each epoch's samples with replacement (datasets weighted by size)"})
    allow_overflow: bool = field(default=False, metadata={
        "help": "packed: a sample longer than a pack gets a pack of its own (else: an error naming it)"})
    loss_reduction: str = field(default="token", metadata={
        "help": "weight of a sample's trained tokens: 1 (token), 1/n (sample), 1/sqrt(n) (square)",
        "choices": ["token", "sample", "square"]})
    loss_reduction_all_gather: bool = field(default=False, metadata={
        "help": "divide by the weights of all GPUs' batches, not this GPU's"})


# The Trainer flags this entry point sets unless given: a multi-process step's loss is the mean over all its
# trained tokens (transformers 4.51 defaults it to False: the mean of the ranks' token means).
TRAINING_DEFAULTS = {"average_tokens_across_devices": True}


def parse_finetune_args(argv: Optional[Sequence[str]] = None):
    """``(model_args, data_args, training_args)`` from upstream-style flags (or one .json file), parsed by
    :func:`internvl.train.hf.parse_args` (upstream's renamed and removed flags, unknown flags named)."""
    from internvl.train.hf import TrainingArguments, parse_args

    model_args, data_args, training_args = parse_args((ModelArguments, DataTrainingArguments, TrainingArguments),
                                                      argv, defaults=TRAINING_DEFAULTS)
    if not data_args.use_packed_ds:
        from .chat_data.packing import PackingOptions

        defaults = {f.name: f.default for f in dataclasses.fields(DataTrainingArguments)}
        packed_only = [name for name in PackingOptions.__dataclass_fields__ if name != "loss_reduction"]
        changed = [name for name in packed_only if getattr(data_args, name) != defaults[name]]
        if changed:
            raise ConfigError(f"--{changed[0]} is a packed-training option: add --use_packed_ds True, or remove it")
    elif training_args.group_by_length:
        raise ConfigError("--group_by_length and --use_packed_ds exclude each other: packing already groups samples "
                          "by length; remove one")
    return model_args, data_args, training_args


@dataclass
class DataToolArguments:
    """Flags of ``python -m internvl_chat.chat_data`` beyond the data flags."""

    output: Optional[str] = field(default=None, metadata={"help": "inspect: the JSONL file to write"})
    limit: Optional[int] = field(default=None, metadata={"help": "inspect: write only the first N samples"})
    show_problems: int = field(default=50, metadata={"help": "check: list at most N problems (all are counted)"})
    seed: int = field(default=0, metadata={"help": "random choices (video frame counts, JPEG quality)"})
    num_workers: int = field(default=0, metadata={"help": "processes reading the samples"})


def parse_data_args(argv: Sequence[str], prog: str):
    """``(model_args, data_args, tool_args)`` for the data tools: the same model and data flags as training."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, DataToolArguments), prog=prog)
    model_args, data_args, tool_args, unknown = parser.parse_args_into_dataclasses(
        args=list(argv), return_remaining_strings=True)
    if unknown:
        raise ConfigError(f"unknown flag(s): {' '.join(unknown)}; the data tools take the model and data flags of "
                          f"training (see `{prog} --help`)")
    return model_args, data_args, tool_args
