"""test_wrn_torch.py: pmoe's deep models, trained by pmoe, rebuilt in PyTorch.

Writes a tiny learnable CIFAR-10-format data set (coloured blobs, the colour
telling the class, at random places on noise), trains three deep models
with `pmoe train` for a few epochs (keeping the last checkpoint):

  wrn           model.width = 1
  pmoe_sparse   wrn_pmoe, model.moe_impl = sparse, 3x3 experts, patch 2 on
                the 8x8 group-3 map (n = 16), k = 4, l = 4, gate renorm
  pmoe_dense    the same with model.moe_impl = dense_masked

and for each run's last checkpoint:
  1. loads it with safetensors and checks every name and shape (values and
     optimizer velocities) against the spec's layout, and the metadata;
  2. rebuilds the network in PyTorch from those tensors alone (the
     independent implementation in bench/torch_wrn.py, eval mode) and
     requires its test accuracy to equal `pmoe eval --json` on the 200 test
     records;
  3. per sample: relabels 400 images (the 200 test images and 200 of pure
     noise, where decisions sit closer to the boundaries) with the torch
     model's predictions and requires `pmoe eval` on them to score 100%,
     i.e. pmoe's argmax equals torch's on every image. Accuracy alone could
     match by luck; this cannot. On a mismatch it bisects data.test_size to
     name the first image on which the two disagree.

Eval mode never sees batch norm's batch statistics or any gradient, so each
model also trains twice with one full batch of 100 (a step is then
independent of the shuffle), and torch redoes the second step from the
first checkpoint in train mode (float64): the new weights, momentum
velocities and running statistics must match the second checkpoint
(tolerances at STEP_RTOL and STATS_RTOL, with the measured evidence).
Last, bench/torch_peer.py must reproduce `pmoe bench --peer`'s first loss
for WRN-pMoE (sparse, dense_masked) and its WRN from their initial weights.

Slack: torch runs in float64 (the reference) and float32. A sample is
ambiguous when float32 and float64 torch disagree on it, when its top two
logits are within 1e-4 (relative), or when for some expert its l-th and
(l+1)-th router scores are within 1e-5 (relative): there float32 rounding
alone can move pmoe's decision. The allowed number of disagreements is the
number of ambiguous samples (normally 0, so normally exact).

Exits 77 (skipped) without torch, numpy or safetensors.
Usage: /usr/bin/python3 test_wrn_torch.py PATH/TO/pmoe
"""
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time

try:
    import numpy as np
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file
except ImportError as e:
    print(f"skipped: {e} (pip install safetensors; apt-get install python3-torch)")
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import torch_wrn  # noqa: E402

PMOE = sys.argv[1] if len(sys.argv) > 1 else sys.exit("usage: test_wrn_torch.py PATH/TO/pmoe")
TRAIN, TEST, NOISE = 300, 200, 200
BATCH, EPOCHS = 20, 3
STEPS_PER_EPOCH = TRAIN // BATCH
K, L, PATCH = 4, 4, 2  # experts, top-l, patch on the 8x8 group-3 map: n = 16

COMMON = {"data.source": "cifar10", "data.train_size": TRAIN, "data.test_size": TEST,
          "model.width": 1, "train.epochs": EPOCHS, "train.batch": BATCH, "train.lr": 0.05,
          "train.momentum": 0.9, "train.eval_every": 1000, "train.threads": 1,
          "train.checkpoint_every": STEPS_PER_EPOCH, "train.keep": 1}
MOE = {"model.type": "wrn_pmoe", "model.experts": K, "model.topl": L, "model.patch": PATCH,
       "model.expert_kernel": 3, "model.gate": "renorm"}
