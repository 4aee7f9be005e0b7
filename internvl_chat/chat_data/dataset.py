"""Samples as the trainer sees them: media loaded and tiled, the conversation tokenized and masked, batches
padded, and the order in which they are drawn.

:class:`ChatDataset` turns one dataset of the meta json into items ``{input_ids, labels, position_ids,
pixel_values, image_flags}``: images tiled as at inference (:func:`internvl.data.chat_image.dynamic_preprocess`,
the thumbnail last), a multi-image sample's tile budget split as upstream (``max(1, max_dynamic_patch //
num_images)`` each), video frames one tile each behind ``Frame-i: <image>`` lines, a pure-text sample with
one white tile flagged 0 (so every batch runs the vision model, as upstream). A sample that turns out to
be unusable (an image that does not decode, a tokenization mismatch, an answer cut away; see
:mod:`.preprocess`) becomes a *void* item: one token, no trained label, its ``file:line`` and reason
attached. The collator passes these on as ``bad_samples`` and the trainer counts them against
``--max_bad_samples``: nothing is skipped unreported.

:func:`collate` is upstream's ``concat_pad_data_collator``: ``input_ids`` padded with 0, ``labels`` with -100,
``position_ids`` with 0, tiles of all samples concatenated; the attention mask marks the real tokens
(upstream recomputes it as ``input_ids != 0``, which also hides real tokens of id 0).

:class:`ChatSampler` draws the training order: a seeded permutation per epoch, optionally grouped by length
(``--group_by_length``, by the exact lengths of :mod:`.lengths`: the samples of one optimizer step have similar lengths and
are dealt to the ranks and accumulation steps in chunks of equal total length) and per-dataset
resampling (``--use_data_resampling``: datasets drawn in proportion to the square root of their size).
It draws ``(index, epoch)`` keys, and a sample's random choices (video frame count, JPEG quality with
``data_augment``) come from that key and the seed: the same on every run, so a resumed run is exact.
"""
from __future__ import annotations

import io
import logging
import math
import random
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from PIL import Image

from internvl.data.chat_image import sample_video_frames, dynamic_preprocess, find_closest_aspect_ratio, target_grids
from internvl.errors import ConfigError
from internvl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageDecodeError, build_transform, open_image

from .chat_jsonl import VIDEO_PLACEHOLDER, ChatSample, DatasetSpec, SampleProblem
from .preprocess import IGNORE_INDEX, Tokenized, UnusableSample, tokenize_conversation

__all__ = ["NORMALIZATION", "DataOptions", "ChatDataset", "ChatConcatDataset", "collate", "ChatSampler",
           "length_grouped_indices", "estimate_length", "video_turns"]

log = logging.getLogger(__name__)

NORMALIZATION = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD),
                 "clip": ((0.4814546, 0.4578275, 0.40821073), (0.2686295, 0.2613025, 0.2757711)),
                 "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}


