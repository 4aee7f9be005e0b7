#!/usr/bin/env bash
# Full fine-tune of InternVL-14B-224px on COCO (Karpathy train) (upstream's script of this name): every parameter
# trained, 32 GPUs on 4 nodes, per-device batch 32 (1024 in all), 5 epochs at 364 px, drop path 0.3, layer-wise
# learning-rate decay 0.9 (InternViT) / 0.9 (QLLaMA), DeepSpeed ZeRO-1, bf16. Upstream runs it with srun:
#   PARTITION=<partition> GPUS=32 sh internvl_g/shell/finetune/internvl_stage2_finetune_coco_364_bs1024_ep5.sh
# Variables: internvl_g/shell/common.sh.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
source "$(dirname "$0")/../common.sh"
export GPUS=${GPUS:-32}
export VIT_LAYER_DECAY_RATE=${VIT_LAYER_DECAY_RATE:-0.9}
export QLLAMA_LAYER_DECAY_RATE=${QLLAMA_LAYER_DECAY_RATE:-0.9}

finetune zero_stage1_config.json \
    --dataset_name 'coco_karpathy_train' \
    --output_dir "${OUTPUT_DIR:-./work_dirs/internvl_stage2_finetune_coco_364_bs1024_ep5}" \
    --force_image_size 364 \
    --drop_path_rate 0.3 \
    --use_custom_trainer \
    --num_train_epochs 5 \
    --per_device_train_batch_size 32 \
    "$@"
