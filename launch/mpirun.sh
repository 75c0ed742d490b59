#!/usr/bin/env bash
# Runs a chexlab command on several MPI ranks with Open MPI's mpirun, for machines without Slurm.
#
#   launch/mpirun.sh -n 4 train --config study.toml --resume auto
#   HOSTS=node1:8,node2:8 launch/mpirun.sh -n 16 train --config study.toml
#
# Knobs (environment):
#   CHEXLAB   the binary (default: target/release/chexlab next to this script; build it with --features mpi)
#   HOSTS     mpirun --host list, e.g. node1:8,node2:8 (default: this machine)
#   MPI_ARGS  extra mpirun arguments (e.g. "--bind-to core --map-by core")
# More ranks than cores are allowed (--oversubscribe). One rank per core is the efficient layout on CPUs: each
# rank computes with distributed.compute_threads threads (default 1). As root, Open MPI needs the two
# OMPI_ALLOW_RUN_AS_ROOT variables, which this script sets.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
CHEXLAB=${CHEXLAB:-$here/target/release/chexlab}
[[ ${1:-} == -n ]] || { echo "usage: $0 -n RANKS <chexlab arguments...>" >&2; exit 2; }
ranks=$2
shift 2
[[ -x $CHEXLAB ]] || { echo "no chexlab binary at $CHEXLAB (cargo build --release --features mpi)" >&2; exit 2; }
hosts=()
[[ -n ${HOSTS:-} ]] && hosts=(--host "$HOSTS")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# shellcheck disable=SC2086
exec mpirun -np "$ranks" --oversubscribe "${hosts[@]}" ${MPI_ARGS:-} "$CHEXLAB" "$@"
