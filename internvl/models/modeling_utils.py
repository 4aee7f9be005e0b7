"""What every InternVL model class shares on top of ``transformers.PreTrainedModel``."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

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


def check_checkpoint_dir(path: str | os.PathLike) -> Path:
    """Fail early, naming the path, when a local checkpoint directory is missing or incomplete."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingFileError(f"checkpoint not found: {path} does not exist; {WEIGHTS_HELP}")
    if path.is_dir() and not (path / "config.json").is_file():
        raise MissingFileError(f"{path} is not a Hugging Face checkpoint directory: it has no config.json; "
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


class InternVLPreTrainedBase(PreTrainedModel):
    """Base class of the suite's models: HF loading with errors a user can act on."""

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


def damaged_weight_files(directory: str | os.PathLike) -> list[str]:
    """``"<file>: <why>"`` for each weight file of an HF directory that is missing or cannot be read (a
    truncated or interrupted download); empty when all are readable. Reads headers only."""
    import zipfile

    damaged = []
    for file in _weight_files(Path(directory)):
        if not file.exists():
            damaged.append(f"{file.name}: missing (the shard index names it)")
        elif file.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(file, framework="pt"):
                    pass
            except Exception as err:  # noqa: BLE001 - safetensors' SafetensorError has no public base class
                damaged.append(f"{file.name}: not a complete safetensors file ({err})")
        elif not zipfile.is_zipfile(file):
            damaged.append(f"{file.name}: not a complete PyTorch checkpoint (no zip archive directory; truncated?)")
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
