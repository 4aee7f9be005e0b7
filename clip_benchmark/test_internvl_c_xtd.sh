#!/usr/bin/env bash
# InternVL-C zero-shot retrieval on XTD in 8 languages
# (upstream's clip_benchmark/test_internvl_c_xtd.sh); variables and behaviour: common.sh.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
source "$(dirname "$0")/common.sh"
MODEL=${MODEL:-$PRETRAINED/internvl_c_13b_224px.pth}
OUTPUT=${OUTPUT:-result.json}
xtd_set internvl_c_retrieval
finish
