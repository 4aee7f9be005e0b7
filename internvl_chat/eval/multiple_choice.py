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
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from internvl.errors import DataError
from .items import (Item, cwd_path, need_file, option_post_process, read_json, read_jsonl, require_keys,
                    time_prefix, write_jsonl)

TASKS = ("scienceqa", "seed", "mmvp")
MC_PROMPT = "Answer with the option's letter from the given choices directly."
MAX_NEW_TOKENS, MIN_NEW_TOKENS = 100, 1
SOURCES = {
    "scienceqa": "get scienceqa_test_img.jsonl, problems.json and the test images as upstream's "
                 "eval/scienceqa/README.md says",
    "seed": "get SEED-Bench-image.zip and seed.jsonl as upstream's eval/seed/README.md says "
            "(SEED-Bench.json, for the per-type scores, comes from SEED-Bench's release)",
    "mmvp": "clone the MMVP dataset (huggingface.co/datasets/MMVP/MMVP) into data/MMVP as upstream's "
            "eval/mmvp/README.md says",
}
FILES = {"scienceqa": "scienceqa/scienceqa_test_img.jsonl", "seed": "SEED/seed.jsonl", "mmvp": "MMVP/Questions.csv"}
DATASET = {"scienceqa": "sqa_test", "seed": "SEEDv1", "mmvp": "MMVP"}
LETTERS = ["A", "B", "C", "D", "E"]


# --------------------------------------------------------------------------------------------- ScienceQA
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


def _scienceqa_items(data_root) -> List[Item]:
    path = need_file(data_root, FILES["scienceqa"], "scienceqa", SOURCES["scienceqa"])
    items = []
    for i, data in enumerate(read_jsonl(path)):
        require_keys(data, ["image", "hint", "question", "choices", "answer"], f"{path}: record {i + 1}")
        hint = data["hint"] if data["hint"] else None
        question = data["question"]
        choices = data["choices"]
        if len(choices) > len(LETTERS) or not 0 <= int(data["answer"]) < len(choices):
            raise DataError(f"{path}: record {i + 1}: answer {data['answer']} is not one of its "
                            f"{len(choices)} choices (at most {len(LETTERS)})")
        options = {LETTERS[j]: c for j, c in enumerate(choices)}
        choice_txt = "\n".join(f"{LETTERS[j]}. {c}" for j, c in enumerate(choices))
        if hint is not None:
            question = hint + "\n" + question
        question += "\n" + choice_txt
        question += "\n" + MC_PROMPT
        items.append(Item(key=str(i), question=question.strip(), images=[cwd_path(data_root, data["image"])],
                          record={"image_path": data["image"], "gt_answers": LETTERS[int(data["answer"])],
                                  "options": options},
                          max_new_tokens=MAX_NEW_TOKENS, min_new_tokens=MIN_NEW_TOKENS))
    return items


# -------------------------------------------------------------------------------------------------- SEED
def _seed_items(data_root) -> List[Item]:
    path = need_file(data_root, FILES["seed"], "seed", SOURCES["seed"])
    items = []
    for i, data in enumerate(read_jsonl(path)):
        require_keys(data, ["image", "text", "question_id"], f"{path}: record {i + 1}")
        items.append(Item(key=str(data["question_id"]), question=data["text"],
                          images=[Path(data_root) / "SEED" / data["image"]],
                          record={"question_id": data["question_id"], "answer": data.get("answer")},
                          max_new_tokens=MAX_NEW_TOKENS, min_new_tokens=MIN_NEW_TOKENS))
    return items


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


# -------------------------------------------------------------------------------------------------- MMVP
def _mmvp_items(data_root) -> List[Item]:
    path = need_file(data_root, FILES["mmvp"], "mmvp", SOURCES["mmvp"])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    items = []
    for i, data in enumerate(rows):
        where = f"{path}:{i + 2}"
        require_keys(data, ["Question", "Options"], where)
        data_id = data["lndex"] if "lndex" in data else data.get("Index")
        if data_id is None:
            raise DataError(f"{where}: no 'lndex' or 'Index' column")
        options = data["Options"].split("(b)")
        if len(options) < 2:
            raise DataError(f"{where}: Options {data['Options']!r} has no '(b)' option")
        options[0] = options[0].replace("(a)", "").strip()
        options[1] = options[1].replace("(b)", "").strip()
        answer = data.get("Correct Answer")
        if answer is not None:
            answer = answer.replace("(a)", "A").replace("(b)", "B").replace("(c)", "C").replace("(d)", "D")
        new_options = {LETTERS[j]: c.strip() for j, c in enumerate(options)}
        choice_txt = "\n".join(f"{LETTERS[j]}. {c.strip()}" for j, c in enumerate(options))
        question = data["Question"]
        if len(choice_txt) > 0:
            question += "\n" + choice_txt
        question += "\n" + MC_PROMPT
        items.append(Item(key=str(data_id), question=question,
                          images=[Path(data_root) / "MMVP" / "MMVP Images" / f"{data_id}.jpg"],
                          record={"data_id": data_id, "gt_answers": answer, "options": new_options},
                          max_new_tokens=MAX_NEW_TOKENS, min_new_tokens=MIN_NEW_TOKENS))
    return items


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


