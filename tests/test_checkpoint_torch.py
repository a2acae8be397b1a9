"""test_checkpoint_torch.py: a pmoe checkpoint opens in PyTorch.

Trains a small pMoE on a tiny IDX data set with pmoe, loads the checkpoint
with the safetensors package into torch tensors, checks every name, shape
and the metadata, rebuilds the two-layer model's forward pass in PyTorch from
those tensors, and requires its test accuracy to equal what `pmoe eval`
reports for the same checkpoint. Exits 77 (skipped) without torch or
safetensors. Usage: /usr/bin/python3 test_checkpoint_torch.py PATH/TO/pmoe
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file
except ImportError as e:
    print(f"skipped: {e} (pip install safetensors; apt-get install python3-torch)")
    sys.exit(77)

PMOE = sys.argv[1]
K, L, M, P = 4, 3, 12, 7  # experts, top-l, hidden, patch: n = 16 patches of d = 49


def write_idx(folder, prefix, images, labels):
    n = len(labels)
    with open(os.path.join(folder, f"{prefix}-images-idx3-ubyte"), "wb") as f:
        f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, n, 28, 28) + images.astype(np.uint8).tobytes())
    with open(os.path.join(folder, f"{prefix}-labels-idx1-ubyte"), "wb") as f:
        f.write(struct.pack(">BBBBI", 0, 0, 8, 1, n) + labels.astype(np.uint8).tobytes())


def forward(w, images):
    """The two-layer pMoE of eq. 1: returns logits, B x 10."""
    x = torch.tensor(images, dtype=torch.float64) / 255.0
    B = x.shape[0]
    patches = x.reshape(B, 4, P, 4, P).permute(0, 1, 3, 2, 4).reshape(B, 16, P * P)
    router = w["router.weight"].double()                       # k x d
    scores = patches @ router.T                                 # B x n x k
    logits = torch.zeros(B, 10, dtype=torch.float64)
    for s in range(K):
        sc = scores[:, :, s]
        top = torch.topk(sc, L, dim=1).indices                   # ties are not an issue on random data
        gate = torch.softmax(torch.gather(sc, 1, top), dim=1)    # renormalised over the l picks
        chosen = torch.gather(patches, 1, top[:, :, None].expand(B, L, P * P))
        hidden = torch.relu(chosen @ w[f"experts.{s}.weight"].double().T)   # B x l x h
        a = w[f"experts.{s}.output"].double()                   # h x c
        logits += ((gate[:, :, None] * hidden) @ a).sum(1) / L
    return logits


def main():
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as tmp:
        for prefix, n in (("train", 200), ("t10k", 100)):
            labels = rng.integers(0, 10, n)
            images = rng.integers(0, 40, (n, 28, 28))
            images[np.arange(n), labels, :] = 255  # a learnable hint
            write_idx(tmp, prefix, images, labels)
        ckpt = os.path.join(tmp, "ckpt")
        sets = ["data.source=idx", f"data.path={tmp}", "data.train_size=200", "data.test_size=100",
                f"model.experts={K}", f"model.topl={L}", f"model.hidden={M}", f"model.patch={P}",
                "train.epochs=30", "train.checkpoint_every=300", "model.expert_init_std=0.1", f"train.checkpoint_dir={ckpt}"]
        args = [PMOE, "train", "--quiet"] + [a for s in sets for a in ("--set", s)]
        subprocess.run(args, check=True)
        path = os.path.join(ckpt, "step-000000300.safetensors")
        w = load_file(path)
        want = {"router.weight": (K, 49)}
        for s in range(K):
            want[f"experts.{s}.weight"] = (M // K, 49)
            want[f"experts.{s}.output"] = (M // K, 10)
        got = {name: tuple(t.shape) for name, t in w.items()}
        assert got == want, f"names and shapes: {got} != {want}"
        assert all(t.dtype == torch.float32 for t in w.values())
        with safe_open(path, framework="pt") as f:
            meta = f.metadata()
        assert meta["format"] == "pmoe-checkpoint-1" and meta["step"] == "300", meta
        assert "[model]" in meta["config"] and "experts = 4" in meta["config"]

        ev = subprocess.run([PMOE, "eval", "--checkpoint", path, "--json", "--quiet"],
                            check=True, capture_output=True, text=True)
        pmoe_acc = json.loads(ev.stdout.splitlines()[-1])["test_acc"]
        with open(os.path.join(tmp, "t10k-images-idx3-ubyte"), "rb") as f:
            test_images = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 28, 28)
        with open(os.path.join(tmp, "t10k-labels-idx1-ubyte"), "rb") as f:
            test_labels = np.frombuffer(f.read()[8:], np.uint8)
        pred = forward(w, test_images).argmax(1).numpy()
        torch_acc = float((pred == test_labels).mean())
        print(f"  torch accuracy {torch_acc:.3f}, pmoe eval {pmoe_acc:.3f}")
        # Well above chance (0.1), so weights read wrongly could not match by luck;
        # one sample of slack for a float32/float64 near-tie.
        assert pmoe_acc > 0.3, f"the model did not learn ({pmoe_acc}): the check would be weak"
        assert abs(torch_acc - pmoe_acc) <= 0.01 + 1e-9, (torch_acc, pmoe_acc)
    print("test_checkpoint_torch: 1 passed, 0 failed")


main()
