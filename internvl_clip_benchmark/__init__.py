"""InternVL-C/G on LAION's CLIP Benchmark (the ``clip-benchmark`` package): zero-shot classification and
image-text retrieval with upstream's model names, datasets and defaults, on the maintained benchmark.

Command line (all three are the same CLI: CLIP Benchmark's, with the additions registered)::

    clip_benchmark eval --model_type internvl --model internvl_c_retrieval --pretrained ... --dataset flickr30k ...
    python -m internvl_clip_benchmark eval ...
    cd clip_benchmark && python3 clip_benchmark/cli.py eval ...        # upstream's command, unchanged

Python: :func:`register` adds the ``internvl`` model type to CLIP Benchmark's ``TYPE2FUNC`` (its documented
extension point), so ``clip_benchmark.models.load_clip("internvl", "internvl_g_retrieval_hf", dir)`` works.

The package is not called ``clip_benchmark``: that name is LAION's package, which this one extends.
"""
from __future__ import annotations

__all__ = ["register", "MODEL_TYPE"]

MODEL_TYPE = "internvl"


def register() -> None:
    """Add the ``internvl`` model type to CLIP Benchmark (idempotent). ``MODEL_TYPES`` is extended in place:
    its CLI reads the same list object for ``--model_type`` choices."""
    from clip_benchmark import models

    from .models import load_internvl

    models.TYPE2FUNC[MODEL_TYPE] = load_internvl
    if MODEL_TYPE not in models.MODEL_TYPES:
        models.MODEL_TYPES.append(MODEL_TYPE)
