"""python -m internvl_g.finetune end to end on a tiny InternVL-C/G: each variant trains exactly upstream's parameter
set, the output is a published-layout checkpoint every loader reads (LoRA kept or merged), 56 -> 70 px resizing,
layer-wise rates in the optimizer after the scheduler's first step, a killed run resumed by the same command,
DeepSpeed configs, upstream's flags on both transformers versions, the shell scripts, and bad flags."""
import json
import warnings
import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from internvl.datakit import SyntheticImages
from internvl.datakit.checkpoints import write_tiny_internvl_cg
from internvl.errors import ConfigError, MissingFileError
from internvl.train.hf import (COMPLETE_MARKER, parse_args, read_deepspeed_config, resume_checkpoint,
                                  weights_dtype)
from internvl.models.internvl_cg import InternVLModel
from internvl.models.processing_internvl_cg import build_cg_tokenizer, image_transform
from internvl.data.retrieval import write_flickr30k
from internvl_g.finetune import TRAINING_DEFAULTS, DataTrainingArguments, ModelArguments, TrainingArguments, main

REPO = Path(__file__).resolve().parents[1]
KIT = SyntheticImages(num_classes=4, image_size=64)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_tiny_internvl_cg(tmp_path_factory.mktemp("ckpt") / "InternVL-14B-224px", tokenizer_vocab=1000)


@pytest.fixture(scope="module")
def flickr(tmp_path_factory):
    return write_flickr30k(tmp_path_factory.mktemp("data") / "flickr30k", 6, split="train", kit=KIT)


def _argv(source, flickr, output_dir, *flags):
    data = [] if flickr is None else ["--dataset_name", "flickr30k_en_train", "--data_root", str(flickr / "Images"),
                                      "--annotation", str(flickr / "flickr30k_train_karpathy.txt")]
    return ["--model_name_or_path", str(source), "--output_dir", str(output_dir), *data,
            "--per_device_train_batch_size", "4", "--max_steps", "2", "--save_strategy", "no", "--report_to", "none",
            "--dataloader_num_workers", "0", "--learning_rate", "1e-2", "--weight_decay", "0", "--seed", "3", *flags]


