"""The part-B benchmark scorers (MMBench / CCBench, ScienceQA, SEED, MMVP, Tiny-LVLM, MMMU, MVBench, the GPT-judge
tasks) against hand-computed values on crafted answers, upstream's quirks included, and the GPT judge against an
OpenAI-compatible server of the test's own on 127.0.0.1."""
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from internvl.errors import ConfigError, DataError
from internvl_chat.eval import framework, judge
from internvl_chat.eval.items import option_post_process
from internvl_chat.eval.mmbench import build_question, circular_scores, read_tsv
from internvl_chat.eval.mmmu import (eval_open, mmmu_scores, parse_multi_choice_response, parse_open_response,
                                     post_process as mmmu_post_process)
from internvl_chat.eval.multiple_choice import mmvp_accuracy, scienceqa_post_process, seed_scores
from internvl_chat.eval.mvbench import check_ans, final_result, qa_template
from internvl_chat.eval.tiny_lvlm import normalize, vqa_eval
from internvl_chat.eval.xlsx import read_xlsx, write_xlsx

TASKS, _ = framework.registry()


# --------------------------------------------------------------------------- multiple-choice post-processing
@pytest.mark.parametrize("pred, expected", [
    ("B", "B"),                          # one character: as it is
    (" C. because blue ", "C"),          # first character an option letter
    ("It is blue.", "C"),                # an option's text in the answer
    ("It is purple.", "It is purple."),  # nothing: the answer as it is
    ("", ""),                            # upstream raises IndexError here
])
def test_option_post_process(pred, expected):
    assert option_post_process(pred, {"A": "red", "B": "green", "C": "blue"}) == expected


@pytest.mark.parametrize("pred, expected", [
    ("(B)", "B"),        # '(' is no option: '(X)' -> X
    ("E. none", "E"),    # 'X.' -> X even for a letter that is no option
    ("A cat", "A"),
    ("a green one", "B"),
    ("(B", "(B"),        # upstream: IndexError
])
def test_scienceqa_post_process(pred, expected):
    assert scienceqa_post_process(pred, {"A": "red", "B": "green", "C": "blue"}) == expected


# --------------------------------------------------------------------------- MMBench
def test_mmbench_tsv_reads_as_pandas_does(tmp_path):
    """'NA', 'None' and '' are missing (no option, no hint); a numeric column with a missing value is float."""
    path = tmp_path / "m.tsv"
    path.write_text("index\tquestion\thint\tA\tB\tC\tD\tanswer\timage\n"
                    "0\tHow many?\tNA\t3\t4\tNone\t\tA\tx\n"
                    "1\tWhich?\tLook.\t5\t6\t7\t8\tB\tx\n", encoding="utf-8")
    header, rows = read_tsv(path)
    assert rows[0]["hint"] is None and rows[0]["C"] is None and rows[0]["A"] == 3
    question, options = build_question(rows[0], "en")
    assert question == ("How many?\nA. 3\nB. 4\n"
                        "Answer with the option's letter from the given choices directly.")
    question, options = build_question(rows[1], "cn")
    assert question == "Look.\nWhich?\nA. 5\nB. 6\nC. 7.0\nD. 8.0\n请直接回答选项字母。"  # C, D: float columns
    assert options == {"A": "5", "B": "6", "C": "7.0", "D": "8.0"}


def test_mmbench_circular_evaluation_by_hand():
    """Question 0: all 4 rotations right; question 1: 3 of 4; question 2: 1 of 1. Circular 2/3, rows 8/9.
    (Mutation tried: any() for all() gives 1.0: killed.)"""
    rows = []
    for k in range(4):
        rows.append({"index": 0 + k * 1_000_000, "prediction": "A", "answer": "A", "category": "x"})
        rows.append({"index": 1 + k * 1_000_000, "prediction": "B" if k else "C", "answer": "B", "category": "y"})
    rows.append({"index": 2, "prediction": " D", "answer": "D", "category": "y"})
    scores = circular_scores(rows)
    assert scores["Overall"] == pytest.approx(2 / 3)
    assert scores["Overall_vanilla"] == pytest.approx(8 / 9)
    assert scores["x"] == 1.0 and scores["y"] == 0.5


