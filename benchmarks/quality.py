"""Downstream accuracy of several augmentation settings under the evaluate protocol, one run.

Every arm of a seed shares the reduced training set, the VAE and the classifier initialisation,
so the paired gains over ``none`` compare settings fairly. Writes JSON and markdown.

Usage:
    python benchmarks/quality.py --data fashion-mnist --per-class 50 --seeds 3 --out reports/fmnist50
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from vaeaug.core.settings import AugmentSetting
from vaeaug.protocol.evaluation import evaluate, report_markdown

PRESETS = {
    "delta-iso-1": AugmentSetting("isotropic", 1.0, "delta", 0.5),
    "decode-post-1": AugmentSetting("posterior", 1.0, "decode", 0.5),
    "delta-post-2": AugmentSetting("posterior", 2.0, "delta", 0.5),
    "delta-iso-0.5": AugmentSetting("isotropic", 0.5, "delta", 0.5),
    "delta-iso-1-p0.25": AugmentSetting("isotropic", 1.0, "delta", 0.25),
    "delta-interp-1": AugmentSetting("interpolate", 1.0, "delta", 0.5),
    "delta-extra-1": AugmentSetting("extrapolate", 1.0, "delta", 0.5),
    "delta-extra-2": AugmentSetting("extrapolate", 2.0, "delta", 0.5),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    ap.add_argument("--steps", type=int, default=None, help="a fixed budget (default: converged)")
    ap.add_argument("--arms", default="none,classic,vae", help="base arms (vae+classic is added by --classic-twins)")
    ap.add_argument("--imbalance", type=float, default=None)
    ap.add_argument("--vae-augment", default=None, choices=["classic", "classic+flip"])
    ap.add_argument("--vae-epochs", type=int, default=300)
    ap.add_argument("--vae-kwargs", default="{}", help='more fit() options as JSON, e.g. \'{"latent_dim": 32}\'')
    ap.add_argument("--settings", default="delta-iso-1,decode-post-1", help=f"from {', '.join(PRESETS)}")
    ap.add_argument("--classic-twins", action="store_true", help="also run each setting followed by classic")
    ap.add_argument("--tune-kwargs", default="{}",
                    help='more tune() options for the tuned and pipeline arms as JSON, e.g. \'{"score": "brier"}\'')
    ap.add_argument("--classifier", default="small", choices=["small", "bn"],
                    help="the network of every arm and of tune: the protocol's SmallCNN, or a CNN with BatchNorm "
                         "(another classifier, as a user's own); --tune-kwargs '{\"classifier\": null}' tunes with "
                         "SmallCNN while the arms train the other")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    names = args.settings.split(",")
    first, rest = names[0], names[1:]
    arms = args.arms.split(",") + (["vae+classic"] if args.classic_twins else [])
    t = time.perf_counter()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    report = evaluate(args.data, per_class=args.per_class, seeds=seeds, steps=args.steps, arms=arms,
                      setting=PRESETS[first], extra_arms={n: PRESETS[n] for n in rest}, imbalance=args.imbalance,
                      vae_epochs=args.vae_epochs, tune_kwargs=json.loads(args.tune_kwargs) or None,
                      classifier=bn_cnn if args.classifier == "bn" else None,
                      vae_kwargs={**json.loads(args.vae_kwargs),
                                  **({"augment": args.vae_augment} if args.vae_augment else {})})
    write_report(report, Path(args.out), "quality.py", time.perf_counter() - t)


def bn_cnn(shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Another classifier than the protocol's: two conv blocks with BatchNorm (32, 64), dropout 0.25, dense 128."""
    c, h, w = shape
    return nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Dropout(0.25), nn.Linear(64 * (h // 4) * (w // 4), 128), nn.ReLU(), nn.Linear(128, num_classes))


def write_report(report: dict, out: Path, script: str, seconds: float) -> None:
    """Record the command, time and torch version in ``report``; write report.json and report.md to ``out``."""
    report["config"]["command"] = f"python benchmarks/{script} " + " ".join(sys.argv[1:])
    report["config"]["seconds"] = seconds
    report["config"]["torch"] = torch.__version__
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    md = report_markdown(report) + f"\n\nCommand: `{report['config']['command']}`, {seconds:.0f} s."
    (out / "report.md").write_text(md + "\n")
    from vaeaug.viz import gains_chart, has_matplotlib

    if has_matplotlib() and any(report.get(k) for k in ("gains", "gains_over_classic", "gains_over_oversample")):
        gains_chart(report).save(out / "gains.png")  # the chart vaeaug evaluate writes too
    print(md)

if __name__ == "__main__":
    main()
