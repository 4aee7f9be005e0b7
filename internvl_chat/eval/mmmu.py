"""MMMU (dev / validation / test), as upstream's ``eval/mmmu`` (evaluate_mmmu.py, data_utils.py, eval_utils.py,
main_eval_only.py), and the ``-cot`` variants.

Data: the MMMU dataset repository's parquet files, ``data/MMMU/MMMU/<Subject>/<split>-*.parquet`` for the 30
subjects (``huggingface-cli download MMMU/MMMU --repo-type dataset --local-dir data/MMMU/MMMU``; upstream reads
the same files through ``datasets.load_dataset('MMMU/MMMU', subject, cache_dir='data/MMMU/')``). Reading them
needs ``pyarrow``.
Prompt: the question, ``\\nA. ..`` per option, then "Answer with the option's letter from the given choices
directly." (multiple choice) or "Answer the question using a single word or phrase." (open); 10 new tokens.
Images: with ``--dynamic`` the first image at twice its size tiled up to ``--max-num``, the other images one tile
each, all behind the one ``<image>``; without it the first image only.
Results: ``<dataset>_<stamp>.json`` (``{id: answer}``, the submission file for test) and
``<dataset>_<stamp>.jsonl`` (question, answer, gt_answers, data_id per line).
Score: ``main_eval_only.py``: a multiple-choice answer (after upstream's post-processing) must equal the letter;
an open answer goes through ``parse_open_response`` and ``eval_open``; accuracy per subject, per domain
(``Overall-<domain>``) and ``Overall``, rounded to 3 places. Answers come from upstream's
``answer_dict_val.json`` when it is at ``data/MMMU/answer_dict_val.json``, else from the parquet files.

``mmmu-*-cot``: upstream's evaluate.sh runs ``eval/mmmu/evaluate_mmmu_cot.py``, which its repository does not
contain; these tasks follow the ``--cot`` of upstream's ScienceQA and MathVista scripts instead: the prompt inside
their chain-of-thought instruction, 4096 new tokens, the text after "Final answer:" / "Answer:" taken, and for
multiple choice MMMU's ``parse_multi_choice_response`` on it.
"""
from __future__ import annotations

import ast
import random
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from internvl.errors import DataError, MissingDependencyError

from .framework import Item, Task, read_json, read_jsonl
from .items import BytesImage, option_post_process, with_options, write_json_file, write_jsonl_file

ROOT = Path("MMMU/MMMU")
PROMPT = {"multiple-choice": "Answer with the option's letter from the given choices directly.",
          "open": "Answer the question using a single word or phrase."}
COT_INSTRUCTION = ("Your task is to answer the question below. "
                   "Give step by step reasoning before you answer, and when you're ready to answer, "
                   "please use the format \"Final answer: ..\""
                   "\n\n"
                   "Question:"
                   "\n\n"
                   "{question}")

DOMAIN_CAT2SUB_CAT = {
    "Art and Design": ["Art", "Art_Theory", "Design", "Music"],
    "Business": ["Accounting", "Economics", "Finance", "Manage", "Marketing"],
    "Science": ["Biology", "Chemistry", "Geography", "Math", "Physics"],
    "Health and Medicine": ["Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine",
                            "Pharmacy", "Public_Health"],
    "Humanities and Social Science": ["History", "Literature", "Sociology", "Psychology"],
    "Tech and Engineering": ["Agriculture", "Architecture_and_Engineering", "Computer_Science", "Electronics",
                             "Energy_and_Power", "Materials", "Mechanical_Engineering"],
}
# upstream's CAT_SHORT2LONG order, which is the order the subjects are read and scored in
SUBJECTS = ["Accounting", "Agriculture", "Architecture_and_Engineering", "Art", "Art_Theory",
            "Basic_Medical_Science", "Biology", "Chemistry", "Clinical_Medicine", "Computer_Science", "Design",
            "Diagnostics_and_Laboratory_Medicine", "Economics", "Electronics", "Energy_and_Power", "Finance",
            "Geography", "History", "Literature", "Manage", "Marketing", "Materials", "Math",
            "Mechanical_Engineering", "Music", "Pharmacy", "Physics", "Psychology", "Public_Health", "Sociology"]


