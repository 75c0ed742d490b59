#!/usr/bin/env bash
# GPU check for an NVIDIA machine with the CUDA driver, PyTorch (with torchvision) and no network or Rust toolchain.
# Build the binary on a development machine and bring it along (it and this folder stay well under 64 MiB):
#
#   FEATURES=cuda-offline,nccl launch/build-cuda.sh target/cuda/dist     # on the development machine
#   benches/gpu/check.sh target/cuda/dist/chexlab.xz [OUT_DIR]           # on the GPU machine, < 5 minutes
#
# (chexlab.xz is ~14 MB; the stripped binary itself ~80 MB.)
#
# (FEATURES without mpi: the GPU machine need not have Open MPI; the check runs one rank.)
#
# What it does, writing OUT_DIR/table.md (default: gpu-check-out) and every raw JSON line next to it:
#  1. finds libnccl.so.2 and NVRTC inside PyTorch's environment, makes the libnccl.so symlink cudarc looks for;
#  2. chexlab gpu-probe --all-reduce: the driver, the GPU, libnccl, and NCCL all-reduces of 7 M values, from host
#     memory and in place on a Burn CUDA tensor (training's path), both checked against the known sums;
#  3. correctness: the first training step of the same seeded weights and batch on the CPU and on the GPU
#     (small DenseNet at 64 px, DenseNet-121 at 224 px): loss and gradient compared (relative error);
#  4. speed: DenseNet-121 training steps at 224 and 320 px, fp32 and bf16, chexlab vs PyTorch on the same GPU.
#
# Knobs (environment): STEPS (timed steps, default 10), WARMUP (default 3), BATCH (default 16), PYTHON.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:?usage: check.sh PATH/TO/chexlab[.xz] [OUT_DIR]}
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
out=${2:-gpu-check-out}
mkdir -p "$out" && out=$(cd "$out" && pwd)
if [[ "$bin" == *.xz ]]; then
    xz -dc "$bin" >"$out/chexlab" && chmod +x "$out/chexlab"
    bin="$out/chexlab"
fi
py=${PYTHON:-python3}
steps=${STEPS:-10}
warmup=${WARMUP:-3}
batch=${BATCH:-16}
log="$out/raw.jsonl"
: >"$log"

# 1. Libraries from PyTorch's environment.
libs="$out/lib"
mkdir -p "$libs"
"$py" - "$libs" <<'EOF'
import glob, os, sys
dst = sys.argv[1]
import torch  # noqa: F401  (its nvidia/* packages sit next to it)
roots = [os.path.dirname(os.path.dirname(torch.__file__))]
found = {}
for pat, link in (("nvidia/nccl/lib/libnccl.so.*", "libnccl.so"),
                  ("nvidia/cuda_nvrtc/lib/libnvrtc.so.*", "libnvrtc.so"),
                  ("nvidia/cu*/lib/libnvrtc.so.*", "libnvrtc.so")):
    for r in roots:
        for f in sorted(glob.glob(os.path.join(r, pat))):
            if link not in found and "builtins" not in f and "alt" not in f:
                found[link] = f
for link, f in found.items():
    p = os.path.join(dst, link)
    if os.path.lexists(p):
        os.remove(p)
    os.symlink(f, p)
    print(f"check: {link} -> {f}")
EOF
export LD_LIBRARY_PATH="$libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/check: GPU /'

run() { # run NAME TIMEOUT_S COMMAND...: one JSON line into the log (or an error line)
    local name=$1 limit=$2
    shift 2
    local res
    if res=$(timeout "$limit" "$@" 2>"$out/$name.err" | grep '^{' | tail -1) && [[ -n "$res" ]]; then
        echo "$res" | tee -a "$log"
    else
        echo "{\"check\": \"$name\", \"error\": \"$(tail -3 "$out/$name.err" | tr '"\n' "' ")\"}" | tee -a "$log"
    fi
}

# 2. Probe and one NCCL all-reduce.
timeout 120 "$bin" --quiet gpu-probe --all-reduce >"$out/probe.jsonl" 2>"$out/probe.err"
cat "$out/probe.jsonl" | tee -a "$log"
if [[ -s "$out/probe.err" ]]; then
    echo "{\"check\": \"nccl\", \"error\": \"$(tail -3 "$out/probe.err" | tr '"\n' "' ")\"}" | tee -a "$log"
fi

