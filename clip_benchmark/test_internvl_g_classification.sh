#!/usr/bin/env bash
# InternVL-G zero-shot classification on 21 datasets
# (upstream's clip_benchmark/test_internvl_g_classification.sh); variables and behaviour: common.sh.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
source "$(dirname "$0")/common.sh"
MODEL=${MODEL:-$PRETRAINED/InternVL-14B-224px}
OUTPUT=${OUTPUT:-result_g.json}
classification_set internvl_g_classification_hf
finish
