"""Configs: MMSegmentation 0.x's Python files with ``_base_`` inheritance, read by ``mmengine.Config``.

    cfg = load_config("segmentation/configs/intern_vit_6b/linear_probing/"
                      "linear_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.py",
                      cfg_options={"data.samples_per_gpu": 4})

Upstream's files read unchanged (``_base_`` lists, ``_delete_=True``, the ``if deepspeed:`` blocks). Every
key is checked when the file is loaded: an unknown or misspelled key, at any depth, is a ``ConfigError``
naming it (``unknown key model.decode_head.chanels; did you mean 'channels'?``). Keys that only MMCV's
runner read (``log_level``, ``workflow``, ``dist_params``, ...) are accepted and have no effect here;
``custom_hooks`` may name upstream's precision hooks only (``ToBFloat16Hook``: the backbone in bf16 on
GPUs, the default here anyway).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from internvl.errors import ConfigError, MissingFileError

from .ade20k import DATASET_ARGS
from .backbone import UPSTREAM_BACKBONE_ARGS, check_keys
from .heads import HEAD_ARGS, LOSS_ARGS
from .model import MODEL_ARGS, TEST_CFG_ARGS

__all__ = ["load_config", "validate", "TOP_LEVEL", "config_dir"]

# Top-level keys and what reads them. ``None``: accepted for upstream compatibility, no effect here.
TOP_LEVEL = {
    "model": "the segmentor (segmentation.model.build_segmentor)",
    "data": "datasets and loaders",
    "optimizer": "optimizer and layer-wise LR decay (segmentation.optim)",
    "optimizer_config": "gradient clipping (grad_clip=dict(max_norm=...))",
    "lr_config": "poly schedule with linear warmup",
    "runner": "max_iters",
    "checkpoint_config": "checkpoint interval and how many to keep",
    "evaluation": "evaluation interval, metric, save_best",
    "log_config": "logging interval",
    "custom_hooks": "ToBFloat16Hook / ToFloat16Hook: the backbone's dtype on GPUs",
    "seed": "random seed (also --seed)",
    "work_dir": "output folder (also --work-dir)",
    "load_from": "weights to start from (also --load-from)",
    "resume_from": "checkpoint to resume (also --resume-from)",
    "cudnn_benchmark": "torch.backends.cudnn.benchmark",
    "deepspeed": None, "deepspeed_config": None, "log_level": None, "workflow": None, "dist_params": None,
    "gpu_ids": None, "device": None,
    # variables of upstream's files, read through the keys above
    "dataset_type": None, "data_root": None, "img_norm_cfg": None, "crop_size": None, "train_pipeline": None,
    "test_pipeline": None, "pretrained": None, "norm_cfg": None, "checkpoint": None, "backbone_norm_cfg": None,
}
DATA_ARGS = dict(samples_per_gpu=2, workers_per_gpu=2, train=None, val=None, test=None, persistent_workers=True,
                 shuffle=True)
OPTIMIZER_ARGS = dict(type="AdamW", lr=None, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum=0.0,
                      nesterov=False, amsgrad=False, constructor=None, paramwise_cfg=None)
PARAMWISE_ARGS = dict(num_layers=None, layer_decay_rate=1.0)
OPTIMIZER_CONFIG_ARGS = dict(grad_clip=None, type="OptimizerHook")
LR_ARGS = dict(policy="poly", power=1.0, min_lr=0.0, by_epoch=False, warmup=None, warmup_iters=0,
               warmup_ratio=0.1, warmup_by_epoch=False)
RUNNER_ARGS = dict(type="IterBasedRunner", max_iters=None)
CHECKPOINT_ARGS = dict(by_epoch=False, interval=-1, max_keep_ckpts=-1, deepspeed=False, save_optimizer=True,
                       out_dir=None)
EVALUATION_ARGS = dict(interval=1000, metric="mIoU", save_best=None, pre_eval=True, by_epoch=False)
LOG_ARGS = dict(interval=50, hooks=None)
HOOK_TYPES = {"ToBFloat16Hook", "ToFloat16Hook"}


def config_dir() -> Path:
    """The configs shipped with the package (``segmentation/configs``)."""
    return Path(__file__).resolve().parent / "configs"


def load_config(path: str | Path, cfg_options: Optional[dict] = None):
    """Read and validate a config; ``cfg_options`` (``--cfg-options key=value``) are merged first."""
    from mmengine import Config

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"config not found: {path}")
    try:
        cfg = Config.fromfile(str(path))
    except FileNotFoundError as err:
        raise MissingFileError(f"{path}: {err} (a _base_ file is missing)") from None
    except (SyntaxError, NameError, TypeError, KeyError, ValueError) as err:
        raise ConfigError(f"{path}: cannot read the config: {err}") from None
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    validate(cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg), path)
    return cfg


def _check(section: Optional[dict], known: dict, where: str, path: Path) -> dict:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: {where} must be a dict, got {type(section).__name__}")
    try:
        check_keys(section, known, where)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return {**known, **section}


def validate(cfg: dict, path: Path = Path("<config>")) -> None:
    """Every key known (see the module doc); the few required ones present."""
    _check(cfg, TOP_LEVEL, "config", path)
    model = _check(cfg.get("model"), MODEL_ARGS, "model", path)
    if not model:
        raise ConfigError(f"{path}: no model=dict(...)")
    _check(model.get("backbone"), UPSTREAM_BACKBONE_ARGS, "model.backbone", path)
    for head in ("decode_head", "auxiliary_head"):
        args = _check(model.get(head), HEAD_ARGS, f"model.{head}", path)
        if args:
            _check(args.get("loss_decode"), LOSS_ARGS, f"model.{head}.loss_decode", path)
    _check(model.get("test_cfg"), TEST_CFG_ARGS, "model.test_cfg", path)
    data = _check(cfg.get("data"), DATA_ARGS, "data", path)
    for split in ("train", "val", "test"):
        _check(data.get(split), DATASET_ARGS, f"data.{split}", path)
    optimizer = _check(cfg.get("optimizer"), OPTIMIZER_ARGS, "optimizer", path)
    _check(optimizer.get("paramwise_cfg"), PARAMWISE_ARGS, "optimizer.paramwise_cfg", path)
    _check(cfg.get("optimizer_config"), OPTIMIZER_CONFIG_ARGS, "optimizer_config", path)
    _check(cfg.get("lr_config"), LR_ARGS, "lr_config", path)
    _check(cfg.get("runner"), RUNNER_ARGS, "runner", path)
    _check(cfg.get("checkpoint_config"), CHECKPOINT_ARGS, "checkpoint_config", path)
    _check(cfg.get("evaluation"), EVALUATION_ARGS, "evaluation", path)
    _check(cfg.get("log_config"), LOG_ARGS, "log_config", path)
    for i, hook in enumerate(cfg.get("custom_hooks") or []):
        if hook.get("type") not in HOOK_TYPES:
            raise ConfigError(f"{path}: custom_hooks[{i}].type={hook.get('type')!r}: supported hooks are "
                              f"{', '.join(sorted(HOOK_TYPES))}")
        _check(hook, {"type": None, "priority": None}, f"custom_hooks[{i}]", path)


def section(cfg, name: str, known: dict) -> dict:
    """A validated section with its defaults filled in."""
    value = cfg.get(name)
    value = value.to_dict() if hasattr(value, "to_dict") else dict(value or {})
    return {**known, **value}


def to_plain(value):
    """mmengine ConfigDicts / tuples -> plain dicts and lists (for building modules and saving)."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(v) for v in value)
    return value
