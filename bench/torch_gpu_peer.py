#!/usr/bin/env python3
"""torch_gpu_peer.py: the two-layer pMoE and CNN training steps in PyTorch
eager on the GPU, the peer that bench/gpu_bench.c's step times are set
against (run by tools/device_check.sh).

The same jobs as gpu_bench (names, shapes, binary logistic loss, plain SGD,
fixed output weights) written the way a PyTorch user would: unfold into
patches, scores by one matmul, torch.topk per expert, softmax over the l
picks, gather, one batched matmul for the experts, einsum to combine,
autograd for the backward. Every step reads the loss back (.item()), as
pmoe's step does. Timed with CUDA events after a warm-up; float32 without
TF32, as pmoe runs.

Usage: torch_gpu_peer.py [--json FILE] [--quick]
"""
import argparse
import json
import sys

import torch
import torch.nn.functional as F

JOBS = [  # name, model, channels, size, patch, batch, experts, topl, hidden
    ("pmoe_paper", "pmoe", 1, 112, 28, 20, 8, 6, 40),
    ("pmoe_large", "pmoe", 40, 32, 4, 256, 8, 16, 640),
    ("cnn_paper", "cnn", 1, 112, 28, 20, 1, 16, 40),
    ("cnn_large", "cnn", 40, 32, 4, 256, 1, 64, 640),
]


def build(model, channels, size, patch, batch, experts, topl, hidden, device):
    gen = torch.Generator().manual_seed(1)
    n = (size // patch) ** 2
    d = channels * patch * patch
    h = hidden // experts
    state = {
        "images": torch.rand(batch, channels, size, size, generator=gen).to(device),
        "y": (2 * (torch.arange(batch) % 2) - 1).float().to(device),
        "experts": (torch.randn(experts, h, d, generator=gen) * 0.01).to(device).requires_grad_(),
        "out_w": torch.randn(experts, h, 1, generator=gen).to(device),
        "n": n, "d": d, "h": h, "k": experts, "l": topl if model == "pmoe" else n,
    }
    if model == "pmoe":
        state["router"] = (torch.randn(experts, d, generator=gen) * 1e-4).to(device).requires_grad_()
    return state


def patches_of(images, patch):
    b, c, _, _ = images.shape
    x = images.unfold(2, patch, patch).unfold(3, patch, patch)  # B C P Q p p
    return x.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, c * patch * patch)  # B n d, (c, y, x)


def step(model, s, patch, lr):
    x = patches_of(s["images"], patch)
    b, n, d = x.shape
    k, l, h = s["k"], s["l"], s["h"]
    if model == "pmoe":
        scores = x @ s["router"].t()  # B n k
        top = scores.topk(l, dim=1)  # B l k
        gate = torch.softmax(top.values.permute(0, 2, 1), dim=-1)  # B k l
        index = top.indices.permute(0, 2, 1)  # B k l
        picked = torch.gather(x.unsqueeze(1).expand(b, k, n, d), 2,
                              index.unsqueeze(-1).expand(b, k, l, d))  # B k l d
        rows = picked.permute(1, 0, 2, 3).reshape(k, b * l, d)
        hidden = torch.relu(torch.bmm(rows, s["experts"].transpose(1, 2))).reshape(k, b, l, h)
        unit = torch.einsum("kblh,khc->bklc", hidden, s["out_w"])
        logits = (gate.unsqueeze(-1) * unit).sum(dim=(1, 2)) / l
        params = [s["router"], s["experts"]]
    else:
        hidden = torch.relu(x @ s["experts"][0].t())  # B n h
        logits = (hidden @ s["out_w"][0]).sum(dim=1) / n
        params = [s["experts"]]
    loss = F.softplus(-s["y"] * logits[:, 0]).mean()
    loss.backward()
    with torch.no_grad():
        for p in params:
            p -= lr * p.grad
            p.grad = None
    return loss.item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("torch_gpu_peer: skipped: no CUDA device")
        return 77
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda:0")
    steps = 20 if args.quick else 100
    result = {"torch": torch.__version__, "cuda": torch.version.cuda,
              "device": torch.cuda.get_device_name(0), "steps": {}}
    for name, model, channels, size, patch, batch, experts, topl, hidden in JOBS:
        s = build(model, channels, size, patch, batch, experts, topl, hidden, device)
        for _ in range(5):
            step(model, s, patch, 0.2)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(steps):
            loss = step(model, s, patch, 0.2)
        end.record()
        end.synchronize()
        ms = start.elapsed_time(end) / steps
        result["steps"][name] = {"torch_ms": round(ms, 4), "batch": batch, "last_loss": loss}
        print(f"torch eager step {name:<11} B{batch:<3} {ms:8.3f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
