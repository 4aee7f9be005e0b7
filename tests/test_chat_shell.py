"""internvl_chat/shell/: all nine fine-tuning scripts dry-run (DRY_RUN=1) to upstream's flags that parse, on GPUs
(a stand-in nvidia-smi) and on the CPU; the launch variables: GRADIENT_ACC kept, contradictions refused, the
effective batch printed."""
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHELL = REPO / "internvl_chat" / "shell"
LAUNCH_VARS = {"GPUS", "GPUS_PER_NODE", "PARTITION", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "PYTHON",
               "DRY_RUN", "CUDA_VISIBLE_DEVICES", "BATCH_SIZE", "PER_DEVICE_BATCH_SIZE", "GRADIENT_ACC", "DEEPSPEED",
               "OUTPUT_DIR", "MODEL_PATH", "META_PATH"}

# script: (conv_style, default GPUS, default total batch, flags of upstream's script)
SCRIPTS = {
    "internvl2.0/2nd_finetune/internvl2_1b_qwen2_0_5b_dynamic_res_2nd_finetune_full.sh":
        ("Hermes-2", 8, 128, ["--freeze_llm False", "--drop_path_rate 0.1"]),
    "internvl2.0/2nd_finetune/internvl2_1b_qwen2_0_5b_dynamic_res_2nd_finetune_lora.sh":
        ("Hermes-2", 2, 16, ["--use_llm_lora 16", "--freeze_llm True"]),
    "internvl2.0/2nd_finetune/internvl2_2b_internlm2_1_8b_dynamic_res_2nd_finetune_full.sh":
        ("internlm2-chat", 8, 128, ["--freeze_llm False", "--freeze_backbone True"]),
    "internvl2.0/2nd_finetune/internvl2_2b_internlm2_1_8b_dynamic_res_2nd_finetune_lora.sh":
        ("internlm2-chat", 2, 16, ["--use_llm_lora 16", "--freeze_llm True"]),
    "internvl2.0/2nd_finetune/internvl2_2b_internlm2_1_8b_dynamic_res_2nd_finetune_lora_coco.sh":
        ("internlm2-chat", 8, 512, ["--use_llm_lora 128"]),
    "internvl2.0/2nd_finetune/internvl2_2b_internlm2_1_8b_dynamic_res_custom_finetune_lora.sh":
        ("internlm2-chat", 1, 16, ["--use_llm_lora 16", "--meta_path ./shell/data/custom_finetune.json"]),
    "internvl2.0/2nd_finetune/internvl2_4b_phi3_3_8b_dynamic_res_2nd_finetune_full.sh":
        ("phi3-chat", 8, 128, ["--freeze_llm False"]),
    "internvl2.0/2nd_finetune/internvl2_4b_phi3_3_8b_dynamic_res_2nd_finetune_lora.sh":
        ("phi3-chat", 2, 16, ["--use_llm_lora 16"]),
    "internvl2.5/2nd_finetune/internvl2_5_2b_dynamic_res_2nd_finetune_lora.sh":
        ("internvl2_5", 2, 16, ["--use_llm_lora 16", "--max_seq_length 8192", "--use_fast_tokenizer False"]),
}

FAKE_NVIDIA_SMI = "#!/usr/bin/env bash\nfor i in 0 1 2 3 4 5 6 7; do echo \"GPU $i: NVIDIA H100 (UUID: GPU-$i)\"; done\n"


def test_every_script_is_listed():
    assert sorted(str(p.relative_to(SHELL)) for p in SHELL.glob("*/2nd_finetune/*.sh")) == sorted(SCRIPTS)


def run_script(script, tmp_path, gpus_visible: bool, *args, **env):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    if gpus_visible:
        smi.write_text(FAKE_NVIDIA_SMI)
        smi.chmod(0o755)
    elif smi.exists():
        smi.unlink()
    base = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and not k.startswith("SLURM_")}
    base.update(PATH=f"{bin_dir}{os.pathsep}/usr/bin:/bin", DRY_RUN="1", OUTPUT_DIR=str(tmp_path / "out"))
    return subprocess.run(["bash", str(SHELL / script), *args], env={**base, **env}, capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)


def finetune_argv(stdout: str):
    argv = shlex.split(stdout.strip().splitlines()[-1])
    return argv[argv.index("internvl_chat.finetune") + 1:]


