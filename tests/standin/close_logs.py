"""close_logs.py: whether two `pmoe train --log` files agree within a tolerance.

Usage: python3 close_logs.py LOG_A LOG_B REL_TOL
Both logs must hold the same (non-zero) number of epochs; in each, the
accuracies and router recall must be equal and train_loss within REL_TOL
relative (REL_TOL 0: bit-identical, losses are logged with 9 significant
digits). Prints the worst loss difference as a share of the limit.
"""
import json
import sys

a = [json.loads(line) for line in open(sys.argv[1])]
b = [json.loads(line) for line in open(sys.argv[2])]
tol = float(sys.argv[3])
bad = len(a) != len(b) or not a
if bad:
    print(f'    {len(a)} epochs against {len(b)}')
worst = 0.0
for x, y in zip(a, b):
    for k in ('train_acc', 'test_acc', 'router_recall'):
        if x.get(k) != y.get(k):
            print(f'    epoch {x.get("epoch")} ({x.get("phase")}): {k} {x.get(k)} vs {y.get(k)}')
            bad = True
    la, lb = x.get('train_loss'), y.get('train_loss')
    diff = abs(la - lb)
    limit = tol * max(abs(la), abs(lb))
    if diff > limit:
        print(f'    epoch {x.get("epoch")} ({x.get("phase")}): train_loss {la} vs {lb}')
        bad = True
    worst = max(worst, diff / limit if limit > 0 else (0.0 if diff == 0 else float('inf')))
print(f'    losses: worst {worst:.3f} of the limit (rel {tol:g})')
sys.exit(1 if bad else 0)
