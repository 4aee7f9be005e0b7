"""Stage-2 retrieval fine-tuning of InternVL-C/G (upstream's ``internvl/train/internvl_stage2_finetune.py``).

    python -m internvl_g.finetune --model_name_or_path ./pretrained/InternVL-14B-224px \\
        --dataset_name flickr30k_en_train --output_dir ./work_dirs/flickr --force_image_size 364 \\
        --per_device_train_batch_size 32 --num_train_epochs 10 --learning_rate 1e-6 --bf16 True ...

or one of the scripts in ``internvl_g/shell/`` (upstream's names). Flags: upstream's model and data arguments
(:class:`ModelArguments`, :class:`DataTrainingArguments`) and every ``transformers.TrainingArguments`` flag; the
Hugging Face ``Trainer`` runs it (DDP, DeepSpeed ZeRO, bf16, TensorBoard, checkpoints). The objective is
:mod:`internvl_g.retrieval_model`, the data :mod:`internvl_g.train_data`, the layer-wise learning-rate decay
:mod:`internvl_g.layer_decay`. Differences from upstream are listed in ``internvl_g/README.md``.

The output directory is a checkpoint in the published InternVL-14B layout (``config.json`` with the trained
``force_image_size``, safetensors, the source's tokenizer and preprocessor files): ``InternVLModel.from_pretrained``,
``clip_benchmark --model internvl_{c,g}_retrieval_hf`` and ``internvl_g/evaluate.sh`` load it as it is.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from transformers import TrainerCallback

from internvl.cli import run_main
from internvl.errors import ConfigError, MissingDependencyError
from internvl.train.hf import TrainingArguments as _TrainingArguments

logger = logging.getLogger("internvl_g.finetune")

LOG_FILE = "train_log.txt"


@dataclass
class ModelArguments:
    """Upstream's model arguments, plus ``--merge_lora``."""

    model_name_or_path: str = field(metadata={"help": "The InternVL-C/G checkpoint directory to fine-tune "
                                                      "(OpenGVLab/InternVL-14B-224px's layout)."})
    freeze_model: bool = field(default=False, metadata={"help": "Freeze the entire model."})
    freeze_vision_model: bool = field(default=False, metadata={"help": "Freeze InternViT."})
    freeze_qllama: bool = field(default=False, metadata={"help": "Freeze QLLaMA."})
    unfreeze_qllama_head: bool = field(default=False, metadata={
        "help": "Train QLLaMA's lm_head and text_projection (after the freezes)."})
    unfreeze_crossattn: bool = field(default=False, metadata={
        "help": "Train QLLaMA's cross-attention layers (after the freezes)."})
    use_backbone_lora: int = field(default=0, metadata={"help": "LoRA rank around InternViT (0: none)."})
    use_qllama_lora: int = field(default=0, metadata={"help": "LoRA rank around QLLaMA (0: none)."})
    use_custom_trainer: bool = field(default=False, metadata={
        "help": "Layer-wise learning-rate decay (rates: --layer_decay_rate)."})
    layer_decay_rate: Optional[list[float]] = field(default=None, metadata={
        "nargs": "+", "help": "With --use_custom_trainer: the decay rate of InternViT's and QLLaMA's layers, one "
                              "number for both or two (InternViT QLLaMA), each in (0, 1]. Default: the environment "
                              "variables VIT_LAYER_DECAY_RATE / QLLAMA_LAYER_DECAY_RATE (upstream's scripts set "
                              "them), else 1.0 (no decay)."})
    drop_path_rate: float = field(default=0.0, metadata={"help": "Stochastic depth of InternViT."})
    merge_lora: bool = field(default=False, metadata={
        "help": "Fold the LoRA adapters into the weights of the saved model (default: keep them as adapters, "
                "as upstream; loaders merge them)."})


