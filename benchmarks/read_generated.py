"""Reading a generated set: what opening it costs now that it hashes every image shard, against an epoch of reads.

Writes a set of random uint8 28x28 images (real samples only: no model call, so it is quick to make), then
times, over ``--rounds`` rounds (the order rotated every round):

* ``open``: ``GeneratedDataset(root)``, which checks the manifest, the label files and every image shard's
  header, size and SHA-256 (one read of the set, in blocks of 1 MiB);
* ``open (verify=True)``: the whole of ``verify_generated`` at opening;
* ``epoch``: one pass over every sample of an opened set, in the main process (``--workers 0``, shuffled, sample
  by sample) or in a ``DataLoader`` with ``--workers`` worker processes (shuffled batches of 256); workers
  inherit the opened set, so they hash nothing.

Usage:
    python benchmarks/read_generated.py --samples 300000 --workers 2 [--rounds 3] [--record]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import machine, record, write_summary

import vaeaug
from vaeaug import GeneratedDataset


def timed_open(root: Path, verify: bool) -> tuple[float, GeneratedDataset]:
    """Seconds to open the set (with ``verify``), and the opened set."""
    t = time.perf_counter()
    ds = GeneratedDataset(root, verify=verify)
    return time.perf_counter() - t, ds


def epoch(ds: GeneratedDataset, workers: int, seed: int) -> float:
    """Seconds to read every sample once, in a shuffled order."""
    t = time.perf_counter()
    if workers == 0:
        for i in np.random.default_rng(seed).permutation(len(ds)):
            ds[int(i)]
    else:
        loader = torch.utils.data.DataLoader(ds, batch_size=256, shuffle=True, num_workers=workers,
                                             generator=torch.Generator().manual_seed(seed))
        for _ in loader:
            pass
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=300_000)
    ap.add_argument("--shard-size", type=int, default=65_536)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    if args.rounds < 1 or args.samples < 1:
        ap.error("--rounds and --samples must be at least 1")
    x = np.random.default_rng(0).integers(0, 256, (args.samples, 1, 28, 28), dtype=np.uint8)
    model = vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 28, 28)), value_range=vaeaug.ValueRange(0, 255, "uint8"))
    times: dict[str, list[float]] = {"open": [], "verify": [], "epoch": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "set"
        vaeaug.pregenerate(x, model, root, variants_per_sample=0, shard_size=args.shard_size, progress=False)
        size = sum(p.stat().st_size for p in root.glob("shard-*-x.npy"))
        del x
        for r in range(args.rounds):
            for mode in (["open", "verify"] if r % 2 == 0 else ["verify", "open"]):
                seconds, ds = timed_open(root, mode == "verify")
                times[mode].append(seconds)
            times["epoch"].append(epoch(ds, args.workers, seed=r))
            print(f"round {r}: " + ", ".join(f"{m} {v[-1]:.2f} s" for m, v in times.items()), flush=True)
    best = {m: min(v) for m, v in times.items()}
    where = "the main process" if args.workers == 0 else f"a DataLoader with {args.workers} workers"
    lines = [f"### read_generated: {args.samples:,} uint8 28x28 samples ({size / 1e6:.0f} MB of image shards), "
             f"epochs in {where} ({time.strftime('%Y-%m-%d')}; {machine()})", "",
             f"`python benchmarks/read_generated.py --samples {args.samples} --workers {args.workers} "
             f"--rounds {args.rounds}`; the best of {args.rounds} rounds.", "",
             "| step | seconds | MB/s of image shards | ratio to one epoch |", "|---|---|---|---|"]
    label = {"open": "open (hashes every image shard: the default)", "verify": "open with `verify=True`",
             "epoch": "one epoch of reads"}
    for m in ("open", "verify", "epoch"):
        lines.append(f"| {label[m]} | {best[m]:.2f} | {size / 1e6 / best[m]:.0f} | {best[m] / best['epoch']:.2f}x |")
    summary = "\n".join(lines) + "\n"
    print(summary)
    rows: dict[str, Any] = {"seconds": times, "bytes": size}
    write_summary(args.json, summary, args, **rows)
    if args.record:
        record(summary)


if __name__ == "__main__":
    main()
