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

--deep adds WRN and WRN-pMoE (bench/torch_wrn.py) at width 10, batch 128,
32x32 CIFAR-10 shapes, WRN-pMoE as configs/wrn_pmoe_cifar10.ini has it
(4 experts, l = 16, patch 1, expert kernel 1, renorm gate, sparse): forward,
cross-entropy, backward, SGD with momentum 0.9 and weight decay 5e-4 (the
config's), without a read-back per step (the last one waits).
--compile times each job again under torch.compile after all the eager
figures, where this torch has it and it compiles; a failure is recorded
with its first line, not fatal. The JSON file is rewritten after every
figure, so a caller's time limit keeps what was measured.
--device cpu runs the same code on the CPU (small shapes with --quick: for
tests of this script, not for figures).

Usage: torch_gpu_peer.py [--json FILE] [--quick] [--deep [--only-deep]] [--compile]
                         [--device cuda|cuda:N|cpu] [--steps N] [--time-limit S]
"""
import argparse
import json
import os
import sys
import time

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


def deep_job(model_type, width, batch, device, steps_quick):
    """(step function, batch) for WRN / WRN-pMoE at this width (bench/torch_wrn.py)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch_wrn

    size = 8 if steps_quick and device.type == "cpu" else 32
    w = torch_wrn.initial_weights(model_type, width, 10, experts=4, patch=1, expert_kernel=1,
                                  device=device)
    model = torch_wrn.WRN(w, model_type, experts=4, topl=min(16, (size // 4) ** 2), patch=1,
                          gate="renorm", moe_impl="sparse").to(device)
    model.train()
    gen = torch.Generator().manual_seed(2)
    images = torch.rand(batch, 3, size, size, generator=gen).to(device)
    labels = torch.randint(0, 10, (batch,), generator=gen).to(device)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1,
                          momentum=0.9, weight_decay=5e-4)

    def fwd_bwd(m):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(m(images), labels)
        loss.backward()
        opt.step()
        return loss

    return model, fwd_bwd


def time_steps(fn, steps, warmup, device):
    """ms per call of fn after warm-up: CUDA events on a GPU, the wall clock on the CPU."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for _ in range(steps):
            out = fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / steps, float(out)
    began = time.perf_counter()
    for _ in range(steps):
        out = fn()
    return 1e3 * (time.perf_counter() - began) / steps, float(out)


def first_line(e):
    text = f"{type(e).__name__}: {e}".strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--deep", action="store_true", help="also WRN and WRN-pMoE at width 10")
    ap.add_argument("--only-deep", action="store_true", help="with --deep: the deep models alone")
    ap.add_argument("--compile", action="store_true", help="also each job under torch.compile")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--steps", type=int, help="timed steps per job (default 100, 20 with --quick)")
    ap.add_argument("--width", type=int, default=10, help="WRN width with --deep (default 10)")
    ap.add_argument("--time-limit", type=float, help="seconds: start no torch.compile job after it")
    args = ap.parse_args()
    began_all = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("torch_gpu_peer: skipped: no CUDA device")
        return 77
    # pmoe's precision: float32 without TF32 (cuBLAS and cuDNN)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    steps = args.steps or (20 if args.quick else 100)
    quick_cpu = args.quick and device.type == "cpu"
    result = {"torch": torch.__version__, "cuda": torch.version.cuda,
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "precision": "fp32, TF32 off", "steps": {}, "compiled": {}}

    def save():
        if args.json:
            tmp = args.json + ".tmp"
            with open(tmp, "w") as f:
                json.dump(result, f)
            os.replace(tmp, args.json)

    jobs = []  # (name, batch, step fn taking a "compile?" flag)
    for name, model, channels, size, patch, batch, experts, topl, hidden in ([] if args.only_deep else JOBS):
        if quick_cpu:
            size, batch, channels = min(size, 4 * patch), min(batch, 8), min(channels, 2)
        s = build(model, channels, size, patch, batch, experts, topl, hidden, device)
        jobs.append((name, batch, lambda s=s, model=model, patch=patch: step(model, s, patch, 0.2),
                     "step"))
    if args.deep:
        for model_type in ("wrn", "wrn_pmoe"):
            batch = 4 if quick_cpu else 128
            width = 1 if quick_cpu else args.width
            module, fwd_bwd = deep_job(model_type, width, batch, device, args.quick)
            jobs.append((f"{model_type}_w{width}", batch, (module, fwd_bwd), "module"))

    def runner(job, compiled):
        name, batch, fn, kind = job
        if kind == "module":
            module, fwd_bwd = fn
            m = torch.compile(module) if compiled else module
            return lambda: fwd_bwd(m)
        return torch.compile(fn) if compiled else fn

    for job in jobs:
        name, batch = job[0], job[1]
        ms, loss = time_steps(runner(job, False), steps, 5 if not quick_cpu else 1, device)
        result["steps"][name] = {"torch_ms": round(ms, 4), "batch": batch, "last_loss": loss}
        print(f"torch eager step {name:<11} B{batch:<3} {ms:8.3f} ms", flush=True)
        save()
    if args.compile:
        if not hasattr(torch, "compile"):
            result["compiled"] = {"skipped": f"torch {torch.__version__} has no torch.compile"}
            print(f"torch.compile: skipped: {result['compiled']['skipped']}")
        for job in jobs if hasattr(torch, "compile") else []:
            name, batch = job[0], job[1]
            began = time.perf_counter()
            if args.time_limit is not None and began - began_all > args.time_limit:
                result["compiled"][name] = {"not_run": f"past --time-limit {args.time_limit:g} s"}
                print(f"torch.compile step {name}: not run: past --time-limit", flush=True)
                save()
                continue
            try:
                ms, loss = time_steps(runner(job, True), steps, 3, device)
                result["compiled"][name] = {"torch_ms": round(ms, 4), "batch": batch, "last_loss": loss,
                                            "compile_and_warmup_s": round(time.perf_counter() - began, 1)}
                print(f"torch.compile step {name:<11} B{batch:<3} {ms:8.3f} ms", flush=True)
            except Exception as e:  # a compiler that fails here is a finding, not a stop
                result["compiled"][name] = {"failed": first_line(e)}
                print(f"torch.compile step {name}: failed: {first_line(e)}", flush=True)
            save()
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
