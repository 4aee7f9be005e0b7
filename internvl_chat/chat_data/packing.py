"""Packed training (upstream's ``--use_packed_ds``): several samples in one row of up to ``--max_packed_tokens``
tokens and ``--num_images_expected`` tiles, attention kept inside each sample.

The packing is planned, not streamed. Upstream's ``PackedDataset`` fills a buffer of open packs from a stream
of built samples and yields a pack when it is full or the buffer overflows; its position in the stream is
worker state that a resumed run must restore. Here every sample's exact length and tile count is known
before any is built (:mod:`.lengths`), so :class:`PackedSampler` packs each epoch's shuffled order up front
with the same bounded-buffer rule, first fit: a sample goes into the first open pack it fits (tokens and
tiles), else opens one; a pack that is full leaves at once; when more than ``--max_buffer_size`` packs are
open, the fullest leaves. The plan is a pure function of the seed and the epoch, so a resumed run (the
Trainer skips the batches already trained) sees exactly the packs the interrupted one would have, and the
number of packs (the epoch's steps) is known in advance. Samples are never cut: one longer than
``--max_packed_tokens`` (or with more tiles than ``--num_images_expected``) is refused when the plan is made,
naming it, unless ``--allow_overflow True`` lets it form a pack of its own.

:func:`packed_collate` builds a batch of packs: per row the samples' tokens concatenated, ``position_ids``
restarting at 0 for every sample, ``sample_ids`` (the sample of each token; the model keeps attention inside
each: flash-attn varlen on CUDA, else a block-diagonal mask) and all tiles of all rows concatenated, so the
vision model runs once per batch. ``--strict_mode True`` pads every row to ``--max_packed_tokens`` and every
pack's tiles to ``--num_images_expected`` (fixed shapes, as upstream). Each sample's first label is dropped
(nothing before it in its own sequence predicts it, exactly as unpacked).

Loss reductions (upstream's ``len2weight``): every trained token of a sample with ``n`` trained tokens
weighs ``1`` (``token``), ``1/n`` (``sample``: each sample counts once) or ``1/sqrt(n)`` (``square``); the
loss is the weighted sum divided by the sum of the weights of the optimizer step on this GPU, or over all
GPUs with ``--loss_reduction_all_gather True`` (upstream divides per micro-batch; a step's loss here does not
depend on how it is split into accumulation steps). The reductions apply to unpacked training as well.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from internvl.errors import ConfigError, DataError

from .preprocess import IGNORE_INDEX

__all__ = ["PackingOptions", "plan_packs", "PackedSampler", "PackedChatDataset", "packed_collate", "len2weight",
           "token_weights", "with_loss_weights"]

log = logging.getLogger(__name__)

LOSS_REDUCTIONS = ("token", "sample", "square")


@dataclass(frozen=True)
class PackingOptions:
    """Upstream's packed-training flags (``DataTrainingArguments``)."""

    max_packed_tokens: int = 8192
    num_images_expected: int = 40
    max_buffer_size: int = 20
    log_freq: int = 1000
    strict_mode: bool = True
    replacement: bool = False
    allow_overflow: bool = False
    loss_reduction: str = "token"

    def __post_init__(self):
        if self.loss_reduction not in LOSS_REDUCTIONS:
            raise ConfigError(f"--loss_reduction {self.loss_reduction!r}: use one of {', '.join(LOSS_REDUCTIONS)}")
        for name in ("max_packed_tokens", "num_images_expected", "max_buffer_size", "log_freq"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1, got {getattr(self, name)}")

    @classmethod
    def from_args(cls, data_args) -> "PackingOptions":
        return cls(**{name: getattr(data_args, name) for name in cls.__dataclass_fields__})


def plan_packs(order: Sequence[int], tokens: Sequence[int], tiles: Sequence[int], options: PackingOptions,
               name_of: Callable[[int], str] = str) -> list:
    """The packs (lists of sample indices, in ``order`` within each) of one epoch: first fit into a buffer of
    at most ``max_buffer_size`` open packs (see the module doc)."""
    limit, max_tiles = options.max_packed_tokens, options.num_images_expected
    packs, open_packs = [], []  # open: [indices, tokens, tiles]
    for index in order:
        n, t = tokens[index], tiles[index]
        if n > limit or t > max_tiles:
            if not options.allow_overflow:
                raise DataError(f"{name_of(index)}: {n} tokens and {t} tiles do not fit one pack of --max_packed_tokens "
                                f"{limit} and --num_images_expected {max_tiles}; raise them, lower --max_seq_length / "
                                "--max_dynamic_patch, or pass --allow_overflow True to give such a sample a pack of "
                                "its own")
            packs.append([index])
            continue
        for pack in open_packs:
            if pack[1] + n <= limit and pack[2] + t <= max_tiles:
                break
        else:
            pack = [[], 0, 0]
            open_packs.append(pack)
        pack[0].append(index)
        pack[1] += n
        pack[2] += t
        if pack[1] == limit or pack[2] == max_tiles:
            open_packs.remove(pack)
            packs.append(pack[0])
        elif len(open_packs) > options.max_buffer_size:
            fullest = max(open_packs, key=lambda p: p[1])
            open_packs.remove(fullest)
            packs.append(fullest[0])
    packs += [p[0] for p in sorted(open_packs, key=lambda p: -p[1])]
    return packs


class PackedSampler:
    """The packs of each epoch, as tuples of ``(index, epoch)`` keys (what :class:`PackedChatDataset` loads).

    ``dataset`` gives ``epoch_lengths(epoch)``, ``tiles``, ``sizes`` and ``locate``. The order within an epoch
    is a seeded permutation, or with ``--replacement`` / ``--use_data_resampling`` draws with replacement,
    datasets weighted by size (by its square root with ``--use_data_resampling``), as upstream's restarted
    streams repeat small datasets. Stable per (seed, epoch): resuming is exact."""

    def __init__(self, dataset, options: PackingOptions, seed: int = 0, resample: bool = False):
        self.dataset, self.options, self.seed, self.resample = dataset, options, int(seed), resample
        self.epoch = 0
        self._plans: dict = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _order(self, generator: torch.Generator) -> list:
        sizes = self.dataset.sizes
        total = sum(sizes)
        if not (self.resample or self.options.replacement):
            return torch.randperm(total, generator=generator).tolist()
        weights = torch.tensor([math.sqrt(n) if self.resample else float(n) for n in sizes], dtype=torch.double)
        datasets = torch.multinomial(weights, total, replacement=True, generator=generator).tolist()
        offsets = [sum(sizes[:d]) for d in range(len(sizes))]
        return [offsets[d] + int(torch.randint(sizes[d], (1,), generator=generator)) for d in datasets]

    def _name(self, index: int) -> str:
        dataset, local = self.dataset.locate(index)
        return dataset.samples[local].where

    def plan(self, epoch: int) -> list:
        if epoch not in self._plans:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = self._order(generator)
            tokens = self.dataset.epoch_lengths(epoch)
            packs = plan_packs(order, tokens, self.dataset.tiles, self.options, self._name)
            filled = sum(tokens[i] for p in packs for i in p) / max(1, len(packs) * self.options.max_packed_tokens)
            log.info("epoch %d: %d samples in %d packs of up to %d tokens (%.1f%% filled on average)", epoch,
                     len(order), len(packs), self.options.max_packed_tokens, 100 * filled)
            self._plans = {epoch: packs}  # one epoch at a time
        return self._plans[epoch]

    def __len__(self) -> int:
        return len(self.plan(self.epoch))

    def __iter__(self):
        epoch = self.epoch
        return iter([tuple((index, epoch) for index in pack) for pack in self.plan(epoch)])


class PackedChatDataset(torch.utils.data.Dataset):
    """Loads a pack (a tuple of ``(index, epoch)`` keys) of a :class:`.dataset.ChatConcatDataset` as the list
    of its items; logs every ``--log_freq`` packs loaded (per process) how full they are."""

    def __init__(self, dataset, options: PackingOptions):
        self.dataset, self.options = dataset, options
        self._loaded = self._tokens = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):  # lengths, tiles, sizes, locate, datasets, set_seed...
        if name in ("dataset", "options"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, pack) -> list:
        items = [self.dataset[key] for key in pack]
        self._loaded += 1
        self._tokens += sum(len(item["input_ids"]) for item in items)
        if self._loaded % self.options.log_freq == 0:
            log.info("%d packs loaded, %.1f%% of --max_packed_tokens %d filled on average", self._loaded,
                     100 * self._tokens / (self._loaded * self.options.max_packed_tokens),
                     self.options.max_packed_tokens)
        return items


