#!/usr/bin/python3
"""plot_metrics.py: PNG curves from the per-epoch JSON log of `pmoe train --log FILE`.

    /usr/bin/python3 tools/plot_metrics.py LOG.jsonl --out DIR

Each line of the log is one epoch: phase ("router" or "main"), epoch,
train_loss, train_acc, test_acc, router_recall, expert_recall [k], and where
the model routes expert_load_position [k][n] and expert_load_class [k][c]
(picks over the test set) with load_samples, and phase_seconds {name: s}.
Every field but phase, epoch and train_loss may be absent or null; a figure
whose data is absent is not written (and the script says so).

Written to DIR:
  loss.png           training loss per epoch (router phase, then main phase)
  accuracy.png       train and test accuracy
  recall.png         router recall and each expert's recall
  expert_load.png    per expert, over epochs: how concentrated its picks are
                     on a few positions (normalised entropy of its position
                     counts, 1 = spread evenly) and the share of samples in
                     which it picks its favourite position
  load_position.png  final epoch: per expert, the share of test samples in
                     which it picks each position, on the patch grid (--grid
                     RxC, else the log's grid_rows x grid_cols, else square
                     when the count is a square, else one row)
  phase_seconds.png  seconds per step phase, per epoch (from the phase timers)

A resumed run appends to its log; where an epoch appears twice the later
line wins. matplotlib comes from Debian's python3-matplotlib.
"""
import argparse
import json
import math
import os
import sys

PROG = "plot_metrics"


def fail(message, code=1):
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(code)


