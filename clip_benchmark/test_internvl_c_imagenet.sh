#!/usr/bin/env bash
# InternVL-C zero-shot ImageNet-1K (en, cn, it, jp, ar), -V2, -Sketch, -A, -R and ObjectNet
# (upstream's clip_benchmark/test_internvl_c_imagenet.sh); variables and behaviour: common.sh.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
source "$(dirname "$0")/common.sh"
MODEL=${MODEL:-$PRETRAINED/internvl_c_13b_224px.pth}
OUTPUT=${OUTPUT:-result.json}

clip_eval internvl_c_classification --task zeroshot_classification --language en cn it jp ar --dataset imagenet1k \
    --dataset_root "$DATA/imagenet-1k/"
clip_eval internvl_c_classification --task zeroshot_classification --language en --dataset imagenetv2 --dataset_root "$DATA/imagenetv2/"
clip_eval internvl_c_classification --task zeroshot_classification --language en --dataset imagenet_sketch --dataset_root "$DATA/imagenet-sketch/"
clip_eval internvl_c_classification --task zeroshot_classification --language en --dataset imagenet-a --dataset_root "$DATA/imagenet-a/"
clip_eval internvl_c_classification --task zeroshot_classification --language en --dataset imagenet-r --dataset_root "$DATA/imagenet-r/"
clip_eval internvl_c_classification --task zeroshot_classification --language en --dataset objectnet --dataset_root "$DATA/objectnet-1.0/"
finish
