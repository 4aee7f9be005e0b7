"""MME, as upstream's ``eval/mme/eval.py`` and ``calculation.py``.

Data (``data/mme``): ``MME_Benchmark_release_version/<subtask>/`` with the images (directly there or in
``images/``), and the question lists upstream ships in ``internvl_chat/eval/mme/Your_Results/<subtask>.txt``
(``image<TAB>question<TAB>Yes|No``, two questions per image), read from ``data/mme/Your_Results/`` (copy them
there); without them the lists are rebuilt from the release's own ``<subtask>/questions_answers_YN/*.txt`` (or
``<subtask>/*.txt``) files, image by image in name order. The question is ``<question> Answer the question using
a single word or phrase.``, up to 20 new tokens, greedy; the answer goes through upstream's post-processing
(newlines dropped, 是/否/不是 to Yes/No, lowercased, true/false to yes/no, Chinese characters removed).

Results: ``<out-dir>/mme/<checkpoint folder name>/<subtask>.txt``, upstream's lines
``image<TAB>question<TAB>answer<TAB>response``. Scorer (``score mme <that folder>``): per subtask, a response
is "yes"/"no" if it is one, else by its first 4 characters ("yes" in them, else "no" in them, else "other",
counted wrong); ``acc`` over the questions and ``acc_plus`` over the images (both questions right), the subtask's
score ``100 * (acc + acc_plus)``; ``Perception`` and ``Cognition`` sum their subtasks' scores.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from internvl.errors import DataError

from .framework import Item, Task, save_image, synthetic_samples

PROMPT = "Answer the question using a single word or phrase."
EVAL_TYPES = {
    "Perception": ["existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                   "artwork", "OCR"],
    "Cognition": ["commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"],
}
SUBTASKS = [t for names in EVAL_TYPES.values() for t in names]


def post_process(response: str) -> str:
    """Upstream's ``post_processing`` of a response."""
    response = response.replace("\n", "").replace("不是", "No").replace("是", "Yes").replace("否", "No")
    response = response.lower().replace("true", "yes").replace("false", "no")
    return re.sub(r"[\u4e00-\u9fa5]", "", response)


def parse_answer(pred: str) -> str:
    if pred in ("yes", "no"):
        return pred
    prefix = pred[:4]
    return "yes" if "yes" in prefix else "no" if "no" in prefix else "other"


