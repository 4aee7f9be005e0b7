"""The linear-probing run behind ``classification/main.py``: the training loop, evaluation, resuming.

:func:`main` trains (or evaluates, or times) as a config says, in this process of the job. The command
line, its ``--help`` and the error behaviour are ``classification/main.py``'s; this module imports torch,
the model and the data pipeline, which that one loads only once its flags are parsed.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from classification.checkpoint import (TrainState, auto_resume, model_tensors, read_checkpoint,
                                       remove_step_checkpoints)
from classification.config import mixup_active
from classification.dataset import (BadImageError, TrainBatchSampler, UnreadableImages, build_eval_set,
                                    build_train_feature_source, build_train_set, eval_batches, make_loader, seeded)
from classification.features import build_feature_cache
from classification.model import InternViTClassifier, build_model, load_classifier_weights
from classification.optim import HeadEma, LRSchedule, build_optimizer
from internvl.errors import CheckpointError, ConfigError
from internvl.train.distributed import DistInfo, all_gather_object, barrier, seed_everything
from internvl.train.distributed import average_norm_statistics as _average_norm_statistics
from internvl.train.precision import autocast, needs_loss_scaling, precision_policy

logger = logging.getLogger("classification")


# --------------------------------------------------------------------------- setup helpers
def scale_lr(config, world_size: int):
    """Upstream's linear scaling: every LR x (BATCH_SIZE x processes [x ACCUMULATION_STEPS]) / 512."""
    factor = config.DATA.BATCH_SIZE * world_size / 512.0
    if config.TRAIN.ACCUMULATION_STEPS > 1:
        factor *= config.TRAIN.ACCUMULATION_STEPS
    config = config.clone()
    config.defrost()
    config.TRAIN.BASE_LR *= factor
    config.TRAIN.WARMUP_LR *= factor
    config.TRAIN.MIN_LR *= factor
    config.freeze()
    return config


def amp_dtype_for(config, device: torch.device) -> Optional[torch.dtype]:
    """Autocast dtype: AMP_TYPE on GPUs unless AMP_OPT_LEVEL is O0; CPUs always run fp32 (the suite's
    :func:`internvl.train.precision.precision_policy` for trained weights)."""
    half = None if config.AMP_OPT_LEVEL == "O0" else torch.float16 if config.AMP_TYPE == "float16" else torch.bfloat16
    return precision_policy(half, trains=True, device=device).autocast


def build_criterion(config):
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    if mixup_active(config):  # mixup makes soft targets and applies the label smoothing itself
        return SoftTargetCrossEntropy()
    if config.MODEL.LABEL_SMOOTHING > 0:
        return LabelSmoothingCrossEntropy(smoothing=config.MODEL.LABEL_SMOOTHING)
    return torch.nn.CrossEntropyLoss()


def build_mixup(config):
    if not mixup_active(config):
        return None
    from timm.data import Mixup
    aug = config.AUG
    return Mixup(mixup_alpha=aug.MIXUP, cutmix_alpha=aug.CUTMIX, cutmix_minmax=aug.CUTMIX_MINMAX,
                 prob=aug.MIXUP_PROB, switch_prob=aug.MIXUP_SWITCH_PROB, mode=aug.MIXUP_MODE,
                 label_smoothing=config.MODEL.LABEL_SMOOTHING, num_classes=config.MODEL.NUM_CLASSES)


class Meter:
    """Latest value and running mean."""

    def __init__(self):
        self.val = self.sum = self.count = 0.0

    @property
    def avg(self) -> float:
        return self.sum / max(self.count, 1)

    def update(self, value: float, n: int = 1) -> None:
        self.val = value
        self.sum += value * n
        self.count += n


def _memory_mb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0


def _tensorboard(output: Path, info: DistInfo):
    if not info.is_main:
        return None
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(log_dir=str(output / "tensorboard"))


# --------------------------------------------------------------------------- training
@dataclass
class Training:
    """One training run as the epoch loop sees it, built once by :func:`train`.

    ``state`` is what a checkpoint saves and restores (classifier, optimizer, AMP scaler, EMA, counters:
    ``state.epoch`` is the epoch being trained, ``state.next_step`` its first micro-batch,
    ``state.global_step`` the optimizer updates so far); the rest is how each batch is processed.
    """

    state: TrainState
    model: torch.nn.Module  # state.classifier, wrapped in DDP when distributed
    criterion: Callable
    schedule: LRSchedule
    info: DistInfo
    unreadable: UnreadableImages
    amp_dtype: Optional[torch.dtype] = None
    mixup_fn: Optional[Callable] = None
    uses_features: bool = False  # batches hold cached backbone features instead of images
    writer: Any = None  # TensorBoard SummaryWriter (rank 0)


