"""The synthetic data kit: one small, learnable, deterministic image set (``synthetic``) and writers
for every on-disk format the subprojects read, one module per family of formats. See
``internvl/datakit/synthetic.py`` for the generator and its guarantees."""
from .classification import *  # noqa: F401,F403
from .synthetic import *  # noqa: F401,F403
from .tokenizer import *  # noqa: F401,F403
from . import classification, synthetic, tokenizer

__all__ = synthetic.__all__ + classification.__all__ + tokenizer.__all__
# Tiny checkpoints: internvl.datakit.checkpoints (also a CLI, hence not imported here).
