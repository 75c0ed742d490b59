#!/usr/bin/env python3
"""Peer for benches/bert.rs: the same BERT labeler inference in PyTorch on the same threads, in one run.

    python3 benches/compare_bert.py [--threads 2] [--case small|minilm] [--skip-cargo]

Runs `cargo bench --bench bert` (RAYON_NUM_THREADS=<threads>) unless --skip-cargo, reads criterion's mean time for
the case's reports, then builds the same model in `transformers` (BertModel of the same config + 14 CheXbert heads on
[CLS], random weights, eval mode, float32), tokenizes the same reports with the same tokenizer.json (fast
tokenizer, `[CLS] ... [SEP]`), sorts them by length and runs batches of 32 padded to their longest, as chexlab
does, under torch.inference_mode with torch.set_num_threads(<threads>). Prints reports/s of both and the ratio
chexlab / PyTorch time (> 1: chexlab is slower). Needs torch and transformers.
"""
import argparse
import json
import os
import statistics
import subprocess
import time

import torch
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--case", default="small", choices=["small", "minilm"])
ap.add_argument("--skip-cargo", action="store_true")
ap.add_argument("--repeats", type=int, default=5)
args = ap.parse_args()

if not args.skip_cargo:
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), CHEXLAB_BENCH_CASE=args.case)
    subprocess.run(["cargo", "bench", "--bench", "bert"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
est = os.path.join(ROOT, "target", "criterion", "bert_inference", args.case, "new", "estimates.json")
chexlab_s = json.load(open(est))["mean"]["point_estimate"] / 1e9

case_dir = os.path.join(ROOT, "target", "bench-bert", args.case)
reports = json.load(open(os.path.join(case_dir, "reports.json")))
cfg = json.load(open(os.path.join(case_dir, "config.json")))
torch.set_num_threads(args.threads)
config = BertConfig(**{k: v for k, v in cfg.items()})
bert = BertModel(config, add_pooling_layer=False).eval()
heads = torch.nn.ModuleList(torch.nn.Linear(config.hidden_size, n) for n in [4] * 13 + [2]).eval()
tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(case_dir, "tokenizer.json"), pad_token="[PAD]")


def run():
    enc = tok(reports, add_special_tokens=True, truncation=True, max_length=512)["input_ids"]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    out = [None] * len(enc)
    with torch.inference_mode():
        for s in range(0, len(order), 32):
            idx = order[s:s + 32]
            width = max(len(enc[i]) for i in idx)
            ids = torch.zeros(len(idx), width, dtype=torch.long)
            mask = torch.zeros(len(idx), width, dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, :len(enc[i])] = torch.tensor(enc[i])
                mask[r, :len(enc[i])] = 1
            cls = bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
            logits = torch.cat([h(cls) for h in heads], dim=1)
            for r, i in enumerate(idx):
                out[i] = logits[r].argmax()
    return out


run()  # warm-up
times = []
for _ in range(args.repeats):
    t = time.perf_counter()
    run()
    times.append(time.perf_counter() - t)
torch_s = statistics.mean(times)
n = len(reports)
print(f"case {args.case}, {n} reports, {args.threads} threads, batches of 32 sorted by length")
print(f"chexlab  {n / chexlab_s:8.1f} reports/s  ({chexlab_s * 1e3:.0f} ms)")
print(f"PyTorch  {n / torch_s:8.1f} reports/s  ({torch_s * 1e3:.0f} ms; torch {torch.__version__})")
print(f"ratio chexlab/PyTorch time: {chexlab_s / torch_s:.2f}x")
