# internvl_g/shell/common.sh: what the fine-tuning scripts share (sourced by them, not run).
#
# `finetune DEEPSPEED_JSON FLAGS...` runs `python -m internvl_g.finetune` through shell/launch.sh with the flags
# every upstream script passes, then FLAGS (a script's own, then its arguments: any flag given to a script
# overrides the one it sets). `full_finetune` and `head_finetune` hold the flags of upstream's three script
# families. Paths are upstream's, relative to the current directory (run from the repository root or from
# internvl_g/, where data/ and pretrained/ link to the repository's).
#
#   MODEL       the checkpoint to fine-tune (default: ./pretrained/InternVL-14B-224px)
#   OUTPUT_DIR  where checkpoints and the model go (default: each script's ./work_dirs/<script name>)
#   GPUS        processes (default: each script's under srun or with a GPU visible, else one); on the CPU
#               (GPUS=0, or no GPU visible and no PARTITION) the run goes without DeepSpeed (ZeRO needs CUDA) and
#               with --use_cpu True: GPUS=0 one process, GPUS=N N processes over gloo
# plus the launcher's variables (PARTITION for SLURM, GPUS_PER_NODE, QUOTA_TYPE, MASTER_PORT, ...; shell/README.md).
# A killed run resumes from its last complete checkpoint when the same command is run again.

INTERNVL_G_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$INTERNVL_G_DIR/../shell/launch.sh"
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}

# on_gpus: the run goes to GPUs (srun, or a CUDA GPU visible here; shell/launch.sh's rule), GPUS=0 not given.
on_gpus() {
    [[ ${GPUS:-} != 0 ]] && { [[ -n ${PARTITION:-} ]] || [[ $(_launch_visible_gpus) -gt 0 ]]; }
}

# default_gpus N: GPUS=N unless set, when the run goes to GPUs (upstream's count is meant for them).
default_gpus() {
    if on_gpus; then export GPUS=${GPUS:-$1}; fi
}

finetune() {
    local deepspeed_json=$1
    shift
    local -a device
    if on_gpus; then
        device=(--deepspeed "$INTERNVL_G_DIR/$deepspeed_json")
    else
        device=(--use_cpu True)
    fi
    launch -m internvl_g.finetune \
        --model_name_or_path "${MODEL:-./pretrained/InternVL-14B-224px}" \
        --overwrite_output_dir True \
        --dataloader_num_workers 2 \
        --pad_to_max_length True \
        --bf16 True \
        --gradient_accumulation_steps 1 \
        --evaluation_strategy "no" \
        --save_strategy "steps" \
        --save_steps 100 \
        --save_total_limit 5 \
        --learning_rate 1e-6 \
        --weight_decay 0.05 \
        --warmup_steps 100 \
        --lr_scheduler_type "cosine" \
        --logging_steps 1 \
        --max_seq_length 80 \
        --do_train True \
        --optim adamw_torch \
        --report_to "tensorboard" \
        "${device[@]}" "$@"
}

# full_finetune DATASET OUTPUT_NAME EPOCHS [ARGS...]: shell/finetune/ (upstream: srun, 32 GPUs x 32 per device
# = 1024, 364 px, drop path 0.3, layer-wise lr decay 0.9 / 0.9, ZeRO-1).
full_finetune() {
    local dataset=$1 name=$2 epochs=$3
    shift 3
    default_gpus 32
    export VIT_LAYER_DECAY_RATE=${VIT_LAYER_DECAY_RATE:-0.9}
    export QLLAMA_LAYER_DECAY_RATE=${QLLAMA_LAYER_DECAY_RATE:-0.9}
    finetune zero_stage1_config.json \
        --dataset_name "$dataset" \
        --output_dir "${OUTPUT_DIR:-./work_dirs/$name}" \
        --force_image_size 364 \
        --drop_path_rate 0.3 \
        --use_custom_trainer \
        --num_train_epochs "$epochs" \
        --per_device_train_batch_size 32 \
        "$@"
}

# head_finetune DATASET OUTPUT_NAME EPOCHS [ARGS...]: shell/head_finetune/ (upstream: torchrun, GPUS=4 x
# BATCH_SIZE=32 per device, 224 px, ZeRO-3; trains text_projection and QLLaMA's lm_head); the LoRA scripts add
# `--use_backbone_lora 16 --use_qllama_lora 16` in ARGS.
head_finetune() {
    local dataset=$1 name=$2 epochs=$3
    shift 3
    default_gpus 4
    export MASTER_PORT=${MASTER_PORT:-34229}
    finetune zero_stage3_config.json \
        --dataset_name "$dataset" \
        --output_dir "${OUTPUT_DIR:-./work_dirs/$name}" \
        --freeze_model \
        --freeze_vision_model \
        --freeze_qllama \
        --unfreeze_qllama_head \
        --force_image_size 224 \
        --drop_path_rate 0.0 \
        --num_train_epochs "$epochs" \
        --per_device_train_batch_size "${BATCH_SIZE:-32}" \
        "$@"
}