@dataclass
class DataTrainingArguments:
    """Upstream's data arguments, plus ``--data_root`` / ``--annotation`` / ``--dataset_format`` for other data."""

    dataset_name: str = field(default="flickr30k_en_train", metadata={
        "help": "flickr30k_en_train, flickr30k_cn_train, coco_karpathy_train, or a name of your own with "
                "--data_root and --annotation."})
    max_seq_length: int = field(default=80, metadata={"help": "Texts are truncated to this many tokens."})
    force_image_size: Optional[int] = field(default=None, metadata={
        "help": "Train (and save the model) at this image size, a multiple of 14; position embeddings are "
                "interpolated. Default: the checkpoint's size (224 for InternVL-14B-224px, upstream's default)."})
    pad_to_max_length: bool = field(default=False, metadata={
        "help": "Pad every text to --max_seq_length (else to the longest of the batch)."})
    data_root: Optional[str] = field(default=None, metadata={
        "help": "The directory the image paths of the caption file are relative to (overrides the named dataset's)."})
    annotation: Optional[str] = field(default=None, metadata={
        "help": "The caption file: Flickr30K format (.txt) or a COCO caption JSON (overrides the named dataset's)."})
    dataset_format: Optional[str] = field(default=None, metadata={
        "help": "flickr or coco, for a dataset of your own (default: from its name or the file suffix)."})


@dataclass
class TrainingArguments(_TrainingArguments):
    """``TrainingArguments`` with ``--do_train`` on by default (upstream's scripts all pass ``--do_train True``)."""

    do_train: bool = field(default=True, metadata={"help": "Train (on by default; False only builds everything)."})


# Upstream always recomputes activations (it sets gradient_checkpointing on the towers itself); here it is the
# Trainer's flag, on unless given, non-reentrant so LoRA adapters inside frozen towers get gradients.
TRAINING_DEFAULTS = {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}}


def _build_trainer_class():
    import torch
    from transformers import Trainer

    from .layer_decay import layer_decay_param_groups

    class RetrievalTrainer(Trainer):
        """The Trainer with upstream's layer-wise decay optimizer (``layer_decay=(vit rate, qllama rate)``), the
        loss parts averaged into every log line, and the source checkpoint's tokenizer and preprocessor files
        beside every saved model."""

        def __init__(self, *args, layer_decay: Optional[tuple[float, float]] = None, source_dir: Optional[str] = None,
                     image_size: Optional[int] = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.layer_decay, self.source_dir, self.image_size = layer_decay, source_dir, image_size
            self._parts: dict[str, torch.Tensor] = {}
            self._parts_count = 0

        def create_optimizer(self, *args, **kwargs):
            if self.layer_decay is None or self.optimizer is not None:
                optimizer = super().create_optimizer(*args, **kwargs)
                # No trainable bias or norm (head / LoRA runs) leaves the no-decay group empty; DeepSpeed's ZeRO-3
                # optimizer drops empty groups, and transformers 4.x sizes the LR scheduler by the groups before.
                optimizer.param_groups[:] = [group for group in optimizer.param_groups if group["params"]]
                return optimizer
            model = self.model
            groups = layer_decay_param_groups(model, self.args.learning_rate, self.args.weight_decay, *self.layer_decay)
            for group in groups:
                logger.info("param group %s: lr %.3g (x%.4f), weight decay %g, %d tensors", group["group_name"],
                            group["lr"], group["lr_scale"], group["weight_decay"], len(group["params"]))
            optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
            return self.optimizer

        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True, **kwargs)
            if model.training:
                for key in ("loss_itm", "loss_itc", "pos_match_acc", "neg_match_acc", "vision_similarity",
                            "temperature"):
                    value = outputs[key].detach().float()
                    self._parts[key] = self._parts[key] + value if key in self._parts else value
                self._parts_count += 1
            return (loss, outputs) if return_outputs else loss

        def log(self, logs, *args, **kwargs):
            if "loss" in logs and self._parts_count:
                names = sorted(self._parts)
                means = torch.stack([self._parts[k] for k in names]) / self._parts_count
                means = self.accelerator.reduce(means, reduction="mean")
                logs.update({k: round(v, 5) for k, v in zip(names, means.tolist())})
                self._parts, self._parts_count = {}, 0
            return super().log(logs, *args, **kwargs)

        def _save(self, output_dir=None, state_dict=None):
            super()._save(output_dir, state_dict)
            if self.args.should_save:
                copy_companion_files(self.source_dir, output_dir or self.args.output_dir, self.image_size)

    return RetrievalTrainer


