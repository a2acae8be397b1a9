#!/usr/bin/python3
"""make_golden.py: the PyTorch golden values for tests/test_golden.c.

An independent float64 implementation of the two-layer pMoE of the paper
(eq. 1: patches, routers, top-l per (sample, expert), gate renormalised over
the l selected, ReLU experts, combine with 1/l) and of its CNN baseline
(eq. 5: k = 1, l = n, G = 1, no router), with the binary logistic loss and
the softmax cross-entropy. Every gradient comes from autograd; nothing here
is derived by hand.

Inputs are drawn with a fixed seed as float32 values (so the C engine, which
runs in float32, sees exactly the same numbers) and are redrawn until the
result is free of the two places where float32 and float64 could legitimately
disagree: a top-l choice decided by a near tie (every gap between consecutive
scores among the best l + 1 of each (sample, expert) is >= 1e-3), and an
expert pre-activation near the ReLU kink (|<w, x>| >= 1e-3 for every expert
unit and every patch).

Run with Debian's python3-torch:
    /usr/bin/python3 tools/make_golden.py [output path]
It writes tests/fixtures/golden_two_layer.txt by default.

The fixture is plain text, one item per line, '#' starts a comment line:
    format pmoe-golden 1
    case NAME
    shape key=value ...          model=pmoe|cnn batch channels height width
                                 patch experts topl hidden (m, total) classes gate
    tensor NAME COUNT            followed by COUNT numbers, whitespace separated
    end                          closes the case
Inputs (images, labels, router, experts, output) are float32 values written
with 9 significant digits, which reads back to the same float32; expected
values (loss, logits, selected, gate, *_grad) are float64 with 17 digits.
Layouts are the engine's: images B x C x H x W, router k x d, experts
k x h x d, output k x h x c, logits B x c, selected and gate B x k x l (best
first), labels int (binary: 1 is y = +1, 0 is y = -1).
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

SEED = 20230607
GAP = 1e-3   # minimum score gap around the top-l and minimum |pre-activation|

CASES = [
    # name, model, B, C, H, W, p, k, l, m (total hidden), c
    dict(name="pmoe_binary", model="pmoe", B=4, C=2, H=4, W=4, p=2, k=3, l=2, m=6, c=1),
    dict(name="pmoe_3class", model="pmoe", B=5, C=1, H=6, W=6, p=2, k=2, l=3, m=8, c=3),
    dict(name="cnn_binary", model="cnn", B=4, C=1, H=4, W=4, p=2, k=1, l=None, m=4, c=1),
    dict(name="cnn_3class", model="cnn", B=5, C=1, H=6, W=6, p=2, k=1, l=None, m=6, c=3),
]


def patches_of(images, p):
    """B x C x H x W -> B x n x d, patches row-major over the grid, each
    flattened in (c, y, x) order."""
    B, C, H, W = images.shape
    t = images.reshape(B, C, H // p, p, W // p, p)          # b c gy y gx x
    t = t.permute(0, 2, 4, 1, 3, 5)                          # b gy gx c y x
    return t.reshape(B, (H // p) * (W // p), C * p * p)


def forward(case, images, labels, router, experts, output):
    """Returns (loss, logits, selected, gate); selected/gate are None for the CNN."""
    k, c = case["k"], case["c"]
    x = patches_of(images, case["p"])                        # B n d
    B, n, d = x.shape
    if case["model"] == "pmoe":
        l = case["l"]
        scores = torch.einsum("bnd,sd->bsn", x, router)      # B k n
        # topk picks the set; sort it by descending score (the engine's
        # order); the redraw in draw() guarantees there are no near ties.
        _, idx = torch.topk(scores.detach(), l, dim=2, largest=True, sorted=True)
        order = torch.argsort(torch.gather(scores.detach(), 2, idx), dim=2, descending=True)
        idx = torch.gather(idx, 2, order)                     # B k l, best first
        gate = torch.softmax(torch.gather(scores, 2, idx), dim=2)   # renormalised over the l
        xsel = torch.gather(x.unsqueeze(1).expand(B, k, n, d), 2,
                            idx.unsqueeze(3).expand(B, k, l, d))     # B k l d
    else:
        l = n
        idx, gate = None, None
        xsel = x.unsqueeze(1)                                 # B 1 n d
    hidden = F.relu(torch.einsum("bstd,srd->bstr", xsel, experts))   # B k l h
    g = gate if gate is not None else torch.ones(B, k, l, dtype=x.dtype)
    logits = torch.einsum("bst,bstr,src->bc", g, hidden, output) / l  # B c
    if c == 1:
        y = labels.to(x.dtype) * 2.0 - 1.0
        loss = F.softplus(-y * logits[:, 0]).mean()
    else:
        loss = F.cross_entropy(logits, labels.long(), reduction="mean")
    return loss, logits, idx, gate


def is_clean(case, images, router, experts):
    """True when no top-l choice is near a tie and no pre-activation is near 0."""
    x = patches_of(images, case["p"])
    if case["model"] == "pmoe":
        l, n = case["l"], x.shape[1]
        scores = torch.einsum("bnd,sd->bsn", x, router)
        top = torch.sort(scores, dim=2, descending=True).values[:, :, : min(l + 1, n)]
        if top.shape[2] > 1 and (top[:, :, :-1] - top[:, :, 1:]).min().item() < GAP:
            return False
    pre = torch.einsum("bnd,srd->bnsr", x, experts)          # every unit on every patch
    return pre.abs().min().item() >= GAP


def self_check(case, images, labels, params):
    """Checks the reference itself: the patch layout against F.unfold (whose
    rows are (c, y, x) and columns the grid row-major), and autograd against
    finite differences (valid here because the draw keeps clear of ties and
    kinks, so the loss is smooth around the point)."""
    p = case["p"]
    unfolded = F.unfold(images, kernel_size=p, stride=p).transpose(1, 2)
    assert torch.equal(unfolded, patches_of(images, p)), "patch layout"
    loose = [t.detach().clone().requires_grad_(True) for t in params]
    if case["model"] == "pmoe":
        fn = lambda r, e, o: forward(case, images, labels, r, e, o)[0]
    else:
        fn = lambda e, o: forward(case, images, labels, None, e, o)[0]
    assert torch.autograd.gradcheck(fn, tuple(loose), eps=1e-6, atol=1e-8, rtol=1e-6), "gradcheck"


def draw(case, gen):
    B, C, H, W, p, k, m, c = (case[key] for key in "B C H W p k m c".split())
    h, d = m // k, C * p * p
    for attempt in range(1000):
        f32 = lambda *shape, std=1.0: (torch.randn(*shape, generator=gen, dtype=torch.float32)
                                       * std).to(torch.float64)
        images = f32(B, C, H, W)
        router = f32(k, d) if case["model"] == "pmoe" else None
        experts = f32(k, h, d, std=0.5)
        output = f32(k, h, c)
        labels = torch.randint(0, max(c, 2), (B,), generator=gen, dtype=torch.int64)
        # both classes present in the binary batches, all three in the 3-class ones
        if len(set(labels.tolist())) < max(c, 2):
            continue
        if is_clean(case, images, router, experts):
            return attempt, images, labels, router, experts, output
    raise SystemExit(f"{case['name']}: no clean draw in 1000 attempts")


def f32_text(values):
    """9 significant digits: reads back (strtod, then a cast to float) to the
    same float32; checked here rather than assumed."""
    out = []
    for v in values:
        s = "%.9g" % v
        assert float(np.float32(float(s))) == v and float(np.float32(v)) == v, (v, s)
        out.append(s)
    return out


def write_tensor(lines, name, values, kind):
    values = [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)] \
        if kind != "int" else [int(v) for v in np.asarray(values).reshape(-1)]
    if kind == "f32":
        text = f32_text(values)
    elif kind == "int":
        text = ["%d" % v for v in values]
    else:
        text = ["%.17g" % v for v in values]
    lines.append("tensor %s %d" % (name, len(text)))
    per_line = 8 if kind == "f32" else 4 if kind == "f64" else 16
    for i in range(0, len(text), per_line):
        lines.append(" ".join(text[i:i + per_line]))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "tests", "fixtures",
                                                               "golden_two_layer.txt")
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(SEED)
    lines = [
        "# golden_two_layer.txt: loss, logits and gradients of the two-layer pMoE (joint",
        "# training, gate renormalised over the top-l) and of the CNN, computed in float64",
        "# with PyTorch autograd. Read by tests/test_golden.c. Do not edit by hand;",
        "# regenerate with:",
        "#   /usr/bin/python3 tools/make_golden.py",
        "# torch %s, numpy %s, python %s, seed %d; inputs redrawn until every top-l"
        % (torch.__version__, np.__version__, sys.version.split()[0], SEED),
        "# score gap and every |expert pre-activation| is >= %g." % GAP,
        "format pmoe-golden 1",
    ]
    for case in CASES:
        attempt, images, labels, router, experts, output = draw(case, gen)
        params = [t.clone().requires_grad_(True) for t in (router, experts, output)
                  if t is not None]
        if case["model"] == "pmoe":
            r, e, o = params
        else:
            r, (e, o) = None, params
        loss, logits, idx, gate = forward(case, images, labels, r, e, o)
        loss.backward()
        self_check(case, images, labels, params)
        n = (case["H"] // case["p"]) * (case["W"] // case["p"])
        l = case["l"] if case["model"] == "pmoe" else n
        lines.append("")
        lines.append("# %s: redraws %d" % (case["name"], attempt))
        lines.append("case %s" % case["name"])
        lines.append("shape model=%s batch=%d channels=%d height=%d width=%d patch=%d experts=%d "
                     "topl=%d hidden=%d classes=%d gate=%s"
                     % (case["model"], case["B"], case["C"], case["H"], case["W"], case["p"],
                        case["k"], l, case["m"], case["c"],
                        "renorm" if case["model"] == "pmoe" else "ones"))
        write_tensor(lines, "images", images, "f32")
        write_tensor(lines, "labels", labels, "int")
        if r is not None:
            write_tensor(lines, "router", router, "f32")
        write_tensor(lines, "experts", experts, "f32")
        write_tensor(lines, "output", output, "f32")
        write_tensor(lines, "loss", [loss.item()], "f64")
        write_tensor(lines, "logits", logits.detach(), "f64")
        if r is not None:
            write_tensor(lines, "selected", idx, "int")
            write_tensor(lines, "gate", gate.detach(), "f64")
            write_tensor(lines, "router_grad", r.grad, "f64")
        write_tensor(lines, "experts_grad", e.grad, "f64")
        write_tensor(lines, "output_grad", o.grad, "f64")
        lines.append("end")
        print("%-12s loss %.6f  redraws %d" % (case["name"], loss.item(), attempt))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s (%d bytes)" % (path, os.path.getsize(path)))


if __name__ == "__main__":
    main()
