"""The HF ``Trainer`` for InternVL-Chat: upstream's sampler, a token-exact loss, and the bad-sample ledger.

* Sampling: :class:`internvl_chat.chat_data.dataset.ChatSampler` (seeded per epoch, so a resumed run draws the
  same order; ``--group_by_length`` and ``--use_data_resampling`` as upstream).
* Loss: next-token cross-entropy summed over the trained tokens and divided by the trained tokens of the
  whole optimizer step, all ranks and accumulation steps together (transformers' ``num_items_in_batch``),
  so the loss and gradient do not depend on how a global batch is split across GPUs.
* Packed training (``--use_packed_ds``) and the loss reductions (``--loss_reduction``): the sampler is
  :class:`internvl_chat.chat_data.packing.PackedSampler`, and batches carrying ``loss_weight`` divide the
  weighted loss by the weights of the step on this GPU (all GPUs with ``--loss_reduction_all_gather``).
* Unusable samples reach the trainer as void items (:mod:`internvl_chat.chat_data.dataset`); each is logged with
  its ``file:line`` and appended to ``OUTPUT_DIR/bad_samples.jsonl``, and the run stops with an error
  once more than ``--max_bad_samples`` were seen (counted over all ranks).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional, Sequence

import torch
from transformers import Trainer, TrainerCallback

from internvl.errors import DataError
from internvl.models.modeling_utils import causal_lm_loss, weighted_causal_lm_loss

from .chat_data.dataset import ChatSampler
from .chat_data.packing import PackedSampler, weighted_loss_denominator

__all__ = ["ChatTrainer", "BadSampleLedger", "LogCallback"]

log = logging.getLogger("internvl_chat.finetune")


class BadSampleLedger:
    """Counts unusable samples over all ranks, writes each to ``bad_samples.jsonl`` and enforces the limit.

    Lines carry the optimizer step at which the sample came up (``"step": 0`` and ``"stage": "startup"``
    for the lines the start-up check refused). A resumed run keeps the lines of steps up to its checkpoint,
    so a sample met again after the resume is counted once."""

    def __init__(self, path: Path, limit: int, rank: int = 0, resume_step: Optional[int] = None):
        self.path, self.limit, self.rank = Path(path), limit, rank
        kept = []
        if resume_step is not None and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                record = json.loads(line) if line.strip() else None
                if record and record.get("stage") != "startup" and record["step"] <= resume_step:
                    kept.append(line)
        if rank == 0:  # atomically, so a rank reading it meanwhile keeps the same lines
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            os.replace(tmp, self.path)
        self.total = len(kept)

    def _write(self, records: Sequence[dict]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:  # small appends: whole lines even from several ranks
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))

    def startup(self, problems) -> None:
        """The samples the start-up check refused (the same list on every rank)."""
        for problem in problems:
            log.warning("unusable sample, skipped: %s", problem)
        if self.rank == 0 and problems:
            self._write([{"where": p.where, "reason": p.reason, "step": 0, "stage": "startup"} for p in problems])
        self.total += len(problems)
        self._enforce(problems[-1].where + ": " + problems[-1].reason if problems else "")

    def add(self, items: Sequence[tuple], step: int, device: torch.device) -> None:
        """The void items of one batch of this rank; every rank calls this once per micro-batch."""
        for where, reason in items:
            log.warning("unusable sample, skipped (step %d): %s: %s", step, where, reason)
        if items:
            self._write([{"where": w, "reason": r, "step": step, "rank": self.rank} for w, r in items])
        count = torch.tensor([len(items)], device=device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(count)
        self.total += int(count.item())
        if items or count.item():
            self._enforce(f"{items[-1][0]}: {items[-1][1]}" if items else "(on another rank)")

    def _enforce(self, last: str) -> None:
        if self.total > self.limit:
            raise DataError(f"{self.total} unusable sample(s), more than --max_bad_samples {self.limit}; the last one: "
                            f"{last}. Every one is listed in {self.path}. Run `python -m internvl_chat.chat_data check` with "
                            "the same --meta_path and data flags to see them all before training, fix or remove them, "
                            "or raise --max_bad_samples to skip them")


class LogCallback(TrainerCallback):
    """Trainer log lines (loss, learning rate, ...) into the run's log (and so ``training_log.txt``)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            log.info("step %d: %s", state.global_step, json.dumps({k: (round(v, 6) if isinstance(v, float) else v)
                                                                    for k, v in logs.items()}))


class ChatTrainer(Trainer):
    """``Trainer`` with the sampler, loss and bad-sample handling of the module doc."""

    def __init__(self, *args, group_by_length: bool = False, use_data_resampling: bool = False,
                 ledger: Optional[BadSampleLedger] = None, packing=None, loss_reduction_all_gather: bool = False,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.packing, self.loss_reduction_all_gather = packing, loss_reduction_all_gather
        self.group_by_length, self.use_data_resampling, self.ledger = group_by_length, use_data_resampling, ledger
        # compute_loss takes num_items_in_batch: the Trainer must count trained tokens per optimizer step
        # and leave the loss unscaled by the accumulation steps.
        self.model_accepts_loss_kwargs = True

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = dataset.lengths if self.group_by_length else [0] * len(dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        if self.packing is not None:
            return PackedSampler(dataset, self.packing, seed=seed, resample=self.use_data_resampling)
        return ChatSampler(lengths, dataset.sizes, self.args.train_batch_size,
                           self.args.world_size * self.args.gradient_accumulation_steps,
                           group_by_length=self.group_by_length, resample=self.use_data_resampling, seed=seed)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """With ``loss_weight`` batches, the step's denominator is the sum of its weights (see the module doc)."""
        batches, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        weights = weighted_loss_denominator(batches)
        if weights is not None:
            num_items_in_batch = weights.to(device)
            if self.loss_reduction_all_gather and torch.distributed.is_available() and \
                    torch.distributed.is_initialized():
                torch.distributed.all_reduce(num_items_in_batch)
        return batches, num_items_in_batch

    def training_step(self, model, inputs, num_items_in_batch=None, *args, **kwargs):
        bad = inputs.pop("bad_samples", [])
        if self.ledger is not None:
            self.ledger.add(bad, self.state.global_step, self.args.device)
        return super().training_step(model, inputs, num_items_in_batch, *args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        inputs.pop("bad_samples", None)
        labels = inputs.pop("labels")
        weights = inputs.pop("loss_weight", None)
        outputs = model(**inputs, return_dict=True)
        if weights is not None:
            if num_items_in_batch is None:  # e.g. evaluation: this batch's own weights
                num_items_in_batch, scale = weights[:, 1:].sum(), 1
            else:  # the weights of all GPUs: DDP's mean of the gradients must become their sum
                scale = self.accelerator.num_processes if self.loss_reduction_all_gather else 1
            denominator = num_items_in_batch.clamp(min=1e-12) if torch.is_tensor(num_items_in_batch) else max(
                float(num_items_in_batch), 1e-12)
            loss = weighted_causal_lm_loss(outputs.logits, labels, weights, denominator) * scale
            return (loss, outputs) if return_outputs else loss
        if num_items_in_batch is None:  # e.g. evaluation: this batch's own trained tokens
            num_items_in_batch = labels[:, 1:].ne(-100).sum()
            scale = 1
        else:
            scale = self.accelerator.num_processes if self.args.average_tokens_across_devices else 1
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.clamp(min=1)  # a step of void items only: loss 0, not NaN
        else:
            num_items_in_batch = max(int(num_items_in_batch), 1)
        loss = causal_lm_loss(outputs.logits, labels, num_items_in_batch) * scale
        return (loss, outputs) if return_outputs else loss
