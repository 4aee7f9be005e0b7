"""Fine-tuning runs of a tiny InternVL2-style model: which parameters train, resume after a kill, unusable
samples, one process against two (gloo), and the LoRA merge."""
import json
import os
import runpy
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from chat_finetune_helpers import base_checkpoint, finetune_argv
from chat_finetune_helpers import _drop_run_logging  # noqa: F401 (autouse fixture)
from internvl.errors import DataError
from internvl_chat import finetune
from internvl_chat.chat_data.chat_jsonl import write_synthetic_chat_data

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("chattrain")


@pytest.fixture(scope="module")
def meta(root):
    """Mixed data: captions, multi-turn QA, two-image questions, pure text, video."""
    return write_synthetic_chat_data(root / "data", 16, kinds=("caption", "qa", "multi", "text", "video"),
                                     video_frames=4)


FRAMES = ["--min_num_frame", "2", "--max_num_frame", "3"]


def _weights(directory: Path) -> dict:
    """Tensors under the published names (peft's wrapper names removed), LoRA factors kept apart."""
    out = {}
    for name, tensor in load_file(directory / "model.safetensors").items():
        out[name.replace("base_model.model.", "").replace(".base_layer", "")] = tensor
    return out


def _changed(base: dict, trained: dict) -> set:
    return {name for name, tensor in trained.items()
            if "lora_" in name or not torch.equal(tensor, base[name])}


def _groups(names) -> set:
    return {name.split(".")[0] + (".lora" if "lora_" in name else "") for name in names}


@pytest.fixture(scope="module")
def lora_run(root, meta):
    """Vision and language LoRA, the output layer unfrozen, the projector trained: 3 steps."""
    out = root / "lora_run"
    finetune.main(finetune_argv(base_checkpoint(root), meta, out, *FRAMES, "--use_backbone_lora", "2",
                                "--unfreeze_lm_head", "True", "--freeze_mlp", "False", "--max_steps", "3"))
    return out


@pytest.mark.parametrize("flags, expected", [
    ([], {"language_model.lora"}),
    (["--use_llm_lora", "0", "--freeze_llm", "False", "--freeze_mlp", "False"], {"language_model", "mlp1"}),
    (["--use_llm_lora", "0", "--freeze_llm", "True", "--unfreeze_vit_layers", "-1"], {"vision_model"}),
])
def test_runs_train_exactly_the_intended_parameters(root, meta, flags, expected):
    out = root / ("params" + "".join(flags).replace("-", ""))
    finetune.main(finetune_argv(base_checkpoint(root), meta, out, *FRAMES, "--max_steps", "2", *flags))
    base, trained = _weights(base_checkpoint(root)), _weights(out)
    changed = _changed(base, trained)
    assert _groups(changed) == expected
    if "--unfreeze_vit_layers" in flags:  # the last of three vision layers, nothing before it
        assert all(".layers.2." in name for name in changed)
    if "mlp1" in expected:
        assert {name for name in base if name.startswith("mlp1")} <= changed
        assert any(".layers.0.attention.wqkv" in name for name in changed)
    assert json.loads((out / "config.json").read_text())["use_llm_lora"] == (4 if not flags else 0)


def test_lora_run_trains_both_adapters_the_projector_and_the_output_layer(root, lora_run):
    changed = _changed(_weights(base_checkpoint(root)), _weights(lora_run))
    assert _groups(changed) == {"language_model.lora", "vision_model.lora", "mlp1", "language_model"}
    assert {name for name in changed if "lora_" not in name and name.startswith("language_model")} == {
        "language_model.output.weight"}  # --unfreeze_lm_head works (upstream's flag did nothing)
    config = json.loads((lora_run / "config.json").read_text())
    assert (config["use_backbone_lora"], config["use_llm_lora"]) == (2, 4)
    log = (lora_run / "training_log.txt").read_text()
    assert '"loss"' in log and "trainable parameters" in log