def train_one_epoch(run: Training, loader, on_update: Optional[Callable[[int], None]] = None) -> None:
    """Epoch ``run.state.epoch`` from its micro-batch ``run.state.next_step`` on; counts the updates in
    ``run.state.global_step``. ``on_update(next_step)`` runs after every optimizer update (mid-epoch
    checkpoints), ``next_step`` being the micro-batches of the epoch done by then.

    With ``TRAIN.ACCUMULATION_STEPS`` = k, each micro-batch's mean loss is divided by k, so the k summed
    gradients are their mean: the gradient of one batch k times as large.
    """
    state, config, info = run.state, run.state.config, run.info
    optimizer, scaler, epoch = state.optimizer, state.scaler, state.epoch
    run.model.train()
    optimizer.zero_grad(set_to_none=True)
    run.schedule.apply(optimizer, state.global_step)
    accum = max(config.TRAIN.ACCUMULATION_STEPS, 1)
    start_step = state.next_step
    num_steps = start_step + len(loader)
    params = [p for p in state.classifier.parameters() if p.requires_grad]
    batch_time, loss_meter, norm_meter = Meter(), Meter(), Meter()
    epoch_start = end = time.time()
    seen = 0
    for idx, batch in enumerate(loader, start=start_step):
        run.unreadable.add(batch.errors)
        if batch.inputs is None:
            raise BadImageError(f"every image of a training batch was unreadable: {batch.errors[0][1]} ...")
        inputs = batch.inputs.to(info.device, non_blocking=True)
        targets = batch.targets.to(info.device, non_blocking=True)
        if run.mixup_fn is not None:
            if len(inputs) % 2:  # timm's batch mixup pairs samples: an image skipped as unreadable leaves one over
                inputs, targets = inputs[:-1], targets[:-1]
            with seeded((config.SEED, epoch, info.rank), idx):  # the same mixing after a resume
                inputs, targets = run.mixup_fn(inputs, targets)
        boundary = (idx + 1) % accum == 0
        sync = contextlib.nullcontext() if boundary or not hasattr(run.model, "no_sync") else run.model.no_sync()
        with sync:
            with autocast(info.device, run.amp_dtype):
                outputs = run.model(features=inputs) if run.uses_features else run.model(inputs)
                loss = run.criterion(outputs.float(), targets)
            scaler.scale(loss / accum).backward()
        if boundary:
            run.schedule.apply(optimizer, state.global_step)
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.TRAIN.CLIP_GRAD or float("inf"))
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if state.ema is not None:
                state.ema.update(state.classifier)
            state.global_step += 1
            norm_meter.update(float(grad_norm))
            if on_update is not None:
                on_update(idx + 1)
        loss_meter.update(loss.item(), len(targets))
        seen += len(targets)
        batch_time.update(time.time() - end)
        end = time.time()
        if idx % config.PRINT_FREQ == 0 or idx == num_steps - 1:
            lr = optimizer.param_groups[0]["lr"]
            eta = datetime.timedelta(seconds=int(batch_time.avg * (num_steps - idx - 1)))
            images_per_s = config.DATA.BATCH_SIZE * info.world_size / max(batch_time.avg, 1e-9)
            logger.info(f"Train: [{epoch}/{config.TRAIN.EPOCHS}][{idx}/{num_steps}]\teta {eta} lr {lr:.6f}\t"
                        f"time {batch_time.val:.4f} ({batch_time.avg:.4f})\t"
                        f"loss {loss_meter.val:.4f} ({loss_meter.avg:.4f})\t"
                        f"grad_norm {norm_meter.val:.4f} ({norm_meter.avg:.4f})\t"
                        f"{images_per_s:.1f} images/s\tmem {_memory_mb(info.device):.0f}MB")
            if run.writer is not None:
                for name, value in (("loss", loss_meter.val), ("lr", lr), ("grad_norm", norm_meter.val),
                                    ("images_per_s", images_per_s)):
                    run.writer.add_scalar(f"train/{name}", value, state.global_step)
    elapsed = time.time() - epoch_start
    logger.info(f"EPOCH {epoch} training takes {datetime.timedelta(seconds=int(elapsed))} "
                f"({seen * info.world_size / max(elapsed, 1e-9):.1f} images/s)")


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def validate(config, loader, model: InternViTClassifier, eval_set, info: DistInfo, amp_dtype,
             unreadable: UnreadableImages, epoch: Optional[int] = None) -> dict:
    """Top-1/top-5 accuracy and loss over the whole set, gathered from every process.

    Each process scores its shard; the per-sample results are gathered and de-duplicated by sample
    index, so every image counts exactly once whatever the number of processes. ImageNet-A/R keep
    the logits of the classes present; ImageNet-ReaL scores against the ReaL label sets (images
    without one are left out), as upstream's ``validate_real``.
    """
    model.eval()
    subset = torch.tensor(eval_set.class_subset) if eval_set.class_subset is not None else None
    to_subset = None
    if subset is not None:
        to_subset = torch.full((config.MODEL.NUM_CLASSES,), -1, dtype=torch.long)
        to_subset[subset] = torch.arange(len(subset))
    parts, batch_time, end = [], Meter(), time.time()
    for idx, batch in enumerate(loader):
        unreadable.add(batch.errors)
        if batch.inputs is None:
            continue
        with torch.inference_mode(), autocast(info.device, amp_dtype):
            logits = model(batch.inputs.to(info.device, non_blocking=True))
        logits, targets = logits.float().cpu(), batch.targets
        if subset is not None:
            logits, targets = logits[:, subset], to_subset[targets]
        loss = F.cross_entropy(logits, targets, reduction="none")
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        parts.append((batch.indices, targets, top, loss))
        batch_time.update(time.time() - end)
        end = time.time()
        if idx % config.PRINT_FREQ == 0:
            acc1 = (top[:, 0] == targets).float().mean().item() * 100
            acc5 = (top == targets[:, None]).any(1).float().mean().item() * 100
            logger.info(f"Test: [{idx}/{len(loader)}]\tTime {batch_time.val:.3f} ({batch_time.avg:.3f})\t"
                        f"Loss {loss.mean().item():.4f}\tAcc@1 {acc1:.3f}\tAcc@5 {acc5:.3f}\t"
                        f"Mem {_memory_mb(info.device):.0f}MB")
    local = [torch.cat(t) for t in zip(*parts)] if parts else None
    gathered = [p for p in all_gather_object(local) if p is not None]
    if not gathered:
        raise BadImageError("no image of the evaluation set could be read")
    indices, targets, top, loss = (torch.cat(t) for t in zip(*gathered))
    order = torch.argsort(indices, stable=True)
    indices, targets, top, loss = indices[order], targets[order], top[order], loss[order]
    first = torch.ones_like(indices, dtype=torch.bool)  # one result per sample (TEST.SEQUENTIAL repeats them)
    first[1:] = indices[1:] != indices[:-1]
    indices, targets, top, loss = indices[first], targets[first], top[first], loss[first]
    n = len(indices)
    result = {"num_images": n, "classes": len(subset) if subset is not None else config.MODEL.NUM_CLASSES,
              "loss": loss.double().mean().item(),
              "acc1": 100 * (top[:, 0] == targets).sum().item() / n,
              "acc5": 100 * (top == targets[:, None]).any(1).sum().item() / n}
    if eval_set.real_labels is not None:
        hits1, hits5 = [], []
        for index, preds in zip(indices.tolist(), top.tolist()):
            labels = eval_set.real_labels[index]
            if labels:  # ReaL leaves out the images it gives no label
                hits1.append(preds[0] in labels)
                hits5.append(any(p in labels for p in preds[:5]))
        result["real_acc1"] = 100 * sum(hits1) / max(len(hits1), 1)
        result["real_acc5"] = 100 * sum(hits5) / max(len(hits5), 1)
        result["real_images"] = len(hits1)
        logger.info(f"* ReaL Acc@1 {result['real_acc1']:.3f} Acc@5 {result['real_acc5']:.3f} "
                    f"loss {result['loss']:.3f}")
    else:
        prefix = f"[Epoch:{epoch}]" if epoch is not None else ""
        logger.info(f"{prefix} * Acc@1 {result['acc1']:.3f} Acc@5 {result['acc5']:.3f}")
    return result


