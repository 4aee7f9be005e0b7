#!/usr/bin/env bash
# InternVL-C zero-shot classification on 21 datasets
# (upstream's clip_benchmark/test_internvl_c_classification.sh); variables and behaviour: common.sh.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
source "$(dirname "$0")/common.sh"
MODEL=${MODEL:-$PRETRAINED/internvl_c_13b_224px.pth}
OUTPUT=${OUTPUT:-result.json}

clip_eval internvl_c_classification --task zeroshot_classification --language en --dataset birdsnap --dataset_root "$DATA/birdsnap/"
clip_eval internvl_c_classification --task zeroshot_classification --language en --dataset_root "$DATA/" \
    --dataset cifar10 cifar100 food101 sun397 cars fgvc_aircraft dtd pets caltech101 mnist stl10 eurosat gtsrb country211 pcam renderedsst2 voc2007 vtab/flowers vtab/resisc45
clip_eval internvl_c_classification --task zeroshot_classification --language en --dataset fer2013 --dataset_root "$DATA/fer2013"
finish
