"""The stage-2 retrieval objective of InternVL-C/G, as upstream's ``internvl_stage2_retrieval`` model trains it.

:class:`InternVLForRetrieval` is :class:`internvl.InternVLModel` (same config, same tensors, same files) whose
``forward`` takes a training batch (:mod:`internvl_g.train_data`) and returns the loss; everything else
(``encode_image``, ``encode_text``, ``save_pretrained``, ...) is the library model's. Per batch of ``B`` images:

1. InternViT encodes the images; ``clip_projector`` pools them (the InternVL-C image feature).
2. QLLaMA runs once over ``3B`` rows, each the learnable queries followed by a text:
   ``[negative caption | positive caption | "summarize:" + caption]``. The queries of every row cross-attend
   to the row's image (keys/values computed once per image). The attention masks:

   * image-text matching (ITM) rows: queries and text see each other both ways; padding is never attended;
   * contrastive (ITC) rows: queries see only queries, text sees only earlier text (causal), never the queries.

3. **ITM**: ``itm_head`` on each query output of the ITM rows, averaged over the queries, gives 2-way logits;
   label 0 for the negative rows (the caption of another, random image), 1 for the positive rows.
4. **ITC**: the InternVL-G image feature is ``clip_projector2`` over the query outputs of the ITC rows; the text
   feature is the ITC row's hidden state at its last real token (``</s>``) times ``text_projection``. With
   the InternVL-C image feature, all three are L2-normalised and gathered from every rank (gradients flow
   back to the rank that computed them). Logits are ``exp(logit_scale) * cos``; the targets are soft: every
   caption in the global batch of the same image is a positive, ``target = same_image / same_image.sum(1)``.
   ``loss_itc = (i2t + t2i) / 2`` for InternVL-G plus the same for InternVL-C.
5. ``loss = loss_itm + loss_itc``. (No captioning loss: the retrieval fine-tune has none.)

Each rank's losses are means over its own rows; data parallelism averages the ranks' gradients, so a run on
``n`` ranks equals one process holding the whole global batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from transformers.utils import ModelOutput

from internvl.models.internvl_cg import InternVLModel

__all__ = ["InternVLForRetrieval", "RetrievalOutput", "retrieval_attention_mask", "gather_with_grad", "soft_targets",
           "contrastive_loss", "itm_loss", "TEXT_FIELDS"]

# The three texts of a sample, in the order of the QLLaMA rows: ITM negative, ITM positive, ITC.
TEXT_FIELDS = ("negative", "positive", "summarize")


@dataclass
class RetrievalOutput(ModelOutput):
    """The loss and, detached, its parts and the quantities upstream prints every step."""

    loss: Optional[torch.FloatTensor] = None
    loss_itm: Optional[torch.FloatTensor] = None
    loss_itc: Optional[torch.FloatTensor] = None
    pos_match_acc: Optional[torch.FloatTensor] = None
    neg_match_acc: Optional[torch.FloatTensor] = None
    vision_similarity: Optional[torch.FloatTensor] = None  # cosine of the InternVL-C and -G image features
    temperature: Optional[torch.FloatTensor] = None  # 1 / exp(logit_scale)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every rank's gradient of the gathered tensor and returns
    this rank's slice: each rank's loss reaches the features of every other rank."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.contiguous()
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor)
        ctx.rows = tensor.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start:start + ctx.rows]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order, differentiable (the tensor itself in a
    single process). Every rank must pass the same number of rows."""
    return _GatherWithGrad.apply(tensor) if _distributed() else tensor


def _gather_ids(ids: torch.Tensor) -> torch.Tensor:
    if not _distributed():
        return ids
    parts = [torch.empty_like(ids) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, ids.contiguous())
    return torch.cat(parts)