def report(result: dict, network: str = "network") -> float:
    """Upstream's summary line; returns the headline top-1 (ReaL top-1 for ImageNet-ReaL)."""
    if "real_acc1" in result:
        logger.info(f"ReaL Accuracy of the {network} on the {result['num_images']} test images: "
                    f"{result['real_acc1']:.1f}%")
        return result["real_acc1"]
    logger.info(f"Accuracy of the {network} on the {result['num_images']} test images: {result['acc1']:.1f}%")
    return result["acc1"]


@torch.no_grad()
def throughput(loader, model, info: DistInfo, amp_dtype) -> float:
    model.eval()
    batch = next(iter(loader))
    images = batch.inputs.to(info.device)
    sync = torch.cuda.synchronize if info.device.type == "cuda" else (lambda: None)
    with torch.inference_mode(), autocast(info.device, amp_dtype):
        for _ in range(5):
            model(images)
        sync()
        start = time.time()
        for _ in range(10):
            model(images)
        sync()
    rate = 10 * len(images) / (time.time() - start)
    logger.info(f"batch_size {len(images)} throughput {rate:.1f} images/s")
    return rate


# --------------------------------------------------------------------------- the run
def main(config, info: DistInfo) -> dict:
    """Train (or with ``EVAL_MODE`` evaluate, with ``THROUGHPUT_MODE`` time) as ``config`` says (whose input
    paths :func:`classification.config.check_inputs` has checked)."""
    config = scale_lr(config, info.world_size)
    output = Path(config.OUTPUT)
    output.mkdir(parents=True, exist_ok=True)
    if info.is_main:
        (output / "config.yaml").write_text(config.dump())
    logger.info("%s: %d process(es) on %s; full config saved to %s (learning rates scaled by the total batch: "
                "BASE_LR %g, WARMUP_LR %g, MIN_LR %g)", config.MODEL.NAME, info.world_size, info.device,
                output / "config.yaml", config.TRAIN.BASE_LR, config.TRAIN.WARMUP_LR, config.TRAIN.MIN_LR)
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp_dtype = amp_dtype_for(config, info.device)
    logger.info("precision: %s", f"autocast to {amp_dtype}{' with loss scaling' * needs_loss_scaling(amp_dtype)}"
                if amp_dtype else "float32")

    seed_everything(config.SEED)  # the same initial head (and random backbone) in every process
    model = build_model(config, dtype=None if amp_dtype else torch.float32).to(info.device)
    if info.distributed and info.device.type == "cuda" and config.MODEL.INTERN_VIT_6B.HEAD_NORM_TYPE == "bn":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # batch statistics over all GPUs
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("model: %s; %d trainable parameters (%s)", config.MODEL.NAME, n_trainable,
                ", ".join(model.trainable_prefixes()) or "all")
    seed_everything(config.SEED, info.rank)

    unreadable = UnreadableImages(config.DATA.MAX_BAD_IMAGES)
    eval_set = build_eval_set(config)
    eval_loader = make_loader(eval_set.dataset, eval_batches(len(eval_set.dataset), config.DATA.BATCH_SIZE,
                                                             info.world_size, info.rank, config.TEST.SEQUENTIAL),
                              config, info.device)
    logger.info("evaluation set %s: %d images", eval_set.dataset.name, len(eval_set.dataset))
    if config.THROUGHPUT_MODE:
        return {"throughput": throughput(eval_loader, model, info, amp_dtype)}
    if config.EVAL_MODE:
        return evaluate_only(config, model, eval_set, eval_loader, info, amp_dtype, unreadable)
    return train(config, model, eval_set, eval_loader, info, amp_dtype, unreadable)


