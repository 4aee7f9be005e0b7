"""What every InternVL model class shares on top of ``transformers.PreTrainedModel``."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from ..compat import add_legacy_rope_keys, config_kwargs, dtype_kwargs, is_shape_mismatch_error, pop_dtype_kwarg
from ..errors import CheckpointError, ConfigError, MissingFileError

WEIGHTS_HELP = "see pretrained/README.md for the published checkpoints and where to put them"


def _looks_local(path: str) -> bool:
    """A hub id is ``org/name``; a path that is not that, or whose first folder exists here
    (``pretrained/InternViT-6B-224px``), is meant to be on disk."""
    return (os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") != 1
            or os.path.isdir(path.split("/")[0]))


def check_checkpoint_dir(path: str | os.PathLike, flag: Optional[str] = None) -> Path:
    """Fail early, naming the path (and the command-line ``flag`` that gave it), when a local checkpoint directory
    is missing or incomplete."""
    path = Path(path).expanduser()
    named = f"{flag} {path}" if flag else str(path)
    if not path.exists():
        raise MissingFileError(f"{named}: does not exist; {WEIGHTS_HELP}" if flag else
                               f"checkpoint not found: {path} does not exist; {WEIGHTS_HELP}")
    if path.is_dir() and not (path / "config.json").is_file():
        raise MissingFileError(f"{named} is not a Hugging Face checkpoint directory: it has no config.json; "
                               f"{WEIGHTS_HELP}")
    return path


class InternVLConfigBase(PretrainedConfig):
    """Base class of the suite's configs: ``config.json`` keeps the published key names, whichever
    transformers writes it (see :mod:`internvl.compat`)."""

    def __init__(self, **kwargs):
        super().__init__(**config_kwargs(kwargs))  # the published "torch_dtype" read without a warning

    def to_json_string(self, use_diff: bool = True) -> str:
        """What ``config.json`` holds, in the published spelling (:func:`published_config_dict`)."""
        config_dict = published_config_dict(self.to_diff_dict() if use_diff else self.to_dict())
        encode = getattr(self, "_encode_special_floats", None)  # transformers 5: +/-inf and NaN as strings
        return json.dumps(encode(config_dict) if encode else config_dict, indent=2, sort_keys=True) + "\n"


def published_config_dict(out: dict) -> dict:
    """A config dict with the keys the published files (and transformers 4.x) read: ``torch_dtype`` beside
    the newer ``dtype``, and top-level ``rope_theta`` / ``rope_scaling`` beside 5.x's ``rope_parameters``;
    the same for the nested configs (``vision_config``, ``llm_config``, ``qllama_config``)."""
    if out.get("dtype") is not None:
        out["torch_dtype"] = out["dtype"]
    for nested in ("vision_config", "llm_config", "qllama_config"):
        if isinstance(out.get(nested), dict):
            published_config_dict(out[nested])
    return add_legacy_rope_keys(out)


# Files a saved model carries beside its weights and config.json, by the kind of model (one list each).
TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
                   "tokenizer.json", "vocab.json", "merges.txt")
PREPROCESSOR_FILES = ("preprocessor_config.json",)
GENERATION_FILES = ("generation_config.json",)
COMPANION_FILES = TOKENIZER_FILES + PREPROCESSOR_FILES + GENERATION_FILES

# The class names a published ``auto_map`` names (``"modeling_internvl_chat.InternVLChatModel"``) -> the module of
# the suite that defines them: what the suite's own code files (:func:`write_code_files`) import.
SUITE_CLASSES = {
    "InternVLChatConfig": "internvl.models.chat_model", "InternVLChatModel": "internvl.models.chat_model",
    "InternVisionConfig": "internvl.models.intern_vit", "InternVisionModel": "internvl.models.intern_vit",
    "InternVLConfig": "internvl.models.internvl_cg", "InternVLModel": "internvl.models.internvl_cg",
    "InternLM2Config": "internvl.models.internlm2", "InternLM2ForCausalLM": "internvl.models.internlm2",
}
CODE_FILE_MARK = "Written by the InternVL suite"


def _auto_map_modules(auto_map: dict) -> dict[str, set]:
    """``{module file stem: {class names}}`` of the entries of an ``auto_map`` that name a file of the directory
    itself (not ``other/repo--module.Class``)."""
    modules: dict[str, set] = {}
    for value in (auto_map or {}).values():
        for ref in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(ref, str) and "--" not in ref and "." in ref:
                module, name = ref.rsplit(".", 1)
                modules.setdefault(module, set()).add(name)
    return modules


def code_files(auto_map: dict) -> list[str]:
    """The remote-code files (``configuration_internvl_chat.py``, ...) a directory with ``auto_map`` must carry for
    ``AutoModel.from_pretrained(dir, trust_remote_code=True)``."""
    return sorted(f"{module}.py" for module in _auto_map_modules(auto_map))


def _code_file_text(module: str, names: Sequence[str]) -> str:
    lines = [f'"""{CODE_FILE_MARK}: the code of this checkpoint is the installed ``internvl`` package.',
             "",
             "``AutoModel.from_pretrained(<this directory>, trust_remote_code=True)`` loads the suite's classes through",
             "this file; after ``import internvl`` the suite's registered classes load it without ``trust_remote_code``.",
             "The published checkpoints carry upstream's code files under this name instead; copy them here to load",
             'the directory without the suite."""',
             "try:"]
    for name in names:
        lines.append(f"    from {SUITE_CLASSES[name]} import {name} as _{name}")
    lines += ["except ImportError as err:",
              "    raise ImportError(f\"{__file__}: this checkpoint's code is the InternVL suite's `internvl` package, \"",
              "                      f\"which cannot be imported here ({err}); install the suite (pip install -e <its \"",
              "                      \"checkout>), or copy upstream's code files of the published model into this \"",
              "                      \"directory\") from err"]
    for name in names:
        lines += ["", "", f"class {name}(_{name}):",
                  '    """The suite\'s class (a subclass: transformers\' remote-code bookkeeping stays on this one)."""']
        if name.endswith("Config"):  # transformers 5 gives a config subclass without an __init__ a dataclass one
            lines += ["", "    def __init__(self, *args, **kwargs):", "        super().__init__(*args, **kwargs)"]
    return "\n".join(lines) + "\n"


