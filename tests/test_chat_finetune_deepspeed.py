"""A real DeepSpeed ZeRO-3 fine-tune of the tiny InternVL2-style model on the CPU (one process): the weights
reach the partitioned model, what build_model changes (position embeddings for --force_image_size) survives
the partitioning, the saved directory is whole, and a run stopped at a DeepSpeed checkpoint resumes."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from chat_finetune_helpers import base_checkpoint, finetune_argv
from internvl_chat.chat_data.chat_jsonl import write_synthetic_chat_data

pytest.importorskip("deepspeed", reason="pip install deepspeed (the test extra installs it)")

REPO = Path(__file__).resolve().parents[1]
# 84 px instead of the checkpoint's 56: the position embeddings are resized after ZeRO-3 partitioned them.
FLAGS = ["--force_image_size", "84", "--use_llm_lora", "4", "--unfreeze_lm_head", "True", "--optim", "sgd"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("chatdeepspeed")


@pytest.fixture(scope="module")
def meta(root):
    return write_synthetic_chat_data(root / "data", 8, kinds=("caption", "qa"))


def _run(root, meta, out, *flags, deepspeed=True, env_extra=None):
    """python -m internvl_chat.finetune in a fresh process, as torchrun would start rank 0 of 1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    # a clean environment: what earlier in-process runs left in os.environ (ACCELERATE_*, ...) changes a run
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": port, **(env_extra or {})}
    argv = finetune_argv(base_checkpoint(root), meta, out, *FLAGS, *flags)
    if deepspeed:
        argv += ["--deepspeed", str(REPO / "internvl_chat/zero_stage3_config.json")]
    done = subprocess.run([sys.executable, "-m", "internvl_chat.finetune", *argv], env=env, capture_output=True,
                          text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return [e["loss"] for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]


def test_zero3_trains_what_plain_training_trains_and_resumes(root, meta, deepspeed_cpu_ops):
    plain = _run(root, meta, root / "plain", "--max_steps", "1", deepspeed=False)
    out = root / "zero3"
    first = _run(root, meta, out, "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "2",
                 env_extra=deepspeed_cpu_ops)
    # On the CPU the config's AdamW runs as torch's, not as DeepSpeed's FusedAdam (a C++ op compiled for minutes):
    # the optimizer state DeepSpeed saved has torch's parameter-group options, and the config it ran with says why
    saved = torch.load(out / "checkpoint-2/global_step2/zero_pp_rank_0_mp_rank_00_optim_states.pt", map_location="cpu",
                       weights_only=False)
    group = saved["optimizer_state_dict"]["optimizer_state_dict"]["param_groups"][0]
    assert "foreach" in group and "bias_correction" not in group, sorted(group)
    assert saved["ds_config"]["optimizer"]["params"]["torch_adam"] is True
    assert "runs as torch.optim's (torch_adam)" in (out / "training_log.txt").read_text()
    # Step 1 sees the loaded weights (LoRA's B starts at zero): the same loss as without DeepSpeed. A model left
    # empty by the partitioning, or a NaN output row, gives 0.0 or NaN here.
    assert first[0] == pytest.approx(plain[0], rel=1e-4)
    assert (out / "checkpoint-2" / "global_step2").is_dir()  # DeepSpeed's own (partitioned) checkpoint

    resumed = _run(root, meta, out, "--max_steps", "3", "--save_strategy", "steps", "--save_steps", "2",
                   env_extra=deepspeed_cpu_ops)
    assert "resuming from" in (out / "training_log.txt").read_text()
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
    assert len(resumed) == 3 and resumed[:2] == pytest.approx(first, rel=1e-6)  # steps 1-2 from the checkpoint
    assert all(torch.isfinite(torch.tensor(resumed)))

    base = load_file(base_checkpoint(root) / "model.safetensors")
    saved = {name.replace("base_model.model.", "").replace(".base_layer", ""): tensor
             for name, tensor in load_file(out / "model.safetensors").items()}
    assert saved["vision_model.embeddings.position_embedding"].shape == (1, 1 + 6 * 6, 64)  # 84 px / 14
    assert json.loads((out / "config.json").read_text())["force_image_size"] == 84
    for name, tensor in saved.items():
        assert tensor.numel() > 0 and torch.isfinite(tensor.float()).all(), name
    torch.testing.assert_close(saved["language_model.model.tok_embeddings.weight"],
                               base["language_model.model.tok_embeddings.weight"])
    assert not torch.allclose(saved["language_model.output.weight"], base["language_model.output.weight"])


def test_cpu_runs_the_configs_adamw_as_torchs_and_leave_the_files_alone(tmp_path, deepspeed_state):
    """On the CPU the chat configs' AdamW block gets torch_adam in the Trainer's copy of the config only; an
    explicit torch_adam and a config without an optimizer block (internvl_g's) are left as they are."""
    from internvl.train.hf import cpu_deepspeed_optimizer
    from internvl_chat.arguments import parse_finetune_args

    def args(config):
        return parse_finetune_args(["--output_dir", str(tmp_path / "out"), "--use_cpu", "True",
                                    "--deepspeed", str(config)])[-1]

    for stage in (1, 2, 3):
        path = REPO / f"internvl_chat/zero_stage{stage}_config.json"
        shipped = path.read_text()
        training_args = args(path)
        assert cpu_deepspeed_optimizer(training_args)
        assert training_args.hf_deepspeed_config.config["optimizer"]["params"]["torch_adam"] is True
        assert not cpu_deepspeed_optimizer(training_args)  # once
        assert path.read_text() == shipped and "torch_adam" not in shipped  # the GPU runs' file, as upstream's
    explicit = json.loads((REPO / "internvl_chat/zero_stage3_config.json").read_text())
    explicit["optimizer"]["params"]["torch_adam"] = False
    (tmp_path / "explicit.json").write_text(json.dumps(explicit))
    training_args = args(tmp_path / "explicit.json")
    assert not cpu_deepspeed_optimizer(training_args)
    assert training_args.hf_deepspeed_config.config["optimizer"]["params"]["torch_adam"] is False
    training_args = args(REPO / "internvl_g/zero_stage3_config.json")
    assert not cpu_deepspeed_optimizer(training_args) and "optimizer" not in training_args.hf_deepspeed_config.config
