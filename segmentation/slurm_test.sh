#!/usr/bin/env bash
# Evaluate on a SLURM cluster (srun), as upstream's slurm_test.sh:
#
#   GPUS=8 bash segmentation/slurm_test.sh <partition> <job-name> <config> <checkpoint> --eval mIoU
#
# GPUS (default 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5, as upstream), SRUN_ARGS, QUOTA_TYPE: shell/README.md.
set -euo pipefail
if [[ $# -lt 4 ]]; then
    echo "usage: [GPUS=8] $0 <partition> <job-name> <config> <checkpoint> [test.py args...]" >&2
    exit 2
fi
export PARTITION=$1 JOB_NAME=$2 CPUS_PER_TASK=${CPUS_PER_TASK:-5}
CONFIG=$3
CHECKPOINT=$4
shift 4
source "$(dirname "${BASH_SOURCE[0]}")/../shell/launch.sh"
launch -m segmentation.test "$CONFIG" "$CHECKPOINT" --launcher slurm "$@"
