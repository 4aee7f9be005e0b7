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

from internvl.errors import DataError

from .framework import Item, Task
from .items import Base64Image, option_post_process
from .xlsx import read_xlsx, write_xlsx

PROMPT = {"en": "Answer with the option's letter from the given choices directly.", "cn": "请直接回答选项字母。"}
OPTION_LETTERS = ["A", "B", "C", "D", "E"]
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




def circular_scores(rows: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    """MMBench's circular accuracy from rows with ``index``, ``prediction``, ``answer`` (and ``category``): the
    rotations of a question share ``index % 1,000,000``, and the question counts when every one is right."""
    groups: Dict[int, List[bool]] = {}
    category: Dict[int, Any] = {}
    correct_rows = 0
    for row in rows:
        prediction = "" if row.get("prediction") is None else str(row["prediction"])
        right = prediction.strip() == str(row["answer"]).strip()
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


class MMBench(Task):
    family = "mmbench"
    max_new_tokens, min_new_tokens = 100, 1
    headline = ("Overall",)
    instructions = "upstream's internvl_chat/eval/mmbench/README.md (MMBench / CCBench TSV downloads)"
    submission = "to MMBench's evaluation server (mmbench.opencompass.org.cn)"

    def __init__(self, name: str, upstream: str, file: str, split: str, language: str):
        self.name, self.upstream, self.file, self.split, self.language = name, upstream, Path(file), split, language

    @property
    def is_mmbench(self) -> bool:
        return "mmbench" in self.upstream

    def load(self, data_root: Path) -> list:
        path = self.need(data_root / self.file, "the TSV file")
        header, rows = read_tsv(path)
        # upstream's spreadsheet: these columns dropped, ``prediction`` inserted at column 6 (MMBench) / 8 (CCBench)
        drop, at = ({"hint", "category", "source", "image", "comment", "l2-category"}, 6) if self.is_mmbench \
            else ({"category", "image"}, 8)
        kept = [c for c in header if c not in drop]
        at = min(at, len(kept))
        columns = kept[:at] + ["prediction"] + kept[at:]
        items = []
        for key, row in enumerate(rows):
            where = f"{path}:{key + 2}"
            if row["image"] is None:
                raise DataError(f"{self.name}: {where}: empty image column")
            question, options = build_question(row, self.language)
            items.append(Item(key, [Base64Image(row["image"], where)], question,
                              {"options": options, "columns": columns,
                               "row": {c: row[c] for c in kept}}))
        return items

    def record(self, item: Item, answer: str, checkpoint: str) -> dict:
        row = dict(item.meta["row"], prediction=option_post_process(answer, item.meta["options"]))
        return {c: row[c] for c in item.meta["columns"]}

    def write_results(self, records: list, out_dir: Path, checkpoint: str, stamp: str) -> Path:
        columns = list(records[0]) if records else ["index", "prediction"]
        return write_xlsx(Path(out_dir) / f"{self.upstream}_{stamp}.xlsx", columns,
                          [[r.get(c) for c in columns] for r in records])

    def score(self, results: Path, data_root: Path) -> Optional[dict]:
        header, table = read_xlsx(results)
        if "prediction" not in header or "index" not in header:
            raise DataError(f"{self.name}: {results} has no 'index' / 'prediction' column; is it an MMBench "
                            "results spreadsheet?")
        if self.split == "test" or "answer" not in header:
            return None
        rows = [dict(zip(header, r)) for r in table]
        tsv = Path(data_root) / self.file
        if tsv.exists():
            _, source = read_tsv(tsv)
            categories = {int(r["index"]): r.get("category") for r in source}
            for row in rows:
                row["category"] = categories.get(int(row["index"]))
        return circular_scores(rows)

    def write_synthetic(self, data_root: Path, n: int = 4) -> None:
        """``n`` questions about the data kit's images (the shape's colour, four options) in upstream's TSV
        layout; dev files hold every rotation of the options (index + k * 1,000,000), test files no answer."""
        from internvl.data.synthetic import COLOURS, ZH

        from .framework import synthetic_samples

        colours = list(COLOURS)
        if self.is_mmbench:
            header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
                      "l2-category", "comment", "split"]
        else:
            header = ["index", "question", "A", "B", "C", "D", "answer", "category", "image", "source",
                      "l2-category", "split"]
        if self.split == "test":
            header.remove("answer")
        lines = []
        for i, s in enumerate(synthetic_samples(n)):
            buf = io.BytesIO()
            s.image.save(buf, format="PNG")
            qa = s.qa[0]
            question = qa.question_zh if self.language == "cn" else qa.question_en
            names = [ZH[c] for c in colours] if self.language == "cn" else colours
            right = names[colours.index(s.colour)]
            for k in range(4 if self.split == "dev" else 1):
                opts = names[k:] + names[:k]
                row = {"index": i + k * CIRCULAR_STRIDE, "question": question,
                       "hint": "" if i % 2 else "Look at the shape.", "answer": "ABCD"[opts.index(right)],
                       "category": "attribute_recognition" if i % 2 else "color_recognition",
                       "image": base64.b64encode(buf.getvalue()).decode(), "source": "synthetic",
                       "l2-category": "FP-S", "comment": "", "split": self.split, **dict(zip("ABCD", opts))}
                lines.append([str(row[h]) for h in header])
        path = data_root / self.file
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(header)
            w.writerows(lines)


TASKS = [
    MMBench("mmbench-dev-en", "mmbench_dev_20230712", "mmbench/mmbench_dev_20230712.tsv", "dev", "en"),
    MMBench("mmbench-dev-cn", "mmbench_dev_cn_20231003", "mmbench/mmbench_dev_cn_20231003.tsv", "dev", "cn"),
    MMBench("mmbench-test-en", "mmbench_test_en_20231003", "mmbench/mmbench_test_en_20231003.tsv", "test", "en"),
    MMBench("mmbench-test-cn", "mmbench_test_cn_20231003", "mmbench/mmbench_test_cn_20231003.tsv", "test", "cn"),
    MMBench("ccbench-dev", "ccbench_dev_cn", "mmbench/CCBench_legacy.tsv", "dev", "cn"),
]
GROUPS: dict = {}