def _load_weights(model: InternViTClassifier, checkpoint: dict, path) -> None:
    """Load a checkpoint's model tensors into ``model`` (a head-only file is enough)."""
    loaded = load_classifier_weights(model, model_tensors(checkpoint, path), str(path),
                                     require=model.trainable_prefixes() or ("head.",))
    logger.info("loaded %d tensors from %s", len(loaded), path)


def _resume_from(config, updates_per_epoch: int) -> tuple[Optional[Path], dict]:
    """``MODEL.RESUME`` (``--resume``), else with ``TRAIN.AUTO_RESUME`` the run folder's most advanced readable
    checkpoint; ``(None, {})`` when there is none."""
    if config.MODEL.RESUME:
        return Path(config.MODEL.RESUME), read_checkpoint(config.MODEL.RESUME)
    if not config.TRAIN.AUTO_RESUME:
        return None, {}
    path, checkpoint = auto_resume(Path(config.OUTPUT), updates_per_epoch)
    if path is not None:
        logger.info("auto resuming from %s", path)
    else:
        logger.info("no checkpoint found in %s, ignoring auto resume", config.OUTPUT)
    return path, checkpoint


def evaluate_only(config, model, eval_set, eval_loader, info, amp_dtype, unreadable) -> dict:
    resume, checkpoint = _resume_from(config, 1)
    if resume is not None:
        _load_weights(model, checkpoint, resume)
    elif config.MODEL.PRETRAINED:
        checkpoint = read_checkpoint(config.MODEL.PRETRAINED)
        _load_weights(model, checkpoint, config.MODEL.PRETRAINED)
    else:
        logger.warning("no --resume checkpoint and none in %s: evaluating an untrained head", config.OUTPUT)
    result = validate(config, eval_loader, model, eval_set, info, amp_dtype, unreadable)
    result["top1"] = report(result)
    if config.TRAIN.EMA.ENABLE and isinstance(checkpoint.get("model_ema"), dict):
        ema = HeadEma(model, config.TRAIN.EMA.DECAY)
        ema.load_state_dict(checkpoint["model_ema"])
        with ema.applied_to(model):
            ema_result = validate(config, eval_loader, model, eval_set, info, amp_dtype, unreadable)
        result["ema"] = ema_result
        report(ema_result, "ema network")
    if len(unreadable):
        logger.warning("%d unreadable images were left out", len(unreadable))
    result["unreadable_images"] = len(unreadable)
    return result


