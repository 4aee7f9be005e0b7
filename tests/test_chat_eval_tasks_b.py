"""The part-B benchmark tasks end to end on synthetic data in upstream's layouts with the tiny chat checkpoint:
one `python -m internvl_chat.eval run` over all of them (the model loaded once), upstream's results files, the
prompts upstream builds, the answers the model gives for those prompts, and `score` on each results file giving the
metrics the run printed."""
import json
import re
from pathlib import Path

import pytest
import torch

from internvl.datakit.checkpoints import write_tiny_internvl_chat
from internvl.errors import MissingFileError
from internvl_chat.eval import framework
from internvl_chat.eval.__main__ import main

TASKS, _ = framework.registry()
NAMES = ["mmbench-dev-en", "mmbench-test-cn", "ccbench-dev", "scienceqa", "seed", "mmvp", "tiny_lvlm", "llava-bench",
         "mmhal", "mmvet", "mmvetv2", "mvbench"]
# upstream generates up to 1000 tokens for the free-form tasks; the random tiny model rarely stops by itself, so
# the run is capped (the settings themselves are tested in test_chat_eval_scorers_b.py)
MAX_NEW_TOKENS = 12
RESULTS = {"mmbench-dev-en": "mmbench_dev_20230712_*.xlsx", "mmbench-test-cn": "mmbench_test_cn_20231003_*.xlsx",
           "ccbench-dev": "ccbench_dev_cn_*.xlsx", "scienceqa": "*/sqa_test_*.jsonl", "seed": "SEEDv1_*.jsonl",
           "mmvp": "MMVP_*.jsonl", "tiny_lvlm": "updated_datasets_*.json", "llava-bench": "llava_bench_results.jsonl",
           "mmhal": "mmhal-bench_with_image_*.json", "mmvet": "mmvet_*.json", "mmvetv2": "mmvet-v2_*.json",
           "mvbench": "MVBench_????????????.json"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("partb")
    checkpoint = root / "ckpt" / "tiny-chat"
    write_tiny_internvl_chat(checkpoint)
    data = root / "data"
    for name in NAMES:
        TASKS[name].write_synthetic(data, 2)
    saved = {name: TASKS[name].max_new_tokens for name in NAMES}
    try:
        for name in NAMES:
            TASKS[name].max_new_tokens = MAX_NEW_TOKENS
        main(["run", "--checkpoint", str(checkpoint), "--tasks", ",".join(NAMES), "--data-root", str(data),
              "--out-dir", str(root / "out"), "--num-workers", "0", "--batch-size", "4"])
    finally:
        for name, value in saved.items():
            TASKS[name].max_new_tokens = value
    return root, checkpoint, data


def _results(root: Path, name: str) -> Path:
    (path,) = sorted((root / "out").glob(RESULTS[name]))
    return path


def test_every_task_writes_upstreams_results_file_and_score_reproduces_the_run(run, capsys, monkeypatch):
    root, checkpoint, data = run
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    summary = json.loads((root / "out" / "summary.json").read_text())["runs"]
    assert [r["task"] for r in summary] == NAMES
    for entry in summary:
        name = entry["task"]
        assert Path(entry["results"]) == _results(root, name)
        if entry["metrics"] is None:  # test splits and judge tasks without a judge
            assert name in ("mmbench-test-cn", "llava-bench", "mmhal", "mmvet", "mmvetv2")
            continue
        capsys.readouterr()
        main(["score", name, entry["results"], "--data-root", str(data)])
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == entry["metrics"]
    md = (root / "out" / "summary.md").read_text()
    assert str(checkpoint) in md and "mmbench-dev-en" in md and "mvbench" in md


def test_results_hold_upstreams_keys_and_prompts(run):
    root, checkpoint, data = run
    from internvl_chat.eval.xlsx import read_xlsx

    header, rows = read_xlsx(_results(root, "mmbench-dev-en"))
    assert header == ["index", "question", "A", "B", "C", "D", "prediction", "answer", "split"]
    assert len(rows) == 8 and {r[0] for r in rows} == {0, 1, 1000000, 1000001, 2000000, 2000001, 3000000, 3000001}
    header, _ = read_xlsx(_results(root, "mmbench-test-cn"))
    assert header == ["index", "question", "A", "B", "C", "D", "prediction", "split"]
    sqa = [json.loads(line) for line in _results(root, "scienceqa").read_text().splitlines()]
    assert _results(root, "scienceqa").parent.name == "ckpt_tiny-chat"  # upstream's per-model folder
    assert set(sqa[0]) == {"question", "answer", "answer_orig", "gt_answers", "image_path"}
    assert sqa[0]["question"] == ("The picture shows one shape.\nWhich shape is in the picture?\nA. circle\n"
                                  "B. square\nC. triangle\nAnswer with the option's letter from the given choices "
                                  "directly.")
    seed = [json.loads(line) for line in _results(root, "seed").read_text().splitlines()]
    assert set(seed[0]) == {"question_id", "question", "prediction", "answer"}
    mmvp = [json.loads(line) for line in _results(root, "mmvp").read_text().splitlines()]
    assert re.fullmatch(r"What colour is the shape\?\nA\. \w+\nB\. \w+\nAnswer with the option's letter from the "
                        r"given choices directly\.", mmvp[0]["question"]) and mmvp[0]["gt_answers"] in ("A", "B")
    lvlm = json.loads(_results(root, "tiny_lvlm").read_text())
    assert lvlm[0]["question"].endswith("? Answer the question using a single word or phrase.")
    assert {r["task_type"] for r in lvlm} == {"Visual_Reasoning", "Visual_Perception", "Visual_Knowledge_Acquisition",
                                               "Visual_Commonsense", "Object_Hallucination"}
    llava = [json.loads(line) for line in _results(root, "llava-bench").read_text().splitlines()]
    assert llava[0]["model_id"] == "ckpt_tiny-chat" and set(llava[0]) == {"question_id", "text", "model_id",
                                                                           "metadata"}
    mmhal = json.loads(_results(root, "mmhal").read_text())
    assert "image" not in mmhal[0] and {"model_answer", "image_content", "gt_answer"} <= set(mmhal[0])
    assert list(json.loads(_results(root, "mmvet").read_text())) == ["v1_0", "v1_1"]
    assert list(json.loads(_results(root, "mmvetv2").read_text())) == ["v2_0", "v2_1"]
    mv = json.loads(_results(root, "mvbench").read_text())
    assert len(mv) == 20 and mv[0]["question"].startswith("Frame1: <image>\nFrame2: <image>\n")
    assert mv[0]["question"].count("<image>") == 16 and mv[0]["question"].endswith("\nOnly give the best option.")
    final = json.loads(Path(str(_results(root, "mvbench"))[:-5] + "_result_final.json").read_text())
    from internvl_chat.eval.mvbench import DATA_LIST
    assert set(final) == {*DATA_LIST, "Avg"}


def test_answers_are_the_models_answers_to_those_prompts(run):
    """The run's answers equal model.chat on the task's own prompt and pixels: a base64 image of the MMBench TSV
    (batched in the run) and the 16 sampled frames of an MVBench clip, one <image> each."""
    root, checkpoint, data = run
    from internvl.models.chat_model import InternVLChatModel
    from internvl.models.tokenization import load_tokenizer
    from internvl_chat.eval.items import option_post_process
    from internvl_chat.eval.xlsx import read_xlsx

    model = InternVLChatModel.from_pretrained(str(checkpoint)).eval()
    tokenizer = load_tokenizer(str(checkpoint))
    config = dict(num_beams=1, max_new_tokens=MAX_NEW_TOKENS, min_new_tokens=1, do_sample=False)
    dataset_of = lambda items: framework.ItemDataset(items, 56, False, 6, model.config.use_thumbnail)  # noqa: E731

    items = TASKS["mmbench-dev-en"].load(data)
    pixels, counts, _ = dataset_of(items)[3]
    with torch.inference_mode():
        answer = model.chat(tokenizer, pixels, items[3].question, config)
    header, rows = read_xlsx(_results(root, "mmbench-dev-en"))
    by_index = {r[0]: dict(zip(header, r)) for r in rows}
    assert by_index[items[3].meta["row"]["index"]]["prediction"] == option_post_process(answer, items[3].meta["options"])

    items = TASKS["mvbench"].load(data)
    pixels, counts, _ = dataset_of(items)[0]
    assert counts == [1] * 16 and pixels.shape == (16, 3, 56, 56)
    with torch.inference_mode():
        answer = model.chat(tokenizer, pixels, items[0].question, config, num_patches_list=counts)
    assert json.loads(_results(root, "mvbench").read_text())[0]["pred"] == answer


def test_a_missing_file_names_the_task_the_file_and_where_to_get_it(tmp_path):
    for name, fragment in [("mmbench-dev-en", "mmbench_dev_20230712.tsv"), ("seed", "seed.jsonl"),
                           ("mmvp", "Questions.csv"), ("tiny_lvlm", "updated_datasets"),
                           ("mvbench", "action_sequence.json"), ("llava-bench", "questions.jsonl"),
                           ("mmhal", "mmhal-bench_with_image.jsonl"), ("mmvetv2", "mm-vet-v2.json"),
                           ("mmmu-val", "MMMU/MMMU"), ("mathvista-testmini", "MathVista/data")]:
        with pytest.raises(MissingFileError) as err:
            TASKS[name].load(tmp_path)
        message = str(err.value)
        assert message.startswith(f"{name}: ") and fragment in message and "README" in message, message


def test_mmmu_prompts_and_image_rule(monkeypatch):
    """Upstream's MMMU question and input: with --dynamic the first image at twice its size tiled (a 64 px image
    -> 128 px -> 2 x 2 tiles of 56 + thumbnail) and every other image one tile, all behind one <image>; without
    it the first image only. (Mutation tried: the first image not enlarged -> 1 + 1 tiles: killed.)"""
    task = TASKS["mmmu-val"]
    records = task.synthetic_records(4)
    records[0]["image_2"] = dict(records[1]["image_1"])
    monkeypatch.setattr(task, "read_split", lambda data_root: records)
    items = task.load(Path("unused"))
    assert items[0].question == ("<image 1> What colour is the shape?\nA. red\nB. green\nC. blue\nD. yellow\n"
                                 "Answer with the option's letter from the given choices directly.")
    assert items[1].question == "<image 1> What shape is it?\nAnswer the question using a single word or phrase."
    assert items[0].images == [] and items[0].meta["options"]["B"] == "green"
    tiles, counts = items[0].pixels(56, True, 6, True)
    assert counts == [6] and tiles.shape == (6, 3, 56, 56)
    tiles, counts = items[0].pixels(56, False, 6, True)
    assert counts == [1]
    cot = TASKS["mmmu-val-cot"]
    monkeypatch.setattr(cot, "read_split", lambda data_root: records)
    question = cot.load(Path("unused"))[1].question
    assert question.startswith("Your task is to answer the question below. Give step by step reasoning")
    assert question.endswith("Question:\n\n<image 1> What shape is it?\nAnswer the question using a single word or "
                             "phrase.") and cot.max_new_tokens == 4096


@pytest.mark.parametrize("name", ["mmmu-val", "mmmu-test-cot"])
def test_mmmu_end_to_end(tmp_path, name, capsys, monkeypatch):
    """The run over MMMU records (read_split stands in for the parquet files, which need pyarrow): upstream's
    id -> answer .json and the .jsonl beside it, the scores of main_eval_only on it, test as a submission."""
    task = TASKS[name]
    records = task.synthetic_records(4)
    monkeypatch.setattr(task, "read_split", lambda data_root: records)
    monkeypatch.setattr(task, "max_new_tokens", MAX_NEW_TOKENS)
    checkpoint = tmp_path / "ckpt"
    write_tiny_internvl_chat(checkpoint)
    main(["run", "--checkpoint", str(checkpoint), "--tasks", name, "--data-root", str(tmp_path / "data"),
          "--out-dir", str(tmp_path / "out"), "--num-workers", "0", "--dynamic", "--max-num", "2"])
    (entry,) = json.loads((tmp_path / "out" / "summary.json").read_text())["runs"]
    results = Path(entry["results"])
    split = "validation" if name == "mmmu-val" else "test"
    assert set(json.loads(results.read_text())) == {f"{split}_Art_1", f"{split}_Art_2", f"{split}_Math_1",
                                                    f"{split}_Math_2"}
    lines = [json.loads(line) for line in results.with_suffix(".jsonl").read_text().splitlines()]
    assert len(lines) == 4 and {"question", "answer", "gt_answers", "data_id"} <= set(lines[0])
    if name == "mmmu-val":
        assert results.name.startswith("MMMU_validation_") and set(entry["metrics"]) >= {"Overall", "Art", "Math"}
        capsys.readouterr()
        main(["score", name, str(results), "--data-root", str(tmp_path / "data")])
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == entry["metrics"]
    else:
        assert results.name.startswith("MMMU_test_cot_") and entry["metrics"] is None
        assert "answer_orig" in lines[0]


def test_parquet_files_round_trip(tmp_path, monkeypatch):
    """MMMU and MathVista read the dataset repositories' parquet files (needs pyarrow): the items read from the
    files are those of the records written into them."""
    pytest.importorskip("pyarrow")
    mmmu, mathvista = TASKS["mmmu-val"], TASKS["mathvista-testmini"]
    mmmu.write_synthetic(tmp_path, 4)
    mathvista.write_synthetic(tmp_path, 4)
    from_files = [(i.question, i.meta["options"]) for i in mmmu.load(tmp_path)]
    records = mmmu.synthetic_records(4)
    monkeypatch.setattr(mmmu, "read_split", lambda data_root: records)
    assert from_files == [(i.question, i.meta["options"]) for i in mmmu.load(tmp_path)]
    assert [i.question for i in mathvista.load(tmp_path)] == [r["query"] for r in mathvista.synthetic_rows(4)]
    assert (tmp_path / "MathVista" / "annot_testmini.json").exists()


def test_mvbench_frames_are_sampled_as_upstream(tmp_path):
    """Episodic Reasoning: numbered JPEGs read at 3 fps from index 1; with start 0 s and end 1 s over 8 files
    the 16 segments of frames 1..3 give [1]*5 + [2]*7 + [3]*4 (numpy's half-to-even rounding). Frame k is grey
    level 30 * k; each frame is one tile unless --dynamic. (Mutations tried: first index 0, one tile per frame
    ignored without --dynamic: killed.)"""
    from PIL import Image

    from internvl_chat.eval.mvbench import FramePixels

    folder = tmp_path / "clip"
    folder.mkdir()
    for k in range(1, 9):
        Image.new("RGB", (112, 56), (30 * k,) * 3).save(folder / f"{k:05d}.jpg", quality=100)
    pixels, counts = FramePixels(folder, "frame", (0.0, 1.0), 16, "mvbench")(56, False, 6, True)
    assert counts == [1] * 16
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    grey = ((pixels * std + mean) * 255).mean(dim=(1, 2, 3))
    assert [round(g.item() / 30) for g in grey] == [1] * 5 + [2] * 7 + [3] * 4
    _, counts = FramePixels(folder, "frame", (0.0, 1.0), 16, "mvbench")(56, True, 6, True)
    assert counts == [3] * 16  # 2 x 1 tiles + the thumbnail
