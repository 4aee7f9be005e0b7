"""Text and image preprocessing of InternVL-C/G (the HF modeling / processing split: the model is in
:mod:`internvl.models.internvl_cg`).

The published model card and evaluation code fix the conventions, and every pipeline takes them from here:

* retrieval (``encode_text``, zero-shot classification and retrieval, retrieval fine-tuning): ``summarize:``
  prefixed to every text, ``<s>`` and ``</s>`` added, right-padded with id 0 to 80 tokens;
* captioning (``generate``): the prompt ``English caption:``, ``<s>`` but no ``</s>``, left-padded;
* images: resized to the model's square input size (``force_image_size`` or the vision tower's), bicubic,
  ImageNet mean/std; classification resizes the shorter side and center-crops instead::

    from internvl.models.processing_internvl_cg import build_cg_tokenizer, image_transform
    tokenizer = build_cg_tokenizer("pretrained/InternVL-14B-224px", task="retrieval")
    input_ids = tokenizer.tokenize(["a photo of a red panda"]).input_ids
    transform = image_transform(model.config)   # or an int size
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence, Union

from ..errors import MissingFileError

__all__ = ["CGTokenizer", "build_cg_tokenizer", "image_transform", "RETRIEVAL_PREFIX", "CAPTION_PROMPT",
           "RETRIEVAL_MAX_LENGTH"]

# Text conventions of the published model card and evaluation code.
RETRIEVAL_PREFIX = "summarize:"
RETRIEVAL_MAX_LENGTH = 80
CAPTION_PROMPT = "English caption:"


class CGTokenizer:
    """The LLaMA tokenizer of an InternVL-C/G checkpoint with one task's conventions applied.

    ``task="retrieval"`` (the model card): ``summarize:`` prefixed to every text, ``<s>`` and ``</s>``
    added, truncated and right-padded with id 0 to 80 tokens, the input of ``encode_text`` /
    ``model(image=..., text=...)``.
    ``task="caption"`` (the caption evaluation): ``<s>`` but no ``</s>``, the prompt ``English caption:``,
    left-padded to the longest prompt of a batch, the input of ``generate``.

    ``tokenizer`` is the ``transformers.LlamaTokenizer`` itself (``add_eos_token`` set per task,
    ``pad_token_id`` 0); other attributes (``decode``, ``eos_token_id``, ...) are forwarded to it.
    """

    def __init__(self, tokenizer, task: str, prefix: str = "", prompt: str = CAPTION_PROMPT,
                 max_length: Optional[int] = None):
        self.tokenizer, self.task, self.prefix, self.prompt, self.max_length = tokenizer, task, prefix, prompt, max_length

    def __getattr__(self, name):
        if name == "tokenizer":  # not set yet (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.tokenizer, name)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def tokenize(self, texts: Union[str, Sequence[str], None] = None, return_tensors: str = "pt"):
        """``BatchEncoding`` with ``input_ids`` and ``attention_mask``.

        retrieval: ``texts`` are the captions / class prompts (the prefix is added here).
        caption: ``texts`` are prompts; None means one :attr:`prompt`. Give one per image for ``generate``
        (``[tok.prompt] * batch``)."""
        if texts is None:
            if self.task != "caption":
                raise ValueError("retrieval needs the texts to tokenize")
            texts = [self.prompt]
        if isinstance(texts, str):
            texts = [texts]
        texts = [self.prefix + t for t in texts]
        if self.task == "retrieval":
            return self.tokenizer(texts, return_tensors=return_tensors, max_length=self.max_length,
                                  truncation=True, padding="max_length")
        return self.tokenizer(texts, return_tensors=return_tensors, padding="longest")

    def batch_decode(self, token_ids, skip_special_tokens: bool = True, **kwargs) -> list[str]:
        """Strings of generated captions: special tokens and padding removed, whitespace stripped."""
        return [t.strip() for t in self.tokenizer.batch_decode(token_ids, skip_special_tokens=skip_special_tokens,
                                                               **kwargs)]


_TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json")


def build_cg_tokenizer(checkpoint_dir: Union[str, os.PathLike], task: str = "retrieval",
                       prompt: str = CAPTION_PROMPT) -> CGTokenizer:
    """The tokenizer of an InternVL-C/G checkpoint directory (``tokenizer.model`` + ``tokenizer_config.json``,
    a SentencePiece LLaMA tokenizer; see :class:`CGTokenizer` for the conventions of each ``task``).

    Equivalent to the published recipes: ``AutoTokenizer.from_pretrained(dir, use_fast=False,
    add_eos_token=True)`` with ``pad_token_id = 0`` for retrieval, and ``LlamaTokenizer.from_pretrained(dir)``
    with ``add_eos_token = False`` for captions.
    """
    from transformers import LlamaTokenizer

    if task not in ("retrieval", "caption"):
        raise ValueError(f"task must be 'retrieval' or 'caption', got {task!r}")
    directory = Path(checkpoint_dir).expanduser()
    if not directory.is_dir():
        raise MissingFileError(f"tokenizer directory not found: {directory}")
    if not (directory / "tokenizer.model").is_file():
        present = sorted(p.name for p in directory.iterdir())[:10]
        raise MissingFileError(f"{directory} has no LLaMA tokenizer: expected {' + '.join(_TOKENIZER_FILES)} "
                                f"(found {present or 'nothing'}); copy them from the original checkpoint "
                                "(OpenGVLab/InternVL-14B-224px)")
    kwargs = {}
    config_file = directory / "tokenizer_config.json"
    if not config_file.is_file() or "legacy" not in json.loads(config_file.read_text(encoding="utf-8")):
        kwargs["legacy"] = True  # what the published tokenizer got from the transformers of its time
    tokenizer = LlamaTokenizer.from_pretrained(str(directory), add_eos_token=task == "retrieval", **kwargs)
    tokenizer.pad_token_id = 0
    if task == "retrieval":
        tokenizer.padding_side = "right"  # encode_text reads the last real token at mask.sum() - 1
        return CGTokenizer(tokenizer, task, prefix=RETRIEVAL_PREFIX, max_length=RETRIEVAL_MAX_LENGTH)
    tokenizer.padding_side = "left"  # batched generation continues every prompt from its last token
    return CGTokenizer(tokenizer, task, prompt=prompt)


def image_transform(config, task: str = "retrieval"):
    """The evaluation transform, ``internvl.data.transforms.build_transform`` at the model's image size
    (an ``InternVLConfig``: ``force_image_size`` or ``vision_config.image_size``; or an int): bicubic,
    ImageNet mean/std.

    ``task="retrieval"`` or ``"caption"``: resize to a square (``"resize"``), as the published retrieval and
    caption evaluations do; ``task="classification"``: shorter side to the size, then a center crop
    (``"center_crop"``), what ``CLIPImageProcessor`` does with the published ``preprocessor_config.json``.
    """
    from ..data.transforms import build_transform

    size = config if isinstance(config, int) else config.image_size
    modes = {"retrieval": "resize", "caption": "resize", "classification": "center_crop"}
    if task not in modes:
        raise ValueError(f"task must be one of {sorted(modes)}, got {task!r}")
    return build_transform(size, modes[task])