@dataclass(frozen=True)
class DataOptions:
    """The data flags the samples depend on (``DataTrainingArguments`` and the model's token count)."""

    template: str
    num_image_token: int
    image_size: int = 448
    max_seq_length: int = 8192
    dynamic_image_size: bool = False
    use_thumbnail: bool = False
    min_dynamic_patch: int = 1
    max_dynamic_patch: int = 12
    pad2square: bool = False
    normalize_type: str = "imagenet"
    min_num_frame: int = 8
    max_num_frame: int = 32

    def __post_init__(self):
        if self.normalize_type not in NORMALIZATION:
            raise ConfigError(f"--normalize_type {self.normalize_type!r}: use one of {', '.join(NORMALIZATION)}")
        if not 1 <= self.min_dynamic_patch <= self.max_dynamic_patch:
            raise ConfigError(f"need 1 <= --min_dynamic_patch <= --max_dynamic_patch, got {self.min_dynamic_patch} "
                              f"and {self.max_dynamic_patch}")
        if not 1 <= self.min_num_frame <= self.max_num_frame:
            raise ConfigError(f"need 1 <= --min_num_frame <= --max_num_frame, got {self.min_num_frame} and "
                              f"{self.max_num_frame}")
        if self.max_seq_length < 2:
            raise ConfigError(f"--max_seq_length must be at least 2, got {self.max_seq_length}")


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    """Re-encode as JPEG (upstream's training augmentation draws the quality from 75..100)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


class _PadToSquare:
    """Pad to a square with the normalisation mean colour, the image centred (``--pad2square``)."""

    def __init__(self, mean):
        self.fill = tuple(int(x * 255) for x in mean)

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        if width == height:
            return image
        side = max(width, height)
        out = Image.new(image.mode, (side, side), self.fill)
        out.paste(image, ((side - width) // 2, (side - height) // 2))
        return out


def count_tiles(width: int, height: int, options: DataOptions, max_num: int) -> int:
    """How many tiles :func:`dynamic_preprocess` cuts from an image of this size (without resizing it)."""
    if not options.dynamic_image_size:
        return 1
    cols, rows = find_closest_aspect_ratio(width / height, target_grids(options.min_dynamic_patch, max_num),
                                           width, height, options.image_size)
    tiles = cols * rows
    return tiles + 1 if options.use_thumbnail and tiles > 1 else tiles


def estimate_length(sample: ChatSample, tokenizer, options: DataOptions, max_dynamic_patch: int) -> int:
    """Upstream's ``group_by_length`` estimate: the line's ``length`` if it has one, else the tokens of its
    texts joined by newlines plus ``num_image_token x (max_dynamic_patch + use_thumbnail)``."""
    if sample.length is not None:
        return sample.length
    text = "\n".join(value for _, value in ([("system", sample.system)] if sample.system else []) + sample.turns)
    return len(tokenizer(text).input_ids) + options.num_image_token * (max_dynamic_patch + int(options.use_thumbnail))


def video_turns(turns, num_frames: int) -> list:
    """The conversation with ``<video>`` replaced by ``num_frames`` lines ``Frame-i: <image>``."""
    lines = "".join(f"Frame-{i}: <image>\n" for i in range(1, num_frames + 1))
    return [(role, text.replace(VIDEO_PLACEHOLDER + "\n", lines).replace(VIDEO_PLACEHOLDER, lines))
            for role, text in turns]


def _where_error(sample: ChatSample, err: Exception) -> SampleProblem:
    return SampleProblem(sample.where, str(err))


class ChatDataset(torch.utils.data.Dataset):
    """The items of one meta-json dataset (see the module doc)."""

    def __init__(self, spec: DatasetSpec, samples: Sequence[ChatSample], tokenizer, options: DataOptions):
        self.spec, self.samples, self.tokenizer, self.options = spec, list(samples), tokenizer, options
        self.max_dynamic_patch = spec.max_dynamic_patch or options.max_dynamic_patch
        if self.max_dynamic_patch < options.min_dynamic_patch:
            raise ConfigError(f"dataset {spec.name!r}: max_dynamic_patch {self.max_dynamic_patch} is below "
                              f"--min_dynamic_patch {options.min_dynamic_patch}")
        mean, std = NORMALIZATION[options.normalize_type]
        self.to_tensor = build_transform(options.image_size, "resize", mean=mean, std=std)  # bicubic resize, normalise
        self.augment = spec.data_augment  # JPEG re-encoding of each tile (upstream's train transform)
        self.pad = _PadToSquare(mean) if options.pad2square and not spec.data_augment else None  # eval transform only
        self.seed = 0  # with the epoch and the index, it decides a sample's random choices
        self._lengths: Optional[tuple] = None

    def __len__(self) -> int:
        return len(self.samples)

    def _exact(self) -> tuple:
        if self._lengths is None:
            from .lengths import dataset_lengths

            self._lengths = dataset_lengths(self)
        return self._lengths

    @property
    def lengths(self) -> list:
        """The tokens of each sample as built in epoch 0 (exact; cached next to the data: :mod:`.lengths`)."""
        return self._exact()[0]

    @property
    def tiles(self) -> list:
        """The tiles of each sample (a pure-text sample's one white tile included)."""
        return self._exact()[1]

    def epoch_lengths(self, epoch: int) -> list:
        """:attr:`lengths` in ``epoch``: a video sample's frame count is drawn per epoch."""
        if epoch == 0 or not any(s.video is not None for s in self.samples):
            return self.lengths
        from .lengths import sample_length

        return [sample_length(self, i, epoch)[0] if s.video is not None else n
                for i, (s, n) in enumerate(zip(self.samples, self.lengths))]

    def estimated_lengths(self) -> list:
        """Upstream's estimate (:func:`estimate_length`), for comparison (``benchmarks/chat_finetune.py``)."""
        return [estimate_length(s, self.tokenizer, self.options, self.max_dynamic_patch) for s in self.samples]

    # -------------------------------------------------------------------------------------- media
    def _frames(self, sample: ChatSample, num_frames: int) -> list:
        try:
            return sample_video_frames(sample.video, num_frames, None)
        except ImportError:
            raise
        except Exception as err:  # the readers raise their own types for undecodable files
            raise UnusableSample(f"cannot decode video {sample.video}: {err}") from err

    def _images(self, sample: ChatSample) -> list:
        images = []
        for path in sample.images:
            try:
                images.append(open_image(path))
            except (FileNotFoundError, ImageDecodeError) as err:
                raise UnusableSample(str(err)) from err
        return images

    def tiles_per_image(self, num_images: int) -> int:
        """Most tiles each image of a sample with ``num_images`` images gets: ``--max_dynamic_patch`` shared among
        several images (at least one each), as upstream."""
        return max(1, self.max_dynamic_patch // num_images) if num_images > 1 else self.max_dynamic_patch

    def media(self, sample: ChatSample, rng: random.Random, num_frames: Optional[int] = None, pixels: bool = True):
        """``(turns, tiles per image, tile images or None)``; ``<video>`` becomes the frame lines."""
        turns = sample.turns
        if sample.video is not None:
            if num_frames is None:
                num_frames = rng.randint(self.options.min_num_frame, self.options.max_num_frame)
            frames = self._frames(sample, num_frames)
            return video_turns(turns, len(frames)), [1] * len(frames), frames if pixels else None
        images = self._images(sample)
        max_num = self.tiles_per_image(len(images))
        if not pixels:
            return turns, [count_tiles(*im.size, self.options, max_num) for im in images], None
        tiles, counts = [], []
        for image in images:
            cut = (dynamic_preprocess(image, self.options.min_dynamic_patch, max_num, self.options.image_size,
                                      self.options.use_thumbnail) if self.options.dynamic_image_size else [image])
            tiles += cut
            counts.append(len(cut))
        return turns, counts, tiles

    def tokenize(self, sample: ChatSample, turns, counts: Sequence[int]) -> Tokenized:
        return tokenize_conversation(self.options.template, turns, self.tokenizer,
                                     [self.options.num_image_token * n for n in counts],
                                     self.options.max_seq_length, system=sample.system)

    # -------------------------------------------------------------------------------------- items
    def build(self, sample: ChatSample, rng: random.Random) -> dict:
        """The training item of ``sample``; raises :class:`SampleProblem` when it is unusable."""
        try:
            turns, counts, tiles = self.media(sample, rng)
            tokenized = self.tokenize(sample, turns, counts)
        except UnusableSample as err:
            raise _where_error(sample, err) from None
        if tiles:
            pixel_values = torch.stack([self.tile_tensor(tile, rng) for tile in tiles])
            flags = torch.ones(len(tiles), dtype=torch.long)
        else:  # pure text: one white tile the model skips (image_flags 0)
            pixel_values = self._white_tile()
            flags = torch.zeros(1, dtype=torch.long)
        n = len(tokenized.input_ids)
        return {"input_ids": torch.tensor(tokenized.input_ids, dtype=torch.long),
                "labels": torch.tensor(tokenized.labels, dtype=torch.long),
                "position_ids": torch.arange(n, dtype=torch.long), "pixel_values": pixel_values, "image_flags": flags}

    def tile_tensor(self, tile: Image.Image, rng: random.Random) -> torch.Tensor:
        if self.augment:
            tile = _jpeg(tile, rng.randint(75, 100))
        elif self.pad is not None:
            tile = self.pad(tile)
        return self.to_tensor(tile)

    def _white_tile(self) -> torch.Tensor:
        size = self.options.image_size
        return self.to_tensor(Image.new("RGB", (size, size), (255, 255, 255))).unsqueeze(0)

    def void(self, problem: SampleProblem) -> dict:
        """The stand-in for an unusable sample: one untrained token, one skipped tile, and the reason."""
        return {"input_ids": torch.zeros(1, dtype=torch.long), "labels": torch.full((1,), IGNORE_INDEX),
                "position_ids": torch.zeros(1, dtype=torch.long), "pixel_values": self._white_tile(),
                "image_flags": torch.zeros(1, dtype=torch.long), "bad_sample": (problem.where, problem.reason)}

    def rng(self, index: int, epoch: int = 0) -> random.Random:
        """The random source of one sample in one epoch (video frame count, JPEG quality): the same on every
        run, so a resumed run sees exactly the samples the interrupted one would have."""
        return random.Random(f"{self.seed}:{epoch}:{index}")

    def __getitem__(self, key) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        sample = self.samples[index]
        try:
            return self.build(sample, self.rng(index, epoch))
        except SampleProblem as problem:
            return self.void(problem)


class ChatConcatDataset(torch.utils.data.ConcatDataset):
    """The datasets of a meta json, in its order; ``lengths`` and ``sizes`` feed :class:`ChatSampler`."""

    datasets: list

    @property
    def lengths(self) -> list:
        return [n for d in self.datasets for n in d.lengths]

    @property
    def tiles(self) -> list:
        return [n for d in self.datasets for n in d.tiles]

    def epoch_lengths(self, epoch: int) -> list:
        return [n for d in self.datasets for n in d.epoch_lengths(epoch)]

    @property
    def sizes(self) -> list:
        return [len(d) for d in self.datasets]

    def __getitem__(self, key) -> dict:
        """``index`` or ``(index, epoch)`` (what :class:`ChatSampler` draws)."""
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        dataset, local = self.locate(index)
        return dataset[(local, epoch)]

    def set_seed(self, seed: int) -> None:
        for dataset in self.datasets:
            dataset.seed = seed

    def locate(self, index: int) -> tuple[ChatDataset, int]:
        import bisect

        which = bisect.bisect_right(self.cumulative_sizes, index)
        return self.datasets[which], index - (self.cumulative_sizes[which - 1] if which else 0)


def collate(features: Sequence[dict]) -> dict:
    """Pad and stack a batch (see the module doc); void items' reasons go to ``bad_samples``."""
    longest = max(len(f["input_ids"]) for f in features)
    batch_size = len(features)
    input_ids = torch.zeros(batch_size, longest, dtype=torch.long)
    labels = torch.full((batch_size, longest), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros(batch_size, longest, dtype=torch.long)
    attention_mask = torch.zeros(batch_size, longest, dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        input_ids[i, :n], labels[i, :n], position_ids[i, :n] = f["input_ids"], f["labels"], f["position_ids"]
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask, "position_ids": position_ids,
            "pixel_values": torch.cat([f["pixel_values"] for f in features]),
            "image_flags": torch.cat([f["image_flags"] for f in features]),
            "bad_samples": [f["bad_sample"] for f in features if "bad_sample" in f]}


def _even_chunks(indices: list, lengths: Sequence[int], num_chunks: int) -> list:
    """Deal ``indices`` (longest first) into ``num_chunks`` chunks of equal count, each next index going to
    the chunk with the smallest total length so far (LLaVA's and upstream's ``split_to_even_chunks``)."""
    if len(indices) % num_chunks:
        return [indices[i::num_chunks] for i in range(num_chunks)]
    per_chunk = len(indices) // num_chunks
    chunks = [[] for _ in range(num_chunks)]
    totals = [0.0] * num_chunks
    for index in indices:
        shortest = totals.index(min(totals))
        chunks[shortest].append(index)
        totals[shortest] += lengths[index]
        if len(chunks[shortest]) == per_chunk:
            totals[shortest] = math.inf
    return chunks


def length_grouped_indices(order: Sequence[int], lengths: Sequence[int], batch_size: int, num_chunks: int,
                           generator: Optional[torch.Generator] = None, mega_steps: int = 50) -> list:
    """Length grouping of a shuffled ``order``, one optimizer step (``batch_size x num_chunks`` samples: every
    rank's micro-batches) at a time. Mega-batches of ``mega_steps`` steps are sorted longest first and cut into
    steps, so a step's samples have similar lengths (little padding); each step is dealt into ``num_chunks``
    chunks of about equal total length (upstream's balancing across ranks and accumulation steps); the steps
    of a mega-batch are shuffled, the longest first (an out-of-memory shows at once).

    Upstream's sampler (LLaVA's) sorts only within one step, which balances the ranks but leaves the padding of
    random batches (``benchmarks/chat_finetune.py`` measures both)."""
    step = batch_size * num_chunks
    out = []
    for start in range(0, len(order), step * mega_steps):
        mega = sorted(order[start:start + step * mega_steps], key=lambda i: lengths[i], reverse=True)
        steps = [mega[i:i + step] for i in range(0, len(mega), step)]
        rest = torch.randperm(len(steps) - 1, generator=generator).tolist() if len(steps) > 1 else []
        for k in [0] + [r + 1 for r in rest]:
            for chunk in _even_chunks(steps[k], lengths, num_chunks):
                out += chunk
    return out


class ChatSampler(torch.utils.data.Sampler):
    """The training order (see the module doc); the same on every rank for the same seed and epoch, so
    accelerate can deal its batches to the ranks."""

    def __init__(self, lengths: Sequence[int], sizes: Sequence[int], batch_size: int, num_chunks: int,
                 group_by_length: bool = False, resample: bool = False, seed: int = 0):
        self.lengths, self.sizes = list(lengths), list(sizes)
        self.batch_size, self.num_chunks = batch_size, num_chunks
        self.group_by_length, self.resample, self.seed = group_by_length, resample, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def _order(self, generator: torch.Generator) -> list:
        total = len(self.lengths)
        if not self.resample or len(self.sizes) < 2:
            return torch.randperm(total, generator=generator).tolist()
        # Each draw picks a dataset with probability sqrt(size) / sum(sqrt(sizes)), then a sample of it.
        weights = torch.tensor([math.sqrt(n) for n in self.sizes], dtype=torch.double)
        datasets = torch.multinomial(weights, total, replacement=True, generator=generator).tolist()
        offsets = [0]
        for n in self.sizes[:-1]:
            offsets.append(offsets[-1] + n)
        picks = [torch.randint(self.sizes[d], (1,), generator=generator).item() for d in datasets]
        return [offsets[d] + p for d, p in zip(datasets, picks)]

    def __iter__(self):
        """``(index, epoch)`` keys: the dataset draws a sample's random choices from them."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = self._order(generator)
        if self.group_by_length:
            order = length_grouped_indices(order, self.lengths, self.batch_size, self.num_chunks, generator)
        return iter([(index, self.epoch) for index in order])
