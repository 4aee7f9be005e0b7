"""Tiny-LVLM-eHub, as upstream's ``eval/tiny_lvlm`` (evaluate_lvlm.py, calculate_score.py, tools.py).

Data: ``data/tiny_lvlm/updated_datasets/<ability>/dataset.json`` (a list of ``{image_path, question,
gt_answers}``, images beside it) for the five abilities. Prompt: ``question + " Answer the question using a single
word or phrase."``; 30 new tokens. Results: ``updated_datasets_<stamp>.json``, a list of ``{question, answer,
gt_answers, image_path, task_type}``.
Score: Tiny-LVLM's ``VQAEval``: the answer and each ground truth are normalized (punctuation, number words,
articles, contractions; its own punctuation list, not VQAv2's), and an answer is right when a normalized ground
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

PROMPT = "Answer the question using a single word or phrase."
ABILITIES = ["Visual_Reasoning", "Visual_Perception", "Visual_Knowledge_Acquisition", "Visual_Commonsense",
             "Object_Hallucination"]

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = ["a", "an", "the"]
PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")


def process_punctuation(text: str) -> str:
    out = text
    for p in PUNCT:
        if (p + " " in text or " " + p in text) or (re.search(_COMMA_STRIP, text) is not None):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, int(re.UNICODE))  # upstream passes re.UNICODE (32) as the count


def process_digit_article(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize(text: str) -> str:
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


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
