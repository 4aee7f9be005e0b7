# shell/launch.sh: the one launcher library that every subproject's shell scripts source.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/../../shell/launch.sh"   # path relative to the script
#   launch classification/main.py --cfg configs/x.yaml              # or: launch -m internvl_g.train ...
#
# Three modes; one line on stderr says which was chosen and why:
#   srun      PARTITION is set: GPUS tasks on a SLURM cluster (python reads the SLURM_* variables)
#   torchrun  a CUDA GPU is visible: GPUS_PER_NODE processes on this node (of NNODES nodes)
#   cpus      no CUDA GPU visible and GPUS > 1: torchrun with GPUS CPU processes (gloo), to try distributed
#             code on a laptop
#   single    GPUS=0 or 1, or unset, with no CUDA GPU visible: one plain python process (GPUS=0 hides GPUs)
#
# Variables (all optional):
#   GPUS           total processes (default: 8 under srun, else visible GPUs x NNODES)
#   GPUS_PER_NODE  processes per node (default: min(GPUS, 8))
#   PARTITION      SLURM partition; selects srun mode
#   JOB_NAME       SLURM job name (default: internvl)
#   QUOTA_TYPE     SLURM --quotatype (e.g. reserved, spot); passed only when set
#   CPUS_PER_TASK  SLURM --cpus-per-task (default: 10)
#   SRUN_ARGS      extra srun arguments (word-split)
#   NNODES         torchrun node count (default: GPUS / GPUS_PER_NODE)
#   NODE_RANK      this node's torchrun rank (default: 0)
#   MASTER_ADDR    torchrun rendezvous host (default: 127.0.0.1; required when NNODES > 1)
#   MASTER_PORT    rendezvous port, torchrun and srun (default: 29500)
#   PYTHON         interpreter (default: python)
#   DRY_RUN=1      print the command instead of running it
#
# The repo root is put on PYTHONPATH, so `launch -m internvl...` works from any directory.
# launch returns the program's exit status; on its own errors it prints why and returns 2, and it
# never exits the sourcing shell. Safe under `set -euo pipefail`.

_LAUNCH_REPO_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)

_launch_error() {
    echo "launch: error: $*" >&2
    return 2
}

# Prints how many CUDA GPUs a process started from here would see: nvidia-smi's count, narrowed
# by CUDA_VISIBLE_DEVICES when that is set (an empty value hides them all).
_launch_visible_gpus() {
    local count ids
    count=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ') || count=0
    if [[ $count -gt 0 && -n ${CUDA_VISIBLE_DEVICES+set} ]]; then
        IFS=, read -r -a ids <<< "$CUDA_VISIBLE_DEVICES"
        count=${#ids[@]}
    fi
    echo "$count"
}

# _launch_check_int NAME VALUE MIN: VALUE is an integer >= MIN, or an error naming NAME.
_launch_check_int() {
    if [[ ! $2 =~ ^(0|[1-9][0-9]*)$ ]] || [[ $2 -lt $3 ]]; then
        _launch_error "$1=$2 must be an integer >= $3"
    fi
}

launch() {
    if [[ $# -eq 0 ]]; then
        _launch_error "usage: launch <script.py | -m module> [args...]" || return
    fi
    local py=${PYTHON:-python} port=${MASTER_PORT:-29500} gpus per_node nnodes visible mode
    local -a cmd extra
    _launch_check_int MASTER_PORT "$port" 1 || return
    if [[ -n ${PARTITION:-} ]]; then
        gpus=${GPUS:-8}
        _launch_check_int GPUS "$gpus" 1 || return
        per_node=${GPUS_PER_NODE:-$((gpus < 8 ? gpus : 8))}
        _launch_check_int GPUS_PER_NODE "$per_node" 1 || return
        _launch_check_int CPUS_PER_TASK "${CPUS_PER_TASK:-10}" 1 || return
        read -r -a extra <<< "${SRUN_ARGS:-}"
        cmd=(srun -p "$PARTITION" --job-name="${JOB_NAME:-internvl}" --gres="gpu:$per_node"
             --ntasks="$gpus" --ntasks-per-node="$per_node" --cpus-per-task="${CPUS_PER_TASK:-10}"
             --kill-on-bad-exit=1 ${QUOTA_TYPE:+--quotatype="$QUOTA_TYPE"} ${extra[@]+"${extra[@]}"}
             "$py" -u "$@")
        mode="srun: PARTITION=$PARTITION, $gpus tasks, $per_node per node"
    else
        visible=$(_launch_visible_gpus)
        _launch_check_int NNODES "${NNODES:-1}" 1 || return
        gpus=${GPUS:-$((visible * ${NNODES:-1}))}
        _launch_check_int GPUS "$gpus" 0 || return
        if [[ $gpus -eq 0 && -n ${GPUS:-} ]]; then
            cmd=(env CUDA_VISIBLE_DEVICES= "$py" -u "$@")
            mode="single CPU process: GPUS=0"
        elif [[ $visible -eq 0 && $gpus -le 1 ]]; then
            cmd=("$py" -u "$@")
            mode="single CPU process: no CUDA GPU visible (nvidia-smi -L, CUDA_VISIBLE_DEVICES)"
        elif [[ $visible -eq 0 ]]; then
            if [[ ${NNODES:-1} -gt 1 ]]; then
                _launch_error "NNODES=$NNODES: multi-node runs need GPUs (no CUDA GPU is visible here)" || return
            fi
            cmd=("$py" -m torch.distributed.run --nnodes=1 --nproc_per_node="$gpus"
                 --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="$port" "$@")
            mode="torchrun on the CPU: $gpus processes (gloo), no CUDA GPU visible"
        else
            per_node=${GPUS_PER_NODE:-$((gpus < 8 ? gpus : 8))}
            _launch_check_int GPUS_PER_NODE "$per_node" 1 || return
            nnodes=${NNODES:-$((gpus / per_node))}
            if [[ $((nnodes * per_node)) -ne $gpus ]]; then
                _launch_error "GPUS=$gpus is not NNODES=$nnodes x GPUS_PER_NODE=$per_node" || return
            fi
            if [[ $nnodes -gt 1 && -z ${MASTER_ADDR:-} ]]; then
                _launch_error "NNODES=$nnodes needs MASTER_ADDR (the host of node rank 0)" || return
            fi
            # torch.distributed.run is torchrun, run by $PYTHON so that the workers use the same interpreter.
            cmd=("$py" -m torch.distributed.run --nnodes="$nnodes" --node_rank="${NODE_RANK:-0}"
                 --nproc_per_node="$per_node" --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="$port" "$@")
            mode="torchrun: $visible GPU(s) visible, $per_node process(es) per node on $nnodes node(s)"
        fi
    fi
    echo "launch: $mode" >&2
    if [[ ${DRY_RUN:-0} == 1 ]]; then
        printf '%q' "${cmd[0]}"
        printf ' %q' "${cmd[@]:1}"
        echo
        return 0
    fi
    (
        export PYTHONPATH="$_LAUNCH_REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" MASTER_PORT="$port"
        "${cmd[@]}"
    )
}
