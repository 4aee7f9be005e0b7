"""Upstream's MSR-VTT metrics (``video_retrieval/test_msrvtt.py``): recall@k in both directions, with and
without the dual-softmax re-scoring (``use_dsl``).

``scores`` is ``(texts, videos)``: cosine similarities of the normalised features, text ``i`` paired with
video ``i`` (one caption per video, as the 1k-A metadata lists them).

* text -> video (``t2v``): for each text, is its video among the ``k`` highest scores of its row;
* video -> text (``v2t``): the same over the transposed matrix;
* DSL: ``t2v`` ranks ``scores * softmax(scores, dim=0)`` (each video's scores softmaxed over the texts) and
  ``v2t`` ranks ``scores.T * softmax(scores.T, dim=0)`` (each text's scores softmaxed over the videos), at
  temperature 1, exactly as upstream writes it.

A CLIP-style recall@k is 1 for a query when at least one of its positives is in the top ``k``, averaged over
the queries (LAION's ``recall_at_k > 0``, which upstream calls).
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["recall_at_k", "dual_softmax", "retrieval_metrics"]


def recall_at_k(scores: torch.Tensor, positive_pairs: torch.Tensor, k: int) -> torch.Tensor:
    """Per query (row): the fraction of its positives among its ``k`` highest-scoring candidates."""
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"recall@{k} needs at least {k} candidates; there are {scores.shape[1]}")
    top = scores.topk(k, dim=1).indices
    hits = positive_pairs.gather(1, top).sum(1).float()
    return hits / positive_pairs.sum(1).float()


def dual_softmax(scores: torch.Tensor) -> torch.Tensor:
    """Upstream's re-scoring: each score times the softmax of its column (over the rows, ``dim=0``)."""
    return scores * scores.softmax(dim=0)


def retrieval_metrics(scores: torch.Tensor, recall_k: Sequence[int] = (1, 5, 10), use_dsl: bool = True) -> dict:
    """``{"t2v_retrieval_recall@k": ..., "v2t_retrieval_recall@k": ...}`` for each ``k`` (upstream's keys)."""
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be a square (texts, videos) matrix, got {tuple(scores.shape)}")
    scores = scores.float()
    positive = torch.eye(len(scores), dtype=torch.bool)
    t2v, v2t = scores, scores.T
    if use_dsl:
        t2v, v2t = dual_softmax(t2v), dual_softmax(v2t)
    metrics = {}
    for k in recall_k:
        metrics[f"t2v_retrieval_recall@{k}"] = (recall_at_k(t2v, positive, k) > 0).float().mean().item()
        metrics[f"v2t_retrieval_recall@{k}"] = (recall_at_k(v2t, positive.T, k) > 0).float().mean().item()
    return metrics