class _Record(TrainerCallback):
    """What the Trainer trains: the trainable names and values at the start, the model at the end, the group rates
    after the first optimizer step."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.model = model
        self.start = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if state.global_step == 1:
            self.groups = [(g["lr"], g.get("lr_scale"), g.get("group_name")) for g in optimizer.param_groups]

    def changed(self):
        return {n for n, p in self.model.named_parameters() if not torch.equal(p.detach(), self.start[n])}


def _features(model, size):
    tokenizer = build_cg_tokenizer(model.name_or_path, "retrieval")
    text = tokenizer.tokenize(["a red circle on a striped background", "a blue cross"]).input_ids
    image = torch.stack([image_transform(size)(KIT.sample(i).image) for i in range(2)])
    with torch.no_grad():
        return torch.cat([model.encode_image(image, "InternVL-G"), model.encode_text(text)])


def test_full_fine_tune_trains_everything_with_layer_decay_and_saves_the_published_layout(source, flickr, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.setenv("VIT_LAYER_DECAY_RATE", "0.5")
    monkeypatch.setenv("QLLAMA_LAYER_DECAY_RATE", "0.8")
    record = _Record()
    out = tmp_path / "full"
    main(_argv(source, flickr, out, "--use_custom_trainer", "--lr_scheduler_type", "cosine", "--warmup_steps", "2",
               "--max_steps", "3"), callbacks=[record])
    names = set(record.start)
    assert record.trainable == names  # upstream's full fine-tune: every tensor
    # qllama.lm_head is trainable but off the retrieval loss's path: it alone stays as it was
    assert record.changed() == names - {"qllama.lm_head.weight"}
    # After the scheduler's first step every group keeps its layer's share of the scheduled rate.
    factors = {round(lr / (1e-2 * scale), 6) for lr, scale, _ in record.groups}
    assert factors == {0.5}  # the first step of a 2-step warm-up, the same factor for every group
    rates = {name: lr for lr, _, name in record.groups}
    # InternViT depth 3 (ids 0..4, clip_projector 4), QLLaMA depth 4 (ids 0..5, heads 5)
    assert rates["vit_layer_0_decay"] == pytest.approx(rates["vit_layer_4_decay"] * 0.5 ** 4)
    assert rates["qllama_layer_1_decay"] == pytest.approx(rates["qllama_layer_5_decay"] * 0.8 ** 4)
    # The output directory: published names and layout, tokenizer and preprocessor of the source, reloadable.
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["InternVLModel"] and config["auto_map"]["AutoModel"]
    for name in ("tokenizer.model", "tokenizer_config.json", "preprocessor_config.json"):
        assert (out / name).read_bytes() == (source / name).read_bytes()
    assert set(load_file(out / "model.safetensors")) == set(load_file(source / "model.safetensors"))
    reloaded = InternVLModel.from_pretrained(out).eval()
    torch.testing.assert_close(_features(reloaded, 56), _features(record.model.eval(), 56))


def test_head_fine_tune_at_a_new_image_size_trains_the_text_projection_only(source, flickr, tmp_path):
    record = _Record()
    out = tmp_path / "head"
    main(_argv(source, flickr, out, "--freeze_model", "--freeze_vision_model", "--freeze_qllama",
               "--unfreeze_qllama_head", "--force_image_size", "70"), callbacks=[record])
    assert record.trainable == {"qllama.lm_head.weight", "text_projection"}
    assert record.changed() == {"text_projection"}
    # 56 -> 70 px: the position embedding is the bicubic resize of the source's, stored at 70 and reloaded at 70.
    config = json.loads((out / "config.json").read_text())
    assert config["force_image_size"] == 70
    resized = InternVLModel.from_pretrained(source)
    resized.set_image_size(70)
    reloaded = InternVLModel.from_pretrained(out)
    assert reloaded.image_size == 70 and image_transform(reloaded.config).transforms[1].size == (70, 70)
    torch.testing.assert_close(reloaded.vision_model.embeddings.position_embedding,
                               resized.vision_model.embeddings.position_embedding)
    preprocessor = json.loads((out / "preprocessor_config.json").read_text())
    assert preprocessor["size"] == preprocessor["crop_size"] == 70


def test_lora_fine_tune_keeps_adapters_in_checkpoints_and_merges_the_final_model_on_request(source, flickr, tmp_path):
    record = _Record()
    out = tmp_path / "lora"
    main(_argv(source, flickr, out, "--freeze_model", "--freeze_vision_model", "--freeze_qllama",
               "--unfreeze_qllama_head", "--use_backbone_lora", "4", "--use_qllama_lora", "2", "--merge_lora", "True",
               "--save_strategy", "steps", "--save_steps", "2"), callbacks=[record])
    lora = {n for n in record.start if ".lora_A." in n or ".lora_B." in n}
    targets = {n.split(".")[-4] for n in lora}
    assert targets == {"qkv", "proj", "fc1", "fc2", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                       "down_proj"} and not any(".cross_attn." in n for n in lora)  # upstream's targets
    assert record.trainable == lora | {"qllama.base_model.model.lm_head.weight", "text_projection"}
    assert record.changed() == lora | {"text_projection"}  # two steps: A moves once B is non-zero
    trained = _features(record.model.eval(), 56)
    # The checkpoint keeps the adapters (as upstream saves them): config.json says so and the loaders rebuild them;
    # the caption evaluation generates through them.
    checkpoint = out / "checkpoint-2"
    config = json.loads((checkpoint / "config.json").read_text())
    assert (config["use_backbone_lora"], config["use_qllama_lora"]) == (4, 2)  # reloaded with alpha = 2 x rank
    adapters = InternVLModel.from_pretrained(checkpoint).eval()
    torch.testing.assert_close(_features(adapters, 56), trained)
    caption = build_cg_tokenizer(checkpoint, "caption")
    prompt = caption.tokenize([caption.prompt])
    image = image_transform(56)(KIT.sample(0).image)[None]
    assert adapters.generate(pixel_values=image, input_ids=prompt.input_ids, attention_mask=prompt.attention_mask,
                             max_new_tokens=3, min_new_tokens=3).shape == (1, 3)
    # --merge_lora: the final model has plain weights with the adapters folded in.
    config = json.loads((out / "config.json").read_text())
    assert config["use_backbone_lora"] == config["use_qllama_lora"] == 0
    assert not any("lora" in n or "base_model" in n for n in load_file(out / "model.safetensors"))
    torch.testing.assert_close(_features(InternVLModel.from_pretrained(out).eval(), 56), trained, rtol=1e-4,
                               atol=1e-5)


def test_a_killed_run_resumes_with_the_same_command(source, flickr, tmp_path):
    flags = ("--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2", "--logging_steps", "1")
    reference = tmp_path / "reference"
    main(_argv(source, flickr, reference, *flags))
    out = tmp_path / "killed"
    argv = _argv(source, flickr, out, *flags)
    # The same command in a process that is killed (SIGKILL, no clean-up) in step 3, after checkpoint-2.
    program = """if True:
        import os, signal, sys
        from transformers import TrainerCallback
        from internvl_g.finetune import main

        class Kill(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == 3:
                    os.kill(os.getpid(), signal.SIGKILL)

        main(sys.argv[1:], callbacks=[Kill()])"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, "-c", program, *argv], env=env, cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (out / "checkpoint-2" / COMPLETE_MARKER).is_file() and not (out / "config.json").exists()
    # A checkpoint the kill interrupted while it was being written: never resumed from, removed.
    partial = out / "checkpoint-4"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"truncated")
    main(argv)
    assert not partial.exists() or (partial / COMPLETE_MARKER).is_file()
    state = json.loads((out / "trainer_state.json").read_text())
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2, 3, 4]
    # Steps 3 and 4 ran again from checkpoint-2 (weights, optimizer, scheduler, data order, RNG): the same model.
    resumed, uninterrupted = load_file(out / "model.safetensors"), load_file(reference / "model.safetensors")
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    log = (out / "train_log.txt").read_text()
    assert "resuming from" in log and "checkpoint-2" in log
    # The same command once more: the run is complete, nothing trains (transformers 5 would take a 5th step).
    main(argv)
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4
    assert "already holds this run, complete at step 4: nothing to do" in (out / "train_log.txt").read_text()