def test_xlsx_round_trip_and_an_openpyxl_style_file(tmp_path):
    path = write_xlsx(tmp_path / "a.xlsx", ["index", "question", "prediction"],
                      [[0, "a < b & \"c\"", "A"], [1000001, "两个", None], [2, 1.5, "B"]])
    header, rows = read_xlsx(path)
    assert header == ["index", "question", "prediction"]
    assert rows == [[0, "a < b & \"c\"", "A"], [1000001, "两个", None], [2, 1.5, "B"]]
    # shared strings and a skipped cell, as openpyxl writes them
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    other = tmp_path / "b.xlsx"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("xl/sharedStrings.xml", f'<sst {ns}><si><t>index</t></si><si><t>prediction</t></si>'
                                           f'<si><t>C</t></si></sst>')
        z.writestr("xl/worksheets/sheet1.xml",
                   f'<worksheet {ns}><sheetData><row r="1"><c r="A1" t="s"><v>0</v></c><c r="C1" t="s"><v>1</v></c>'
                   f'</row><row r="2"><c r="A2"><v>7</v></c><c r="C2" t="s"><v>2</v></c></row></sheetData></worksheet>')
    assert read_xlsx(other) == (["index", "", "prediction"], [[7, None, "C"]])
    (tmp_path / "c.xlsx").write_text("not a zip")
    with pytest.raises(DataError, match="c.xlsx: not an .xlsx file"):
        read_xlsx(tmp_path / "c.xlsx")


def test_mmbench_score_reads_the_spreadsheet_and_test_splits_are_submissions(tmp_path):
    task = TASKS["mmbench-dev-en"]
    header = ["index", "question", "A", "B", "prediction", "answer"]
    path = write_xlsx(tmp_path / "r.xlsx", header, [[0, "q", "x", "y", "A", "A"], [1000000, "q", "y", "x", "A", "B"],
                                                    [1, "q", "x", "y", "B", "B"]])
    assert task.score(path, tmp_path) == {"Overall": 0.5, "Overall_vanilla": pytest.approx(2 / 3)}
    assert TASKS["mmbench-test-en"].score(path, tmp_path) is None


# --------------------------------------------------------------------------- SEED, MMVP, ScienceQA
def test_seed_raw_accuracy_and_calculation_py_first_character_rule():
    results = [{"question_id": "1", "prediction": "A", "answer": "A"},
               {"question_id": "2", "prediction": "B.", "answer": "B"},   # raw: wrong; first character: right
               {"question_id": "3", "prediction": "", "answer": "C"}]
    annotation = {"question_type": {"Scene Understanding": 1, "Action Recognition": 10},
                  "questions": [{"question_id": 1, "question_type_id": 1, "answer": "A"},
                                {"question_id": 2, "question_type_id": 1, "answer": "B"},
                                {"question_id": 3, "question_type_id": 10, "answer": "C"}]}
    scores = seed_scores(results, annotation)
    assert scores["Acc@1"] == pytest.approx(1 / 3)
    assert scores["Total accuracy"] == pytest.approx(200 / 3)
    assert scores["Image accuracy"] == 100.0 and scores["Video accuracy"] == 0.0
    assert scores["Scene Understanding"] == 100.0 and scores["Action Recognition"] == 0.0
    assert seed_scores(results, None) == {"Acc@1": pytest.approx(1 / 3)}


def test_mmvp_counts_pairs_in_file_order():
    """Pairs (right, right), (right, wrong), (wrong, wrong) and a trailing single: 1 / 3. (Mutation tried:
    counting single questions gives 4/7: killed.)"""
    rows = [{"answer": a, "gt_answers": g} for a, g in
            [("A", "A"), ("B", "B"), ("A", "A"), ("A", "B"), ("B", "A"), ("A", "B"), ("A", "A")]]
    assert mmvp_accuracy(rows) == pytest.approx(1 / 3)
    with pytest.raises(DataError, match="pairs"):
        mmvp_accuracy(rows[:1])


def test_scienceqa_score(tmp_path):
    path = tmp_path / "sqa_test_1.jsonl"
    path.write_text("".join(json.dumps({"answer": a, "gt_answers": g}) + "\n"
                            for a, g in [("A", "A"), ("B", "C"), ("C", "C"), ("(A)", "A")]))
    assert TASKS["scienceqa"].score(path, tmp_path) == {"Acc@1": 0.5}


# --------------------------------------------------------------------------- Tiny-LVLM
@pytest.mark.parametrize("raw, normalized", [
    ("The Two dogs.", "2 dogs"),      # articles, number words, final period
    ("dont-stop", "don't stop"),      # '-' between words: a space; contractions
    ("3.5 m", "3.5 m"),               # a period before a digit stays
    ("x,y", "x y"),                   # "," with no space around it: a space
    ("x, y", "x y"),                  # ", " present: removed
    ("it's", "it's"),                 # "'" is not in Tiny-LVLM's punctuation list (VQAv2's has it)
])
def test_tiny_lvlm_normalization(raw, normalized):
    assert normalize(raw) == normalized


