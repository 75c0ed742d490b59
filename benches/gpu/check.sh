#!/usr/bin/env bash
# GPU check for an NVIDIA machine with the CUDA driver, PyTorch (with torchvision) and no network or Rust toolchain,
# built for a short window: an overall deadline, the most informative steps first, rows written as they finish.
# Build the binary on a development machine and bring the .xz along (it and this folder stay well under 64 MiB):
#
#   launch/build-cuda.sh target/cuda/dist          # development machine: cuda-offline,nccl (no libmpi needed)
#   benches/gpu/check.sh target/cuda/dist/chexlab.xz [OUT_DIR]   # GPU machine; OUT_DIR default: $OUT or
#                                                                 # gpu-check-out
#
# Steps, in order of information per second (each under `timeout -k`, none past the deadline):
#  1. versions (driver, GPU, nvcc, NVRTC, NCCL, PyTorch) and library set-up: CUDA_PATH from nvcc when unset, the
#     toolkit's NVRTC preferred over PyTorch's wheel, the real folders of found libraries on LD_LIBRARY_PATH (NVRTC
#     finds libnvrtc-builtins through them), libnccl.so linked to the wheel's libnccl.so.2, `ldd` for missing ones;
#  2. probe: `chexlab gpu-probe --all-reduce` (driver, GPU, NCCL start-up, known-value all-reduces);
#  3. smoke: one tiny training step on the GPU. If it (or the probe's binary) fails, the other chexlab CUDA steps
#     are skipped, PyTorch's baseline still runs;
#  4. small DenseNet 64 px, first-step gradient on the GPU against the CPU's, tensor by tensor, against a noise
#     floor measured the same way (CPU 1 thread vs all threads; GPU run twice);
#  5. PyTorch DenseNet-121 224 px fp32; chexlab DenseNet-121 224 px fp32 (speed, and its first gradient against
#     the CPU's, from the same run); bf16 224 px (speed, and the loss must fall over the steps); 320 px fp32.
#
# Writes into OUT_DIR only raw.jsonl (one JSON row per step: step, status, rc, wall_s, result or error),
# table.md (rebuilt after every row, so a run cut short still leaves one) and logs.tar.gz; exits non-zero when no
# step measured anything.
#
# Knobs (environment): DEADLINE_S (480), STEPS (10), WARMUP (3), BATCH (16), PYTHON (python3), TORCH_STEP (the
# PyTorch peer script, default torch_step.py here), GRAD_TOL (1e-3: a tensor's relative L2 error may be at most
# max(GRAD_TOL, 10 x its noise floor)).
#
# Not covered: cubecl's compiled-kernel cache does not persist between processes in this build (its
# `persistence` feature is off), so every step compiles its kernels again; the binary is built without Burn's
# `autotune` and `fusion`, so convolutions use the direct kernel; PyTorch uses TF32 for fp32 convolutions by
# default. A speed ratio must be read with those in mind.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:?usage: check.sh PATH/TO/chexlab[.xz] [OUT_DIR]}
exec "${PYTHON:-python3}" "$here/check.py" "$bin" "${2:-${OUT:-gpu-check-out}}"