# ------------------------------------------------------------------------------------ answer parsing
def parse_multi_choice_response(response: str, all_choices: Sequence[str], index2ans: Dict[str, str],
                                rng: Optional[random.Random] = None) -> str:
    """MMMU's multiple-choice parser: ``(A)`` forms first, then `` A `` forms, then (for answers of more than
    five words) an option's text; several candidates -> the one that occurs last; none -> a random choice
    (``rng``, by default seeded 42 as MMMU's module seeds ``random``)."""
    for char in [",", ".", "!", "?", ";", ":", "'"]:
        response = response.strip(char)
    response = " " + response + " "
    index_ans = True
    ans_with_brack = False
    candidates = []
    for choice in all_choices:
        if f"({choice})" in response:
            candidates.append(choice)
            ans_with_brack = True
    if len(candidates) == 0:
        for choice in all_choices:
            if f" {choice} " in response:
                candidates.append(choice)
    if len(candidates) == 0 and len(response.split()) > 5:
        for index, ans in index2ans.items():
            if ans.lower() in response.lower():
                candidates.append(index)
                index_ans = False
    if len(candidates) == 0:
        return (rng or random.Random(42)).choice(list(all_choices))
    if len(candidates) > 1:
        start_indexes = []
        if index_ans:
            if ans_with_brack:
                start_indexes = [response.rfind(f"({can})") for can in candidates]
            else:
                start_indexes = [response.rfind(f" {can} ") for can in candidates]
        else:
            start_indexes = [response.lower().rfind(index2ans[can].lower()) for can in candidates]
        return candidates[int(np.argmax(start_indexes))]
    return candidates[0]


def check_is_number(string: str) -> bool:
    try:
        float(string.replace(",", ""))
        return True
    except ValueError:
        return False


def normalize_str(string: str) -> list:
    """A number -> ``[float rounded to 2 places]``; text -> ``[lowercased]`` (one character padded with a
    space on either side, so that it does not match inside words)."""
    string = string.strip()
    if check_is_number(string):
        return [round(float(string.replace(",", "")), 2)]
    string = string.lower()
    if len(string) == 1:
        return [" " + string, string + " "]
    return [string]


def extract_numbers(string: str) -> List[str]:
    pattern_commas = r"-?\b\d{1,3}(?:,\d{3})+\b"
    pattern_scientific = r"-?\d+(?:\.\d+)?[eE][+-]?\d+"
    pattern_simple = r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])"
    return re.findall(pattern_commas, string) + re.findall(pattern_scientific, string) + \
        re.findall(pattern_simple, string)


def parse_open_response(response: str) -> list:
    """MMMU's open-answer parser: the shortest tail after a key phrase ("so", "is", "therefore", "answer",
    ``=`` in the last sentence, ...) of each sentence, plus every number in them, normalized."""
    def get_key_subresponses(response):
        response = response.strip().strip(".").lower()
        sub_responses = re.split(r"\.\s(?=[A-Z])|\n", response)
        indicators_of_keys = ["could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result "]
        key_responses = []
        for index, resp in enumerate(sub_responses):
            if index == len(sub_responses) - 1:
                indicators_of_keys.extend(["="])
            shortest_key_response = None
            for indicator in indicators_of_keys:
                if indicator in resp:
                    if not shortest_key_response:
                        shortest_key_response = resp.split(indicator)[-1].strip()
                    elif len(resp.split(indicator)[-1].strip()) < len(shortest_key_response):
                        shortest_key_response = resp.split(indicator)[-1].strip()
            if shortest_key_response:
                if shortest_key_response.strip() not in [":", ",", ".", "!", "?", ";", ":", "'"]:
                    key_responses.append(shortest_key_response)
        if len(key_responses) == 0:
            return [response]
        return key_responses

    key_responses = get_key_subresponses(response)
    pred_list = key_responses.copy()
    for resp in key_responses:
        pred_list.extend(extract_numbers(resp))
    tmp_pred_list = []
    for p in pred_list:
        tmp_pred_list.extend(normalize_str(p))
    return list(set(tmp_pred_list))


