"""Fine-tune InternVL-Chat (LoRA or full) on conversations described by a meta json, with the HF ``Trainer``.

    torchrun --nproc_per_node 8 -m internvl_chat.finetune --model_name_or_path pretrained/InternVL2-2B \\
        --conv_style internlm2-chat --meta_path shell/data/custom_finetune.json --output_dir work_dirs/x \\
        --use_llm_lora 16 --freeze_llm True --freeze_mlp True --freeze_backbone True ... (upstream's flags)

The flags are upstream's ``internvl_chat_finetune.py`` flags with their defaults (``--help`` lists them,
with every ``TrainingArguments`` flag: ``--deepspeed``, ``--bf16``, ``--save_steps``,
``--report_to tensorboard``...), so the scripts under ``internvl_chat/shell/`` are upstream's with the
script path changed. What differs from upstream, on purpose:

* the data are checked before the model loads (JSON, keys, roles, placeholders, files), and a sample
  that is unusable at run time (image that does not decode, tokenization mismatch, answer cut away by
  ``--max_seq_length``) stops the run naming its ``file:line``, unless ``--max_bad_samples N`` allows
  skipping N of them (each logged and listed in ``OUTPUT_DIR/bad_samples.jsonl``);
* a run resumes from the newest complete ``checkpoint-N`` in ``--output_dir`` whenever there is one,
  ``--overwrite_output_dir True`` (which upstream's scripts pass) included: a killed job restarts with
  the same command. Start over in a new ``--output_dir``;
* ``--unfreeze_lm_head`` trains the output layer (upstream's flag sets an attribute that does nothing);
* without DeepSpeed the weights are kept in float32 and ``--bf16`` / ``--fp16`` compute under autocast
  (upstream always loads bfloat16 and relies on DeepSpeed's float32 master weights; so do we with
  ``--deepspeed``);
* the loss divides by the trained tokens of the whole optimizer step over all GPUs, not per micro-batch;
* samples are padded per batch, never to ``--max_seq_length``; ``--group_by_length`` groups them by their exact
  lengths; ``--use_packed_ds`` packs them by a plan made per epoch (``chat_data/packing.py``), so resuming is exact.

The log goes to the console and ``OUTPUT_DIR/training_log.txt``; TensorBoard with ``--report_to tensorboard``.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from internvl.cli import run_main
from internvl.errors import CheckpointError, ConfigError, DataError, MissingFileError

log = logging.getLogger("internvl_chat.finetune")

# What an earlier attempt of the run leaves in --output_dir before its first checkpoint (not the user's files).
OWN_FILES = ("training_log.txt", "bad_samples.jsonl", "runs")


def _setup_logging(rank: int, output_dir: str, log_level: int) -> None:
    import transformers

    from internvl.train.distributed import setup_logging

    setup_logging(rank, log_file=Path(output_dir) / "training_log.txt")
    # transformers' own lines (the Trainer's "***** Running training *****", warnings) through the same handlers
    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.enable_propagation()
    transformers.utils.logging.set_verbosity(log_level)


def build_model(model_args, data_args, training_args, tokenizer, num_new_tokens: int):
    """The model as upstream prepares it: config overrides, position embeddings resized to
    ``--force_image_size``, new token rows, gradient checkpointing, then freezing and LoRA."""
    from internvl.models.chat_model import IMG_CONTEXT_TOKEN, InternVLChatConfig, InternVLChatModel
    from internvl.compat import dtype_kwargs, enable_activation_checkpointing
    from internvl.train.hf import weights_dtype, zero3_checkpoint_options
    from internvl.models.modeling_utils import gathered_parameters

    dtype = weights_dtype(training_args)
    if model_args.model_name_or_path is not None:
        config = InternVLChatConfig.from_pretrained(model_args.model_name_or_path)
        if config.template != data_args.conv_style:
            log.warning("--conv_style %s differs from the checkpoint's template %s; training (and the saved config) "
                        "use %s", data_args.conv_style, config.template, data_args.conv_style)
        config.vision_config.drop_path_rate = model_args.drop_path_rate
        config.template = data_args.conv_style
        config.select_layer = model_args.vision_select_layer
        config.dynamic_image_size = data_args.dynamic_image_size
        config.use_thumbnail = data_args.use_thumbnail
        config.ps_version = model_args.ps_version
        config.min_dynamic_patch = data_args.min_dynamic_patch
        config.max_dynamic_patch = data_args.max_dynamic_patch
        try:
            model = InternVLChatModel.from_pretrained(model_args.model_name_or_path, config=config,
                                                      low_cpu_mem_usage=True, **dtype_kwargs(dtype))
        except (OSError, ValueError) as err:
            raise CheckpointError(f"cannot load {model_args.model_name_or_path}: {err}") from None
    else:
        model = _build_new_model(model_args, data_args, dtype)
    model.img_context_token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT_TOKEN)
    if abs(model.config.downsample_ratio - data_args.down_sample_ratio) > 1e-9:
        raise ConfigError(f"--down_sample_ratio {data_args.down_sample_ratio} differs from the model's "
                          f"{model.config.downsample_ratio}")
    if model_args.mlp_path is not None:
        if not Path(model_args.mlp_path).is_file():
            raise MissingFileError(f"--mlp_path {model_args.mlp_path}: no such file")
        model.mlp1.load_state_dict(torch.load(model_args.mlp_path, map_location="cpu", weights_only=True))

    patch = model.config.vision_config.patch_size
    if model.config.vision_config.image_size != data_args.force_image_size:
        log.info("resizing the position embeddings from %d px to --force_image_size %d px",
                 model.config.vision_config.image_size, data_args.force_image_size)
        model.vision_model.resize_pos_embeddings(new_size=data_args.force_image_size,
                                                 old_size=model.config.vision_config.image_size, patch_size=patch)
        model.config.vision_config.image_size = data_args.force_image_size
    model.config.force_image_size = data_args.force_image_size
    model.num_image_token = model.config.num_image_token

    if num_new_tokens > 0 or model.language_model.get_input_embeddings().num_embeddings < len(tokenizer):
        old = model.language_model.get_output_embeddings().out_features
        model.language_model.resize_token_embeddings(len(tokenizer))
        weight = model.language_model.get_output_embeddings().weight
        with torch.no_grad(), gathered_parameters([weight], modify=True):
            weight[old:] = weight[:old].mean(dim=0, keepdim=True)  # new output rows: the mean of the old, as upstream
        model.config.llm_config.vocab_size = len(tokenizer)
        model.language_model.config.vocab_size = len(tokenizer)

    model.language_model.config.use_cache = False
    if model_args.grad_checkpoint:
        kwargs = {"gradient_checkpointing_kwargs": {"use_reentrant": False, **zero3_checkpoint_options(training_args)}}
        enable_activation_checkpointing(model.vision_model, **kwargs)
        enable_activation_checkpointing(model.language_model, **kwargs)

    _set_trainable(model, model_args)
    return model


def _build_new_model(model_args, data_args, dtype):
    """A new InternVL-Chat from a vision model and a language model (upstream's --vision_path/--llm_path)."""
    from transformers import AutoModelForCausalLM

    from internvl.models.chat_model import InternVLChatConfig, InternVLChatModel
    from internvl.compat import dtype_kwargs
    from internvl.models.intern_vit import InternVisionModel

    if model_args.vision_path is None or model_args.llm_path is None:
        raise ConfigError("give --model_name_or_path, or both --vision_path and --llm_path")
    vision = InternVisionModel.from_pretrained(model_args.vision_path, **dtype_kwargs(dtype))
    vision.config.drop_path_rate = model_args.drop_path_rate
    llm = AutoModelForCausalLM.from_pretrained(model_args.llm_path, **dtype_kwargs(dtype))
    config = InternVLChatConfig(vision.config.to_dict(), llm.config.to_dict(),
                                downsample_ratio=data_args.down_sample_ratio, pad2square=data_args.pad2square,
                                template=data_args.conv_style, select_layer=model_args.vision_select_layer,
                                dynamic_image_size=data_args.dynamic_image_size, use_thumbnail=data_args.use_thumbnail,
                                ps_version=model_args.ps_version, min_dynamic_patch=data_args.min_dynamic_patch,
                                max_dynamic_patch=data_args.max_dynamic_patch,
                                force_image_size=data_args.force_image_size)
    return InternVLChatModel(config, vision, llm).to(dtype)


def _set_trainable(model, model_args) -> None:
    """Freeze and wrap as the flags say, in upstream's order (:func:`internvl.train.trainable.apply_trainable_set`),
    then unfreeze: ``--unfreeze_vit_layers``, ``--unfreeze_lm_head`` (after the LoRA wrapping, which would
    otherwise freeze them again)."""
    from internvl.train.trainable import LoraRequest, apply_trainable_set

    freeze = [module for flag, module in ((model_args.freeze_backbone, model.vision_model),
                                          (model_args.freeze_llm, model.language_model),
                                          (model_args.freeze_mlp, model.mlp1)) if flag]
    unfreeze = []
    if model_args.unfreeze_vit_layers:
        unfreeze.append(lambda: model.vision_model.encoder.layers[model_args.unfreeze_vit_layers:].parameters())
    if model_args.unfreeze_lm_head:
        unfreeze.append(lambda: model.language_model.get_output_embeddings().parameters())
    log.info(apply_trainable_set(  # the trainable-parameter report (rank 0's log only)
        model, freeze=freeze, unfreeze=unfreeze, source=model_args.model_name_or_path,
        lora=[LoraRequest("use_backbone_lora", model_args.use_backbone_lora, model.wrap_backbone_lora),
              LoraRequest("use_llm_lora", model_args.use_llm_lora, model.wrap_llm_lora)],
        flags_hint="the freeze flags (--freeze_backbone / --freeze_llm / --freeze_mlp)"))


def _packing(data_args, dataset, collate):
    """``(packing options or None, collator, training dataset)`` for ``--use_packed_ds`` and ``--loss_reduction``."""
    import functools

    from .chat_data.packing import PackedChatDataset, PackingOptions, packed_collate, with_loss_weights

    options = PackingOptions.from_args(data_args)
    if data_args.use_packed_ds:
        log.info("packed training: up to %d tokens and %d tiles per pack, loss reduction %s",
                 options.max_packed_tokens, options.num_images_expected, options.loss_reduction)
        return options, functools.partial(packed_collate, options=options), PackedChatDataset(dataset, options)
    if options.loss_reduction != "token":
        return None, with_loss_weights(collate, options.loss_reduction), dataset
    return None, collate, dataset


def _special_tokens_in_config(model, tokenizer) -> None:
    """The tokenizer's BOS / EOS / PAD ids on the top-level config, where the Trainer looks for them: a checkpoint
    keeps them in llm_config only, and the Trainer would copy them itself with a warning on every run (the saved
    config.json is the same either way)."""
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            setattr(model.config, name, value)


def _one_line_per_log(trainer) -> None:
    """Each logged step once: the run's own line (LogCallback, into the console and training_log.txt), not also
    the Trainer's dict (its progress bar keeps running; PrinterCallback, used with --disable_tqdm, goes)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class BarOnly(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(BarOnly)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from transformers import set_seed

    from internvl.train.distributed import init_distributed
    from internvl.train.hf import (CheckpointCompleteCallback, finished_run, fit_loader_to_machine,
                                   prepare_deepspeed_on_cpu, resume_checkpoint)

    from .arguments import parse_finetune_args
    from .chat_data.build import build_training_data, data_options, load_training_tokenizer
    from .chat_data.dataset import collate
    from internvl.models.modeling_utils import published_code_files
    from internvl.compat import write_published_tokenizer_files
    from .trainer import BadSampleLedger, ChatTrainer, LogCallback

    info = init_distributed()  # before the arguments: SLURM's variables exported for the Trainer and DeepSpeed
    model_args, data_args, training_args = parse_finetune_args(argv)
    _setup_logging(info.rank, training_args.output_dir, training_args.get_process_log_level())
    log.info("InternVL-Chat fine-tuning: %d process(es), device %s, output %s", info.world_size, training_args.device,
             training_args.output_dir)
    prepare_deepspeed_on_cpu(training_args)
    resume = (resume_checkpoint(training_args, is_main=info.is_main, own_files=OWN_FILES)
              if training_args.do_train else None)
    if resume:
        log.info("resuming from %s (start over in a new --output_dir)", resume)
    set_seed(training_args.seed)

    tokenizer, num_new_tokens = load_training_tokenizer(model_args.model_name_or_path or model_args.llm_path,
                                                        data_args.max_seq_length, model_args.use_fast_tokenizer)
    options = data_options(model_args, data_args)
    dataset, problems = build_training_data(data_args.meta_path, tokenizer, options)
    dataset.set_seed(training_args.data_seed if training_args.data_seed is not None else training_args.seed)
    resume_step = int(Path(resume).name.rsplit("-", 1)[-1]) if resume and Path(resume).name.startswith(
        "checkpoint-") and Path(resume).name.rsplit("-", 1)[-1].isdigit() else (0 if resume else None)
    ledger = BadSampleLedger(Path(training_args.output_dir) / "bad_samples.jsonl", data_args.max_bad_samples,
                             info.rank, resume_step)
    ledger.startup(problems)
    if len(dataset) == 0:
        raise DataError(f"{data_args.meta_path}: no usable sample")
    log.info("%d training samples from %d dataset(s); %d tokens per tile", len(dataset), len(dataset.datasets),
             options.num_image_token)

    if training_args.do_train and (training_args.group_by_length or data_args.use_packed_ds):
        with training_args.main_process_first(desc="sample lengths"):
            dataset.lengths  # the main process computes and caches them; the other ranks read the cache

    model = build_model(model_args, data_args, training_args, tokenizer, num_new_tokens)
    training_args.remove_unused_columns = False  # the items carry exactly the model's inputs (and bad_samples)
    packing, collator, train_data = _packing(data_args, dataset, collate)
    fit_loader_to_machine(training_args)
    _special_tokens_in_config(model, tokenizer)
    trainer = ChatTrainer(model=model, args=training_args, train_dataset=train_data, processing_class=tokenizer,
                          data_collator=collator, callbacks=[CheckpointCompleteCallback(), LogCallback()],
                          group_by_length=training_args.group_by_length,
                          use_data_resampling=data_args.use_data_resampling, ledger=ledger, packing=packing,
                          loss_reduction_all_gather=data_args.loss_reduction_all_gather)
    _one_line_per_log(trainer)
    if not training_args.do_train:
        log.info("--do_train is False: nothing to do")
        return 0
    if finished_run(trainer) is not None:  # it says so
        return 0
    start = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    if info.is_main:  # the published tokenizer layout and the base's remote code: the output loads as the base does
        write_published_tokenizer_files(training_args.output_dir, tokenizer)
        for path in published_code_files(model_args.model_name_or_path):
            shutil.copy2(path, Path(training_args.output_dir) / path.name)
    metrics = dict(result.metrics, train_samples=len(dataset), unusable_samples=ledger.total)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    log.info("done in %.0f s: model in %s; %d unusable sample(s)%s", time.time() - start, training_args.output_dir,
             ledger.total, f" (listed in {ledger.path})" if ledger.total else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
