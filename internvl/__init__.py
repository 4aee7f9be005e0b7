"""InternVL model library: InternViT, InternVL-C/G (QLLaMA) and InternVL-Chat (InternLM2 and others).

    from internvl import InternVisionModel, InternVLModel, InternVLChatModel, load_tokenizer
    vit = InternVisionModel.from_pretrained("pretrained/InternViT-6B-224px", torch_dtype=torch.bfloat16)
    clip = InternVLModel.from_pretrained("pretrained/InternVL-14B-224px", torch_dtype=torch.bfloat16)
    chat = InternVLChatModel.from_pretrained("pretrained/InternVL2-2B", torch_dtype=torch.bfloat16)
    tokenizer = load_tokenizer("pretrained/InternVL2-2B")

``import internvl`` imports nothing heavy: each name below is imported on first use, so a command's
``--help`` does not pay for torch and transformers. Once transformers' Auto classes are imported (before or after
``import internvl``), the published ``model_type`` of InternViT, InternLM2 and InternVL-Chat (``intern_vit_6b``,
``internlm2``, ``internvl_chat``) are registered with ``AutoConfig`` / ``AutoModel``, so
``AutoModel.from_pretrained(dir)`` reads those directories with no ``trust_remote_code`` (and with it, these
registered classes win over a directory's code files on transformers 5); :func:`register_auto_classes` does it
up front. InternVL-C/G's ``"internvl"`` is registered only on request
(:func:`internvl.models.internvl_cg.register_internvl_cg`): transformers has its own ``"internvl"`` (InternVL3 -hf).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "InternVisionConfig": ".models.intern_vit", "InternVisionModel": ".models.intern_vit",
    "InternVLConfig": ".models.internvl_cg", "InternVLModel": ".models.internvl_cg",
    "load_internvl_c_pth": ".models.internvl_cg",
    "build_cg_tokenizer": ".models.processing_internvl_cg", "image_transform": ".models.processing_internvl_cg",
    "InternLM2Config": ".models.internlm2", "InternLM2Model": ".models.internlm2",
    "InternLM2ForCausalLM": ".models.internlm2",
    "InternLM2Tokenizer": ".models.tokenization", "load_tokenizer": ".models.tokenization",
    "InternVLChatConfig": ".models.chat_model", "InternVLChatModel": ".models.chat_model",
    "attention": ".models.layers", "set_attention_backend": ".models.layers",
}

# Module paths of the flat layout before the layers (internvl.chat_image, internvl.layers, ...): importing one
# gives the module at its new home, so scripts written against the old paths keep working.
MOVED_MODULES = {
    "layers": "models.layers", "modeling_utils": "models.modeling_utils", "intern_vit": "models.intern_vit",
    "qllama": "models.qllama", "internvl_cg": "models.internvl_cg", "internlm2": "models.internlm2",
    "processing_internvl_cg": "models.processing_internvl_cg", "tokenization": "models.tokenization",
    "conversation": "models.conversation", "chat_model": "models.chat_model",
    "transforms": "data.transforms", "chat_image": "data.chat_image", "caption_benchmarks": "data.caption_benchmarks",
    "retrieval_data": "data.retrieval", "datakit.synthetic": "data.synthetic",
    "caption_metrics": "eval.caption_metrics", "caption_eval": "eval.caption_eval",
    "hf_training": "train.hf", "runtime": "train.distributed",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``internvl.<old path>`` to the module at its new home (the same module object)."""

    def find_spec(self, fullname, path=None, target=None):
        old = fullname[len(__name__) + 1:] if fullname.startswith(__name__ + ".") else None
        if old in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(f"{__name__}.{MOVED_MODULES[spec.name[len(__name__) + 1:]]}")

    def exec_module(self, module):
        pass  # already executed at its new home


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())

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
    for module in (".models.intern_vit", ".models.internlm2", ".models.chat_model"):
        importlib.import_module(module, __name__)


# transformers' Auto classes: once their module has loaded, the suite's model types are registered with them (see
# register_auto_classes), so `import internvl` is enough for AutoModel.from_pretrained(dir) without
# trust_remote_code, and `import internvl` itself imports neither torch nor transformers.
_AUTO_MODULE = "transformers.models.auto.modeling_auto"


def _initializing(name: str) -> bool:
    spec = getattr(sys.modules.get(name), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _register_after_transformers_auto() -> None:
    # A model module of the suite being imported (it imported transformers' Auto classes) registers itself when
    # it is done; a transformers module half imported cannot be imported from yet.
    if any(_initializing(name) for name in list(sys.modules)
           if name.startswith((f"{__name__}.models", "transformers.modeling_utils", "transformers.configuration_utils"))):
        return
    try:
        register_auto_classes()
    except Exception as err:  # noqa: BLE001 - never break the user's import of transformers over this
        import warnings

        warnings.warn(f"internvl: could not register its model types with transformers' Auto classes ({err}); "
                      "call internvl.register_auto_classes() to see why", stacklevel=2)


class _AutoClassHook(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Runs :func:`_register_after_transformers_auto` after :data:`_AUTO_MODULE` has been executed."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _AUTO_MODULE:
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _register_after_transformers_auto()


if _AUTO_MODULE in sys.modules:
    _register_after_transformers_auto()
elif not any(isinstance(f, _AutoClassHook) for f in sys.meta_path):
    sys.meta_path.insert(0, _AutoClassHook())
