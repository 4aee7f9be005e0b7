"""MMBench (dev / test, English / Chinese) and CCBench, as upstream's ``eval/mmbench/evaluate_mmbench.py``.

Data: ``data/mmbench/<file>.tsv`` (one row per question, the image base64-encoded in the ``image`` column).
Prompt: ``[hint\\n]question`` + ``\\nA. ...`` per option present + ``\\n`` + "Answer with the option's letter from
the given choices directly." (English) or "请直接回答选项字母。" (Chinese); 100 new tokens at most, at least 1.
The answer is reduced to an option letter by upstream's ``post_process``.
Results: ``<dataset>_<%y%m%d%H%M%S>.xlsx``, the TSV less its image and bookkeeping columns with a ``prediction``
column inserted as upstream does, the file MMBench's server takes.
Score (dev splits, which carry answers): MMBench's circular evaluation. The dev files hold every question
several times with its options rotated (row ``index`` + k * 1,000,000 for the k-th rotation); a question counts
as right only when every rotation of it is answered right. ``Overall`` is that accuracy over the questions,
``Overall_vanilla`` the plain accuracy over rows, and ``<category>`` the circular accuracy per category.

The TSV is read the way upstream's pandas reads it: pandas' default missing-value strings (``""``, ``NA``,
``N/A``, ``None``, ``nan``, ``null``, ...) mean "no such option / no hint", and a column whose values are all
numbers is numeric, so an option ``3`` in a column with a missing value reads as ``3.0`` in the prompt.
"""
from __future__ import annotations

import base64
import csv
import io
import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from PIL import Image

from internvl.errors import DataError
from .items import Item, need_file, option_post_process, time_prefix
from .xlsx import read_xlsx, write_xlsx

SOURCE = "download it as upstream's eval/mmbench/README.md says (MMBench / OpenCompass download links)"

# task -> (upstream dataset name, file under data/, split type, language)
TASKS: Dict[str, Tuple[str, str, str, str]] = {
    "mmbench-dev-en": ("mmbench_dev_20230712", "mmbench/mmbench_dev_20230712.tsv", "dev", "en"),
    "mmbench-dev-cn": ("mmbench_dev_cn_20231003", "mmbench/mmbench_dev_cn_20231003.tsv", "dev", "cn"),
    "mmbench-test-en": ("mmbench_test_en_20231003", "mmbench/mmbench_test_en_20231003.tsv", "test", "en"),
    "mmbench-test-cn": ("mmbench_test_cn_20231003", "mmbench/mmbench_test_cn_20231003.tsv", "test", "cn"),
    "ccbench-dev": ("ccbench_dev_cn", "mmbench/CCBench_legacy.tsv", "dev", "cn"),
}
PROMPT = {"en": "Answer with the option's letter from the given choices directly.", "cn": "请直接回答选项字母。"}
OPTION_LETTERS = ["A", "B", "C", "D", "E"]
MAX_NEW_TOKENS, MIN_NEW_TOKENS = 100, 1
CIRCULAR_STRIDE = 1_000_000

# pandas.read_csv's default missing-value strings (pandas 2.x).
PANDAS_NA = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
             "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _typed_column(raw: List[str]) -> List[Any]:
    """One TSV column with pandas' type inference: None for missing, int / float when every value is one."""
    present = [v for v in raw if v not in PANDAS_NA]
    if present and all(_INT.fullmatch(v.strip()) for v in present):
        has_na = len(present) < len(raw)
        return [None if v in PANDAS_NA else (float(int(v)) if has_na else int(v)) for v in raw]
    if present and all(_FLOAT.fullmatch(v.strip()) for v in present):
        return [None if v in PANDAS_NA else float(v) for v in raw]
    return [None if v in PANDAS_NA else v for v in raw]


