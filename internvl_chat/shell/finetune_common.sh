# Sourced by the fine-tuning scripts beside it: the launcher, upstream's batch arithmetic with its checks, and
# the output directory. Each script sets its defaults (GPUS, BATCH_SIZE, PER_DEVICE_BATCH_SIZE, OUTPUT_DIR,
# MODEL_PATH, META_PATH) and then calls `finetune_setup`, which defines
#   GRADIENT_ACC  = BATCH_SIZE / PER_DEVICE_BATCH_SIZE / GPUS (an error when it does not divide exactly)
#   DEEPSPEED     the DeepSpeed config to pass (default zero_stage1_config.json; empty with GPUS=0, where a
#                 single CPU process runs without DeepSpeed; DEEPSPEED= turns it off on GPUs too)
#   CPU_FLAGS     with GPUS=0: --use_cpu True --bf16 False (float32 on the CPU), appended after the script's flags
# and creates OUTPUT_DIR. The log goes to the console and OUTPUT_DIR/training_log.txt.
source "$(dirname "${BASH_SOURCE[0]}")/../../shell/launch.sh"

finetune_setup() {
    local procs
    for var in GPUS BATCH_SIZE PER_DEVICE_BATCH_SIZE; do
        if [[ ! ${!var} =~ ^(0|[1-9][0-9]*)$ ]]; then
            echo "error: $var=${!var} must be a whole number" >&2
            return 2
        fi
    done
    procs=$(( GPUS > 0 ? GPUS : 1 ))  # GPUS=0: one CPU process
    if [[ $PER_DEVICE_BATCH_SIZE -lt 1 || $BATCH_SIZE -lt 1 ]] \
        || (( BATCH_SIZE % (PER_DEVICE_BATCH_SIZE * procs) != 0 )); then
        echo "error: BATCH_SIZE=$BATCH_SIZE is not a multiple of PER_DEVICE_BATCH_SIZE=$PER_DEVICE_BATCH_SIZE x" \
             "GPUS=$GPUS (= $((PER_DEVICE_BATCH_SIZE * procs))), so GRADIENT_ACC = BATCH_SIZE / PER_DEVICE_BATCH_SIZE" \
             "/ GPUS is not a whole number; choose values that divide" >&2
        return 2
    fi
    GRADIENT_ACC=$(( BATCH_SIZE / PER_DEVICE_BATCH_SIZE / procs ))
    if [[ $GPUS -eq 0 ]]; then
        DEEPSPEED=${DEEPSPEED-}
        CPU_FLAGS=(--use_cpu True --bf16 False)
    else
        DEEPSPEED=${DEEPSPEED-zero_stage1_config.json}
        CPU_FLAGS=()
    fi
    export MASTER_PORT=${MASTER_PORT:-34229} TF_CPP_MIN_LOG_LEVEL=3
    mkdir -p "$OUTPUT_DIR"
    echo "GPUS=$GPUS, batch size per device $PER_DEVICE_BATCH_SIZE, gradient accumulation $GRADIENT_ACC," \
         "total batch size $BATCH_SIZE; output in $OUTPUT_DIR" >&2
}