# ------------------------------------------------------------------------------------------- the tasks
def load_items(task: str, data_root: os.PathLike) -> List[Item]:
    return {"scienceqa": _scienceqa_items, "seed": _seed_items, "mmvp": _mmvp_items}[task](data_root)


def finish(task: str, items: Sequence[Item], answers: Sequence[str], out_dir: os.PathLike,
           data_root: os.PathLike) -> Path:
    """Write upstream's results file for ``task`` and return its path."""
    rows = []
    for it, pred in zip(items, answers):
        r = it.record
        if task == "scienceqa":
            rows.append({"question": it.question, "answer": scienceqa_post_process(pred, r["options"]),
                         "answer_orig": pred, "gt_answers": r["gt_answers"], "image_path": r["image_path"]})
        elif task == "seed":
            rows.append({"question_id": r["question_id"], "question": it.question, "prediction": pred,
                         "answer": r["answer"]})
        else:
            post = pred if len(r["options"]) == 0 else option_post_process(pred, r["options"])
            rows.append({"question": it.question, "answer": post, "gt_answers": r["gt_answers"],
                         "data_id": r["data_id"]})
    return write_jsonl(rows, Path(out_dir) / f"{DATASET[task]}_{time_prefix()}.jsonl")


def score(task: str, results_file: os.PathLike, data_root: Optional[os.PathLike] = None) -> Dict[str, Any]:
    results = read_jsonl(results_file)
    for i, r in enumerate(results):
        keys = {"scienceqa": ["answer", "gt_answers"], "seed": ["question_id", "prediction", "answer"],
                "mmvp": ["answer", "gt_answers"]}[task]
        require_keys(r, keys, f"{results_file}:{i + 1}")
    if task == "scienceqa":
        if not results:
            raise DataError(f"{results_file}: no results")
        return {"Acc@1": sum(r["answer"] == r["gt_answers"] for r in results) / len(results)}
    if task == "seed":
        annotation = None
        if data_root is not None and (Path(data_root) / "SEED" / "SEED-Bench.json").exists():
            annotation = read_json(Path(data_root) / "SEED" / "SEED-Bench.json")
        return seed_scores(results, annotation)
    return {"accuracy": mmvp_accuracy(results)}


# ------------------------------------------------------------------------------------------ synthetic
def write_synthetic(data_root: os.PathLike, n: int = 4, kit=None, tasks: Sequence[str] = TASKS) -> Path:
    """Tiny sets in upstream's layouts (questions about the data kit's shapes): ScienceQA's JSONL with its
    images, SEED's seed.jsonl + SEED-Bench.json + images, MMVP's Questions.csv + ``MMVP Images`` (``n`` pairs)."""
    from internvl.data.synthetic import COLOURS, SHAPES, SyntheticImages, save_jpeg

    kit = kit or SyntheticImages(image_size=64)
    root = Path(data_root)
    colours, shapes = list(COLOURS), list(SHAPES)
    if "scienceqa" in tasks:
        rows = []
        for i in range(n):
            s = kit.sample(i)
            rel = f"data/scienceqa/images/test/{i}/image.png"
            (root / "scienceqa" / "images" / "test" / str(i)).mkdir(parents=True, exist_ok=True)
            s.image.save(root / "scienceqa" / "images" / "test" / str(i) / "image.png")
            choices = shapes[:3] if s.shape in shapes[:3] else shapes[1:]
            rows.append({"image": rel, "hint": "" if i % 2 else "The picture shows one shape.",
                         "question": "Which shape is in the picture?", "choices": choices,
                         "answer": choices.index(s.shape)})
        write_jsonl(rows, root / FILES["scienceqa"])
    if "seed" in tasks:
        rows, questions = [], []
        for i in range(n):
            s = kit.sample(i)
            save_jpeg(s.image, root / "SEED" / "SEED-Bench-image" / f"{i}.jpg")
            opts = colours
            text = ("What colour is the shape?\n" + "\n".join(f"{LETTERS[j]}. {c}" for j, c in enumerate(opts))
                    + "\n" + MC_PROMPT)
            answer = LETTERS[opts.index(s.colour)]
            rows.append({"image": f"SEED-Bench-image/{i}.jpg", "text": text, "question_id": str(100 + i),
                         "answer": answer})
            questions.append({"question_id": str(100 + i), "question_type_id": 1 + i % 2, "data_type": "image",
                              "answer": answer})
        write_jsonl(rows, root / FILES["seed"])
        with open(root / "SEED" / "SEED-Bench.json", "w") as f:
            import json
            json.dump({"questions": questions,
                       "question_type": {"Scene Understanding": 1, "Instance Identity": 2}}, f)
    if "mmvp" in tasks:
        (root / "MMVP" / "MMVP Images").mkdir(parents=True, exist_ok=True)
        with open(root / FILES["mmvp"], "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["lndex", "Question", "Options", "Correct Answer"])
            for i in range(2 * n):
                s = kit.sample(i)
                save_jpeg(s.image, root / "MMVP" / "MMVP Images" / f"{i + 1}.jpg")
                wrong = next(c for c in colours if c != s.colour)
                a, b = (s.colour, wrong) if i % 2 else (wrong, s.colour)
                w.writerow([i + 1, "Is the shape this colour?", f"(a) {a} (b) {b}",
                            "(a)" if a == s.colour else "(b)"])
    return root
