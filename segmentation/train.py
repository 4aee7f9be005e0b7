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
from pathlib import Path

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


def average_norm_statistics(model, info) -> None:
    """Processes without SyncBatchNorm (CPU, gloo) average their BatchNorm statistics before a save or an
    evaluation, so every process holds what the checkpoint holds."""
    import torch

    from internvl.train.distributed import all_reduce_sum
    if not info.distributed or info.device.type == "cuda":
        return
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            for buffer in (module.running_mean, module.running_var):
                all_reduce_sum(buffer).div_(info.world_size)


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


def train(args, cfg, info, work_dir: Path) -> dict:
    import numpy as np
    import torch
    from tqdm import tqdm

    from internvl.errors import CheckpointError, ConfigError
    from internvl.train.distributed import barrier, seed_everything
    from internvl.train.checkpoints import latest_checkpoint, save_checkpoint
    from segmentation.ade20k import build_dataset
    from segmentation.config import (CHECKPOINT_ARGS, DATA_ARGS, EVALUATION_ARGS, LOG_ARGS, LR_ARGS,
                                     OPTIMIZER_ARGS, OPTIMIZER_CONFIG_ARGS, RUNNER_ARGS, section, to_plain)
    from segmentation.engine import build_model, evaluate, fingerprint, load_weights
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

    # The data first: a wrong path fails in a second, not after loading a 6B backbone.
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
    model_cfg = to_plain(cfg.model)
    model = build_model(cfg, info.device, args.backbone_dtype)
    if model.num_classes != train_set.num_classes:
        raise ConfigError(f"model.decode_head.num_classes={model.num_classes} but data.train has "
                          f"{train_set.num_classes} classes")
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("train set: %d images, %s; %d trainable parameters", len(train_set),
                "frozen ViT" if model.backbone.vit_frozen else "training ViT", n_train)

    optimizer_args = section(cfg, "optimizer", OPTIMIZER_ARGS)
    optimizer = build_optimizer(model, optimizer_args)
    schedule = PolyLR.from_config(section(cfg, "lr_config", LR_ARGS), max_iters)
    grad_clip = section(cfg, "optimizer_config", OPTIMIZER_CONFIG_ARGS)["grad_clip"]
    ckpt_cfg = section(cfg, "checkpoint_config", CHECKPOINT_ARGS)
    log_interval = section(cfg, "log_config", LOG_ARGS)["interval"]

    # fp16 autocast (ToFloat16Hook with a training ViT) needs loss scaling; bf16 and fp32 do not.
    scaler = torch.amp.GradScaler(info.device.type, enabled=model.autocast_dtype == torch.float16)
    start_iter, best = 0, {"mIoU": None, "iter": None, "path": None}
    resume = args.resume_from or cfg.get("resume_from")
    if not resume and not args.no_auto_resume:
        resume = latest_checkpoint(work_dir, "iter_*.pth")
    if resume:
        checkpoint = load_weights(model, resume, model_cfg)
        if "optimizer" not in checkpoint:
            raise CheckpointError(f"{resume} has no optimizer state: pass it as --load-from to start a new run from it")
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scaler.is_enabled() and checkpoint.get("amp"):
            scaler.load_state_dict(checkpoint["amp"])
        meta = checkpoint.get("meta", {})
        start_iter = int(meta["iter"])
        best.update({k: meta.get(f"best_{k}") for k in ("mIoU", "iter", "path")})
        logger.info("resumed from %s at iteration %d", resume, start_iter)
    elif args.load_from or cfg.get("load_from"):
        load_weights(model, args.load_from or cfg.get("load_from"), model_cfg)
        logger.info("loaded weights from %s", args.load_from or cfg.get("load_from"))

    module = model
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP
        if info.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            module = model
        frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
        DDP._set_params_and_buffers_to_ignore_for_model(model, frozen)  # every rank loaded the same backbone
        # Layers after the last out index compute but feed no loss: DDP must not wait for their gradients.
        unused = not module.backbone.vit_frozen and max(module.backbone.out_indices) < len(
            module.backbone.vit.encoder.layers)
        model = DDP(model, device_ids=[info.device.index] if info.device.type == "cuda" else None,
                    broadcast_buffers=False, find_unused_parameters=unused)

    sampler = TrainSampler(len(train_set), data["samples_per_gpu"], info.world_size, info.rank, seed, start_iter,
                           data["shuffle"])
    loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                                         pin_memory=info.device.type == "cuda",
                                         persistent_workers=workers > 0 and data["persistent_workers"])
    writer = None
    if info.is_main:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(work_dir / "tensorboard"))

    def state(iteration: int) -> dict:
        meta = {"iter": iteration, "epoch": 0, "seed": seed, "config": cfg.pretty_text,
                "CLASSES": list(train_set.classes), "PALETTE": [list(c) for c in train_set.palette],
                "model": fingerprint(model_cfg), **{f"best_{k}": v for k, v in best.items()},
                "time": time.strftime("%Y-%m-%d %H:%M:%S")}
        saved = {"meta": meta, "state_dict": module.trainable_state_dict()}
        if ckpt_cfg["save_optimizer"]:
            saved["optimizer"] = optimizer.state_dict()
            if scaler.is_enabled():
                saved["amp"] = scaler.state_dict()
        return saved

    result: dict = {}
    model.train()
    base_lr = optimizer_args["lr"]
    batches = iter(loader)
    params = [p for p in module.parameters() if p.requires_grad]
    bar = tqdm(total=max_iters, initial=start_iter, desc="train", disable=not info.is_main, dynamic_ncols=True)
    sums, count, tick, data_time = {}, 0, time.time(), 0.0
    for iteration in range(start_iter, max_iters):
        loaded = time.time()
        batch = next(batches)
        data_time += time.time() - loaded
        lr = schedule.apply(optimizer, iteration, base_lr)
        # Dropout and drop path draw from a stream fixed by (seed, rank, iteration): a resumed run repeats it.
        torch.manual_seed(int(np.random.SeedSequence([seed, info.rank, iteration]).generate_state(1)[0]))
        images = batch["img"].to(info.device, non_blocking=True)
        labels = batch["seg"].to(info.device, non_blocking=True)
        losses = model(images, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"]).backward()
        if grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, **grad_clip)
        scaler.step(optimizer)
        scaler.update()
        for key, value in losses.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach())
        count += 1
        done = iteration + 1
        bar.update(1)
        if done % log_interval == 0 or done == max_iters:
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
        interval = ckpt_cfg["interval"]
        if (interval > 0 and done % interval == 0) or done == max_iters:
            average_norm_statistics(module, info)
            if info.is_main:
                keep = ckpt_cfg["max_keep_ckpts"] if ckpt_cfg["max_keep_ckpts"] > 0 else None
                path = save_checkpoint(state(done), work_dir, f"iter_{done}.pth", keep_last=keep)
                logger.info("saved %s", path)
            barrier()
        if val_set is not None and (done % evaluation["interval"] == 0 or done == max_iters):
            average_norm_statistics(module, info)
            result = evaluate(module, val_set, info, workers)
            logger.info("Iter(val) [%d]\taAcc: %.2f, mIoU: %.2f, mAcc: %.2f", done, result["aAcc"], result["mIoU"],
                        result["mAcc"])
            if writer is not None:
                for key in ("aAcc", "mIoU", "mAcc"):
                    writer.add_scalar(f"val/{key}", result[key], done)
            if evaluation["save_best"] and (best["mIoU"] is None or result["mIoU"] > best["mIoU"]):
                previous = best["path"]
                best.update(mIoU=result["mIoU"], iter=done, path=str(work_dir / f"best_mIoU_iter_{done}.pth"))
                if info.is_main:
                    save_checkpoint(state(done), work_dir, f"best_mIoU_iter_{done}.pth")
                    if previous and previous != best["path"] and Path(previous).exists():
                        Path(previous).unlink()
                    logger.info("best mIoU %.2f at iteration %d: %s", best["mIoU"], done, best["path"])
            model.train()
            barrier()
    bar.close()
    if writer is not None:
        writer.close()
    result.update(iterations=max_iters, best_mIoU=best["mIoU"], best_iter=best["iter"])
    if info.is_main:
        (work_dir / "last_result.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    from internvl.cli import run_main
    raise SystemExit(run_main(main))
