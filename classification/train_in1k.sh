#!/usr/bin/env bash
# Linear probing / evaluation of InternViT with classification/main.py, as upstream's train_in1k.sh:
#
#   GPUS=8 bash classification/train_in1k.sh <partition> <job-name> <config> [main.py args...]
#   GPUS=8 bash classification/train_in1k.sh <partition> <job-name> classification/configs/intern_vit_6b_1k_224.yaml \
#       --eval --resume pretrained/intern_vit_6b_224px_head.pth
#
# A partition runs the job under SLURM srun (GPUS tasks, GPUS_PER_NODE per node; QUOTA_TYPE, CPUS_PER_TASK,
# SRUN_ARGS pass through). An empty partition ("") runs here instead: torchrun over the visible GPUs, or one
# CPU process without any. Runs go to work_dirs/<config name>/. All launch variables: shell/README.md.
set -euo pipefail

if [[ $# -lt 3 ]]; then
    echo "usage: [GPUS=8] [GPUS_PER_NODE=8] $0 <partition> <job-name> <config.yaml> [main.py args...]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
export PARTITION JOB_NAME

source "$(dirname "${BASH_SOURCE[0]}")/../shell/launch.sh"
launch "$(dirname "${BASH_SOURCE[0]}")/main.py" --cfg "$CONFIG" --output work_dirs "$@"
