"""Fine-tuning data: every bad input named by file, line and field; check and inspect; tiling, batches and order."""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from chat_finetune_helpers import DATA_FLAGS, base_checkpoint, training_tokenizer
from chat_finetune_helpers import _drop_run_logging  # noqa: F401 (autouse fixture)
from internvl.data.chat_image import dynamic_preprocess
from internvl.errors import ConfigError, MissingFileError
from internvl_chat.chat_data.__main__ import main as data_main
from internvl_chat.chat_data.chat_jsonl import SampleProblem, parse_sample, read_meta, write_synthetic_chat_data
from internvl_chat.chat_data.dataset import (ChatSampler, DataOptions, collate, count_tiles, length_grouped_indices)
from internvl_chat.chat_data.preprocess import check_template

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("chatdata")


@pytest.fixture(scope="module")
def mixed(root):
    """Every kind of sample in one file: caption, multi-turn QA, two images, pure text, Chinese, video."""
    return write_synthetic_chat_data(root / "mixed", 12, kinds=("caption", "qa", "multi", "text", "caption_zh", "video"),
                                     video_frames=4)


# ------------------------------------------------------------------------------------------- bad input
def _meta(tmp_path, content) -> Path:
    path = tmp_path / "meta.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_meta_json_errors_name_the_file_dataset_and_key(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("")
    cases = [
        ("[1, 2]", ConfigError, "expected a JSON object of datasets"),
        ("{not json", ConfigError, "not valid JSON"),
        ({"ds": {"annotation": str(jsonl)}}, ConfigError, "dataset 'ds' has no 'root'"),
        ({"ds": {"root": "x"}}, ConfigError, "dataset 'ds' has no 'annotation'"),
        ({"ds": {"root": "x", "annotation": str(tmp_path / "missing.jsonl")}}, MissingFileError,
         "annotation file .*missing.jsonl does not exist"),
        ({"ds": {"root": "x", "annotation": str(tmp_path / "a.json")}}, ConfigError, "is not a .jsonl file"),
        ({"ds": {"root": "x", "annotation": str(jsonl), "repeat_time": 2.5}}, ConfigError,
         "repeat_time 2.5 is above 1 and not an integer"),
        ({"ds": {"root": "x", "annotation": str(jsonl), "repeat": 2}}, ConfigError, r"unknown key\(s\) \['repeat'\]"),
    ]
    for content, error, message in cases:
        with pytest.raises(error, match=message) as info:
            read_meta(_meta(tmp_path, content))
        assert "meta.json" in str(info.value)
    with pytest.raises(MissingFileError, match="--meta_path .*nope.json: no such file"):
        read_meta(tmp_path / "nope.json")


def test_repeat_time_keeps_a_prefix_or_repeats(tmp_path):
    from internvl_chat.chat_data.chat_jsonl import read_lines

    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(f'{{"n": {i}}}\n' for i in range(10)) + "\n")  # a blank line is no sample
    half, = read_meta(_meta(tmp_path, {"ds": {"root": "x", "annotation": str(jsonl), "repeat_time": 0.35}}))
    assert [line for line, _ in read_lines(half)] == [1, 2, 3]
    twice, = read_meta(_meta(tmp_path, {"ds": {"root": "x", "annotation": str(jsonl), "repeat_time": 2}}))
    assert [line for line, _ in read_lines(twice)] == list(range(1, 11)) * 2