def subtask_metrics(lines: list, where: str) -> dict:
    """``acc``, ``acc_plus``, ``score`` of one subtask's result lines (as read, newlines kept), two per image.
    A line that does not split into 4 fields is skipped, as upstream's scorer does."""
    if len(lines) % 2:
        raise DataError(f"mme: {where} has {len(lines)} lines; each image has two questions")
    gts, preds, plus = [], [], 0
    for k in range(0, len(lines), 2):
        correct = 0
        for line in lines[k:k + 2]:
            fields = line.split("\t")
            if len(fields) != 4:
                continue
            gt, pred = fields[2].lower(), parse_answer(fields[3].lower())
            if gt not in ("yes", "no"):
                raise DataError(f"mme: {where}: the reference answer {fields[2]!r} is not Yes or No")
            gts.append(gt)
            preds.append(pred)
            correct += gt == pred
        plus += correct == 2
    acc = sum(g == p for g, p in zip(gts, preds)) / len(gts) if gts else 0.0
    acc_plus = plus / (len(lines) // 2) if lines else 0.0
    return {"acc": acc, "acc_plus": acc_plus, "score": acc * 100 + acc_plus * 100,
            "other_num": preds.count("other")}


def mme_scores(results_dir: Path) -> dict:
    metrics: dict = {"tasks": {}}
    for eval_type, names in EVAL_TYPES.items():
        total = 0.0
        for name in names:
            path = results_dir / f"{name}.txt"
            if not path.is_file():
                raise DataError(f"mme: {path} is missing; the results folder holds one .txt per subtask "
                                f"({', '.join(SUBTASKS)})")
            with open(path, encoding="utf-8") as f:
                metrics["tasks"][name] = subtask_metrics(f.readlines(), str(path))
            total += metrics["tasks"][name]["score"]
        metrics[eval_type] = total
    return metrics


class MME(Task):
    name = upstream = family = "mme"
    max_new_tokens, min_new_tokens = 20, None
    headline = ("Perception", "Cognition")
    instructions = "upstream's internvl_chat/eval/mme/README.md"
    release = Path("mme/MME_Benchmark_release_version")
    lists = Path("mme/Your_Results")

    def question_list(self, data_root: Path, subtask: str) -> list:
        """``[(image, question, answer)]`` of a subtask (see the module doc)."""
        listed = data_root / self.lists / f"{subtask}.txt"
        rows = []
        if listed.is_file():
            for number, line in enumerate(listed.read_text(encoding="utf-8").splitlines(), 1):
                fields = line.strip().split("\t")
                if len(fields) != 3:
                    raise DataError(f"mme: {listed}:{number} is not image<TAB>question<TAB>answer")
                rows.append(tuple(fields))
            return rows
        folder = self.need(data_root / self.release / subtask, "the subtask folder")
        qa_dir = folder / "questions_answers_YN" if (folder / "questions_answers_YN").is_dir() else folder
        for txt in sorted(qa_dir.glob("*.txt")):
            image = next((p.name for p in (folder / "images", folder) for ext in (".jpg", ".png")
                          for p in [p / (txt.stem + ext)] if p.is_file()), None)
            if image is None:
                raise DataError(f"mme: no image {txt.stem}.jpg/.png for {txt}")
            for number, line in enumerate(txt.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    fields = line.strip().split("\t")
                    if len(fields) != 2:
                        raise DataError(f"mme: {txt}:{number} is not question<TAB>answer")
                    rows.append((image, *fields))
        if not rows:
            raise DataError(f"mme: no question for {subtask}: neither {listed} nor question files in {qa_dir}")
        return rows

    def load(self, data_root: Path) -> list:
        items = []
        for subtask in SUBTASKS:
            for image, question, answer in self.question_list(data_root, subtask):
                folder = data_root / self.release / subtask
                path = folder / image if (folder / image).is_file() else folder / "images" / image
                self.need(path, "the image")
                items.append(Item(len(items), [str(path)], f"{question} {PROMPT}",
                                  {"subtask": subtask, "image": image, "answer": answer}))
        return items

    def record(self, item: Item, answer: str, checkpoint: str) -> dict:
        return {**item.meta, "question": item.question, "response": post_process(answer)}

    def write_results(self, records: list, out_dir: Path, checkpoint: str, stamp: str) -> Path:
        folder = Path(out_dir) / "mme" / os.path.basename(os.path.abspath(checkpoint))
        folder.mkdir(parents=True, exist_ok=True)
        for subtask in SUBTASKS:
            lines = [f"{r['image']}\t{r['question']}\t{r['answer']}\t{r['response']}\n" for r in records
                     if r["subtask"] == subtask]
            (folder / f"{subtask}.txt").write_text("".join(lines), encoding="utf-8")
        return folder

    def score(self, results: Path, data_root: Path) -> Optional[dict]:
        if not results.is_dir():
            raise DataError(f"mme: {results} is not a folder; mme's results are a folder of {len(SUBTASKS)} .txt "
                            "files (upstream's eval/mme/<checkpoint name>/)")
        return mme_scores(results)

    def write_synthetic(self, data_root: Path, n: int = 4) -> None:
        """One image per subtask (two for every ``n // 2`` beyond, at most ``n // 2``) with a yes and a no
        question about its colour; half the subtasks as listed files, half in the release's own layout."""
        per = max(1, n // 2)
        lists = data_root / self.lists
        lists.mkdir(parents=True, exist_ok=True)
        for t, subtask in enumerate(SUBTASKS):
            lines = []
            for sample in synthetic_samples(per, start=50 * t):
                image = f"{sample.index:04d}.jpg"
                other = "red" if sample.colour != "red" else "blue"
                qa = [(f"Is the shape {sample.colour}? Please answer yes or no.", "Yes"),
                      (f"Is the shape {other}? Please answer yes or no.", "No")]
                if t % 2:  # the release's layout: images/ and questions_answers_YN/
                    save_image(sample.image, data_root / self.release / subtask / "images" / image)
                    qa_file = data_root / self.release / subtask / "questions_answers_YN" / f"{sample.index:04d}.txt"
                    qa_file.parent.mkdir(parents=True, exist_ok=True)
                    qa_file.write_text("".join(f"{q}\t{a}\n" for q, a in qa), encoding="utf-8")
                else:
                    save_image(sample.image, data_root / self.release / subtask / image)
                    lines += [f"{image}\t{q}\t{a}\n" for q, a in qa]
            if lines:
                (lists / f"{subtask}.txt").write_text("".join(lines), encoding="utf-8")


TASKS = [MME()]
GROUPS: dict = {}