class _EpochCallback(TrainerCallback):
    """Give the dataset the epoch before its workers start (accelerate does it only for some samplers)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(state.epoch + 1e-6))
        return control


def copy_companion_files(source_dir: Optional[str], output_dir: str, image_size: Optional[int]) -> None:
    """Copy the source checkpoint's tokenizer, preprocessor and generation files to ``output_dir`` (the
    preprocessor's sizes set to ``image_size``), so the output is a complete checkpoint in the published layout."""
    from internvl.models.modeling_utils import COMPANION_FILES

    if source_dir is None:
        return
    for name in COMPANION_FILES:
        source, target = Path(source_dir) / name, Path(output_dir) / name
        if not source.is_file() or target.exists():
            continue
        if name == "preprocessor_config.json" and image_size:
            config = json.loads(source.read_text(encoding="utf-8"))
            for key in ("size", "crop_size"):
                if isinstance(config.get(key), int):
                    config[key] = image_size
                elif isinstance(config.get(key), dict):  # {"shortest_edge": n} / {"height": n, "width": n}
                    config[key] = {k: image_size for k in config[key]}
            target.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        else:
            shutil.copyfile(source, target)


def check_arguments(model_args: ModelArguments, data_args: DataTrainingArguments) -> None:
    """Errors for flag values that cannot work, named."""
    size = data_args.force_image_size
    if size is not None and (size <= 0 or size % 14):
        raise ConfigError(f"--force_image_size {size} is not a positive multiple of InternViT's "
                          "patch size 14 (e.g. 224 or 364)")
    if data_args.max_seq_length < 8:
        raise ConfigError(f"--max_seq_length {data_args.max_seq_length} leaves no room for the caption after <s> and "
                          "'summarize:'; use upstream's 80")
    for flag in ("use_backbone_lora", "use_qllama_lora"):
        if getattr(model_args, flag) < 0:
            raise ConfigError(f"--{flag} {getattr(model_args, flag)}: a LoRA rank is >= 0 (0: no LoRA)")
    if not 0 <= model_args.drop_path_rate < 1:
        raise ConfigError(f"--drop_path_rate {model_args.drop_path_rate} must be in [0, 1)")
    nothing_unfrozen = not (model_args.use_backbone_lora or model_args.use_qllama_lora
                            or model_args.unfreeze_qllama_head or model_args.unfreeze_crossattn)
    if model_args.freeze_model and nothing_unfrozen:
        raise ConfigError("--freeze_model leaves nothing to train: add --unfreeze_qllama_head, --unfreeze_crossattn, "
                          "--use_backbone_lora <rank> or --use_qllama_lora <rank>")


