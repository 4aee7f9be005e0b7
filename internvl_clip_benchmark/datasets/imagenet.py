"""ImageNet-1K val as CLIP Benchmark reads it (``imagenet1k``: ``torchvision.datasets.ImageNet``), the
layout of upstream's classification commands (``--dataset_root ./data/imagenet-1k/``)::

    <root>/meta.bin                   what torchvision writes on its first run from ILSVRC2012_devkit_t12.tar.gz
    <root>/val/<wnid>/<image>.JPEG    (torchvision sorts the 50,000 val images into these folders on its first
                                      run from ILSVRC2012_img_val.tar; the two archives in <root> are enough)

The reader is CLIP Benchmark's; the class names and prompts of ``--language en|cn|jp|ar|it`` are its
packaged ones. This module holds the synthetic writer.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from internvl.data.synthetic import SyntheticImages, save_jpeg

__all__ = ["write_imagenet_val"]


def write_imagenet_val(root: os.PathLike, num_images: int, kit: Optional[SyntheticImages] = None,
                       start: int = 0) -> Path:
    """Write ``num_images`` kit images as a torchvision ImageNet val split (see the module doc): kit class
    ``k`` is ImageNet class ``k`` (its wnid folder and ``meta.bin`` entry), so labels agree. The kit's class
    names ("red circle") go to ``<root>/classnames.json`` as ``{"imagenet1k": [...]}``, for
    ``--custom_classname_file``. Refuses a root that is not empty."""
    import torch
    from clip_benchmark.datasets.builder import all_imagenet_wordnet_ids

    kit = kit or SyntheticImages()
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; remove it first, a writer never mixes datasets")
    wnids = all_imagenet_wordnet_ids[:kit.num_classes]
    names = [name.replace("_", " ") for name in kit.classes]
    val_wnids = []
    for number, index in enumerate(range(start, start + num_images), 1):
        s = kit.sample(index)
        save_jpeg(s.image, root / "val" / wnids[s.label] / f"ILSVRC2012_val_{number:08d}.JPEG")
        val_wnids.append(wnids[s.label])
    torch.save(({wnid: (name,) for wnid, name in zip(wnids, names)}, val_wnids), root / "meta.bin")
    (root / "classnames.json").write_text(json.dumps({"imagenet1k": names}))
    return root