def test_deepspeed_configs_are_upstreams_without_the_scheduler_and_valid(tmp_path, deepspeed_state):
    DeepSpeedConfig = pytest.importorskip("deepspeed.runtime.config").DeepSpeedConfig

    for stage in (1, 2, 3):
        path = REPO / "internvl_g" / f"zero_stage{stage}_config.json"
        config = read_deepspeed_config(str(path), keep_optimizer_groups=True)
        assert "scheduler" not in config and "optimizer" not in config
        args = TrainingArguments(output_dir=str(tmp_path), bf16=True, use_cpu=True, per_device_train_batch_size=32,
                                 deepspeed=str(path))
        hf = args.hf_deepspeed_config
        model = torch.nn.Linear(4, 4)
        model.config = type("Config", (), {"hidden_size": 4, "to_dict": lambda self: {}})()
        hf.trainer_config_finalize(args, model, 100)
        assert '"auto"' not in json.dumps(hf.config)  # every "auto" filled from the flags
        assert hf.config["bf16"]["enabled"] is True and hf.config["train_micro_batch_size_per_gpu"] == 32
        assert DeepSpeedConfig(hf.config).zero_optimization_stage == stage
        assert weights_dtype(args) == torch.bfloat16  # DeepSpeed keeps the float32 masters: load in bf16
    upstream = json.loads((REPO / "internvl_g" / "zero_stage1_config.json").read_text())
    upstream["scheduler"] = {"type": "WarmupDecayLR", "params": {"warmup_num_steps": "auto"}}
    with_scheduler = tmp_path / "upstream_zero_stage1_config.json"
    with_scheduler.write_text(json.dumps(upstream))
    with pytest.raises(ConfigError, match="'scheduler' block, which would override the per-group learning rates"):
        read_deepspeed_config(str(with_scheduler), keep_optimizer_groups=True)
    read_deepspeed_config(str(with_scheduler))  # without layer decay it only replaces --lr_scheduler_type (logged)


