"""common.py: what the reproduction scripts share.

Finding and running `pmoe train` as subprocesses (train.threads = 1, at most
--jobs of them at once), collecting the JSON result line and the per-epoch
log, caching results so that an interrupted sweep resumes, the per-sample
routing of a saved model (route_dump.c, built against the engine library of
the same build folder), the common command-line options, and CSV/plot
helpers, and the stamp every output carries (the commit and the command that
made it).

Outputs go to reproduce-out/ (ignored by git) unless --out-dir says
otherwise; the committed results in docs/reproduction/ are regenerated with
--out-dir docs/reproduction (docs/reproduction.md names the command), and
tools/reproduce/check_reduced.sh compares a fresh reduced run with them.

Every script runs with the system Python (/usr/bin/python3) and needs only
numpy, plus matplotlib for the plots (Debian: python3-numpy,
python3-matplotlib).
"""

import concurrent.futures
import hashlib
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_DIR = os.path.join(REPO, "reproduce-out")
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# The model settings of the paper's two-layer experiments. Expert init scales
# follow the paper's released code (CNN and separate experts N(0, 0.1^2),
# joint experts N(0, 0.01^2)); docs/reproduction.md says why this matters.
CNN = {"model.type": "cnn", "model.hidden": 40, "model.expert_init_std": 0.1}
SEPARATE = {"model.type": "pmoe", "train.mode": "separate", "model.experts": 2,
            "model.topl": 2, "model.hidden": 40, "model.expert_init_std": 0.1,
            "model.output_init": "sign"}
# On the mosaic, separate pMoE's experts train at lr 0.2 * l / n = 0.025: the
# paper's code averages each expert's output over all n = 16 positions, eq. 1
# (and the engine) over its l = 2 picks, so at lr 0.2 the engine's expert
# steps are n / l = 8 times the code's, and in some seeds every ReLU of one
# expert dies in the first epoch (docs/reproduction.md, result 1).
SEPARATE_MOSAIC = dict(SEPARATE, **{"train.lr": 0.025})
JOINT = {"model.type": "pmoe", "train.mode": "joint", "model.experts": 8, "model.topl": 6,
         "model.hidden": 40, "model.expert_init_std": 0.01}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


_STAMP = None


