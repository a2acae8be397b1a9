"""torch_peer.py: pmoe's models in PyTorch, timed beside pmoe.

Usage: /usr/bin/python3 bench/torch_peer.py DIR [--check-only] [--json]
       [--warmup N] [--repeats N]

DIR is what `pmoe bench --peer DIR` wrote: pmoe-bench.json (pmoe's result:
shapes, threads, batch, optimizer settings, its first loss and times) and,
per model, <model>.init.safetensors (the engine's initial weights, as a pmoe
checkpoint: router.weight [k, d], experts.<s>.weight [h, d],
experts.<s>.output [h, c]) and <model>.batch.safetensors (the composed batch:
images [B, C, H, W], labels [B]).

The pMoE is built twice, with the same weights:
  sparse        what pmoe does: topk per expert, gather the l picked patches
                into one (k, B l, d) block, one batched GEMM for all experts;
  dense_masked  what the paper's code does: every expert on every patch
                (B n x d times d x m), the gate scattered over all n and
                multiplied in, so unpicked patches cost as much as picked ones.
The CNN has one form (l = n: there is nothing to mask).

Deep models (pmoe-bench.json says "bench": "deep"; the files are then
wrn_pmoe.* and wrn.*, with the checkpoint names of src/host/model/wrn.c):
WRN-pMoE and its WRN, built by bench/torch_wrn.py. The deep pMoE layer's two
forms are different functions (its experts' batch norm has statistics over
the B l picked patches or over the whole masked map, and the dense form's
convolution crosses patch borders), so only the form pmoe ran
(model.moe_impl, "sparse": gather each expert's patches and run it on those;
"dense_masked": run it on the masked whole map) can be checked against
pmoe's first loss, and only that one is timed; the other is named with the
pmoe bench command that would time it. The WRN has one form. The train
step is the same as above (batch norm on batch statistics); the inference
step is what pmoe's is for deep models: evaluation mode (running
statistics), forward + loss.

Before timing anything, each form's loss on the batch at the initial weights
must equal pmoe's first loss to 1e-5 (relative); otherwise it exits 1. Then
it times the train step (forward + loss + backward + SGD step) and the
inference step (forward under inference_mode) with pmoe's batch, warm-up,
repeat count and thread count (torch.set_num_threads), and prints pmoe/peer
ratios. Without torch or safetensors it prints "skipped: ..." and exits 77.
"""
import argparse
import json
import os
import statistics
import sys
import time

try:
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file
except ImportError as e:  # the peer needs both; a machine without them skips
    print(f"skipped: {e} (run with /usr/bin/python3: Debian's python3-torch, and "
          f"/usr/bin/python3 -m pip install --break-system-packages safetensors)")
    sys.exit(77)

TOLERANCE = 1e-5


