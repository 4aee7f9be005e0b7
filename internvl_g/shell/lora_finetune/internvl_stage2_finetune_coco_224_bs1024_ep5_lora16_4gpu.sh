#!/usr/bin/env bash
# LoRA fine-tune of InternVL-14B-224px on COCO (Karpathy train), upstream's script of this name. Trained:
# rank-16 LoRA adapters in InternViT and QLLaMA, text_projection (and QLLaMA's lm_head);
# GPUS x BATCH_SIZE per device (4 x 32 = 128 by default), 5 epochs at 224 px, DeepSpeed ZeRO-3, bf16.
# Upstream runs it with torchrun on one node:
#   GPUS=4 BATCH_SIZE=32 sh internvl_g/shell/lora_finetune/internvl_stage2_finetune_coco_224_bs1024_ep5_lora16_4gpu.sh
# (the output directory keeps upstream's name, 364 / bs1024 included). Variables: internvl_g/shell/common.sh,
# and BATCH_SIZE (per device).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
source "$(dirname "$0")/../common.sh"
export GPUS=${GPUS:-4}
export MASTER_PORT=${MASTER_PORT:-34229}
BATCH_SIZE=${BATCH_SIZE:-32}

finetune zero_stage3_config.json \
    --dataset_name 'coco_karpathy_train' \
    --output_dir "${OUTPUT_DIR:-./work_dirs/internvl_stage2_finetune_coco_364_bs1024_ep5_lora_4gpu}" \
    --freeze_model \
    --freeze_vision_model \
    --freeze_qllama \
    --unfreeze_qllama_head \
    --use_backbone_lora 16 \
    --use_qllama_lora 16 \
    --force_image_size 224 \
    --drop_path_rate 0.0 \
    --num_train_epochs 5 \
    --per_device_train_batch_size "$BATCH_SIZE" \
    "$@"
