# shellcheck shell=bash
# Shared by the sbatch scripts: sourced, not run. sbatch runs a copy of the script from its spool directory, so
# the scripts find this file through CHEXLAB_LAUNCH (default: launch/slurm under the directory sbatch was run
# from, i.e. submit from the chexlab checkout or pass --export=ALL,CHEXLAB_LAUNCH=/path/to/launch/slurm).
#
# Knobs (environment, pass with --export):
#   MPI_TYPE       srun's --mpi plugin for the ranks (default pmix; `none` leaves it to the site's MpiDefault)
#   MAX_RESTARTS   requeues after preemption before the job gives up and asks to be resubmitted (default 10)
#   CHEXLAB_REQUEUE_MARKER  the file rank 0 writes when it stops for preemption (default: in the job's working
#                  directory, .chexlab-requeue.<job id>; it must be a path the batch shell's node sees)

MPI_TYPE=${MPI_TYPE:-pmix}
MAX_RESTARTS=${MAX_RESTARTS:-10}
CHEXLAB_REQUEUE_MARKER=${CHEXLAB_REQUEUE_MARKER:-$PWD/.chexlab-requeue.${SLURM_JOB_ID:-none}}
export CHEXLAB_REQUEUE_MARKER

# srun for the job's ranks. Slurm 22.05-23.02's srun does not inherit the job's --cpus-per-task, so it is given
# again: each rank's thread pools follow SLURM_CPUS_PER_TASK instead of spreading over the node. One rank's
# failure ends the step (--kill-on-bad-exit) instead of leaving the others waiting in a collective.
# (Arrays, not functions: chexlab_stage must start srun itself, not a shell around it, to pass signals on.)
# shellcheck disable=SC2034
SRUN_RANKS=(srun --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" --kill-on-bad-exit=1)
[[ $MPI_TYPE == none ]] || SRUN_RANKS+=("--mpi=$MPI_TYPE")
# srun for a one-process stage (shard, report) with every CPU of the first node.
# shellcheck disable=SC2034
SRUN_ONE=(srun --nodes=1 --ntasks=1 --cpus-per-task="${SLURM_CPUS_ON_NODE:-1}")

# Runs one stage (the command after it) so that a preemption ends in a requeue, and returns its exit code
# otherwise. A SIGUSR2 or SIGTERM that reaches this batch shell (`scancel --full --signal=USR2`,
# `--signal=B:USR2`, some preemption setups) is passed on to the stage instead of ending the script, which then
# waits for the stage to checkpoint. The stage stopped for preemption when rank 0 left the marker or it exited
# with 75; srun may report another code (a rank it killed under --kill-on-bad-exit), so the marker decides.
chexlab_stage() {
    rm -f "$CHEXLAB_REQUEUE_MARKER"
    # A simple command in the background: $! is srun itself.
    "$@" &
    local pid=$! code
    # shellcheck disable=SC2064  # the stage's pid is fixed now
    trap "echo 'stop signal: passing it to the stage and waiting for its checkpoint'; kill -USR2 $pid 2>/dev/null" USR2 TERM
    while :; do
        wait "$pid" && code=0 || code=$?
        # A trapped signal interrupts wait with 128 + its number while the stage still runs.
        if ((code > 128)) && kill -0 "$pid" 2>/dev/null; then continue; fi
        break
    done
    trap - USR2 TERM
    if [[ -e $CHEXLAB_REQUEUE_MARKER || $code -eq 75 ]]; then
        chexlab_requeue "$code"
    fi
    return "$code"
}

# Requeues the job after a preemption stop and ends the script, or, past MAX_RESTARTS, fails it with 75.
chexlab_requeue() {
    local restarts=${SLURM_RESTART_COUNT:-0}
    if [[ -e $CHEXLAB_REQUEUE_MARKER ]]; then
        echo "requeue marker: $(cat "$CHEXLAB_REQUEUE_MARKER")"
        rm -f "$CHEXLAB_REQUEUE_MARKER"
    fi
    if ((restarts >= MAX_RESTARTS)); then
        echo "stopped for preemption (step exit $1) after $restarts restart(s): the restart cap MAX_RESTARTS=$MAX_RESTARTS is reached and the job is not requeued; resubmit the job to continue from its checkpoint" >&2
        exit 75
    fi
    echo "stopped for preemption (step exit $1); requeueing job $SLURM_JOB_ID (restart $((restarts + 1)) of at most $MAX_RESTARTS)"
    if ! scontrol requeue "$SLURM_JOB_ID"; then
        echo "scontrol requeue $SLURM_JOB_ID failed (was the job submitted with --requeue?): resubmit it to continue" >&2
        exit 75
    fi
    exit 0
}