RUNS = {
    "wrn": {"model.type": "wrn"},
    "pmoe_sparse": dict(MOE, **{"model.moe_impl": "sparse"}),
    "pmoe_dense": dict(MOE, **{"model.moe_impl": "dense_masked"}),
}
# One full-batch step (order-free: batch-norm statistics and the mean loss do not
# depend on the shuffle), checkpointed before and after.
STEP_N = 100
STEP = {"data.train_size": STEP_N, "train.batch": STEP_N, "train.epochs": 2,
        "train.checkpoint_every": 1, "train.keep": 2}
# Weights and velocities: max |torch - pmoe| <= STEP_RTOL x the tensor's change over
# the step. Measured over the 150 tensors of the three models: median 2e-5, 90% below
# 4e-4, worst 3e-3 (WRN's group3.bn1.bias and the layers before it), where a pre-ReLU
# value within float32 rounding of 0 falls on the other side of the ReLU than in
# float64 torch (float32 torch jumps on the same tensors; the weight of that batch
# norm barely moves, its gradient there being dy x_hat with x_hat ~ 0). A wrong
# formula (tried: dense semantics for sparse, mask after the expert, bottom-l
# routing, a frozen running variance) misses by 30x to 7e4x the limit.
STEP_RTOL = 1e-2
# Running statistics: max |torch - pmoe| <= STATS_RTOL x max |value| (measured <= 9e-8;
# the biased instead of the unbiased variance would be 1.6e-5 on group 3's 8x8 maps,
# 6e-5 in the experts' B l 2x2 patches).
STATS_RTOL = 1e-6
PALETTE = np.array([[230, 25, 25], [25, 200, 25], [30, 30, 230], [230, 230, 25], [230, 25, 230],
                    [25, 220, 220], [240, 130, 20], [130, 40, 200], [250, 250, 250], [120, 80, 30]])


def make_records(rng, labels):
    """CIFAR-10 binary records: a label byte, then R, G, B planes of 32 x 32."""
    n = len(labels)
    images = rng.integers(0, 110, (n, 3, 32, 32))  # noise background
    for i, c in enumerate(labels):
        side = int(rng.integers(6, 11))
        y, x = rng.integers(0, 32 - side, 2)
        colour = np.clip(PALETTE[c] + rng.integers(-60, 61, 3), 0, 255)
        images[i, :, y:y + side, x:x + side] = colour[:, None, None] + rng.integers(-25, 26, (3, side, side))
    images = np.clip(images, 0, 255).astype(np.uint8)
    return images, np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(n, -1)], axis=1)


def write_dataset(folder, train_records, test_records):
    os.makedirs(folder, exist_ok=True)
    chunks = np.array_split(train_records, 5)
    for i, chunk in enumerate(chunks):
        with open(os.path.join(folder, f"data_batch_{i + 1}.bin"), "wb") as f:
            f.write(chunk.tobytes())
    with open(os.path.join(folder, "test_batch.bin"), "wb") as f:
        f.write(test_records.tobytes())


def train(name, settings, data, ckpt, extra=None):
    sets = {**COMMON, **settings, **(extra or {})}
    sets.update({"data.path": data, "train.checkpoint_dir": ckpt})
    cmd = [PMOE, "train", "--quiet", "--json"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    began = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    took = time.perf_counter() - began
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: pmoe train exited {proc.returncode}: {' '.join(cmd)}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), took


def checkpoints(folder):
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder))
            if f.startswith("step-") and f.endswith(".safetensors")]


