"""From flags to data: the tokenizer as training uses it, the model geometry the samples depend on, and the
datasets of a meta json. Shared by ``finetune``, ``python -m internvl_chat.chat_data`` and the evaluation, so
all three see the same samples."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from internvl.errors import CheckpointError, ConfigError, MissingFileError

from .chat_jsonl import SampleProblem, load_samples, read_meta
from .dataset import ChatConcatDataset, ChatDataset, DataOptions
from .preprocess import check_template

__all__ = ["SPECIAL_TOKENS", "load_training_tokenizer", "num_image_token", "data_options", "build_training_data"]

log = logging.getLogger(__name__)

# The tokens upstream adds to the tokenizer before training (published InternVL tokenizers have them all).
SPECIAL_TOKENS = ["<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"]


def load_training_tokenizer(path: str, max_seq_length: int, use_fast: bool = False):
    """``(tokenizer, number of special tokens added)``: the checkpoint's tokenizer (slow unless ``use_fast``,
    as upstream), ``model_max_length = max_seq_length``, with upstream's special tokens added if missing."""
    from internvl.models.tokenization import load_tokenizer

    if path is None:
        raise ConfigError("--model_name_or_path is required (the checkpoint directory with the tokenizer files)")
    if not Path(path).is_dir():
        raise MissingFileError(f"--model_name_or_path {path}: no such directory; see pretrained/README.md")
    kwargs = {} if _is_internlm2(path) else {"use_fast": use_fast}
    try:
        tokenizer = load_tokenizer(path, **kwargs)
    except FileNotFoundError as err:
        raise MissingFileError(str(err)) from None
    except (ValueError, OSError) as err:
        raise CheckpointError(f"cannot load the tokenizer of {path}: {err}") from None
    tokenizer.model_max_length = max_seq_length
    added = tokenizer.add_tokens(SPECIAL_TOKENS, special_tokens=True)
    if added:
        log.warning("added %d special token(s) the tokenizer of %s lacked; the embeddings grow to match", added, path)
    return tokenizer, added


def _is_internlm2(path: str) -> bool:
    config = Path(path) / "tokenizer_config.json"
    return config.is_file() and "InternLM2Tokenizer" in config.read_text(encoding="utf-8")


def _chat_config(path: str):
    from internvl.models.chat_model import InternVLChatConfig
    from internvl.models.modeling_utils import check_checkpoint_dir

    check_checkpoint_dir(path, "--model_name_or_path")
    try:
        return InternVLChatConfig.from_pretrained(path)
    except (ValueError, OSError, KeyError) as err:
        raise CheckpointError(f"cannot read {path}/config.json as an InternVL-Chat config: {err}") from None


def num_image_token(model_args, data_args) -> int:
    """Tokens per tile of the model the flags describe (:func:`~internvl.models.chat_model.tokens_per_tile` with
    ``--force_image_size`` and ``--down_sample_ratio``: 256 for 448 px and patch 14)."""
    from internvl.models.chat_model import tokens_per_tile

    if model_args.model_name_or_path is not None:
        config = _chat_config(model_args.model_name_or_path)
        if abs(config.downsample_ratio - data_args.down_sample_ratio) > 1e-9:
            raise ConfigError(f"--down_sample_ratio {data_args.down_sample_ratio} differs from the checkpoint's "
                              f"downsample_ratio {config.downsample_ratio}; the projector is built for the latter")
        vision_config = config.vision_config
    elif model_args.vision_path is not None:
        from internvl.models.intern_vit import InternVisionConfig

        vision_config = InternVisionConfig.from_pretrained(model_args.vision_path)
    else:
        raise ConfigError("give --model_name_or_path (or --vision_path and --llm_path to build a new model)")
    if data_args.force_image_size % vision_config.patch_size:
        raise ConfigError(f"--force_image_size {data_args.force_image_size} is not a multiple of the patch size "
                          f"{vision_config.patch_size}")
    return tokens_per_tile(data_args.force_image_size, vision_config.patch_size, data_args.down_sample_ratio)


def data_options(model_args, data_args) -> DataOptions:
    check_template(data_args.conv_style)
    return DataOptions(template=data_args.conv_style, num_image_token=num_image_token(model_args, data_args),
                       image_size=data_args.force_image_size, max_seq_length=data_args.max_seq_length,
                       dynamic_image_size=data_args.dynamic_image_size, use_thumbnail=data_args.use_thumbnail,
                       min_dynamic_patch=data_args.min_dynamic_patch, max_dynamic_patch=data_args.max_dynamic_patch,
                       pad2square=data_args.pad2square, normalize_type=data_args.normalize_type,
                       min_num_frame=data_args.min_num_frame, max_num_frame=data_args.max_num_frame)


def build_training_data(meta_path: Optional[str], tokenizer, options: DataOptions,
                        check_files: bool = True) -> tuple[ChatConcatDataset, list[SampleProblem]]:
    """Every dataset of the meta json with the structural check of each line (JSON, keys, roles,
    placeholders, files present): ``(dataset of the good samples, problems of the others)``."""
    if meta_path is None:
        raise ConfigError("--meta_path is required: the meta json naming the JSONL datasets")
    datasets, problems = [], []
    for spec in read_meta(meta_path):
        samples, bad = load_samples(spec, check_files=check_files)
        problems += bad
        if not samples and not bad:
            raise ConfigError(f"{meta_path}: dataset {spec.name!r} ({spec.annotation}) has no samples")
        datasets.append(ChatDataset(spec, samples, tokenizer, options))
        log.info("dataset %s: %d samples from %s%s", spec.name, len(samples), spec.annotation,
                 f", {len(bad)} unusable" if bad else "")
    return ChatConcatDataset(datasets), problems
