"""Caption evaluation of InternVL-Chat: a tiny model fine-tuned on synthetic captions improves its metrics on
held-out images (benchmark layout and custom data), LoRA directories evaluate directly, batched answers equal
one-at-a-time answers, and evaluate.sh passes upstream's interface through."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from chat_finetune_helpers import base_checkpoint, finetune_argv
from chat_finetune_helpers import _drop_run_logging  # noqa: F401 (autouse fixture)
from internvl.data.caption_benchmarks import write_coco_karpathy
from internvl_chat import evaluate_caption, finetune
from internvl_chat.chat_data.chat_jsonl import write_synthetic_chat_data

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("chateval")


@pytest.fixture(scope="module")
def sets(root):
    held_out = 5000  # images never seen in training
    return {"train": write_synthetic_chat_data(root / "train", 128, name="captions"),
            "val": write_synthetic_chat_data(root / "val", 12, start=held_out, name="val"),
            "coco": write_coco_karpathy(root / "bench" / "coco", 8, start=held_out + 100).parent}


@pytest.fixture(scope="module")
def trained(root, sets):
    """LoRA on the language model and a trained projector: 24 steps of 16 captions."""
    out = root / "lora"
    finetune.main(finetune_argv(base_checkpoint(root), sets["train"], out, "--use_llm_lora", "16", "--freeze_mlp",
                                "False", "--per_device_train_batch_size", "16", "--num_train_epochs", "3",
                                "--learning_rate", "4e-3", "--warmup_ratio", "0.03", "--lr_scheduler_type", "cosine",
                                "--group_by_length", "True", "--max_dynamic_patch", "1"))
    return out


def _evaluate(checkpoint, sets, out_dir, *flags):
    args = evaluate_caption.parse_args(["--checkpoint", str(checkpoint), "--datasets", "coco,custom", "--meta-path",
                                        str(sets["val"]), "--data-root", str(sets["coco"]), "--out-dir", str(out_dir),
                                        "--num-workers", "0", *flags])
    return {name: scores for name, _, _, scores in evaluate_caption.evaluate(args)}


def test_fine_tuning_on_captions_clearly_improves_the_caption_metrics(root, sets, trained, capsys):
    before = _evaluate(base_checkpoint(root), sets, root / "results_base", "--batch-size", "12")
    after = _evaluate(trained, sets, root / "results_lora", "--batch-size", "12")  # the LoRA directory as it is
    for name in ("coco", "custom"):
        assert before[name]["CIDEr"] < 0.05
        assert after[name]["CIDEr"] > 0.5 and after[name]["Bleu_1"] > before[name]["Bleu_1"] + 0.3, (name, after)
    printed = capsys.readouterr().out
    assert "['coco', 'Provide a one-sentence caption for the provided image.'," in printed
    answers = json.loads(next((root / "results_lora").glob("custom_*[0-9].json")).read_text())
    assert len(answers) == 12 and answers[0]["where"].endswith("val.jsonl:1#1") and answers[0]["references"]


def test_batched_answers_equal_one_at_a_time(root, trained, tmp_path):
    """Every kind of question (single image, two images, multi-turn with history, pure text, video): batch 5 gives
    the answers of batch 1."""
    mixed = write_synthetic_chat_data(tmp_path / "mixed", 6, start=7000, kinds=("caption", "qa", "multi", "text", "video"),
                                      video_frames=3, name="mixed")
    answers = {}
    for batch_size in ("1", "5"):
        out = tmp_path / f"bs{batch_size}"
        args = evaluate_caption.parse_args(["--checkpoint", str(trained), "--datasets", "custom", "--meta-path",
                                            str(mixed), "--out-dir", str(out), "--batch-size", batch_size,
                                            "--num-workers", "0", "--num-segments", "2", "--max-new-tokens", "6",
                                            "--min-new-tokens", "1"])
        evaluate_caption.evaluate(args)
        answers[batch_size] = json.loads(next(out.glob("custom_*[0-9].json")).read_text())
    assert len(answers["1"]) == 1 + 4 + 1 + 1 + 1 + 1  # caption, 4 QA turns, two images, text, video, caption
    assert [a["answer"] for a in answers["5"]] == [a["answer"] for a in answers["1"]]
    assert answers["1"][2]["where"].endswith("#2")  # the second QA turn, answered with the first as history


def test_evaluate_sh_forwards_upstream_arguments(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "GPUS": "4", "DATA_ROOT": "d", "OUT_DIR": "r"}
    done = subprocess.run(["bash", str(REPO / "internvl_chat/evaluate.sh"), "pretrained/InternVL2-2B", "caption-coco",
                           "--dynamic", "--auto"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "single CPU process" in done.stderr or "GPUS=1" in done.stderr or "1 process" in done.stderr
    assert done.stdout.split(" -m ")[1].strip() == ("internvl_chat.evaluate_caption --checkpoint pretrained/InternVL2-2B "
                                                    "--datasets coco --data-root d --out-dir r --dynamic --auto")
    done = subprocess.run(["bash", str(REPO / "internvl_chat/evaluate.sh"), "x", "mantis"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 2 and "not implemented here" in done.stderr
    with pytest.raises(SystemExit):
        evaluate_caption.parse_args(["--checkpoint", "x", "--datasets", "custom"])  # custom needs --meta-path


def test_split_model_puts_every_layer_somewhere_and_the_ends_on_gpu0():
    from internvl.datakit.checkpoints import tiny_chat_config
    from internvl_chat.loading import split_model

    config = tiny_chat_config("internlm2", llm_overrides={"num_hidden_layers": 24})
    device_map = split_model(config, 4)
    layers = [device_map[f"language_model.model.layers.{i}"] for i in range(24)]
    assert layers == sorted(layers[:-1]) + [0] and set(layers[:-1]) == {0, 1, 2, 3}
    assert layers.count(0) < layers.count(1)  # GPU 0 also holds the vision model: half a share of layers
    assert device_map["vision_model"] == device_map["language_model.output"] == 0
