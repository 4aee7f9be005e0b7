"""The VQA family, as upstream's ``eval/vqa/evaluate_vqa.py`` (and ``eval/mpdocvqa/evaluate_vqa.py``).

Each task reads upstream's converted JSON-lines file (``image``, ``question``, ``question_id``, ``answer``;
MP-DocVQA: its ``val.json`` / ``test.json`` with ``page_ids``), asks ``<question> <prompt>`` (the prompt:
"Answer the question using a single word or phrase.", VizWiz's "When the provided information is
insufficient, respond with 'Unanswerable'. " before it, none for AI2D), 10 or 100 new tokens as upstream, and
writes ``<out-dir>/<upstream name>_<stamp>.json`` with upstream's keys for that dataset. Scorers:

- ``vqa_score`` (VQAv2, OK-VQA, TextVQA, VizWiz val): the VQA accuracy of upstream's ``textvqa_eval.py``
  (EvalAI's answer normalization: punctuation, periods, number words, articles, contractions; an answer's score
  is its average over the 10 leave-one-out subsets of min(1, matches / 3)), against the annotation file;
- ``anls`` (DocVQA, InfographicVQA, MP-DocVQA val): upstream's ``infographicsvqa_eval.py`` against the
  ground-truth json (every question answered), threshold 0.5;
- ``relaxed_accuracy`` (ChartQA): upstream's ``relaxed_correctness``, 5% relative tolerance for numbers;
- ``accuracy`` (OCR-VQA, AI2D): exact match after strip + lower; GQA: the prediction with trailing periods
  removed, lowercased, equal to the answer (GQA's ``eval.py`` accuracy over the balanced test-dev questions;
  the converted predictions are written beside the results as ``testdev_balanced_predictions.json``).

The test splits without public answers (``vqa-vqav2-testdev``, ``vqa-vizwiz-test``, ``vqa-docvqa-test``,
``vqa-infovqa-test``, ``vqa-mpdocvqa-test``) write the results file upstream writes, to submit.
"""
from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Optional

from internvl.errors import DataError

from .framework import (Item, Task, field_of, read_json, read_jsonl, read_results, resolve_image, save_image,
                        synthetic_samples, write_json, write_jsonl)

BASE_PROMPT = "Answer the question using a single word or phrase."
VIZWIZ_PROMPT = "When the provided information is insufficient, respond with 'Unanswerable'. " + BASE_PROMPT
VQA_README = "upstream's internvl_chat/eval/vqa/README.md"


# ------------------------------------------------------------------------------------------------ VQA accuracy
class EvalAIAnswerProcessor:
    """EvalAI's answer normalization as upstream's ``textvqa_eval.py`` has it, quirks included: the period
    pattern ``(?!<=\\d)(\\.)(?!\\d)`` (a typo of a look-behind: every period not followed by a digit goes) and
    ``re.UNICODE`` passed as ``sub``'s count, so at most 32 periods are removed."""

    CONTRACTIONS = {
        "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
        "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
        "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
        "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
        "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
        "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
        "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
        "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
        "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
        "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
        "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
        "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
        "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
        "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
        "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
        "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
        "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
        "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
        "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
        "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
        "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
        "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
        "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
        "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
        "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
        "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
        "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
        "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
        "youve": "you've",
    }
    NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
               "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
    ARTICLES = ("a", "an", "the")
    PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
    COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")
    PUNCTUATIONS = (";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
                    ",", "?", "!")

    def punctuation(self, text: str) -> str:
        out = text
        has_digit_comma = self.COMMA_STRIP.search(text) is not None
        for p in self.PUNCTUATIONS:  # tested against the input text, applied to the output (as upstream)
            if p + " " in text or " " + p in text or has_digit_comma:
                out = out.replace(p, "")
            else:
                out = out.replace(p, " ")
        return self.PERIOD_STRIP.sub("", out, re.UNICODE)

    def digits_and_articles(self, text: str) -> str:
        words = [self.NUMBERS.get(w, w) for w in text.lower().split()]
        words = [w for w in words if w not in self.ARTICLES]
        return " ".join(self.CONTRACTIONS.get(w, w) for w in words)

    def __call__(self, answer: str) -> str:
        answer = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
        answer = answer.replace("\n", " ").replace("\t", " ").strip()
        return self.digits_and_articles(self.punctuation(answer))


