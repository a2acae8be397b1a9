"""same_logs.py: whether two `pmoe train --log` files agree, epoch by epoch.

Usage: python3 same_logs.py LOG_A LOG_B KEY [KEY ...]
Exits 0 when both logs hold the same (non-zero) number of epochs and every
named key is equal in each; otherwise prints each difference and exits 1.
Losses are logged with 9 significant digits, so a float32 loss round-trips
exactly and "equal" here means bit-identical.
"""
import json
import sys

a = [json.loads(line) for line in open(sys.argv[1])]
b = [json.loads(line) for line in open(sys.argv[2])]
keys = sys.argv[3:]
bad = len(a) != len(b) or not a
for x, y in zip(a, b):
    for k in keys:
        if x.get(k) != y.get(k):
            print(f'    epoch {x.get("epoch")}: {k} {x.get(k)} vs {y.get(k)}')
            bad = True
sys.exit(1 if bad else 0)
