"""ScienceQA (image test set), SEED-Bench (image) and MMVP, as upstream's ``eval/scienceqa``, ``eval/seed`` and
``eval/mmvp`` scripts: the same files under ``data/``, prompts, post-processing, results files and scores.

- ``scienceqa``: ``data/scienceqa/scienceqa_test_img.jsonl``; prompt ``[hint\\n]question\\nA. ..\\nB. ..\\n`` +
  "Answer with the option's letter from the given choices directly." (stripped); 100 new tokens; upstream's
  ScienceQA post-processing (a letter, the first character when it is an option letter, an option's text, ``X.``
  and ``(X)``); ``sqa_test_<stamp>.jsonl``; ``Acc@1`` = answers equal to the right letter.
- ``seed``: ``data/SEED/seed.jsonl`` (prompt = its ``text``, which holds the options and the instruction) and the
  images under ``data/SEED/``; 100 new tokens; the raw answer is kept; ``SEEDv1_<stamp>.jsonl``. ``Acc@1`` is
  upstream's first print (the raw answer equal to the letter); ``calculation.py``'s per-type accuracies
  (the answer cut to its first character, types from ``data/SEED/SEED-Bench.json``) follow as
  ``Total accuracy``, ``Image accuracy`` (types 1-9), ``Video accuracy`` (10-12) and one entry per type, in %.
- ``mmvp``: ``data/MMVP/Questions.csv`` and ``data/MMVP/MMVP Images/<index>.jpg``; the ``(a) .. (b) ..`` options
  become ``A. ..\\nB. ..``; 100 new tokens; ``MMVP_<stamp>.jsonl``; ``accuracy`` counts a pair of consecutive
  questions (the two images of one MMVP pair) only when both are right.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from internvl.errors import DataError

from .framework import Item, Task, read_json, read_jsonl, resolve_image, save_image, synthetic_samples
from .items import (MC_PROMPT, model_dir_name, option_post_process, require_keys, with_options, write_json_file,
                    write_jsonl_file)

LETTERS = ["A", "B", "C", "D", "E"]


def scienceqa_post_process(pred: str, option: Dict[str, str]) -> str:
    """Upstream's ScienceQA post-processing, reachable branches included (``(X)`` with nothing after it is
    left as it is where upstream raises IndexError)."""
    pred = pred.strip()
    option_candidate = list(option.keys())
    if len(pred) == 1:
        return pred
    elif len(pred) > 1 and pred[0] in option_candidate:
        return pred[0]
    elif len(pred) > 1 and pred[0] not in option_candidate:
        for k, v in option.items():
            if v in pred:
                return k
    if len(pred) > 1 and pred[1] == ".":
        pred = pred[0]
    if len(pred) > 2 and pred[0] == "(" and pred[2] == ")":
        pred = pred[1]
    return pred


def seed_scores(results: Sequence[dict], annotation: Optional[dict]) -> Dict[str, Any]:
    """``Acc@1`` (raw answer == letter) and, with SEED-Bench.json, ``calculation.py``'s accuracies."""
    if not results:
        raise DataError("no results to score")
    metrics: Dict[str, Any] = {"Acc@1": sum(r["prediction"] == r["answer"] for r in results) / len(results)}
    if annotation is None:
        return metrics
    questions = annotation["questions"] if "questions" in annotation else annotation
    type_names = {v: k for k, v in annotation.get("question_type", {}).items()}
    by_id = {str(q["question_id"]): q for q in questions}
    counts: Dict[int, List[int]] = {}
    for item in results:
        qid = str(item["question_id"])
        if qid not in by_id:
            raise DataError(f"question_id {qid} of the results is not in SEED-Bench.json")
        pred, gt = item["prediction"], by_id[qid]["answer"]
        if len(pred) != 1:
            pred = pred[:1]  # upstream: pred[0] (IndexError on an empty answer)
        counts.setdefault(by_id[qid]["question_type_id"], []).append(int(pred == gt))
    total = sum(len(v) for v in counts.values())
    right = sum(sum(v) for v in counts.values())
    image = [x for t, v in counts.items() if 1 <= t <= 9 for x in v]
    video = [x for t, v in counts.items() if not 1 <= t <= 9 for x in v]
    metrics["Total accuracy"] = right / total * 100
    if image:
        metrics["Image accuracy"] = sum(image) / len(image) * 100
    if video:
        metrics["Video accuracy"] = sum(video) / len(video) * 100
    for t in sorted(counts):
        metrics[type_names.get(t, str(t))] = sum(counts[t]) / len(counts[t]) * 100
    return metrics


