#!/usr/bin/env bash
# InternVL-C zero-shot ImageNet-1K (en, cn, it, jp, ar), -V2, -Sketch, -A, -R and ObjectNet
# (upstream's clip_benchmark/test_internvl_c_imagenet.sh); variables and behaviour: common.sh.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
source "$(dirname "$0")/common.sh"
MODEL=${MODEL:-$PRETRAINED/internvl_c_13b_224px.pth}
OUTPUT=${OUTPUT:-result.json}
imagenet_set internvl_c_classification
finish