def vqa_scores(gt_answers: list, processor: EvalAIAnswerProcessor) -> dict:
    """``{normalized answer: score}`` of the 10 human answers (upstream's ``_compute_answer_scores``)."""
    answers = [processor(a) for a in gt_answers]
    if len(answers) != 10:
        raise DataError(f"VQA accuracy needs 10 human answers per question, got {len(answers)}")
    indexed = list(enumerate(answers))
    scores = {}
    for unique in set(answers):
        accs = []
        for held_out in indexed:
            others = [item for item in indexed if item != held_out]
            accs.append(min(1.0, sum(1 for item in others if item[1] == unique) / 3))
        scores[unique] = sum(accs) / len(accs)
    return scores


def vqa_accuracy(pairs: list) -> float:
    """Mean VQA accuracy of ``[(prediction, [10 human answers])]``."""
    processor = EvalAIAnswerProcessor()
    return sum(vqa_scores(gts, processor).get(processor(pred), 0.0) for pred, gts in pairs) / len(pairs)


# ------------------------------------------------------------------------------------------------ ANLS
def levenshtein(s1: str, s2: str) -> int:
    if len(s1) > len(s2):
        s1, s2 = s2, s1
    previous = list(range(len(s1) + 1))
    for i2, c2 in enumerate(s2):
        current = [i2 + 1]
        for i1, c1 in enumerate(s1):
            current.append(previous[i1] if c1 == c2 else 1 + min(previous[i1], previous[i1 + 1], current[-1]))
        previous = current
    return previous[-1]


def anls_of(prediction: str, answers: list, threshold: float = 0.5) -> float:
    """One question's ANLS as upstream's ``infographicsvqa_eval.py``: the distance between the whitespace-folded,
    lowercased strings, divided by the longer of the *raw* lengths (upstream's quirk: the untrimmed ``.upper()``
    lengths), 1 - the smallest such ratio, 0 below ``threshold``."""
    det = " ".join(prediction.strip().lower().split())
    values = []
    for answer in answers:
        gt = " ".join(answer.strip().lower().split())
        length = max(len(answer.upper()), len(prediction.upper()))
        values.append(0.0 if length == 0 else levenshtein(gt, det) / length)
    result = 1 - min(values)
    return 0.0 if result < threshold else result


def anls_score(results: list, ground_truth: dict, gt_path: Path, task: str) -> float:
    """Upstream's ``validate_data`` + ``evaluate_method``: every ground-truth question answered exactly once."""
    data = ground_truth.get("data")
    if data is None:
        raise DataError(f"{task}: {gt_path} is not a ground-truth file (no 'data' key)")
    if len(results) != len(data):
        raise DataError(f"{task}: the results answer {len(results)} questions but {gt_path} has {len(data)}; "
                        "upstream's scorer needs every question answered")
    by_id = {int(r["questionId"]): r for r in results}
    if sorted(int(g["questionId"]) for g in data) != sorted(by_id):
        raise DataError(f"{task}: the results' questionIds differ from those of {gt_path}")
    return sum(anls_of(by_id[int(g["questionId"])]["answer"], g["answers"]) for g in data) / len(data)


# ------------------------------------------------------------------------------------------------ ChartQA, EM
def relaxed_correctness(target: str, prediction: str, max_relative_change: float = 0.05) -> bool:
    """pix2struct's relaxed correctness (upstream's copy): numbers (``x%`` is x / 100) within
    ``max_relative_change`` of ``target``, relative to ``target``; anything else equal ignoring case."""
    def to_float(text: str) -> Optional[float]:
        try:
            return float(text.rstrip("%")) / 100.0 if text.endswith("%") else float(text)
        except ValueError:
            return None

    prediction_float, target_float = to_float(prediction), to_float(target)
    if prediction_float is not None and target_float:
        return abs(prediction_float - target_float) / abs(target_float) <= max_relative_change
    return prediction.lower() == target.lower()


def relaxed_accuracy(entries: list) -> float:
    """Upstream's ``evaluate_relaxed_accuracy``, which passes the model's answer as ``target`` and the
    annotation as ``prediction`` (so the 5% is relative to the model's answer, not to the annotation)."""
    scores = []
    for entry in entries:
        annotations = [entry["annotation"]] if isinstance(entry["annotation"], str) else entry["annotation"]
        scores.append(max(relaxed_correctness(entry["answer"].strip(), ann) for ann in annotations))
    return sum(scores) / len(scores)


