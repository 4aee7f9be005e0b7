#!/usr/bin/env bash
# InternVL-C zero-shot classification on 21 datasets
# (upstream's clip_benchmark/test_internvl_c_classification.sh); variables and behaviour: common.sh.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
source "$(dirname "$0")/common.sh"
MODEL=${MODEL:-$PRETRAINED/internvl_c_13b_224px.pth}
OUTPUT=${OUTPUT:-result.json}
classification_set internvl_c_classification
finish
