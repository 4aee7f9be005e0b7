"""``qa-custom``: your own held-out data in the fine-tuning format, scored with a question-answer metric.

    bash evaluate.sh work_dirs/my_finetune qa-custom --meta-path my_val.json [--metric vqa|exact|anls|mc]
    python -m internvl_chat.eval run --checkpoint DIR --tasks qa-custom --meta-path my_val.json --metric vqa

The data is what ``--meta_path`` of the fine-tuning reads (a meta json naming JSONL files, read and checked by
:mod:`internvl_chat.chat_data.chat_jsonl`, the fine-tuning's own reader). Of each sample, the first ``human`` turn
is the question, asked as it is (with the ``<image>`` placeholders the fine-tuning data puts there: one in front
for a single image without one, one per image for several; a text-only sample is asked without an image), and the
first ``gpt`` turn is the reference answer; later turns are not asked (``caption-custom`` answers every turn,
history included, and scores with caption metrics). Video samples are refused (use ``caption-custom``).

Each dataset of the meta json is scored with one metric, its entry's ``"metric"`` key, else ``--metric``:

- ``vqa``: the VQA accuracy of upstream's ``textvqa_eval.py`` (EvalAI's normalization of the answer and the
  reference: case, punctuation, periods, number words, articles, contractions; :func:`.vqa.vqa_accuracy`) with the
  one reference as all ten human answers, so an answer scores 1 when it normalizes to the reference, else 0;
- ``exact``: exact match after strip + lower (upstream's OCR-VQA / AI2D accuracy, :func:`.vqa.exact_match_accuracy`);
- ``anls``: ANLS with upstream's threshold 0.5 (:func:`.vqa.anls_of`, DocVQA's metric);
- ``mc``: multiple choice; the options are lines of the question (``A. red``, ``B) blue`` or ``(C) green``), the
  reference is an option letter (or an option's text); the answer goes through upstream's option post-processing
  (:func:`.items.option_post_process`, as MMBench / SEED / MMVP) and scores 1 when it gives the reference letter.

Results: ``<out-dir>/qa_custom_<yymmddHHMMSS>.json``, a list of ``{"id", "where" (file:line), "dataset",
"metric", "question", "answer", "annotation", "options" (mc)}``; ``score`` recomputes the metrics from it alone:
``{"<dataset> <metric name>": value}`` (``vqa_accuracy``, ``exact_match``, ``anls``, ``mc_accuracy``; 0 to 1), one
summary-table column each.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from internvl.errors import ConfigError, DataError

from .framework import QA_METRICS, Item, Task, read_json, write_json
from .items import MC_PROMPT, option_post_process, with_options
from .vqa import anls_of, exact_match_accuracy, vqa_accuracy

#: the metric key of a meta entry
METRIC_KEY = "metric"
#: the metrics' names in the scores
METRIC_NAMES = {"vqa": "vqa_accuracy", "exact": "exact_match", "anls": "anls", "mc": "mc_accuracy"}
#: new tokens per metric, as upstream's tasks of that kind (VQA short answers: 10; DocVQA, the choice tasks: 100)
NEW_TOKENS = {"vqa": 10, "exact": 10, "anls": 100, "mc": 100}
OPTION_LINE = re.compile(r"^\s*\(?([A-Z])(?:\)|\.|\s*\))\s*(\S.*?)\s*$")


def options_of(question: str) -> dict:
    """``{letter: text}`` of the question's option lines (``A. red``, ``B) blue``, ``(C) green``), in order."""
    options = {}
    for line in question.splitlines():
        match = OPTION_LINE.match(line)
        if match and match.group(1) not in options:
            options[match.group(1)] = match.group(2)
    return options


