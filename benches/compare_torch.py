#!/usr/bin/env python3
"""Peer for benches/train_step.rs: the same training steps in PyTorch on the same number of threads, in one run.

    python3 benches/compare_torch.py [--threads 2] [--case small_64px_b16] [--skip-cargo]

Runs `cargo bench --bench train_step` with RAYON_NUM_THREADS=<threads> (unless --skip-cargo: then the last
criterion result is read), reads criterion's mean step time, times PyTorch (torch.set_num_threads(<threads>)) on the
same model, shapes, loss and optimizer (a 1-channel stem, 14 outputs, BCE-with-logits, Adam), and prints ms/step,
images/s and the ratio chexlab / PyTorch (> 1: chexlab is slower). Needs torch and torchvision.
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
CASES = {
    "small_64px_b16": dict(growth_rate=12, block_config=(2, 2, 2), num_init_features=16, size=64, batch=16),
    "densenet121_224px_b8": dict(growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, size=224, batch=8),
}

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--case", action="append", choices=sorted(CASES))
ap.add_argument("--skip-cargo", action="store_true")
args = ap.parse_args()
cases = args.case or list(CASES)


def chexlab_ms(case):
    if not args.skip_cargo:
        env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), CHEXLAB_BENCH_CASE=case)
        subprocess.run(["cargo", "bench", "--bench", "train_step"], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL)
    est = os.path.join(ROOT, "target", "criterion", "train_step", case, "new", "estimates.json")
    return json.load(open(est))["mean"]["point_estimate"] / 1e6


def torch_ms(c, steps):
    torch.manual_seed(1)
    m = torchvision.models.DenseNet(growth_rate=c["growth_rate"], block_config=c["block_config"],
                                    num_init_features=c["num_init_features"], bn_size=4, num_classes=14)
    m.features.conv0 = torch.nn.Conv2d(1, c["num_init_features"], 7, 2, 3, bias=False)
    m.train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-4)
    x = torch.rand(c["batch"], 1, c["size"], c["size"]) - 0.5
    y = (torch.arange(c["batch"] * 14) % 3 == 0).float().reshape(c["batch"], 14)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(m(x), y).backward()
        opt.step()
        if i >= 2:  # warm-up
            times.append(time.perf_counter() - t)
    return statistics.mean(times) * 1e3


torch.set_num_threads(args.threads)
print(f"threads: {args.threads}; torch {torch.__version__}")
print(f"{'case':<24}{'chexlab ms':>12}{'torch ms':>10}{'chexlab img/s':>15}{'torch img/s':>13}{'ratio':>8}")
for case in cases:
    c = CASES[case]
    ours = chexlab_ms(case)
    theirs = torch_ms(c, 10 if c["size"] > 100 else 30)
    print(f"{case:<24}{ours:>12.1f}{theirs:>10.1f}{c['batch'] / ours * 1e3:>15.1f}"
          f"{c['batch'] / theirs * 1e3:>13.1f}{ours / theirs:>8.2f}")
