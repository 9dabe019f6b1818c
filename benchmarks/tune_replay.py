"""Replay tune's verdicts from stored evidence under other accuracy guards (no training).

Each report of ``benchmarks/quality.py`` (its ``pipeline`` arm) and of ``benchmarks/tune_calibration.py``
(runs after 0417ab8) stores every candidate's units: the (fold, repeat) keys, the accuracy and the mean
per-image loss of each run. The finalist's paired units against the reference are rebuilt from them, the
log-loss test is run again, and the verdict is taken under each guard on the accuracy units:

- ``mean>=0``: the mean accuracy gain is at least 0 (tune's rule);
- ``none``: the log-loss test alone;
- ``t>-1``: the accuracy units' t-statistic is above -1;
- ``not-sig``: an accuracy loss is not significant at ``alpha`` (one-sided).

Where a fixed arm of the report trains the finalist (``vae``: the default setting alone, ``vae+classic``: it
then classic, ``none``), the finalist's test gain over the reference arm is printed too.

Usage:
    python benchmarks/tune_replay.py benchmarks/results/issue21/*plateau*.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vaeaug.protocol.tuning import paired_t_test, t_sf

# a candidate label of tune(transforms={"classic": ...}) -> the fixed arm of quality.py that trains it
FIXED_ARM = {"none": "none", "classic": "classic", "vaeaug delta isotropic s=1 p=0.5": "vae",
             "vaeaug delta isotropic s=1 p=0.5, then classic": "vae+classic"}


def t_stat(v: Sequence[float]) -> float:
    """The accuracy units' t-statistic against 0, for the guards (tune's own test: ``paired_t_test``)."""
    m, s = statistics.fmean(v), statistics.stdev(v)
    return m / (s / math.sqrt(len(v))) if s > 0 else (math.inf if m > 0 else -math.inf if m < 0 else 0.0)


def guards(alpha: float) -> dict[str, Callable[[float, list[float]], bool]]:
    """Guard name -> verdict(p of the log-loss test, the accuracy units)."""
    return {"mean>=0": lambda p, acc: p < alpha and statistics.fmean(acc) >= 0,
            "none": lambda p, acc: p < alpha,
            "t>-1": lambda p, acc: p < alpha and t_stat(acc) > -1,
            "not-sig": lambda p, acc: p < alpha and t_sf(-t_stat(acc), len(acc) - 1) >= alpha}


def finalist_units(scores: list[dict[str, Any]], reference: str, finalist: str) -> tuple[list[float], list[float]]:
    """The finalist's paired (loss gain, accuracy gain) units against the reference, by (fold, repeat)."""
    by = {s["label"]: s for s in scores}
    ref = {tuple(k): (a, loss) for k, a, loss in zip(by[reference]["runs"], by[reference]["val_accuracy"],
                                                     by[reference]["losses"], strict=True)}
    c = by[finalist]
    units = [(ref[tuple(k)][1] - loss, a - ref[tuple(k)][0])
             for k, a, loss in zip(c["runs"], c["val_accuracy"], c["losses"], strict=True) if tuple(k) in ref]
    return [u for u, _ in units], [a for _, a in units]


def replay(path: Path, alpha: float) -> dict[str, int]:
    """Print each verdict of one report under every guard; return the number of yeses per guard."""
    report = json.loads(path.read_text())
    rules = guards(alpha)
    yes = dict.fromkeys(rules, 0)
    if "runs" in report:  # tune_calibration.py: nothing is tested on a test set
        cases = [(f"run {r['run']}", r["scores"], r["scores"][0]["label"], r["finalist"], None, r["yes"])
                 for r in report["runs"] if "scores" in r]
    else:
        arms = report["arms"]
        ref_arm = "oversample+classic" if "oversample+classic" in arms else "classic"
        cases = []
        for i, c in enumerate(report["pipeline"]["per_seed"]):
            reference = c["scores"][0]["label"]  # tune lists the reference first
            arm = FIXED_ARM.get(c["finalist"]) if "oversample" not in ref_arm else None
            test = arms[arm]["per_seed"][i] - arms[ref_arm]["per_seed"][i] if arm in arms else None
            cases.append((f"seed {i}", c["scores"], reference, c["finalist"], test, c["pipeline"] != reference))
    print(f"== {path.name}")
    for name, scores, reference, finalist, test, said_yes in cases:
        loss, acc = finalist_units(scores, reference, finalist)
        p = paired_t_test(loss)
        verdicts = {g: rule(p, acc) for g, rule in rules.items()}
        if verdicts["mean>=0"] != said_yes:  # tune's own rule must replay to what tune said
            print(f"  {name}: the replay of tune's rule says {verdicts['mean>=0']}, tune said {said_yes} (alpha?)")
        for g, v in verdicts.items():
            yes[g] += v
        if p < alpha or len(set(verdicts.values())) > 1:
            gain = "not measured" if test is None else f"{test:+.2f}"
            print(f"  {name}: {finalist[:50]!r} p={p:.3f} accuracy {statistics.fmean(acc):+.2f} ± "
                  f"{statistics.stdev(acc):.2f} (t {t_stat(acc):+.2f}); test gain {gain}; "
                  + " ".join(f"{g}={'yes' if v else 'no'}" for g, v in verdicts.items()))
    print(f"  yes per guard over {len(cases)}: {yes}")
    return yes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", type=Path)
    ap.add_argument("--alpha", type=float, default=0.1)
    args = ap.parse_args()
    for path in args.reports:
        replay(path, args.alpha)


if __name__ == "__main__":
    main()