def write_code_files(directory: str | os.PathLike, auto_map: dict) -> list[Path]:
    """Write the suite's own code file for each module of ``auto_map`` that ``directory`` lacks and whose classes
    the suite defines (files already there, such as upstream's copied from a published base, are kept); returns
    the files written."""
    written = []
    for module, names in sorted(_auto_map_modules(auto_map).items()):
        path = Path(directory) / f"{module}.py"
        if path.exists() or not all(name in SUITE_CLASSES for name in names):
            continue
        path.write_text(_code_file_text(module, sorted(names)), encoding="utf-8")
        written.append(path)
    return written


def is_suite_code_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is one of the code files :func:`write_code_files` writes (not upstream's)."""
    try:
        return CODE_FILE_MARK in Path(path).read_text(encoding="utf-8")[:200]
    except (OSError, UnicodeDecodeError):
        return False


def published_code_files(*directories) -> list[Path]:
    """The remote-code ``*.py`` files of the first of ``directories`` that has any besides the suite's own
    (:func:`is_suite_code_file`): upstream's code of a published checkpoint, to copy next to the weights of a
    model derived from it. ``None`` entries and missing directories are skipped."""
    for directory in directories:
        if directory is not None and Path(directory).is_dir():
            files = [p for p in sorted(Path(directory).glob("*.py")) if not is_suite_code_file(p)]
            if files:
                return files
    return []


def respect_umask(paths: Iterable[str | os.PathLike]) -> None:
    """Give files the permissions of any new file (0666 less the process umask): safetensors creates its files
    0600, so colleagues sharing a run folder could not read the weights (the ``.pth`` path,
    :func:`internvl.fileio.atomic_save`, creates them so)."""
    mask = os.umask(0)
    os.umask(mask)
    for path in paths:
        os.chmod(path, 0o666 & ~mask)


class InternVLPreTrainedBase(PreTrainedModel):
    """Base class of the suite's models: HF loading with errors a user can act on; ``save_pretrained`` writes
    weight files with the umask's permissions and the code files its ``config.json``'s ``auto_map`` names."""

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' ``save_pretrained``, then (main process) the weight files' permissions from the umask
        (:func:`respect_umask`) and the suite's code files the directory lacks (:func:`write_code_files`), so
        ``AutoModel.from_pretrained(save_directory)`` works with and without ``trust_remote_code``."""
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            directory = Path(save_directory)
            respect_umask(p for p in directory.glob("*.safetensors") if p.is_file())
            write_code_files(directory, getattr(self.config, "auto_map", None) or {})
        return result

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        name = os.fspath(pretrained_model_name_or_path)
        if os.path.exists(name) or _looks_local(name):
            check_checkpoint_dir(name)
        # dtype= or torch_dtype=, whichever this transformers wants (no deprecation warning either way)
        kwargs.update(dtype_kwargs(pop_dtype_kwarg(kwargs)))
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except Exception as err:  # noqa: BLE001 - translated into what the user can act on, or re-raised
            if not os.path.isdir(name):
                if isinstance(err, OSError):
                    raise CheckpointError(f"could not load {name!r}: not a local directory, and fetching it from the "
                                          f"Hugging Face hub failed ({err.__class__.__name__}); {WEIGHTS_HELP}") from err
                raise
            damaged = damaged_weight_files(name)
            if damaged:  # a truncated download, say: name the file rather than the reader's complaint
                raise CheckpointError(f"{name} has damaged weight files: {'; '.join(damaged)}; download or copy them "
                                      f"again ({WEIGHTS_HELP})") from err
            if isinstance(err, RuntimeError) and is_shape_mismatch_error(err):
                raise ConfigError(_explain_shape_mismatch(cls, name, kwargs.get("config"))) from err
            if isinstance(err, OSError):  # weights missing from an existing directory
                raise CheckpointError(f"could not load {cls.__name__} weights from {name}: {err}; "
                                      f"{WEIGHTS_HELP}") from err
            raise


def _weight_files(directory: Path) -> list[Path]:
    """The weight files of an HF directory: the shards its index names (all of them, present or not), or the
    single-file checkpoint."""
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = directory / index_name
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise CheckpointError(f"{index} is not a valid shard index ({err}); copy it again") from None
            return [directory / f for f in sorted(set(weight_map.values()))]
        if (directory / single).exists():
            return [directory / single]
    return []


def file_damage(file: str | os.PathLike) -> Optional[str]:
    """Why ``file`` (a ``.safetensors`` file, or a ``torch.save`` file: ``.bin``, ``.pt``, ``.pth``) cannot be
    read, or None when its header (safetensors) or archive directory (torch) is whole: a truncated download or
    a write cut short fails here. Reads headers only."""
    import zipfile

    file = Path(file)
    if not file.exists():
        return "missing"
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(file, framework="pt"):
                pass
        except Exception as err:  # noqa: BLE001 - safetensors' SafetensorError has no public base class
            return f"not a complete safetensors file ({err})"
        return None
    if not zipfile.is_zipfile(file):
        return "not a complete PyTorch checkpoint (no zip archive directory; truncated?)"
    return None


def damaged_weight_files(directory: str | os.PathLike) -> list[str]:
    """``"<file>: <why>"`` for each weight file of an HF directory that is missing or cannot be read (a
    truncated or interrupted download); empty when all are readable. Reads headers only."""
    damaged = []
    for file in _weight_files(Path(directory)):
        why = file_damage(file)
        if why == "missing":
            why = "missing (the shard index names it)"
        if why:
            damaged.append(f"{file.name}: {why}")
    return damaged


def checkpoint_shapes(directory: str | os.PathLike) -> dict[str, tuple]:
    """Tensor name -> shape for the weights of an HF directory, read without loading the tensors."""
    files = [f for f in _weight_files(Path(directory)) if f.exists()]
    shapes = {}
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors import safe_open
            with safe_open(file, framework="pt") as f:
                shapes.update({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
        else:
            shapes.update({k: tuple(v.shape) for k, v in torch.load(file, mmap=True, weights_only=True).items()})
    return shapes


def _explain_shape_mismatch(cls, directory: str, config=None) -> str:
    config = config or cls.config_class.from_pretrained(directory)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in cls(config).state_dict().items()}
    prefix = f"{cls.base_model_prefix}."
    found = {k[len(prefix):] if k.startswith(prefix) and k[len(prefix):] in expected else k: v
             for k, v in checkpoint_shapes(directory).items()}
    bad = [f"{k}: {found[k]} in the checkpoint, {expected[k]} in the model" for k in expected
           if k in found and found[k] != expected[k]]
    listed = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
    return (f"the config of {directory} does not match its weights ({listed}): "
            "check config.json, or the config you passed, against the checkpoint")


# DeepSpeed ZeRO-3 partitions every parameter when the model is built (transformers' from_pretrained does it
# when the Trainer's config says stage 3): a partitioned parameter holds an empty tensor and knows its full
# size as ``ds_numel`` / ``ds_shape``. Code that reads or writes weights outside forward goes through these.
# A parameter added afterwards (a resized position embedding, LoRA) is partitioned when DeepSpeed starts.

def parameter_count(parameters: Iterable[nn.Parameter]) -> int:
    """The number of weights, counting a ZeRO-3-partitioned parameter at its full size."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in parameters)


@contextlib.contextmanager
def gathered_parameters(parameters: Iterable[nn.Parameter], modify: bool = False) -> Iterator[None]:
    """Inside the block, ZeRO-3-partitioned ``parameters`` hold their full tensors (a no-op without ZeRO-3);
    with ``modify=True`` rank 0's changes are partitioned back to every rank."""
    partitioned = [p for p in parameters if hasattr(p, "ds_id")]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=0 if modify else None):
        yield


