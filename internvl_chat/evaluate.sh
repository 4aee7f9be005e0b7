#!/usr/bin/env bash
# InternVL-Chat evaluation, upstream's internvl_chat/evaluate.sh interface (run in internvl_chat/):
#
#   GPUS=8 bash evaluate.sh <checkpoint> <task>[,<task>...] [flags...]
#
# Tasks: upstream's names. The benchmarks (vqa-textvqa-val, pope, mme, refcoco-val, ... and the groups vqa,
# vqa-chartqa-test, refcoco) run through `python -m internvl_chat.eval run`, the model loaded once for all of
# them; the caption tasks (caption, caption-coco, caption-flickr30k, caption-nocaps, caption-custom
# --meta-path my_val.json) through `python -m internvl_chat.evaluate_caption`; qa-custom --meta-path my_val.json
# [--metric vqa|exact|anls|mc] (your held-out data scored with a question-answer metric) with the benchmarks.
# `python -m internvl_chat.eval tasks` lists them; a name upstream has but this project does not gets one line
# saying so.
# Flags go to the evaluator (--dynamic, --max-num N, --auto, --load-in-8bit, --batch-size, ...; see its --help).
# --auto spreads one process's model over the visible GPUs, so it runs a single process, as upstream.
# Launched through shell/launch.sh: torchrun on this node's GPUs, srun when PARTITION is set, one CPU process
# with GPUS=0 or no GPU, GPUS=N gloo processes on the CPU.
#   DATA_ROOT  upstream's data/ folder (default: data, relative to the current directory)
#   OUT_DIR    where the results, scores and summary go (default: results)
# plus the launcher's variables (GPUS, GPUS_PER_NODE, PARTITION, MASTER_PORT, ...; see shell/README.md).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../shell/launch.sh"

usage() {
    echo "usage: $0 <checkpoint> <task>[,<task>...] [flags...]   (python -m internvl_chat.eval tasks lists the tasks)" >&2
    exit 2
}

[[ $# -ge 2 ]] || usage
CHECKPOINT=$1
TASKS=$2
shift 2
CAPTIONS=()
BENCHMARKS=()
IFS=, read -r -a NAMES <<< "$TASKS"
for name in "${NAMES[@]}"; do
    case $name in
        caption) CAPTIONS+=(coco flickr30k nocaps) ;;
        caption-coco|caption-flickr30k|caption-nocaps|caption-custom) CAPTIONS+=("${name#caption-}") ;;
        '') ;;
        *) BENCHMARKS+=("$name") ;;
    esac
done
if [[ ${#BENCHMARKS[@]} -gt 0 ]]; then  # every name checked before anything runs: one line per problem
    BENCHMARK_LIST=$(IFS=,; echo "${BENCHMARKS[*]}")
    if ! PYTHONPATH="$_LAUNCH_REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" "${PYTHON:-python}" -m internvl_chat.eval tasks \
            "$BENCHMARK_LIST" > /dev/null; then
        exit 2  # the line above named the task and listed the implemented ones
    fi
fi
for arg in "$@"; do
    if [[ $arg == --auto ]]; then GPUS=1; export GPUS; fi
done
echo "CHECKPOINT: $CHECKPOINT"

if [[ ${#CAPTIONS[@]} -gt 0 ]]; then
    launch -m internvl_chat.evaluate_caption --checkpoint "$CHECKPOINT" --datasets "$(IFS=,; echo "${CAPTIONS[*]}")" \
        --data-root "${DATA_ROOT:-data}" --out-dir "${OUT_DIR:-results}" "$@"
fi
if [[ ${#BENCHMARKS[@]} -gt 0 ]]; then
    launch -m internvl_chat.eval run --checkpoint "$CHECKPOINT" --tasks "$BENCHMARK_LIST" \
        --data-root "${DATA_ROOT:-data}" --out-dir "${OUT_DIR:-results}" "$@"
fi