def soft_targets(image_ids: torch.Tensor, image_ids_all: torch.Tensor) -> torch.Tensor:
    """``(rows, columns)`` contrastive targets: 1 where the column's caption/image is of the row's image,
    normalised over each row (several captions of one image in the batch share the probability)."""
    same = (image_ids.view(-1, 1) == image_ids_all.view(1, -1)).float()
    return same / same.sum(1, keepdim=True)


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, image_ids: torch.Tensor,
                     logit_scale: torch.Tensor) -> torch.Tensor:
    """``(i2t + t2i) / 2`` over this rank's rows against the global batch's columns, soft targets.

    ``image_features`` / ``text_features``: this rank's L2-normalised ``(B, D)`` features (row ``i`` of both is
    sample ``i``); ``image_ids``: ``(B,)``; ``logit_scale``: ``exp`` of the learnable scale."""
    targets = soft_targets(image_ids, _gather_ids(image_ids))
    i2t = logit_scale * image_features @ gather_with_grad(text_features).t()
    t2i = logit_scale * text_features @ gather_with_grad(image_features).t()
    loss_i2t = -(F.log_softmax(i2t, dim=1) * targets).sum(1).mean()
    loss_t2i = -(F.log_softmax(t2i, dim=1) * targets).sum(1).mean()
    return (loss_i2t + loss_t2i) / 2


