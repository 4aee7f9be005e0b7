"""The synthetic data kit, what several subprojects share for tests and demos: one small, learnable,
deterministic image set with captions (``synthetic``), tiny tokenizers (``tokenizer``) and tiny
checkpoints in the published layouts (``checkpoints``). The writers of each on-disk dataset format
live beside their readers, in the subproject that reads them (``classification.dataset``,
``internvl.data.caption_benchmarks``, ...). The image generator itself is
:mod:`internvl.data.synthetic` (the data layer: dataset writers beside their readers use it); this package,
above the models, adds the tiny tokenizers and checkpoints."""
from ..data.synthetic import *  # noqa: F401,F403
from .tokenizer import *  # noqa: F401,F403
from ..data import synthetic
from . import tokenizer

__all__ = synthetic.__all__ + tokenizer.__all__ + ["write_intern_vit_pth"]


def __getattr__(name: str):
    # Tiny checkpoints (internvl.datakit.checkpoints) load on first use: that module is also a CLI, and
    # importing it here would make `python -m internvl.datakit.checkpoints` warn that it was imported twice.
    if name == "write_intern_vit_pth":
        from .checkpoints import write_intern_vit_pth
        return write_intern_vit_pth
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
