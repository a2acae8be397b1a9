#!/usr/bin/python3
"""compare_outputs.py COMMITTED_DIR FRESH_DIR NAME...: whether a fresh
reproduction run gives the committed results.

The engine is seeded and, on one CPU, bit-identical from run to run and for
any thread count, so the comparison is exact: every CSV cell and every line
of a text summary must be the same, with three exceptions that no code
change should be able to hide behind:
  - the stamp (an output's first line, "# made at commit ..."), which names
    the commit and command and so differs by design;
  - wall-clock measurements: CSV columns whose name contains "seconds", and
    in fig14's text summary the time columns (after the fourth "|") and the
    time-ratio line;
  - the path of the pmoe binary in a summary's example command.
PNGs are not compared (matplotlib's rendering changes with its version;
the CSV holds every plotted number).

Prints each difference (file, line, committed, fresh) and exits 1 if there
is any, 0 if none.
"""

import os
import re
import sys


def _csv_rows(path):
    with open(path) as f:
        lines = [l.rstrip("\n") for l in f if not l.startswith("# ")]
    if not lines:
        return []
    header = lines[0].split(",")
    timed = {i for i, name in enumerate(header) if "seconds" in name}
    # Cells are plain numbers or words; only the per-seed lists are quoted,
    # and those hold no commas (common.py's _csv_cell).
    return [",".join(c for i, c in enumerate(l.split(",")) if i not in timed) for l in lines]


def _text_lines(path):
    out = []
    timed_table = os.path.basename(path).startswith("fig14_")
    with open(path) as f:
        for l in f:
            l = l.rstrip("\n")
            if l.startswith("# "):
                continue
            l = re.sub(r"^(\s+)\S*pmoe train ", r"\1pmoe train ", l)
            if timed_table:
                if l.startswith("time ratio"):
                    continue
                parts = l.split("|")
                if len(parts) == 5:
                    l = "|".join(parts[:4])
            out.append(l)
    return out


def compare(committed, fresh, names):
    differences = 0
    for name in names:
        a, b = os.path.join(committed, name), os.path.join(fresh, name)
        if not os.path.exists(b):
            print(f"{name}: the fresh run wrote no such file")
            differences += 1
            continue
        if not os.path.exists(a):
            print(f"{name}: not committed (docs/reproduction has no such file)")
            differences += 1
            continue
        read = _csv_rows if name.endswith(".csv") else _text_lines
        la, lb = read(a), read(b)
        bad = [(i, x, y) for i, (x, y) in enumerate(zip(la, lb)) if x != y]
        if len(la) != len(lb):
            bad.append((min(len(la), len(lb)), f"{len(la)} lines", f"{len(lb)} lines"))
        for i, x, y in bad[:5]:
            print(f"{name}, data line {i + 1}:\n  committed: {x}\n  fresh:     {y}")
        if len(bad) > 5:
            print(f"{name}: {len(bad) - 5} more differing lines")
        if bad:
            differences += 1
        else:
            print(f"{name}: same")
    return differences


def main():
    if len(sys.argv) < 4 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2
    bad = compare(sys.argv[1], sys.argv[2], sys.argv[3:])
    if bad:
        print(f"{bad} file(s) differ from the committed results: a change moved the numerics. "
              f"Regenerate them (docs/reproduction.md, 'Keeping the results current') and "
              f"commit them with the change.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
