"""Tiny InternVL-C/G models for the tests (the writers live in ``internvl.datakit.checkpoints``)."""
from __future__ import annotations

from internvl.datakit.checkpoints import randomize_weights, tiny_internvl_cg_config, write_tiny_internvl_cg
from internvl.models.internvl_cg import InternVLConfig, InternVLModel

__all__ = ["tiny_internvl_cg_config", "randomized_internvl_cg", "write_tiny_internvl_cg"]


def randomized_internvl_cg(config: InternVLConfig, seed: int = 0) -> InternVLModel:
    """Every tensor random, queries and token embeddings at unit scale, logit scale 2."""
    return randomize_weights(InternVLModel(config), seed, embedding_std=1.0, fill={"logit_scale": 2.0})
