"""InternVL model library: InternViT, InternVL-C/G (QLLaMA) and InternVL-Chat (InternLM2 and others).

    from internvl import InternVisionModel, InternVLModel, InternVLChatModel, load_tokenizer
    vit = InternVisionModel.from_pretrained("pretrained/InternViT-6B-224px", torch_dtype=torch.bfloat16)
    clip = InternVLModel.from_pretrained("pretrained/InternVL-14B-224px", torch_dtype=torch.bfloat16)
    chat = InternVLChatModel.from_pretrained("pretrained/InternVL2-2B", torch_dtype=torch.bfloat16)
    tokenizer = load_tokenizer("pretrained/InternVL2-2B")

``import internvl`` imports nothing heavy: each name below is imported on first use, so a command's
``--help`` does not pay for torch and transformers. Importing a model module registers its published
``model_type`` with ``AutoConfig`` / ``AutoModel`` (``intern_vit_6b``, ``internlm2``, ``internvl_chat``), so
``AutoModel.from_pretrained(dir)`` reads those directories with no ``trust_remote_code``;
:func:`register_auto_classes` does it up front. InternVL-C/G's ``"internvl"`` is registered only on request
(:func:`internvl.internvl_cg.register_internvl_cg`): transformers has its own ``"internvl"`` (InternVL3 -hf).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "InternVisionConfig": ".intern_vit", "InternVisionModel": ".intern_vit",
    "InternVLConfig": ".internvl_cg", "InternVLModel": ".internvl_cg", "load_internvl_c_pth": ".internvl_cg",
    "build_cg_tokenizer": ".processing_internvl_cg", "image_transform": ".processing_internvl_cg",
    "InternLM2Config": ".internlm2", "InternLM2Model": ".internlm2", "InternLM2ForCausalLM": ".internlm2",
    "InternLM2Tokenizer": ".tokenization", "load_tokenizer": ".tokenization",
    "InternVLChatConfig": ".chat_model", "InternVLChatModel": ".chat_model",
    "attention": ".layers", "set_attention_backend": ".layers",
}

__all__ = sorted(_EXPORTS) + ["register_auto_classes"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'internvl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


def register_auto_classes() -> None:
    """Register InternViT, InternLM2 and InternVL-Chat with the transformers Auto classes now (importing
    their modules does it; this imports them)."""
    for module in (".intern_vit", ".internlm2", ".chat_model"):
        importlib.import_module(module, __name__)
