#!/usr/bin/env bash
# Weak scaling of data-parallel training on this machine: images/s of `chexlab train` with 1 rank × 1 thread and
# with 2 ranks × 1 thread (same per-rank batch), and the gradient all-reduce's share of step time, on the demo's
# small DenseNet (64 px, batch 16 per rank) over a synthetic world. Prints the speed-up and the efficiency.
#
#   cargo build --release --features mpi && benches/scaling.sh [STEPS]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$here/target/release/chexlab
steps=${1:-120}
work=$here/target/bench-scaling
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$work"
[[ -f $work/world/synth.json ]] || "$bin" --quiet synth --out "$work/world" --studies 3000 --image-size 64 --seed 7
cat > "$work/study.toml" <<CONF
seed = 7
run_dir = "$work/run"
[dataset]
kind = "synthetic"
root = "$work/world"
image_size = 64
[[sources]]
name = "truth"
kind = "truth"
[model]
arch = "small"
growth_rate = 12
block_config = [2, 2, 2]
init_features = 16
image_size = 64
[schedule]
batch_size = 16
max_steps = $steps
valid_every = 100000
log_every = 20
CONF
"$bin" --quiet shard --config "$work/study.toml" > /dev/null
run() {
    rm -rf "$work/run/train"
    mpirun -np "$1" --oversubscribe --bind-to core "$bin" --quiet train --config "$work/study.toml" > /dev/null
    python3 - "$work/run/train/truth/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"{s['step_images_per_s']:.1f} {s['allreduce_share']:.4f} {s['images_per_s']:.1f}")
PY
}
read -r ips1 share1 wall1 < <(run 1)
read -r ips2 share2 wall2 < <(run 2)
python3 - "$ips1" "$ips2" "$share1" "$share2" "$wall1" "$wall2" "$steps" <<'PY'
import sys
ips1, ips2, share1, share2, wall1, wall2 = map(float, sys.argv[1:7])
print(f"{sys.argv[7]} steps per run, per-rank batch 16, small DenseNet 64 px; img/s in training steps (whole run)")
print(f"1 rank x 1 thread : {ips1:7.1f} img/s ({wall1:6.1f})   all-reduce {share1 * 100:5.2f}% of step time")
print(f"2 ranks x 1 thread: {ips2:7.1f} img/s ({wall2:6.1f})   all-reduce {share2 * 100:5.2f}% of step time")
print(f"speed-up {ips2 / ips1:.2f}x (whole run {wall2 / wall1:.2f}x), efficiency {ips2 / ips1 / 2 * 100:.0f}%")
PY
