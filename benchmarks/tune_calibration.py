"""How often ``vaeaug.tune`` says yes where nothing can help: its false-positive rate, measured.

Two null cases, each over ``--runs`` independent draws (a fresh subset, VAE and fold split per run):

* ``shuffled``: the labels of the subset are shuffled, so no augmentation can teach the classifier
  anything that carries to the held-out fold;
* ``identity``: the only candidate is a "variant" that is the image itself
  (``isotropic``, strength 0, ``delta`` form: ``x + D(mu) - D(mu)``), so the candidate trains what
  ``none`` trains up to float rounding;
* ``weak``: real labels, and candidates too weak to matter (``isotropic`` at strength 0.05 and
  0.02, ``delta``, p = 0.5): they change every variant a little, so each candidate's classifier
  follows its own trajectory. Unlike ``identity`` its paired differences carry the full training
  noise, which is the noise tune's test has to see through.

A calibrated tune says yes on at most ``alpha`` of the runs (the selection among candidates makes
``shuffled`` somewhat harder). Prints one line per run and the rate with its 95% (Wilson) interval;
``--json`` writes every run.

Usage:
    python benchmarks/tune_calibration.py --case shuffled --runs 20 --json shuffled.json
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from common import machine, write_summary  # a sibling script: benchmarks/ is on sys.path when run

import vaeaug
from vaeaug.data import as_tensor_data
from vaeaug.protocol.evaluation import reduce_per_class
from vaeaug.protocol.tuning import DEFAULT_GRID


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a rate k/n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    return max(0.0, mid - half), min(1.0, mid + half)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--case", choices=["shuffled", "identity", "weak"], required=True)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--first-run", type=int, default=0, help="the first run's number (more runs, new subsets)")
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=30, help="epochs of each run's VAE (and of tune's refits)")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--score", choices=["logloss", "brier"], default="logloss", help="tune's per-image score")
    ap.add_argument("--calibrate", action="store_true", help="temperature-scale each run before scoring")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    train = as_tensor_data(args.data, split="train")
    grid = {"identity": [vaeaug.AugmentSetting("isotropic", 0.0, "delta", 0.5)],
            "weak": [vaeaug.AugmentSetting("isotropic", 0.05, "delta", 0.5),
                     vaeaug.AugmentSetting("isotropic", 0.02, "delta", 0.5)]}.get(args.case, list(DEFAULT_GRID[:2]))
    rows, t0 = [], time.perf_counter()
    for run in range(args.first_run, args.first_run + args.runs):
        assert train.y is not None
        idx = reduce_per_class(train.y, args.per_class, seed=1000 + run)
        x, y = train.x[idx], train.y[idx]
        if args.case == "shuffled":
            y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(run))]
        model = vaeaug.fit(x, y, epochs=args.epochs, conditional=True, seed=run, progress=False)
        t1 = time.perf_counter()
        res = vaeaug.tune(model, x, y, grid=grid, folds=args.folds, repeats=args.repeats, alpha=args.alpha,
                          score=args.score, calibrate=args.calibrate, seed=run, progress=False)
        yes = res["chosen"] is not None
        rows.append({"run": run, "yes": yes, "p_value": res["p_value"], "gain": res["gain"],
                     "loss_gain": res["loss_gain"], "gain_sd": res["gain_sd"], "loss_gain_sd": res["loss_gain_sd"],
                     "finalist": res["finalist"], "seconds": time.perf_counter() - t1,
                     "scores": [{k: r[k] for k in ("label", "runs", "val_accuracy", "losses")} for r in res["scores"]]})
        print(f"run {run}: {'YES' if yes else 'no '} p={res['p_value']:.3f} gain={res['gain']:+.2f} "
              f"loss_gain={res['loss_gain']:+.4f} ({res['finalist']}, {rows[-1]['seconds']:.0f} s)", flush=True)
    k, n = sum(r["yes"] for r in rows), len(rows)
    lo, hi = wilson(k, n)
    summary = (f"{args.case}: tune said yes on {k} of {n} runs ({100 * k / max(1, n):.0f}%, 95% interval "
               f"{100 * lo:.0f}-{100 * hi:.0f}%; alpha = {args.alpha:g}, score {args.score}"
               f"{', temperature-scaled' if args.calibrate else ''}); "
               f"{args.data} {args.per_class}/class, "
               f"{args.folds} folds x {args.repeats} repeats, {time.perf_counter() - t0:.0f} s, {machine()}")
    print(summary)
    write_summary(args.json, summary, args, runs=rows)


if __name__ == "__main__":
    main()
