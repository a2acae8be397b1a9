#!/usr/bin/env python3
"""make_corpus.py: writes the fuzz seed corpus, tests/fuzz/corpus/<target>/.

Each seed is a small valid input or a valid input broken in one way, so the
fuzzer starts from every branch of the format. The files are committed;
rerun this after a format change. Run from anywhere: python3 make_corpus.py
"""
import gzip
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def idx(dims, data, type_byte=0x08):
    return bytes([0, 0, type_byte, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + data


def idx_seeds():
    labels = idx([6], bytes([0, 1, 2, 9, 3, 7]))
    images = idx([2, 3, 4], bytes(range(24)))
    write("idx", "labels", labels)
    write("idx", "images", images)
    write("idx", "images.gz", gzip.compress(images, mtime=0))
    write("idx", "labels.gz", gzip.compress(labels, mtime=0))
    write("idx", "truncated", images[:-5])
    write("idx", "trailing", images + b"xx")
    write("idx", "bad_label", idx([3], bytes([1, 10, 255])))
    write("idx", "huge_promise", idx([2048, 1024, 1024], b""))
    write("idx", "two_members.gz", gzip.compress(labels, mtime=0) + gzip.compress(b"z", mtime=0))


def cifar_record(label, seed):
    return bytes([label]) + bytes((seed * 31 + i * 7) & 0xFF for i in range(3072))


def cifar_seeds():
    write("cifar", "one", cifar_record(3, 1))
    write("cifar", "two", cifar_record(0, 2) + cifar_record(9, 3))
    write("cifar", "bad_label", cifar_record(4, 4) + cifar_record(10, 5))
    write("cifar", "short", cifar_record(1, 6)[:-1])
    write("cifar", "long", cifar_record(1, 7) + b"\x05")
    write("cifar", "label_only", b"\x07")


def config_seeds():
    write("config", "full.ini", """[data]
source = cifar10
path = /data/cifar-10-batches-bin
train_size = 500
test_size = 100
seed = 3
pos_class = 1
neg_class = 0
grid = 4
synthetic_patches = 16
synthetic_dim = 64
synthetic_clusters = 8
delta_d = 0
delta_r = 0.2
noise = 0.1

[model]
type = pmoe
experts = 8
topl = 6
hidden = 40
patch = 0
gate = softmax_all
output_init = sign
train_output = true
expert_init_std = 0.01
router_init_std = -1

[train]
mode = separate
epochs = 2
batch = 20
lr = 0.2
momentum = 0.9
weight_decay = 1e-4
seed = 1
threads = 0
device = cuda:0
router_epochs = 1
router_batch = 20
router_lr = 0.2
router_size = 0
eval_every = 1
fault_nan_step = 0
checkpoint_every = 100
keep = 3
checkpoint_dir = ckpt
on_nonfinite = skip
""")
    write("config", "comments.ini", "\ufeff; comment\n# another\n[model]\n  experts = 2 ; inline\r\nhidden=4\n")
    write("config", "errors.ini", "[data]\nsource = bad\n[nosuch]\nx = 1\nnot a line\n[unterminated\n")
    write("config", "continuation.ini", "[data]\npath = /a\n\n  train_size = 5\n")
    write("config", "ranges.ini", "[train]\nlr = 1e400\nepochs = -1\nseed = 99999999999999999999\n[data]\nnoise = nan\n")
    write("config", "set_assignment", "model.topl=3")
    write("config", "long_line.ini", "[data]\npath = /" + "p" * 240 + "\n")


def safetensors(header, data=b""):
    text = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + data


def f32(*values):
    return struct.pack("<%df" % len(values), *values)


def safetensors_seeds():
    good = {
        "__metadata__": {"config": "[model]\nexperts = 2\n", "step": "37"},
        "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [16, 20]},
        "empty": {"dtype": "F32", "shape": [0, 3], "data_offsets": [20, 20]},
    }
    write("safetensors", "good", safetensors(good, f32(1, 2, 3, 4, 5)))
    write("safetensors", "empty_header", safetensors({}))
    write("safetensors", "overlap", safetensors(
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
         "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, f32(1, 2)))
    write("safetensors", "gap", safetensors(
        {"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, f32(1, 2)))
    write("safetensors", "wrong_dtype", safetensors(
        {"a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}}, f32(1)))
    write("safetensors", "bad_json", struct.pack("<Q", 9) + b'{"a":[1,]' + f32(0))
    write("safetensors", "length_too_big", struct.pack("<Q", 1 << 40) + b"{}")
    write("safetensors", "metadata_number", safetensors({"__metadata__": {"k": 1}}))


def checkpoint(config, **position):
    meta = {"format": "pmoe-checkpoint-1", "config": config, "phase": "main", "epoch": "2",
            "next_batch": "3", "step": "13", "router_steps": "0", "skipped_steps": "0",
            "epoch_loss_sum": "20.5", "epoch_correct_sum": "25",
            "run_id": "0123456789abcdef0123456789abcdef"}
    meta.update(position)
    return safetensors({"__metadata__": meta,
                        "router.weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                       f32(1, 2))


def checkpoint_seeds():
    # 100 samples (the target's training set), batch 10: 10 batches an epoch.
    joint = "[train]\nepochs = 3\nbatch = 10\n"
    separate = ("[train]\nmode = separate\nepochs = 3\nbatch = 10\nrouter_epochs = 2\n"
                "router_batch = 25\n")
    write("checkpoint", "main", checkpoint(joint))
    write("checkpoint", "finished", checkpoint(joint, epoch="4", next_batch="0", step="30",
                                               epoch_loss_sum="0", epoch_correct_sum="0"))
    write("checkpoint", "router", checkpoint(separate, phase="router", epoch="2", next_batch="1",
                                             step="5", epoch_loss_sum="-3.5", epoch_correct_sum="0"))
    write("checkpoint", "after_router", checkpoint(separate, router_steps="8", skipped_steps="2"))
    write("checkpoint", "epoch_2p31", checkpoint(joint, epoch="2147483648"))
    write("checkpoint", "step_max", checkpoint(joint, step="9223372036854775807",
                                               router_steps="9223372036854775807"))
    write("checkpoint", "signs", checkpoint(joint, epoch="+2", next_batch="-1", step=" 13"))
    write("checkpoint", "no_run_id", checkpoint(joint, run_id="x"))


def image_seeds():
    """Small PNG (RGB, gray, palette, alpha) and JPEG (baseline, gray,
    progressive) files; needs Pillow (Debian: python3-pil), else skipped."""
    try:
        from PIL import Image
    except ImportError:
        print("make_corpus: no Pillow: the image seeds are left as they are")
        return
    import io
    import random
    random.seed(3)
    im = Image.new("RGB", (12, 9))
    im.putdata([tuple(random.randrange(256) for _ in range(3)) for _ in range(108)])
    for name, image, fmt, options in (
            ("rgb.png", im, "PNG", {}), ("rgb.jpg", im, "JPEG", {"quality": 90}),
            ("gray.png", im.convert("L"), "PNG", {}), ("gray.jpg", im.convert("L"), "JPEG", {}),
            ("palette.png", im.convert("P"), "PNG", {}), ("alpha.png", im.convert("RGBA"), "PNG", {}),
            ("progressive.jpg", im, "JPEG", {"progressive": True})):
        out = io.BytesIO()
        image.save(out, fmt, **options)
        write("image", name, out.getvalue())


if __name__ == "__main__":
    idx_seeds()
    cifar_seeds()
    config_seeds()
    safetensors_seeds()
    checkpoint_seeds()
    image_seeds()