def train(config, model: InternViTClassifier, eval_set, eval_loader, info, amp_dtype, unreadable) -> dict:
    output = Path(config.OUTPUT)
    uses_features = config.TRAIN.FEATURE_CACHE
    if uses_features:
        train_set = build_feature_cache(model, build_train_feature_source(config), config, info, amp_dtype,
                                        unreadable)
    else:
        train_set = build_train_set(config)
    logger.info("train set: %d samples%s", len(train_set), " (cached features)" if uses_features else "")
    sampler = TrainBatchSampler(len(train_set), config.DATA.BATCH_SIZE, info.world_size, info.rank, config.SEED)
    train_loader = make_loader(train_set, sampler, config, info.device)
    accum = max(config.TRAIN.ACCUMULATION_STEPS, 1)
    updates_per_epoch = sampler.batches_per_epoch // accum
    if updates_per_epoch < 1:
        raise ConfigError(f"TRAIN.ACCUMULATION_STEPS={accum} exceeds the {sampler.batches_per_epoch} batches of an "
                          "epoch")

    ddp_model = model
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP
        frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
        frozen += [n for n, _ in model.named_buffers() if n.startswith("backbone.")]
        DDP._set_params_and_buffers_to_ignore_for_model(model, frozen)  # no 6B broadcast: every rank loaded it
        ddp_model = DDP(model, device_ids=[info.device.index] if info.device.type == "cuda" else None,
                        broadcast_buffers=False)  # SyncBatchNorm (GPU) or average_norm_statistics (CPU) instead
    state = TrainState(model, build_optimizer(config, model),
                       torch.amp.GradScaler(info.device.type, enabled=needs_loss_scaling(amp_dtype)),
                       HeadEma(model, config.TRAIN.EMA.DECAY) if config.TRAIN.EMA.ENABLE else None, config,
                       epoch=config.TRAIN.START_EPOCH)
    resume, checkpoint = _resume_from(config, updates_per_epoch)
    if resume is not None:
        _load_weights(model, checkpoint, resume)
        state.restore(checkpoint, resume, updates_per_epoch)
    elif config.MODEL.PRETRAINED:
        _load_pretrained_classifier(config, model)
    run = Training(state, ddp_model, build_criterion(config), LRSchedule.from_config(config, updates_per_epoch),
                   info, unreadable, amp_dtype, build_mixup(config), uses_features, _tensorboard(output, info))

    def on_update(next_step: int) -> None:  # mid-epoch checkpoints: epoch - 1 is complete, next_step batches done
        if (config.TRAIN.SAVE_STEPS and state.global_step % config.TRAIN.SAVE_STEPS == 0
                and next_step < sampler.batches_per_epoch):
            average_norm_statistics(model, info, state.ema)
            if info.is_main:
                state.save(output, f"ckpt_step_{state.global_step}.pth", state.epoch - 1, next_step, keep_last=1)
            barrier()

    result: dict = {}
    if state.epoch >= config.TRAIN.EPOCHS:
        logger.info("all %d epochs are done (%s); raise TRAIN.EPOCHS to train further", config.TRAIN.EPOCHS, resume)
    logger.info("Start training")
    start_time = time.time()
    for epoch in range(state.epoch, config.TRAIN.EPOCHS):
        state.epoch = epoch
        sampler.set_epoch(epoch, state.next_step)
        train_one_epoch(run, train_loader, on_update)
        state.next_step = 0
        average_norm_statistics(model, info, state.ema)
        last = epoch == config.TRAIN.EPOCHS - 1
        if info.is_main and (epoch % config.SAVE_FREQ == 0 or last):
            state.save(output, f"ckpt_epoch_{epoch}.pth", epoch, keep_last=config.SAVE_CKPT_NUM)
            remove_step_checkpoints(output)
        barrier()
        if epoch % config.EVAL_FREQ == 0 or last:
            result = validate(config, eval_loader, model, eval_set, info, amp_dtype, unreadable, epoch)
            acc1 = report(result)
            if run.writer is not None:
                for name in ("acc1", "acc5", "loss"):
                    run.writer.add_scalar(f"val/{name}", result[name], epoch)
            if info.is_main and acc1 > state.max_accuracy:
                state.save(output, "ckpt_epoch_best.pth", epoch)
            state.max_accuracy = max(state.max_accuracy, acc1)
            logger.info(f"Max accuracy: {state.max_accuracy:.2f}%")
            if state.ema is not None:
                with state.ema.applied_to(model):
                    result["ema"] = validate(config, eval_loader, model, eval_set, info, amp_dtype, unreadable, epoch)
                acc1_ema = report(result["ema"], "ema network")
                if info.is_main and acc1_ema > state.max_accuracy_ema:
                    state.save(output, "ckpt_epoch_ema_best.pth", epoch)
                state.max_accuracy_ema = max(state.max_accuracy_ema, acc1_ema)
                logger.info(f"Max ema accuracy: {state.max_accuracy_ema:.2f}%")
        barrier()
    if run.writer is not None:
        run.writer.close()
    logger.info("Training time {}".format(datetime.timedelta(seconds=int(time.time() - start_time))))
    if len(unreadable):
        logger.warning("%d unreadable images were skipped", len(unreadable))
    result.update(max_accuracy=state.max_accuracy, global_step=state.global_step, unreadable_images=len(unreadable))
    return result


