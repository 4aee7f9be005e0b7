# Sourced by the fine-tuning scripts beside it: the launcher, upstream's batch arithmetic with its checks, the
# choice of GPU or CPU settings, and the output directory. Each script sets its defaults (GPUS, BATCH_SIZE,
# PER_DEVICE_BATCH_SIZE, OUTPUT_DIR, MODEL_PATH, META_PATH) and then calls `finetune_setup`, which defines
#   GRADIENT_ACC  upstream's BATCH_SIZE / PER_DEVICE_BATCH_SIZE / GPUS (an error when it does not divide exactly);
#                 a GRADIENT_ACC given by the user is kept and BATCH_SIZE derived from it (both given: they must
#                 agree, per device x processes x accumulation = total)
#   DEEPSPEED     the DeepSpeed config to pass (default zero_stage1_config.json on GPUs; empty on the CPU, where the
#                 run goes without DeepSpeed; DEEPSPEED= turns it off on GPUs too)
#   CPU_FLAGS     on the CPU: --use_cpu True --bf16 False (float32), appended after the script's flags
# and creates OUTPUT_DIR. The run goes to the CPU with GPUS=0, or when no CUDA GPU is visible and no PARTITION is
# set (shell/launch.sh's rule): then one process unless GPUS is given (GPUS=N: N processes over gloo), and one line
# says so. The effective batch is printed as `per device x processes x accumulation = total`. The log goes to the
# console and OUTPUT_DIR/training_log.txt.
source "$(dirname "${BASH_SOURCE[0]}")/../../shell/launch.sh"

# What the user set, before the script puts its defaults in.
_FINETUNE_USER_GPUS=${GPUS-}
_FINETUNE_USER_BATCH_SIZE=${BATCH_SIZE-}
_FINETUNE_USER_GRADIENT_ACC=${GRADIENT_ACC-}

# finetune_on_gpus: true when the run goes to GPUs (srun, or a CUDA GPU visible here) and GPUS=0 was not given.
finetune_on_gpus() {
    [[ ${GPUS:-} != 0 ]] && { [[ -n ${PARTITION:-} ]] || [[ $(_launch_visible_gpus) -gt 0 ]]; }
}

finetune_setup() {
    local procs var
    if [[ -n $_FINETUNE_USER_GRADIENT_ACC ]]; then
        GRADIENT_ACC=$_FINETUNE_USER_GRADIENT_ACC
    fi
    for var in GPUS BATCH_SIZE PER_DEVICE_BATCH_SIZE ${_FINETUNE_USER_GRADIENT_ACC:+GRADIENT_ACC}; do
        if [[ ! ${!var} =~ ^(0|[1-9][0-9]*)$ ]]; then
            echo "error: $var=${!var} must be a whole number" >&2
            return 2
        fi
    done
    if finetune_on_gpus; then
        DEEPSPEED=${DEEPSPEED-zero_stage1_config.json}
        CPU_FLAGS=()
    else
        if [[ $GPUS != 0 && -z $_FINETUNE_USER_GPUS ]]; then
            GPUS=1  # the script's count is meant for GPUs
        fi
        DEEPSPEED=  # DeepSpeed's ZeRO needs CUDA
        CPU_FLAGS=(--use_cpu True --bf16 False)
    fi
    procs=$(( GPUS > 0 ? GPUS : 1 ))  # GPUS=0: one CPU process
    if [[ $PER_DEVICE_BATCH_SIZE -lt 1 ]]; then
        echo "error: PER_DEVICE_BATCH_SIZE=$PER_DEVICE_BATCH_SIZE must be at least 1" >&2
        return 2
    fi
    if [[ -n $_FINETUNE_USER_GRADIENT_ACC ]]; then
        if [[ $GRADIENT_ACC -lt 1 ]]; then
            echo "error: GRADIENT_ACC=$GRADIENT_ACC must be at least 1" >&2
            return 2
        fi
        if [[ -n $_FINETUNE_USER_BATCH_SIZE ]] \
            && (( BATCH_SIZE != PER_DEVICE_BATCH_SIZE * procs * GRADIENT_ACC )); then
            echo "error: BATCH_SIZE=$BATCH_SIZE contradicts PER_DEVICE_BATCH_SIZE=$PER_DEVICE_BATCH_SIZE x" \
                 "$procs process(es) x GRADIENT_ACC=$GRADIENT_ACC = $((PER_DEVICE_BATCH_SIZE * procs * GRADIENT_ACC));" \
                 "set one of BATCH_SIZE and GRADIENT_ACC" >&2
            return 2
        fi
        BATCH_SIZE=$(( PER_DEVICE_BATCH_SIZE * procs * GRADIENT_ACC ))
    else
        if [[ $BATCH_SIZE -lt 1 ]] || (( BATCH_SIZE % (PER_DEVICE_BATCH_SIZE * procs) != 0 )); then
            echo "error: BATCH_SIZE=$BATCH_SIZE is not a multiple of PER_DEVICE_BATCH_SIZE=$PER_DEVICE_BATCH_SIZE x" \
                 "GPUS=$GPUS (= $((PER_DEVICE_BATCH_SIZE * procs))), so GRADIENT_ACC = BATCH_SIZE / PER_DEVICE_BATCH_SIZE" \
                 "/ GPUS is not a whole number; choose values that divide, or set GRADIENT_ACC" >&2
            return 2
        fi
        GRADIENT_ACC=$(( BATCH_SIZE / PER_DEVICE_BATCH_SIZE / procs ))
    fi
    export MASTER_PORT=${MASTER_PORT:-34229} TF_CPP_MIN_LOG_LEVEL=3
    mkdir -p "$OUTPUT_DIR"
    if [[ ${#CPU_FLAGS[@]} -gt 0 ]]; then
        echo "$( [[ $GPUS == 0 ]] && echo "GPUS=0" || echo "no CUDA GPU visible"): running on the CPU (float32," \
             "no DeepSpeed, $procs process(es))" >&2
    fi
    echo "batch: $PER_DEVICE_BATCH_SIZE per device x $procs process(es) x $GRADIENT_ACC accumulation =" \
         "$BATCH_SIZE total; output in $OUTPUT_DIR" >&2
}
