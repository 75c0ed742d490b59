#!/usr/bin/env python3
"""CPU training step, chexlab vs PyTorch, in one run: per core and on the whole node.

    python3 benches/compare_torch.py [--case small_64px_b16] [--repeat 3] [--skip-build]

For each case (the same model, shapes, loss and optimizer in both: a 1-channel DenseNet stem, 14 outputs,
BCE-with-logits, Adam) it prints images/s of
  - chexlab, 1 compute thread (`chexlab bench-step --threads 1`, pinned to core 0);
  - PyTorch, torch.set_num_threads(1);
  - PyTorch, torch.set_num_threads(<cores>);
  - chexlab, one process per core, each 1 thread and pinned to its core, run at the same time (images/s summed):
    the layout `chexlab train` uses under mpirun, without the gradient all-reduce (benches/scaling.sh measures
    data-parallel training with it: 4-10 % of step time at 2 ranks);
and the ratios: per core (chexlab 1 thread / PyTorch 1 thread) and node (chexlab's per-core layout / PyTorch's
best). Ratios > 1: chexlab is faster. Each figure is the median of --repeat runs. Needs torch and torchvision,
and `cargo build --release` (done first unless --skip-build or --bin).
"""
import argparse
import json
import os
import statistics
import subprocess
import time

import torch
import torchvision

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BIN = os.path.join(ROOT, "target", "release", "chexlab")
CASES = {
    "small_64px_b16": dict(arch="small", growth_rate=12, block_config=(2, 2, 2), num_init_features=16, size=64,
                           batch=16, steps=30, warmup=3),
    "densenet121_224px_b8": dict(arch="densenet121", growth_rate=32, block_config=(6, 12, 24, 16),
                                 num_init_features=64, size=224, batch=8, steps=3, warmup=1),
}

ap = argparse.ArgumentParser()
ap.add_argument("--case", action="append", choices=sorted(CASES))
ap.add_argument("--repeat", type=int, default=3)
ap.add_argument("--cores", type=int, default=os.cpu_count())
ap.add_argument("--skip-build", action="store_true")
ap.add_argument("--bin", default=BIN, help="the chexlab binary to measure (another build, for a before/after)")
args = ap.parse_args()
cases = args.case or list(CASES)


def bench_step(c, core=None):
    cmd = [args.bin, "--quiet", "bench-step", "--arch", c["arch"], "--image-size", str(c["size"]),
           "--batch-size", str(c["batch"]), "--steps", str(c["steps"]), "--warmup", str(c["warmup"]),
           "--threads", "1"]
    if core is not None:
        cmd = ["taskset", "-c", str(core)] + cmd
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)


def images_per_s(proc):
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"chexlab bench-step failed ({proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])["images_per_s"]


def chexlab_one(c):
    return images_per_s(bench_step(c, 0))


def chexlab_per_core(c):
    procs = [bench_step(c, core) for core in range(args.cores)]
    return sum(images_per_s(p) for p in procs)


def torch_ips(c, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    m = torchvision.models.DenseNet(growth_rate=c["growth_rate"], block_config=c["block_config"],
                                    num_init_features=c["num_init_features"], bn_size=4, num_classes=14)
    m.features.conv0 = torch.nn.Conv2d(1, c["num_init_features"], 7, 2, 3, bias=False)
    m.train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-4)
    x = torch.rand(c["batch"], 1, c["size"], c["size"]) - 0.5
    y = (torch.arange(c["batch"] * 14) % 3 == 0).float().reshape(c["batch"], 14)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for i in range(c["warmup"] + c["steps"]):
        if i == c["warmup"]:
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(m(x), y).backward()
        opt.step()
    return c["steps"] * c["batch"] / (time.perf_counter() - start)


if not args.skip_build and args.bin == BIN:
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
print(f"torch {torch.__version__}; {args.cores} cores; medians of {args.repeat} runs; images/s")
print(f"{'case':<22}{'chexlab 1T':>11}{'torch 1T':>10}{'torch ' + str(args.cores) + 'T':>10}"
      f"{'chexlab ' + str(args.cores) + 'x1T':>14}{'per core':>10}{'node':>7}")
for case in cases:
    c = CASES[case]
    runs = {k: [] for k in ("ours1", "torch1", "torchn", "oursn")}
    for _ in range(args.repeat):  # interleaved, so that drifts in machine load hit every column alike
        runs["ours1"].append(chexlab_one(c))
        runs["torch1"].append(torch_ips(c, 1))
        runs["torchn"].append(torch_ips(c, args.cores))
        runs["oursn"].append(chexlab_per_core(c))
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"{case:<22}{med['ours1']:>11.1f}{med['torch1']:>10.1f}{med['torchn']:>10.1f}{med['oursn']:>14.1f}"
          f"{med['ours1'] / med['torch1']:>9.2f}x{med['oursn'] / max(med['torch1'], med['torchn']):>6.2f}x")