def patches_of(images, p):
    """B x C x H x W -> B x n x d, patch j row-major over the grid, flattened (c, y, x) as pmoe."""
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, (H // p) * (W // p), C * p * p).contiguous()


def loss_of(f, labels, classes):
    if classes == 1:  # label 1 is y = +1, 0 is y = -1: log(1 + exp(-y f))
        y = labels.to(f.dtype) * 2 - 1
        return F.softplus(-y * f[:, 0]).mean()
    return F.cross_entropy(f, labels.long())


class PMoE(torch.nn.Module):
    """Eq. 1 of the paper: f_c = sum_s sum_j in J_s G[j,s] sum_r a[r,s,c] / l ReLU(<w_rs, x_j>)."""

    def __init__(self, w, k, l, gate, learn_router, train_output, dense_masked):
        super().__init__()
        self.k, self.l, self.gate, self.dense_masked = k, l, gate, dense_masked
        self.router = torch.nn.Parameter(w["router.weight"].clone(), requires_grad=learn_router)
        self.experts = torch.nn.Parameter(torch.stack([w[f"experts.{s}.weight"] for s in range(k)]))
        self.output = torch.nn.Parameter(torch.stack([w[f"experts.{s}.output"] for s in range(k)]),
                                         requires_grad=bool(train_output))

    def route(self, patches):
        scores = (patches @ self.router.t()).transpose(1, 2)  # B x k x n
        top, picks = scores.topk(self.l, dim=2)  # best first
        if self.gate == "renorm":
            g = torch.softmax(top, dim=2)
        elif self.gate == "softmax_all":
            g = torch.softmax(scores, dim=2).gather(2, picks)
        else:  # ones
            g = torch.ones_like(top)
        return picks, g  # B x k x l each

    def forward(self, patches):
        B, n, d = patches.shape
        k, l = self.k, self.l
        picks, g = self.route(patches)
        if self.dense_masked:
            h = self.experts.shape[1]
            hidden = torch.relu(patches @ self.experts.reshape(k * h, d).t())  # B x n x (k h)
            units = torch.einsum("bnkh,khc->bnkc", hidden.reshape(B, n, k, h), self.output)
            mask = torch.zeros(B, k, n, dtype=g.dtype).scatter(2, picks, g)  # the gate over all n
            return (units * mask.transpose(1, 2).unsqueeze(-1)).sum(dim=(1, 2)) / l
        # sparse: gather each expert's picks, (k, B, l, d), one batched GEMM
        rows = patches[torch.arange(B).view(1, B, 1), picks.permute(1, 0, 2)].reshape(k, B * l, d)
        hidden = torch.relu(torch.bmm(rows, self.experts.transpose(1, 2)))  # k x B l x h
        units = torch.bmm(hidden, self.output).reshape(k, B, l, -1)  # k x B x l x c
        return (units * g.permute(1, 0, 2).unsqueeze(-1)).sum(dim=(0, 2)) / l


class CNN(torch.nn.Module):
    """Eq. 5: f_c = sum_r a[r,c] / n sum_j ReLU(<w_r, x_j>)."""

    def __init__(self, w, train_output):
        super().__init__()
        self.experts = torch.nn.Parameter(w["experts.0.weight"].clone())
        self.output = torch.nn.Parameter(w["experts.0.output"].clone(), requires_grad=bool(train_output))

    def forward(self, patches):
        hidden = torch.relu(patches @ self.experts.t())  # B x n x m
        return (hidden @ self.output).sum(dim=1) / patches.shape[1]


def cpu_clock():
    """(wall, machine busy seconds from /proc/stat or None, this process's CPU seconds)."""
    busy = None
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        busy = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    return time.perf_counter(), busy, time.process_time()


def others_share(a, b):
    """The share of all cores other processes kept busy between clocks a and b (as pmoe's)."""
    if a[1] is None or b[1] is None or b[0] <= a[0]:
        return None
    share = ((b[1] - a[1]) - (b[2] - a[2])) / ((b[0] - a[0]) * os.cpu_count())
    return min(max(share, 0.0), 1.0)


def median_min_max(ms):
    return {"median": statistics.median(ms), "min": min(ms), "max": max(ms)}


def time_form(model, input_fn, labels, classes, cfg, warmup, repeats, deep=False):
    """deep: the inference step runs in evaluation mode and includes the loss, as pmoe's."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"],
                           weight_decay=cfg["weight_decay"])
    train_ms, infer_ms = [], []
    model.train()
    for i in range(warmup + repeats):
        began = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_of(model(input_fn()), labels, classes)
        loss.backward()
        opt.step()
        took = time.perf_counter() - began
        if i >= warmup:
            train_ms.append(1e3 * took)
    if deep:
        model.eval()
    with torch.inference_mode():
        for i in range(warmup + repeats):
            began = time.perf_counter()
            out = model(input_fn())
            if deep:
                float(loss_of(out, labels, classes))
            took = time.perf_counter() - began
            if i >= warmup:
                infer_ms.append(1e3 * took)
    model.train()
    return median_min_max(train_ms), median_min_max(infer_ms), float(loss)


def deep_forms(run, eng, w):
    """{form: module} for a deep model (only the form pmoe ran), and a note on the other."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch_wrn  # the deep models; beside this file

    name = eng["model"]
    if name == "wrn":
        return {"dense": torch_wrn.WRN(w, "wrn")}, None
    impl = eng["moe_impl"]
    other = "dense_masked" if impl == "sparse" else "sparse"
    module = torch_wrn.WRN(w, "wrn_pmoe", experts=eng["experts"], topl=eng["topl"],
                           patch=run["patch"], gate=eng["gate"], moe_impl=impl)
    note = (f"{name} {other}: not run: pmoe ran model.moe_impl = {impl}, and the deep layer's two "
            f"forms compute different functions, so there is no first loss to check it against "
            f"(pmoe bench --set model.moe_impl={other} --peer DIR times it)")
    return {impl: module}, note


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--check-only", action="store_true", help="check the first losses, time nothing")
    ap.add_argument("--json", action="store_true", help="the last stdout line is the result as JSON")
    ap.add_argument("--warmup", type=int, help="default: pmoe's")
    ap.add_argument("--repeats", type=int, help="default: pmoe's")
    args = ap.parse_args()

    with open(os.path.join(args.dir, "pmoe-bench.json")) as f:
        run = json.load(f)
    threads = run["threads"]
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    warmup = run["warmup"] if args.warmup is None else args.warmup
    repeats = run["repeats"] if args.repeats is None else args.repeats
    cfg = {"lr": run["lr"], "momentum": run["momentum"], "weight_decay": run["weight_decay"]}
    p = run["patch"]
    deep = run.get("bench") == "deep"

    result = {"peer": "torch", "torch": torch.__version__, "threads": threads,
              "batch": run["batch"], "warmup": warmup, "repeats": repeats,
              "data": run["data"], "pmoe_date": run.get("date")}
    failed = False
    print(f"peer: PyTorch {torch.__version__} on the CPU, {threads} threads; batch {run['batch']}; "
          f"{warmup} warm-up + {repeats} timed steps; {run['data']}")
    header = (f"{'model':8} {'form':18} {'first loss':>12} {'rel diff':>9}  {'train ms/step [min-max]':>26}"
              f"  {'infer ms/step':>13}  {'pmoe/peer train':>15}  {'pmoe/peer infer':>15}")
    if not args.check_only:
        print(header)
    for role in ("pmoe", "baseline"):
        eng = run[role]
        name = eng["model"]
        w = load_file(os.path.join(args.dir, f"{name}.init.safetensors"))
        batch = load_file(os.path.join(args.dir, f"{name}.batch.safetensors"))
        images = batch["images"].float().contiguous()
        labels = batch["labels"].round().long()
        classes = eng["classes"]
        train_output = bool(eng["train_output"])
        forms, note = {}, None
        if deep:
            forms, note = deep_forms(run, eng, w)
        elif name == "pmoe":
            learn_router = bool(eng["learn_router"])
            for form, dense in (("sparse", False), ("dense_masked", True)):
                forms[form] = PMoE(w, eng["experts"], eng["topl"], eng["gate"], learn_router,
                                   train_output, dense)
        else:
            forms["dense"] = CNN(w, train_output)
        out = {}
        if not args.check_only:
            print(f"{name:8} {'pmoe engine':18} {eng['first_loss']:12.7f} {'':>9}  "
                  f"{eng['train_ms_per_step']:8.3f} [{eng['train_ms_min']:.3f}-{eng['train_ms_max']:.3f}]"
                  f"  {eng['infer_ms_per_step']:13.3f}")
        for form, model in forms.items():
            # patch extraction is part of both steps, as it is in pmoe (the deep models
            # take the images; their pMoE layer extracts its own patches)
            patches_fn = (lambda: images) if deep else (lambda: patches_of(images, p))  # noqa: E731
            with torch.no_grad():  # train mode: batch norm on the batch, as pmoe's first step
                first = float(loss_of(model(patches_fn()), labels, classes))
            rel = abs(first - eng["first_loss"]) / max(abs(eng["first_loss"]), 1e-30)
            ok = rel <= TOLERANCE
            entry = {"first_loss": first, "pmoe_first_loss": eng["first_loss"], "loss_rel_diff": rel,
                     "loss_ok": ok}
            if not ok:
                failed = True
                print(f"{name} {form}: first loss {first:.9g} != pmoe's {eng['first_loss']:.9g} "
                      f"(relative difference {rel:.3g} > {TOLERANCE:g}): not timing it", file=sys.stderr)
            elif args.check_only:
                print(f"{name} {form}: first loss {first:.9g}, pmoe {eng['first_loss']:.9g}, "
                      f"relative difference {rel:.3g} <= {TOLERANCE:g}")
            else:
                began = cpu_clock()
                train, infer, last = time_form(model, patches_fn, labels, classes, cfg, warmup, repeats,
                                               deep)
                entry["others_cpu_share"] = others_share(began, cpu_clock())
                entry.update({"train_ms_per_step": train["median"], "train_ms_min": train["min"],
                              "train_ms_max": train["max"], "infer_ms_per_step": infer["median"],
                              "infer_ms_min": infer["min"], "infer_ms_max": infer["max"],
                              "last_loss": last,
                              "pmoe_over_peer_train": eng["train_ms_per_step"] / train["median"],
                              "pmoe_over_peer_infer": eng["infer_ms_per_step"] / infer["median"]})
                print(f"{name:8} {'torch ' + form:18} {first:12.7f} {rel:9.1e}  "
                      f"{train['median']:8.3f} [{train['min']:.3f}-{train['max']:.3f}]"
                      f"  {infer['median']:13.3f}  {entry['pmoe_over_peer_train']:15.3f}"
                      f"  {entry['pmoe_over_peer_infer']:15.3f}")
            out[form] = entry
        if note:
            print(note)
        result[role] = {"model": name, **out}
    if args.json:
        print(json.dumps(result))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