def question_score(metric: str, answer: str, annotation: str, options: Optional[dict] = None) -> float:
    """One answer's score under ``metric`` (see the module doc)."""
    if metric == "vqa":
        return vqa_accuracy([(answer, [annotation] * 10)])
    if metric == "exact":
        return exact_match_accuracy([{"answer": answer, "annotation": annotation}])
    if metric == "anls":
        return anls_of(answer, [annotation])
    if metric == "mc":
        return 1.0 if option_post_process(answer, options or {}) == annotation else 0.0
    raise ConfigError(f"unknown qa-custom metric {metric!r}; use one of {', '.join(QA_METRICS)}")


def dataset_metrics(meta_path: Path, default: Optional[str]) -> dict:
    """``{dataset name: metric}`` of a meta json: each entry's ``metric`` key, else ``default`` (``--metric``)."""
    try:
        meta = json.loads(Path(meta_path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}  # read_meta says what is wrong with the file
    metrics = {}
    for name, entry in meta.items() if isinstance(meta, dict) else ():
        metric = entry.get(METRIC_KEY, default) if isinstance(entry, dict) else default
        if metric is None:
            raise ConfigError(f"qa-custom: {meta_path}: dataset {name!r} has no {METRIC_KEY!r}; add "
                              f'"{METRIC_KEY}": one of {", ".join(map(repr, QA_METRICS))} to its entry, or pass '
                              f"--metric")
        if metric not in QA_METRICS:
            raise ConfigError(f"qa-custom: {meta_path}: dataset {name!r} has the unknown metric {metric!r}; use one "
                              f"of {', '.join(map(repr, QA_METRICS))}")
        metrics[name] = metric
    return metrics


class QACustom(Task):
    name, upstream, family = "qa-custom", "qa_custom", "qa-custom"
    min_new_tokens = 1
    instructions = "internvl_chat/README.md (section 'Your own data') says"

    def __init__(self):
        self.meta_path: Optional[Path] = None
        self.default_metric: Optional[str] = None
        self.max_new_tokens = 10

    def configure(self, args) -> None:
        if not getattr(args, "meta_path", None):
            raise ConfigError("qa-custom needs --meta-path my_val.json (a meta json in the fine-tuning format; see "
                              "internvl_chat/README.md, 'Your own data')")
        self.meta_path, self.default_metric = Path(args.meta_path), args.metric
        metrics = self.metrics()
        self.max_new_tokens = max(NEW_TOKENS[m] for m in metrics.values())

    def settings(self) -> dict:
        return {"meta_path": str(self.meta_path.resolve()) if self.meta_path else None, "metric": self.default_metric}

    def metrics(self) -> dict:
        from internvl_chat.chat_data.chat_jsonl import read_meta

        read_meta(self.meta_path, extra_keys=(METRIC_KEY,))  # the file and every entry checked
        return dataset_metrics(self.meta_path, self.default_metric)

    # ---- data
    def load(self, data_root: Path) -> list:
        from internvl_chat.chat_data.chat_jsonl import load_samples, read_meta

        if self.meta_path is None:
            raise ConfigError("qa-custom needs --meta-path my_val.json")
        specs = read_meta(self.meta_path, extra_keys=(METRIC_KEY,))
        metrics = dataset_metrics(self.meta_path, self.default_metric)
        items = []
        for spec in specs:
            samples, problems = load_samples(spec)
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise DataError(f"qa-custom: {problems[0]}{more}; fix or remove the line "
                                f"(python -m internvl_chat.chat_data check --meta_path {self.meta_path} lists all)")
            metric = metrics[spec.name]
            for sample in samples:
                if sample.video is not None:
                    raise DataError(f"qa-custom: {sample.where} is a video sample; qa-custom answers image and text "
                                    "questions (caption-custom answers videos)")
                question, annotation = sample.turns[0][1], sample.turns[1][1].strip()
                meta = {"where": sample.where, "dataset": spec.name, "metric": metric, "annotation": annotation}
                if metric == "mc":
                    options = options_of(question)
                    if len(options) < 2:
                        raise DataError(f"qa-custom: {sample.where}: metric 'mc' needs the options in the question, "
                                        "one a line ('A. red', 'B. blue'); found fewer than two")
                    letter = option_post_process(annotation, options)
                    if letter not in options:
                        raise DataError(f"qa-custom: {sample.where}: the answer {annotation!r} is none of the "
                                        f"question's option letters {''.join(options)}; answer with the letter")
                    meta.update(options=options, annotation=letter)
                items.append(Item(len(items), list(sample.images), question, meta))
        return items

    def record(self, item: Item, answer: str, checkpoint: str) -> dict:
        row = {"id": item.key, "where": item.meta["where"], "dataset": item.meta["dataset"],
               "metric": item.meta["metric"], "question": item.question, "answer": answer,
               "annotation": item.meta["annotation"]}
        if "options" in item.meta:
            row["options"] = item.meta["options"]
        return row

    # ---- scoring
    def score(self, results: Path, data_root: Path) -> Optional[dict]:
        rows = read_json(results, self.name)
        if not isinstance(rows, list) or not rows:
            raise DataError(f"{self.name}: {results} holds no answers (a JSON list of qa-custom records)")
        per_dataset: dict = {}
        for i, row in enumerate(rows):
            where = f"{results}: record {i}"
            if not isinstance(row, dict) or not {"dataset", "metric", "answer", "annotation"} <= set(row):
                raise DataError(f"{self.name}: {where} lacks 'dataset', 'metric', 'answer' or 'annotation'; is it "
                                "a qa-custom results file?")
            if row["metric"] not in QA_METRICS:
                raise DataError(f"{self.name}: {where} has the unknown metric {row['metric']!r}; use one of "
                                f"{', '.join(QA_METRICS)}")
            score = question_score(row["metric"], row["answer"], row["annotation"], row.get("options"))
            per_dataset.setdefault((row["dataset"], row["metric"]), []).append(score)
        return {f"{dataset} {METRIC_NAMES[metric]}": sum(s) / len(s) for (dataset, metric), s in per_dataset.items()}

    def headline_keys(self, metrics: dict) -> tuple:
        return tuple(metrics)

    # ---- synthetic data
    def write_synthetic(self, data_root: Path, n: int = 4) -> None:
        """``data_root/qa_custom/``: a meta json ``qa_custom.json`` of four datasets of ``n`` samples each, one per
        metric (the data kit's colour questions; ``mc``: the colour among three options, a letter answer)."""
        from internvl.data.synthetic import COLOURS, SyntheticImages, save_jpeg

        root = (Path(data_root) / "qa_custom").resolve()
        kit, colours = SyntheticImages(), list(COLOURS)
        meta = {}
        for m, metric in enumerate(QA_METRICS):
            lines = []
            for i in range(n):
                index = 5000 + 100 * m + i
                sample = kit.sample(index)
                image = f"images/{index:06d}.jpg"
                save_jpeg(sample.image, root / image)
                question = "<image>\nWhat colour is the shape?"
                answer = sample.colour
                if metric == "mc":
                    choices = [sample.colour] + [c for c in colours if c != sample.colour][:2]
                    choices = choices[i % 3:] + choices[:i % 3]
                    question = with_options(question, choices)[0] + "\n" + MC_PROMPT
                    answer = "ABC"[choices.index(sample.colour)]
                elif metric == "vqa":
                    question += " Answer the question using a single word or phrase."
                lines.append(json.dumps({"id": index, "image": image, "conversations": [
                    {"from": "human", "value": question}, {"from": "gpt", "value": answer}]}))
            annotation = root / f"{metric}.jsonl"
            annotation.write_text("\n".join(lines) + "\n", encoding="utf-8")
            meta[f"synthetic_{metric}"] = {"root": str(root), "annotation": str(annotation), METRIC_KEY: metric}
        write_json(root / "qa_custom.json", meta, indent=2)


TASKS = [QACustom()]
GROUPS: dict = {}