def test_merged_model_equals_the_lora_model_and_loads_as_the_base(root, lora_run, tmp_path, monkeypatch):
    """tools/merge_lora.py: same logits, published names, the base's remote code, AutoModel loads it."""
    from transformers import AutoModel

    from internvl.models.chat_model import InternVLChatModel

    base = base_checkpoint(root, copy_to=tmp_path / "base_with_code")
    # Remote-code files as the published directories ship them; here they re-export the suite's classes.
    (base / "configuration_internvl_chat.py").write_text(
        "from internvl.models.chat_model import InternVLChatConfig as Base\n\n\nclass InternVLChatConfig(Base):\n    pass\n")
    (base / "modeling_internvl_chat.py").write_text(
        "from internvl.models.chat_model import InternVLChatModel as Base\n\n\nclass InternVLChatModel(Base):\n    pass\n")
    config = json.loads((lora_run / "config.json").read_text())
    config["_name_or_path"] = str(base)
    (lora_run / "config.json").write_text(json.dumps(config))
    merged = tmp_path / "merged"
    # upstream's command, `python tools/merge_lora.py IN OUT` in internvl_chat/, run in this process
    monkeypatch.chdir(REPO / "internvl_chat")
    monkeypatch.setattr(sys, "argv", ["tools/merge_lora.py", str(lora_run), str(merged)])
    with pytest.raises(SystemExit) as exit_status:
        runpy.run_path("tools/merge_lora.py", run_name="__main__")
    assert exit_status.value.code == 0
    names = load_file(merged / "model.safetensors").keys()
    assert not [n for n in names if "lora_" in n or "base_model" in n]
    assert set(names) == set(load_file(base / "model.safetensors").keys())
    written = json.loads((merged / "config.json").read_text())
    assert (written["use_llm_lora"], written["use_backbone_lora"]) == (0, 0)
    assert written["architectures"] == ["InternVLChatModel"] and written["auto_map"]["AutoModel"].startswith(
        "modeling_internvl_chat.")
    assert {p.name for p in merged.glob("*.py")} == {"configuration_internvl_chat.py", "modeling_internvl_chat.py"}
    assert (merged / "tokenizer.model").is_file() and (merged / "tokenizer_config.json").is_file()

    lora = InternVLChatModel.from_pretrained(lora_run).eval()
    plain = InternVLChatModel.from_pretrained(merged).eval()
    remote = AutoModel.from_pretrained(merged, trust_remote_code=True).eval()
    # config.json's auto_map resolves to the copied remote code (which class AutoModel then prefers, the remote
    # one or the suite's registered one, depends on the transformers version)
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    remote_class = get_class_from_dynamic_module(written["auto_map"]["AutoModel"], str(merged))
    assert remote_class.__module__.endswith("modeling_internvl_chat") and remote_class.__name__ == "InternVLChatModel"
    g = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, 3, 56, 56, generator=g)
    input_ids = torch.cat([torch.randint(3, 900, (1, 5), generator=g), torch.full((1, 8), 1008),
                           torch.randint(3, 900, (1, 5), generator=g)], dim=1)
    with torch.no_grad():
        logits = []
        for model in (lora, plain, remote, InternVLChatModel.from_pretrained(base).eval()):
            model.img_context_token_id = 1008
            logits.append(model(pixel_values=pixel_values, input_ids=input_ids).logits)
    assert (logits[0] - logits[3]).abs().max() > 1e-2  # the adapters changed the model: the check can fail
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits[2], logits[1], rtol=0, atol=0)


class _Killed(RuntimeError):
    pass


def test_a_killed_run_resumes_from_its_last_checkpoint_with_the_same_command(root, meta, monkeypatch):
    whole, killed = root / "whole", root / "killed"
    flags = [*FRAMES, "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2"]
    finetune.main(finetune_argv(base_checkpoint(root), meta, whole, *flags))

    from internvl_chat.trainer import ChatTrainer

    original, calls = ChatTrainer.training_step, []

    def dies_in_step_3(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise _Killed("killed")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ChatTrainer, "training_step", dies_in_step_3)
    with pytest.raises(_Killed):
        finetune.main(finetune_argv(base_checkpoint(root), meta, killed, *flags))
    monkeypatch.setattr(ChatTrainer, "training_step", original)
    assert (killed / "checkpoint-2" / "trainer_state.json").is_file() and not (killed / "model.safetensors").exists()
    # A checkpoint the kill interrupted while it was written: its trainer state is there (the Trainer writes it
    # before the random states), its weights are not whole, and it has no completion marker.
    partial = killed / "checkpoint-3"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"partial")
    state = json.loads((killed / "checkpoint-2" / "trainer_state.json").read_text())
    (partial / "trainer_state.json").write_text(json.dumps({**state, "global_step": 3}))

    finetune.main(finetune_argv(base_checkpoint(root), meta, killed, *flags))  # the same command
    log = (killed / "training_log.txt").read_text()
    assert f"resuming from {killed / 'checkpoint-2'}" in log and f"deleting {partial}: the run that wrote it" in log
    steps = [entry["step"] for entry in json.loads((killed / "trainer_state.json").read_text())["log_history"]
             if "loss" in entry]
    assert steps == [1, 2, 3, 4]
    a, b = _weights(whole), _weights(killed)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)

    # Run again, the run is complete: it says so and leaves the results alone (issue 17.3).
    results = (killed / "train_results.json").read_text()
    finetune.main(finetune_argv(base_checkpoint(root), meta, killed, *flags))
    assert (killed / "train_results.json").read_text() == results
    assert "already holds this run, complete at step 4" in (killed / "training_log.txt").read_text()

    # A damaged newest checkpoint: the longer run resumes from the newest whole one, naming it (issue 17.2).
    (killed / "checkpoint-4" / "trainer_state.json").write_text("")
    finetune.main(finetune_argv(base_checkpoint(root), meta, killed, *FRAMES, "--max_steps", "5",
                                "--save_strategy", "no"))
    log = (killed / "training_log.txt").read_text()
    assert f"resuming from {killed / 'checkpoint-2'}" in log.split("complete at step 4")[1]
    assert f"instead of the newer {killed / 'checkpoint-4'}, which is damaged" in log
    assert "trainer_state.json: not valid JSON" in log and (killed / "damaged-checkpoint-4").is_dir()
    assert json.loads((killed / "trainer_state.json").read_text())["global_step"] == 5


