#!/usr/bin/env python3
"""Loader throughput against its peers, measured in one run:

1. `cargo bench --bench loader` (chexlab's reader and training loader; writes the shards once),
2. `cargo bench --bench train_step` (what one training rank consumes: the small DenseNet at 64 px, batch 16, and
   DenseNet-121 at 224 px, batch 8),
3. pyarrow's raw read of the same shards (image + one source's label columns),

then prints images/s and the ratios: reader vs pyarrow, and loader vs one training rank on the same threads
(the target is >= 3x, so that data loading never starves training).

    python3 benches/loader_peer.py [--repeat 5] [--skip-cargo]

Threads: the benches use every core unless RAYON_NUM_THREADS says otherwise; run the whole script under the same
setting for a like-for-like ratio."""
import json, os, subprocess, sys, time

import pyarrow.parquet as pq

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
base = os.path.join(root, "target", "bench-shards")
repeat = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 5

if "--skip-cargo" not in sys.argv:
    for bench in ("loader", "train_step"):
        subprocess.run(["cargo", "bench", "--bench", bench], cwd=root, check=True)


def criterion(group, name, images_per_iter):
    """images/s of a criterion bench from its saved estimate (mean time per iteration)."""
    path = os.path.join(root, "target", "criterion", group, name, "new", "estimates.json")
    ns = json.load(open(path))["mean"]["point_estimate"]
    return images_per_iter / (ns * 1e-9)


for size in (64, 224):
    d = os.path.join(base, f"s{size}")
    idx = json.load(open(os.path.join(d, "index.json")))
    files = [os.path.join(d, s["file"]) for s in idx["shards"] if s["split"] == "train"]
    cols = ["image_id", "image", "width", "height"] + [
        c for c in pq.read_schema(files[0]).names if c.startswith("lbl_truth_")
    ]
    best = None
    for _ in range(repeat):
        t = time.perf_counter()
        n = sum(pq.read_table(f, columns=cols).num_rows for f in files)
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    ours = criterion("loader", f"read_{size}px_whole_epoch", n)
    rand = criterion("loader", f"read_{size}px_batches_of_64", n)
    print(f"{size} px whole epoch: chexlab {ours:,.0f} img/s, pyarrow {n / best:,.0f} img/s "
          f"({ours / (n / best):.2f}x); chexlab random batches of 64: {rand:,.0f} img/s")

step_small = criterion("train_step", "small_64px_b16", 16)
step_121 = criterion("train_step", "densenet121_224px_b8", 8)
print(f"one training rank consumes: small DenseNet 64 px {step_small:,.0f} img/s, "
      f"DenseNet-121 224 px {step_121:,.1f} img/s")
for name, consumer, label in (
    ("batch16_64px_augment", step_small, "small DenseNet 64 px"),
    ("batch16_224px_augment", step_121, "DenseNet-121 224 px"),
    ("batch16_jpeg_to_224px_augment", step_121, "DenseNet-121 224 px"),
):
    loader = criterion("loader", name, 16 * 40)
    print(f"loader {name}: {loader:,.0f} img/s = {loader / consumer:.1f}x what {label} training consumes")
