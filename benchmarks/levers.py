"""Experimental quality levers under the converged protocol, before any of them goes into the core.

Each lever is an augmenter built from the seed's generator and run as an extra arm of
:func:`vaeaug.evaluate` (same subset, split, VAE and classifier initialisation as ``none``), so
its paired gain is comparable with the tables of ``benchmarks/quality.py``. A lever that helps
across datasets and seeds moves into the core; one that does not is recorded in BENCHMARKS.md.

Levers here:

* ``filter``: label-consistency filter. The class-conditional VAE scores each variant under every
  label (negative ELBO at the posterior mean); a variant is kept if its own label scores within
  ``margin`` nats of the best label, else the original image is kept.

Usage:
    python benchmarks/levers.py --data fashion-mnist --per-class 50 --seeds 3 --levers filter --out reports/levers
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from quality import write_report  # a sibling script: benchmarks/ is on sys.path when run

from vaeaug.augment import Augmenter
from vaeaug.evaluation import evaluate
from vaeaug.settings import DEFAULT_AUGMENT, AugmentSetting


class LabelFilter:
    """Variants of ``setting``, each kept only if the conditional VAE still finds its label the most likely."""

    def __init__(self, gen: Any, setting: AugmentSetting, margin: float = 0.0) -> None:
        if not gen.conditional:
            raise ValueError("the label filter needs a class-conditional VAE")
        self.aug = Augmenter(gen, setting)
        self.vae = gen.model
        self.num_classes = int(gen.config.num_classes)
        self.margin = margin
        self.kept: list[float] = []

    def codec(self, kind: str) -> Any:
        return self.aug.codec(kind)

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` negative ELBO (at the posterior mean) of every row under every label."""
        n, c = x.shape[0], self.num_classes
        xx = x.repeat_interleave(c, 0)
        yy = torch.arange(c).repeat(n)
        mu, logvar = self.vae.encode(xx, yy)
        rec = self.vae.recon_nll(self.vae.decode_logits(mu, yy), xx)
        return (rec + self.vae.kl(mu, logvar)).reshape(n, c)

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, *, key: int, codec: Any) -> torch.Tensor:
        out = self.aug(xb, yb, key=key, codec=codec)
        changed = torch.nonzero((out != xb).flatten(1).any(1)).flatten()
        if len(changed) == 0:
            return out
        s = self.scores(out[changed])
        own = s.gather(1, yb[changed].reshape(-1, 1)).flatten()
        bad = changed[own > s.min(1).values + self.margin]
        self.kept.append(1.0 - len(bad) / len(changed))
        if len(bad):
            out = out.clone()
            out[bad] = xb[bad]
        return out


LEVERS = {
    "filter": lambda gen: LabelFilter(gen, DEFAULT_AUGMENT, 0.0),
    "filter-m5": lambda gen: LabelFilter(gen, DEFAULT_AUGMENT, 5.0),
    "filter-s2": lambda gen: LabelFilter(gen, AugmentSetting("isotropic", 2.0, "delta", 0.5), 0.0),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--vae-epochs", type=int, default=300)
    ap.add_argument("--levers", default="filter", help=f"from {', '.join(LEVERS)}")
    ap.add_argument("--arms", default="none,vae")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    t = time.perf_counter()
    report = evaluate(args.data, per_class=args.per_class, seeds=args.seeds, arms=args.arms.split(","),
                      extra_arms={n: LEVERS[n] for n in args.levers.split(",")}, vae_epochs=args.vae_epochs)
    write_report(report, Path(args.out), "levers.py", time.perf_counter() - t)

if __name__ == "__main__":
    main()