def mmvp_accuracy(results: Sequence[dict]) -> float:
    """Upstream's pair accuracy over the results in file order (a trailing odd question is not counted)."""
    num_correct = num_total = index = round_correct = 0
    for item in results:
        index += 1
        if item["answer"] == item["gt_answers"]:
            round_correct += 1
        if index == 2:
            index = 0
            if round_correct == 2:
                num_correct += 1
            round_correct = 0
            num_total += 1
    if num_total == 0:
        raise DataError("MMVP scores pairs of questions; the results hold fewer than two")
    return num_correct / num_total


class _ChoiceTask(Task):
    family = "multiple-choice"
    max_new_tokens, min_new_tokens = 100, 1
    batchable = True

    def write_results(self, records: list, out_dir: Path, checkpoint: str, stamp: str) -> Path:
        return write_jsonl_file(Path(out_dir) / f"{self.upstream}_{stamp}.jsonl", records)


class ScienceQA(_ChoiceTask):
    name, upstream = "scienceqa", "sqa_test"
    headline = ("Acc@1",)
    instructions = "upstream's internvl_chat/eval/scienceqa/README.md"
    file = Path("scienceqa/scienceqa_test_img.jsonl")

    def load(self, data_root: Path) -> list:
        path = self.need(data_root / self.file, "the question file")
        items = []
        for key, data in enumerate(read_jsonl(path, self.name)):
            where = f"{path}:{key + 1}"
            require_keys(data, ["image", "hint", "question", "choices", "answer"], self.name, where)
            hint = data["hint"] if data["hint"] else None
            question, choices = data["question"], data["choices"]
            if len(choices) > len(LETTERS) or not 0 <= int(data["answer"]) < len(choices):
                raise DataError(f"{self.name}: {where}: answer {data['answer']} is not one of its {len(choices)} "
                                f"choices (at most {len(LETTERS)})")
            if hint is not None:
                question = hint + "\n" + question
            question, options = with_options(question, choices, strip=False)
            question += "\n" + MC_PROMPT
            image = self.need(resolve_image(data["image"], data_root), "the image")
            items.append(Item(key, [str(image)], question.strip(),
                              {"image_path": data["image"], "gt_answers": LETTERS[int(data["answer"])],
                               "options": options}))
        return items

    def record(self, item: Item, answer: str, checkpoint: str) -> dict:
        return {"question": item.question, "answer": scienceqa_post_process(answer, item.meta["options"]),
                "answer_orig": answer, "gt_answers": item.meta["gt_answers"], "image_path": item.meta["image_path"]}

    def write_results(self, records: list, out_dir: Path, checkpoint: str, stamp: str) -> Path:
        # upstream: results/<last two parts of the checkpoint path>/sqa_test_<stamp>.jsonl
        return write_jsonl_file(Path(out_dir) / model_dir_name(checkpoint) / f"{self.upstream}_{stamp}.jsonl",
                                records)

    def score(self, results: Path, data_root: Path) -> Optional[dict]:
        rows = read_jsonl(results, self.name)
        for i, r in enumerate(rows):
            require_keys(r, ["answer", "gt_answers"], self.name, f"{results}:{i + 1}")
        if not rows:
            raise DataError(f"{self.name}: {results} holds no answers")
        return {"Acc@1": sum(r["answer"] == r["gt_answers"] for r in rows) / len(rows)}

    def write_synthetic(self, data_root: Path, n: int = 4) -> None:
        from internvl.data.synthetic import SHAPES

        shapes, rows = list(SHAPES), []
        for i, s in enumerate(synthetic_samples(n)):
            save_image(s.image, data_root / "scienceqa" / "images" / "test" / str(i) / "image.png")
            choices = shapes[:3] if s.shape in shapes[:3] else shapes[1:]
            rows.append({"image": f"data/scienceqa/images/test/{i}/image.png",
                         "hint": "" if i % 2 else "The picture shows one shape.",
                         "question": "Which shape is in the picture?", "choices": choices,
                         "answer": choices.index(s.shape)})
        write_jsonl_file(data_root / self.file, rows)


