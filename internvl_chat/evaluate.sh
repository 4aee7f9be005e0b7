#!/usr/bin/env bash
# InternVL-Chat caption evaluation, upstream's internvl_chat/evaluate.sh interface (run in internvl_chat/):
#
#   GPUS=1 bash evaluate.sh <checkpoint> caption | caption-coco | caption-flickr30k | caption-nocaps [flags...]
#   GPUS=1 bash evaluate.sh <checkpoint> caption-custom --meta-path my_val.json [flags...]
#
# caption runs the three benchmarks; caption-custom scores the answers to your own data (the fine-tuning
# format) against its gpt turns. Flags go to `python -m internvl_chat.evaluate_caption` (--dynamic,
# --max-num N, --auto, --load-in-8bit, --batch-size, ...; see its --help). --auto spreads one process's model
# over the visible GPUs, so it runs a single process, as upstream. Launched through shell/launch.sh: torchrun
# on this node's GPUs, srun when PARTITION is set, one CPU process with GPUS=0 or no GPU.
#   DATA_ROOT  directory holding coco/, flickr30k/, nocaps/ (default: data, relative to the current directory)
#   OUT_DIR    where the answers and scores go (default: results)
# plus the launcher's variables (GPUS, GPUS_PER_NODE, PARTITION, MASTER_PORT, ...; see shell/README.md).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../shell/launch.sh"

usage() {
    echo "usage: $0 <checkpoint> caption | caption-coco | caption-flickr30k | caption-nocaps | caption-custom [flags...]" >&2
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
    caption-custom) DATASETS=custom ;;
    *) echo "$0: task '$TASK' is not implemented here; the caption tasks are (upstream's other benchmarks are not)" >&2
       usage ;;
esac
for arg in "$@"; do
    if [[ $arg == --auto ]]; then GPUS=1; export GPUS; fi
done
echo "CHECKPOINT: $CHECKPOINT"

launch -m internvl_chat.evaluate_caption --checkpoint "$CHECKPOINT" --datasets "$DATASETS" \
    --data-root "${DATA_ROOT:-data}" --out-dir "${OUT_DIR:-results}" "$@"
