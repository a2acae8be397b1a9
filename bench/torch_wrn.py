"""torch_wrn.py: pmoe's deep models (WRN and WRN-pMoE, spec section 4) in PyTorch.

An independent second implementation, written from the spec and the
semantics pmoe documents (src/host/model/wrn.c, moe_conv.h), not from its
code: tests/test_wrn_torch.py holds a trained pmoe checkpoint's test
accuracy against it, and bench/torch_peer.py can time it beside pmoe.
Every module is built from a dict of tensors named as a pmoe checkpoint
names them ("conv0.weight", "group1.bn1.running_var", "moe.router.weight",
"head.fc.bias", ...), so one file both loads checkpoints and starts from
the engine's initial weights. Importable; no command line
(bench/torch_gpu_peer.py times it on a GPU, from initial_weights(...,
device="cuda")).

Conventions it mirrors: NCHW float32; convolutions without bias and with
zero padding (kernel - 1) / 2; batch norm eps 1e-5, momentum 0.1, running
variance updated with the unbiased batch variance (torch's own rule), eval
on the running statistics. Patches are p x p, flattened (c, y, x), patch j
row-major over the grid. Each router keeps its l best patches per sample,
best first, ties to the lower index (a stable descending sort: torch.topk
promises no order among ties).
"""
import torch
import torch.nn.functional as F

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def param_shapes(model_type, width, classes, experts=4, patch=1, expert_kernel=3):
    """The names and shapes a pmoe checkpoint holds for this model (values only,
    no optimizer state), in the engine's order. The pMoE layer's routed map
    has C = 64 width channels."""
    shapes = {}

    def bn(name, c):
        for field in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{field}"] = (c,)

    def block(group, cin, c, stride):
        bn(f"{group}.bn1", cin)
        shapes[f"{group}.conv1.weight"] = (c, cin, 3, 3)
        bn(f"{group}.bn2", c)
        shapes[f"{group}.conv2.weight"] = (c, c, 3, 3)
        if cin != c or stride != 1:
            shapes[f"{group}.shortcut.weight"] = (c, cin, 1, 1)

    w = width
    shapes["conv0.weight"] = (16, 3, 3, 3)
    block("group1", 16, 16 * w, 1)
    block("group2", 16 * w, 32 * w, 2)
    C = 64 * w
    if model_type == "wrn":
        block("group3", 32 * w, C, 2)
    else:
        bn("group3.bn1", 32 * w)
        shapes["group3.conv1.weight"] = (C, 32 * w, 3, 3)
        k, r = experts, expert_kernel
        shapes["moe.router.weight"] = (k, C * patch * patch)
        for field in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"moe.experts.bn.{field}"] = (k, C)
        shapes["moe.experts.conv.weight"] = (k, C // k, C, r, r)
    bn("head.bn", C)
    shapes["head.fc.weight"] = (classes, C)
    shapes["head.fc.bias"] = (classes,)
    return shapes


def initial_weights(model_type, width, classes, experts=4, patch=1, expert_kernel=3,
                    device="cpu", seed=1):
    """Fresh weights under param_shapes' names, made on `device` ("cpu", "cuda",
    "cuda:N"): convolutions and the router He-normal over their fan-in, batch
    norm scale 1, shift 0, running mean 0, variance 1, the classifier uniform
    over +-1/sqrt(fan-in). For timing a model without a pmoe checkpoint: not
    pmoe's initial values (its RNG is its own), only their scales."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in param_shapes(model_type, width, classes, experts, patch, expert_kernel).items():
        if name.endswith(("bn1.weight", "bn2.weight", "bn.weight", "running_var")):
            t = torch.ones(shape)
        elif name.endswith(("bias", "running_mean")) and not name.startswith("head.fc"):
            t = torch.zeros(shape)
        elif name.startswith("head.fc"):
            bound = 1.0 / shape[-1] ** 0.5 if name.endswith("weight") else 1.0 / (64 * width) ** 0.5
            t = (torch.rand(shape, generator=gen) * 2 - 1) * bound
        else:
            fan_in = 1
            for d in shape[-3:] if len(shape) >= 4 else shape[-1:]:
                fan_in *= d
            t = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
        out[name] = t.to(device)
    return out


def _tensor(weights, name, dtype):
    return weights[name].detach().to(dtype).clone()


class BatchNorm(torch.nn.BatchNorm2d):
    def __init__(self, weights, name, dtype):
        w = weights[f"{name}.weight"]
        super().__init__(w.shape[0], eps=BN_EPS, momentum=BN_MOMENTUM)
        self.to(dtype)
        with torch.no_grad():
            for field in ("weight", "bias", "running_mean", "running_var"):
                getattr(self, field).copy_(weights[f"{name}.{field}"].to(dtype))


def _conv(weights, name, stride, dtype):
    w = weights[f"{name}.weight"]
    conv = torch.nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], stride=stride,
                           padding=(w.shape[2] - 1) // 2, bias=False)
    conv.to(dtype)
    with torch.no_grad():
        conv.weight.copy_(w.to(dtype))
    return conv


class Block(torch.nn.Module):
    """Pre-activation: a1 = ReLU(bn1(x)); out = conv2(ReLU(bn2(conv1(a1)))) + shortcut,
    the shortcut x itself or a 1x1 convolution of a1 when the shape changes."""

    def __init__(self, weights, group, stride, dtype):
        super().__init__()
        self.bn1 = BatchNorm(weights, f"{group}.bn1", dtype)
        self.conv1 = _conv(weights, f"{group}.conv1", stride, dtype)
        self.bn2 = BatchNorm(weights, f"{group}.bn2", dtype)
        self.conv2 = _conv(weights, f"{group}.conv2", 1, dtype)
        has_shortcut = f"{group}.shortcut.weight" in weights
        self.shortcut = _conv(weights, f"{group}.shortcut", stride, dtype) if has_shortcut else None

    def forward(self, x):
        a1 = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(a1))))
        return out + (self.shortcut(a1) if self.shortcut is not None else x)


def patches_of(x, p):
    """B x C x H x W -> B x n x (C p p): patch j row-major over the grid, flattened (c, y, x)."""
    B, C, H, W = x.shape
    t = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)
    return t.reshape(B, (H // p) * (W // p), C * p * p)


def map_of(patches, C, H, W, p):
    """The inverse of patches_of."""
    B = patches.shape[0]
    t = patches.reshape(B, H // p, W // p, C, p, p).permute(0, 3, 1, 4, 2, 5)
    return t.reshape(B, C, H, W)


def top_l(scores, l):
    """scores B x k x n -> (picks, values), each B x k x l: best first, ties to the lower index."""
    values, order = torch.sort(scores, dim=2, descending=True, stable=True)
    return order[:, :, :l], values[:, :, :l]


def _upsample(grid_values, gh, gw, p):
    """B x n (row-major over a gh x gw grid) -> B x 1 x (gh p) x (gw p), each value over its patch."""
    B = grid_values.shape[0]
    g = grid_values.reshape(B, 1, gh, 1, gw, 1).expand(B, 1, gh, p, gw, p)
    return g.reshape(B, 1, gh * p, gw * p)


class PMoEConv(torch.nn.Module):
    """The pMoE convolution layer on a B x C x H x W map (moe_conv.h).

    sparse: expert s runs BN -> ReLU -> conv (C -> C/k, r x r, zero padding
    inside the p x p patch) on its B l picked patches only, as a batch of
    B l small maps (batch norm's statistics over them); each output patch,
    times its gate, lands at its position in channels [s C/k, (s+1) C/k) of
    an otherwise zero map.
    dense_masked: expert s runs on the whole map x times its 0/1 mask
    (batch norm over all B H W positions, the convolution crossing patch
    borders), its output times the gate map (the gate on its picks, 0
    elsewhere) filling the same channel block.
    """

    def __init__(self, weights, experts, topl, patch, gate, impl, dtype, prefix="moe"):
        super().__init__()
        assert impl in ("sparse", "dense_masked"), impl
        assert gate in ("renorm", "softmax_all", "ones"), gate
        self.k, self.l, self.p, self.gate, self.impl = experts, topl, patch, gate, impl
        self.router = torch.nn.Parameter(_tensor(weights, f"{prefix}.router.weight", dtype),
                                         requires_grad=gate != "ones")
        self.bn_weight = torch.nn.Parameter(_tensor(weights, f"{prefix}.experts.bn.weight", dtype))
        self.bn_bias = torch.nn.Parameter(_tensor(weights, f"{prefix}.experts.bn.bias", dtype))
        self.register_buffer("running_mean", _tensor(weights, f"{prefix}.experts.bn.running_mean", dtype))
        self.register_buffer("running_var", _tensor(weights, f"{prefix}.experts.bn.running_var", dtype))
        self.conv = torch.nn.Parameter(_tensor(weights, f"{prefix}.experts.conv.weight", dtype))
        self.last_picks = None  # B x k x l, for callers that inspect the routing

    def route(self, x):
        """-> picks (B x k x l), gate (B x k x l), scores (B x k x n), patches (B x n x d)."""
        P = patches_of(x, self.p)
        scores = (P @ self.router.t()).transpose(1, 2)  # B x k x n
        picks, top = top_l(scores, self.l)
        if self.gate == "renorm":
            g = torch.softmax(top, dim=2)
        elif self.gate == "softmax_all":
            g = torch.softmax(scores, dim=2).gather(2, picks)
        else:
            g = torch.ones_like(top)
        return picks, g, scores, P

    def expert(self, s, x):
        """BN -> ReLU -> conv of expert s on maps x (rows x C x h x w)."""
        r = self.conv.shape[-1]
        # running_mean[s] is a view: torch updates it in place in training mode
        normed = F.batch_norm(x, self.running_mean[s], self.running_var[s], self.bn_weight[s],
                              self.bn_bias[s], self.training, BN_MOMENTUM, BN_EPS)
        return F.conv2d(torch.relu(normed), self.conv[s], padding=(r - 1) // 2)

    def forward(self, x):
        B, C, H, W = x.shape
        k, l, p = self.k, self.l, self.p
        e = C // k
        picks, g, _, P = self.route(x)
        self.last_picks = picks.detach()
        n = P.shape[1]
        if self.impl == "sparse":
            blocks = []
            for s in range(k):
                index = picks[:, s, :]  # B x l
                rows = P.gather(1, index.unsqueeze(2).expand(B, l, P.shape[2]))  # B x l x d
                out = self.expert(s, rows.reshape(B * l, C, p, p))  # (B l) x e x p x p
                out = out.reshape(B, l, e * p * p) * g[:, s, :].unsqueeze(2)
                placed = torch.zeros(B, n, e * p * p, dtype=x.dtype, device=x.device)
                blocks.append(placed.scatter(1, index.unsqueeze(2).expand(B, l, e * p * p), out))
            y = torch.stack(blocks, dim=2)  # B x n x k x (e p p): channel block s is expert s
            return map_of(y.reshape(B, n, C * p * p), C, H, W, p)
        gh, gw = H // p, W // p
        outs = []
        for s in range(k):
            mask = torch.zeros(B, n, dtype=x.dtype, device=x.device).scatter(
                1, picks[:, s, :], 1.0)
            gate_map = torch.zeros(B, n, dtype=x.dtype, device=x.device).scatter(
                1, picks[:, s, :], g[:, s, :])
            out = self.expert(s, x * _upsample(mask, gh, gw, p))  # B x e x H x W
            outs.append(out * _upsample(gate_map, gh, gw, p))
        return torch.cat(outs, dim=1)


class WRN(torch.nn.Module):
    """model.type = wrn or wrn_pmoe from a checkpoint's tensors; returns the logits."""

    def __init__(self, weights, model_type, experts=4, topl=1, patch=1, gate="renorm",
                 moe_impl="sparse", dtype=torch.float32):
        super().__init__()
        assert model_type in ("wrn", "wrn_pmoe"), model_type
        self.model_type = model_type
        self.conv0 = _conv(weights, "conv0", 1, dtype)
        self.group1 = Block(weights, "group1", 1, dtype)
        self.group2 = Block(weights, "group2", 2, dtype)
        if model_type == "wrn":
            self.group3 = Block(weights, "group3", 2, dtype)
        else:
            self.group3_bn1 = BatchNorm(weights, "group3.bn1", dtype)
            self.group3_conv1 = _conv(weights, "group3.conv1", 2, dtype)
            self.moe = PMoEConv(weights, experts, topl, patch, gate, moe_impl, dtype)
        self.head_bn = BatchNorm(weights, "head.bn", dtype)
        self.fc = torch.nn.Linear(weights["head.fc.weight"].shape[1], weights["head.fc.weight"].shape[0])
        self.fc.to(dtype)
        with torch.no_grad():
            self.fc.weight.copy_(weights["head.fc.weight"].to(dtype))
            self.fc.bias.copy_(weights["head.fc.bias"].to(dtype))

    def features(self, images):
        """The map the pMoE layer routes (wrn_pmoe) or group 3's output (wrn)."""
        x = self.group2(self.group1(self.conv0(images)))
        if self.model_type == "wrn":
            return self.group3(x)
        return self.group3_conv1(torch.relu(self.group3_bn1(x)))

    def checkpoint_tensors(self):
        """{pmoe checkpoint name: this model's parameter or buffer}, the same
        storage (so it reads the current values, and writing to it writes them)."""
        out = {"conv0.weight": self.conv0.weight}

        def bn(name, m):
            for field in ("weight", "bias", "running_mean", "running_var"):
                out[f"{name}.{field}"] = getattr(m, field)

        groups = [("group1", self.group1), ("group2", self.group2)]
        if self.model_type == "wrn":
            groups.append(("group3", self.group3))
        for name, g in groups:
            bn(f"{name}.bn1", g.bn1)
            out[f"{name}.conv1.weight"] = g.conv1.weight
            bn(f"{name}.bn2", g.bn2)
            out[f"{name}.conv2.weight"] = g.conv2.weight
            if g.shortcut is not None:
                out[f"{name}.shortcut.weight"] = g.shortcut.weight
        if self.model_type == "wrn_pmoe":
            bn("group3.bn1", self.group3_bn1)
            out["group3.conv1.weight"] = self.group3_conv1.weight
            out["moe.router.weight"] = self.moe.router
            out["moe.experts.bn.weight"] = self.moe.bn_weight
            out["moe.experts.bn.bias"] = self.moe.bn_bias
            out["moe.experts.bn.running_mean"] = self.moe.running_mean
            out["moe.experts.bn.running_var"] = self.moe.running_var
            out["moe.experts.conv.weight"] = self.moe.conv
        bn("head.bn", self.head_bn)
        out["head.fc.weight"] = self.fc.weight
        out["head.fc.bias"] = self.fc.bias
        return out

    def forward(self, images):
        x = self.features(images)
        if self.model_type == "wrn_pmoe":
            x = self.moe(x)
        x = torch.relu(self.head_bn(x)).mean(dim=(2, 3))
        return self.fc(x)


def from_checkpoint(weights, config, dtype=torch.float32):
    """A WRN from a checkpoint's tensors and the model settings of its config
    (a dict with type, experts, topl, gate, moe_impl; patch is the pMoE
    layer's patch on the group-3 map)."""
    return WRN(weights, config["type"], experts=config.get("experts", 4), topl=config.get("topl", 1),
               patch=config.get("patch", 1), gate=config.get("gate", "renorm"),
               moe_impl=config.get("moe_impl", "sparse"), dtype=dtype)


def parse_ini(text):
    """pmoe's INI config text (a checkpoint's 'config' metadata) -> {"section.key": "value"}."""
    out, section = {}, ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif "=" in line:
            key, value = line.split("=", 1)
            out[f"{section}.{key.strip()}"] = value.strip()
    return out
