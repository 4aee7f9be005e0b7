#!/usr/bin/env bash
# InternVL-C zero-shot retrieval on XTD in 8 languages
# (upstream's clip_benchmark/test_internvl_c_xtd.sh); variables and behaviour: common.sh.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
source "$(dirname "$0")/common.sh"
MODEL=${MODEL:-$PRETRAINED/internvl_c_13b_224px.pth}
OUTPUT=${OUTPUT:-result.json}

clip_eval internvl_c_retrieval --task zeroshot_retrieval --dataset multilingual_mscoco_captions --dataset_root "$DATA/mscoco_captions" \
    --language en es fr zh it ko ru jp
finish