def apply_trainable_set(model, model_args: ModelArguments) -> None:
    """Freeze and wrap as upstream, in its order (:func:`internvl.train.trainable.apply_trainable_set`):
    ``--freeze_model``, ``--freeze_vision_model``, ``--freeze_qllama``, LoRA (its adapters trainable, the wrapped
    weights frozen; alpha = 2 x rank), ``--unfreeze_crossattn``, ``--unfreeze_qllama_head``
    (``qllama.lm_head.weight`` and ``text_projection``); logs the trainable-parameter report."""
    from internvl.train.trainable import LoraRequest, apply_trainable_set as apply

    def cross_attention():
        return (param for name, param in model.qllama.named_parameters() if "cross_attn" in name)

    def head():
        lm_head = model.qllama.get_output_embeddings()
        return ([lm_head.weight] if lm_head is not None else []) + [model.text_projection]

    freeze = [module for flag, module in ((model_args.freeze_model, model), (model_args.freeze_vision_model,
                                                                             model.vision_model),
                                          (model_args.freeze_qllama, model.qllama)) if flag]
    unfreeze = [part for flag, part in ((model_args.unfreeze_crossattn, cross_attention),
                                        (model_args.unfreeze_qllama_head, head)) if flag]
    report = apply(model, freeze=freeze,
                   lora=[LoraRequest("use_backbone_lora", model_args.use_backbone_lora, model.wrap_backbone_lora),
                         LoraRequest("use_qllama_lora", model_args.use_qllama_lora, model.wrap_qllama_lora)],
                   unfreeze=unfreeze, source=model_args.model_name_or_path,
                   flags_hint="the freeze flags (--freeze_model / --freeze_vision_model / --freeze_qllama)")
    logger.info(report)


