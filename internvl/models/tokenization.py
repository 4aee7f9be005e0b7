"""Tokenizers of the InternVL-Chat checkpoints, read from the checkpoint directory with no remote code.

Every pipeline builds the tokenizer of a checkpoint directory with one call::

    from internvl.models.tokenization import load_tokenizer
    tokenizer = load_tokenizer("pretrained/InternVL2-2B")

``tokenizer_config.json`` names the class. The InternLM2 language models (InternVL2-2B/8B/26B, InternVL-Chat
V1.5) name ``InternLM2Tokenizer``, which the published directories ship as remote code; it is
:class:`InternLM2Tokenizer` here. The others (Qwen2 for InternVL2-1B, LLaMA for Phi-3 / Yi / LLaMA-3) are
transformers classes and load through ``AutoTokenizer`` without remote code.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import sentencepiece as spm
from transformers import PreTrainedTokenizer
from transformers.utils import logging

from ..compat import write_published_tokenizer_files
from ..errors import CheckpointError, ConfigError, MissingFileError

logger = logging.get_logger(__name__)

__all__ = ["InternLM2Tokenizer", "load_tokenizer", "TOKENIZER_FILES"]

VOCAB_FILES_NAMES = {"vocab_file": "tokenizer.model"}

# Files that make a directory loadable as a tokenizer, for the error message when none is there.
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.model", "tokenizer.json", "vocab.json", "merges.txt")

# Class names in tokenizer_config.json that mean the InternLM2 SentencePiece tokenizer. The published
# fast variant is built from the same tokenizer.model and encodes the same way.
_INTERNLM2_CLASSES = ("InternLM2Tokenizer", "InternLM2TokenizerFast")


class InternLM2Tokenizer(PreTrainedTokenizer):
    """The InternLM2 tokenizer: a SentencePiece BPE model (``tokenizer.model``) plus the special tokens that
    ``tokenizer_config.json`` adds (``<|im_start|>``, ``<|im_end|>``, ``<img>``, ``</img>``,
    ``<IMG_CONTEXT>``, ... at the ids the checkpoint assigns).

    Semantics are the published ``tokenization_internlm2.py``'s: ``<s>`` is prepended by default
    (``add_bos_token=True``), ``</s>`` is not appended (``add_eos_token=False``), padding uses ``</s>``,
    text between special tokens is encoded by SentencePiece with its dummy-prefix space, and decoding
    puts a space before a special token that follows ordinary text (or starts the sequence) and applies
    transformers' English clean-up (``" ." -> "."``, ``" n't" -> "n't"``, ...) as the reference does.
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file: str, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>",
                 sp_model_kwargs: Optional[dict[str, Any]] = None, add_bos_token: bool = True,
                 add_eos_token: bool = False, decode_with_prefix_space: bool = False,
                 clean_up_tokenization_spaces: bool = False, **kwargs):
        if vocab_file is None or not os.path.isfile(vocab_file):
            raise MissingFileError(f"InternLM2Tokenizer needs the SentencePiece model tokenizer.model; "
                                    f"{vocab_file} does not exist")
        self.vocab_file = vocab_file
        self.sp_model_kwargs = {} if sp_model_kwargs is None else sp_model_kwargs
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        # Kept for config compatibility; the reference accepts it but never reads it.
        self.decode_with_prefix_space = decode_with_prefix_space
        self.sp_model = self._load_sp_model(vocab_file)
        super().__init__(bos_token=bos_token, eos_token=eos_token, unk_token=unk_token, pad_token=pad_token,
                         sp_model_kwargs=self.sp_model_kwargs, add_bos_token=add_bos_token,
                         add_eos_token=add_eos_token, decode_with_prefix_space=decode_with_prefix_space,
                         clean_up_tokenization_spaces=clean_up_tokenization_spaces, **kwargs)

    def _load_sp_model(self, vocab_file: str) -> spm.SentencePieceProcessor:
        model = spm.SentencePieceProcessor(**self.sp_model_kwargs)
        try:
            model.Load(vocab_file)
        except (OSError, RuntimeError) as err:
            raise CheckpointError(f"{vocab_file} is not a SentencePiece model ({err}): the file is damaged or of "
                                  "another kind; copy tokenizer.model from the original checkpoint") from err
        return model

    # The SentencePiece processor is rebuilt from its serialized proto, so the tokenizer pickles (DataLoader
    # workers) even when tokenizer.model has moved.
    def __getstate__(self):
        state = self.__dict__.copy()
        state["sp_model"] = self.sp_model.serialized_model_proto()
        return state

    def __setstate__(self, state):
        proto = state.pop("sp_model")
        self.__dict__.update(state)
        self.sp_model = spm.SentencePieceProcessor(**self.sp_model_kwargs)
        self.sp_model.LoadFromSerializedProto(proto)

    @property
    def vocab_size(self) -> int:
        """Pieces of the SentencePiece model; tokens added by tokenizer_config.json come on top (``len``)."""
        return self.sp_model.get_piece_size()

    def get_vocab(self) -> dict[str, int]:
        vocab = {self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text: str) -> list[str]:
        return self.sp_model.encode(text, out_type=str)

    def _convert_token_to_id(self, token: str) -> int:
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index: int) -> str:
        return self.sp_model.id_to_piece(index)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Pieces to text. Special tokens are not passed through SentencePiece: each one that follows ordinary
        text (or opens the sequence) gets a space before it, as in the reference."""
        specials = set(self.all_special_tokens)
        out, pieces, prev_special = "", [], False
        for token in tokens:
            if token in specials:
                out += ("" if prev_special else " ") + self.sp_model.decode(pieces) + token
                pieces, prev_special = [], True
            else:
                pieces.append(token)
                prev_special = False
        # The reference applies the clean-up here whatever clean_up_tokenization_spaces says.
        return self.clean_up_tokenization(out + self.sp_model.decode(pieces))

    def _decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None,
                spaces_between_special_tokens: bool = True, **kwargs) -> str:
        """Ids to text as the reference decodes them (transformers 4's slow-tokenizer rule, kept whatever
        transformers is installed): added tokens stand apart, joined to the text pieces between them with
        single spaces (none with ``spaces_between_special_tokens=False``); special tokens are dropped with
        ``skip_special_tokens``; the pieces in between go through :meth:`convert_tokens_to_string`."""
        tokens = self.convert_ids_to_tokens(token_ids, skip_special_tokens=skip_special_tokens)
        if isinstance(tokens, str):
            tokens = [tokens]
        specials = set(self.all_special_tokens)
        # added tokens that stand apart: those beyond the SentencePiece vocabulary (<|im_start|>, <img>, ...)
        # and any added one that is not special; <s>, </s>, <unk> are pieces of the model itself
        standalone = {t for t, i in self.added_tokens_encoder.items() if t not in specials or i >= self.vocab_size}
        parts, pending = [], []
        for token in tokens:
            if skip_special_tokens and token in specials:
                continue
            if token in standalone:
                if pending:
                    text = self.convert_tokens_to_string(pending)
                    if text:
                        parts.append(text)
                    pending = []
                parts.append(token)
            else:
                pending.append(token)
        if pending:
            parts.append(self.convert_tokens_to_string(pending))
        text = (" " if spaces_between_special_tokens else "").join(parts)
        clean = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        return self.clean_up_tokenization(text) if clean else text

    def build_inputs_with_special_tokens(self, token_ids_0: list[int],
                                         token_ids_1: Optional[list[int]] = None) -> list[int]:
        """``<s> A [B] [</s>]`` (bos and eos as ``add_bos_token`` / ``add_eos_token`` say)."""
        bos = [self.bos_token_id] if self.add_bos_token else []
        eos = [self.eos_token_id] if self.add_eos_token else []
        return bos + token_ids_0 + (token_ids_1 or []) + eos

    def get_special_tokens_mask(self, token_ids_0: list[int], token_ids_1: Optional[list[int]] = None,
                                already_has_special_tokens: bool = False) -> list[int]:
        if already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0, token_ids_1, already_has_special_tokens=True)
        # Follows build_inputs_with_special_tokens (the reference's mask assumes bos and eos are both added).
        return ([1] if self.add_bos_token else []) + [0] * (len(token_ids_0) + len(token_ids_1 or [])) + (
            [1] if self.add_eos_token else [])

    def create_token_type_ids_from_sequences(self, token_ids_0: list[int],
                                             token_ids_1: Optional[list[int]] = None) -> list[int]:
        return [0] * len(self.build_inputs_with_special_tokens(token_ids_0, token_ids_1))

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' ``save_pretrained``, then the published file layout (see
        :func:`internvl.compat.write_published_tokenizer_files`)."""
        files = super().save_pretrained(save_directory, *args, **kwargs)
        write_published_tokenizer_files(save_directory, self)
        return files

    def save_vocabulary(self, save_directory: str, filename_prefix: Optional[str] = None) -> tuple[str]:
        if not os.path.isdir(save_directory):
            raise NotADirectoryError(f"cannot save the tokenizer vocabulary: {save_directory} is not a directory")
        out = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + "tokenizer.model")
        if os.path.isfile(self.vocab_file):
            if os.path.abspath(self.vocab_file) != os.path.abspath(out):
                shutil.copyfile(self.vocab_file, out)
        else:  # the source file is gone (e.g. a temporary directory): write the model held in memory
            Path(out).write_bytes(self.sp_model.serialized_model_proto())
        return (out,)