def len2weight(trained: int, reduction: str) -> float:
    """Upstream's weight of each trained token of a sample with ``trained`` trained tokens."""
    if trained == 0:
        return 0.0
    if reduction == "token":
        return 1.0
    if reduction == "sample":
        return 1.0 / trained
    if reduction == "square":
        return 1.0 / math.sqrt(trained)
    raise ConfigError(f"--loss_reduction {reduction!r}: use one of {', '.join(LOSS_REDUCTIONS)}")


def token_weights(labels: torch.Tensor, sample_ids: torch.Tensor, reduction: str) -> torch.Tensor:
    """``(batch, seq)`` float32: each trained label's weight (0 where the label is ignored), by the number of
    trained labels of its sample (a sample: a run of equal ``sample_ids`` within a row)."""
    weights = torch.zeros(labels.shape, dtype=torch.float32)
    trained = labels != IGNORE_INDEX
    for row in range(labels.shape[0]):
        for sample in torch.unique(sample_ids[row]).tolist():
            where = (sample_ids[row] == sample) & trained[row]
            weights[row][where] = len2weight(int(where.sum()), reduction)
    return weights


def with_loss_weights(collate_fn: Callable, reduction: str) -> Callable:
    """An unpacked collate whose batches also carry ``loss_weight`` (one sample per row)."""
    def collate(features):
        batch = collate_fn(features)
        labels = batch["labels"].clone()
        labels[:, 0] = IGNORE_INDEX  # never predicted (the first token of a row): not counted
        rows = torch.arange(labels.shape[0])[:, None].expand_as(labels)
        batch["loss_weight"] = token_weights(labels, rows, reduction)
        return batch

    return collate


