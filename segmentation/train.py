"""Train an InternViT segmentor from an MMSegmentation-style config (iteration-based, as upstream).

    python segmentation/train.py CONFIG [--work-dir DIR] [--cfg-options key=value ...]
    bash segmentation/dist_train.sh CONFIG 8                    # torchrun on 8 GPUs
    GPUS=16 bash segmentation/slurm_train.sh PARTITION JOB CONFIG

AdamW (layer-wise LR decay) with MMCV's poly schedule and linear warmup; a checkpoint every
``checkpoint_config.interval`` iterations (``iter_<n>.pth``, written atomically, the newest
``max_keep_ckpts`` kept); evaluation every ``evaluation.interval`` iterations with the best kept as
``best_mIoU_iter_<n>.pth``. Restarting the same command resumes from the newest ``iter_<n>.pth`` in the
work dir (``--resume-from`` picks one, ``--no-auto-resume`` starts over). Logs: ``<work_dir>/train.log``,
TensorBoard in ``<work_dir>/tensorboard``, a progress bar on the terminal.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

logger = logging.getLogger("segmentation")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="train config file")
    parser.add_argument("--work-dir", "--work_dir", help="output folder (default: work_dirs/<config name>)")
    parser.add_argument("--load-from", "--load_from", help="weights to start from (not a resume)")
    parser.add_argument("--resume-from", "--resume_from", help="checkpoint to resume from")
    parser.add_argument("--no-auto-resume", action="store_true",
                        help="do not resume from the newest iter_<n>.pth in the work dir")
    parser.add_argument("--auto-resume", action="store_true", help="accepted for MMSegmentation (the default)")
    parser.add_argument("--no-validate", action="store_true", help="no evaluation during training")
    parser.add_argument("--seed", type=int, help="random seed (default: the config's seed, else 0)")
    parser.add_argument("--deterministic", action="store_true", help="deterministic cuDNN / algorithms")
    add_run_arguments(parser)
    return parser.parse_args(argv)


def add_run_arguments(parser) -> None:
    """The options train.py and test.py share (MMSegmentation's, plus the backbone dtype and loader workers)."""
    import argparse

    parser.add_argument("--cfg-options", "--options", nargs="+", type=_option, default=[], metavar="KEY=VALUE",
                        help="override config keys, e.g. data.samples_per_gpu=4 model.backbone.out_indices=[44] "
                             "(values are Python literals, else strings; a,b is a list)")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none",
                        help="accepted for MMSegmentation; the launcher is read from the environment")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--backbone-dtype", default="auto",
                        help="backbone weights: auto (on GPU bf16 when frozen, fp32 + bf16 autocast when "
                             "training; fp32 on CPU), fp32, bf16, fp16")
    parser.add_argument("--workers", type=int, help="loader workers per process (data.workers_per_gpu)")


def _option(text: str) -> tuple:
    """``key=value`` of --cfg-options, the value read as MMCV's DictAction reads it."""
    import ast

    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")

    def literal(item: str):
        try:
            return ast.literal_eval(item)
        except (ValueError, SyntaxError):
            return item

    if "," in raw and raw[:1] not in "[(" and not raw.startswith(("'", '"')):
        return key, [literal(item) for item in raw.split(",")]
    return key, literal(raw)


class TrainSampler:
    """Batches of ``(index, epoch)`` keys for one process, forever: each epoch a permutation drawn from
    ``(seed, epoch)``, split round-robin over the processes (padded by wrapping). Starting at iteration
    ``start_iter`` skips exactly the samples already used, so a resumed run sees the same stream."""

    def __init__(self, size: int, batch_size: int, world_size: int = 1, rank: int = 0, seed: int = 0,
                 start_iter: int = 0, shuffle: bool = True):
        self.size, self.batch_size, self.world_size, self.rank = size, batch_size, world_size, rank
        self.seed, self.start_iter, self.shuffle = seed, start_iter, shuffle
        self.per_rank = math.ceil(size / world_size)

    def epoch_indices(self, epoch: int) -> list[int]:
        import numpy as np
        order = (np.random.default_rng([self.seed, epoch]).permutation(self.size) if self.shuffle
                 else np.arange(self.size))
        padded = np.resize(order, self.per_rank * self.world_size)
        return padded[self.rank::self.world_size].tolist()

    def __iter__(self):
        epoch, offset = divmod(self.start_iter * self.batch_size, self.per_rank)
        batch = []
        while True:
            for index in self.epoch_indices(epoch)[offset:]:
                batch.append((index, epoch))
                if len(batch) == self.batch_size:
                    yield batch
                    batch = []
            epoch, offset = epoch + 1, 0


