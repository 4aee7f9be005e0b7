"""The synthetic data kit, what several subprojects share for tests and demos: one small, learnable,
deterministic image set with captions (``synthetic``), tiny tokenizers (``tokenizer``) and tiny
checkpoints in the published layouts (``checkpoints``). The writers of each on-disk dataset format
live beside their readers, in the subproject that reads them (``classification.dataset``,
``internvl.caption_benchmarks``, ...). See ``internvl/datakit/synthetic.py`` for the generator."""
from .synthetic import *  # noqa: F401,F403
from .tokenizer import *  # noqa: F401,F403
from . import synthetic, tokenizer

__all__ = synthetic.__all__ + tokenizer.__all__ + ["write_intern_vit_pth"]


def __getattr__(name: str):
    # Tiny checkpoints (internvl.datakit.checkpoints) load on first use: that module is also a CLI, and
    # importing it here would make `python -m internvl.datakit.checkpoints` warn that it was imported twice.
    if name == "write_intern_vit_pth":
        from .checkpoints import write_intern_vit_pth
        return write_intern_vit_pth
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
