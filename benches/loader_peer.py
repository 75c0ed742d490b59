#!/usr/bin/env python3
"""Peer for benches/loader.rs: pyarrow's raw read of the same shards (image + one source's label columns), in
images/s, so the chexlab reader can be read as a ratio. Run after `cargo bench --bench loader` has built the
shards:  python3 benches/loader_peer.py  [--repeat 5]"""
import glob, json, os, sys, time

import pyarrow.parquet as pq

base = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "bench-shards")
repeat = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 5
for size in (64, 224):
    d = os.path.join(base, f"s{size}")
    idx = json.load(open(os.path.join(d, "index.json")))
    files = [os.path.join(d, s["file"]) for s in idx["shards"] if s["split"] == "train"]
    cols = ["image_id", "image", "width", "height"] + [c for c in pq.read_schema(files[0]).names if c.startswith("lbl_truth_")]
    best = None
    for _ in range(repeat):
        t = time.perf_counter()
        n = sum(pq.read_table(f, columns=cols).num_rows for f in files)
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    print(f"pyarrow read_{size}px: {n} images in {best * 1e3:.1f} ms = {n / best:,.0f} images/s")