def test_tiny_lvlm_period_quirk_and_whole_word_match():
    assert normalize("." * 40 + "x") == "." * 8 + "x"  # re.UNICODE as sub()'s count: 32 periods go
    assert vqa_eval("I see two dogs here", "2 dogs") == 1       # normalized ground truth inside, as words
    assert vqa_eval("twodogs", "two") == 0                      # not a whole word
    assert vqa_eval("a cat", ["dog", "Cat!"]) == 1              # any of several ground truths


def test_tiny_lvlm_overall_is_the_sum_of_the_abilities(tmp_path):
    """Visual_Reasoning 1/2 right, Object_Hallucination 1/1: Overall 1.5 (the sum, as upstream prints it).
    (Mutation tried: the mean gives 0.75: killed.)"""
    rows = [{"image_path": "d/Visual_Reasoning/0.jpg", "answer": "yes", "gt_answers": "yes"},
            {"image_path": "d/Visual_Reasoning/1.jpg", "answer": "no", "gt_answers": "yes"},
            {"image_path": "d/Object_Hallucination/0.jpg", "answer": "There are two.", "gt_answers": "2"}]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(rows))
    assert TASKS["tiny_lvlm"].score(path, tmp_path) == {"Visual_Reasoning": 0.5, "Object_Hallucination": 1.0,
                                                        "Overall": 1.5}
    rows[0]["image_path"] = "d/Elsewhere/0.jpg"
    path.write_text(json.dumps(rows))
    with pytest.raises(DataError, match="ability folders"):
        TASKS["tiny_lvlm"].score(path, tmp_path)


# --------------------------------------------------------------------------- MMMU
def test_mmmu_open_response_parsing_edge_cases():
    # lowercased before the sentence split, so only newlines split; '=' counts in the last part only
    assert parse_open_response("The answer is 3,000 dollars. So the total = 12.5") == [12.5]
    # "1,234": the comma pattern gives 1234 and the simple pattern also finds "234" (upstream's regexes)
    assert sorted(parse_open_response("so x is 1,234\nthe answer is fast"), key=str) == [1234.0, 234.0, "fast"]
    assert sorted(parse_open_response("x")) == [" x", "x "]         # one character padded: no trivial match
    assert sorted(parse_open_response("2e3")) == [3.0, 2000.0]  # the simple pattern also finds the exponent
    assert eval_open("12.5", parse_open_response("so it is 12.50")) is True   # numbers at 2 places
    assert eval_open(["1/64", "0.0156"], parse_open_response("the result is 1/64")) is True
    assert eval_open("C", parse_open_response("c")) is True
    assert eval_open("C", parse_open_response("cat")) is False


def test_mmmu_multiple_choice_parser():
    index2ans = {"A": "cat", "B": "dog", "C": "cow"}
    assert parse_multi_choice_response("(A) cat or (B) dog", ["A", "B", "C"], index2ans) == "B"  # last (X)
    assert parse_multi_choice_response("B", ["A", "B", "C"], index2ans) == "B"
    assert parse_multi_choice_response("I think the answer here is a dog", ["A", "B", "C"], index2ans) == "B"
    assert parse_multi_choice_response("dog", ["A", "B", "C"], index2ans) in "ABC"   # <= 5 words: random
    # the -cot tasks: the text after "Final answer:" through the parser
    assert mmmu_post_process("Let me think.\nFinal answer: (C)", index2ans, cot=True) == "C"
    assert mmmu_post_process("C) cow", index2ans) == "C"


def test_mmmu_scores_by_hand():
    """Art: 1 of 2 right (the multiple-choice answer is compared as it is: 'A.' is wrong); Math: 2 of 2.
    Art and Design 0.5, Science 1.0, Overall 3/4."""
    outputs = {"validation_Art_1": "A.", "validation_Art_2": "the answer is 4",
               "validation_Math_1": "B", "validation_Math_2": "it is 1,000"}
    answers = {"validation_Art_1": {"question_type": "multiple-choice", "ground_truth": "A"},
               "validation_Art_2": {"question_type": "short-answer", "ground_truth": "4"},
               "validation_Math_1": {"question_type": "multiple-choice", "ground_truth": "B"},
               "validation_Math_2": {"question_type": "short-answer", "ground_truth": "1000"}}
    scores = mmmu_scores(outputs, answers)
    assert scores["Overall"] == 0.75 and scores["Art"] == 0.5 and scores["Math"] == 1.0
    assert scores["Overall-Art and Design"] == 0.5 and scores["Overall-Science"] == 1.0
    with pytest.raises(DataError, match="validation_Art_9"):
        mmmu_scores({"validation_Art_9": "A"}, answers)