def test_upstream_flags_on_this_transformers(tmp_path):
    types = (ModelArguments, DataTrainingArguments, TrainingArguments)
    base = ["--model_name_or_path", "m", "--output_dir", str(tmp_path)]
    model, data, args = parse_args(types, base + ["--evaluation_strategy", "no", "--overwrite_output_dir", "True",
                                                  "--use_custom_trainer"], defaults=TRAINING_DEFAULTS)
    assert (args.eval_strategy, args.overwrite_output_dir, model.use_custom_trainer) == ("no", True, True)
    assert args.do_train and data.force_image_size is None and data.max_seq_length == 80
    assert args.gradient_checkpointing and args.gradient_checkpointing_kwargs == {"use_reentrant": False}
    assert weights_dtype(args) == torch.float32  # without DeepSpeed: float32 weights, --bf16 under autocast
    with warnings.catch_warnings():  # upstream's spelling, under transformers 5's name where it has one
        warnings.simplefilter("error", FutureWarning)
        _, _, args = parse_args(types, base + ["--gradient_checkpointing", "False"], defaults=TRAINING_DEFAULTS)
    assert not args.gradient_checkpointing
    arguments = tmp_path / "args.json"
    arguments.write_text(json.dumps({"model_name_or_path": "m", "output_dir": str(tmp_path),
                                     "evaluation_strategy": "no", "dataset_name": "coco_karpathy_train"}))
    model, data, args = parse_args(types, [str(arguments)], defaults=TRAINING_DEFAULTS)
    assert (data.dataset_name, args.eval_strategy, args.gradient_checkpointing) == ("coco_karpathy_train", "no", True)
    arguments.write_text(json.dumps({"model_name_or_path": "m", "output_dir": "o", "learning_rat": 1}))
    with pytest.raises(ConfigError, match="unknown argument.*learning_rat"):
        parse_args(types, [str(arguments)])


@pytest.mark.parametrize("flags, error, message", [
    (["--force_image_size", "360"], ConfigError, "--force_image_size 360 is not a positive multiple of .* 14"),
    (["--freeze_model"], ConfigError, "--freeze_model leaves nothing to train"),
    (["--freeze_vision_model", "--freeze_qllama", "--freeze_model", "--use_backbone_lora", "-4"], ConfigError,
     "--use_backbone_lora -4: a LoRA rank is >= 0"),
    (["--merge_lora", "True"], ConfigError, "--merge_lora: the model has no LoRA adapters"),
    (["--dataset_name", "my_set"], ConfigError, "--dataset_name 'my_set' is not a known dataset"),
    (["--use_custom_trainer", "--deepspeed", "upstream.json", "--use_cpu", "True"], ConfigError,
     "upstream.json has a 'scheduler' block"),
    (["--bf16", "True", "--fp16", "True", "--use_cpu", "True"], ConfigError, "invalid training arguments: .*fp16 and bf16"),
    (["--resume_from_checkpoint", "nowhere"], MissingFileError, "--resume_from_checkpoint nowhere: no such directory"),
])
def test_bad_flags_are_named(source, flickr, tmp_path, monkeypatch, deepspeed_state, flags, error, message):
    monkeypatch.chdir(tmp_path)
    upstream = json.loads((REPO / "internvl_g" / "zero_stage1_config.json").read_text())
    upstream["scheduler"] = {"type": "WarmupDecayLR", "params": {"warmup_num_steps": "auto"}}
    (tmp_path / "upstream.json").write_text(json.dumps(upstream))
    with pytest.raises(error, match=message):
        main(_argv(source, None if "--dataset_name" in flags else flickr, tmp_path / "out", *flags))


