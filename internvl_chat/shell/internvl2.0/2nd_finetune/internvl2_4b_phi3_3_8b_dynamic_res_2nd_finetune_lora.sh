#!/usr/bin/env bash
# InternVL2-4B (InternViT-300M-448px + MLP + Phi-3-mini-128k-instruct): 2nd-stage fine-tuning, LoRA (rank 16, alpha 32) on the language model, everything else frozen.
# Upstream's internvl_chat/shell/internvl2.0/2nd_finetune/internvl2_4b_phi3_3_8b_dynamic_res_2nd_finetune_lora.sh with this repository's launcher and entry point; every
# flag and default is upstream's. Run in internvl_chat/:
#   GPUS=8 PER_DEVICE_BATCH_SIZE=4 bash shell/internvl2.0/2nd_finetune/internvl2_4b_phi3_3_8b_dynamic_res_2nd_finetune_lora.sh
# GRADIENT_ACC, when set, is kept and the total batch derived from it. Without a visible GPU (or with GPUS=0) the
# run goes to the CPU: float32, no DeepSpeed, one process (GPUS=N: N processes). MODEL_PATH, META_PATH, OUTPUT_DIR
# and DEEPSPEED override the paths; the run resumes from OUTPUT_DIR's last checkpoint when started again.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../finetune_common.sh"

GPUS=${GPUS:-2}
BATCH_SIZE=${BATCH_SIZE:-16}
PER_DEVICE_BATCH_SIZE=${PER_DEVICE_BATCH_SIZE:-4}
MODEL_PATH=${MODEL_PATH:-./pretrained/InternVL2-4B}
META_PATH=${META_PATH:-./shell/data/internvl_1_2_finetune_custom.json}
OUTPUT_DIR=${OUTPUT_DIR:-work_dirs/internvl_chat_v2_0/internvl2_4b_phi3_3_8b_dynamic_res_2nd_finetune_lora}
finetune_setup

launch -m internvl_chat.finetune \
  --model_name_or_path "$MODEL_PATH" \
  --conv_style "phi3-chat" \
  --output_dir "$OUTPUT_DIR" \
  --meta_path "$META_PATH" \
  --overwrite_output_dir True \
  --force_image_size 448 \
  --max_dynamic_patch 6 \
  --down_sample_ratio 0.5 \
  --drop_path_rate 0.0 \
  --freeze_llm True \
  --freeze_mlp True \
  --freeze_backbone True \
  --use_llm_lora 16 \
  --vision_select_layer -1 \
  --dataloader_num_workers 4 \
  --bf16 True \
  --num_train_epochs 1 \
  --per_device_train_batch_size "$PER_DEVICE_BATCH_SIZE" \
  --gradient_accumulation_steps "$GRADIENT_ACC" \
  --evaluation_strategy "no" \
  --save_strategy "steps" \
  --save_steps 200 \
  --save_total_limit 1 \
  --learning_rate 4e-5 \
  --weight_decay 0.01 \
  --warmup_ratio 0.03 \
  --lr_scheduler_type "cosine" \
  --logging_steps 1 \
  --max_seq_length 4096 \
  --do_train True \
  --grad_checkpoint True \
  --group_by_length True \
  --dynamic_image_size True \
  --use_thumbnail True \
  --ps_version 'v2' \
  --report_to "tensorboard" \
  ${DEEPSPEED:+--deepspeed "$DEEPSPEED"} \
  ${CPU_FLAGS[@]+"${CPU_FLAGS[@]}"} \
  "$@"