def exact_match_accuracy(entries: list) -> float:
    scores = []
    for entry in entries:
        annotations = [entry["annotation"]] if isinstance(entry["annotation"], str) else entry["annotation"]
        scores.append(max(1.0 if entry["answer"].strip().lower() == ann.strip().lower() else 0.0
                          for ann in annotations))
    return sum(scores) / len(scores)


def gqa_predictions(entries: list) -> list:
    """Upstream's ``convert_gqa_for_eval.py``."""
    return [{"questionId": e["questionId"], "prediction": e["answer"].rstrip(".").lower()} for e in entries]


def gqa_accuracy(entries: list) -> float:
    predictions = gqa_predictions(entries)
    return sum(p["prediction"] == e["annotation"] for p, e in zip(predictions, entries)) / len(entries)


# ------------------------------------------------------------------------------------------------ tasks
KEYS = {  # upstream's record per dataset
    "plain": ("question", "question_id", "answer"),
    "with_annotation": ("question", "questionId", "answer", "annotation"),
    "ai2d": ("question", "image", "answer", "annotation"),
    "chartqa": ("question", "answer", "annotation"),
    "docvqa_test": ("questionId", "answer"),
    "vizwiz_test": ("image", "answer"),
}


class VQATask(Task):
    family = "vqa"
    instructions = VQA_README

    def __init__(self, name: str, upstream: str, test: str, metric: Optional[str], max_new_tokens: int,
                 keys: str, annotation: Optional[str] = None, prompt: str = BASE_PROMPT,
                 submission: Optional[str] = None, synthetic_images: str = "images"):
        self.name, self.upstream, self.test, self.metric = name, upstream, Path(test), metric
        self.max_new_tokens, self.keys, self.prompt = max_new_tokens, keys, prompt
        self.annotation = Path(annotation) if annotation else None
        self.submission, self.synthetic_images = submission, synthetic_images
        self.headline = (metric if metric != "vqa_score" else "accuracy",) if metric else ()

    # ---- data
    def question_text(self, question: str) -> str:
        return question + " " + self.prompt if self.prompt else question

    def load(self, data_root: Path) -> list:
        path = self.need(data_root / self.test, "the question file")
        items = []
        for key, row in enumerate(read_jsonl(path, self.name)):
            where = f"{path}:{key + 1}"
            image = resolve_image(field_of(row, "image", self.name, where), data_root)
            self.need(image, f"the image of {where}")
            question = self.question_text(field_of(row, "question", self.name, where))
            items.append(Item(key, [str(image)], question,
                              {"question_id": field_of(row, "question_id", self.name, where),
                               "annotation": row.get("answer")}))
        return items

    def record(self, item: Item, answer: str, checkpoint: str) -> dict:
        qid, annotation = item.meta["question_id"], item.meta["annotation"]
        if self.keys == "vizwiz_test":
            return {"image": qid.replace("data/vizwiz/test/", ""), "answer": answer}
        values = {"question": item.question, "question_id": qid, "questionId": qid, "image": qid, "answer": answer,
                  "annotation": annotation}
        return {k: values[k] for k in KEYS[self.keys]}

    # ---- scoring
    def score(self, results: Path, data_root: Path) -> Optional[dict]:
        if self.metric is None:
            return None
        entries = read_results(results, self.name, [k for k in KEYS[self.keys] if k != "question"])
        if self.metric == "vqa_score":
            path = self.need(data_root / self.annotation, "the annotation file")
            answers = {a["question_id"]: [x["answer"] for x in a["answers"]]
                       for a in read_json(path, self.name)["annotations"]}
            missing = [e["question_id"] for e in entries if e["question_id"] not in answers]
            if missing:
                raise DataError(f"{self.name}: question_id {missing[0]} of {results} is not in {path}")
            return {"accuracy": vqa_accuracy([(e["answer"], answers[e["question_id"]]) for e in entries])}
        if self.metric == "anls":
            path = self.need(data_root / self.annotation, "the ground-truth file")
            return {"anls": anls_score(entries, read_json(path, self.name), path, self.name)}
        if self.metric == "relaxed_accuracy":
            return {"relaxed_accuracy": relaxed_accuracy(entries)}
        if "gqa" in self.upstream:
            write_json(results.with_name("testdev_balanced_predictions.json"), gqa_predictions(entries))
            return {"accuracy": gqa_accuracy(entries)}
        return {"accuracy": exact_match_accuracy(entries)}

    # ---- synthetic data
    def synthetic_rows(self, data_root: Path, n: int) -> list:
        """``n`` questions about the data kit's shapes (colour, shape, position), images under the task's
        folder; ``question_id`` as the dataset has it (VizWiz test: the image path, AI2D: the image)."""
        folder = self.test.parent
        rows = []
        start = zlib.crc32(self.upstream.encode()) % 1000
        for sample in synthetic_samples(n, start=start):
            qa = sample.qa[sample.index % 3]
            image = f"data/{folder}/{self.synthetic_images}/{self.upstream}_{sample.index}.jpg"
            save_image(sample.image, data_root.parent / image)
            qid = {"vizwiz_test": image, "ai2d": image}.get(self.keys, 100 * start + len(rows))
            rows.append({"image": image, "question": qa.question_en, "question_id": qid, "answer": qa.answer_en})
        return rows

    def write_synthetic(self, data_root: Path, n: int = 4) -> None:
        rows = self.synthetic_rows(data_root, n)
        write_jsonl(data_root / self.test, rows if self.metric else
                    [{k: v for k, v in r.items() if k != "answer"} for r in rows])  # a test split: no answers
        if self.metric == "vqa_score":
            annotations = [{"question_id": r["question_id"], "answers": [
                {"answer": r["answer"] if i < 7 else "something else", "answer_id": i + 1} for i in range(10)]}
                for r in rows]
            path = data_root / self.annotation  # shared by textvqa_val and textvqa_val_ocr: add to it
            kept = read_json(path, self.name)["annotations"] if path.is_file() else []
            ids = {a["question_id"] for a in annotations}
            write_json(path, {"annotations": [a for a in kept if a["question_id"] not in ids] + annotations})
        elif self.metric == "anls":
            write_json(data_root / self.annotation, {"dataset_name": self.upstream, "data": [
                {"questionId": r["question_id"], "question": r["question"], "answers": [r["answer"]]} for r in rows]})