def _git(*argv):
    proc = subprocess.run(["git", "-C", REPO] + list(argv), capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def stamp(pmoe=None):
    """One line naming what made an output: the repository's commit (with
    "+changes" when tracked files outside docs/ differ from it, so a run
    that writes into docs/reproduction does not mark itself), the pmoe binary's
    own version line (its commit is baked in at build time), and the exact
    command (the run_all.sh command that started it, if any, in
    $PMOE_REPRODUCE_COMMAND)."""
    global _STAMP
    if _STAMP is None:
        commit = _git("rev-parse", "--short=12", "HEAD") or "unknown"
        if _git("status", "--porcelain", "--untracked-files=no", "--", ".",
                ":(exclude)docs") not in ("", None):
            commit += "+changes"
        script = os.path.relpath(os.path.abspath(sys.argv[0]), REPO)
        cmd = " ".join(shlex.quote(a) for a in ["/usr/bin/python3", script] + sys.argv[1:])
        parent = os.environ.get("PMOE_REPRODUCE_COMMAND")
        if parent:
            cmd += f" (from {parent})"
        version = "unknown"
        if pmoe:
            try:
                proc = subprocess.run([pmoe, "--version"], capture_output=True, text=True)
                if proc.returncode == 0 and proc.stdout.strip():
                    version = proc.stdout.strip().splitlines()[0]
            except OSError:
                pass
        _STAMP = f"made at commit {commit} by {version}; command: {cmd}"
    return _STAMP


def set_stamp_binary(pmoe):
    """Names the pmoe binary in the stamp (called once the runner has found it)."""
    global _STAMP
    _STAMP = None
    stamp(pmoe)


def write_text(path, lines):
    """A text summary, its first line the stamp."""
    with open(path, "w") as f:
        f.write("# " + stamp() + "\n" + "\n".join(lines) + "\n")
    log(f"wrote {os.path.relpath(path, REPO)}")


def idx_present(path):
    return all(os.path.exists(os.path.join(path, f)) or os.path.exists(os.path.join(path, f + ".gz"))
               for f in IDX_FILES)


def add_common_args(parser, reduced_help, full_help):
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--reduced", dest="mode", action="store_const", const="reduced",
                      help=reduced_help + " (the default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help=full_help)
    parser.set_defaults(mode="reduced")
    parser.add_argument("--pmoe", help="the pmoe binary (default: $PMOE, else build-repro/pmoe "
                        "or build/pmoe under the repository)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="pmoe processes at once, each with train.threads = 1 (default 2)")
    parser.add_argument("--data-path", default=FASHION_MNIST,
                        help="folder with the four IDX files (default: Fashion-MNIST; give MNIST's "
                        "for the paper's exact task)")
    parser.add_argument("--pos-class", type=int, default=1,
                        help="class of the deciding item for y = +1 (default 1)")
    parser.add_argument("--neg-class", type=int, default=0,
                        help="class of the deciding item for y = -1 (default 0)")
    parser.add_argument("--tag", default="",
                        help="suffix for the output names (e.g. mnist), so runs on other data do "
                        "not overwrite the committed ones")
    parser.add_argument("--out-dir", default=OUT_DIR, help="where the CSV and PNG go (default "
                        "reproduce-out/; the committed results: docs/reproduction)")
    parser.add_argument("--no-cache", action="store_true",
                        help="rerun everything instead of reusing cached results")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra pmoe setting for every run (repeatable)")


def mosaic_settings(args):
    """The data settings of a mosaic run from the common options."""
    return {"data.source": "mosaic", "data.path": args.data_path,
            "data.pos_class": args.pos_class, "data.neg_class": args.neg_class,
            "data.test_size": 1000}


def extra_settings(args):
    out = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def output_path(args, name, ext):
    suffix = ("-" + args.tag if args.tag else "") + ("-reduced" if args.mode == "reduced" else "")
    os.makedirs(args.out_dir, exist_ok=True)
    return os.path.join(args.out_dir, f"{name}{suffix}.{ext}")


def find_pmoe(explicit=None):
    for cand in (explicit, os.environ.get("PMOE"),
                 os.path.join(REPO, "build-repro", "pmoe"), os.path.join(REPO, "build", "pmoe")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return os.path.abspath(cand)
    raise SystemExit("no pmoe binary: build one (cmake -S . -B build && cmake --build build "
                     "--target pmoe) or pass --pmoe PATH")


def _file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def fmt_value(v):
    if isinstance(v, float):
        return repr(v)
    return str(v)


def command_line(pmoe, settings):
    """The shell command for one run, as the docs show it."""
    parts = [os.path.relpath(pmoe, REPO) if pmoe.startswith(REPO) else pmoe, "train"]
    for k in sorted(settings):
        parts += ["--set", f"{k}={fmt_value(settings[k])}"]
    return " ".join(shlex.quote(p) for p in parts)


class Runner:
    """Runs `pmoe train` with a settings dict and returns its JSON result (and,
    when asked, the per-epoch log and per-sample routing). Results are cached
    in a JSON-lines file keyed by the settings and the binary's digest, so a
    sweep that was stopped picks up where it was."""

    def __init__(self, args, cache_name):
        self.pmoe = find_pmoe(getattr(args, "pmoe", None))
        set_stamp_binary(self.pmoe)
        self.jobs = max(1, args.jobs)
        self.digest = _file_digest(self.pmoe)
        cache_dir = os.environ.get("PMOE_REPRODUCE_CACHE",
                                   os.path.join(os.path.expanduser("~"), ".cache", "pmoe-reproduce"))
        os.makedirs(cache_dir, exist_ok=True)
        self.cache_path = os.path.join(cache_dir, cache_name + ".jsonl")
        self.cache = {}
        if not getattr(args, "no_cache", False) and os.path.exists(self.cache_path):
            with open(self.cache_path) as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                        self.cache[rec["key"]] = rec["value"]
                    except (ValueError, KeyError):
                        pass
        self.lock = threading.Lock()
        self.done = 0
        self.total = 0
        self.started = time.time()
        self._route_dump = None

    def key(self, settings, extras):
        blob = json.dumps({"s": {k: fmt_value(v) for k, v in settings.items()}, "x": extras,
                           "bin": self.digest}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def cache_extras(self, want_log, want_routing):
        """What, besides the settings, makes a cached result (a subclass that
        keeps another log names its version here)."""
        return {"log": bool(want_log), "routing": bool(want_routing)}

    def keep_log(self, result, rows):
        """Stores what the experiments read of the per-epoch log rows."""
        keep = ("phase", "epoch", "train_loss", "train_acc", "test_acc", "router_recall",
                "expert_recall")
        result["epochs_log"] = [{k: r.get(k) for k in keep} for r in rows]

    def run_one(self, settings, want_log=False, want_routing=False):
        settings = dict(settings)
        settings["train.threads"] = 1
        extras = self.cache_extras(want_log, want_routing)
        key = self.key(settings, extras)
        with self.lock:
            if key in self.cache:
                self.done += 1
                return self.cache[key]
        with tempfile.TemporaryDirectory(prefix="pmoe-repro-") as tmp:
            logfile = os.path.join(tmp, "epochs.jsonl")
            run_settings = dict(settings)
            if want_routing:
                run_settings.update({"train.checkpoint_every": 1000000000, "train.keep": 1,
                                     "train.checkpoint_dir": os.path.join(tmp, "ckpt")})
            cmd = [self.pmoe, "train", "--json", "--quiet", "--log", logfile]
            for k, v in sorted(run_settings.items()):
                cmd += ["--set", f"{k}={fmt_value(v)}"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"pmoe failed ({proc.returncode}): {' '.join(cmd)}\n"
                                   f"{proc.stderr.strip()}")
            lines = [l for l in proc.stdout.strip().splitlines() if l.strip()]
            result = json.loads(lines[-1])
            if want_log:
                with open(logfile) as f:
                    self.keep_log(result, [json.loads(l) for l in f if l.strip()])
            if want_routing:
                ckpt_dir = os.path.join(tmp, "ckpt")
                files = sorted(f for f in os.listdir(ckpt_dir) if f.endswith(".safetensors"))
                if not files:
                    raise RuntimeError("no checkpoint written for the routing dump")
                result["routing"] = self.routing(os.path.join(ckpt_dir, files[-1]))
        with self.lock:
            self.cache[key] = result
            with open(self.cache_path, "a") as f:
                f.write(json.dumps({"key": key, "value": result}) + "\n")
            self.done += 1
        return result

    def map(self, jobs):
        """jobs: list of (settings, want_log, want_routing); returns the results in order."""
        self.total = len(jobs)
        self.done = 0
        self.started = time.time()
        results = [None] * len(jobs)
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.jobs) as pool:
            futures = {pool.submit(self.run_one, *job): i for i, job in enumerate(jobs)}
            for fut in concurrent.futures.as_completed(futures):
                results[futures[fut]] = fut.result()
                log(f"  [{self.done}/{self.total}] {time.time() - self.started:.0f} s")
        return results

    # ---- per-sample routing (route_dump.c) ----

    def _build_route_dump(self):
        build_dir = os.path.dirname(self.pmoe)
        link_txt = os.path.join(build_dir, "CMakeFiles", "pmoe.dir", "link.txt")
        lib = os.path.join(build_dir, "libpmoe_engine.a")
        if not (os.path.exists(link_txt) and os.path.exists(lib)):
            raise SystemExit(f"the routing dump needs the build folder of {self.pmoe} "
                             f"(CMakeFiles/pmoe.dir/link.txt and libpmoe_engine.a)")
        src = os.path.join(REPO, "tools", "reproduce", "route_dump.c")
        exe = os.path.join(build_dir, "reproduce_route_dump")
        if (os.path.exists(exe) and os.path.getmtime(exe) >= os.path.getmtime(lib)
                and os.path.getmtime(exe) >= os.path.getmtime(src)):
            return exe
        # Link exactly as CMake links pmoe: the libraries after "-o pmoe".
        words = shlex.split(open(link_txt).read())
        tail = words[words.index("-o") + 2:]
        tail = [w if w.startswith("-") or os.path.isabs(w) else os.path.join(build_dir, w)
                for w in tail]
        cc = words[0]
        cmd = [cc, "-O2", "-std=c11", "-D_POSIX_C_SOURCE=200809L",
               "-I", os.path.join(REPO, "include"), src, "-o", exe + ".tmp"] + tail
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit("building route_dump failed:\n" + " ".join(cmd) + "\n" + proc.stderr)
        os.replace(exe + ".tmp", exe)
        return exe

    def routing(self, checkpoint):
        with self.lock:
            if self._route_dump is None:
                self._route_dump = self._build_route_dump()
        proc = subprocess.run([self._route_dump, checkpoint], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"route_dump failed: {proc.stderr.strip()}")
        return json.loads(proc.stdout)


def recall_stats(routing):
    """From per-sample picks: the engine's recall (any expert), each expert's
    recall on each class, and the paper's separate-training recall: the deciding
    patch among the picks of the expert meant for its class (router 0 is trained
    towards y = +1, label 1; router 1 towards y = -1, label 0)."""
    labels, decisive, selected = routing["labels"], routing["decisive"], routing["selected"]
    k = routing["experts"]
    n = len(labels)
    any_hit = 0
    per = [[0, 0] for _ in range(k)]          # hits[e][label]
    count = [0, 0]
    for lab, want, picks in zip(labels, decisive, selected):
        count[lab] += 1
        hits = [want in picks[e] for e in range(k)]
        any_hit += any(hits)
        for e in range(k):
            per[e][lab] += hits[e]
    out = {"recall_any": any_hit / n,
           "expert_class_recall": [[per[e][c] / max(count[c], 1) for c in (0, 1)]
                                   for e in range(k)]}
    if k >= 2:
        out["recall_proper"] = (per[0][1] + per[1][0]) / n
    return out


def mean_std(values):
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def write_csv(path, header, rows):
    with open(path, "w") as f:
        f.write("# " + stamp() + "\n")
        f.write(",".join(header) + "\n")
        for row in rows:
            f.write(",".join(_csv_cell(v) for v in row) + "\n")
    log(f"wrote {os.path.relpath(path, REPO)}")


def _csv_cell(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    s = str(v)
    return '"' + s.replace('"', '""') + '"' if ("," in s or '"' in s) else s


def pyplot():
    """matplotlib.pyplot with the Agg backend, or None (then no PNG, said once)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        plt.rcParams.update({"font.size": 9, "figure.dpi": 100})
        return plt
    except ImportError:
        log("matplotlib is missing (Debian: apt-get install python3-matplotlib): no PNG written")
        return None


def save_png(plt, fig, path):
    fig.text(0.995, 0.003, stamp().split(";")[0], fontsize=5, color="grey",
             ha="right", va="bottom")
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Source": stamp()})
    plt.close(fig)
    log(f"wrote {os.path.relpath(path, REPO)} ({os.path.getsize(path) // 1024} KB)")


def check_data(args):
    if not idx_present(args.data_path):
        raise SystemExit(f"{args.data_path}: the IDX files are missing "
                         f"(Fashion-MNIST: apt-get install dataset-fashion-mnist; MNIST: see "
                         f"docs/reproduction.md)")


def data_label(args):
    name = os.path.basename(os.path.normpath(args.data_path))
    return f"{name} mosaic, {args.pos_class} vs {args.neg_class}"
