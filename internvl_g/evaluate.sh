#!/usr/bin/env bash
# InternVL-G zero-shot captioning, as upstream's internvl_g/evaluate.sh:
#
#   bash internvl_g/evaluate.sh <checkpoint> caption | caption-coco | caption-flickr30k | caption-nocaps [flags...]
#
# caption runs all three. Extra flags go to `python -m internvl_g.evaluate_caption` (--batch-size,
# --num-beams, --prompt, ...; see --help). Launched through shell/launch.sh: torchrun on this
# node's GPUs, srun when PARTITION is set, one CPU process with GPUS=0 or no GPU.
#   DATA_ROOT  directory holding coco/, flickr30k/, nocaps/ (default: data, relative to the current directory)
#   OUT_DIR    where the captions and scores JSON files go (default: results)
# plus the launcher's variables (GPUS, GPUS_PER_NODE, PARTITION, MASTER_PORT, ...; see shell/README.md).

# Upstream documents `sh evaluate.sh ...`: re-run under bash when started by a POSIX sh.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../shell/launch.sh"

usage() {
    echo "usage: $0 <checkpoint> caption | caption-coco | caption-flickr30k | caption-nocaps [flags...]" >&2
    exit 2
}

[[ $# -ge 2 ]] || usage
CHECKPOINT=$1
TASK=$2
shift 2
case $TASK in
    caption) DATASETS=coco,flickr30k,nocaps ;;
    caption-coco) DATASETS=coco ;;
    caption-flickr30k) DATASETS=flickr30k ;;
    caption-nocaps) DATASETS=nocaps ;;
    *) echo "$0: unknown task '$TASK'" >&2; usage ;;
esac
echo "CHECKPOINT: $CHECKPOINT"

launch -m internvl_g.evaluate_caption --checkpoint "$CHECKPOINT" --datasets "$DATASETS" \
    --data-root "${DATA_ROOT:-data}" --out-dir "${OUT_DIR:-results}" "$@"
