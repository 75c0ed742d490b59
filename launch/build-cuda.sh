#!/usr/bin/env bash
# Builds chexlab with Burn's CUDA backend and NCCL (and MPI when asked) without network access at build time, and
# writes a stripped copy of the binary for GPU machines that have no Rust toolchain.
#
#   launch/build-cuda.sh [OUT_DIR]        (default OUT_DIR: target/cuda/dist; writes chexlab and chexlab.xz)
#
# How: burn-cuda's kernel compiler links cubecl-llvm, whose build script downloads an LLVM bundle. With DOCS_RS=1
# that build script (and tracel-llvm-bundler's) skip the download; chexlab turns on cubecl-cuda's `cpp` path, so
# kernels are compiled at run time by NVRTC and LLVM is never called; the `cuda-offline` feature's build.rs links
# stand-ins for the LLVM symbols (launch/cuda-offline/llvm-symbols.txt) that abort if ever called. When a cubecl
# update references symbols missing from that list, the first link fails, this script adds what the linker named
# and builds again. DOCS_RS is set for this command only and the build goes to its own target directory
# (target/cuda), so the ordinary and MPI builds are untouched.
#
# Knobs (environment):
#   FEATURES          cargo features (default: cuda-offline,nccl: one rank, no Open MPI needed where it runs, as
#                     for a carried binary; add mpi for a cluster build: the binary then needs libmpi.so.40)
#   PROFILE           cargo profile (default: release; CI uses cuda-ci, unoptimised, to check that it links)
#   XZ                1 (default) also writes chexlab.xz
#   CARGO_TARGET_DIR  build directory (default: target/cuda)
#
# With network at build time, no script is needed: `cargo build --release --features cuda,nccl,mpi` (cubecl then
# downloads and links its LLVM bundle; chexlab still compiles kernels with NVRTC).
#
# At run time the binary needs the NVIDIA driver (libcuda.so), NVRTC (libnvrtc.so, from the CUDA toolkit or the
# nvidia-cuda-nvrtc wheel) and, for multi-GPU runs, libnccl.so (a symlink to libnccl.so.2 where only the soname
# exists) on LD_LIBRARY_PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-target/cuda/dist}
features=${FEATURES:-cuda-offline,nccl}
profile=${PROFILE:-release}
export DOCS_RS=1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
symbols=launch/cuda-offline/llvm-symbols.txt
log=$(mktemp)
trap 'rm -f "$log"' EXIT

build() { # (called only where a failure does not end the script)
    echo "build-cuda: cargo build --profile $profile --features $features (DOCS_RS=1, $CARGO_TARGET_DIR)"
    cargo build --profile "$profile" --locked --features "$features" --bin chexlab >"$log" 2>&1
    local rc=$?
    grep -E '^(error|warning)' "$log" | head -20
    return $rc
}

if ! build; then
    # The LLVM / cubecl-shim symbols the dependencies reference (nm over their rlibs: the linker stops listing
    # after 20), plus any the linker named.
    missing=$( {
        for f in "$CARGO_TARGET_DIR/$profile"/deps/*.rlib; do nm -u "$f" 2>/dev/null | awk '{print $2}'; done
        grep -oE "(undefined symbol: |undefined reference to \`)[A-Za-z0-9_]+" "$log" | grep -oE "[A-Za-z0-9_]+$"
    } | grep -E '^(LLVM|cubecl_)' | sort -u || true)
    known=$(grep -v '^#' "$symbols" | sed '/^$/d' | sort -u || true)
    if [[ -z "$(comm -23 <(echo "$missing") <(echo "$known"))" ]]; then
        tail -40 "$log" >&2
        echo "build-cuda: the build failed for another reason (above)" >&2
        exit 1
    fi
    echo "build-cuda: $(comm -23 <(echo "$missing") <(echo "$known") | wc -l) LLVM stand-ins added to $symbols; building again"
    { grep '^#' "$symbols"; sort -u <(echo "$known") <(echo "$missing") | sed '/^$/d'; } >"$symbols.new"
    mv "$symbols.new" "$symbols"
    build || { tail -40 "$log" >&2; exit 1; }
fi

mkdir -p "$out"
strip -o "$out/chexlab" "$CARGO_TARGET_DIR/$profile/chexlab"
if [[ "${XZ:-1}" == 1 ]]; then
    # The stripped release binary is ~80 MB; xz brings it to ~14 MB for machines that take a size-limited
    # bundle (benches/gpu/check.sh accepts either).
    xz -T0 -6 -c "$out/chexlab" >"$out/chexlab.xz.tmp" && mv "$out/chexlab.xz.tmp" "$out/chexlab.xz"
fi
ls -l "$out"/chexlab*
echo "build-cuda: $out/chexlab (profile $profile, features $features)"