class MPDocVQATask(VQATask):
    """MP-DocVQA: several pages per question (``Image-1: <image>\\n`` ... before the question), at most
    ``--total-max-num`` tiles over the pages, each page at most ``--max-num``. Upstream's script gives a
    multi-page question one tile count without ``--dynamic`` (``[1]`` for N pages); here each page counts."""

    image_root = Path("mpdocvqa/images")

    def load(self, data_root: Path) -> list:
        path = self.need(data_root / self.test, "the question file")
        data = read_json(path, self.name)
        if not isinstance(data, dict) or "data" not in data:
            raise DataError(f"{self.name}: {path} has no 'data' list; is it MP-DocVQA's {self.test.name}?")
        items = []
        for key, row in enumerate(data["data"]):
            where = f"{path} question {key}"
            pages = [str(self.need(data_root / self.image_root / f"{page}.jpg", f"a page of {where}"))
                     for page in field_of(row, "page_ids", self.name, where)]
            question = field_of(row, "question", self.name, where)
            if len(pages) > 1:
                question = "".join(f"Image-{i + 1}: <image>\n" for i in range(len(pages))) + question
            # upstream prefixes "Image-1: <image>\n" also to a single page cut into several tiles (--dynamic)
            items.append(Item(key, pages, self.question_text(question),
                              {"question_id": field_of(row, "questionId", self.name, where),
                               "annotation": row.get("answers"), "prefix_if_tiled": len(pages) == 1}))
        return items

    def write_synthetic(self, data_root: Path, n: int = 4) -> None:
        data = []
        samples = synthetic_samples(2 * n, start=500)
        for i in range(n):
            first, second = samples[2 * i], samples[2 * i + 1]
            pages = [f"doc{first.index}_p0", f"doc{first.index}_p1"] if i % 2 else [f"doc{first.index}_p0"]
            for page, sample in zip(pages, (first, second)):
                save_image(sample.image, data_root / self.image_root / f"{page}.jpg")
            qa = first.qa[0]
            data.append({"questionId": 2000 + i, "question": qa.question_en, "page_ids": pages,
                         "answers": [qa.answer_en], "answer_page_idx": 0})
        write_json(data_root / self.test, {"dataset_name": "mpdocvqa", "data": data})