def collate(items: list) -> dict:
    import torch
    return {"img": torch.stack([i["img"] for i in items]), "seg": torch.stack([i["seg"] for i in items]),
            "index": [i["index"] for i in items]}


def main(argv=None) -> dict:
    args = parse_args(argv)  # first: --help and flag errors need no torch
    from internvl.train.distributed import cleanup_distributed, init_distributed, setup_logging
    from segmentation.config import load_config

    cfg = load_config(args.config, dict(args.cfg_options))
    info = init_distributed()
    work_dir = Path(args.work_dir or cfg.get("work_dir") or Path("work_dirs") / Path(args.config).stem)
    work_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(info.rank, work_dir / "train.log")
    from tqdm.contrib.logging import logging_redirect_tqdm
    try:
        with logging_redirect_tqdm():  # log lines above the progress bar, not through it
            return train(args, cfg, info, work_dir)
    finally:
        cleanup_distributed()


@dataclass
class Run:
    """Everything a training run holds between its pieces: :func:`setup` builds it (and restores a checkpoint
    into it), :func:`train_loop` runs it, :func:`checkpoint_state` / :func:`save_iteration` / :func:`keep_best`
    write it."""

    args: Any
    cfg: Any
    info: Any
    work_dir: Path
    seed: int
    max_iters: int
    model_cfg: dict
    model: Any  # what the loop calls: the segmentor, or DDP around it
    module: Any  # the segmentor itself (what is saved and evaluated)
    optimizer: Any
    schedule: Any
    scaler: Any
    base_lr: float
    grad_clip: Optional[dict]
    ckpt_cfg: dict
    log_interval: int
    evaluation: dict
    train_set: Any
    workers: int
    val_set: Any = None
    loader: Any = None
    writer: Any = None
    start_iter: int = 0
    best: dict = field(default_factory=lambda: {"mIoU": None, "iter": None, "path": None})


def train(args, cfg, info, work_dir: Path) -> dict:
    """Set the run up (resuming where a checkpoint says), then train it to ``runner.max_iters``."""
    return train_loop(setup(args, cfg, info, work_dir))


