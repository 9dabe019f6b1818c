"""How noisy is one tune unit, and how much of it is the check the inner slice picks?

One fold of ``tune``'s split of a reduced training set (the same construction as ``tune``: 3
stratified folds, a VAE refit on the fold's training part, an inner slice of 15% to stop on). The
reference is the classic transforms; the candidates are ``none`` and vaeaug's default setting. Each
arm trains ``--repeats`` classifiers (seeds as tune's repeats), and each run is scored twice on the
same held-out fold: at its best check (``average=False``) and by the mean predictions of its
plateau (``average=True``; the same training trajectory, so the pair is exact). Prints, per
candidate and scoring, the mean and standard deviation over repeats of the paired unit (log-loss,
Brier and accuracy gains over the reference): the standard deviation is the noise one unit carries.

Usage:
    python benchmarks/tune_noise.py --data fashion-mnist --per-class 50 --seed 0 --repeats 6
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from common import machine, write_summary  # a sibling script: benchmarks/ is on sys.path when run

import vaeaug
from vaeaug.backends.torch_backend import TorchBackend
from vaeaug.core.augment import Augmenter
from vaeaug.data import as_tensor_data
from vaeaug.fitting.classic import ClassicTransform
from vaeaug.protocol.classifier import ClassifierRun, train_classifier
from vaeaug.protocol.evaluation import reduce_per_class
from vaeaug.protocol.tuning import MAX_LOSS, TUNE_BUDGET, stratified_folds, stratified_split


def unit(ref: ClassifierRun, cand: ClassifierRun, y: torch.Tensor) -> dict[str, float]:
    """The paired gains of ``cand`` over ``ref`` on one fold: log-loss and Brier (lower is better), accuracy."""
    assert ref.true_logprob is not None and cand.true_logprob is not None
    assert ref.brier is not None and cand.brier is not None and ref.predictions is not None
    assert cand.predictions is not None
    ll = (-ref.true_logprob).clamp(max=MAX_LOSS) - (-cand.true_logprob).clamp(max=MAX_LOSS)
    acc = (cand.predictions == y).float() - (ref.predictions == y).float()
    return {"logloss": float(ll.mean()), "brier": float((ref.brier - cand.brier).mean()),
            "accuracy": 100.0 * float(acc.mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--vae-epochs", type=int, default=300)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    train = as_tensor_data(args.data, split="train")
    assert train.y is not None
    flip = args.data == "fashion-mnist"
    idx = reduce_per_class(train.y, args.per_class, args.seed)
    tr, _ = stratified_split(train.y[idx], 0.2, args.seed)  # evaluate's training part
    x, y = train.x[idx[tr]], train.y[idx[tr]]
    folds = stratified_folds(y, 3, args.seed)
    rest = torch.cat(folds[1:]).sort().values
    fit_part, inner = stratified_split(y[rest], 0.15, args.seed)
    x_tr, y_tr = x[rest[fit_part]], y[rest[fit_part]]
    val = (x[rest[inner]], y[rest[inner]])
    x_held, y_held = x[folds[0]], y[folds[0]]
    num_classes = int(train.y.max()) + 1
    vae = vaeaug.fit(x_tr, y_tr, epochs=args.vae_epochs, batch_size=64, kl_warmup=min(50, args.vae_epochs // 4),
                     conditional=True, num_classes=num_classes, patience=None, seed=args.seed + 101, progress=False,
                     device="cpu", distributed=False, interruptible=False)
    arms = {"classic": {"base": ClassicTransform(flip)}, "none": {},
            "vae": {"aug": Augmenter(TorchBackend(vae), vaeaug.AugmentSetting())}}
    runs: dict[tuple[str, bool], list[ClassifierRun]] = {}
    for r in range(args.repeats):
        for name, kw in arms.items():
            for average in (False, True):
                runs.setdefault((name, average), []).append(train_classifier(
                    x_tr, y_tr, x_held, y_held, num_classes=num_classes, seed=args.seed + 1000 * r,
                    budget=TUNE_BUDGET, val=val, average=average, **kw))  # type: ignore[arg-type]
    rows = []
    for cand in ("none", "vae"):
        for average in (False, True):
            units = [unit(a, b, y_held) for a, b in zip(runs[("classic", average)], runs[(cand, average)],
                                                         strict=True)]
            row = {"candidate": cand, "scoring": "plateau" if average else "best check"}
            for k in ("logloss", "brier", "accuracy"):
                v = [u[k] for u in units]
                row[k] = {"mean": statistics.fmean(v), "sd": statistics.stdev(v), "units": v}
            rows.append(row)
            print(f"{cand:5s} over classic, {row['scoring']:10s}: " + "  ".join(
                f"{k} {row[k]['mean']:+.4f} ± {row[k]['sd']:.4f}" for k in ("logloss", "brier", "accuracy")))
    summary = (f"{args.data} {args.per_class}/class seed {args.seed}: fold 0 ({len(y_held)} held-out images, "
               f"{len(y_tr)} to train, {len(val[1])} to stop), {args.repeats} repeats, "
               f"{time.perf_counter() - t0:.0f} s, {machine()}")
    print(summary)
    write_summary(args.json, summary, args, rows=rows)


if __name__ == "__main__":
    main()
