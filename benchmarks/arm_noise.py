"""How much of a fixed arm's test score is its classifier run: one data seed, many classifier seeds.

The protocol's tables train each arm once per seed, and the subset, the VAE and the classifier
seed all move together. The pick-rate target of issue 21 reads "a candidate's test gain >= 1.5
points" from such single runs. This script holds the data seed (the subset, its split and its VAE)
fixed and trains every arm with ``--classifier-seeds`` classifier seeds on the full test split, so
that it can say how large a single run's test gain is when the arms are equal, and how often a
gain of 1.5 points shows up between two runs of the same pair of arms.

Usage:
    python benchmarks/arm_noise.py --data fashion-mnist --per-class 50 --seed 0 --classifier-seeds 8
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path
from typing import Any

from common import machine, record, write_summary  # a sibling script: benchmarks/ is on sys.path when run

from vaeaug import fit
from vaeaug.backends.torch_backend import TorchBackend
from vaeaug.core.augment import Augmenter
from vaeaug.core.settings import DEFAULT_AUGMENT
from vaeaug.data import as_tensor_data
from vaeaug.protocol.classifier import Budget, train_classifier
from vaeaug.protocol.evaluation import protocol_fit_kwargs, reduce_per_class
from vaeaug.protocol.tuning import stratified_split

ARMS = ("none", "classic", "vae", "vae+classic")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0, help="the data seed: subset, split and VAE (as evaluate's seed)")
    ap.add_argument("--classifier-seeds", type=int, default=8)
    ap.add_argument("--vae-epochs", type=int, default=300)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--record", action="store_true", help="append the table to BENCHMARKS.md")
    args = ap.parse_args()
    t0 = time.perf_counter()
    train = as_tensor_data(args.data, split="train")
    test = as_tensor_data(args.data, split="test")
    assert train.y is not None and test.y is not None
    num_classes = int(train.y.max()) + 1
    flip = args.data.lower().replace("_", "-") in ("fashion-mnist", "fashionmnist")
    idx = reduce_per_class(train.y, args.per_class, args.seed)
    tr, va = stratified_split(train.y[idx], 0.2, args.seed)  # evaluate's split (val_fraction=0.2)
    xr, yr = train.x[idx[tr]], train.y[idx[tr]]
    val = (train.x[idx[va]], train.y[idx[va]])
    # evaluate's own fit, so that classifier seed == data seed replays the table's arms
    vae = fit(xr, yr, seed=args.seed, progress=False, device="cpu", **protocol_fit_kwargs(args.vae_epochs))
    gen = TorchBackend(vae)
    acc: dict[str, list[float]] = {a: [] for a in ARMS}
    for k in range(args.classifier_seeds):
        for arm in ARMS:
            run = train_classifier(xr, yr, test.x, test.y, num_classes=num_classes, budget=Budget(), seed=k,
                                   classic=arm.endswith("classic"), flip=flip, val=val,
                                   aug=Augmenter(gen, DEFAULT_AUGMENT) if arm.startswith("vae") else None)
            acc[arm].append(run.accuracy)
            print(f"classifier seed {k}: {arm} {run.accuracy:.2f}", flush=True)
    lines = [f"### arm_noise: {args.data}, {args.per_class}/class, data seed {args.seed}, "
             f"{args.classifier_seeds} classifier seeds ({time.perf_counter() - t0:.0f} s; {machine()})", "",
             "| arm | test accuracy, mean ± sd over classifier seeds | range |", "|---|---|---|"]
    for a, v in acc.items():
        lines.append(f"| {a} | {statistics.fmean(v):.2f} ± {statistics.stdev(v):.2f} | {min(v):.2f}-{max(v):.2f} |")
    lines += ["", "| pair (A - B) | paired gain, mean ± sd | one run's gain >= 1.5 | <= -1.5 |", "|---|---|---|---|"]
    pairs: dict[str, Any] = {}
    for a, b in itertools.combinations(ARMS, 2):
        d = [x - y for x, y in zip(acc[a], acc[b], strict=True)]
        up, down = sum(x >= 1.5 for x in d), sum(x <= -1.5 for x in d)
        pairs[f"{a} - {b}"] = d
        lines.append(f"| {a} - {b} | {statistics.fmean(d):+.2f} ± {statistics.stdev(d):.2f} | {up} of {len(d)} | "
                     f"{down} of {len(d)} |")
    text = "\n".join(lines)
    print(text)
    write_summary(args.json, text, args, accuracy=acc, pairs=pairs)
    if args.record:
        record(text)


if __name__ == "__main__":
    main()