def init_decoder_weights(module: nn.Module, std: float) -> None:
    """The LLaMA-family initialisation (InternLM2, QLLaMA): linear and embedding weights N(0, std), biases
    and the padding embedding zero, norm weights one."""
    from .layers import RMSNorm

    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, RMSNorm):
        nn.init.ones_(module.weight)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor,
                   num_items_in_batch: Optional[Union[int, torch.Tensor]] = None) -> torch.Tensor:
    """Next-token cross-entropy: position t predicts ``labels[t + 1]``; ``-100`` labels are ignored."""
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    shift_labels = labels[:, 1:].reshape(-1).to(shift_logits.device)
    if num_items_in_batch is None:
        return F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
    total = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum")
    if isinstance(num_items_in_batch, torch.Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def weighted_causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                            denominator: Optional[Union[float, torch.Tensor]] = None) -> torch.Tensor:
    """Next-token cross-entropy with a weight per label (``weights`` aligned with ``labels``; 0 where ignored):
    ``sum(weight x loss) / denominator`` (default: the sum of the weights). Upstream's packed-training loss
    reductions are such weights (``internvl_chat.chat_data.packing``)."""
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    shift_labels = labels[:, 1:].reshape(-1).to(shift_logits.device)
    shift_weights = weights[:, 1:].reshape(-1).to(shift_logits.device, torch.float32)
    losses = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="none")
    total = (losses * shift_weights).sum()
    if denominator is None:
        denominator = shift_weights.sum()
    if isinstance(denominator, torch.Tensor):
        denominator = denominator.to(total.device, total.dtype)
    return total / denominator