def setup(args, cfg, info, work_dir: Path) -> Run:
    """The data (first: a wrong path fails in a second, not after loading a 6B backbone), the model, optimizer,
    schedule and loss scaler, the checkpoint to resume from (:func:`restore`), DDP, the loader and the
    TensorBoard writer."""
    import torch

    from internvl.errors import ConfigError
    from internvl.train.distributed import seed_everything
    from segmentation.ade20k import build_dataset
    from segmentation.config import (CHECKPOINT_ARGS, DATA_ARGS, EVALUATION_ARGS, LOG_ARGS, LR_ARGS,
                                     OPTIMIZER_ARGS, OPTIMIZER_CONFIG_ARGS, RUNNER_ARGS, section, to_plain)
    from segmentation.engine import build_model
    from segmentation.optim import PolyLR, build_optimizer

    seed = args.seed if args.seed is not None else cfg.get("seed", 0)
    if info.is_main:
        cfg.dump(str(work_dir / Path(args.config).name))
    logger.info("config %s, %d process(es) on %s, seed %d; config saved to %s", args.config, info.world_size,
                info.device, seed, work_dir / Path(args.config).name)
    if args.deterministic:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    elif info.device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(cfg.get("cudnn_benchmark", True))
    runner = section(cfg, "runner", RUNNER_ARGS)
    if runner["type"] != "IterBasedRunner" or not runner["max_iters"]:
        raise ConfigError("runner: an IterBasedRunner with max_iters is required")
    max_iters = int(runner["max_iters"])
    data = section(cfg, "data", DATA_ARGS)
    workers = args.workers if args.workers is not None else data["workers_per_gpu"]

    train_set = build_dataset(to_plain(data["train"]), seed, "data.train")
    if info.is_main and data["train"].get("max_image_num") is not None:
        (work_dir / "train_subset.txt").write_text("".join(f"{image}\n" for image, _ in train_set.items))
    val_set = None
    evaluation = section(cfg, "evaluation", EVALUATION_ARGS)
    if not args.no_validate and data.get("val") is not None:
        val_set = build_dataset(to_plain(data["val"]), seed, "data.val")
        if evaluation["metric"] not in ("mIoU", ["mIoU"]):
            raise ConfigError(f"evaluation.metric={evaluation['metric']!r}: supported: mIoU (with aAcc, mAcc)")

    seed_everything(seed)  # the same initial heads in every process
    model = build_model(cfg, info.device, args.backbone_dtype)
    if model.num_classes != train_set.num_classes:
        raise ConfigError(f"model.decode_head.num_classes={model.num_classes} but data.train has "
                          f"{train_set.num_classes} classes")
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("train set: %d images, %s; %d trainable parameters", len(train_set),
                "frozen ViT" if model.backbone.vit_frozen else "training ViT", n_train)

    optimizer_args = section(cfg, "optimizer", OPTIMIZER_ARGS)
    # fp16 autocast (ToFloat16Hook with a training ViT) needs loss scaling; bf16 and fp32 do not.
    from internvl.train.precision import needs_loss_scaling
    run = Run(args=args, cfg=cfg, info=info, work_dir=work_dir, seed=seed, max_iters=max_iters,
              model_cfg=to_plain(cfg.model), model=model, module=model,
              optimizer=build_optimizer(model, optimizer_args),
              schedule=PolyLR.from_config(section(cfg, "lr_config", LR_ARGS), max_iters),
              scaler=torch.amp.GradScaler(info.device.type, enabled=needs_loss_scaling(model.autocast_dtype)),
              base_lr=optimizer_args["lr"],
              grad_clip=section(cfg, "optimizer_config", OPTIMIZER_CONFIG_ARGS)["grad_clip"],
              ckpt_cfg=section(cfg, "checkpoint_config", CHECKPOINT_ARGS),
              log_interval=section(cfg, "log_config", LOG_ARGS)["interval"], evaluation=evaluation,
              train_set=train_set, workers=workers, val_set=val_set)
    restore(run)
    if info.distributed:
        _wrap_ddp(run)
    sampler = TrainSampler(len(train_set), data["samples_per_gpu"], info.world_size, info.rank, seed,
                           run.start_iter, data["shuffle"])
    run.loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, num_workers=workers,
                                             collate_fn=collate, pin_memory=info.device.type == "cuda",
                                             persistent_workers=workers > 0 and data["persistent_workers"])
    if info.is_main:
        from torch.utils.tensorboard import SummaryWriter
        run.writer = SummaryWriter(str(work_dir / "tensorboard"))
    return run


def _wrap_ddp(run: Run) -> None:
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    model, info = run.model, run.info
    if info.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        run.module = model
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    DDP._set_params_and_buffers_to_ignore_for_model(model, frozen)  # every rank loaded the same backbone
    # Layers after the last out index compute but feed no loss: DDP must not wait for their gradients.
    backbone = run.module.backbone
    unused = not backbone.vit_frozen and max(backbone.out_indices) < len(backbone.vit.encoder.layers)
    run.model = DDP(model, device_ids=[info.device.index] if info.device.type == "cuda" else None,
                    broadcast_buffers=False, find_unused_parameters=unused)


