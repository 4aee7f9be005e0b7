"""The one place that knows which transformers major version is installed (4.x or 5.x).

The suite supports both (INSTALLATION.md gives the range and what was run on each end). Everything
that differs between them and that the library must paper over is here, so no other module compares
version numbers:

* ``_tied_weights_keys``: a list of tied parameter names in 4.x, a ``{tied: source}`` dict in 5.x;
* the dtype keyword of ``from_pretrained`` and the config key: ``torch_dtype`` (4.x, and every published
  ``config.json``) or ``dtype`` (4.56 and later; 5.x warns about the old name);
* RoPE settings: 5.x keeps ``rope_theta`` and ``rope_scaling`` inside one ``rope_parameters`` dict and
  writes only that to ``config.json``; the published remote code (transformers 4.x) reads ``rope_theta``
  and ``rope_scaling`` at the top level, so saved files carry both spellings;
* the error ``from_pretrained`` raises when a checkpoint tensor does not fit the config;
* ``save_pretrained(safe_serialization=False)``: 5.x always writes safetensors;
* the backbone API (``AutoBackbone``): 5.x moved the mixins to ``transformers.backbone_utils``, sets the
  model mixin up in ``__init__`` (4.x: ``_init_backbone``) and aligns a config's out features itself.
"""
from __future__ import annotations

from typing import Any, Optional

import transformers
from packaging.version import Version

__all__ = ["TRANSFORMERS_VERSION", "TRANSFORMERS_5", "DTYPE_KWARG", "tied_weights_keys", "dtype_kwargs",
           "pop_dtype_kwarg", "rope_settings", "add_legacy_rope_keys", "is_shape_mismatch_error",
           "CAN_SAVE_BIN", "CACHE_KEY", "output_cache", "write_published_tokenizer_files",
           "enable_activation_checkpointing", "BackboneConfigMixin", "BackboneMixin", "set_backbone_outputs",
           "init_backbone_mixin"]

TRANSFORMERS_VERSION = Version(transformers.__version__)
TRANSFORMERS_5 = TRANSFORMERS_VERSION.major >= 5
# What from_pretrained calls the dtype argument (4.56 renamed it and warns about the old name).
DTYPE_KWARG = "dtype" if TRANSFORMERS_VERSION >= Version("4.56") else "torch_dtype"
# 5.x writes safetensors whatever safe_serialization says.
CAN_SAVE_BIN = not TRANSFORMERS_5


def tied_weights_keys(mapping: dict[str, str]):
    """``_tied_weights_keys`` for a model whose ``mapping`` is ``{tied parameter: the one it shares}``."""
    return dict(mapping) if TRANSFORMERS_5 else list(mapping)


def pop_dtype_kwarg(kwargs: dict) -> Any:
    """Remove and return the dtype a caller gave as ``dtype=`` or ``torch_dtype=`` (None if neither)."""
    given = [key for key in ("dtype", "torch_dtype") if kwargs.get(key) is not None]
    if len(given) == 2 and kwargs["dtype"] != kwargs["torch_dtype"]:
        raise ValueError(f"dtype={kwargs['dtype']} and torch_dtype={kwargs['torch_dtype']} disagree; give one")
    value = kwargs.pop("dtype", None)
    torch_dtype = kwargs.pop("torch_dtype", None)
    return value if value is not None else torch_dtype


def dtype_kwargs(dtype: Any) -> dict:
    """``{"dtype": dtype}`` or ``{"torch_dtype": dtype}``, whichever this transformers expects (none if None)."""
    return {} if dtype is None else {DTYPE_KWARG: dtype}


def rope_settings(config) -> tuple[float, Optional[dict]]:
    """``(rope_theta, rope_scaling)`` of a config in the published spelling: ``rope_scaling`` is None for plain
    RoPE, else a dict with ``type`` (and ``rope_type``) and ``factor`` (e.g. ``{"type": "dynamic",
    "factor": 2.0}``), whichever transformers version built the config."""
    params = getattr(config, "rope_parameters", None) if TRANSFORMERS_5 else None
    if isinstance(params, dict) and params:
        theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
        scaling = {k: v for k, v in params.items() if k not in ("rope_theta", "partial_rotary_factor")}
    else:
        theta = getattr(config, "rope_theta", 10000.0)
        scaling = dict(getattr(config, "rope_scaling", None) or {})
    kind = scaling.get("rope_type", scaling.get("type"))
    if not scaling or kind in (None, "default"):
        return theta, None
    scaling.setdefault("type", kind)
    scaling.setdefault("rope_type", kind)
    return theta, scaling


def add_legacy_rope_keys(config_dict: dict) -> dict:
    """Give a ``config.json`` dict written by transformers 5 the top-level ``rope_theta`` / ``rope_scaling``
    that transformers 4 (and the published remote code) read; a 4.x dict is returned as it is."""
    params = config_dict.get("rope_parameters")
    if not isinstance(params, dict) or not params:
        return config_dict

    class _View:  # rope_settings reads attributes
        rope_parameters = params

    theta, scaling = rope_settings(_View)
    config_dict.setdefault("rope_theta", theta)
    if config_dict.get("rope_scaling") is None:
        config_dict["rope_scaling"] = scaling
    return config_dict


