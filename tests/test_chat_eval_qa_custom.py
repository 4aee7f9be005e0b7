"""qa-custom: a user's held-out data in the fine-tuning format scored with VQA accuracy, exact match, ANLS or
multiple choice (hand-computed values on crafted answers), the metric chosen per dataset in the meta json or by
--metric, its one-line errors, and the run end to end on the tiny chat checkpoint (results file, score, summary)."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from internvl.errors import ConfigError, DataError
from internvl_chat.eval import framework
from internvl_chat.eval.__main__ import main as eval_main
from internvl_chat.eval.qa_custom import dataset_metrics, options_of, question_score

REPO = Path(__file__).resolve().parents[1]
TASK = framework.registry()[0]["qa-custom"]


# --------------------------------------------------------------------------- each metric on crafted answers
@pytest.mark.parametrize("metric, answer, annotation, expected", [
    ("vqa", "Two dogs.", "2 dogs", 1.0),        # number word, trailing period
    ("vqa", "The Red", "red", 1.0),             # case, article
    ("vqa", "isnt", "isn't", 1.0),              # contraction
    ("vqa", "red car", "red", 0.0),
    ("exact", " Red ", "red", 1.0),             # strip + lower only
    ("exact", "Red.", "red", 0.0),              # ... the period stays (vqa drops it)
    ("exact", "two", "2", 0.0),
    ("anls", "hello wrld", "hello world", 1 - 1 / 11),  # one edit over the longer length
    ("anls", "Hello  World", "hello world", 1.0),  # folded whitespace and case: distance 0
    ("anls", "abc", "abd", 1 - 1 / 3),          # 0.667, above the threshold
    ("anls", "abcd", "abxy", 0.5),              # 1 - 2/4: at the threshold, kept
    ("anls", "abcde", "abxyz", 0.0),            # 1 - 3/5 = 0.4: below the 0.5 threshold, 0
])
def test_question_score_hand_computed(metric, answer, annotation, expected):
    assert question_score(metric, answer, annotation) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("answer, expected", [
    ("B", 1.0),                 # the letter
    ("B. blue", 1.0),           # letter first: the letter
    ("It is blue.", 1.0),       # an option's text in the answer
    ("A", 0.0),
    ("purple", 0.0),            # nothing: as it is, no letter
])
def test_multiple_choice_score(answer, expected):
    options = options_of("<image>\nWhat colour?\nA. red\nB. blue\n(C) green\nAnswer with the letter.")
    assert options == {"A": "red", "B": "blue", "C": "green"}
    assert question_score("mc", answer, "B", options) == expected


def test_score_groups_by_dataset_and_metric(tmp_path):
    rows = [{"dataset": "d1", "metric": "vqa", "answer": "Two.", "annotation": "2"},
            {"dataset": "d1", "metric": "vqa", "answer": "3", "annotation": "2"},
            {"dataset": "d2", "metric": "exact", "answer": "Two.", "annotation": "2"},
            {"dataset": "d3", "metric": "anls", "answer": "hello wrld", "annotation": "hello world"},
            {"dataset": "d4", "metric": "mc", "answer": "C) green", "annotation": "C",
             "options": {"A": "red", "B": "blue", "C": "green"}}]
    path = tmp_path / "qa_custom_1.json"
    path.write_text(json.dumps(rows))
    metrics = TASK.score(path, tmp_path)
    assert metrics == pytest.approx({"d1 vqa_accuracy": 0.5, "d2 exact_match": 0.0, "d3 anls": 1 - 1 / 11,
                                     "d4 mc_accuracy": 1.0})
    assert list(framework.headline_values("qa-custom", metrics)) == [
        "qa-custom d1 vqa_accuracy", "qa-custom d2 exact_match", "qa-custom d3 anls", "qa-custom d4 mc_accuracy"]


# --------------------------------------------------------------------------- the metric: meta entry, else flag
def _dataset(tmp_path, name, lines, metric=None, meta=None):
    """A dataset of ``lines`` ((question, answer) or raw text) with one image; returns the meta path."""
    from internvl.data.synthetic import SyntheticImages, save_jpeg

    root = tmp_path / "val"
    save_jpeg(SyntheticImages().sample(0).image, root / "0.jpg")
    text = [line if isinstance(line, str) else json.dumps({"image": "0.jpg", "conversations": [
        {"from": "human", "value": line[0]}, {"from": "gpt", "value": line[1]}]}) for line in lines]
    (root / f"{name}.jsonl").write_text("\n".join(text) + "\n")
    meta_path = meta or tmp_path / "val.json"
    entries = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    entries[name] = {"root": str(root), "annotation": str(root / f"{name}.jsonl")}
    if metric:
        entries[name]["metric"] = metric
    meta_path.write_text(json.dumps(entries))
    return meta_path


def _configure(meta, metric=None):
    TASK.configure(argparse.Namespace(meta_path=str(meta), metric=metric))
    return TASK.load(Path("unused"))


def test_meta_entry_metric_wins_and_the_flag_fills_the_rest(tmp_path):
    meta = _dataset(tmp_path, "colours", [("What colour?", "red")], metric="exact")
    _dataset(tmp_path, "counts", [("How many?", "2")], meta=meta)
    assert dataset_metrics(meta, "vqa") == {"colours": "exact", "counts": "vqa"}
    items = _configure(meta, "vqa")
    assert [(i.meta["dataset"], i.meta["metric"]) for i in items] == [("colours", "exact"), ("counts", "vqa")]
    assert items[0].question == "<image>\nWhat colour?" and items[0].images == [str(tmp_path / "val/0.jpg")]
    assert TASK.max_new_tokens == 10
    records = [TASK.record(item, "Red.", "ck") for item in items]
    # "Red." is right under vqa's normalization, wrong under exact match: the entry's metric decides
    path = tmp_path / "r.json"
    path.write_text(json.dumps(records))
    assert TASK.score(path, tmp_path) == {"colours exact_match": 0.0, "counts vqa_accuracy": 0.0}
    records[0]["answer"] = " red "
    path.write_text(json.dumps(records))
    assert TASK.score(path, tmp_path)["colours exact_match"] == 1.0


def test_the_multiple_choice_reference_becomes_its_letter(tmp_path):
    meta = _dataset(tmp_path, "mc", [("Which?\nA. red\nB. blue", "B"), ("Which?\nA. red\nB. blue", "blue")],
                    metric="mc")
    items = _configure(meta)
    assert [i.meta["annotation"] for i in items] == ["B", "B"] and TASK.max_new_tokens == 100


@pytest.mark.parametrize("lines, metric, flag, message", [
    ([("Q?", "a")], None, None, r"val.json: dataset 'ds' has no 'metric'; add \"metric\": one of 'vqa', 'exact', "
                                r"'anls', 'mc' to its entry, or pass --metric"),
    ([("Q?", "a")], "bleu", None, r"dataset 'ds' has the unknown metric 'bleu'; use one of"),
    ([("Q?", "a"), '{"image": "0.jpg", "conversations": [}'], "vqa", None,
     r"qa-custom: .*ds.jsonl:2: not valid JSON.*; fix or remove the line \(python -m internvl_chat.chat_data check"),
    ([("Which?\nA. red", "A")], "mc", None, r"ds.jsonl:1: metric 'mc' needs the options in the question"),
    ([("Which?\nA. red\nB. blue", "purple")], "mc", None, r"ds.jsonl:1: the answer 'purple' is none of the "
                                                          r"question's option letters AB; answer with the letter"),
])
def test_errors_are_one_line_naming_the_file_and_what_to_do(tmp_path, lines, metric, flag, message):
    meta = _dataset(tmp_path, "ds", lines, metric=metric)
    with pytest.raises((ConfigError, DataError), match=message) as err:
        _configure(meta, flag)
    assert "\n" not in str(err.value)


def test_no_meta_path_and_unknown_meta_keys(tmp_path):
    with pytest.raises(ConfigError, match="qa-custom needs --meta-path"):
        TASK.configure(argparse.Namespace(meta_path=None, metric="vqa"))
    meta = _dataset(tmp_path, "ds", [("Q?", "a")], metric="vqa")
    entries = json.loads(meta.read_text())
    entries["ds"]["metrics"] = "vqa"
    meta.write_text(json.dumps(entries))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['metrics'\]; known keys: .*'metric'"):
        _configure(meta)


# --------------------------------------------------------------------------- end to end on the tiny checkpoint
def test_run_writes_results_scores_and_a_summary_row(tmp_path, capsys):
    from internvl.datakit.checkpoints import write_tiny_internvl_chat

    write_tiny_internvl_chat(tmp_path / "ckpt")
    data = tmp_path / "data"
    assert eval_main(["synthetic", "--data-root", str(data), "--tasks", "qa-custom", "-n", "2"]) == 0
    meta = data / "qa_custom" / "qa_custom.json"
    out = tmp_path / "out"
    assert eval_main(["run", "--checkpoint", str(tmp_path / "ckpt"), "--tasks", "qa-custom", "--meta-path", str(meta),
                      "--data-root", str(data), "--out-dir", str(out), "--num-workers", "0", "--batch-size", "4"]) == 0
    (results,) = out.glob("qa_custom_????????????.json")
    records = json.loads(results.read_text())
    assert [(r["dataset"], r["metric"]) for r in records] == [
        (f"synthetic_{m}", m) for m in ("vqa", "exact", "anls", "mc") for _ in range(2)]
    assert set(records[-1]) == {"id", "where", "dataset", "metric", "question", "answer", "annotation", "options"}
    assert records[0]["where"].endswith("vqa.jsonl:1")
    (run,) = json.loads((out / "summary.json").read_text())["runs"]
    names, expected = dict(vqa="vqa_accuracy", exact="exact_match", anls="anls", mc="mc_accuracy"), {}
    for r in records:  # the scores recomputed from the records, question by question
        expected.setdefault(f"{r['dataset']} {names[r['metric']]}", []).append(
            question_score(r["metric"], r["answer"], r["annotation"], r.get("options")))
    assert run["metrics"] == pytest.approx({k: sum(v) / len(v) for k, v in expected.items()})
    header, _, row = (out / "summary.md").read_text().splitlines()
    assert header.startswith("| checkpoint | qa-custom synthetic_vqa vqa_accuracy | qa-custom synthetic_exact")
    assert row.startswith(f"| {tmp_path / 'ckpt'} | ")
    capsys.readouterr()
    assert eval_main(["score", "qa-custom", str(results)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == pytest.approx(run["metrics"])
    # the reference answers score 1 under every metric
    for r in records:
        r["answer"] = r["annotation"]
    results.write_text(json.dumps(records))
    assert set(TASK.score(results, data).values()) == {1.0}
    # text-only and multi-image samples as the fine-tuning data has them, the metric by the flag
    from internvl_chat.chat_data.chat_jsonl import write_synthetic_chat_data

    meta = write_synthetic_chat_data(tmp_path / "mixed", 2, kinds=("text", "multi"), name="mixed")
    assert eval_main(["run", "--checkpoint", str(tmp_path / "ckpt"), "--tasks", "qa-custom", "--meta-path", str(meta),
                      "--metric", "exact", "--data-root", str(data), "--out-dir", str(tmp_path / "mixed_out"),
                      "--num-workers", "0"]) == 0
    (results,) = (tmp_path / "mixed_out").glob("qa_custom_*.json")
    text, multi = json.loads(results.read_text())
    assert "<image>" not in text["question"] and text["metric"] == "exact"
    assert multi["question"].startswith("Image-1: <image>\nImage-2: <image>\n") and isinstance(multi["answer"], str)


def test_evaluate_sh_sends_qa_custom_and_its_flags_to_the_benchmark_run():
    env = {**os.environ, "DRY_RUN": "1", "GPUS": "0", "DATA_ROOT": "d", "OUT_DIR": "r", "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO / "internvl_chat/evaluate.sh"), "ck", "qa-custom", "--meta-path",
                           "my_val.json", "--metric", "anls"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (command,) = [line.split(" -m ")[1].replace("\\", "") for line in done.stdout.splitlines() if " -m " in line]
    assert command == ("internvl_chat.eval run --checkpoint ck --tasks qa-custom --data-root d --out-dir r "
                       "--meta-path my_val.json --metric anls")
