#!/usr/bin/env bash
# Evaluate on the GPUs of this node (torchrun), as upstream's dist_test.sh:
#
#   bash segmentation/dist_test.sh <config> <checkpoint> <gpus> --eval mIoU [test.py args...]
#
# <gpus> 0 (or no GPU visible) runs one CPU process. PORT (default 29510) is the rendezvous port; the other
# launch variables: shell/README.md.
set -euo pipefail
if [[ $# -lt 3 ]]; then
    echo "usage: $0 <config> <checkpoint> <gpus> [test.py args...]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
export GPUS=$3
export MASTER_PORT=${PORT:-${MASTER_PORT:-29510}}
shift 3
unset PARTITION
source "$(dirname "${BASH_SOURCE[0]}")/../shell/launch.sh"
launch -m segmentation.test "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