class Seed(_ChoiceTask):
    name, upstream = "seed", "SEEDv1"
    headline = ("Image accuracy",)
    instructions = ("upstream's internvl_chat/eval/seed/README.md (SEED-Bench.json, for the per-type scores, comes "
                    "from SEED-Bench's release)")
    file = Path("SEED/seed.jsonl")
    annotation = Path("SEED/SEED-Bench.json")

    def load(self, data_root: Path) -> list:
        path = self.need(data_root / self.file, "the question file")
        items = []
        for key, data in enumerate(read_jsonl(path, self.name)):
            require_keys(data, ["image", "text", "question_id"], self.name, f"{path}:{key + 1}")
            image = self.need(data_root / "SEED" / data["image"], "the image")
            items.append(Item(key, [str(image)], data["text"],
                              {"question_id": data["question_id"], "answer": data.get("answer")}))
        return items

    def record(self, item: Item, answer: str, checkpoint: str) -> dict:
        return {"question_id": item.meta["question_id"], "question": item.question, "prediction": answer,
                "answer": item.meta["answer"]}

    def score(self, results: Path, data_root: Path) -> Optional[dict]:
        rows = read_jsonl(results, self.name)
        for i, r in enumerate(rows):
            require_keys(r, ["question_id", "prediction", "answer"], self.name, f"{results}:{i + 1}")
        annotation = read_json(data_root / self.annotation, self.name) \
            if (data_root / self.annotation).exists() else None
        return seed_scores(rows, annotation)

    def write_synthetic(self, data_root: Path, n: int = 4) -> None:
        from internvl.data.synthetic import COLOURS

        colours, rows, questions = list(COLOURS), [], []
        for i, s in enumerate(synthetic_samples(n)):
            save_image(s.image, data_root / "SEED" / "SEED-Bench-image" / f"{i}.jpg")
            text = ("What colour is the shape?\n" + "\n".join(f"{LETTERS[j]}. {c}" for j, c in enumerate(colours))
                    + "\n" + MC_PROMPT)
            answer = LETTERS[colours.index(s.colour)]
            rows.append({"image": f"SEED-Bench-image/{i}.jpg", "text": text, "question_id": str(100 + i),
                         "answer": answer})
            questions.append({"question_id": str(100 + i), "question_type_id": 1 + i % 2, "data_type": "image",
                              "answer": answer})
        write_jsonl_file(data_root / self.file, rows)
        write_json_file(data_root / self.annotation, {"questions": questions, "question_type": {
            "Scene Understanding": 1, "Instance Identity": 2}})


class MMVP(_ChoiceTask):
    name, upstream = "mmvp", "MMVP"
    headline = ("accuracy",)
    instructions = "upstream's internvl_chat/eval/mmvp/README.md (git clone of huggingface.co/datasets/MMVP/MMVP)"
    file = Path("MMVP/Questions.csv")

    def load(self, data_root: Path) -> list:
        path = self.need(data_root / self.file, "the question file")
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        items = []
        for key, data in enumerate(rows):
            where = f"{path}:{key + 2}"
            require_keys(data, ["Question", "Options"], self.name, where)
            data_id = data["lndex"] if "lndex" in data else data.get("Index")
            if data_id is None:
                raise DataError(f"{self.name}: {where}: no 'lndex' or 'Index' column")
            options = data["Options"].split("(b)")
            if len(options) < 2:
                raise DataError(f"{self.name}: {where}: Options {data['Options']!r} has no '(b)' option")
            options[0] = options[0].replace("(a)", "").strip()
            options[1] = options[1].replace("(b)", "").strip()
            answer = data.get("Correct Answer")
            if answer is not None:
                answer = answer.replace("(a)", "A").replace("(b)", "B").replace("(c)", "C").replace("(d)", "D")
            question, new_options = with_options(data["Question"], options)
            question += "\n" + MC_PROMPT
            image = self.need(data_root / "MMVP" / "MMVP Images" / f"{data_id}.jpg", "the image")
            items.append(Item(key, [str(image)], question,
                              {"data_id": data_id, "gt_answers": answer, "options": new_options}))
        return items

    def record(self, item: Item, answer: str, checkpoint: str) -> dict:
        options = item.meta["options"]
        post = answer if len(options) == 0 else option_post_process(answer, options)
        return {"question": item.question, "answer": post,
                "gt_answers": item.meta["gt_answers"], "data_id": item.meta["data_id"]}

    def score(self, results: Path, data_root: Path) -> Optional[dict]:
        rows = read_jsonl(results, self.name)
        for i, r in enumerate(rows):
            require_keys(r, ["answer", "gt_answers"], self.name, f"{results}:{i + 1}")
        return {"accuracy": mmvp_accuracy(rows)}

    def write_synthetic(self, data_root: Path, n: int = 4) -> None:
        """``n`` questions (rounded up to pairs): is the shape colour (a) or (b), the right one alternating."""
        from internvl.data.synthetic import COLOURS

        colours = list(COLOURS)
        (data_root / "MMVP" / "MMVP Images").mkdir(parents=True, exist_ok=True)
        with open(data_root / self.file, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["lndex", "Question", "Options", "Correct Answer"])
            for i, s in enumerate(synthetic_samples(n + n % 2)):
                save_image(s.image, data_root / "MMVP" / "MMVP Images" / f"{i + 1}.jpg")
                wrong = next(c for c in colours if c != s.colour)
                a, b = (s.colour, wrong) if i % 2 else (wrong, s.colour)
                w.writerow([i + 1, "What colour is the shape?", f"(a) {a} (b) {b}", "(a)" if a == s.colour else "(b)"])


TASKS = [ScienceQA(), Seed(), MMVP()]
GROUPS: dict = {}
