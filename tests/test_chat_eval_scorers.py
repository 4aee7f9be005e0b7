"""The benchmark scorers of internvl_chat/eval against hand-computed values on crafted answers that hit each rule
of upstream's metric code (quirks included), and the `score` command on results files in upstream's format."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from internvl.errors import DataError
from internvl_chat.eval import framework
from internvl_chat.eval.mme import mme_scores, parse_answer, post_process, subtask_metrics
from internvl_chat.eval.pope import pope_metrics, yes_or_no
from internvl_chat.eval.refcoco import grounding_precision
from internvl_chat.eval.vqa import (EvalAIAnswerProcessor, anls_of, anls_score, exact_match_accuracy, gqa_accuracy,
                                    relaxed_accuracy, vqa_accuracy)

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- VQA accuracy
@pytest.mark.parametrize("raw, normalized", [
    ("The Dog.", "dog"),                 # lowercase, final period, article
    ("a cat!", "cat"),                   # '!' not next to a space: replaced by a space, then split away
    ("yes !", "yes"),                    # ' !': removed
    ("Two dogs", "2 dogs"),              # number words
    ("none", "0"),
    ("dont know", "don't know"),         # contractions
    ("isnt it", "isn't it"),
    ("left-hand", "left hand"),          # '-' between letters: a space
    ("3.5", "3.5"),                      # a period before a digit stays
    ("1,000", "1000"),                   # commas go
    ("what's that?", "what 's that"),    # "'s" split off, '?' dropped
    ("an apple and the pie", "apple and pie"),
])
def test_vqa_answer_normalization(raw, normalized):
    assert EvalAIAnswerProcessor()(raw) == normalized


def test_vqa_period_quirk_keeps_periods_after_the_32nd():
    """re.UNICODE passed as sub()'s count (upstream's code): 40 periods in, 8 left."""
    assert EvalAIAnswerProcessor().punctuation("." * 40) == "." * 8


def test_vqa_accuracy_by_hand():
    """10 human answers, 2 'dog' and 8 'cat'. 'Dog.' matches 2: held out one of the 2 dogs (2 subsets) leaves 1
    match (1/3), otherwise 2 (2/3): (2/3 + 8 * 2/3) / 10 = 0.6. 'the cat' and 'A Cat!' -> 'cat': 1.0.
    'two' against 3 x '2' and 7 x '3': (3 * 2/3 + 7 * 1) / 10 = 0.9. 'bird': 0."""
    dogs = ["dog"] * 2 + ["cat"] * 8
    assert vqa_accuracy([("Dog.", dogs)]) == pytest.approx(0.6)
    assert vqa_accuracy([("the cat", dogs)]) == pytest.approx(1.0)
    assert vqa_accuracy([("A Cat!", dogs)]) == pytest.approx(1.0)
    assert vqa_accuracy([("two", ["2"] * 3 + ["3"] * 7)]) == pytest.approx(0.9)
    assert vqa_accuracy([("bird", dogs), ("the cat", dogs)]) == pytest.approx(0.5)
    with pytest.raises(DataError, match="10 human answers"):
        vqa_accuracy([("cat", ["cat"] * 9)])


# --------------------------------------------------------------------------- ANLS
def test_anls_near_misses_and_the_threshold():
    assert anls_of("helo world", ["hello world"]) == pytest.approx(1 - 1 / 11)
    assert anls_of("ABCD", ["abxy"]) == pytest.approx(0.5)      # exactly at the threshold: kept
    assert anls_of("abcde", ["abxyz"]) == 0.0                    # 1 - 3/5 = 0.4 < 0.5
    assert anls_of("  Paris ", ["paris"]) == 1.0                 # stripped, lowercased
    assert anls_of("new  york", ["New York"]) == 1.0             # inner whitespace folded
    assert anls_of("paris", ["london", "pari"]) == pytest.approx(0.8)  # the best of the answers
    # upstream's quirk: the distance of the folded strings over the longer *raw* length (6 with two spaces)
    assert anls_of("helo  ", ["hello"]) == pytest.approx(1 - 1 / 6)


def test_anls_needs_every_question_answered(tmp_path):
    gt = {"dataset_name": "docvqa", "data": [{"questionId": 1, "answers": ["a"]}, {"questionId": 2, "answers": ["b"]}]}
    assert anls_score([{"questionId": 1, "answer": "a"}, {"questionId": 2, "answer": "c"}], gt, tmp_path, "t") == 0.5
    with pytest.raises(DataError, match="answer 1 questions but"):
        anls_score([{"questionId": 1, "answer": "a"}], gt, tmp_path, "t")


# --------------------------------------------------------------------------- ChartQA, exact match, GQA
def test_relaxed_accuracy_percentages_and_the_5_percent_edge():
    def one(answer, annotation):
        return relaxed_accuracy([{"answer": answer, "annotation": annotation}])

    assert one("105", "100") == 1.0          # |100 - 105| / 105 = 0.048
    assert one("5%", "0.05") == 1.0          # a percentage is a fraction
    assert one(" 12 ", "12.6") == 1.0         # stripped; 0.6 / 12 = 0.05: at the edge, kept
    assert one("12", "12.7") == 0.0           # 0.7 / 12 = 0.058
    # upstream passes the model's answer as the target: the tolerance is relative to it. 95 vs 100: 5 / 95 > 5%
    # (pix2struct's order, relative to the annotation, would accept it at exactly 5%)
    assert one("95", "100") == 0.0
    assert one("0", "0") == 1.0 and one("0.0", "0") == 0.0  # a zero target: string comparison
    assert one("Yes", "yes") == 1.0 and one("yes", ["no", "YES"]) == 1.0


def test_exact_match_and_gqa():
    assert exact_match_accuracy([{"answer": " Paris ", "annotation": "paris"},
                                 {"answer": "Paris.", "annotation": ["paris", "PARIS"]}]) == 0.5
    assert gqa_accuracy([{"questionId": "1", "answer": "Yes.", "annotation": "yes"},
                         {"questionId": "2", "answer": "left side", "annotation": "left"}]) == 0.5


# --------------------------------------------------------------------------- POPE
@pytest.mark.parametrize("text, label", [
    ("Yes", "yes"), ("No", "no"), ("No, there is not.", "no"), ("There is no dog.", "no"),
    ("not sure", "no"), ("Yes. No.", "yes"),   # only the first sentence counts
    ("No!", "yes"), ("Nope", "yes"), ("NO", "yes"),  # upstream's word test: 'No!' and 'NO' are not 'No'
])
def test_pope_yes_no(text, label):
    assert yes_or_no(text) == label


def test_pope_metrics_by_hand():
    """Predictions yes, no, yes, no, yes against labels yes, yes, no, no, no: TP 1, FN 1, FP 2, TN 1."""
    m = pope_metrics(["Yes", "No", "Yes", "not really", "yes"], ["yes", "yes", "no", "no", "no"])
    assert (m["TP"], m["FN"], m["FP"], m["TN"]) == (1, 1, 2, 1)
    assert m["Accuracy"] == pytest.approx(2 / 5) and m["Precision"] == pytest.approx(1 / 3)
    assert m["Recall"] == pytest.approx(1 / 2) and m["F1 score"] == pytest.approx(0.4)
    assert m["Yes ratio"] == pytest.approx(3 / 5)


def test_pope_score_pairs_each_category_with_its_label_file(tmp_path):
    root = tmp_path / "data"
    (root / "pope" / "coco").mkdir(parents=True)
    questions = [{"question_id": i, "image": "x.jpg", "text": "?", "category": c}
                 for i, c in enumerate(["random", "random", "popular", "popular"])]
    framework.write_jsonl(root / "pope" / "llava_pope_test.jsonl", questions)
    framework.write_jsonl(root / "pope" / "coco" / "coco_pope_random.json", [{"label": "yes"}, {"label": "no"}])
    framework.write_jsonl(root / "pope" / "coco" / "coco_pope_popular.json", [{"label": "yes"}, {"label": "yes"}])
    results = tmp_path / "pope.json"
    results.write_text(json.dumps([{"question_id": 0, "text": "Yes"}, {"question_id": 2, "text": "Yes"},
                                   {"question_id": 1, "text": "No."}, {"question_id": 3, "text": "No"}]))
    m = framework.registry()[0]["pope"].score(results, root)
    assert m["random"]["Accuracy"] == 1.0 and m["random"]["F1 score"] == 1.0
    assert (m["popular"]["TP"], m["popular"]["FN"]) == (1, 1)
    assert m["popular"]["F1 score"] == pytest.approx(2 / 3)
    assert m["Overall F1"] == pytest.approx((1 + 2 / 3) / 2 * 100)


# --------------------------------------------------------------------------- MME
def test_mme_answer_parsing():
    assert post_process("是的\n") == "yes" and post_process("不是") == "no" and post_process("True") == "yes"
    assert [parse_answer(a) for a in ("yes", "no", "yes, it is", "not sure", "maybe", "i think yes", "none")] == \
        ["yes", "no", "yes", "no", "other", "other", "no"]


def test_mme_acc_and_acc_plus_by_hand(tmp_path):
    """Image 1: both right. Image 2: one right ('maybe' is other). acc 3/4, acc+ 1/2, score 75 + 50."""
    lines = ["1.jpg\tq\tYes\tyes\n", "1.jpg\tq\tNo\tno\n", "2.jpg\tq\tYes\tYes, it is\n", "2.jpg\tq\tNo\tmaybe\n"]
    m = subtask_metrics(lines, "t")
    assert (m["acc"], m["acc_plus"], m["score"], m["other_num"]) == (0.75, 0.5, 125.0, 1)
    # a response with a tab makes 5 fields: upstream skips the line (the image cannot count for acc+)
    m = subtask_metrics(lines[:3] + ["2.jpg\tq\tNo\tno\tno\n"], "t")
    assert (m["acc"], m["acc_plus"]) == (1.0, 0.5)
    with pytest.raises(DataError, match="two questions"):
        subtask_metrics(lines[:3], "t")


def test_mme_totals(tmp_path):
    from internvl_chat.eval.mme import EVAL_TYPES, SUBTASKS

    for k, name in enumerate(SUBTASKS):  # every subtask perfect except OCR (score 125 as above)
        right = ["1.jpg\tq\tYes\tyes\n", "1.jpg\tq\tNo\tno\n"]
        lines = right + (["2.jpg\tq\tYes\tyes\n", "2.jpg\tq\tNo\tmaybe\n"] if name == "OCR" else right)
        (tmp_path / f"{name}.txt").write_text("".join(lines))
    m = mme_scores(tmp_path)
    assert m["Perception"] == pytest.approx(200 * 9 + 125) and m["Cognition"] == pytest.approx(200 * 4)
    assert len(EVAL_TYPES["Perception"]) == 10
    (tmp_path / "OCR.txt").unlink()
    with pytest.raises(DataError, match="OCR.txt is missing"):
        mme_scores(tmp_path)


# --------------------------------------------------------------------------- RefCOCO
def _box(answer, gt=(0, 0, 100, 100), hw=(200, 200)):
    return grounding_precision([{"answer": answer, "gt_bbox": list(gt), "hw": list(hw)}])


def test_grounding_boxes_at_the_iou_edge():
    assert _box("[[0, 0, 500, 500]]") == 1.0           # 0-1000 scale, scaled by the image's (h, w)
    assert _box("the box is [0,0,500,250]") == 1.0     # IoU exactly 0.5: correct
    assert _box("[0,0,500,245]") == 0.0                # IoU 0.49
    assert _box("[[0,0,250,500]]", hw=(200, 200)) == 1.0 and _box("[[0,0,500,250]]", hw=(100, 400)) == 0.0
    assert _box("no box here") == 0.0                  # unreadable: (0, 0, 0, 0)
    # upstream's quirk: coordinates adding up to less than 4 are taken as fractions of the image
    assert _box("[0.1, 0.1, 0.5, 0.5]") == 1.0         # [20, 20, 100, 100]: IoU 0.64
    assert _box("[[1, 0, 1, 1]]", gt=(0, 0, 1, 1), hw=(1, 1)) == 0.0


# --------------------------------------------------------------------------- the score command
def test_score_command_rescoring_an_upstream_results_file(tmp_path):
    """A ChartQA results file as upstream's evaluate_vqa.py writes it; the last output line is the metrics."""
    results = tmp_path / "chartqa_test_human_240101000000.json"
    results.write_text(json.dumps([{"question": "q", "answer": "105", "annotation": "100"},
                                   {"question": "q", "answer": "95", "annotation": "100"}]))
    done = subprocess.run([sys.executable, "-m", "internvl_chat.eval", "score", "vqa-chartqa-test-human", str(results)],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"relaxed_accuracy": 0.5}
    done = subprocess.run([sys.executable, "-m", "internvl_chat.eval", "score", "vqa-vqav2-testdev", str(results)],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 1 and "no public answers" in done.stderr and "EvalAI" in done.stderr


def test_unknown_and_unimplemented_names_get_one_line():
    with pytest.raises(framework.ConfigError, match=r"^task 'mantis' \(upstream's evaluate.sh has it\) is not "
                                                    r"implemented here; implemented: .*pope"):
        framework.resolve_tasks("pope,mantis")
    with pytest.raises(framework.ConfigError, match="unknown task 'vqa-foo'"):
        framework.resolve_tasks("vqa-foo")
    names = [t.name for t in framework.resolve_tasks("vqa,vqa-okvqa-val,refcoco")]
    assert names[:5] == ["vqa-okvqa-val", "vqa-textvqa-val", "vqa-vizwiz-val", "vqa-ai2d-test", "vqa-gqa-testdev"]
    assert len(names) == 5 + 8 and names[5] == "refcoco-val" and "refcoco+-testB" in names


def test_a_results_file_of_another_task_is_named_as_such(tmp_path):
    results = tmp_path / "refcoco_val_240101000000.json"
    results.write_text(json.dumps([{"answer": "[[0,0,1,1]]", "gt_bbox": [0, 0, 1, 1], "hw": [1, 1]}]))
    tasks = framework.registry()[0]
    with pytest.raises(DataError, match=r"answer 0 of .*refcoco_val_240101000000.json has no 'question_id'; is it a "
                                        r"vqa-textvqa-val results file\?"):
        tasks["vqa-textvqa-val"].score(results, tmp_path)
    with pytest.raises(DataError, match="not a results file"):
        results.write_text("[]")
        tasks["refcoco-val"].score(results, tmp_path)
