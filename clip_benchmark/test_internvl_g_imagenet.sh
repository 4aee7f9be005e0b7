#!/usr/bin/env bash
# InternVL-G zero-shot ImageNet-1K (en, cn, it, jp, ar), -V2, -Sketch, -A, -R and ObjectNet
# (upstream's clip_benchmark/test_internvl_g_imagenet.sh); variables and behaviour: common.sh.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
source "$(dirname "$0")/common.sh"
MODEL=${MODEL:-$PRETRAINED/InternVL-14B-224px}
OUTPUT=${OUTPUT:-result_g.json}
imagenet_set internvl_g_classification_hf
finish