# 3. CPU vs GPU on the same inputs.
compare() { # compare NAME ARGS...
    local name=$1
    shift
    run "$name-cpu" 240 "$bin" --quiet bench-step "$@" --steps 0 --warmup 0 --device cpu --grads-out "$out/$name-cpu.bin"
    run "$name-cuda" 240 "$bin" --quiet bench-step "$@" --steps 0 --warmup 0 --device cuda --grads-out "$out/$name-cuda.bin"
    "$py" - "$out/$name-cpu.bin" "$out/$name-cuda.bin" "$name" <<'EOF' | tee -a "$log"
import json, os, sys
import numpy as np
a, b, name = sys.argv[1:]
if not (os.path.exists(a) and os.path.exists(b)):
    print(json.dumps({"check": name, "error": "a gradient file is missing"})); sys.exit()
a, b = np.fromfile(a, dtype="<f4").astype(np.float64), np.fromfile(b, dtype="<f4").astype(np.float64)
rel = float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))
l2 = float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30))
print(json.dumps({"check": name, "values": int(a.size), "grad_max_rel_err": rel, "grad_l2_rel_err": l2}))
EOF
}
compare small64 --arch small --size 64 --batch 8
compare dn121_224 --arch densenet121 --size 224 --batch 4

# 4. Speed next to PyTorch.
for size in 224 320; do
    for prec in f32 bf16; do
        run "chexlab-$size-$prec" 240 "$bin" --quiet bench-step --arch densenet121 --size "$size" --batch "$batch" \
            --steps "$steps" --warmup "$warmup" --device cuda --precision "$prec"
        run "torch-$size-$prec" 240 "$py" "$here/torch_step.py" --size "$size" --batch "$batch" --steps "$steps" \
            --warmup "$warmup" --precision "$prec"
    done
done

"$py" - "$log" <<'EOF' | tee "$out/table.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
print("## Correctness: first step, same weights and batch, CPU vs GPU\n")
print("| case | gradient values | max rel. error | L2 rel. error | loss CPU | loss GPU |")
print("|---|---|---|---|---|---|")
loss = {}
for r in rows:
    if "spec" in r and r["spec"]["steps"] == 0:
        loss[(r["spec"]["arch"], r["spec"]["size"], r["spec"]["device"])] = r["first_loss"]
for r in rows:
    if r.get("check") in ("small64", "dn121_224"):
        arch, size = ("small", 64) if r["check"] == "small64" else ("densenet121", 224)
        if "error" in r:
            print(f"| {r['check']} | error: {r['error']} | | | | |"); continue
        print(f"| {arch} {size} px | {r['values']:,} | {r['grad_max_rel_err']:.2e} | {r['grad_l2_rel_err']:.2e} | "
              f"{loss.get((arch, size, 'cpu'), float('nan')):.6f} | {loss.get((arch, size, 'cuda'), float('nan')):.6f} |")
print("\n## DenseNet-121 training step, images/s on the GPU\n")
print("| size | precision | chexlab | PyTorch | chexlab / PyTorch |")
print("|---|---|---|---|---|")
ours, peer = {}, {}
for r in rows:
    if "spec" in r and r["spec"]["steps"] > 0:
        ours[(r["spec"]["size"], r["spec"]["precision"])] = r["images_per_s"]
    if "peer" in r:
        peer[(r["size"], r["precision"].split("-")[0])] = r["images_per_s"]
for size in (224, 320):
    for prec in ("f32", "bf16"):
        a, b = ours.get((size, prec)), peer.get((size, prec))
        ratio = f"{a / b:.2f}" if a and b else "n/a"
        print(f"| {size} | {prec} | {a and f'{a:.1f}' or 'failed'} | {b and f'{b:.1f}' or 'failed'} | {ratio} |")
errs = [r for r in rows if "error" in r]
if errs:
    print("\nErrors:")
    for r in errs:
        print(f"- {r['check']}: {r['error']}")
for r in rows:
    if r.get("ok"):
        print(f"\nNCCL: all-reduce of {r['all_reduce_values']:,} values on {r['size']} rank(s) in "
              f"{r['all_reduce_seconds'] * 1e3:.1f} ms through host memory, correct.")
        d = r.get("device_buffer_all_reduce_seconds")
        print(f"In place on a Burn CUDA buffer (training's path): {d * 1e3:.1f} ms, correct." if d is not None
              else "In place on a Burn CUDA buffer: not available (training reduces through host memory).")
EOF
echo "check: table in $out/table.md"