def read_tsv(path: os.PathLike) -> Tuple[List[str], List[Dict[str, Any]]]:
    """``(columns, rows)`` of an MMBench-style TSV, values typed as pandas types them."""
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8", newline="") as f:
        table = list(csv.reader(f, delimiter="\t"))
    if not table:
        raise DataError(f"{path}: empty file; expected a header row (index, question, A, B, ..., image)")
    header, body = table[0], table[1:]
    for lineno, row in enumerate(body, 2):
        if len(row) != len(header):
            raise DataError(f"{path}:{lineno}: {len(row)} fields, the header has {len(header)}")
    for key in ("index", "question", "image"):
        if key not in header:
            raise DataError(f"{path}: no {key!r} column in the header {header}")
    columns = [_typed_column([row[i] for row in body]) for i in range(len(header))]
    rows = [{name: columns[i][r] for i, name in enumerate(header)} for r in range(len(body))]
    return header, rows


def _fmt(value: Any) -> str:
    return f"{value}"


def _decode_image(b64: str, where: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            return im.convert("RGB")
    except Exception as err:
        raise DataError(f"{where}: the image column does not decode ({err})") from None


def build_question(row: Dict[str, Any], language: str) -> Tuple[str, Dict[str, Any]]:
    """Upstream's prompt and the options dict (letter -> text) for one TSV row."""
    question = _fmt(row["question"])
    options = {c: row[c] for c in OPTION_LETTERS if c in row and row[c] is not None}
    hint = row.get("hint")
    if hint is not None:
        question = _fmt(hint) + "\n" + question
    for key, item in options.items():
        question += f"\n{key}. {_fmt(item)}"
    question = question + "\n" + PROMPT["cn" if language == "cn" else "en"]
    return question, {k: _fmt(v) for k, v in options.items()}


def load_items(task: str, data_root: os.PathLike) -> List[Item]:
    dataset, relative, _, language = TASKS[task]
    path = need_file(data_root, relative, task, SOURCE)
    header, rows = read_tsv(path)
    items = []
    for r, row in enumerate(rows):
        question, options = build_question(row, language)
        b64 = row["image"]
        where = f"{path}:{r + 2}"
        if b64 is None:
            raise DataError(f"{where}: empty image column")
        items.append(Item(key=str(row["index"]), question=question,
                          images=[lambda b64=b64, where=where: _decode_image(b64, where)],
                          record={"index": int(row["index"]), "options": options,
                                  "answer": row.get("answer") if "answer" in header else None},
                          max_new_tokens=MAX_NEW_TOKENS, min_new_tokens=MIN_NEW_TOKENS))
    return items


def post_process(pred: str, options: Dict[str, str]) -> str:
    return option_post_process(pred, options)


def finish(task: str, items: Sequence[Item], answers: Sequence[str], out_dir: os.PathLike,
           data_root: os.PathLike) -> Path:
    """Write upstream's spreadsheet: the TSV less ``hint, category, source, image, comment, l2-category``
    (MMBench) or ``category, image`` (CCBench), ``prediction`` inserted at column 6 (MMBench) or 8 (CCBench)."""
    dataset, relative, _, _ = TASKS[task]
    header, rows = read_tsv(need_file(data_root, relative, task, SOURCE))
    predictions = {it.record["index"]: post_process(a, it.record["options"]) for it, a in zip(items, answers)}
    if "mmbench" in dataset:
        drop, at = {"hint", "category", "source", "image", "comment", "l2-category"}, 6
    else:
        drop, at = {"category", "image"}, 8
    columns = [c for c in header if c not in drop]
    at = min(at, len(columns))
    out_columns = columns[:at] + ["prediction"] + columns[at:]
    out_rows = []
    for row in rows:
        values = {c: row[c] for c in columns}
        values["prediction"] = predictions.get(int(row["index"]))
        out_rows.append([values[c] for c in out_columns])
    return write_xlsx(Path(out_dir) / f"{dataset}_{time_prefix()}.xlsx", out_columns, out_rows)


def circular_scores(rows: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    """MMBench's circular accuracy from rows with ``index``, ``prediction``, ``answer`` (and ``category``)."""
    groups: Dict[int, List[bool]] = {}
    category: Dict[int, Any] = {}
    correct_rows = 0
    for row in rows:
        right = str(row.get("prediction") if row.get("prediction") is not None else "").strip() \
            == str(row["answer"]).strip()
        correct_rows += right
        g = int(row["index"]) % CIRCULAR_STRIDE
        groups.setdefault(g, []).append(right)
        if row.get("category") is not None:
            category.setdefault(g, row["category"])
    if not groups:
        raise DataError("no answered rows to score")
    passed = {g: all(v) for g, v in groups.items()}
    metrics = {"Overall": sum(passed.values()) / len(passed), "Overall_vanilla": correct_rows / len(rows)}
    per_cat: Dict[Any, List[bool]] = {}
    for g, ok in passed.items():
        if g in category:
            per_cat.setdefault(category[g], []).append(ok)
    for cat in sorted(per_cat, key=str):
        metrics[str(cat)] = sum(per_cat[cat]) / len(per_cat[cat])
    return metrics


def score(task: str, results_file: os.PathLike, data_root: Optional[os.PathLike] = None) -> Dict[str, Any]:
    """Score a results spreadsheet (this suite's or upstream's). Test splits have no answers: MMBench's server
    scores them, and the metrics say so."""
    dataset, relative, split, _ = TASKS[task]
    header, table = read_xlsx(results_file)
    if "prediction" not in header or "index" not in header:
        raise DataError(f"{results_file}: no 'index' / 'prediction' column; is it an MMBench results file?")
    rows = [dict(zip(header, r)) for r in table]
    if split == "test" or "answer" not in header:
        return {"submission": str(results_file),
                "note": "no answers in this split: upload the file to MMBench's evaluation server"}
    if data_root is not None and (Path(data_root) / relative).exists():
        _, source_rows = read_tsv(Path(data_root) / relative)
        cats = {int(r["index"]): r.get("category") for r in source_rows}
        for row in rows:
            row["category"] = cats.get(int(row["index"]))
    return circular_scores(rows)


def write_synthetic(data_root: os.PathLike, n: int = 4, kit=None, tasks: Sequence[str] = tuple(TASKS)) -> Path:
    """A tiny set in upstream's layout: ``data/mmbench/<file>.tsv`` for each task, ``n`` questions about the
    data kit's images (the shape's colour, four options); dev files hold every rotation of the options as
    MMBench's do (index + k * 1,000,000), test files have no ``answer`` column."""
    from internvl.data.synthetic import COLOURS, ZH, SyntheticImages

    kit = kit or SyntheticImages(image_size=64)
    colours = list(COLOURS)
    for task in tasks:
        dataset, relative, split, language = TASKS[task]
        path = Path(data_root) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        is_cc = "mmbench" not in dataset
        if is_cc:
            header = ["index", "question", "A", "B", "C", "D", "answer", "category", "image", "source",
                      "l2-category", "split"]
        else:
            header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
                      "l2-category", "comment", "split"]
        if split == "test":
            header.remove("answer")
        lines = []
        for i in range(n):
            s = kit.sample(i)
            buf = io.BytesIO()
            s.image.save(buf, format="PNG")
            b64 = base64.b64encode(buf.getvalue()).decode()
            qa = s.qa[0]
            question = qa.question_zh if language == "cn" else qa.question_en
            names = [ZH[c] for c in colours] if language == "cn" else colours
            right = names[colours.index(s.colour)]
            for k in range(4 if split == "dev" else 1):
                opts = names[k:] + names[:k]
                row = {"index": i + k * CIRCULAR_STRIDE, "question": question, "hint": "" if i % 2 else "Look at the shape.",
                       "answer": "ABCD"[opts.index(right)], "category": "attribute_recognition", "image": b64,
                       "source": "synthetic", "l2-category": "FP-S", "comment": "", "split": split}
                row.update(zip("ABCD", opts))
                lines.append([str(row[h]) for h in header])
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(header)
            w.writerows(lines)
    return Path(data_root) / "mmbench"