def eval_multi_choice(gold_i, pred_i) -> bool:
    if isinstance(gold_i, list):
        return any(answer == pred_i for answer in gold_i)
    return gold_i == pred_i


def eval_open(gold_i, pred_i) -> bool:
    if isinstance(gold_i, list):
        norm_answers = []
        for answer in gold_i:
            norm_answers.extend(normalize_str(answer))
    else:
        norm_answers = normalize_str(gold_i)
    for pred in pred_i:
        if isinstance(pred, str):
            for norm_ans in norm_answers:
                if isinstance(norm_ans, str) and norm_ans in pred:
                    return True
        elif pred in norm_answers:
            return True
    return False


def mmmu_scores(outputs: Dict[str, str], answers: Dict[str, dict]) -> Dict[str, float]:
    """``main_eval_only.py``: ``outputs`` maps ids to answers, ``answers`` ids to ``{question_type,
    ground_truth}``. Accuracies rounded to 3 places, by subject, domain and overall."""
    by_cat: Dict[str, Dict[str, str]] = {}
    for data_id, pred in outputs.items():
        by_cat.setdefault("_".join(data_id.split("_")[1:-1]), {})[data_id] = pred
    results: Dict[str, Dict[str, float]] = {}
    for category in SUBJECTS:
        if category not in by_cat:
            continue
        n = correct = 0
        for data_id, pred in by_cat[category].items():
            if data_id not in answers:
                raise DataError(f"{data_id}: no answer for this id in the answer file")
            qtype = answers[data_id]["question_type"]
            gold = answers[data_id]["ground_truth"]
            if qtype != "multiple-choice":
                ok = eval_open(gold, parse_open_response(pred))
            else:
                ok = eval_multi_choice(gold, pred)
            correct += ok
            n += 1
        results[category] = {"acc": correct / n, "num_example": n}
    if not results:
        raise DataError("no result id names an MMMU subject (ids look like validation_Art_Theory_12)")

    def ins_acc(rs):
        num = sum(r["num_example"] for r in rs.values())
        return sum(r["acc"] * r["num_example"] for r in rs.values()) / num if num else 0

    metrics: Dict[str, float] = {}
    for domain, cats in DOMAIN_CAT2SUB_CAT.items():
        in_domain = {c: results[c] for c in cats if c in results}
        metrics["Overall-" + domain] = round(ins_acc(in_domain), 3)
        for c, r in in_domain.items():
            metrics[c] = round(r["acc"], 3)
    metrics["Overall"] = round(ins_acc(results), 3)
    return metrics


# ---------------------------------------------------------------------------------------------- data
def pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError("MMMU's data files are parquet: pip install pyarrow") from None
    return pq


class MMMUPixels:
    """Upstream's MMMU input: with ``--dynamic`` the first image (``image_1``) at twice its size tiled up to
    ``max_num`` and every other image as one tile, all behind the one ``<image>``; without it ``image_1``."""

    def __init__(self, images: list, where: str):
        self.images, self.where = images, where  # 7 entries: BytesImage or None

    def __call__(self, image_size: int, dynamic: bool, max_num: int, use_thumbnail: bool):
        import torch
        from PIL import Image

        from internvl.data.chat_image import load_image

        if dynamic:
            tiles = []
            for idx, source in enumerate(self.images):
                if source is None:
                    continue
                image = source()
                if idx == 0:
                    image = image.resize((image.width * 2, image.height * 2), Image.BILINEAR)
                    tiles.append(load_image(image, input_size=image_size, max_num=max_num, use_thumbnail=use_thumbnail))
                else:
                    tiles.append(load_image(image, input_size=image_size, max_num=1, use_thumbnail=use_thumbnail))
            if not tiles:
                raise DataError(f"{self.where}: no image")
            pixel_values = torch.cat(tiles)
        else:
            if self.images[0] is None:
                raise DataError(f"{self.where}: no image_1")
            pixel_values = load_image(self.images[0](), input_size=image_size, max_num=1, use_thumbnail=use_thumbnail)
        return pixel_values, [len(pixel_values)]


