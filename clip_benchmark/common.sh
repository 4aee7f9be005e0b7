# clip_benchmark/common.sh: what the test_internvl_*.sh scripts share (sourced by them, not run).
#
# Each script runs the evaluations of one of upstream's batch scripts through shell/launch.sh: one GPU per
# command by default (GPUS=1), srun when PARTITION is set, the CPU with GPUS=0. With GPUS>1 the
# (model, dataset, language) runs of a command are spread over the processes (clip_benchmark eval
# --distributed, which also shuffles their order). Commands that upstream ran one per dataset or language are merged where they share a
# dataset root, so the model loads once and the images of a dataset are encoded once for all languages.
# A failing command does not stop the others; the script exits 1 if any failed. Extra flags given to a
# script go to every command (e.g. --batch_size 32 --feature_cache_dir features_cache).
#
#   DATA     the datasets root (default: the repository's data/; layouts in data/README.md)
#   MODEL    the checkpoint (default: each script's, in the repository's pretrained/)
#   OUTPUT   the JSON-lines file every result is appended to (default: result.json / result_g.json, in the
#            current directory)
# plus the launcher's variables (GPUS, PARTITION, QUOTA_TYPE, MASTER_PORT, ...; shell/README.md).

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
source "$REPO/shell/launch.sh"
set -uo pipefail
export GPUS=${GPUS:-1}
DATA=${DATA:-$REPO/data}
PRETRAINED=$REPO/pretrained
EXTRA_ARGS=("$@")
DISTRIBUTED=()
if [[ $GPUS -gt 1 ]]; then DISTRIBUTED=(--distributed); fi
FAILED=()

# clip_eval MODEL_NAME ARGS...: one clip_benchmark command on $MODEL; a failure is remembered, not fatal.
clip_eval() {
    local name=$1
    shift
    launch "$HERE/clip_benchmark/cli.py" eval ${DISTRIBUTED[@]+"${DISTRIBUTED[@]}"} --model_type internvl --model "$name" \
        --pretrained "$MODEL" --output "$OUTPUT" "$@" ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"} || FAILED+=("$name $*")
}

# The evaluations of upstream's batch scripts, for the model name $1.
classification_set() {
    clip_eval "$1" --task zeroshot_classification --language en --dataset birdsnap --dataset_root "$DATA/birdsnap/"
    clip_eval "$1" --task zeroshot_classification --language en --dataset_root "$DATA/" --dataset cifar10 cifar100 \
        food101 sun397 cars fgvc_aircraft dtd pets caltech101 mnist stl10 eurosat gtsrb country211 pcam renderedsst2 \
        voc2007 vtab/flowers vtab/resisc45
    clip_eval "$1" --task zeroshot_classification --language en --dataset fer2013 --dataset_root "$DATA/fer2013"
}

imagenet_set() {
    clip_eval "$1" --task zeroshot_classification --language en cn it jp ar --dataset imagenet1k \
        --dataset_root "$DATA/imagenet-1k/"
    local dataset root
    for dataset in imagenetv2:imagenetv2 imagenet_sketch:imagenet-sketch imagenet-a:imagenet-a imagenet-r:imagenet-r \
            objectnet:objectnet-1.0; do
        root=${dataset#*:}
        clip_eval "$1" --task zeroshot_classification --language en --dataset "${dataset%%:*}" --dataset_root "$DATA/$root/"
    done
}

retrieval_set() {
    clip_eval "$1" --task zeroshot_retrieval --language en cn --dataset flickr30k --dataset_root "$DATA/flickr30k"
    clip_eval "$1" --task zeroshot_retrieval --language en cn --dataset mscoco_captions --dataset_root "$DATA/mscoco_captions"
}

xtd_set() {
    clip_eval "$1" --task zeroshot_retrieval --dataset multilingual_mscoco_captions --dataset_root "$DATA/mscoco_captions" \
        --language en es fr zh it ko ru jp
}

# finish: name the failed commands and exit 1 if there were any.
finish() {
    if [[ ${#FAILED[@]} -gt 0 ]]; then
        printf 'failed: %s\n' "${FAILED[@]}" >&2
        exit 1
    fi
    echo "results appended to $OUTPUT"
}