# --------------------------------------------------------------------------- MVBench
def test_mvbench_question_and_check_ans():
    question, answer = qa_template({"question": "What?", "candidates": ["red", "blue"], "answer": "blue"})
    assert question == "Question: What?\nOptions:\n(A) red\n(B) blue" and answer == "(B) blue"
    assert check_ans("(B) blue", "(B) blue") and check_ans("B", "(B) blue") and check_ans("B.", "(B) blue")
    assert check_ans("Answer: (B)", "(B) blue")
    assert not check_ans("(A) red", "(B) blue") and not check_ans("blue", "(B) blue")
    assert check_ans("", "(B) blue")  # upstream's quirk: an empty answer counts as right
    scores = final_result([{"pred": "(B)", "gt": "(B) x", "task_type": "T1"},
                           {"pred": "(A)", "gt": "(B) x", "task_type": "T1"},
                           {"pred": "C", "gt": "(C) y", "task_type": "T2"}])
    assert scores == {"T1": 50.0, "T2": 100.0, "Avg": pytest.approx(200 / 3)}


# --------------------------------------------------------------------------- GPT-judge tasks
def test_llava_bench_review_parsing_and_summary():
    assert judge.parse_score("8 6\nbecause") == [8.0, 6.0]
    assert judge.parse_score("8,6") == [8.0, 6.0]
    assert judge.parse_score("8, 6") == [-1, -1]  # upstream: ',' -> ' ' leaves two spaces, three fields
    assert judge.parse_score("Assistant 1: 8") == [-1, -1]
    reviews = [{"category": "llava_bench_conv", "tuple": [8.0, 6.0]},
               {"category": "llava_bench_conv", "tuple": [10.0, 4.0]},
               {"category": "llava_bench_detail", "tuple": [5.0, 5.0]}]
    scores = judge.summarize_reviews(reviews)
    # conv: means 9, 5 -> 55.6; all: means 7.667, 5.0 -> 65.2
    assert scores["llava_bench_conv"] == 55.6 and scores["llava_bench_detail"] == 100.0
    assert scores["all"] == 65.2 and scores["all_gpt4"] == 76.7 and scores["all_model"] == 50.0


def test_mmhal_ratings():
    responses = ["ok. Rating: 5, very informative", "Rating: 2", "rating: 3 or Rating: 4", "no rating", "Rating: 3"]
    scores = judge.mmhal_scores(responses)
    # ratings 5, 2, 0 (two found), 0 (none), 3: average 2.0; hallucination (< 3) 3 of 5
    # (mutation tried: <= 3 as hallucination gives 0.8: killed)
    assert scores["Average score"] == 2.0 and scores["Hallucination rate"] == 0.6
    assert scores["type 0"] == 5 and scores["type 3"] == 0 and scores["type 4"] == 3


def test_mathvista_normalization_and_scores():
    choices = ["red", "green", "blue"]
    assert judge.levenshtein("kitten", "sitting") == 3
    assert judge.normalize_extracted_answer("(B)", choices, "multi_choice", "text", None) == "green"
    assert judge.normalize_extracted_answer("C", choices, "multi_choice", "text", None) == "blue"
    assert judge.normalize_extracted_answer("gren", choices, "multi_choice", "text", None) == "green"
    assert judge.normalize_extracted_answer("3.0", None, "free_form", "integer", None) == "3"
    assert judge.normalize_extracted_answer("x", None, "free_form", "integer", None) is None
    assert judge.normalize_extracted_answer("1.456", None, "free_form", "float", 2.0) == "1.46"
    assert judge.rule_extraction("blue", {"question_type": "multi_choice", "choices": choices,
                                          "answer_type": "text"}) == "blue"
    assert judge.rule_extraction("7", {"question_type": "free_form", "choices": None, "answer_type": "integer"}) == "7"
    assert judge.rule_extraction("It is 7", {"question_type": "free_form", "choices": None,
                                             "answer_type": "integer"}) is None
    results = {"1": {"extraction": "B", "choices": choices, "question_type": "multi_choice", "answer_type": "text",
                     "precision": None, "answer": "green", "metadata": {"task": "vqa", "skills": ["a", "b"]}},
               "2": {"extraction": "8", "choices": None, "question_type": "free_form", "answer_type": "integer",
                     "precision": None, "answer": "7", "metadata": {"task": "math", "skills": ["a"]}}}
    scores = judge.mathvista_scores(results, {})
    assert scores["accuracy"] == 50.0 and scores["task/vqa"] == 100.0 and scores["task/math"] == 0.0
    assert scores["skills/a"] == 50.0 and scores["skills/b"] == 100.0
    assert results["1"]["true_false"] is True and results["2"]["prediction"] == "8"


