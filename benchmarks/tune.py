"""How long ``vaeaug.tune`` takes on 500 images of 28x28 (issue 21's budget: 8 minutes on 2 cores with four
candidates), and what it decides on the real labels and on shuffled labels (where it must say no).

``--pipeline`` chooses the pipeline: the reference is the classic transforms, the candidates ``none``, the
first ``--grid`` VAE settings alone and each followed by classic (``--grid 1``: four candidates).

Usage:
    python benchmarks/tune.py --per-class 50 --seed 0
    python benchmarks/tune.py --per-class 50 --pipeline --grid 1
"""

from __future__ import annotations

import argparse
import time

import torch
from common import machine  # a sibling script: benchmarks/ is on sys.path when run

import vaeaug
from vaeaug.data import as_tensor_data
from vaeaug.fitting.classic import ClassicTransform
from vaeaug.protocol.evaluation import reduce_per_class
from vaeaug.protocol.tuning import DEFAULT_GRID


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=300, help="epochs of the user's fit (and of tune's refits)")
    ap.add_argument("--shuffled", action="store_true", help="also tune on shuffled labels")
    ap.add_argument("--pipeline", action="store_true", help="choose among classic, none, vaeaug and vaeaug+classic")
    ap.add_argument("--grid", type=int, default=len(DEFAULT_GRID), help="the first N settings of the default grid")
    args = ap.parse_args()
    train = as_tensor_data(args.data, split="train")
    idx = reduce_per_class(train.y, args.per_class, args.seed)
    x, y = train.x[idx], train.y[idx]
    print(f"{args.data}: {len(x)} images {tuple(x.shape[1:])}; {machine()}")
    cases = [("real labels", y)]
    if args.shuffled:
        cases.append(("shuffled labels", y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]))
    for name, labels in cases:
        t0 = time.perf_counter()
        model = vaeaug.fit(x, labels, epochs=args.epochs, conditional=True, patience=None, kl_warmup=50,
                           batch_size=64, seed=args.seed, progress=False)
        t1 = time.perf_counter()
        flip = args.data.lower().replace("_", "-") in ("fashion-mnist", "fashionmnist")
        extra = {"transforms": {"classic": ClassicTransform(flip)}} if args.pipeline else {}
        r = vaeaug.tune(model, x, labels, grid=DEFAULT_GRID[:args.grid], seed=args.seed, progress=True, **extra)
        t2 = time.perf_counter()
        print(f"{name}: fit {t1 - t0:.0f} s, tune {t2 - t1:.0f} s ({len(r['scores'])} candidates, {r['runs']} "
              f"classifier runs); {r['recommendation']}; {r['reason']}")


if __name__ == "__main__":
    main()
