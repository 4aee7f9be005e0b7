"""Training data of the retrieval fine-tune: which caption files ``--dataset_name`` means, and the samples.

The caption formats are read by :mod:`internvl.data.retrieval` (shared with ``clip_benchmark``); this module
says where each named training set lives and turns captions into training samples, as upstream's
``FlickrDataset`` / ``COCODataset`` do:

* one sample per caption (an image with five captions is seen five times per epoch); the caption is cleaned
  with upstream's ``pre_caption`` (lower case, ``.!"()*#:;~`` dropped, at most 50 words);
* the image goes through ``RandomResizedCrop(size, scale=(0.5, 1.0), bicubic)`` and a horizontal flip (BLIP-2's
  fine-tuning augmentation), then the ImageNet normalisation;
* the texts are the caption (image-text matching, positive), the caption of a random sample of another image
  (matching, negative) and ``"summarize:" + caption`` (contrastive), tokenized with ``<s>`` and ``</s>``,
  truncated to ``--max_seq_length``, padded with id 0 (to ``--max_seq_length`` with ``--pad_to_max_length``,
  else to the longest text of the batch by :func:`collate`).

The random choices of a sample (its crop, flip and negative) are drawn from a generator seeded by (seed, epoch,
sample index): the same in every run whatever the number of data-loader workers, different every epoch, and a
resumed run draws exactly what the interrupted one would have.

Named datasets (paths relative to the working directory, as upstream; ``--data_root`` and ``--annotation``
replace them, and with both any other name is a dataset of your own, in the format ``--dataset_format`` or its
name or file suffix says):

====================  ======  ===========================  ==============================================
``--dataset_name``    format  images (``--data_root``)     captions (``--annotation``)
====================  ======  ===========================  ==============================================
flickr30k_en_train    flickr  ./data/flickr30k/Images/     ./data/flickr30k/flickr30k_train_karpathy.txt
flickr30k_cn_train    flickr  ./data/flickr30k/Images/     ./data/flickr30k/flickr30k_cn_train.txt
coco_karpathy_train   coco    ./data/coco/                 ./data/coco/annotations/coco_karpathy_train.json
====================  ======  ===========================  ==============================================
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from internvl.errors import ConfigError, DataError, MissingFileError
from internvl.data.retrieval import pre_caption, read_coco_captions, read_flickr_captions
from internvl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageDecodeError, open_image

__all__ = ["DatasetSpec", "DATASETS", "FORMATS", "resolve_dataset", "CaptionSample", "read_samples", "train_transform",
           "RetrievalTrainDataset", "collate", "SUMMARIZE_PREFIX"]

SUMMARIZE_PREFIX = "summarize:"
FORMATS = ("flickr", "coco")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    format: str  # "flickr" (a Flickr30K caption file) or "coco" (a COCO caption JSON)
    root: str  # the directory image paths in the annotation are relative to
    annotation: str


DATASETS = {spec.name: spec for spec in (
    DatasetSpec("flickr30k_en_train", "flickr", "./data/flickr30k/Images/",
                "./data/flickr30k/flickr30k_train_karpathy.txt"),
    DatasetSpec("flickr30k_cn_train", "flickr", "./data/flickr30k/Images/", "./data/flickr30k/flickr30k_cn_train.txt"),
    DatasetSpec("coco_karpathy_train", "coco", "./data/coco/", "./data/coco/annotations/coco_karpathy_train.json"),
)}


def resolve_dataset(name: str, data_root: Optional[str] = None, annotation: Optional[str] = None,
                    dataset_format: Optional[str] = None) -> DatasetSpec:
    """The dataset ``--dataset_name`` / ``--data_root`` / ``--annotation`` / ``--dataset_format`` describe
    (see the module doc); an unknown name without both paths, or a format that cannot be told, is an error."""
    known = DATASETS.get(name)
    if known is None and not (data_root and annotation):
        raise ConfigError(f"--dataset_name {name!r} is not a known dataset ({', '.join(DATASETS)}); for your own data "
                          "give --data_root (the image directory) and --annotation (the caption file)")
    root = data_root or known.root
    annotation = annotation or known.annotation
    fmt = dataset_format or (known.format if known else None)
    if fmt is None:  # upstream tells the format by the name; the file suffix is a second hint
        fmt = next((f for f in FORMATS if f in name.lower()), None) or {".txt": "flickr", ".json": "coco"}.get(
            Path(annotation).suffix.lower())
    if fmt not in FORMATS:
        raise ConfigError(f"cannot tell the format of --annotation {annotation}: pass --dataset_format flickr (a "
                          "Flickr30K caption file) or coco (a COCO caption JSON)")
    return DatasetSpec(name, fmt, root, annotation)


@dataclass(frozen=True)
class CaptionSample:
    image: str  # path of the image file
    caption: str  # cleaned
    image_id: int  # equal for the captions of one image
    where: str  # "file:line" or the JSON entry, for messages


def read_samples(spec: DatasetSpec) -> list[CaptionSample]:
    """One :class:`CaptionSample` per caption of ``spec``, in file order. A malformed file, a caption that is
    empty (also after cleaning), a missing image, or fewer than two images is an error that names them."""
    root = Path(spec.root)
    if not root.is_dir():
        raise MissingFileError(f"image directory not found: {root} (--data_root of dataset {spec.name}; see "
                               "data/README.md for the layout)")
    raw: list[tuple[str, str, str]] = []  # (image file relative to root, caption, where)
    if spec.format == "flickr":
        raw = [(row.image, row.caption, f"{spec.annotation}:{row.line}")
               for row in read_flickr_captions(spec.annotation)]
    else:
        for image in read_coco_captions(spec.annotation):
            raw += [(image.file_name, caption, image.entry) for caption in image.captions]
    ids: dict[str, int] = {}
    samples = []
    for image, caption, where in raw:
        cleaned = pre_caption(caption)
        if not cleaned:
            raise DataError(f"{where}: the caption {caption!r} is empty after cleaning (only punctuation); fix or "
                            "remove it")
        samples.append(CaptionSample(str(root / image), cleaned, ids.setdefault(image, len(ids)), where))
    missing = {}
    for sample in samples:
        if sample.image not in missing and not os.path.isfile(sample.image):
            missing[sample.image] = sample.where
    if missing:
        examples = "; ".join(f"{path} ({where})" for path, where in list(missing.items())[:3])
        raise MissingFileError(f"{len(missing)} image(s) listed in {spec.annotation} do not exist under {root}, e.g. "
                               f"{examples}; check --data_root")
    if len(ids) < 2:
        raise DataError(f"{spec.annotation} has captions of {len(ids)} image(s); image-text matching needs at least "
                        "two (its negatives are captions of other images)")
    return samples


def train_transform(image_size: int):
    """Upstream's training augmentation (BLIP-2's): random resized crop to ``image_size`` with 50-100% of the
    area, bicubic, random horizontal flip, ImageNet mean/std."""
    from torchvision import transforms as T

    return T.Compose([
        T.RandomResizedCrop(image_size, scale=(0.5, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class RetrievalTrainDataset(Dataset):
    """Training samples (see the module doc): a dict of ``pixel_values``, ``image_ids`` (``(1,)``) and
    ``{positive,negative,summarize}_{input_ids,attention_mask}``. ``tokenizer``: the checkpoint's LLaMA tokenizer
    with ``add_eos_token`` and pad id 0 (``build_cg_tokenizer(dir, "retrieval").tokenizer``). ``seed`` and the
    epoch (:meth:`set_epoch`) fix the random choices of every sample."""

    def __init__(self, samples: list[CaptionSample], tokenizer, image_size: int, max_seq_length: int = 80,
                 pad_to_max_length: bool = False, seed: int = 0):
        self.samples = samples
        self.tokenizer = tokenizer
        self.transform = train_transform(image_size)
        self.max_seq_length = max_seq_length
        self.padding = "max_length" if pad_to_max_length else False
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """New random choices for every sample (the Trainer calls it at each epoch, before the workers start)."""
        self.epoch = int(epoch)

    def sample_seed(self, index: int) -> int:
        return int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])

    def __len__(self) -> int:
        return len(self.samples)

    def _tokenize(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.tokenizer(text, max_length=self.max_seq_length, padding=self.padding, truncation=True,
                             return_tensors="pt")
        return out["input_ids"][0], out["attention_mask"][0]

    def negative_index(self, index: int, rng: random.Random) -> int:
        """A uniformly random sample whose image differs from sample ``index``'s."""
        image_id = self.samples[index].image_id
        while True:
            other = rng.randrange(len(self.samples))
            if self.samples[other].image_id != image_id:
                return other

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.samples[index]
        try:
            image = open_image(sample.image)
        except (FileNotFoundError, ImageDecodeError) as e:
            raise DataError(f"{e} (listed at {sample.where})") from None
        seed = self.sample_seed(index)
        with torch.random.fork_rng(devices=[]):  # torchvision's random transforms draw from torch's generator
            torch.manual_seed(seed)
            pixel_values = self.transform(image)
        item = {"pixel_values": pixel_values, "image_ids": torch.tensor([sample.image_id])}
        negative = self.samples[self.negative_index(index, random.Random(seed))].caption
        texts = {"positive": sample.caption, "negative": negative, "summarize": SUMMARIZE_PREFIX + sample.caption}
        for field, text in texts.items():
            item[f"{field}_input_ids"], item[f"{field}_attention_mask"] = self._tokenize(text)
        return item


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack a list of samples; each text field is right-padded with 0 to its longest in the batch."""
    batch = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if key.endswith(("_input_ids", "_attention_mask")):
            batch[key] = torch.nn.utils.rnn.pad_sequence(values, batch_first=True, padding_value=0)
        else:
            batch[key] = torch.stack(values)
    return batch