def test_each_bad_line_is_named_with_its_field(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.jpg")
    conv = [{"from": "human", "value": "<image>\nhi"}, {"from": "gpt", "value": "x"}]
    cases = [
        ('{"conversations": [', "not valid JSON"),
        ('[1]', "expected a JSON object"),
        (json.dumps({"image": "ok.jpg"}), "no 'conversations' key"),
        (json.dumps({"conversations": []}), "'conversations' is empty"),
        (json.dumps({"conversations": [{"value": "q"}, {"from": "gpt", "value": "a"}]}), r"conversations\[0\] has no 'from'"),
        (json.dumps({"conversations": [{"from": "human"}, {"from": "gpt", "value": "a"}]}), r"conversations\[0\] has no 'value'"),
        (json.dumps({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": " "}]}),
         r"conversations\[1\].value is empty"),
        (json.dumps({"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]}),
         r"conversations\[0\].from is 'gpt', expected 'human'"),
        (json.dumps({"conversations": [{"from": "human", "value": "q"}, {"from": "human", "value": "q"}]}),
         r"conversations\[1\].from is 'human', expected 'gpt'"),
        (json.dumps({"conversations": [{"from": "human", "value": "q"}]}), "the last turn is from 'human'"),
        (json.dumps({"image": "missing.jpg", "conversations": conv}), "file not found: .*missing.jpg"),
        (json.dumps({"image": ["ok.jpg", "ok.jpg"], "conversations": conv}),
         r"1 '<image>' placeholder\(s\) for 2 image\(s\)"),
        (json.dumps({"conversations": conv}), r"1 '<image>' placeholder\(s\) for 0 image\(s\)"),
        (json.dumps({"image": "ok.jpg", "conversations": [conv[0], {"from": "gpt", "value": "<image>"}]}),
         "a gpt answer contains '<image>'"),
    ]
    for i, (line, message) in enumerate(cases):
        with pytest.raises(SampleProblem, match=message) as info:
            parse_sample(f"data.jsonl:{i + 1}", line, str(tmp_path))
        assert str(info.value).startswith(f"data.jsonl:{i + 1}: ")
    single = parse_sample("data.jsonl:99", json.dumps({"image": "ok.jpg", "conversations": [
        {"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}]}), str(tmp_path))
    assert single.turns[0] == ("human", "<image>\nhi")  # upstream puts the placeholder in front


def test_unknown_template_and_checkpoint_without_tokenizer(root, tmp_path):
    with pytest.raises(ConfigError, match="--conv_style 'vicuna_v1' has no training recipe; use one of"):
        check_template("vicuna_v1")
    from internvl_chat.chat_data.build import load_training_tokenizer

    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text("{}")
    with pytest.raises(MissingFileError, match="has no tokenizer"):
        load_training_tokenizer(str(bare), 512)


# ------------------------------------------------------------------------------------------- check and inspect
def _data_flags(base, meta):
    return ["--meta_path", str(meta), "--model_name_or_path", str(base), "--conv_style", "internlm2-chat",
            *DATA_FLAGS, "--dynamic_image_size", "True", "--use_thumbnail", "True", "--max_dynamic_patch", "4",
            "--min_num_frame", "2", "--max_num_frame", "3"]


def test_check_reports_every_problem_with_file_and_line(root, mixed, tmp_path, capsys):
    base = base_checkpoint(root)
    assert data_main(["check", *_data_flags(base, mixed)]) == 0
    good = capsys.readouterr().out
    # the six kinds of write_synthetic_chat_data, two of each: caption, qa and caption_zh are single-image
    assert ("checked 12 samples in 1 dataset(s) of " + str(mixed) + ": 12 usable (6 image, 2 multi-image, 2 text, "
            "2 video), 0 unusable; 0 longer than --max_seq_length 512") in good
    jsonl = Path(json.loads(mixed.read_text())["synthetic"]["annotation"])
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    lines = jsonl.read_text().splitlines()
    lines += ['{"id": 1, "conversations": [', json.dumps({"image": str(tmp_path / "corrupt.jpg"), "conversations": [
        {"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]})]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    meta = _meta(tmp_path, {"bad": {"root": str(jsonl.parent), "annotation": str(bad)}})
    assert data_main(["check", *_data_flags(base, meta), "--max_seq_length", "220"]) == 1
    report = capsys.readouterr().out.splitlines()
    assert report[0].startswith(f"{bad}:13: not valid JSON")
    assert report[1].startswith(f"{bad}:14: cannot decode image {tmp_path / 'corrupt.jpg'}")
    assert any(line.startswith("warning: ") and "cut to 220" in line for line in report)  # trainable, reported
    assert report[-1].startswith("checked 14 samples") and "12 usable" in report[-1] and "2 unusable" in report[-1]


def test_inspect_writes_what_the_trainer_sees(root, mixed, tmp_path):
    base = base_checkpoint(root)
    out = tmp_path / "inspect.jsonl"
    assert data_main(["inspect", *_data_flags(base, mixed), "--output", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 12 and [r["where"].rsplit(":", 1)[1] for r in records] == [str(i) for i in range(1, 13)]
    from internvl_chat.chat_data.build import data_options, load_training_tokenizer
    from internvl_chat.chat_data.build import build_training_data
    from internvl_chat.arguments import parse_data_args

    model_args, data_args, _ = parse_data_args(_data_flags(base, mixed), "test")
    tokenizer, _ = load_training_tokenizer(str(base), data_args.max_seq_length)
    dataset, _ = build_training_data(str(mixed), tokenizer, data_options(model_args, data_args))
    for index in (0, 1, 2, 3):  # caption, qa, two images, text: the trainer's items, token for token
        item = dataset[index]
        assert records[index]["input_ids"] == item["input_ids"].tolist()
        assert records[index]["labels"] == item["labels"].tolist()
        assert sum(records[index]["tiles"]) == (len(item["pixel_values"]) if item["image_flags"].all() else 0)
    assert records[1]["text"].count("⟦") == 4 and "⟦blue <|im_end|>⟧" in records[1]["text"].replace("⟦ ", "⟦")
    assert "<IMG_CONTEXT>x4</img>" in records[0]["text"]  # one 56 px tile of 4 tokens
    assert records[5]["kind"] == "video" and records[5]["text"].count("Frame-") == len(records[5]["tiles"]) in (2, 3)


# ------------------------------------------------------------------------------------------- tiles, batches, order
def test_tile_counts_without_pixels_equal_the_tiling():
    options = DataOptions(template="internlm2-chat", num_image_token=4, image_size=56, dynamic_image_size=True,
                          use_thumbnail=True, max_dynamic_patch=6)
    for size in [(56, 56), (200, 60), (60, 200), (120, 113), (30, 30), (300, 290)]:
        for max_num in (1, 3, 6):
            tiles = dynamic_preprocess(Image.new("RGB", size), 1, max_num, 56, True)
            assert count_tiles(*size, options, max_num) == len(tiles), (size, max_num)


def test_padding_does_not_change_the_loss(root):
    """A sample's loss is the same in a batch padded to its own length (length-grouped) as beside a longer one."""
    from internvl.models.chat_model import InternVLChatModel
    from internvl.models.modeling_utils import causal_lm_loss

    base = base_checkpoint(root)
    model = InternVLChatModel.from_pretrained(base).eval()
    model.img_context_token_id = 1008
    g = torch.Generator().manual_seed(0)

    def item(n):
        ids = torch.randint(3, 900, (n,), generator=g)
        labels = ids.clone()
        labels[: n // 2] = -100
        return {"input_ids": ids, "labels": labels, "position_ids": torch.arange(n),
                "pixel_values": torch.zeros(1, 3, 56, 56), "image_flags": torch.zeros(1, dtype=torch.long)}

    short, long_ = item(9), item(23)

    def summed_loss(batch):
        batch = collate(batch)
        labels = batch.pop("labels")
        batch.pop("bad_samples")
        logits = model(**batch).logits
        return [causal_lm_loss(logits[i:i + 1], labels[i:i + 1], 1).item() for i in range(len(labels))]

    with torch.no_grad():
        alone, = summed_loss([short])
        padded, _ = summed_loss([short, long_])
    assert alone == pytest.approx(padded, rel=1e-5)


def test_length_grouping_and_the_sampler():
    lengths = [5, 50, 7, 40, 8, 60, 9, 45, 6, 55, 30, 20]
    order = list(range(12))
    grouped = length_grouped_indices(order, lengths, batch_size=2, num_chunks=3)
    assert sorted(grouped) == order
    assert sorted(grouped[:6]) == sorted(sorted(order, key=lengths.__getitem__)[6:])  # the longest step first
    for step in (grouped[:6], grouped[6:]):  # each step: three chunks of two (ranks), totals balanced
        totals = [lengths[step[i]] + lengths[step[i + 1]] for i in (0, 2, 4)]
        assert max(totals) - min(totals) <= max(lengths[i] for i in step) - min(lengths[i] for i in step)

    def padding(indices, size=2):
        batches = [indices[i:i + size] for i in range(0, len(indices), size)]
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    assert padding(grouped) < padding(order) / 2
    grouped_sampler = ChatSampler(lengths, [12], batch_size=2, num_chunks=3, group_by_length=True, seed=3)
    assert [i for i, _ in grouped_sampler] == length_grouped_indices(
        torch.randperm(12, generator=torch.Generator().manual_seed(3)).tolist(), lengths, 2, 3)
    sampler = ChatSampler(lengths, [12], batch_size=2, num_chunks=3, seed=3)
    first = list(sampler)
    assert list(sampler) == first and sorted(i for i, _ in first) == order  # the same for a resumed epoch
    assert {epoch for _, epoch in first} == {0}
    sampler.set_epoch(1)
    assert [i for i, _ in sampler] != [i for i, _ in first]
    resampled = ChatSampler([0] * 500, [400, 100], 4, 1, resample=True, seed=0)
    share = sum(i >= 400 for i, _ in resampled) / 500
    assert abs(share - 10 / 30) < 0.06  # sqrt(100) / (sqrt(400) + sqrt(100))


# ------------------------------------------------------------------------------------------- DeepSpeed configs
# (the shell scripts: tests/test_chat_shell.py)
def test_deepspeed_configs_fill_from_the_training_flags(monkeypatch):
    """The "auto" entries of the shipped ZeRO configs take the Trainer's flags (transformers' own filling)."""
    pytest.importorskip("deepspeed", reason="transformers reads DeepSpeed configs only with deepspeed installed")
    import transformers.integrations.deepspeed as hf_deepspeed
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from internvl_chat.arguments import parse_finetune_args

    # The config registers itself globally (is_deepspeed_zero3_enabled); later tests must not see it.
    monkeypatch.setattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref", None)

    *_, training_args = parse_finetune_args(["--output_dir", "/tmp/unused", "--use_cpu", "True", "--bf16", "True",
                                                "--per_device_train_batch_size", "4", "--gradient_accumulation_steps",
                                                "2", "--learning_rate", "4e-5", "--weight_decay", "0.01"])
    for stage in (1, 2, 3):
        config = HfTrainerDeepSpeedConfig(json.loads((REPO / f"internvl_chat/zero_stage{stage}_config.json").read_text()))
        config.trainer_config_process(training_args)
        filled = config.config
        assert filled["zero_optimization"]["stage"] == stage and config.is_zero3() == (stage == 3)
        assert filled["train_micro_batch_size_per_gpu"] == 4 and filled["gradient_accumulation_steps"] == 2
        assert filled["optimizer"]["params"] == {"lr": 4e-5, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01}
        assert filled["bf16"]["enabled"] is True and "scheduler" not in filled


def test_multi_image_samples_split_the_tile_budget(root, tmp_path):
    """Upstream's rule: each of n images gets at most max(1, max_dynamic_patch // n) tiles (then the thumbnail)."""
    import random

    from internvl_chat.chat_data.build import build_training_data

    Image.new("RGB", (400, 100), (200, 30, 30)).save(tmp_path / "wide.jpg")
    line = json.dumps({"image": ["wide.jpg", "wide.jpg"], "conversations": [
        {"from": "human", "value": "Image-1: <image>\nImage-2: <image>\nSame?"}, {"from": "gpt", "value": "yes"}]})
    (tmp_path / "two.jsonl").write_text(line + "\n" + json.dumps({"image": "wide.jpg", "conversations": [
        {"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "red"}]}) + "\n")
    meta = _meta(tmp_path, {"two": {"root": str(tmp_path), "annotation": str(tmp_path / "two.jsonl")}})
    options = DataOptions(template="internlm2-chat", num_image_token=4, image_size=56, dynamic_image_size=True,
                          use_thumbnail=True, max_dynamic_patch=6)
    dataset, problems = build_training_data(str(meta), training_tokenizer(root, "internlm2"), options)
    part = dataset.datasets[0]
    two, one = part.samples
    assert not problems and part.media(two, random.Random(0))[1] == [4, 4]  # 3x1 grid + thumbnail, twice
    assert part.media(one, random.Random(0))[1] == [5]  # alone: 4x1 grid + thumbnail
    assert len(dataset[0]["pixel_values"]) == 8 and dataset[0]["input_ids"].tolist().count(1008) == 32


def test_check_on_a_model_path_that_does_not_exist_says_so(mixed, tmp_path):
    missing = tmp_path / "pretrained" / "InternVL2-2B"
    with pytest.raises(MissingFileError) as info:
        data_main(["check", "--meta_path", str(mixed), "--model_name_or_path", str(missing),
                   "--conv_style", "internlm2-chat", *DATA_FLAGS])
    assert str(info.value).startswith(f"--model_name_or_path {missing}: does not exist")
    assert "config.json" not in str(info.value)
