"""What the part-B task families (MMBench / CCBench, ScienceQA, SEED, MMVP, Tiny-LVLM, MMMU, the GPT-judge tasks,
MVBench) share beyond :mod:`.framework`: upstream's option-letter post-processing, images stored inside data files,
the per-task pixel builders (picklable, for DataLoader workers) and small file helpers.
"""
from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from internvl.errors import DataError


def option_post_process(pred: str, option: dict) -> str:
    """The answer post-processing of upstream's MMBench, SEED, MMVP and MMMU scripts (one character as it is,
    else the first character when it is an option letter, else the first option whose text occurs in the
    answer, else the answer as it is). An empty answer stays empty (upstream's code raises IndexError on it)."""
    pred = pred.strip()
    if not pred:
        return pred
    option_candidate = list(option.keys())
    if len(pred) == 1:
        return pred
    elif len(pred) != 1 and pred[0] in option_candidate:
        return pred[0]
    elif len(pred) != 1 and pred[0] not in option_candidate:
        for k, v in option.items():
            if v in pred:
                return k
    return pred


class Base64Image:
    """An image stored base64-encoded in a data file (MMBench's TSV, MMHal's JSONL), decoded when the loader
    asks for it; ``where`` names the file and line for the error when it does not decode."""

    def __init__(self, data: str, where: str):
        self.data, self.where = data, where

    def raw(self) -> bytes:
        return base64.b64decode(self.data)

    def __call__(self):
        from PIL import Image

        try:
            with Image.open(io.BytesIO(self.raw())) as image:
                return image.convert("RGB")
        except Exception as err:
            raise DataError(f"{self.where}: the image does not decode ({err}); re-download the file") from None


class BytesImage(Base64Image):
    """An image stored as raw bytes (the parquet files of MMMU and MathVista)."""

    def raw(self) -> bytes:
        return self.data


MC_PROMPT = "Answer with the option's letter from the given choices directly."


def with_options(question: str, choices: Sequence[str], strip: bool = True) -> tuple[str, dict]:
    """Upstream's multiple-choice question: ``question`` + ``\nA. first\nB. second...`` (nothing without choices),
    and the ``{letter: choice}`` options; ``strip`` strips each choice (MMMU, MMVP; ScienceQA keeps them)."""
    choices = [c.strip() for c in choices] if strip else list(choices)
    options = {chr(ord("A") + i): c for i, c in enumerate(choices)}
    if options:
        question += "\n" + "\n".join(f"{letter}. {c}" for letter, c in options.items())
    return question, options


def write_json_file(path: Union[str, os.PathLike], obj: Any, indent: Optional[int] = None,
                    ensure_ascii: bool = True, **kwargs) -> Path:
    """``obj`` as JSON at ``path``, atomically; by default as upstream's ``json.dump`` writes it (ASCII escapes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=ensure_ascii, **kwargs)
    os.replace(tmp, path)
    return path


def write_jsonl_file(path: Union[str, os.PathLike], rows: Sequence[dict], ensure_ascii: bool = True) -> Path:
    """One ``json.dumps`` line per row, atomically; by default as upstream writes its .jsonl results."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=ensure_ascii) + "\n")
    os.replace(tmp, path)
    return path


def model_dir_name(checkpoint: str) -> str:
    """Upstream's per-model results folder: the checkpoint path's last two parts joined by ``_``."""
    return "_".join(os.path.abspath(checkpoint).split("/")[-2:])


def require_keys(row: Any, keys: Sequence[str], task: str, where: str) -> None:
    if not isinstance(row, dict):
        raise DataError(f"{task}: {where} is not a JSON object")
    missing = [k for k in keys if k not in row]
    if missing:
        raise DataError(f"{task}: {where} has no {', '.join(map(repr, missing))}; is it upstream's file for "
                        "this task?")