# --------------------------------------------------------------------------- checkpoints
def restore(run: Run) -> None:
    """``--resume-from`` (or the config's ``resume_from``, else the newest ``iter_<n>.pth`` of the work dir unless
    ``--no-auto-resume``): weights, optimizer, loss scaler, iteration and best result; or ``--load-from`` /
    ``load_from``: the weights only."""
    from internvl.errors import CheckpointError
    from internvl.train.checkpoints import latest_checkpoint
    from segmentation.engine import load_weights

    args, cfg = run.args, run.cfg
    resume = args.resume_from or cfg.get("resume_from")
    if not resume and not args.no_auto_resume:
        resume = latest_checkpoint(run.work_dir, "iter_*.pth")
    if resume:
        checkpoint = load_weights(run.module, resume, run.model_cfg)
        if "optimizer" not in checkpoint:
            raise CheckpointError(f"{resume} has no optimizer state: pass it as --load-from to start a new run from it")
        run.optimizer.load_state_dict(checkpoint["optimizer"])
        if run.scaler.is_enabled() and checkpoint.get("amp"):
            run.scaler.load_state_dict(checkpoint["amp"])
        meta = checkpoint.get("meta", {})
        run.start_iter = int(meta["iter"])
        run.best.update({k: meta.get(f"best_{k}") for k in ("mIoU", "iter", "path")})
        logger.info("resumed from %s at iteration %d", resume, run.start_iter)
    elif args.load_from or cfg.get("load_from"):
        load_weights(run.module, args.load_from or cfg.get("load_from"), run.model_cfg)
        logger.info("loaded weights from %s", args.load_from or cfg.get("load_from"))


