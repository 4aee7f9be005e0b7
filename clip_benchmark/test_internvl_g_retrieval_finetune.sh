#!/usr/bin/env bash
# InternVL-C and -G retrieval of the stage-2 fine-tunes on Flickr30K (en) and Flickr30K-CN (cn) at their 364 px
# (upstream's clip_benchmark/test_internvl_g_retrieval_finetune.sh); variables and behaviour: common.sh.
#   MODEL_EN  the Flickr30K fine-tune (default: work_dirs/internvl_stage2_finetune_flickr_364_bs1024_ep10,
#             or OpenGVLab/InternVL-14B-Flickr30K-FT-364px downloaded to pretrained/)
#   MODEL_CN  the Flickr30K-CN fine-tune (default: work_dirs/internvl_stage2_finetune_flickrcn_364_bs1024_ep10)
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
source "$(dirname "$0")/common.sh"
OUTPUT=${OUTPUT:-result.json}

MODEL=${MODEL_CN:-$REPO/work_dirs/internvl_stage2_finetune_flickrcn_364_bs1024_ep10}
clip_eval internvl_c_retrieval_hf --task zeroshot_retrieval --language cn --dataset flickr30k --dataset_root "$DATA/flickr30k"
clip_eval internvl_g_retrieval_hf --task zeroshot_retrieval --language cn --dataset flickr30k --dataset_root "$DATA/flickr30k"
MODEL=${MODEL_EN:-$REPO/work_dirs/internvl_stage2_finetune_flickr_364_bs1024_ep10}
clip_eval internvl_c_retrieval_hf --task zeroshot_retrieval --language en --dataset flickr30k --dataset_root "$DATA/flickr30k"
clip_eval internvl_g_retrieval_hf --task zeroshot_retrieval --language en --dataset flickr30k --dataset_root "$DATA/flickr30k"
finish