def test_an_output_dir_with_files_but_no_checkpoint_needs_overwrite_output_dir(source, flickr, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train_log.txt").write_text("the log of an attempt that stopped before its first checkpoint")
    args = parse_args((ModelArguments, DataTrainingArguments, TrainingArguments),
                      ["--model_name_or_path", "m", "--output_dir", str(out)])[2]
    assert resume_checkpoint(args, own_files=("train_log.txt", "runs")) is None  # the run's own files: no error
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds files and no complete checkpoint.*--overwrite_output_dir"):
        main(_argv(source, flickr, out, "--do_train", "True"))


SCRIPTS = {  # script: (dataset, DeepSpeed config, flags that must be there)
    "finetune/internvl_stage2_finetune_flickr_364_bs1024_ep10.sh": ("flickr30k_en_train", "zero_stage1_config.json",
                                                                    ["--force_image_size 364", "--use_custom_trainer",
                                                                     "--drop_path_rate 0.3", "--num_train_epochs 10"]),
    "finetune/internvl_stage2_finetune_flickrcn_364_bs1024_ep10.sh": ("flickr30k_cn_train", "zero_stage1_config.json",
                                                                      ["--force_image_size 364"]),
    "finetune/internvl_stage2_finetune_coco_364_bs1024_ep5.sh": ("coco_karpathy_train", "zero_stage1_config.json",
                                                                 ["--num_train_epochs 5"]),
    "head_finetune/internvl_stage2_finetune_flickr_224_bs1024_ep10_head_4gpu.sh": (
        "flickr30k_en_train", "zero_stage3_config.json", ["--freeze_model", "--unfreeze_qllama_head"]),
    "head_finetune/internvl_stage2_finetune_flickrcn_224_bs1024_ep10_head_4gpu.sh": (
        "flickr30k_cn_train", "zero_stage3_config.json", ["--freeze_qllama"]),
    "head_finetune/internvl_stage2_finetune_coco_224_bs1024_ep5_head_4gpu.sh": (
        "coco_karpathy_train", "zero_stage3_config.json", ["--freeze_vision_model"]),
    "lora_finetune/internvl_stage2_finetune_flickr_224_bs1024_ep10_lora16_4gpu.sh": (
        "flickr30k_en_train", "zero_stage3_config.json", ["--use_backbone_lora 16", "--use_qllama_lora 16"]),
    "lora_finetune/internvl_stage2_finetune_flickrcn_224_bs1024_ep10_lora16_4gpu.sh": (
        "flickr30k_cn_train", "zero_stage3_config.json", ["--use_backbone_lora 16"]),
    "lora_finetune/internvl_stage2_finetune_coco_224_bs1024_ep5_lora16_4gpu.sh": (
        "coco_karpathy_train", "zero_stage3_config.json", ["--use_qllama_lora 16", "--num_train_epochs 5"]),
}


def test_the_upstream_scripts_launch_the_upstream_commands(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("GPUS", "PARTITION", "MASTER_PORT", "BATCH_SIZE")}
    for script, (dataset, deepspeed, flags) in SCRIPTS.items():
        path = REPO / "internvl_g" / "shell" / script
        command = subprocess.run(["sh", str(path), "--max_steps", "7"], env={**env, "DRY_RUN": "1", "PARTITION": "VC2"},
                                 capture_output=True, text=True, cwd=tmp_path, check=True).stdout
        name = path.stem.replace("_224_", "_364_").replace("_lora16_", "_lora_")
        assert f"--dataset_name {dataset} " in command and f"--output_dir ./work_dirs/{name} " in command, script
        assert f"--deepspeed {REPO / 'internvl_g' / deepspeed} " in command and "--evaluation_strategy no" in command
        assert all(f"{flag} " in command or command.endswith(flag + "\n") for flag in flags), (script, command)
        assert command.rstrip().endswith("--max_steps 7")  # a script's arguments come last: they override
        tasks = "32" if script.startswith("finetune/") else "4"
        assert command.startswith(f"srun -p VC2 --job-name=internvl --gres=gpu:{min(int(tasks), 8)} --ntasks={tasks} ")
    # On the CPU: GPUS=0 one process; no GPU visible, N processes over gloo with GPUS=N, else one (not 32).
    for gpus, launcher in (("0", "env CUDA_VISIBLE_DEVICES= python -u -m internvl_g.finetune "),
                           ("2", "python -m torch.distributed.run --nnodes=1 --nproc_per_node=2 "),
                           (None, "python -u -m internvl_g.finetune ")):
        cpu_env = {**env, "DRY_RUN": "1", "CUDA_VISIBLE_DEVICES": "", **({"GPUS": gpus} if gpus else {})}
        cpu = subprocess.run(["sh", str(REPO / "internvl_g" / "shell" / next(iter(SCRIPTS)))], env=cpu_env,
                             capture_output=True, text=True, check=True).stdout
        assert cpu.startswith(launcher) and "--use_cpu True" in cpu and "--deepspeed" not in cpu, (gpus, cpu)


def test_upstreams_script_fine_tunes_a_tiny_model_to_a_clearly_better_recall(tmp_path, monkeypatch):
    """The demo's workflow, scaled down: zero-shot recall through the clip_benchmark CLI, the full fine-tuning
    script's command (its flags, then the demo's CPU overrides) run in this process, recall again."""
    from internvl_g import demo

    pretrained = demo.write_demo_data(tmp_path, train_images=32, test_images=12)
    before = demo.retrieval(tmp_path, pretrained, tmp_path / "results.json")
    command = demo.script_command(tmp_path, demo.script_flags(40, 16, 2e-3, 0), dry_run=True).stdout
    argv = shlex.split(command)
    assert argv[:6] == ["env", "CUDA_VISIBLE_DEVICES=", sys.executable, "-u", "-m", "internvl_g.finetune"]
    monkeypatch.chdir(tmp_path)  # the script's paths: ./pretrained, ./data, ./work_dirs
    main(argv[6:])
    after = demo.retrieval(tmp_path, tmp_path / demo.OUTPUT, tmp_path / "results.json")
    # 12 held-out images x 5 captions: chance is 1/12 for a caption's image at rank 1, 5/12 within rank 5.
    for name in demo.MODELS:
        for metric in ("image_retrieval_recall@1", "text_retrieval_recall@1"):
            assert after[name][metric] >= before[name][metric] + 0.1 and after[name][metric] > 2 / 12, (name, after)
        assert after[name]["image_retrieval_recall@5"] >= 0.75 > before[name]["image_retrieval_recall@5"], (name, after)


@pytest.mark.parametrize("flags, expected", [
    # upstream's order: the freezes, then LoRA, then the unfreezes
    (dict(freeze_model=True, unfreeze_crossattn=True), lambda n: n.startswith("qllama.") and ".cross_attn." in n),
    (dict(freeze_vision_model=True, freeze_qllama=True),
     lambda n: not n.startswith(("vision_model.", "qllama."))),  # queries, logit scale and the heads still train
    (dict(freeze_qllama=True, use_qllama_lora=2, unfreeze_crossattn=True),
     lambda n: not n.startswith("qllama.") or ".lora_" in n or ".cross_attn." in n),
])
def test_other_trainable_sets(flags, expected):
    from cg_helpers import randomized_internvl_cg, tiny_internvl_cg_config

    from internvl_g.finetune import apply_trainable_set

    model = randomized_internvl_cg(tiny_internvl_cg_config())
    apply_trainable_set(model, ModelArguments(model_name_or_path="tiny", **flags))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and trainable == {n for n, _ in model.named_parameters() if expected(n)}


def test_zero3_lora_run_as_upstreams_4_gpu_scripts(source, flickr, tmp_path, deepspeed_cpu_ops):
    """Upstream's head and LoRA scripts use ZeRO-3: a real DeepSpeed run (one CPU process) gives the first loss of
    the run without DeepSpeed, and the merged output, saved from partitioned weights, reloads at its image size."""
    pytest.importorskip("deepspeed")
    # a clean environment: what earlier in-process runs left in os.environ (ACCELERATE_*, ...) changes a run
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           **deepspeed_cpu_ops}
    flags = ["--freeze_model", "--freeze_vision_model", "--freeze_qllama", "--unfreeze_qllama_head",
             "--use_backbone_lora", "4", "--use_qllama_lora", "2", "--force_image_size", "84", "--logging_steps", "1",
             "--merge_lora", "True"]

    def run(out, *extra):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            env["MASTER_PORT"] = str(probe.getsockname()[1])
        done = subprocess.run([sys.executable, "-m", "internvl_g.finetune", *_argv(source, flickr, out, *flags, *extra)],
                              env=env, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stderr[-3000:]
        return [e for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]

    plain = run(tmp_path / "plain")
    zero3 = run(tmp_path / "zero3", "--deepspeed", str(REPO / "internvl_g/zero_stage3_config.json"))
    assert len(zero3) == 2 and zero3[0]["loss"] == pytest.approx(plain[0]["loss"], rel=1e-4)  # same weights, batch
    model = InternVLModel.from_pretrained(tmp_path / "zero3")
    assert model.image_size == 84 and not model.config.use_backbone_lora and not model.config.use_qllama_lora
    reference = InternVLModel.from_pretrained(tmp_path / "plain")
    features, expected = _features(model, 84), _features(reference, 84)
    assert torch.isfinite(features).all()
    # two AdamW steps from the same start, DeepSpeed's optimizer against torch's: close, not identical
    torch.testing.assert_close(features, expected, rtol=0.05, atol=0.05)