def checkpoint_state(run: Run, iteration: int) -> dict:
    """What ``iter_<n>.pth`` / ``best_mIoU_iter_<n>.pth`` hold: MMSegmentation's ``meta`` (plus the architecture
    and the best result so far), the trained tensors, and the optimizer (and loss scaler) state."""
    from segmentation.engine import fingerprint

    meta = {"iter": iteration, "epoch": 0, "seed": run.seed, "config": run.cfg.pretty_text,
            "CLASSES": list(run.train_set.classes), "PALETTE": [list(c) for c in run.train_set.palette],
            "model": fingerprint(run.model_cfg), **{f"best_{k}": v for k, v in run.best.items()},
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    saved = {"meta": meta, "state_dict": run.module.trainable_state_dict()}
    if run.ckpt_cfg["save_optimizer"]:
        saved["optimizer"] = run.optimizer.state_dict()
        if run.scaler.is_enabled():
            saved["amp"] = run.scaler.state_dict()
    return saved


def save_iteration(run: Run, done: int) -> None:
    """``iter_<done>.pth`` (the newest ``max_keep_ckpts`` kept), by the main process, the others waiting."""
    from internvl.train.checkpoints import save_checkpoint
    from internvl.train.distributed import average_norm_statistics, barrier

    average_norm_statistics(run.module, run.info)
    if run.info.is_main:
        keep = run.ckpt_cfg["max_keep_ckpts"] if run.ckpt_cfg["max_keep_ckpts"] > 0 else None
        path = save_checkpoint(checkpoint_state(run, done), run.work_dir, f"iter_{done}.pth", keep_last=keep)
        logger.info("saved %s", path)
    barrier()


def keep_best(run: Run, result: dict, done: int) -> bool:
    """With ``evaluation.save_best``: if ``result`` beats the best mIoU so far (strictly: a tie keeps the
    earlier), save it as ``best_mIoU_iter_<done>.pth`` and delete the previous best. True if it did."""
    from internvl.train.checkpoints import save_checkpoint

    best = run.best
    if not run.evaluation["save_best"] or (best["mIoU"] is not None and result["mIoU"] <= best["mIoU"]):
        return False
    previous = best["path"]
    best.update(mIoU=result["mIoU"], iter=done, path=str(run.work_dir / f"best_mIoU_iter_{done}.pth"))
    if run.info.is_main:
        save_checkpoint(checkpoint_state(run, done), run.work_dir, f"best_mIoU_iter_{done}.pth")
        if previous and previous != best["path"] and Path(previous).exists():
            Path(previous).unlink()
        logger.info("best mIoU %.2f at iteration %d: %s", best["mIoU"], done, best["path"])
    return True


# --------------------------------------------------------------------------- the loop
def train_loop(run: Run) -> dict:
    """Iterations ``start_iter .. max_iters``: poly LR, forward / backward (loss scaling for fp16), the log every
    ``log_config.interval``, a checkpoint every ``checkpoint_config.interval`` and an evaluation every
    ``evaluation.interval`` (and both at the end). Returns the last evaluation with the best mIoU and its
    iteration, also written to ``<work_dir>/last_result.json``."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from internvl.train.distributed import average_norm_statistics, barrier
    from segmentation.engine import evaluate

    info, model, module, optimizer = run.info, run.model, run.module, run.optimizer
    max_iters, writer = run.max_iters, run.writer
    result: dict = {}
    model.train()
    batches = iter(run.loader)
    params = [p for p in module.parameters() if p.requires_grad]
    bar = tqdm(total=max_iters, initial=run.start_iter, desc="train", disable=not info.is_main, dynamic_ncols=True)
    sums, count, tick, data_time = {}, 0, time.time(), 0.0
    for iteration in range(run.start_iter, max_iters):
        loaded = time.time()
        batch = next(batches)
        data_time += time.time() - loaded
        lr = run.schedule.apply(optimizer, iteration, run.base_lr)
        # Dropout and drop path draw from a stream fixed by (seed, rank, iteration): a resumed run repeats it.
        torch.manual_seed(int(np.random.SeedSequence([run.seed, info.rank, iteration]).generate_state(1)[0]))
        images = batch["img"].to(info.device, non_blocking=True)
        labels = batch["seg"].to(info.device, non_blocking=True)
        losses = model(images, labels)
        optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(losses["loss"]).backward()
        if run.grad_clip:
            run.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, **run.grad_clip)
        run.scaler.step(optimizer)
        run.scaler.update()
        for key, value in losses.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach())
        count += 1
        done = iteration + 1
        bar.update(1)
        if done % run.log_interval == 0 or done == max_iters:
            means = {k: v / count for k, v in sums.items()}
            elapsed = (time.time() - tick) / count
            eta = datetime.timedelta(seconds=int(elapsed * (max_iters - done)))
            memory = torch.cuda.max_memory_allocated(info.device) // 2**20 if info.device.type == "cuda" else 0
            logger.info("Iter [%d/%d]\tlr: %.3e, eta: %s, time: %.3f, data_time: %.3f, memory: %d, %s", done,
                        max_iters, lr, eta, elapsed, data_time / count, memory,
                        ", ".join(f"{k}: {v:.4f}" for k, v in means.items()))
            bar.set_postfix(loss=f"{means['loss']:.3f}", lr=f"{lr:.2e}")
            if writer is not None:
                for key, value in means.items():
                    writer.add_scalar(f"train/{key}", value, done)
                writer.add_scalar("train/lr", lr, done)
            sums, count, tick, data_time = {}, 0, time.time(), 0.0
        # The evaluation first: the iteration's checkpoint then records the best result including this one, so a
        # run resumed from it goes on comparing against the true best (MMCV saves first, a stale best).
        if run.val_set is not None and (done % run.evaluation["interval"] == 0 or done == max_iters):
            average_norm_statistics(module, info)
            result = evaluate(module, run.val_set, info, run.workers)
            logger.info("Iter(val) [%d]\taAcc: %.2f, mIoU: %.2f, mAcc: %.2f", done, result["aAcc"], result["mIoU"],
                        result["mAcc"])
            if writer is not None:
                for key in ("aAcc", "mIoU", "mAcc"):
                    writer.add_scalar(f"val/{key}", result[key], done)
            keep_best(run, result, done)
            model.train()
            barrier()
        interval = run.ckpt_cfg["interval"]
        if (interval > 0 and done % interval == 0) or done == max_iters:
            save_iteration(run, done)
    bar.close()
    if writer is not None:
        writer.close()
    result.update(iterations=max_iters, best_mIoU=run.best["mIoU"], best_iter=run.best["iter"])
    if info.is_main:
        (run.work_dir / "last_result.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    from internvl.cli import run_main
    raise SystemExit(run_main(main))
