"""A tiny SentencePiece model in the LLaMA / InternLM2 recipe, trained on the kit's captions.

The published checkpoints ship a SentencePiece ``tokenizer.model`` (BPE, byte fallback, ids
unk=0, bos=1, eos=2, no pad piece). Tests and demos cannot download one, so they train their own
in a second on the synthetic captions (English and Chinese) plus a few lines of Japanese, Arabic
and Italian, and write it where a checkpoint directory keeps it::

    from internvl.datakit import train_sentencepiece
    train_sentencepiece("tiny_ckpt")            # -> tiny_ckpt/tokenizer.model

Byte fallback means any text, in any script, encodes without ``<unk>``: characters the model never
saw become byte pieces, as in the published tokenizers.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable, Optional

from ..data.synthetic import SyntheticImages

__all__ = ["train_sentencepiece", "MULTILINGUAL_LINES"]

# Short sentences in the XTD / multilingual-retrieval languages, so their common characters get
# pieces of their own and the rest is covered by byte fallback.
MULTILINGUAL_LINES = (
    "a red circle on a striped background",
    "一只红色的圆形在条纹背景上",
    "縞模様の背景に赤い円があります",
    "دائرة حمراء على خلفية مخططة",
    "un cerchio rosso su uno sfondo a strisce",
    "English caption:",
    "summarize:",
)


def train_sentencepiece(out_dir: str | os.PathLike, vocab_size: int = 1000, num_captions: int = 400,
                        extra_lines: Iterable[str] = (), kit: Optional[SyntheticImages] = None) -> Path:
    """Train a BPE SentencePiece model with byte fallback and write ``out_dir/tokenizer.model``.

    Deterministic for the same arguments (single-threaded training on a fixed corpus)."""
    import sentencepiece as spm

    kit = kit or SyntheticImages()
    lines = []
    for i in range(num_captions):
        s = kit.sample(i)
        lines += [s.caption_en, s.caption_zh]
        lines += [line for qa in s.qa for line in (qa.question_en, qa.answer_en, qa.question_zh, qa.answer_zh)]
    lines += list(MULTILINGUAL_LINES) * 4 + list(extra_lines)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=vocab_size,
        hard_vocab_limit=False, byte_fallback=True, character_coverage=1.0, split_digits=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, normalization_rule_name="identity",
        add_dummy_prefix=True, remove_extra_whitespaces=False, num_threads=1, minloglevel=2)
    path = out_dir / "tokenizer.model"
    path.write_bytes(model.getvalue())
    return path
