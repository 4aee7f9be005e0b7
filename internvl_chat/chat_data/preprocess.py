"""Conversation -> ``input_ids`` and ``labels``: the prompt of each template and which tokens are trained.

The labels are token for token those of upstream's ``preprocess_internlm`` (``internlm2-chat``),
``preprocess_mpt`` (``Hermes-2``), ``preprocess_phi3`` (``phi3-chat``) and ``preprocess_internvl2_5``
(``internvl2_5``): the answers of the ``gpt`` turns and the separator that ends each of them are
trained, everything else is ``-100``. The first three tokenize the whole prompt and then walk its
turns, counting the tokens of each piece tokenized on its own, exactly as upstream counts them;
``internvl2_5`` tokenizes each message on its own and concatenates.

Where upstream silently trains on nothing, this module raises :class:`UnusableSample` with the reason:

* the walk does not add up to the prompt's length ("tokenization mismatch": the pieces tokenize
  differently alone than in context, so the mask would be shifted). Upstream zeroes every label and
  prints a warning, and skips the check for samples cut at ``max_seq_length``; here it is checked
  before cutting, for every sample;
* cutting at ``max_seq_length`` removes image tokens (upstream asserts and retries another sample
  at random) or every trained token (upstream trains on nothing);
* the text holds image special tokens of its own.

Sequences are never padded here (the collator pads each batch to its longest sample).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from internvl.models.chat_model import IMG_CONTEXT_TOKEN, IMG_END_TOKEN, IMG_START_TOKEN
from internvl.models.conversation import get_conv_template
from internvl.errors import ConfigError

__all__ = ["IGNORE_INDEX", "TRAINING_TEMPLATES", "UnusableSample", "Tokenized", "check_template",
           "tokenize_conversation"]

IGNORE_INDEX = -100
TRAINING_TEMPLATES = ("internlm2-chat", "Hermes-2", "phi3-chat", "internvl2_5")


class UnusableSample(Exception):
    """A sample that cannot be trained on; the message says why (the caller adds ``file:line``)."""


@dataclass
class Tokenized:
    input_ids: list
    labels: list
    full_length: int  # before cutting at max_length

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.input_ids)

    @property
    def num_trained(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def check_template(name: str) -> None:
    if name not in TRAINING_TEMPLATES:
        raise ConfigError(f"--conv_style {name!r} has no training recipe; use one of {', '.join(TRAINING_TEMPLATES)} "
                          "(internlm2-chat: InternVL2-2B/8B/26B, Hermes-2: InternVL2-1B/40B/76B, phi3-chat: "
                          "InternVL2-4B, internvl2_5: InternVL2.5)")


def _count(tokenizer, text: str) -> int:
    """How upstream measures a piece: tokenized alone, special tokens (BOS) included."""
    return len(tokenizer(text).input_ids)


def _expand_images(turns, image_tokens: Sequence[int]) -> list:
    """Each ``<image>`` of the human turns, in order, becomes ``<img>`` + context tokens + ``</img>``."""
    pending = list(image_tokens)
    out = []
    for role, text in turns:
        while role == "human" and "<image>" in text and pending:
            text = text.replace("<image>", IMG_START_TOKEN + IMG_CONTEXT_TOKEN * pending.pop(0) + IMG_END_TOKEN, 1)
        out.append((role, text))
    if pending:
        raise UnusableSample(f"{len(pending)} image(s) have no '<image>' placeholder in the human turns")
    return out


def _prompt(template: str, turns, system: Optional[str]) -> tuple[str, object]:
    conv = get_conv_template(template)
    if system is not None:
        conv.system_message = system
    for role, text in turns:
        conv.append_message(conv.roles[0] if role == "human" else conv.roles[1], text)
    return conv.get_prompt(), conv


def _ignore(labels: list, start: int, stop: Optional[int] = None) -> None:
    stop = len(labels) if stop is None else min(stop, len(labels))
    for i in range(max(start, 0), stop):
        labels[i] = IGNORE_INDEX


def _walk_internlm2(prompt: str, conv, tokenizer, labels: list) -> int:
    """``preprocess_internlm``: <s> and everything up to each ``<|im_start|>assistant\\n`` ignored."""
    user, assistant = conv.roles
    cur = 1
    _ignore(labels, 0, 1)  # <s>
    parts = prompt.split(assistant)
    n = _count(tokenizer, parts[0] + assistant) - 1  # without its <s>
    _ignore(labels, cur, cur + n)
    cur += n
    for part in parts[1:-1]:
        pieces = part.split(user)
        if len(pieces) != 2:
            raise UnusableSample(f"an answer contains the template's role marker {user!r}")
        answer, question = pieces
        cur += _count(tokenizer, answer) - 1
        n = _count(tokenizer, user + question + assistant) - 1
        _ignore(labels, cur, cur + n)
        cur += n
    cur += _count(tokenizer, parts[-1]) - 1
    return cur


def _regroup(prompt: str, sep: str) -> list:
    """Split at the separator; regroup as [system + user + answer, user + answer, ...] (upstream's turns)."""
    turns = prompt.split(sep)
    return [sep.join(turns[:3])] + [sep.join(turns[i:i + 2]) for i in range(3, len(turns), 2)]


def _walk_hermes(prompt: str, conv, tokenizer, labels: list) -> int:
    """``preprocess_mpt``: no <s>; each turn's instruction up to ``<|im_end|><|im_start|>assistant\\n``
    ignored, the answer and its ``<|im_end|>`` trained."""
    boundary = conv.sep + conv.roles[1]
    cur = 0
    for turn in _regroup(prompt, conv.sep):
        if turn == "":
            break
        turn_len = _count(tokenizer, turn) + 1  # + the <|im_end|> the split removed
        parts = turn.split(boundary)
        if len(parts) != 2:
            break
        n = _count(tokenizer, parts[0] + boundary)
        _ignore(labels, cur, cur + n)
        cur += turn_len
    return cur


def _walk_phi3(prompt: str, conv, tokenizer, labels: list) -> int:
    """``preprocess_phi3``: <s> and every ``<|endoftext|>`` ignored, each answer and its ``<|end|>`` trained.

    Upstream's offsets (a turn is ``len - 1`` tokens, an instruction ``len - 2``, the first turn one more)
    assume the tokenizer it was written for (transformers 4's slow Phi-3 tokenizer): it adds <s>, and a ``▁``
    token before a special token that opens a text. They are derived here from the tokenizer instead, so the
    mask is upstream's with that tokenizer and still right with one that adds no ``▁`` (transformers 5's)."""
    boundary = conv.sep + conv.roles[1]
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")

    def plain(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    bos = _count(tokenizer, "a") - plain("a")
    # the extra token(s) before a special token that opens a text: tokens of "<|user|>\n" alone, minus what
    # the same text adds after another special token
    space = plain(conv.roles[0]) - (plain(conv.sep + conv.roles[0]) - plain(conv.sep))
    cur = bos
    _ignore(labels, 0, bos)
    for i, label in enumerate(labels):
        if label == endoftext:
            labels[i] = IGNORE_INDEX
    for i, turn in enumerate(_regroup(prompt, conv.sep)):
        if turn == "":
            break
        # the first turn keeps the leading ▁ the whole prompt has too; later ones drop theirs
        turn_len = _count(tokenizer, turn) - bos + 1 - (0 if i == 0 else space)
        parts = turn.split(boundary)
        if len(parts) != 2:
            break
        n = _count(tokenizer, parts[0] + boundary) - bos - (0 if i == 0 else space)
        _ignore(labels, cur, cur + n)
        cur += turn_len
    return cur


_WALKS = {"internlm2-chat": _walk_internlm2, "Hermes-2": _walk_hermes, "phi3-chat": _walk_phi3}


def _tokenize_internvl2_5(turns, system: Optional[str], tokenizer) -> tuple[list, list]:
    """``preprocess_internvl2_5``: chatml blocks tokenized one by one; system and user blocks ignored, each
    answer trained with its ``<|im_end|>`` but not the ``<|im_start|>assistant\\n`` before nor the ``\\n`` after."""
    if system is None:
        system = get_conv_template("internvl2_5").system_message
    blocks = [f"<|im_start|>system\n{system}<|im_end|>\n"]
    blocks += [f"<|im_start|>{'user' if role == 'human' else 'assistant'}\n{text}<|im_end|>\n" for role, text in turns]
    roles = ["system"] + [role for role, _ in turns]
    add_bos = bool(getattr(tokenizer, "add_bos_token", False))
    if add_bos:
        blocks[0] = tokenizer.bos_token + blocks[0]
    ids = [list(x) for x in tokenizer(blocks, padding=False, truncation=False).input_ids]
    if add_bos:  # the <s> each block got; the one written into the first block stays
        ids = [x[1:] for x in ids]
    prefix = _count(tokenizer, "<|im_start|>assistant\n") - (1 if add_bos else 0)
    input_ids, labels = [], []
    for role, block in zip(roles, ids):
        input_ids += block
        if role == "gpt":
            trained = list(block)
            trained[:prefix] = [IGNORE_INDEX] * min(prefix, len(trained))
            trained[-1:] = [IGNORE_INDEX]
            labels += trained
        else:
            labels += [IGNORE_INDEX] * len(block)
    return input_ids, labels


def tokenize_conversation(template: str, turns, tokenizer, image_tokens: Sequence[int], max_length: int,
                          system: Optional[str] = None) -> Tokenized:
    """``input_ids`` and ``labels`` of one conversation, cut at ``max_length``.

    ``turns``: ``[(role, text)]`` alternating ``human`` / ``gpt``; each ``<image>`` of the human turns
    stands for the next entry of ``image_tokens`` (context tokens of that image: ``num_image_token`` x tiles).
    Raises :class:`UnusableSample` (see the module doc)."""
    check_template(template)
    if template == "internlm2-chat":  # upstream strips every message for InternLM2 only
        turns = [(role, text.strip()) for role, text in turns]
        system = system.strip() if system is not None else None
    turns = _expand_images(turns, image_tokens)
    if template == "internvl2_5":
        input_ids, labels = _tokenize_internvl2_5(turns, system, tokenizer)
    else:
        prompt, conv = _prompt(template, turns, system)
        input_ids = list(tokenizer(prompt).input_ids)
        labels = list(input_ids)
        walked = _WALKS[template](prompt, conv, tokenizer, labels)
        if walked != len(input_ids):
            raise UnusableSample(
                f"tokenization mismatch: the {template} turns add up to {walked} tokens but the conversation is "
                f"{len(input_ids)} tokens (a piece tokenizes differently alone than in context), so the answer mask "
                "would be shifted; upstream trains on nothing here. Check the text at the turn boundaries (leading "
                "or trailing spaces, unusual characters), or that --conv_style matches the model's tokenizer")
        _ignore(labels, walked)
    full = len(input_ids)
    tokenized = Tokenized(input_ids[:max_length], labels[:max_length], full)
    _check_images(tokenized, tokenizer, image_tokens, max_length)
    if tokenized.num_trained == 0:
        why = (f"--max_seq_length {max_length} cuts the {full}-token sample before its first answer"
               if tokenized.truncated else "no answer token is trained")
        raise UnusableSample(f"nothing to train on: {why}")
    return tokenized


def _check_images(tokenized: Tokenized, tokenizer, image_tokens: Sequence[int], max_length: int) -> None:
    ids = tokenized.input_ids
    end_id = tokenizer.convert_tokens_to_ids(IMG_END_TOKEN)
    context_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
    ends, contexts = ids.count(end_id), ids.count(context_id)
    if tokenized.truncated and (ends != len(image_tokens) or contexts != sum(image_tokens)):
        raise UnusableSample(f"--max_seq_length {max_length} cuts into the image tokens of this "
                             f"{tokenized.full_length}-token sample ({ends} of {len(image_tokens)} images complete); "
                             "raise --max_seq_length or lower --max_dynamic_patch")
    if ends != len(image_tokens) or contexts != sum(image_tokens):
        raise UnusableSample(f"the tokenized sample has {ends} '</img>' and {contexts} '<IMG_CONTEXT>' tokens for "
                             f"{len(image_tokens)} image(s) of {sum(image_tokens)} context tokens")
