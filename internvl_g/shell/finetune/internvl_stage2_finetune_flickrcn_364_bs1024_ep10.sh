#!/usr/bin/env bash
# Full fine-tune of InternVL-14B-224px on Flickr30K-CN, upstream's script of this name: every parameter trained, 32
# GPUs x 32 per device (1024), 10 epochs at 364 px, drop path 0.3, layer-wise learning-rate decay 0.9 (InternViT) /
# 0.9 (QLLaMA), DeepSpeed ZeRO-1, bf16 (the flags: internvl_g/shell/common.sh). Upstream runs it with srun:
#   PARTITION=<partition> GPUS=32 sh internvl_g/shell/finetune/internvl_stage2_finetune_flickrcn_364_bs1024_ep10.sh
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
source "$(dirname "$0")/../common.sh"
full_finetune flickr30k_cn_train internvl_stage2_finetune_flickrcn_364_bs1024_ep10 10 "$@"
