#!/usr/bin/env python3
"""PyTorch peer of `chexlab bench-step`: the same DenseNet-121 training step (1 input channel, 14 outputs,
BCE-with-logits, Adam lr 1e-4) on the same GPU, timed the same way (warm-up steps, then timed steps, the loss read
back each step). Prints one JSON line.

    python3 benches/gpu/torch_step.py --size 224 --batch 16 --steps 20 --warmup 3 --precision f32|bf16
"""
import argparse, json, time

import torch
import torchvision

p = argparse.ArgumentParser()
p.add_argument("--size", type=int, default=224)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--steps", type=int, default=20)
p.add_argument("--warmup", type=int, default=3)
p.add_argument("--precision", choices=["f32", "bf16"], default="f32")
p.add_argument("--channels-last", action="store_true")
a = p.parse_args()

dev = torch.device("cuda")
torch.manual_seed(0)
model = torchvision.models.densenet121(num_classes=14)
model.features.conv0 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
model = model.to(dev)
fmt = torch.channels_last if a.channels_last else torch.contiguous_format
model = model.to(memory_format=fmt)
opt = torch.optim.Adam(model.parameters(), lr=1e-4)
x = (torch.arange(a.batch * a.size * a.size, device=dev) * 7919 % 255).float().div(255).sub(0.5)
x = x.reshape(a.batch, 1, a.size, a.size).contiguous(memory_format=fmt)
y = (torch.arange(a.batch * 14, device=dev) % 3 == 0).float().reshape(a.batch, 14)
loss_fn = torch.nn.BCEWithLogitsLoss()


def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
        loss = loss_fn(model(x).float(), y)
    loss.backward()
    opt.step()
    return loss.item()  # waits for the GPU, as chexlab's step does


for _ in range(a.warmup):
    step()
torch.cuda.synchronize()
t = time.perf_counter()
for _ in range(a.steps):
    step()
torch.cuda.synchronize()
s = time.perf_counter() - t
print(json.dumps({"peer": "pytorch " + torch.__version__, "size": a.size, "batch": a.batch,
                  "precision": a.precision + ("-autocast" if a.precision == "bf16" else ""),
                  "channels_last": a.channels_last, "seconds": s, "images_per_s": a.steps * a.batch / s}))
