"""POPE (object hallucination), as upstream's ``eval/pope/evaluate_pope.py`` and ``eval_pope.py``.

Data (``data/pope``): ``llava_pope_test.jsonl`` (``question_id``, ``image``, ``text``, ``category``), the images
under ``val2014/``, and POPE's label files ``coco/coco_pope_<category>.json`` (JSON lines with ``label``).
The question is the file's ``text`` (it must hold LLaVA's "Answer the question using a single word or phrase.",
kept as it is), up to 100 new tokens. Results: ``<out-dir>/<last two parts of the checkpoint path joined by _>/
pope_<stamp>.json`` with upstream's keys. Scorer: per category, the answer's first sentence without commas is
"no" if a word is ``No``, ``no`` or ``not``, else "yes"; the answers of the category, in results-file order, are
paired with the label file's lines in its order (upstream's pairing, by position); accuracy, precision, recall,
F1 and the yes ratio per category and ``Overall F1`` (the mean F1, in percent).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from internvl.errors import DataError

from .framework import Item, Task, field_of, read_jsonl, read_results, save_image, synthetic_samples, write_json, \
    write_jsonl
from .items import model_dir_name

LLAVA_PROMPT = "Answer the question using a single word or phrase."
CATEGORIES = ("adversarial", "popular", "random")


def yes_or_no(text: str) -> str:
    """Upstream's reading of a POPE answer."""
    if text.find(".") != -1:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def pope_metrics(answers: list, labels: list) -> dict:
    """One category: the answers' texts and the label file's labels, paired by position (zip, as upstream)."""
    if not answers:
        raise DataError("no answer for this category")
    preds = [0 if yes_or_no(a) == "no" else 1 for a in answers]
    truth = [0 if label == "no" else 1 for label in labels]
    tp = sum(p == 1 and t == 1 for p, t in zip(preds, truth))
    fp = sum(p == 1 and t == 0 for p, t in zip(preds, truth))
    tn = sum(p == 0 and t == 0 for p, t in zip(preds, truth))
    fn = sum(p == 0 and t == 1 for p, t in zip(preds, truth))
    # upstream divides by zero when a category has no "yes" prediction (or no "yes" label); 0.0 here
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    total = tp + tn + fp + fn
    return {"TP": tp, "FP": fp, "TN": tn, "FN": fn, "Accuracy": (tp + tn) / total if total else 0.0,
            "Precision": precision, "Recall": recall, "F1 score": f1, "Yes ratio": preds.count(1) / len(preds)}


class Pope(Task):
    name = upstream = family = "pope"
    max_new_tokens, min_new_tokens = 100, 1
    headline = ("Overall F1",)
    instructions = "upstream's internvl_chat/eval/pope/README.md"
    questions_file, image_root, label_dir = Path("pope/llava_pope_test.jsonl"), Path("pope/val2014"), Path("pope/coco")

    def load(self, data_root: Path) -> list:
        path = self.need(data_root / self.questions_file, "the question file")
        items = []
        for key, row in enumerate(read_jsonl(path, self.name)):
            where = f"{path}:{key + 1}"
            text = field_of(row, "text", self.name, where)
            if LLAVA_PROMPT not in text:
                raise DataError(f"{self.name}: {where}: the question lacks {LLAVA_PROMPT!r}; is it upstream's "
                                "llava_pope_test.jsonl?")
            image = self.need(data_root / self.image_root / field_of(row, "image", self.name, where), "the image")
            # upstream replaces the LLaVA prompt by its own, the same sentence (without --cot), and strips
            items.append(Item(key, [str(image)], text.strip(),
                              {"question_id": field_of(row, "question_id", self.name, where)}))
        return items

    def record(self, item: Item, answer: str, checkpoint: str) -> dict:
        return {"question_id": item.meta["question_id"], "text": answer, "text_orig": answer,
                "model_id": checkpoint, "metadata": {}}

    def write_results(self, records: list, out_dir: Path, checkpoint: str, stamp: str) -> Path:
        path = Path(out_dir) / model_dir_name(checkpoint) / f"pope_{stamp}.json"
        write_json(path, records)
        return path

    def score(self, results: Path, data_root: Path) -> Optional[dict]:
        questions_path = self.need(data_root / self.questions_file, "the question file")
        label_dir = self.need(data_root / self.label_dir, "the label folder")
        category_of = {row["question_id"]: row.get("category") for row in read_jsonl(questions_path, self.name)}
        answers = read_results(results, self.name, ["question_id", "text"])
        metrics, f1s = {}, []
        for name in sorted(os.listdir(label_dir)):
            if not (name.startswith("coco_pope_") and name.endswith(".json")):
                raise DataError(f"{self.name}: {label_dir / name} is not a coco_pope_<category>.json label file; "
                                "the folder holds POPE's label files only (upstream asserts it)")
            category = name[len("coco_pope_"):-len(".json")]
            texts = []
            for answer in answers:
                if answer["question_id"] not in category_of:
                    raise DataError(f"{self.name}: question_id {answer['question_id']} of {results} is not in "
                                    f"{questions_path}")
                if category_of[answer["question_id"]] == category:
                    texts.append(answer["text"])
            labels = [row["label"] for row in read_jsonl(label_dir / name, self.name)]
            try:
                metrics[category] = pope_metrics(texts, labels)
            except DataError:
                raise DataError(f"{self.name}: {results} has no answer of category {category!r} "
                                f"({label_dir / name})") from None
            f1s.append(metrics[category]["F1 score"])
        if not f1s:
            raise DataError(f"{self.name}: no coco_pope_<category>.json in {label_dir}")
        metrics["Overall F1"] = sum(f1s) / len(f1s) * 100
        return metrics

    def write_synthetic(self, data_root: Path, n: int = 4) -> None:
        """Per category, ``max(1, n // 3)`` images with two questions each: the shape it shows (yes) and
        another (no); the label files list the category's questions in the question file's order."""
        per = max(1, n // 3)
        questions, labels = [], {c: [] for c in CATEGORIES}
        shapes = ("circle", "square", "triangle", "star", "cross")
        for c, category in enumerate(CATEGORIES):
            for sample in synthetic_samples(per, start=100 * c):
                image = f"COCO_val2014_{sample.index:012d}.jpg"
                save_image(sample.image, data_root / self.image_root / image)
                other = next(s for s in shapes if s != sample.shape)
                for obj, label in ((sample.shape, "yes"), (other, "no")):
                    text = f"Is there a {obj} in the image?"
                    qid = len(questions) + 1
                    questions.append({"question_id": qid, "image": image, "text": f"{text}\n{LLAVA_PROMPT}",
                                      "category": category})
                    labels[category].append({"question_id": qid, "image": image, "text": text, "label": label})
        write_jsonl(data_root / self.questions_file, questions)
        for category, rows in labels.items():
            write_jsonl(data_root / self.label_dir / f"coco_pope_{category}.json", rows)


TASKS = [Pope()]
GROUPS: dict = {}