def itm_loss(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, positive accuracy, negative accuracy)`` of ``(2B, 2)`` matching logits whose first ``B`` rows are
    the negative pairs (label 0) and the last ``B`` the positive ones (label 1)."""
    batch = logits.shape[0] // 2
    labels = torch.cat([logits.new_zeros(batch, dtype=torch.long), logits.new_ones(batch, dtype=torch.long)])
    predicted = logits.detach().argmax(-1)
    return (F.cross_entropy(logits, labels), (predicted[batch:] == 1).float().mean(),
            (predicted[:batch] == 0).float().mean())


def retrieval_attention_mask(text_mask: torch.Tensor, num_queries: int, itm_rows: int) -> torch.Tensor:
    """Boolean ``(rows, 1, Q + L, Q + L)`` self-attention mask (True = attend) for rows of ``num_queries``
    queries followed by ``L`` text tokens; ``text_mask`` ``(rows, L)`` is 1 on real tokens, 0 on (right)
    padding. The first ``itm_rows`` rows are ITM rows (everything unpadded, both ways), the rest ITC rows
    (queries among themselves; text causal over text only)."""
    rows, length = text_mask.shape
    size = num_queries + length
    keys = torch.cat([text_mask.new_ones(rows, num_queries), text_mask], dim=1).bool()  # (rows, S)
    position = torch.arange(size, device=text_mask.device)
    is_query = position < num_queries
    same_part = is_query[:, None] == is_query[None, :]
    causal_or_query = (position[None, :] <= position[:, None]) | is_query[:, None]
    itc = same_part & causal_or_query  # (S, S)
    is_itm = (torch.arange(rows, device=text_mask.device) < itm_rows)[:, None, None]
    allowed = (is_itm | itc[None]) & keys[:, None, :]
    return allowed[:, None]


def _pad_to(ids: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    extra = length - ids.shape[1]
    return (F.pad(ids, (0, extra), value=0), F.pad(mask, (0, extra), value=0)) if extra else (ids, mask)


class InternVLForRetrieval(InternVLModel):
    """:class:`InternVLModel` whose ``forward`` is the stage-2 retrieval loss (see the module doc). It loads
    and saves the published InternVL-14B layout (``config.json`` keeps ``architectures: ["InternVLModel"]``)."""

    accepts_loss_kwargs = False  # the loss is complete as returned: the Trainer must not rescale it

    def forward(self, pixel_values: torch.Tensor, positive_input_ids: torch.Tensor,
                positive_attention_mask: torch.Tensor, negative_input_ids: torch.Tensor,
                negative_attention_mask: torch.Tensor, summarize_input_ids: torch.Tensor,
                summarize_attention_mask: torch.Tensor, image_ids: torch.Tensor, compute_itm: bool = True,
                ) -> RetrievalOutput:
        """The loss of one batch. ``*_input_ids`` / ``*_attention_mask``: ``(B, L)`` right-padded texts (pad 0;
        the three may have different lengths); ``image_ids``: ``(B,)`` or ``(B, 1)``. ``compute_itm=False``
        runs the contrastive rows only (``loss = loss_itc``), what the benchmark compares the ITM rows with."""
        if not self.has_generative_part:
            raise ValueError("the retrieval fine-tune trains InternVL-C and -G together and needs the QLLaMA queries; "
                             "this is an InternVL-C-only model (num_query_token=0): start from "
                             "OpenGVLab/InternVL-14B-224px")
        batch = pixel_values.shape[0]
        image_ids = image_ids.view(-1)
        vision = self.vision_model(pixel_values=pixel_values).last_hidden_state
        backbone = self.clip_projector(vision)

        texts = {"negative": (negative_input_ids, negative_attention_mask),
                 "positive": (positive_input_ids, positive_attention_mask),
                 "summarize": (summarize_input_ids, summarize_attention_mask)}
        fields = TEXT_FIELDS if compute_itm else TEXT_FIELDS[-1:]
        length = max(texts[f][0].shape[1] for f in fields)
        padded = [_pad_to(*texts[f], length) for f in fields]
        input_ids = torch.cat([ids for ids, _ in padded])
        text_mask = torch.cat([mask for _, mask in padded])
        rows = input_ids.shape[0]
        queries = self.query_tokens.expand(rows, -1, -1)
        embeds = torch.cat([queries.to(vision.dtype), self.get_input_embeddings()(input_ids).to(vision.dtype)], 1)
        attention_mask = retrieval_attention_mask(text_mask, self.num_query_token, rows - batch)
        hidden = self.qllama_decoder(inputs_embeds=embeds, attention_mask=attention_mask, vision_hidden_states=vision,
                                     vision_repeats=len(fields), use_cache=False).last_hidden_state
        query_out, text_out = hidden[:, :self.num_query_token], hidden[:, self.num_query_token:]

        zero = hidden.new_zeros(())
        loss_itm, pos_acc, neg_acc = zero, zero, zero
        if compute_itm:
            loss_itm, pos_acc, neg_acc = itm_loss(self.itm_head(query_out[:rows - batch]).mean(1))

        image_g = self.clip_projector2(query_out[rows - batch:])
        last = summarize_attention_mask.long().sum(1) - 1
        text = text_out[rows - batch:][torch.arange(batch, device=last.device), last] @ self.text_projection
        backbone, image_g, text = (F.normalize(x, dim=-1) for x in (backbone, image_g, text))
        scale = self.logit_scale.exp()
        loss_itc = (contrastive_loss(image_g, text, image_ids, scale)
                    + contrastive_loss(backbone, text, image_ids, scale))
        return RetrievalOutput(
            loss=loss_itm + loss_itc, loss_itm=loss_itm.detach(), loss_itc=loss_itc.detach(),
            pos_match_acc=pos_acc, neg_match_acc=neg_acc,
            vision_similarity=F.cosine_similarity(backbone.detach(), image_g.detach()).mean(),
            temperature=1 / scale.detach())

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``InternVLModel.save_pretrained``, with ``architectures`` as published (``["InternVLModel"]``)."""
        architectures = self.config.architectures
        super().save_pretrained(save_directory, *args, **kwargs)
        self.config.architectures = architectures
        _publish_architecture(save_directory)


def _publish_architecture(directory) -> None:
    import json
    from pathlib import Path

    path = Path(directory) / "config.json"
    if path.is_file():  # only the main process writes it
        config = json.loads(path.read_text(encoding="utf-8"))
        if config.get("architectures") != [InternVLModel.__name__]:
            config["architectures"] = [InternVLModel.__name__]
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