@pytest.mark.parametrize("damage, named", [
    (lambda c: (c / "model.safetensors").write_bytes((c / "model.safetensors").read_bytes()[:-100]),
     "model.safetensors: not a complete safetensors file"),
    (lambda c: (c / "optimizer.pt").write_bytes(b"garbage"), "optimizer.pt: not a complete PyTorch checkpoint"),
    (lambda c: (c / "trainer_state.json").write_text(""), "trainer_state.json: not valid JSON"),
    (lambda c: (c / "trainer_state.json").unlink(), "trainer_state.json: missing"),
])
def test_a_damaged_checkpoint_is_named_by_the_file_that_cannot_be_read(root, tmp_path, damage, named):
    from internvl.train.hf import checkpoint_damage

    checkpoint = root / "killed" / "checkpoint-2"  # written by the test above
    if not checkpoint.is_dir():
        pytest.skip("needs the checkpoint of test_a_killed_run_resumes_from_its_last_checkpoint_with_the_same_command")
    copy = tmp_path / "checkpoint-2"
    import shutil

    shutil.copytree(checkpoint, copy)
    assert checkpoint_damage(copy) == []
    damage(copy)
    assert [line for line in checkpoint_damage(copy) if line.startswith(named)], checkpoint_damage(copy)


def test_unusable_samples_stop_the_run_unless_allowed(root, meta, tmp_path):
    jsonl = Path(json.loads(meta.read_text())["synthetic"]["annotation"])
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff broken")
    lines = jsonl.read_text().splitlines()[:7] + [
        json.dumps({"image": str(tmp_path / "corrupt.jpg"), "conversations": [
            {"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]}),
        '{"conversations": oops}']
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    bad_meta = tmp_path / "bad.json"
    bad_meta.write_text(json.dumps({"bad": {"root": str(jsonl.parent), "annotation": str(bad)}}))
    run = ["--max_steps", "3", "--per_device_train_batch_size", "3", *FRAMES]
    with pytest.raises(DataError, match=rf"more than --max_bad_samples 0; the last one: {bad}:9: not valid JSON"):
        finetune.main(finetune_argv(base_checkpoint(root), bad_meta, tmp_path / "strict", *run))
    with pytest.raises(DataError, match=rf"2 unusable sample\(s\), more than --max_bad_samples 1; the last one: "
                                        rf"{bad}:8: cannot decode image"):
        finetune.main(finetune_argv(base_checkpoint(root), bad_meta, tmp_path / "one", *run, "--max_bad_samples", "1"))
    out = tmp_path / "two"
    finetune.main(finetune_argv(base_checkpoint(root), bad_meta, out, *run, "--max_bad_samples", "2"))
    listed = [json.loads(line) for line in (out / "bad_samples.jsonl").read_text().splitlines()]
    assert sorted(entry["where"] for entry in listed) == [f"{bad}:8", f"{bad}:9"]
    assert json.loads((out / "train_results.json").read_text())["unusable_samples"] == 2


def test_two_gloo_processes_give_the_loss_of_one_with_the_same_global_batch(root, meta):
    """Full fine-tuning (no dropout anywhere), length-grouped batches of 4: one process of 4 against two of 2.
    The loss divides by the trained tokens of the whole step, so it is the same however the batch is split."""
    flags = [*FRAMES, "--use_llm_lora", "0", "--freeze_llm", "False", "--max_steps", "2", "--group_by_length", "True",
             "--optim", "sgd",  # Adam would turn rounding-level gradient differences into whole steps
             "--use_cpu", "True"]
    one, two = root / "one_process", root / "two_processes"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # both runs in fresh processes: nothing a test before this one left in this process can tell them apart
    single = subprocess.run([sys.executable, "-m", "internvl_chat.finetune",
                             *finetune_argv(base_checkpoint(root), meta, one, *flags)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           port, "-m", "internvl_chat.finetune",
                           *finetune_argv(base_checkpoint(root), meta, two, *flags, "--per_device_train_batch_size",
                                          "2", "--ddp_backend", "gloo")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    def losses(out):
        return [e["loss"] for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]

    assert len(losses(one)) == 2
    # Float sums in another order move the second step's loss by up to ~1e-4 (relative); a loss not scaled for
    # the processes would be off by a factor of 2.
    assert losses(two) == pytest.approx(losses(one), rel=5e-4)
    a, b = _weights(one), _weights(two)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)
