#!/usr/bin/env bash
# LoRA fine-tune of InternVL-14B-224px on Flickr30K, upstream's script of this name. Trained: rank-16 LoRA adapters
# in InternViT and QLLaMA, text_projection (and QLLaMA's lm_head); GPUS x BATCH_SIZE per device (4 x 32 by
# default), 10 epochs at 224 px, DeepSpeed ZeRO-3, bf16 (the flags: internvl_g/shell/common.sh). Upstream runs it
# with torchrun on one node:
#   GPUS=4 BATCH_SIZE=32 sh internvl_g/shell/lora_finetune/internvl_stage2_finetune_flickr_224_bs1024_ep10_lora16_4gpu.sh
# The output directory keeps upstream's name (364 / bs1024 included).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
source "$(dirname "$0")/../common.sh"
head_finetune flickr30k_en_train internvl_stage2_finetune_flickr_364_bs1024_ep10_lora_4gpu 10 \
    --use_backbone_lora 16 --use_qllama_lora 16 "$@"
