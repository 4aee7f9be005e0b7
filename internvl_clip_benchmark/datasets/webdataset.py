"""CLIP Benchmark's webdataset layout (``--dataset wds/<name>``), as ``clip_benchmark_export_wds`` writes it::

    <root>/<split>/0.tar, 1.tar, ...              samples s0000000.webp + s0000000.cls (the label)
    <root>/<split>/nshards.txt                    the number of shards
    <root>/classnames.txt                         one class name per line, in label order
    <root>/zeroshot_classification_templates.txt  one prompt per line, {c} for the class name

The reader is CLIP Benchmark's; this module holds the synthetic writer, which goes through CLIP
Benchmark's own converter so the shards are byte-for-byte what the exporter makes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

from internvl.data.synthetic import SyntheticImages

__all__ = ["write_wds_classification"]


class _Samples(list):
    classes: list
    templates: list


def write_wds_classification(root: os.PathLike, num_images: int, split: str = "test",
                             templates: Sequence[str] = ("a photo of a {c}.",), kit: Optional[SyntheticImages] = None,
                             start: int = 0, image_format: str = "webp") -> Path:
    """Write ``num_images`` kit images with their labels as a webdataset classification set under ``root``;
    the class names are the kit's ("red circle"). Refuses an existing ``<root>/<split>``."""
    from clip_benchmark.webdataset_builder import PIL_to_bytes, convert_dataset

    kit = kit or SyntheticImages()
    root = Path(root)
    if (root / split).exists():
        raise FileExistsError(f"{root / split} already exists; remove it first, a writer never mixes datasets")
    samples = _Samples((s.image, s.label) for s in map(kit.sample, range(start, start + num_images)))
    samples.classes = [name.replace("_", " ") for name in kit.classes]
    samples.templates = list(templates)
    convert_dataset(samples, split, str(root), transform=PIL_to_bytes(image_format), image_format=image_format,
                    verbose=False)
    return root