def _gold(answer):
    if isinstance(answer, str) and answer.startswith("["):
        try:
            return list(ast.literal_eval(answer))
        except (ValueError, SyntaxError):
            return answer
    return answer


class MMMU(Task):
    family = "mmmu"
    min_new_tokens = 1
    headline = ("Overall",)
    batchable = False
    instructions = ("upstream's internvl_chat/eval/mmmu/README.md; this suite reads the dataset repository's "
                    "parquet files: huggingface-cli download MMMU/MMMU --repo-type dataset --local-dir data/MMMU/MMMU")
    submission = "to MMMU's evaluation server (the test answers are not public)"

    def __init__(self, split_name: str, upstream: str, split: str, cot: bool):
        self.name = f"mmmu-{split_name}" + ("-cot" if cot else "")
        self.upstream, self.split, self.cot = upstream, split, cot
        self.max_new_tokens = 4096 if cot else 10

    def read_split(self, data_root: Path) -> list:
        """Every record of the split over the 30 subjects, in upstream's subject order."""
        root = self.need(data_root / ROOT, "the MMMU dataset folder")
        pq = pyarrow_parquet()
        records = []
        for subject in SUBJECTS:
            for f in sorted((root / subject).glob(f"{self.split}-*.parquet")):
                records.extend(pq.read_table(f).to_pylist())
        if not records:
            self.need(root / "<Subject>" / f"{self.split}-00000-of-00001.parquet", "the split's parquet files")
        return records

    def load(self, data_root: Path) -> list:
        items = []
        for key, record in enumerate(self.read_split(data_root)):
            where = f"MMMU record {record.get('id')}"
            try:
                choices = list(ast.literal_eval(record["options"]))
            except (ValueError, SyntaxError):
                raise DataError(f"{self.name}: {where}: options {record['options']!r} is not a Python list") from None
            if record["question_type"] not in PROMPT:
                raise DataError(f"{self.name}: {where}: question_type {record['question_type']!r} is not one of "
                                f"{list(PROMPT)}")
            question, options = with_options(record["question"].strip(), choices)
            question += "\n" + PROMPT[record["question_type"]]
            question = question.strip()
            if self.cot:
                question = COT_INSTRUCTION.format(question=question)
            images = [None if record.get(f"image_{i}") is None else
                      BytesImage(record[f"image_{i}"]["bytes"], f"{where} image_{i}") for i in range(1, 8)]
            items.append(Item(key, [], question, {"data_id": record["id"], "gt_answers": record.get("answer"),
                                                  "options": options},
                              pixels=MMMUPixels(images, f"{self.name}: {where}")))
        return items

    def record(self, item: Item, answer: str, checkpoint: str) -> dict:
        row = {"question": item.question, "answer": post_process(answer, item.meta["options"], self.cot),
               "gt_answers": item.meta["gt_answers"], "data_id": item.meta["data_id"]}
        if self.cot:
            row["answer_orig"] = answer
        return row

    def write_results(self, records: list, out_dir: Path, checkpoint: str, stamp: str) -> Path:
        """``<dataset>_<stamp>.json`` (id -> answer; the submission file of test) and the ``.jsonl`` beside it."""
        stem = Path(out_dir) / f"{self.upstream}{'_cot' if self.cot else ''}_{stamp}"
        path = write_json_file(f"{stem}.json", {r["data_id"]: r["answer"] for r in records}, indent=4)
        write_jsonl_file(f"{stem}.jsonl", records)
        return path

    def answers(self, data_root: Path) -> Dict[str, dict]:
        """``{id: {question_type, ground_truth}}``: upstream's answer_dict_val.json when it is at
        data/MMMU/answer_dict_val.json, else the parquet files' answers."""
        upstream = data_root / "MMMU" / "answer_dict_val.json"
        if self.split == "validation" and upstream.exists():
            return read_json(upstream, self.name)
        return {r["id"]: {"question_type": "multiple-choice" if r["question_type"] == "multiple-choice"
                          else "short-answer", "ground_truth": _gold(r["answer"])}
                for r in self.read_split(data_root)}

    def score(self, results: Path, data_root: Path) -> Optional[dict]:
        if str(results).endswith(".jsonl"):
            outputs = {r["data_id"]: r["answer"] for r in read_jsonl(results, self.name)}
        else:
            outputs = read_json(results, self.name)
            if not isinstance(outputs, dict):
                raise DataError(f"{self.name}: {results} is not a JSON object of id -> answer (upstream's MMMU .json)")
        if self.split == "test":
            return None
        return mmmu_scores(outputs, self.answers(data_root))

    def synthetic_records(self, n: int) -> list:
        """``n`` records in two subjects (Art, Math): multiple choice about the shape's colour, open questions
        about its shape."""
        import io

        from internvl.data.synthetic import COLOURS

        from .framework import synthetic_samples

        colours = list(COLOURS)
        samples = synthetic_samples(n)
        records = []
        for si, subject in enumerate(["Art", "Math"]):
            for i, s in enumerate(samples[si::2]):
                buf = io.BytesIO()
                s.image.save(buf, format="PNG")
                mc = i % 2 == 0
                record = {"id": f"{self.split}_{subject}_{i + 1}",
                          "question": "<image 1> What colour is the shape?" if mc else "<image 1> What shape is it?",
                          "options": repr(colours) if mc else "[]",
                          "answer": ("ABCD"[colours.index(s.colour)] if mc else s.shape) if self.split != "test"
                          else "?",
                          "question_type": "multiple-choice" if mc else "open",
                          "image_1": {"bytes": buf.getvalue(), "path": None}}
                record.update({f"image_{k}": None for k in range(2, 8)})
                records.append(record)
        return records

    def write_synthetic(self, data_root: Path, n: int = 4) -> None:
        """:meth:`synthetic_records` in the repository's parquet layout (one file per subject). Needs pyarrow."""
        pq = pyarrow_parquet()
        import pyarrow

        records = self.synthetic_records(n)
        for subject in ("Art", "Math"):
            rows = [r for r in records if r["id"].split("_")[1] == subject]
            (data_root / ROOT / subject).mkdir(parents=True, exist_ok=True)
            pq.write_table(pyarrow.Table.from_pylist(rows),
                           data_root / ROOT / subject / f"{self.split}-00000-of-00001.parquet")


def post_process(pred: str, options: Dict[str, str], cot: bool = False) -> str:
    """Upstream's answer post-processing; for the ``-cot`` tasks the text after "Final answer:" and, for
    multiple choice, MMMU's ``parse_multi_choice_response`` on it."""
    if cot:
        pred = extract_answer(pred).strip()
        if options:
            return parse_multi_choice_response(pred, list(options), options)
        return pred
    return pred if len(options) == 0 else option_post_process(pred, options)


def extract_answer(text: str) -> str:
    """The text after "Final answer:" or "Answer:" (upstream's ``--cot`` extraction)."""
    match = re.search(r"(Final answer:|Answer:)\s*(.*)", text, re.IGNORECASE)
    return match.group(2).strip() if match else text


TASKS = [MMMU(s, up, split, cot) for cot in (False, True)
         for s, up, split in (("dev", "MMMU_dev", "dev"), ("val", "MMMU_validation", "validation"),
                              ("test", "MMMU_test", "test"))]
GROUPS: dict = {}
