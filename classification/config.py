"""yacs configuration of the classification pipeline: the keys of upstream InternVL ``classification/config.py``.

A run is one YAML file (optionally inheriting ``BASE: [other.yaml]``, paths relative to the file)
merged over these defaults, then ``--opts KEY VALUE ...`` and the command-line flags. Every key
must exist here: a misspelt key in a file or in ``--opts`` is an error that names it, instead of a
setting that silently does nothing.

Keys beyond upstream are marked "(not upstream)". Upstream keys for features this implementation
does not have (zip datasets, ZeRO, images held in memory) are accepted at their default value and
rejected otherwise, so an upstream config loads unchanged and nothing is ignored silently.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import yaml
from yacs.config import CfgNode as CN

from internvl.errors import ConfigError, MissingFileError

_C = CN()
_C.BASE = [""]  # base config files, merged first (relative to the file that names them)

# ----------------------------------------------------------------------------- data
_C.DATA = CN()
_C.DATA.BATCH_SIZE = 128  # per process (GPU); the learning rate scales with the total batch
_C.DATA.DATA_PATH = ""
# imagenet | imagenet-real | imagenetv2 | imagenet_a | imagenet_r | imagenet_sketch (classification.dataset.DATASETS)
_C.DATA.DATASET = "imagenet"
_C.DATA.IMG_SIZE = 224
_C.DATA.INTERPOLATION = "bicubic"  # random | bilinear | bicubic (the build_transform train pipeline)
_C.DATA.ZIP_MODE = False  # not supported: must stay False
_C.DATA.CACHE_MODE = "part"  # only meaningful with ZIP_MODE
_C.DATA.PIN_MEMORY = True
_C.DATA.NUM_WORKERS = 8
_C.DATA.IMG_ON_MEMORY = False  # not supported: must stay False
# build_transform (timm RandAugment recipe) | build_transform_for_linear_probe (random resized crop + flip)
# | build_deterministic_transform (not upstream: the eval resize + center crop for training too)
_C.DATA.TRANSFORM = "build_transform"
# (not upstream) unreadable images (missing or not decodable) skipped before the run stops; 0 = stop at the first
_C.DATA.MAX_BAD_IMAGES = 0
# (not upstream) file with one class name per line in label order, for folder layouts (ImageNet-A/R/Sketch,
# ImageFolder). Empty: the ImageNet-1K synsets (n01440764 ...) when MODEL.NUM_CLASSES is 1000.
_C.DATA.CLASS_NAMES = ""

# ----------------------------------------------------------------------------- model
_C.MODEL = CN()
_C.MODEL.TYPE = "intern_vit_6b"
_C.MODEL.NAME = "intern_vit_6b"  # set to the config file name: the run's folder under OUTPUT
_C.MODEL.PRETRAINED = ""  # whole classifier (backbone and/or head) to start from, without optimizer state
_C.MODEL.RESUME = ""  # checkpoint to resume (or, with --eval, to evaluate); a head-only file is fine
_C.MODEL.NUM_CLASSES = 1000
_C.MODEL.DROP_RATE = 0.0
_C.MODEL.DROP_PATH_RATE = 0.1
_C.MODEL.DROP_PATH_TYPE = "linear"  # stochastic depth grows linearly with depth
_C.MODEL.LABEL_SMOOTHING = 0.1

_C.MODEL.INTERN_VIT_6B = CN()
_C.MODEL.INTERN_VIT_6B.PATCH_SIZE = 14
_C.MODEL.INTERN_VIT_6B.PRETRAIN_SIZE = 224
_C.MODEL.INTERN_VIT_6B.QKV_BIAS = False
_C.MODEL.INTERN_VIT_6B.EMBED_DIM = 3200
_C.MODEL.INTERN_VIT_6B.NUM_HEADS = 25
_C.MODEL.INTERN_VIT_6B.MLP_RATIO = 4
_C.MODEL.INTERN_VIT_6B.INIT_VALUES = 0.1
_C.MODEL.INTERN_VIT_6B.QK_NORMALIZATION = True
_C.MODEL.INTERN_VIT_6B.DEPTH = 48
_C.MODEL.INTERN_VIT_6B.USE_FLASH_ATTN = True
_C.MODEL.INTERN_VIT_6B.FREEZE_VIT = True
# backbone weights: a classification .pth (intern_vit_6b_224px.pth) or an HF InternViT directory; None/"": random
_C.MODEL.INTERN_VIT_6B.PRETRAINED = None
# cls_patch_concat | attention_pooling | clip_projector | cls_token (not upstream: the class token alone)
_C.MODEL.INTERN_VIT_6B.CLS_TARGET = "cls_patch_concat"
_C.MODEL.INTERN_VIT_6B.NORM_TYPE = "rms"  # backbone norm: rms (InternViT-6B) | ln
_C.MODEL.INTERN_VIT_6B.HEAD_NORM_TYPE = "bn"  # head norm: bn (SyncBatchNorm on GPUs) | ln
_C.MODEL.INTERN_VIT_6B.ATTN_POOL_NUM_HEADS = 16  # (not upstream: a constructor argument there) clip_projector heads
_C.MODEL.INTERN_VIT_6B.CLIP_EMBED_DIM = 768  # (not upstream: a constructor argument there) clip_projector width
# (not upstream) how the frozen backbone runs in training: inference_mode | no_grad (see benchmarks/classification.py)
_C.MODEL.INTERN_VIT_6B.FROZEN_FORWARD = "inference_mode"

# ----------------------------------------------------------------------------- training
_C.TRAIN = CN()
_C.TRAIN.START_EPOCH = 0
_C.TRAIN.EPOCHS = 300
_C.TRAIN.WARMUP_EPOCHS = 20
_C.TRAIN.WEIGHT_DECAY = 0.05
_C.TRAIN.BASE_LR = 5e-4  # for a total batch of 512: scaled by BATCH_SIZE x processes x ACCUMULATION_STEPS / 512
_C.TRAIN.WARMUP_LR = 5e-7
_C.TRAIN.MIN_LR = 5e-6
_C.TRAIN.CLIP_GRAD = 5.0  # max gradient norm; 0 or None: no clipping
_C.TRAIN.AUTO_RESUME = True  # resume from the latest checkpoint in the run folder
_C.TRAIN.ACCUMULATION_STEPS = 0  # gradient accumulation (0 and 1: none)
_C.TRAIN.USE_CHECKPOINT = False  # gradient checkpointing of the backbone (only when it is trained)
# (not upstream) also checkpoint every N optimizer steps inside an epoch (0: at epoch ends only)
_C.TRAIN.SAVE_STEPS = 0
# (not upstream) compute the frozen backbone's features once and train the head on them; needs a
# deterministic train transform (DATA.TRANSFORM build_deterministic_transform) and no mixup/cutmix
_C.TRAIN.FEATURE_CACHE = False

_C.TRAIN.LR_SCHEDULER = CN()
_C.TRAIN.LR_SCHEDULER.NAME = "cosine"  # cosine | step | linear
_C.TRAIN.LR_SCHEDULER.DECAY_EPOCHS = 30  # step
_C.TRAIN.LR_SCHEDULER.DECAY_RATE = 0.1  # step

_C.TRAIN.OPTIMIZER = CN()
_C.TRAIN.OPTIMIZER.NAME = "adamw"  # adamw | sgd (nesterov) | sgd_linear_probing (plain momentum, no decay)
_C.TRAIN.OPTIMIZER.EPS = 1e-8
_C.TRAIN.OPTIMIZER.BETAS = (0.9, 0.999)
_C.TRAIN.OPTIMIZER.MOMENTUM = 0.9
_C.TRAIN.OPTIMIZER.USE_ZERO = False  # not supported: must stay False
_C.TRAIN.OPTIMIZER.FREEZE_BACKBONE = None  # InternImage levels: not applicable, must stay None
_C.TRAIN.OPTIMIZER.DCN_LR_MUL = None  # InternImage DCN: not applicable, must stay None

_C.TRAIN.EMA = CN()
_C.TRAIN.EMA.ENABLE = False
_C.TRAIN.EMA.DECAY = 0.9998

_C.TRAIN.LR_LAYER_DECAY = False  # layer-wise LR decay of the backbone (only when it is trained)
_C.TRAIN.LR_LAYER_DECAY_RATIO = 0.875
_C.TRAIN.RAND_INIT_FT_HEAD = False  # MODEL.PRETRAINED with another class count: start the head near zero

# ----------------------------------------------------------------------------- augmentation
_C.AUG = CN()
_C.AUG.COLOR_JITTER = 0.4
_C.AUG.AUTO_AUGMENT = "rand-m9-mstd0.5-inc1"
_C.AUG.REPROB = 0.25
_C.AUG.REMODE = "pixel"
_C.AUG.RECOUNT = 1
_C.AUG.MIXUP = 0.8  # mixup alpha; mixup is on if > 0
_C.AUG.CUTMIX = 1.0  # cutmix alpha; cutmix is on if > 0
_C.AUG.CUTMIX_MINMAX = None
_C.AUG.MIXUP_PROB = 1.0
_C.AUG.MIXUP_SWITCH_PROB = 0.5
_C.AUG.MIXUP_MODE = "batch"
_C.AUG.RANDOM_RESIZED_CROP = False  # build_transform eval with TEST.CROP False: random resized crop
_C.AUG.MEAN = (0.485, 0.456, 0.406)
_C.AUG.STD = (0.229, 0.224, 0.225)

# ----------------------------------------------------------------------------- testing
_C.TEST = CN()
_C.TEST.CROP = True  # build_transform eval: resize the short side and center crop (else resize to a square)
_C.TEST.SEQUENTIAL = False  # every process evaluates the whole set (results are the same either way)

# ----------------------------------------------------------------------------- misc
_C.AMP_OPT_LEVEL = ""  # "O0": no mixed precision; anything else: autocast to AMP_TYPE on GPUs (CPUs run fp32)
_C.OUTPUT = ""  # runs go to OUTPUT/<config file name>/
_C.TAG = "default"
_C.SAVE_FREQ = 1  # save every N epochs (and the last)
_C.SAVE_CKPT_NUM = 1  # epoch checkpoints kept
_C.PRINT_FREQ = 10
_C.EVAL_FREQ = 1
_C.SEED = 0
_C.EVAL_MODE = False
_C.THROUGHPUT_MODE = False
_C.LOCAL_RANK = 0
_C.EVAL_22K_TO_1K = False  # not supported: must stay False
_C.AMP_TYPE = "float16"  # float16 | bfloat16

TRANSFORMS = ("build_transform", "build_transform_for_linear_probe", "build_deterministic_transform")
CLS_TARGETS = ("cls_patch_concat", "attention_pooling", "clip_projector", "cls_token")


def defaults() -> CN:
    """A mutable copy of the defaults."""
    return _C.clone()


def _merge_file(config: CN, cfg_file: Path, seen: tuple = ()) -> None:
    cfg_file = Path(cfg_file)
    if not cfg_file.is_file():
        raise ConfigError(f"config file not found: {cfg_file}")
    if cfg_file.resolve() in seen:
        raise ConfigError(f"{cfg_file}: BASE files include each other ({' -> '.join(map(str, seen))})")
    with open(cfg_file, encoding="utf-8") as f:
        try:
            loaded = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{cfg_file}: not valid YAML: {e}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{cfg_file}: expected a mapping of config keys, got {type(loaded).__name__}")
    for base in loaded.pop("BASE", None) or []:
        if base:
            _merge_file(config, cfg_file.parent / base, seen + (cfg_file.resolve(),))
    try:
        config.merge_from_other_cfg(CN(_floats_where_floats(loaded, _C)))
    except KeyError as e:  # yacs: "Non-existent config key: MODEL.FOO"
        key = str(e.args[0]).rsplit(": ", 1)[-1]
        raise ConfigError(f"{cfg_file}: unknown config key {key}{_suggest(key)}") from None
    except ValueError as e:  # yacs: type mismatch, naming the key
        raise ConfigError(f"{cfg_file}: {e}") from None


def _merge_opts(config: CN, opts: Sequence[str]) -> None:
    if len(opts) % 2:
        raise ConfigError(f"--opts takes KEY VALUE pairs; got an odd number of items: {list(opts)}")
    for key, value in zip(opts[0::2], opts[1::2]):
        default = _default(key)
        if isinstance(default, float) and isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            value = str(float(value))  # "--opts AUG.MIXUP 0" means 0.0
        try:
            config.merge_from_list([key, value])
        except AssertionError:  # yacs: "Non-existent key: X"
            raise ConfigError(f"--opts: unknown config key {key}{_suggest(key)}") from None
        except ValueError as e:
            raise ConfigError(f"--opts: {e}") from None


def _default(key: str):
    node = _C
    for part in key.split("."):
        if not isinstance(node, CN) or part not in node:
            return None
        node = node[part]
    return node


def _floats_where_floats(loaded: dict, defaults: CN) -> dict:
    """YAML ``MIXUP: 0`` for a float key means 0.0 (yacs would reject the int); other types stay as written."""
    out = {}
    for key, value in loaded.items():
        default = defaults.get(key) if isinstance(defaults, CN) else None
        if isinstance(value, dict):
            value = _floats_where_floats(value, default)
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        out[key] = value
    return out


def _suggest(key: str) -> str:
    """Point at the valid keys of the nearest existing section."""
    node, parts = _C, key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), CN):
            break
        node = node[part]
    section = ".".join(parts[:-1]) if node is not _C else "the top level"
    return f" (valid keys in {section}: {', '.join(sorted(node))})"


def check_config(config: CN) -> None:
    """Reject values this implementation cannot honour, naming the key."""
    from .dataset import DATASETS

    def fail(key, message):
        raise ConfigError(f"{key}: {message}")

    for key, value in (("DATA.ZIP_MODE", config.DATA.ZIP_MODE), ("DATA.IMG_ON_MEMORY", config.DATA.IMG_ON_MEMORY),
                       ("TRAIN.OPTIMIZER.USE_ZERO", config.TRAIN.OPTIMIZER.USE_ZERO),
                       ("EVAL_22K_TO_1K", config.EVAL_22K_TO_1K)):
        if value:
            fail(key, "is not supported by this implementation; set it to False")
    for key, value in (("TRAIN.OPTIMIZER.FREEZE_BACKBONE", config.TRAIN.OPTIMIZER.FREEZE_BACKBONE),
                       ("TRAIN.OPTIMIZER.DCN_LR_MUL", config.TRAIN.OPTIMIZER.DCN_LR_MUL)):
        if value is not None:
            fail(key, "applies to InternImage, not InternViT; leave it unset (None)")
    if config.MODEL.TYPE != "intern_vit_6b":
        fail("MODEL.TYPE", f"{config.MODEL.TYPE!r} is not supported; use intern_vit_6b")
    if config.MODEL.DROP_PATH_TYPE != "linear":
        fail("MODEL.DROP_PATH_TYPE", f"{config.MODEL.DROP_PATH_TYPE!r}: only 'linear' is supported")
    choices = (("DATA.DATASET", config.DATA.DATASET, tuple(DATASETS)), ("DATA.TRANSFORM", config.DATA.TRANSFORM, TRANSFORMS),
               ("MODEL.INTERN_VIT_6B.CLS_TARGET", config.MODEL.INTERN_VIT_6B.CLS_TARGET, CLS_TARGETS),
               ("MODEL.INTERN_VIT_6B.NORM_TYPE", config.MODEL.INTERN_VIT_6B.NORM_TYPE, ("rms", "ln")),
               ("MODEL.INTERN_VIT_6B.HEAD_NORM_TYPE", config.MODEL.INTERN_VIT_6B.HEAD_NORM_TYPE, ("bn", "ln")),
               ("MODEL.INTERN_VIT_6B.FROZEN_FORWARD", config.MODEL.INTERN_VIT_6B.FROZEN_FORWARD,
                ("inference_mode", "no_grad")),
               ("TRAIN.LR_SCHEDULER.NAME", config.TRAIN.LR_SCHEDULER.NAME, ("cosine", "step", "linear")),
               ("TRAIN.OPTIMIZER.NAME", config.TRAIN.OPTIMIZER.NAME.lower(), ("adamw", "sgd", "sgd_linear_probing")),
               ("AMP_TYPE", config.AMP_TYPE, ("float16", "bfloat16")))
    for key, value, allowed in choices:
        if value not in allowed:
            fail(key, f"{value!r} is not one of {', '.join(allowed)}")
    for key, value in (("DATA.BATCH_SIZE", config.DATA.BATCH_SIZE), ("DATA.IMG_SIZE", config.DATA.IMG_SIZE),
                       ("MODEL.NUM_CLASSES", config.MODEL.NUM_CLASSES), ("TRAIN.EPOCHS", config.TRAIN.EPOCHS),
                       ("PRINT_FREQ", config.PRINT_FREQ), ("SAVE_FREQ", config.SAVE_FREQ),
                       ("EVAL_FREQ", config.EVAL_FREQ), ("SAVE_CKPT_NUM", config.SAVE_CKPT_NUM)):
        if value < 1:
            fail(key, f"must be at least 1, got {value}")
    for key, value in (("DATA.NUM_WORKERS", config.DATA.NUM_WORKERS),
                       ("DATA.MAX_BAD_IMAGES", config.DATA.MAX_BAD_IMAGES),
                       ("TRAIN.ACCUMULATION_STEPS", config.TRAIN.ACCUMULATION_STEPS),
                       ("TRAIN.SAVE_STEPS", config.TRAIN.SAVE_STEPS),
                       ("TRAIN.WARMUP_EPOCHS", config.TRAIN.WARMUP_EPOCHS)):
        if value < 0:
            fail(key, f"must not be negative, got {value}")
    patch = config.MODEL.INTERN_VIT_6B.PATCH_SIZE
    if config.DATA.IMG_SIZE % patch:
        fail("DATA.IMG_SIZE", f"{config.DATA.IMG_SIZE} is not a multiple of MODEL.INTERN_VIT_6B.PATCH_SIZE={patch}")
    if config.TRAIN.FEATURE_CACHE and not config.EVAL_MODE:
        if not config.MODEL.INTERN_VIT_6B.FREEZE_VIT:
            fail("TRAIN.FEATURE_CACHE", "needs a frozen backbone (MODEL.INTERN_VIT_6B.FREEZE_VIT True)")
        if config.DATA.TRANSFORM != "build_deterministic_transform":
            fail("TRAIN.FEATURE_CACHE", f"needs a deterministic train transform: features computed once are only "
                 f"valid if every epoch sees the same pixels; DATA.TRANSFORM is {config.DATA.TRANSFORM!r}, "
                 "set it to build_deterministic_transform")
        if mixup_active(config):
            fail("TRAIN.FEATURE_CACHE", "mixup/cutmix mix pixels, which cached features cannot do; set AUG.MIXUP 0 "
                 "and AUG.CUTMIX 0 (and AUG.CUTMIX_MINMAX None)")
        if config.MODEL.INTERN_VIT_6B.CLS_TARGET == "attention_pooling":
            fail("TRAIN.FEATURE_CACHE", "the attention_pooling head trains on every token of the backbone; caching "
                 "all tokens would not fit: use cls_patch_concat, cls_token or clip_projector")
    if DATASETS[config.DATA.DATASET].test_only and not config.EVAL_MODE:
        fail("DATA.DATASET", f"{config.DATA.DATASET} has only a test split: evaluate with --eval (and --resume)")


def check_inputs(config: CN) -> None:
    """Every file and folder the config names exists, checked before a model is built: loading a 6B backbone
    takes minutes, which a mistyped data path should not cost. A missing one is an error naming its key."""
    if not config.DATA.DATA_PATH:
        raise ConfigError("DATA.DATA_PATH is not set: give the dataset folder (--data-path or --opts DATA.DATA_PATH)")
    weights = "see pretrained/README.md for"
    for key, path, hint in (
            ("MODEL.INTERN_VIT_6B.PRETRAINED", config.MODEL.INTERN_VIT_6B.PRETRAINED,
             f"{weights} intern_vit_6b_224px.pth (or give an InternViT HF directory)"),
            ("MODEL.PRETRAINED", config.MODEL.PRETRAINED, f"{weights} the published heads"),
            ("MODEL.RESUME", config.MODEL.RESUME, "--resume takes a checkpoint file"),
            ("DATA.DATA_PATH", config.DATA.DATA_PATH, "see data/README.md (Image classification) for the layouts"),
            ("DATA.CLASS_NAMES", config.DATA.CLASS_NAMES, "a file with one class name per line, in label order")):
        if path and not os.path.exists(path):
            raise MissingFileError(f"{key}: {path} not found; {hint}")


def mixup_active(config: CN) -> bool:
    return config.AUG.MIXUP > 0 or config.AUG.CUTMIX > 0 or config.AUG.CUTMIX_MINMAX is not None


def get_config(args) -> CN:
    """The run's config from parsed arguments (``cfg``, ``opts`` and the optional flags of ``main.py``)."""
    config = defaults()
    _merge_file(config, Path(args.cfg))
    if getattr(args, "opts", None):
        _merge_opts(config, args.opts)
    flags = {  # command-line flag -> config key, as upstream
        "batch_size": "DATA.BATCH_SIZE", "dataset": "DATA.DATASET", "data_path": "DATA.DATA_PATH",
        "pretrained": "MODEL.PRETRAINED", "resume": "MODEL.RESUME",
        "accumulation_steps": "TRAIN.ACCUMULATION_STEPS", "amp_opt_level": "AMP_OPT_LEVEL",
        "output": "OUTPUT", "tag": "TAG", "save_ckpt_num": "SAVE_CKPT_NUM",
    }
    for flag, key in flags.items():
        value = getattr(args, flag, None)
        if value is not None and value != "":
            _set(config, key, value)
    if getattr(args, "use_checkpoint", False):
        config.TRAIN.USE_CHECKPOINT = True
    if getattr(args, "eval", False):
        config.EVAL_MODE = True
    if getattr(args, "throughput", False):
        config.THROUGHPUT_MODE = True
    if getattr(args, "local_rank", None):
        config.LOCAL_RANK = args.local_rank
    config.MODEL.NAME = run_name(args.cfg)
    config.OUTPUT = os.path.join(config.OUTPUT, config.MODEL.NAME)
    check_config(config)
    config.freeze()
    return config


def run_name(cfg: str | os.PathLike) -> str:
    """A run's name, its folder under ``OUTPUT`` and ``MODEL.NAME``: the config file's name without extension."""
    return Path(cfg).name.rsplit(".", 1)[0]


def load_config(cfg: str | os.PathLike, opts: Optional[Sequence[str]] = None, **flags) -> CN:
    """``get_config`` without argparse: ``load_config("configs/x.yaml", ["TRAIN.EPOCHS", "1"], eval=True)``."""
    from types import SimpleNamespace
    return get_config(SimpleNamespace(cfg=str(cfg), opts=list(opts or []), **flags))


def _set(config: CN, key: str, value) -> None:
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
