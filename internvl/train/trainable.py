"""Which parameters a fine-tune trains: freezing, LoRA wrapping and the trainable-parameter report, once for every
entry point (``internvl_chat.finetune``, ``internvl_g.finetune``).

Upstream's fine-tuning scripts all apply their flags in one order, which :func:`apply_trainable_set` keeps:
the freezes, then the LoRA wrappings (peft freezes the weights it wraps and trains its adapters), then the
unfreezes (after the wrapping, which would otherwise freeze them again)::

    report = apply_trainable_set(model,
        freeze=[model.vision_model] if args.freeze_backbone else [],
        lora=[LoraRequest("use_llm_lora", args.use_llm_lora, model.wrap_llm_lora)],
        unfreeze=[lambda: model.language_model.get_output_embeddings().parameters()],
        source=args.model_name_or_path, flags_hint="--freeze_llm / --freeze_backbone")
    log.info(report)   # "trainable parameters: 1,234 of 56,789 (2.17%) in ['language_model', 'mlp1']"
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

from torch import nn

from ..errors import ConfigError

__all__ = ["LoraRequest", "apply_trainable_set", "trainable_report"]


@dataclass
class LoraRequest:
    """Wrap one part of a model with LoRA: ``flag`` is the config key and command-line flag that holds the rank
    (``use_llm_lora``, ``use_backbone_lora``, ``use_qllama_lora``), ``rank`` its value (0: no LoRA), ``wrap`` the
    model method that wraps the part (called with ``r=rank, lora_alpha=2 * rank``, upstream's alpha)."""

    flag: str
    rank: int
    wrap: Callable[..., None]


def apply_trainable_set(model: nn.Module, freeze: Iterable[nn.Module] = (), lora: Sequence[LoraRequest] = (),
                        unfreeze: Iterable[Callable[[], Iterable[nn.Parameter]]] = (), source: Optional[str] = None,
                        flags_hint: str = "the freeze flags") -> str:
    """Freeze, wrap and unfreeze in upstream's order (module doc); returns :func:`trainable_report`.

    ``unfreeze`` holds callables that return the parameters to train, called after the wrapping (the parts they
    reach may be inside a LoRA wrapper by then). A wrapped part's rank is written into ``model.config`` under its
    flag, so the saved config rebuilds the same model. Errors, named: a negative rank; LoRA asked for a part that
    ``source`` already carries adapters on (wrapping twice would train adapters of adapters); nothing left to
    train (``flags_hint`` names the flags that froze everything)."""
    for request in lora:
        if request.rank < 0:
            raise ConfigError(f"--{request.flag} {request.rank}: a LoRA rank is >= 0 (0: no LoRA)")
    for module in freeze:
        module.requires_grad_(False)
    for request in lora:
        if not request.rank:
            continue
        already = getattr(model.config, request.flag, 0)
        if already:
            raise ConfigError(f"--{request.flag} {request.rank}: {source or 'the model'} already has LoRA adapters of "
                              f"rank {already} ({request.flag} in its config.json); train them as they are (leave out "
                              f"--{request.flag}), or merge them first")
        request.wrap(r=request.rank, lora_alpha=2 * request.rank)
        setattr(model.config, request.flag, request.rank)
    for parameters in unfreeze:
        for param in parameters():
            param.requires_grad_(True)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"{flags_hint} leave no parameter to train; unfreeze something or add LoRA")
    return trainable_report(model)


def trainable_report(model: nn.Module) -> str:
    """``trainable parameters: <n> of <total> (<pct>%) in [<top-level parts>]``, counting ZeRO-3-partitioned
    parameters at their full size."""
    from ..models.modeling_utils import parameter_count

    trainable = parameter_count(p for p in model.parameters() if p.requires_grad)
    total = parameter_count(model.parameters())
    groups = sorted({name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad})
    return (f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.2f}%) "
            f"in {groups or 'none'}")
