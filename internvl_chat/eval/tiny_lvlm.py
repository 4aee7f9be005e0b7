"""Tiny-LVLM-eHub, as upstream's ``eval/tiny_lvlm`` (evaluate_lvlm.py, calculate_score.py, tools.py).

Data: ``data/tiny_lvlm/updated_datasets/<ability>/dataset.json`` (a list of ``{image_path, question,
gt_answers}``, images beside it) for the five abilities. Prompt: ``question + " Answer the question using a single
word or phrase."``; 30 new tokens. Results: ``updated_datasets_<stamp>.json``, a list of ``{question, answer,
gt_answers, image_path, task_type}``.
Score: Tiny-LVLM's ``VQAEval``: the answer and each ground truth are normalized (punctuation, number words,
articles, contractions: EvalAI's VQA normalization with its own comma test), and an answer is right when a normalized ground
truth occurs in it as whole words. Each ability's accuracy is reported, and ``Overall`` is their **sum** (0 to 5),
as upstream prints and the InternVL papers report it. Upstream quirks kept because they change numbers: its
period-stripping regex ``(?!<=\\d)(\\.)(?!\\d)`` (a look-ahead where a look-behind was meant) removes every
period not followed by a digit, and only the first 32 (``re.UNICODE`` is passed as the ``count`` argument).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from internvl.errors import DataError

from .framework import Item, Task, read_json, save_image, synthetic_samples
from .items import require_keys, write_json_file
from .vqa import EvalAIAnswerProcessor

PROMPT = "Answer the question using a single word or phrase."
ABILITIES = ["Visual_Reasoning", "Visual_Perception", "Visual_Knowledge_Acquisition", "Visual_Commonsense",
             "Object_Hallucination"]


class TinyLVLMNormalizer(EvalAIAnswerProcessor):
    """Tiny-LVLM's ``VQAEval`` normalization: EvalAI's tables and punctuation rule, quirks included, with its own
    comma test (one comma between digits, where EvalAI's allows several)."""

    COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")


_NORMALIZER = TinyLVLMNormalizer()


def normalize(text: str) -> str:
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _NORMALIZER.digits_and_articles(_NORMALIZER.punctuation(text))


def has_word(sentence: str, word: str) -> bool:
    return re.search(r"\b" + re.escape(word) + r"\b", sentence) is not None


def vqa_eval(answer: str, gt_answers) -> int:
    """1 when a normalized ground truth occurs in the normalized answer as whole words (upstream's
    ``VQAEval.evaluate``), else 0."""
    answer = normalize(answer)
    gts = gt_answers if isinstance(gt_answers, list) else [gt_answers]
    return int(any(has_word(answer, normalize(gt)) for gt in gts))


class TinyLVLM(Task):
    name, upstream, family = "tiny_lvlm", "updated_datasets", "tiny_lvlm"
    max_new_tokens, min_new_tokens = 30, 1
    headline = ("Overall",)
    instructions = "upstream's internvl_chat/eval/tiny_lvlm/README.md (updated_datasets.zip)"
    root = Path("tiny_lvlm/updated_datasets")

    def load(self, data_root: Path) -> list:
        root = self.need(data_root / self.root, "the dataset folder")
        dirs = [d for d in sorted(root.iterdir()) if (d / "dataset.json").exists()]
        if not dirs:
            self.need(root / "<ability>" / "dataset.json", "an ability's question file")
        items = []
        for d in dirs:
            for i, row in enumerate(read_json(d / "dataset.json", self.name)):
                require_keys(row, ["image_path", "question", "gt_answers"], self.name, f"{d / 'dataset.json'} item {i}")
                image_path = os.path.join(str(d), row["image_path"])
                self.need(Path(image_path), "the image")
                items.append(Item(len(items), [image_path], row["question"] + " " + PROMPT,
                                  {"gt_answers": row["gt_answers"], "image_path": image_path}))
        return items

    def record(self, item: Item, answer: str, checkpoint: str) -> dict:
        return {"question": item.question, "answer": answer, "gt_answers": item.meta["gt_answers"],
                "image_path": item.meta["image_path"], "task_type": item.meta["image_path"].split("/")[-2]}

    def write_results(self, records: list, out_dir: Path, checkpoint: str, stamp: str) -> Path:
        return write_json_file(Path(out_dir) / f"{self.upstream}_{stamp}.json", records)

    def score(self, results: Path, data_root: Path) -> Optional[dict]:
        groups: Dict[str, List[dict]] = {}
        for i, item in enumerate(read_json(results, self.name)):
            require_keys(item, ["image_path", "answer", "gt_answers"], self.name, f"{results} item {i}")
            task_type = item["image_path"].split("/")[-2]
            if task_type not in ABILITIES:
                raise DataError(f"{self.name}: {results} item {i}: image_path {item['image_path']!r} is not in one "
                                f"of the ability folders {ABILITIES}")
            groups.setdefault(task_type, []).append(item)
        if not groups:
            raise DataError(f"{self.name}: {results} holds no answers")
        metrics: Dict[str, Any] = {}
        for k, v in groups.items():
            metrics[k] = sum(vqa_eval(x["answer"], x["gt_answers"]) for x in v) / len(v)
        metrics["Overall"] = sum(metrics[k] for k in groups)
        return metrics

    def write_synthetic(self, data_root: Path, n: int = 4) -> None:
        """``max(1, n // 5)`` questions per ability about the data kit's images (colour, shape, ...)."""
        per = max(1, n // len(ABILITIES))
        for a, ability in enumerate(ABILITIES):
            rows = []
            for i, s in enumerate(synthetic_samples(per, start=a * per)):
                qa = s.qa[(a + i) % len(s.qa)]
                save_image(s.image, data_root / self.root / ability / f"{i}.jpg")
                rows.append({"image_path": f"{i}.jpg", "question": qa.question_en, "gt_answers": qa.answer_en})
            write_json_file(data_root / self.root / ability / "dataset.json", rows)


TASKS = [TinyLVLM()]
GROUPS: dict = {}