def average_norm_statistics(model: torch.nn.Module, info: DistInfo, ema: Optional[HeadEma] = None) -> None:
    """The suite's :func:`internvl.train.distributed.average_norm_statistics`, with the EMA's copies of the
    statistics averaged too."""
    extra = [v for k, v in ema.shadow.items() if k.endswith((".running_mean", ".running_var"))] if ema else ()
    _average_norm_statistics(model, info, extra)


def _load_pretrained_classifier(config, model: InternViTClassifier) -> None:
    """MODEL.PRETRAINED: start from whole-classifier weights; another class count needs RAND_INIT_FT_HEAD."""
    path = config.MODEL.PRETRAINED
    tensors = dict(model_tensors(read_checkpoint(path), path))
    head = model.head
    if "head.weight" in tensors and tensors["head.weight"].shape != head.weight.shape:
        if not config.TRAIN.RAND_INIT_FT_HEAD:
            raise CheckpointError(f"{path}: head.weight has shape {tuple(tensors['head.weight'].shape)} but the "
                                  f"model's is {tuple(head.weight.shape)} (MODEL.NUM_CLASSES="
                                  f"{config.MODEL.NUM_CLASSES}); set TRAIN.RAND_INIT_FT_HEAD True to start a new head")
        del tensors["head.weight"], tensors["head.bias"]
        with torch.no_grad():
            head.weight.mul_(0.001)
            head.bias.mul_(0.001)
        logger.warning("%s: head of another class count dropped; the new head starts near zero", path)
    load_classifier_weights(model, tensors, path)
    logger.info("=> loaded %s for fine-tuning", path)
