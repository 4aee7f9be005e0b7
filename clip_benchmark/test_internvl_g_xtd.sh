#!/usr/bin/env bash
# InternVL-G zero-shot retrieval on XTD in 8 languages
# (upstream's clip_benchmark/test_internvl_g_xtd.sh); variables and behaviour: common.sh.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
source "$(dirname "$0")/common.sh"
MODEL=${MODEL:-$PRETRAINED/InternVL-14B-224px}
OUTPUT=${OUTPUT:-result_g.json}

clip_eval internvl_g_retrieval_hf --task zeroshot_retrieval --dataset multilingual_mscoco_captions --dataset_root "$DATA/mscoco_captions" \
    --language en es fr zh it ko ru jp
finish