def is_shape_mismatch_error(err: BaseException) -> bool:
    """True for the error ``from_pretrained`` raises when a tensor's shape does not fit the model."""
    text = str(err)
    return "size mismatch" in text or "ignore_mismatched_sizes" in text


# The KV cache's name in forward arguments, generate() arguments and model outputs: "cache" in 5.x,
# "past_key_values" before (5.x still accepts the old name, with a deprecation warning).
CACHE_KEY = "cache" if TRANSFORMERS_5 else "past_key_values"


def output_cache(outputs):
    """The KV cache a model output carries (None if it has none)."""
    return getattr(outputs, CACHE_KEY, None)


# Keys transformers 5 writes into tokenizer_config.json that mean nothing to 4.x (or, for a list-valued
# "extra_special_tokens", break it: 4.x expects a dict there).
_V5_ONLY_TOKENIZER_KEYS = ("is_local", "local_files_only", "backend")


def write_published_tokenizer_files(directory, tokenizer) -> None:
    """After ``tokenizer.save_pretrained(directory)``: give the files the published layout that transformers
    4.x and the published remote code read, whichever version wrote them: ``additional_special_tokens``
    (5.x writes a list under ``extra_special_tokens``) and ``special_tokens_map.json`` (5.x writes none)."""
    import json
    from pathlib import Path

    directory = Path(directory)
    config_file = directory / "tokenizer_config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        extra = config.get("extra_special_tokens")
        if isinstance(extra, list):
            config.pop("extra_special_tokens")
            config.setdefault("additional_special_tokens", extra)
        for key in _V5_ONLY_TOKENIZER_KEYS:
            config.pop(key, None)
        for key in ("add_bos_token", "add_eos_token"):  # 5.x leaves them out; 4.x defaults may differ
            if key not in config and isinstance(getattr(tokenizer, key, None), bool):
                config[key] = getattr(tokenizer, key)
        config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    special_map = directory / "special_tokens_map.json"
    if not special_map.is_file():
        names = ("bos_token", "eos_token", "unk_token", "pad_token")
        content = {name: str(getattr(tokenizer, name)) for name in names if getattr(tokenizer, name, None)}
        extra = [str(t) for t in (getattr(tokenizer, "additional_special_tokens", None)
                                  or getattr(tokenizer, "extra_special_tokens", None) or [])]
        if extra:
            content["additional_special_tokens"] = extra
        special_map.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def enable_activation_checkpointing(model, gradient_checkpointing_kwargs: Optional[dict] = None, **kwargs) -> None:
    """``model.gradient_checkpointing_enable(gradient_checkpointing_kwargs)``, under the names this transformers
    uses (5.x renamed it ``activation_checkpointing_enable(activation_checkpointing_kwargs)`` and warns about the
    old one)."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs=gradient_checkpointing_kwargs, **kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gradient_checkpointing_kwargs, **kwargs)


try:  # 5.x (the old module still re-exports them, deprecated, until 5.10)
    from transformers.backbone_utils import BackboneConfigMixin, BackboneMixin
except ImportError:  # 4.x
    from transformers.utils.backbone_utils import BackboneConfigMixin, BackboneMixin


def set_backbone_outputs(config, out_features=None, out_indices=None) -> None:
    """Align and check a backbone config's ``out_features`` / ``out_indices`` against its ``stage_names``."""
    if hasattr(config, "set_output_features_output_indices"):  # 5.x
        config.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
    else:
        from transformers.utils.backbone_utils import get_aligned_output_features_output_indices
        config._out_features, config._out_indices = get_aligned_output_features_output_indices(
            out_features=out_features, out_indices=out_indices, stage_names=config.stage_names)


def init_backbone_mixin(model, config) -> None:
    """What a ``BackboneMixin`` model's ``__init__`` calls after ``super().__init__(config)``: nothing in 5.x
    (the mixin's own ``__init__`` did it), ``_init_backbone(config)`` in 4.x."""
    if hasattr(BackboneMixin, "_init_backbone"):
        model._init_backbone(config)


def upernet_fcn_head(config, in_index: int, kernel_size: int, dilation: int):
    """transformers' ``UperNetFCNHead`` reading ``config.auxiliary_in_channels`` channels: newer releases also
    take the backbone's channel list as ``in_channels`` (used only where the config has none), 4.51 does not."""
    import inspect

    from transformers.models.upernet.modeling_upernet import UperNetFCNHead

    kwargs = {"in_index": in_index, "kernel_size": kernel_size, "dilation": dilation}
    if "in_channels" in inspect.signature(UperNetFCNHead.__init__).parameters:
        kwargs["in_channels"] = None
    return UperNetFCNHead(config, **kwargs)


def config_kwargs(config_dict: dict) -> dict:
    """A (published) config dict as keyword arguments for a transformers config class: ``torch_dtype``
    becomes ``dtype`` where transformers renamed it (4.56 and later warn about the old key)."""
    out = dict(config_dict)
    if DTYPE_KWARG == "dtype" and "torch_dtype" in out:
        torch_dtype = out.pop("torch_dtype")
        if out.get("dtype") is None:
            out["dtype"] = torch_dtype
    return out