def main(argv: Optional[Sequence[str]] = None, callbacks: Optional[list] = None) -> int:
    """Train; ``callbacks`` are extra ``transformers.TrainerCallback`` objects (for programs that drive it)."""
    import transformers
    from transformers import set_seed

    from internvl.train.hf import (CheckpointCompleteCallback, apply_zero3_checkpoint_options, finished_run,
                                   fit_loader_to_machine, parse_args, prepare_deepspeed_on_cpu,
                                   read_deepspeed_config, resume_checkpoint, weights_dtype)
    from internvl.models.internvl_cg import InternVLConfig
    from internvl.models.processing_internvl_cg import build_cg_tokenizer
    from internvl.models.modeling_utils import check_checkpoint_dir
    from internvl.train.distributed import init_distributed, setup_logging

    from .layer_decay import decay_rates
    from .retrieval_model import InternVLForRetrieval
    from .train_data import RetrievalTrainDataset, collate, read_samples, resolve_dataset

    # Before the arguments: under srun this exports RANK / WORLD_SIZE / MASTER_ADDR for the Trainer and DeepSpeed.
    dist_info = init_distributed()
    model_args, data_args, training_args = parse_args((ModelArguments, DataTrainingArguments, TrainingArguments), argv,
                                                      defaults=TRAINING_DEFAULTS)
    check_arguments(model_args, data_args)
    apply_zero3_checkpoint_options(training_args)
    layer_decay = decay_rates(model_args.layer_decay_rate) if model_args.use_custom_trainer else None
    if training_args.deepspeed:
        if isinstance(training_args.deepspeed, str):
            read_deepspeed_config(training_args.deepspeed, keep_optimizer_groups=layer_decay is not None)
    setup_logging(dist_info.rank)  # stderr only: --output_dir may not be written to yet
    resume = (resume_checkpoint(training_args, is_main=dist_info.is_main, own_files=(LOG_FILE, "runs"))
              if training_args.do_train else None)
    setup_logging(dist_info.rank, log_file=Path(training_args.output_dir) / LOG_FILE)
    if resume:
        logger.info("resuming from %s (to start over instead, choose a new --output_dir)", resume)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    transformers.utils.logging.disable_default_handler()  # transformers' lines go through our handlers (and file)
    transformers.utils.logging.enable_propagation()
    logger.info("model %s, data %s, training %s", model_args, data_args, training_args.to_json_string())
    prepare_deepspeed_on_cpu(training_args)
    fit_loader_to_machine(training_args)
    set_seed(training_args.seed)

    source = check_checkpoint_dir(model_args.model_name_or_path)
    tokenizer = build_cg_tokenizer(source, task="retrieval").tokenizer
    spec = resolve_dataset(data_args.dataset_name, data_args.data_root, data_args.annotation, data_args.dataset_format)
    samples = read_samples(spec)
    logger.info("dataset %s: %d captions of %d images (%s, %s)", spec.name, len(samples),
                len({s.image_id for s in samples}), spec.annotation, spec.root)
    config = InternVLConfig.from_pretrained(source)
    config.vision_config.drop_path_rate = model_args.drop_path_rate
    config.use_cache = config.qllama_config.use_cache = False
    try:
        model = InternVLForRetrieval.from_pretrained(source, config=config, torch_dtype=weights_dtype(training_args))
    except RuntimeError as err:
        if "cannot be 0 to view" not in str(err):
            raise
        # DeepSpeed 0.19.8's ZeRO-3 broadcasts each new parameter as bytes, which fails for 0-dim ones
        raise MissingDependencyError(
            f"this DeepSpeed's ZeRO-3 cannot build InternVL-C/G: its 0-dim logit_scale parameter fails to partition "
            f"({err}); pip install 'deepspeed!=0.19.8' (0.19.7 and 0.18.9 are tested) or use "
            f"zero_stage1_config.json / zero_stage2_config.json") from None
    if not model.has_generative_part:
        raise ConfigError(f"{source} is an InternVL-C-only checkpoint (num_query_token=0); the retrieval fine-tune "
                          "trains InternVL-C and -G together: start from OpenGVLab/InternVL-14B-224px")
    if data_args.force_image_size and data_args.force_image_size != model.image_size:
        logger.info("image size %d -> %d (position embeddings interpolated)", model.image_size,
                    data_args.force_image_size)
        model.set_image_size(data_args.force_image_size)
    seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
    dataset = RetrievalTrainDataset(samples, tokenizer, model.image_size, data_args.max_seq_length,
                                    data_args.pad_to_max_length, seed=seed)
    apply_trainable_set(model, model_args)
    if model_args.merge_lora and not (model.config.use_backbone_lora or model.config.use_qllama_lora):
        raise ConfigError("--merge_lora: the model has no LoRA adapters to merge; add --use_backbone_lora <rank> "
                          "and/or --use_qllama_lora <rank>")
    lm_head = model.qllama.get_output_embeddings()
    if training_args.ddp_find_unused_parameters is None and lm_head is not None and lm_head.weight.requires_grad:
        # qllama.lm_head is trainable (as upstream) but not on the retrieval loss's path: DDP must expect no gradient
        training_args.ddp_find_unused_parameters = True

    trainer_class = _build_trainer_class()
    trainer = trainer_class(model=model, args=training_args, train_dataset=dataset if training_args.do_train else None,
                            data_collator=collate,
                            callbacks=[CheckpointCompleteCallback(), _EpochCallback(dataset), *(callbacks or [])],
                            layer_decay=layer_decay, source_dir=str(source), image_size=model.image_size)
    if not training_args.do_train:
        logger.info("--do_train is off: nothing to do")
        return 0
    if finished_run(trainer) is not None:  # it says so
        return 0
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    if model_args.merge_lora:
        _merge_saved_lora(training_args.output_dir, trainer)
    metrics = dict(result.metrics, train_samples=len(dataset))
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    return 0


def _merge_saved_lora(output_dir: str, trainer) -> None:
    """Reload the saved model (gathered from every rank, whatever the ZeRO stage), fold its adapters into the
    weights and save it again in place."""
    from internvl.train.hf import models_built_whole
    from internvl.models.internvl_cg import InternVLModel
    from internvl.train.distributed import barrier

    barrier()
    if trainer.args.should_save:
        with models_built_whole(trainer.args):
            model = InternVLModel.from_pretrained(output_dir, torch_dtype="auto")
        model.merge_lora()
        for stale in Path(output_dir).glob("model*.safetensors*"):
            stale.unlink()
        model.save_pretrained(output_dir)
        logger.info("merged the LoRA adapters into the weights of %s", output_dir)
    barrier()


if __name__ == "__main__":
    raise SystemExit(run_main(main))