def _tasks() -> list:
    t = VQATask
    return [
        t("vqa-vqav2-val", "vqav2_val", "vqav2/vqav2_val.jsonl", "vqa_score", 10, "plain",
          "vqav2/v2_mscoco_val2014_annotations.json", synthetic_images="val2014"),
        t("vqa-vqav2-testdev", "vqav2_testdev", "vqav2/vqav2_testdev.jsonl", None, 10, "plain",
          submission="to the VQAv2 test-dev server on EvalAI (upstream writes the same file)",
          synthetic_images="test2015"),
        t("vqa-okvqa-val", "okvqa_val", "okvqa/okvqa_val.jsonl", "vqa_score", 10, "plain",
          "okvqa/mscoco_val2014_annotations.json", synthetic_images="val2014"),
        t("vqa-textvqa-val", "textvqa_val", "textvqa/textvqa_val.jsonl", "vqa_score", 10, "plain",
          "textvqa/textvqa_val_annotations.json", synthetic_images="train_images"),
        t("vqa-textvqa-val-ocr", "textvqa_val_ocr", "textvqa/textvqa_val_llava.jsonl", "vqa_score", 10, "plain",
          "textvqa/textvqa_val_annotations.json", synthetic_images="train_images"),
        t("vqa-vizwiz-val", "vizwiz_val", "vizwiz/vizwiz_val.jsonl", "vqa_score", 10, "plain",
          "vizwiz/vizwiz_val_annotations.json", prompt=VIZWIZ_PROMPT, synthetic_images="val"),
        t("vqa-vizwiz-test", "vizwiz_test", "vizwiz/vizwiz_test.jsonl", None, 10, "vizwiz_test",
          prompt=VIZWIZ_PROMPT, submission="to the VizWiz VQA server on EvalAI", synthetic_images="test"),
        t("vqa-docvqa-val", "docvqa_val", "docvqa/val.jsonl", "anls", 100, "with_annotation",
          "docvqa/val/val_v1.0.json", synthetic_images="val/documents"),
        t("vqa-docvqa-test", "docvqa_test", "docvqa/test.jsonl", None, 100, "docvqa_test",
          submission="to the DocVQA server (rrc.cvc.uab.es, task 1)", synthetic_images="test/documents"),
        t("vqa-chartqa-test-human", "chartqa_test_human", "chartqa/test_human.jsonl", "relaxed_accuracy", 100,
          "chartqa", synthetic_images="test/png"),
        t("vqa-chartqa-test-augmented", "chartqa_test_augmented", "chartqa/test_augmented.jsonl",
          "relaxed_accuracy", 100, "chartqa", synthetic_images="test/png"),
        t("vqa-gqa-testdev", "gqa_testdev_llava", "gqa/llava_gqa_testdev_balanced_qwen_format.jsonl", "accuracy",
          10, "with_annotation", synthetic_images="images"),
        t("vqa-ocrvqa-val", "ocrvqa_val", "ocrvqa/ocrvqa_val.jsonl", "accuracy", 100, "with_annotation"),
        t("vqa-ocrvqa-test", "ocrvqa_test", "ocrvqa/ocrvqa_test.jsonl", "accuracy", 100, "with_annotation"),
        t("vqa-ai2d-test", "ai2diagram_test", "ai2diagram/test_vlmevalkit.jsonl", "accuracy", 10, "ai2d",
          prompt="", synthetic_images="ai2d/images"),
        t("vqa-infovqa-val", "infographicsvqa_val", "infographicsvqa/val.jsonl", "anls", 100, "with_annotation",
          "infographicsvqa/infographicsVQA_val_v1.0_withQT.json", synthetic_images="infographicsvqa_images"),
        t("vqa-infovqa-test", "infographicsvqa_test", "infographicsvqa/test.jsonl", None, 100, "with_annotation",
          submission="to the InfographicVQA server (rrc.cvc.uab.es, task 3)",
          synthetic_images="infographicsvqa_images"),
        MPDocVQATask("vqa-mpdocvqa-val", "mpdocvqa_val", "mpdocvqa/val.json", "anls", 100, "with_annotation",
                     "mpdocvqa/val.json"),
        MPDocVQATask("vqa-mpdocvqa-test", "mpdocvqa_test", "mpdocvqa/test.json", None, 100, "docvqa_test",
                     submission="to the MP-DocVQA server (rrc.cvc.uab.es, task 4)"),
    ]


TASKS = _tasks()
GROUPS = {
    # upstream's `vqa`: evaluate_vqa.py's default --datasets
    "vqa": ["vqa-okvqa-val", "vqa-textvqa-val", "vqa-vizwiz-val", "vqa-ai2d-test", "vqa-gqa-testdev"],
    "vqa-chartqa-test": ["vqa-chartqa-test-human", "vqa-chartqa-test-augmented"],
}
