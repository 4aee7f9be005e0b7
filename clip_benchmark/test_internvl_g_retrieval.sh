#!/usr/bin/env bash
# InternVL-G zero-shot retrieval on Flickr30K, COCO, Flickr30K-CN and COCO-CN
# (upstream's clip_benchmark/test_internvl_g_retrieval.sh); variables and behaviour: common.sh.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
source "$(dirname "$0")/common.sh"
MODEL=${MODEL:-$PRETRAINED/InternVL-14B-224px}
OUTPUT=${OUTPUT:-result_g.json}
retrieval_set internvl_g_retrieval_hf
finish