def read_log(path):
    """The epochs in order (router phase first), one dict each; a later
    line for the same (phase, epoch) replaces an earlier one."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        fail(f"{path}: cannot read: {e.strerror}")
    epochs = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            fail(f"{path}:{number}: not JSON ({e.msg} at column {e.colno})")
        if not isinstance(entry, dict) or "epoch" not in entry or "train_loss" not in entry:
            fail(f"{path}:{number}: not an epoch record (needs 'epoch' and 'train_loss')")
        phase = entry.get("phase", "main")
        epochs[(0 if phase == "router" else 1, int(entry["epoch"]))] = entry
    if not epochs:
        fail(f"{path}: no epochs in the log")
    return [epochs[key] for key in sorted(epochs)]


def number(value):
    """A measure, or NaN where the log has null or nothing (matplotlib leaves a gap)."""
    return float(value) if isinstance(value, (int, float)) else math.nan


def grid_shape(n, entry, forced):
    """The patch grid of n positions: --grid, else the log's grid_rows and
    grid_cols, else square when n is a square, else one row."""
    for rows, cols in (forced or (0, 0), (entry.get("grid_rows") or 0, entry.get("grid_cols") or 0)):
        if rows * cols == n and rows > 0:
            return rows, cols
    side = int(round(math.sqrt(n)))
    return (side, side) if side * side == n else (1, n)


class Plotter:
    def __init__(self, plt, ticker, epochs, out_dir, grid=None):
        self.plt = plt
        self.grid = grid
        self.ticker = ticker
        self.epochs = epochs
        self.out_dir = out_dir
        self.written = []
        # One x axis through both phases: router epochs first, then main epochs.
        self.x = list(range(1, len(epochs) + 1))
        self.router_count = sum(1 for e in epochs if e.get("phase") == "router")

    def axes_common(self, ax, ylabel):
        ax.set_xlabel("epoch" if not self.router_count else
                      f"epoch (router phase: 1-{self.router_count}, then the main phase)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(self.ticker.MaxNLocator(integer=True))
        if self.router_count and self.router_count < len(self.epochs):
            ax.axvspan(0.5, self.router_count + 0.5, color="0.9", zorder=0, label="router phase")

    def save(self, fig, name):
        path = os.path.join(self.out_dir, name)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        self.plt.close(fig)
        self.written.append(path)

    def series(self, key):
        return [number(e.get(key)) for e in self.epochs]

    def loss(self):
        """The main phase's loss; the router phase's linear loss (negative,
        another scale) in a panel of its own above it."""
        losses = self.series("train_loss")
        parts = [(name, [(x, v) for x, v, e in zip(self.x, losses, self.epochs)
                         if (e.get("phase") == "router") == (name == "router")])
                 for name in ("router", "main")]
        parts = [(name, points) for name, points in parts if points]
        fig, axes = self.plt.subplots(len(parts), 1, figsize=(7, 3 + 2 * (len(parts) - 1)), squeeze=False)
        for ax, (name, points) in zip(axes[:, 0], parts):
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker=".", color="tab:purple" if name == "router" else "tab:blue")
            ax.set_xlabel("epoch" if not self.router_count else "epoch (router phase, then main phase)")
            ax.set_ylabel("router loss (linear)" if name == "router" else "mean training loss")
            ax.grid(True, alpha=0.3)
            ax.xaxis.set_major_locator(self.ticker.MaxNLocator(integer=True))
            if name == "main" and min(ys) > 0 and max(ys) > 10 * min(ys):
                ax.set_yscale("log")
            ax.set_title("router phase" if name == "router" else
                         "training loss" + (", main phase" if len(parts) > 1 else ""))
        self.save(fig, "loss.png")

    def accuracy(self):
        train, test = self.series("train_acc"), self.series("test_acc")
        if all(math.isnan(v) for v in train + test):
            return "no train_acc or test_acc"
        fig, ax = self.plt.subplots(figsize=(7, 4))
        ax.plot(self.x, [100 * v for v in train], marker=".", label="train")
        ax.plot(self.x, [100 * v for v in test], marker=".", label="test")
        self.axes_common(ax, "accuracy (%)")
        ax.legend()
        ax.set_title("accuracy")
        self.save(fig, "accuracy.png")

    def recall(self):
        recall = self.series("router_recall")
        per_expert = [e.get("expert_recall") or [] for e in self.epochs]
        k = max(len(r) for r in per_expert)
        if all(math.isnan(v) for v in recall) and k == 0:
            return "no router_recall (the model has no router, or the task no deciding patch)"
        fig, ax = self.plt.subplots(figsize=(7, 4.5))
        cmap = self.plt.get_cmap("tab20" if k > 10 else "tab10")
        for s in range(k):
            values = [100 * number(r[s]) if s < len(r) else math.nan for r in per_expert]
            ax.plot(self.x, values, lw=1, alpha=0.8, color=cmap(s % cmap.N), label=f"expert {s}")
        ax.plot(self.x, [100 * v for v in recall], lw=2.5, color="black", marker=".",
                label="any expert (router recall)")
        self.axes_common(ax, "deciding patch picked (% of test samples)")
        ax.set_ylim(-2, 102)
        ax.legend(fontsize="small", ncol=2 if k > 6 else 1)
        ax.set_title("router recall")
        self.save(fig, "recall.png")

    def loads(self):
        """(x, expert x position counts, samples) for the epochs that measured load."""
        out = []
        for x, e in zip(self.x, self.epochs):
            load = e.get("expert_load_position")
            if load:
                samples = e.get("load_samples") or 0
                if not samples:  # each expert picks l positions of every sample
                    samples = max(sum(row) for row in load) or 1
                out.append((x, load, samples))
        return out

    def expert_load(self):
        loads = self.loads()
        if not loads:
            return "no expert_load_position"
        k = max(len(load) for _, load, _ in loads)
        fig, (top, bottom) = self.plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
        cmap = self.plt.get_cmap("tab20" if k > 10 else "tab10")
        for s in range(k):
            xs, entropy, peak = [], [], []
            for x, load, samples in loads:
                if s >= len(load):
                    continue
                row = load[s]
                total = sum(row)
                n = len(row)
                h = -sum(c / total * math.log(c / total) for c in row if c > 0) if total else 0.0
                xs.append(x)
                entropy.append(h / math.log(n) if n > 1 else 1.0)
                peak.append(100.0 * max(row) / samples)
            top.plot(xs, entropy, lw=1, color=cmap(s % cmap.N), label=f"expert {s}")
            bottom.plot(xs, peak, lw=1, color=cmap(s % cmap.N), label=f"expert {s}")
        top.set_ylabel("spread of picks over positions\n(normalised entropy, 1 = even)")
        top.grid(True, alpha=0.3)
        top.set_title("per-expert load over the test set")
        self.axes_common(bottom, "samples in which it picks\nits favourite position (%)")
        top.legend(fontsize="small", ncol=2 if k > 6 else 1)
        self.save(fig, "expert_load.png")

    def load_position(self):
        loads = self.loads()
        if not loads:
            return "no expert_load_position"
        x, load, samples = loads[-1]
        k, n = len(load), len(load[0])
        rows, cols = grid_shape(n, self.epochs[x - 1], self.grid)
        if self.grid and self.grid[0] * self.grid[1] != n:
            print(f"load_position.png: --grid {self.grid[0]}x{self.grid[1]} does not hold the log's "
                  f"{n} positions; drawn as {rows}x{cols}")
        per_row = min(k, 4 if rows > 1 else 1)
        fig_rows = (k + per_row - 1) // per_row
        if rows > 1:
            size = (2.6 * per_row + 1.2, 2.6 * fig_rows + 0.8)
        else:
            size = (max(6.0, 0.45 * n + 2), 0.9 * fig_rows + 1.2)
        fig, axes = self.plt.subplots(fig_rows, per_row, figsize=size, squeeze=False)
        image = None
        for s in range(fig_rows * per_row):
            ax = axes[s // per_row][s % per_row]
            if s >= k:
                ax.axis("off")
                continue
            share = [[100.0 * load[s][r * cols + c] / samples for c in range(cols)] for r in range(rows)]
            image = ax.imshow(share, cmap="viridis", vmin=0, vmax=100)
            ax.set_title(f"expert {s}", fontsize="medium")
            ax.set_xticks([])
            ax.set_yticks([])
            if n <= 64:
                for r in range(rows):
                    for c in range(cols):
                        v = share[r][c]
                        ax.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize="x-small",
                                color="black" if v > 60 else "white")
        fig.suptitle(f"share of the {samples} test samples in which each expert picks each "
                     f"position (%), epoch {x}", fontsize="medium")
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
        path = os.path.join(self.out_dir, "load_position.png")
        fig.savefig(path, dpi=100)  # tight_layout does not know the shared colour bar
        self.plt.close(fig)
        self.written.append(path)

    def phase_seconds(self):
        names = []
        for e in self.epochs:
            for name in (e.get("phase_seconds") or {}):
                if name not in names:
                    names.append(name)
        if not names:
            return "no phase_seconds"
        fig, ax = self.plt.subplots(figsize=(7, 4.5))
        values = [[number((e.get("phase_seconds") or {}).get(name)) for e in self.epochs] for name in names]
        values = [[0.0 if math.isnan(v) else v for v in row] for row in values]
        cmap = self.plt.get_cmap("tab20")
        ax.stackplot(self.x, values, labels=names, colors=[cmap(i % cmap.N) for i in range(len(names))])
        self.axes_common(ax, "seconds per epoch")
        ax.legend(fontsize="x-small", ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_title("time per step phase")
        self.save(fig, "phase_seconds.png")


def main():
    parser = argparse.ArgumentParser(prog=PROG, description="PNG curves from a pmoe train --log file.")
    parser.add_argument("log", help="the JSONL file written by pmoe train --log")
    parser.add_argument("--out", required=True, help="the folder to write the PNG files to")
    parser.add_argument("--grid", metavar="ROWSxCOLS",
                        help="the patch grid of load_position.png (default: the log's grid_rows and "
                             "grid_cols, else square; the synthetic data is 1xn)")
    args = parser.parse_args()
    grid = None
    if args.grid:
        try:
            grid = tuple(int(v) for v in args.grid.lower().split("x"))
            if len(grid) != 2 or min(grid) < 1:
                raise ValueError
        except ValueError:
            fail(f"--grid {args.grid}: expected ROWSxCOLS, such as 4x4 or 1x16", 2)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker as ticker
    except ImportError:
        fail(f"matplotlib is not installed for {sys.executable}: run this script with "
             f"/usr/bin/python3 after apt-get install python3-matplotlib (Debian's package is "
             f"for the system Python, not a virtual environment's)", 3)
    epochs = read_log(args.log)
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        fail(f"{args.out}: cannot create the folder: {e.strerror}")
    plotter = Plotter(plt, ticker, epochs, args.out, grid)
    for figure in ("loss", "accuracy", "recall", "expert_load", "load_position", "phase_seconds"):
        try:
            skipped = getattr(plotter, figure)()
        except OSError as e:
            fail(f"{e.filename or args.out}: cannot write: {e.strerror}")
        if skipped:
            print(f"{figure}.png: not written ({skipped} in the log)")
    for path in plotter.written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