class _Judge(BaseHTTPRequestHandler):
    replies: list = []
    requests: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Judge.requests.append((self.path, self.headers["Authorization"], body))
        reply = _Judge.replies.pop(0)
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_server(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _Judge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.server_port}/v1")
    monkeypatch.delenv("INTERNVL_JUDGE_MODEL", raising=False)
    _Judge.requests.clear()
    yield _Judge
    server.shutdown()


def test_llava_bench_is_judged_through_the_endpoint_and_reviews_are_reused(tmp_path, judge_server, monkeypatch):
    task = TASKS["llava-bench"]
    task.write_synthetic(tmp_path, 2)  # categories conv, detail
    results = task.write_results([{"question_id": i, "text": f"answer {i}", "model_id": "m", "metadata": {}}
                                  for i in range(2)], tmp_path / "out", "a/b", "0")
    judge_server.replies[:] = ["8 6\nfine", "4 4\nequal"]
    scores = task.score(results, tmp_path)
    assert scores["llava_bench_conv"] == 75.0 and scores["llava_bench_detail"] == 100.0 and scores["all"] == 83.3
    path, auth, body = judge_server.requests[0]
    assert path == "/v1/chat/completions" and auth == "Bearer test-key"
    assert body["model"] == "gpt-4-0613" and body["temperature"] == 0.2 and body["max_tokens"] == 1024
    content = body["messages"][1]["content"]
    assert content.startswith("[Context]\na ") and "[Assistant 2]\nanswer 0\n\n[End of Assistant 2]" in content
    assert content.endswith(judge.LLAVA_RULES["llava_bench_conv"]["prompt"] + "\n\n")
    assert task.score(results, tmp_path) == scores and len(judge_server.requests) == 2  # reviews reused
    monkeypatch.setenv("INTERNVL_JUDGE_MODEL", "local-model")
    judge_server.replies[:] = ["Rating: 4"] * 2
    mmhal = TASKS["mmhal"]
    mmhal.write_synthetic(tmp_path, 2)
    records = [mmhal.record(item, "a shape", "a/b") for item in mmhal.load(tmp_path)]
    assert mmhal.score(mmhal.write_results(records, tmp_path / "out", "a/b", "0"), tmp_path)["Average score"] == 4
    assert judge_server.requests[-1][2]["model"] == "local-model"
    assert judge_server.requests[-1][2]["messages"][0]["content"].rstrip().endswith("a shape")


def test_without_a_judge_scoring_says_what_it_needs(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    task = TASKS["llava-bench"]
    task.write_synthetic(tmp_path, 1)
    results = task.write_results([{"question_id": 0, "text": "x", "model_id": "m", "metadata": {}}],
                                 tmp_path, "a/b", "0")
    assert task.score(results, tmp_path) is None
    line = task.unscored(results)
    assert "\n" not in line and "OPENAI_API_KEY" in line and str(results) in line
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        judge.chat_completion("hi", "gpt-4o", 0.0)


def test_a_failing_endpoint_is_named(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens on the discard port
    with pytest.raises(ConfigError, match=r"127.0.0.1:9/v1/chat/completions failed 2 times"):
        judge.chat_completion("hi", "gpt-4o", 0.0, retries=2, sleep=0.0)


def test_the_tasks_keep_upstreams_generation_settings():
    expected = {"mmbench-dev-en": 100, "ccbench-dev": 100, "scienceqa": 100, "seed": 100, "mmvp": 100,
                "tiny_lvlm": 30, "mmmu-val": 10, "mmmu-val-cot": 4096, "mvbench": 1000, "llava-bench": 1000,
                "mmhal": 1024, "mathvista-testmini": 4096, "mmvet": 1000, "mmvetv2": 1000}
    assert {name: TASKS[name].max_new_tokens for name in expected} == expected
    assert all(TASKS[name].min_new_tokens == 1 for name in expected)