# The linears the published training code wraps with LoRA, per architecture: InternViT (use_backbone_lora),
# the LLaMA family (LLaMA / Qwen2 language models, and QLLaMA, whose cross-attention is not targeted),
# InternLM2 and Phi-3 (use_llm_lora / use_qllama_lora).
LORA_TARGETS = {
    "intern_vit": ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"),
    "llama": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
              "mlp.down_proj", "mlp.up_proj"),
    "internlm2": ("attention.wqkv", "attention.wo", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3"),
    "phi3": ("mlp.down_proj", "mlp.gate_up_proj", "self_attn.o_proj", "self_attn.qkv_proj"),
}


def wrap_lora(module: nn.Module, architecture: str, r: int, lora_alpha: int, lora_dropout: float,
              **lora_config) -> nn.Module:
    """``module`` with LoRA adapters (peft) on the :data:`LORA_TARGETS` of ``architecture``, as the published
    training code wraps InternViT, QLLaMA and the chat language models; prints the trainable parameter count."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ImportError("LoRA (use_backbone_lora / use_llm_lora / use_qllama_lora) needs peft: "
                          "pip install peft") from None
    wrapped = get_peft_model(module, LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                                target_modules=list(LORA_TARGETS[architecture]),
                                                **lora_config))
    wrapped.print_trainable_parameters()
    return wrapped


def merge_lora_parts(model: nn.Module, parts: dict[str, str]) -> list[str]:
    """Fold the LoRA adapters of ``model``'s parts into the weights they wrap (peft's ``merge_and_unload``, in the
    parts' dtype) and set each part's rank in ``model.config`` to 0, so the model saves and loads as a plain one.
    ``parts``: attribute of the part -> its config flag (``{"vision_model": "use_backbone_lora", ...}``). Returns
    ``"<part> (r=<rank>)"`` for each part merged; a part without adapters is left alone."""
    merged = []
    for attribute, flag in parts.items():
        part = getattr(model, attribute)
        if hasattr(part, "merge_and_unload"):
            setattr(model, attribute, part.merge_and_unload())
            merged.append(f"{attribute} (r={getattr(model.config, flag, '?')})")
        setattr(model.config, flag, 0)
    left = [name for name in model.state_dict() if "lora_" in name or ".base_model.model." in name]
    if left:
        raise CheckpointError(f"merging the LoRA adapters left adapter tensors behind, e.g. {left[:3]}")
    return merged
