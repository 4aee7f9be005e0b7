"""Merge the LoRA adapters of a fine-tuned InternVL-Chat into its weights and write a drop-in replacement of the
base checkpoint.

    cd internvl_chat && python tools/merge_lora.py work_dirs/.../my_lora_run work_dirs/my_model_merged
    python -m internvl_chat.merge_lora INPUT OUTPUT          # the same, from anywhere

``INPUT`` is a fine-tuning output directory (or one of its ``checkpoint-N``) whose ``config.json`` has
``use_llm_lora`` / ``use_backbone_lora`` set. The adapters are merged in float32 (``W + B A x alpha / r``,
:meth:`InternVLChatModel.merge_lora`), ``use_*_lora`` reset to 0, and ``OUTPUT`` gets what the base checkpoint
has, in its layout:

* the weights under the published names (``vision_model.*``, ``mlp1.*``, ``language_model.*``, no ``base_model``
  / ``lora_`` names), in the checkpoint's dtype (``config.json``'s ``torch_dtype``, ``--dtype`` to change it);
* ``config.json`` with the base's ``architectures`` and ``auto_map``;
* the tokenizer and generation files;
* the remote-code ``*.py`` files of the published base checkpoint (``configuration_internvl_chat.py``,
  ``modeling_internvl_chat.py``, ``tokenization_internlm2.py``, ...) when it has them, taken from ``INPUT``,
  else from ``--base``, else from the directory ``config.json`` names in ``_name_or_path``; where none has them
  (a base the suite wrote), the suite's own code files, which load the suite's classes from the installed
  ``internvl`` package (one log line says so, and what to do for a directory that loads without the suite),

so ``InternVLChatModel.from_pretrained(OUTPUT)``, ``AutoModel.from_pretrained(OUTPUT, trust_remote_code=True)`` and
``import internvl`` + ``AutoModel.from_pretrained(OUTPUT)`` work, with no file copied by hand. A directory
without adapters is re-saved the same way (a plain copy of the model).
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import Optional, Sequence

from internvl.cli import run_main
from internvl.errors import CheckpointError, ConfigError, MissingFileError

log = logging.getLogger("internvl_chat.merge_lora")


def merge_lora(input_path: str, output_path: str, base: Optional[str] = None, dtype: Optional[str] = None) -> Path:
    """Merge and write (see the module doc); returns the output directory."""
    import torch

    from internvl.compat import dtype_kwargs, write_published_tokenizer_files
    from internvl.models.chat_model import InternVLChatModel
    from internvl.models.modeling_utils import COMPANION_FILES, code_files, published_code_files
    from internvl.models.tokenization import load_tokenizer
    from internvl.train.precision import resolve_dtype

    source, out = Path(input_path), Path(output_path)
    if not (source / "config.json").is_file():
        raise MissingFileError(f"{source} is not a fine-tuning output directory: it has no config.json")
    if out.resolve() == source.resolve():
        raise ConfigError("the output directory must differ from the input directory")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty; choose a new output directory")
    config = json.loads((source / "config.json").read_text())
    saved_dtype = resolve_dtype(dtype or config.get("torch_dtype") or config.get("dtype") or "float32")
    try:
        model = InternVLChatModel.from_pretrained(source, low_cpu_mem_usage=True, **dtype_kwargs(torch.float32)).eval()
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot load {source}: {err}") from None
    merged = model.merge_lora()
    model.to(saved_dtype)
    model.config.architectures = config.get("architectures") or ["InternVLChatModel"]
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # safetensors, and the suite's code files the published ones below may replace
    for name in COMPANION_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)
    if not any((out / name).is_file() for name in ("tokenizer_config.json", "tokenizer.json")):
        raise MissingFileError(f"{source} has no tokenizer files (tokenizer_config.json, tokenizer.model, ...): "
                               "copy them from the base checkpoint into it and run again")
    write_published_tokenizer_files(out, load_tokenizer(out))
    code = published_code_files(source, base, config.get("_name_or_path"))
    for path in code:
        shutil.copy2(path, out / path.name)
    log.info("merged %s; wrote %s (%s, %d remote-code file(s) of the published base)",
             " and ".join(merged) or "no adapters (none set)", out, str(saved_dtype).replace("torch.", ""), len(code))
    if not code:
        log.warning("%s carries the suite's own code files (%s), not the published model's: AutoModel loads it where "
                    "the `internvl` package is installed; to load it without the suite, copy the published "
                    "checkpoint's *.py files into it (or merge again with --base <published checkpoint directory>)",
                    out, ", ".join(code_files(model.config.auto_map)))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/merge_lora.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("input_path", help="fine-tuning output directory (or a checkpoint-N in it)")
    parser.add_argument("output_path", help="new directory for the merged model")
    parser.add_argument("--base", help="base checkpoint to take the published remote-code *.py files from "
                                       "(default: found)")
    parser.add_argument("--dtype", help="dtype of the written weights (default: the checkpoint's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    merge_lora(args.input_path, args.output_path, args.base, args.dtype)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