def load_tokenizer(checkpoint_dir: str | os.PathLike, **kwargs):
    """The tokenizer of a checkpoint directory, by the class its ``tokenizer_config.json`` names.

    ``InternLM2Tokenizer`` / ``InternLM2TokenizerFast`` give :class:`InternLM2Tokenizer`; any class that
    transformers ships (``Qwen2Tokenizer``, ``LlamaTokenizer``, ``PreTrainedTokenizerFast``, ...) loads
    through ``AutoTokenizer`` with ``trust_remote_code=False``. ``kwargs`` go to ``from_pretrained``
    (e.g. ``use_fast=False``, ``model_max_length``, ``padding_side``).
    """
    directory = Path(checkpoint_dir).expanduser()
    if not directory.is_dir():
        raise MissingFileError(f"tokenizer directory not found: {directory} does not exist or is not a directory")
    config_file = directory / "tokenizer_config.json"
    if not config_file.is_file() and not (directory / "tokenizer.json").is_file():
        present = sorted(p.name for p in directory.iterdir())[:12]
        raise MissingFileError(
            f"{directory} has no tokenizer: expected tokenizer_config.json with its vocabulary "
            f"(tokenizer.model for InternLM2 / LLaMA, or tokenizer.json / vocab.json + merges.txt), found "
            f"{present or 'an empty directory'}; copy the tokenizer files of the original checkpoint there")
    config = {}
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{config_file} is not valid JSON: {err}") from err
    name = config.get("tokenizer_class")
    if name is None:  # some directories only name the class in their remote-code map
        auto = (config.get("auto_map") or {}).get("AutoTokenizer") or ()
        auto = [auto] if isinstance(auto, str) else auto
        if any(str(entry).endswith(_INTERNLM2_CLASSES) for entry in auto if entry):
            name = "InternLM2Tokenizer"

    if name in _INTERNLM2_CLASSES:
        if not (directory / "tokenizer.model").is_file():
            raise MissingFileError(f"{config_file} names {name}, which needs the SentencePiece model "
                                    f"{directory / 'tokenizer.model'}; it is missing")
        return InternLM2Tokenizer.from_pretrained(str(directory), **kwargs)

    from transformers import AutoTokenizer
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    if name is not None and tokenizer_class_from_name(name) is None and tokenizer_class_from_name(
            name.removesuffix("Fast")) is None:
        raise ConfigError(f"{config_file} names tokenizer_class {name!r}, which is neither InternLM2Tokenizer nor "
                         "a transformers tokenizer; remote tokenizer code is not run. Supported: "
                         f"{', '.join(_INTERNLM2_CLASSES)} and the transformers classes (Qwen2Tokenizer, "
                         "LlamaTokenizer, PreTrainedTokenizerFast, ...)")
    kwargs.setdefault("trust_remote_code", False)
    return AutoTokenizer.from_pretrained(str(directory), **kwargs)
