#!/usr/bin/env bash
# Head-only fine-tune of InternVL-14B-224px on Flickr30K, upstream's script of this name. Trained: text_projection
# (and QLLaMA's lm_head, which is off the loss's path); GPUS x BATCH_SIZE per device (4 x 32 by default), 10 epochs
# at 224 px, DeepSpeed ZeRO-3, bf16 (the flags: internvl_g/shell/common.sh). Upstream runs it with torchrun on one
# node:
#   GPUS=4 BATCH_SIZE=32 sh internvl_g/shell/head_finetune/internvl_stage2_finetune_flickr_224_bs1024_ep10_head_4gpu.sh
# The output directory keeps upstream's name (364 / bs1024 included).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
source "$(dirname "$0")/../common.sh"
head_finetune flickr30k_en_train internvl_stage2_finetune_flickr_364_bs1024_ep10_head_4gpu 10 "$@"