def packed_collate(features: Sequence[Sequence[dict]], options: PackingOptions) -> dict:
    """A batch of packs (see the module doc): ``input_ids``, ``labels``, ``position_ids``, ``sample_ids``,
    ``pixel_values``, ``image_flags``, ``loss_weight`` and ``bad_samples``."""
    rows, tiles, flags, bad = [], [], [], []
    for pack in features:
        ids, labels, positions, samples = [], [], [], []
        pack_tiles = 0
        for j, item in enumerate(pack):
            n = len(item["input_ids"])
            label = item["labels"].clone()
            label[0] = IGNORE_INDEX  # nothing of this sample precedes it: unpacked, it is never predicted either
            ids.append(item["input_ids"])
            labels.append(label)
            positions.append(item["position_ids"])
            samples.append(torch.full((n,), j, dtype=torch.long))
            tiles.append(item["pixel_values"])
            flags.append(item["image_flags"])
            pack_tiles += item["pixel_values"].shape[0]
            if "bad_sample" in item:
                bad.append(item["bad_sample"])
        if options.strict_mode and pack_tiles < options.num_images_expected:
            missing = options.num_images_expected - pack_tiles
            tiles.append(torch.zeros((missing,) + tuple(tiles[-1].shape[1:]), dtype=tiles[-1].dtype))
            flags.append(torch.zeros(missing, dtype=torch.long))
        rows.append((torch.cat(ids), torch.cat(labels), torch.cat(positions), torch.cat(samples), len(pack)))
    longest = max(len(r[0]) for r in rows)
    if options.strict_mode:
        longest = max(longest, options.max_packed_tokens)
    batch = len(rows)
    input_ids = torch.zeros(batch, longest, dtype=torch.long)
    labels = torch.full((batch, longest), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros(batch, longest, dtype=torch.long)
    sample_ids = torch.zeros(batch, longest, dtype=torch.long)
    for i, (ids, label, positions, samples, count) in enumerate(rows):
        n = len(ids)
        input_ids[i, :n], labels[i, :n], position_ids[i, :n], sample_ids[i, :n] = ids, label, positions, samples
        sample_ids[i, n:] = count  # the padding: a block of its own, attending only to itself
        position_ids[i, n:] = torch.arange(longest - n)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "sample_ids": sample_ids,
            "pixel_values": torch.cat(tiles), "image_flags": torch.cat(flags),
            "loss_weight": token_weights(labels, sample_ids, options.loss_reduction), "bad_samples": bad}


def weighted_loss_denominator(batches: Sequence[dict]) -> Optional[torch.Tensor]:
    """The sum of the weights of a step's batches that carry ``loss_weight`` (None if they do not)."""
    if not batches or "loss_weight" not in batches[0]:
        return None
    return sum(b["loss_weight"][:, 1:].sum(dtype=torch.float64) for b in batches)