def flag(argv, name):
    """The last value given for ``name`` (the last wins in HfArgumentParser, as in argparse)."""
    return [argv[i + 1] for i, a in enumerate(argv) if a == name][-1]


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_scripts_dry_run_to_upstream_flags_that_parse_on_gpus_and_on_the_cpu(script, tmp_path):
    from internvl_chat.arguments import parse_finetune_args

    conv_style, gpus, total, expected = SCRIPTS[script]
    gpu = run_script(script, tmp_path, True, "--max_steps", "3")
    assert gpu.returncode == 0, gpu.stderr
    command = gpu.stdout.strip().splitlines()[-1]
    argv = finetune_argv(gpu.stdout)
    if gpus == 1:
        assert command.startswith("python -m torch.distributed.run --nnodes=1 --node_rank=0 --nproc_per_node=1 ")
    else:
        assert f"--nproc_per_node={gpus} " in command
    for item in expected + [f"--conv_style {conv_style}", "--deepspeed zero_stage1_config.json", "--bf16 True",
                            "--evaluation_strategy no", "--report_to tensorboard"]:
        assert f" {item} " in f" {shlex.join(argv)} ", (script, item)
    assert argv[-2:] == ["--max_steps", "3"]  # a script's own arguments come last: they override
    assert int(flag(argv, "--gradient_accumulation_steps")) * 4 * gpus == total
    assert f"batch: 4 per device x {gpus} process(es) x {total // 4 // gpus} accumulation = {total} total" \
        in gpu.stderr
    assert "running on the CPU" not in gpu.stderr
    # The flags parse (on this machine, with --use_cpu and without DeepSpeed).
    args = [a for a in argv if a not in ("--deepspeed", "zero_stage1_config.json")] + ["--use_cpu", "True"]
    model_args, data_args, training_args = parse_finetune_args(args)
    assert data_args.conv_style == conv_style and training_args.max_steps == 3

    # No GPU visible: CPU settings whatever GPUS says; the script's count is meant for GPUs, one process instead.
    for env, procs in (({}, 1), ({"GPUS": "1"}, 1), ({"GPUS": "2"}, 2), ({"GPUS": "0"}, 1)):
        cpu = run_script(script, tmp_path, False, **env)
        assert cpu.returncode == 0, (env, cpu.stderr)
        argv = finetune_argv(cpu.stdout)
        assert "--deepspeed" not in argv and argv[-4:] == ["--use_cpu", "True", "--bf16", "False"], env
        reason = "GPUS=0" if env.get("GPUS") == "0" else "no CUDA GPU visible"
        assert cpu.stderr.count("running on the CPU") == 1
        assert f"{reason}: running on the CPU (float32, no DeepSpeed, {procs} process(es))" in cpu.stderr
        assert int(flag(argv, "--gradient_accumulation_steps")) * 4 * procs == total
        assert (f"--nproc_per_node={procs}" in cpu.stdout) == (procs > 1)


LORA = "internvl2.0/2nd_finetune/internvl2_2b_internlm2_1_8b_dynamic_res_2nd_finetune_lora.sh"


@pytest.mark.parametrize("env, accumulation, total", [
    (dict(GPUS="2", GRADIENT_ACC="2"), 2, 16),  # upstream's scripts replaced it by 16 / 4 / 2 = 2 ... and
    (dict(GPUS="4", GRADIENT_ACC="2"), 2, 32),  # ... by 16 / 4 / 4 = 1 here: the total follows GRADIENT_ACC
    (dict(GPUS="2", GRADIENT_ACC="3", PER_DEVICE_BATCH_SIZE="1"), 3, 6),
    (dict(GPUS="2", GRADIENT_ACC="2", BATCH_SIZE="16"), 2, 16),  # both given and agreeing
    (dict(GPUS="2", BATCH_SIZE="64"), 8, 64),
])
def test_gradient_acc_is_kept_and_the_total_derived(env, accumulation, total, tmp_path):
    done = run_script(LORA, tmp_path, True, **env)
    assert done.returncode == 0, done.stderr
    assert flag(finetune_argv(done.stdout), "--gradient_accumulation_steps") == str(accumulation)
    per_device = env.get("PER_DEVICE_BATCH_SIZE", "4")
    assert re.search(rf"^batch: {per_device} per device x {env['GPUS']} process\(es\) x {accumulation} accumulation "
                     rf"= {total} total; output in ", done.stderr, re.M), done.stderr


@pytest.mark.parametrize("env, message", [
    (dict(GPUS="2", GRADIENT_ACC="2", BATCH_SIZE="12"),
     "error: BATCH_SIZE=12 contradicts PER_DEVICE_BATCH_SIZE=4 x 2 process(es) x GRADIENT_ACC=2 = 16; "
     "set one of BATCH_SIZE and GRADIENT_ACC"),
    (dict(GPUS="3", BATCH_SIZE="16"), "error: BATCH_SIZE=16 is not a multiple of PER_DEVICE_BATCH_SIZE=4 x GPUS=3"),
    (dict(GPUS="2x"), "error: GPUS=2x must be a whole number"),
    (dict(GRADIENT_ACC="two"), "error: GRADIENT_ACC=two must be a whole number"),
    (dict(GRADIENT_ACC="0"), "error: GRADIENT_ACC=0 must be at least 1"),
])
def test_contradictory_or_malformed_launch_variables_are_refused_in_one_line(env, message, tmp_path):
    done = run_script(LORA, tmp_path, True, **env)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith(message), done.stderr
