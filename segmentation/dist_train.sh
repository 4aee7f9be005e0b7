#!/usr/bin/env bash
# Train on the GPUs of this node (torchrun), as upstream's dist_train.sh:
#
#   bash segmentation/dist_train.sh <config> <gpus> [train.py args...]
#   bash segmentation/dist_train.sh segmentation/configs/intern_vit_6b/linear_probing/linear_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.py 8
#
# <gpus> 0 (or no GPU visible) runs one CPU process. PORT (default 29300) is the rendezvous port. The other
# launch variables (NNODES, NODE_RANK, MASTER_ADDR, PYTHON, DRY_RUN): shell/README.md.
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: $0 <config> <gpus> [train.py args...]" >&2
    exit 2
fi
CONFIG=$1
export GPUS=$2
export MASTER_PORT=${PORT:-${MASTER_PORT:-29300}}
shift 2
unset PARTITION
source "$(dirname "${BASH_SOURCE[0]}")/../shell/launch.sh"
launch -m segmentation.train "$CONFIG" --launcher pytorch --deterministic "$@"