def check_step(name, settings, tmp, train_images, train_labels):
    """Step 2 of a full-batch run, redone in torch (train mode, float64) from the
    step-1 checkpoint: new weights, velocities and running statistics must match
    the step-2 checkpoint. Each tensor's error is measured against the size of
    its change over the step, so a step that moved nothing cannot pass by
    being small."""
    before, after = checkpoints(os.path.join(tmp, f"step-{name}"))
    w1, w2 = load_file(before), load_file(after)
    _, model = check_checkpoint(name, settings, before, steps=1)
    lr, momentum = COMMON["train.lr"], COMMON["train.momentum"]
    net = torch_wrn.from_checkpoint(w1, model, dtype=torch.float64).train()
    x = torch.tensor(train_images[:STEP_N], dtype=torch.float64) / 255.0
    loss = torch.nn.functional.cross_entropy(net(x), torch.tensor(train_labels[:STEP_N]).long())
    loss.backward()
    worst, worst_name, failures = 0.0, "", []
    with torch.no_grad():
        for tname, t in net.checkpoint_tensors().items():
            got, old = w2[tname].double(), w1[tname].double()
            pairs = []  # (name, torch, pmoe, limit)
            if tname.endswith(("running_mean", "running_var")):
                pairs.append((tname, t.detach(), got, STATS_RTOL * float(got.abs().max())))
            elif t.requires_grad:
                grad = t.grad if t.grad is not None else torch.zeros_like(t)  # unused: no gradient
                velocity = momentum * w1[f"optimizer.velocity.{tname}"].double() + grad
                vname = f"optimizer.velocity.{tname}"
                v1, v2 = w1[vname].double(), w2[vname].double()
                pairs.append((tname, old - lr * velocity, got,
                              STEP_RTOL * float((got - old).abs().max())))
                pairs.append((vname, velocity, v2, STEP_RTOL * float((v2 - v1).abs().max())))
            for pname, want, have, limit in pairs:
                err = float((want - have).abs().max())
                ratio = err / limit if limit > 0 else (0.0 if err == 0 else float("inf"))
                if ratio > worst:
                    worst, worst_name = ratio, pname
                if ratio > 1:
                    failures.append((ratio, f"{pname}: max |torch - pmoe| {err:.3g} > limit {limit:.3g}"))
    print(f"  {name}: one training step (B = {STEP_N}, loss {float(loss):.5f}): worst error "
          f"{worst:.3f} of the limit, in {worst_name}")
    for _, f in sorted(failures, reverse=True)[:12]:  # the worst first
        print(f"  {name}: FAIL: step: {f}")
    return not failures


