"""Where a tune unit's noise is: between a fold's classifier seeds, or between folds?

Reads the evidence that ``evaluate`` stores for its ``pipeline`` arm (every candidate's units per
seed) and prints, per seed, the finalist's paired units split two ways: the variance between the
repeats of one fold (classifier noise) and the variance between the fold means (which holds half of
the former plus the true fold-to-fold part).

Usage:
    python benchmarks/unit_variance.py benchmarks/results/issue21/d10-pipeline-brier-53dfbbd.json
"""

from __future__ import annotations

import json
import statistics
import sys


def split(report: dict) -> list[tuple[int, float, float]]:
    """Per seed: (seed, within-fold variance, variance of the fold means) of the finalist's paired units."""
    out = []
    for seed, ev in zip(report["config"]["seeds"], report["pipeline"]["per_seed"], strict=True):
        by = {c["label"]: c for c in ev["scores"]}
        ref = ev["scores"][0]  # tune lists the reference first (a candidate can tie it at exactly 0)
        fin = by[ev["finalist"]]
        r_loss = dict(zip(map(tuple, ref["runs"]), ref["losses"], strict=True))
        units = {tuple(k): r_loss[tuple(k)] - v for k, v in zip(fin["runs"], fin["losses"], strict=True)}
        folds = sorted({f for f, _ in units})
        reps = sorted({r for _, r in units})
        within = statistics.fmean(statistics.variance([units[(f, r)] for r in reps]) for f in folds)
        means = statistics.variance([statistics.fmean(units[(f, r)] for r in reps) for f in folds])
        out.append((seed, within, means))
    return out


def main() -> None:
    for path in sys.argv[1:]:
        rows = split(json.load(open(path)))
        for seed, within, means in rows:
            print(f"{path}: seed {seed}: within-fold {within:.2e}, fold means {means:.2e}")
        print(f"{path}: within >= fold means on {sum(w >= m for _, w, m in rows)} of {len(rows)} seeds")


if __name__ == "__main__":
    main()
