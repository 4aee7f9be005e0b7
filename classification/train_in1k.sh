#!/usr/bin/env bash
# Linear probing / evaluation of InternViT with classification/main.py. Two ways to call it:
#
# upstream's (train_in1k.sh of OpenGVLab/InternVL): partition, job name and config as arguments,
#   GPUS=8 bash classification/train_in1k.sh <partition> <job-name> <config.yaml> [main.py args...]
#   GPUS=8 bash classification/train_in1k.sh VC5 probe classification/configs/intern_vit_6b_1k_224.yaml \
#       --eval --resume pretrained/intern_vit_6b_224px_head.pth
#   An empty partition ("") runs on this machine instead of SLURM.
#
# shell/launch.sh's: everything from the launch variables (PARTITION, JOB_NAME, GPUS, ...), the config
# optional (default: configs/intern_vit_6b_1k_224.yaml beside this script),
#   [PARTITION=VC5] [GPUS=16] bash classification/train_in1k.sh [config.yaml] [main.py args...]
#   GPUS=0 bash classification/train_in1k.sh                 # one CPU process
#
# The forms differ in their first argument: a config file (*.yaml / *.yml), a main.py flag (-...) or
# nothing selects the second, anything else is upstream's partition. With a partition the job runs under
# SLURM srun (GPUS tasks, GPUS_PER_NODE per node; QUOTA_TYPE, CPUS_PER_TASK, SRUN_ARGS pass through);
# without one, torchrun over the visible GPUs, or one CPU process without any. Runs go to
# work_dirs/<config name>/; DRY_RUN=1 prints the command instead. All launch variables: shell/README.md.
set -euo pipefail

here=$(dirname "${BASH_SOURCE[0]}")
usage() {
    echo "usage: [GPUS=8] $0 <partition> <job-name> <config.yaml> [main.py args...]" >&2
    echo "   or: [PARTITION=...] [GPUS=...] $0 [config.yaml] [main.py args...]" >&2
    exit 2
}

if [[ $# -eq 0 || $1 == *.yaml || $1 == *.yml || $1 == -* ]]; then
    CONFIG=$here/configs/intern_vit_6b_1k_224.yaml
    if [[ $# -gt 0 && $1 != -* ]]; then
        CONFIG=$1
        shift
    fi
else
    [[ $# -ge 3 ]] || usage
    PARTITION=$1
    JOB_NAME=$2
    CONFIG=$3
    shift 3
    export PARTITION JOB_NAME
fi
if [[ ! -f $CONFIG ]]; then
    echo "$0: error: config file not found: $CONFIG" >&2
    exit 2
fi

source "$here/../shell/launch.sh"
launch "$here/main.py" --cfg "$CONFIG" --output work_dirs "$@"
