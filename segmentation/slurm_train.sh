#!/usr/bin/env bash
# Train on a SLURM cluster (srun), as upstream's slurm_train.sh:
#
#   GPUS=8 bash segmentation/slurm_train.sh <partition> <job-name> <config> [train.py args...]
#
# GPUS (default 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5, as upstream), SRUN_ARGS, QUOTA_TYPE: shell/README.md.
set -euo pipefail
if [[ $# -lt 3 ]]; then
    echo "usage: [GPUS=8] $0 <partition> <job-name> <config> [train.py args...]" >&2
    exit 2
fi
export PARTITION=$1 JOB_NAME=$2 CPUS_PER_TASK=${CPUS_PER_TASK:-5}
CONFIG=$3
shift 3
source "$(dirname "${BASH_SOURCE[0]}")/../shell/launch.sh"
launch -m segmentation.train "$CONFIG" --launcher slurm "$@"