def check_peer(tmp, data, impl):
    """bench/torch_peer.py on `pmoe bench --peer` of WRN-pMoE (form impl) and its WRN:
    both first losses (train mode, the engine's initial weights) within its 1e-5."""
    folder = os.path.join(tmp, f"peer-{impl}")
    sets = {**COMMON, **MOE, "model.moe_impl": impl, "data.path": data, "train.batch": 8,
            "bench.warmup": 0, "bench.repeats": 1, "bench.sgemm_size": 0}
    cmd = [PMOE, "bench", "--quiet", "--peer", folder]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  peer {impl}: FAIL: pmoe bench --peer exited {proc.returncode}: {proc.stderr.strip()}")
        return False
    peer = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench", "torch_peer.py")
    proc = subprocess.run([sys.executable, peer, folder, "--check-only"], capture_output=True, text=True)
    checked = [line for line in proc.stdout.splitlines() if "relative difference" in line]
    for line in checked:
        print(f"  peer: {line}")
    if proc.returncode != 0 or len(checked) != 2 or not checked[0].startswith(f"wrn_pmoe {impl}:"):
        print(f"  peer {impl}: FAIL: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
        return False
    return True


def pmoe_eval(path, *sets):
    cmd = [PMOE, "eval", "--checkpoint", path, "--json", "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pmoe eval exited {proc.returncode}: {' '.join(cmd)}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def correct_count(result):
    return int(round(result["test_acc"] * result["test_size"]))


def check_checkpoint(name, settings, path, steps=EPOCHS * STEPS_PER_EPOCH):
    """Names, shapes, dtypes and metadata; returns (tensors, config dict)."""
    w = load_file(path)
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    model_type = settings["model.type"]
    values = torch_wrn.param_shapes(model_type, 1, 10, experts=K, patch=PATCH, expert_kernel=3)
    want = dict(values)
    for pname, shape in values.items():  # momentum > 0: a velocity per trainable tensor
        if not pname.endswith(("running_mean", "running_var")):
            want[f"optimizer.velocity.{pname}"] = shape
    got = {n: tuple(t.shape) for n, t in w.items()}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    wrong = sorted(n for n in set(want) & set(got) if want[n] != got[n])
    assert not (missing or extra or wrong), (
        f"{name}: names/shapes: missing {missing}, unexpected {extra}, "
        f"wrong shapes {[(n, got[n], want[n]) for n in wrong]}")
    assert all(t.dtype == torch.float32 for t in w.values()), f"{name}: not all float32"
    assert meta["format"] == "pmoe-checkpoint-1", meta["format"]
    assert meta["step"] == str(steps), (meta["step"], steps)
    config = torch_wrn.parse_ini(meta["config"])
    for key, value in settings.items():
        assert config[key] == str(value), f"{name}: saved config {key} = {config[key]}, set {value}"
    for n, t in w.items():
        assert torch.isfinite(t).all(), f"{name}: {n} holds non-finite values"
    for n in values:  # training reached every batch norm (running means start at 0)
        if n.endswith("running_mean"):
            assert w[n].abs().sum() > 0, f"{name}: {n} is still all zero"
    model = {"type": model_type, "experts": K, "topl": L, "patch": PATCH,
             "gate": config.get("model.gate", "renorm"), "moe_impl": config.get("model.moe_impl", "sparse")}
    return w, model


def torch_predict(w, model, images, dtype):
    """-> (predictions, logits, route margin per sample or None); eval mode, no grad."""
    net = torch_wrn.from_checkpoint(w, model, dtype=dtype).eval()
    x = torch.tensor(images, dtype=dtype) / 255.0
    with torch.no_grad():
        logits = net(x)
        margin = None
        if model["type"] == "wrn_pmoe" and L < (32 // 4 // PATCH) ** 2:
            _, _, scores, _ = net.moe.route(net.features(x))
            ordered = torch.sort(scores, dim=2, descending=True).values  # B x k x n
            gap = (ordered[:, :, L - 1] - ordered[:, :, L]).min(dim=1).values
            margin = gap / (1 + scores.abs().amax(dim=(1, 2)))
    return logits.argmax(1).numpy(), logits.double(), margin


def ambiguous(w, model, images):
    """Torch's float64 predictions, and a mask of samples float32 rounding could flip."""
    pred64, logits, route64 = torch_predict(w, model, images, torch.float64)
    pred32, _, _ = torch_predict(w, model, images, torch.float32)
    top2 = logits.topk(2, dim=1).values
    fragile = ((top2[:, 0] - top2[:, 1]) / (1 + logits.abs().amax(1)) < 1e-4).numpy()
    fragile |= pred32 != pred64
    if route64 is not None:
        fragile |= (route64 < 1e-5).numpy()
    return pred64, fragile, logits


def first_disagreement(path, folder, total):
    """The smallest m such that pmoe misses a torch label among the first m images."""
    lo, hi = 1, total
    while lo < hi:
        mid = (lo + hi) // 2
        r = pmoe_eval(path, f"data.path={folder}", f"data.test_size={mid}")
        if correct_count(r) < mid:
            hi = mid
        else:
            lo = mid + 1
    return lo - 1  # the image's index


def check_run(name, settings, tmp, data, test_images, test_labels, noise_images):
    path = checkpoints(os.path.join(tmp, f"ckpt-{name}"))[-1]
    w, model = check_checkpoint(name, settings, path)
    began = time.perf_counter()

    # 2. the genuine test set: the same accuracy
    pred, fragile, _ = ambiguous(w, model, test_images)
    torch_correct = int((pred == test_labels).sum())
    ev = pmoe_eval(path)
    assert ev["test_size"] == TEST, ev
    pmoe_correct = correct_count(ev)
    slack = int(fragile.sum())
    print(f"  {name}: test accuracy: torch {torch_correct}/{TEST}, pmoe eval {pmoe_correct}/{TEST}"
          f" ({slack} ambiguous)")
    ok = abs(torch_correct - pmoe_correct) <= slack
    if pmoe_correct <= 2 * TEST // 10:
        print(f"  {name}: FAIL: pmoe did not learn (accuracy {pmoe_correct}/{TEST}): the check is weak")
        ok = False

    # 3. every sample: labels = torch's decisions, so pmoe must score 100%
    images = np.concatenate([test_images, noise_images])
    pred_all, fragile_all, logits_all = ambiguous(w, model, images)
    folder = os.path.join(tmp, f"relabelled-{name}")
    os.makedirs(folder, exist_ok=True)
    for i in range(1, 6):
        target = os.path.join(folder, f"data_batch_{i}.bin")
        if not os.path.exists(target):
            os.symlink(os.path.join(data, f"data_batch_{i}.bin"), target)
    records = np.concatenate([pred_all.astype(np.uint8)[:, None], images.reshape(len(images), -1)], axis=1)
    with open(os.path.join(folder, "test_batch.bin"), "wb") as f:
        f.write(records.astype(np.uint8).tobytes())
    n = len(images)
    ev = pmoe_eval(path, f"data.path={folder}", f"data.test_size={n}")
    agree = correct_count(ev)
    slack_all = int(fragile_all.sum())
    counts = np.bincount(pred_all, minlength=10)
    print(f"  {name}: per sample: pmoe agrees with torch on {agree}/{n} images "
          f"({slack_all} ambiguous; torch's classes {counts.tolist()})")
    if n - agree > slack_all:
        ok = False
        i = first_disagreement(path, folder, n)
        print(f"  {name}: FAIL: first disagreement on image {i} "
              f"({'test' if i < TEST else 'noise'}): torch (float64) predicts {pred_all[i]}, "
              f"logits {np.array2string(logits_all[i].numpy(), precision=4)}")
    print(f"  {name}: torch + pmoe eval checks took {time.perf_counter() - began:.1f} s")
    return ok


def main():
    torch.set_num_threads(2)
    rng = np.random.default_rng(2024)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "cifar")
        train_labels = rng.integers(0, 10, TRAIN)
        test_labels = rng.integers(0, 10, TEST)
        train_images, train_records = make_records(rng, train_labels)
        test_images, test_records = make_records(rng, test_labels)
        noise_images = rng.integers(0, 256, (NOISE, 3, 32, 32)).astype(np.uint8)
        write_dataset(data, train_records, test_records)

        # two trainings at a time, one thread each (2 cores); pmoe is bit-identical for any thread count
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            jobs = {}
            for name, settings in RUNS.items():
                jobs[name] = pool.submit(train, name, settings, data, os.path.join(tmp, f"ckpt-{name}"))
                jobs[f"{name} step"] = pool.submit(train, name, settings, data,
                                                   os.path.join(tmp, f"step-{name}"), STEP)
            for name, job in jobs.items():
                result, took = job.result()
                what = "2 full-batch steps" if name.endswith("step") else f"{EPOCHS} epochs of {TRAIN}"
                print(f"  {name}: pmoe train: {what} in {took:.1f} s, "
                      f"final test accuracy {result.get('test_acc', float('nan')):.3f}")
        passed = failed = 0
        for name, settings in RUNS.items():
            for check in (lambda: check_step(name, settings, tmp, train_images, train_labels),
                          lambda: check_run(name, settings, tmp, data, test_images, test_labels,
                                            noise_images)):
                if check():
                    passed += 1
                else:
                    failed += 1
        for impl in ("sparse", "dense_masked"):
            if check_peer(tmp, data, impl):
                passed += 1
            else:
                failed += 1
    print(f"test_wrn_torch: {passed} passed, {failed} failed ({time.perf_counter() - began:.0f} s)")
    sys.exit(1 if failed else 0)


main()
