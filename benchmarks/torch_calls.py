"""The torch backend's large CPU batches: one call against calls bounded by ``CPU_CALL_VALUES``.

Builds the same ``VAEAugment(model, p=1)`` twice: once with the bound lifted (the whole batch in one
call, as before the bound) and once as shipped; times them interleaved on batches of uint8 images
(each goes first in every other round), one thread, and checks that the outputs are identical for the same seed.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/torch_calls.py --shape 3,128,128 [--rounds 10] [--batch 256]
"""

from __future__ import annotations

import argparse
import time

import torch

import vaeaug
from vaeaug.backends import torch_backend


def build(model: vaeaug.VAE, bounded: bool, seed: int = 0) -> vaeaug.VAEAugment:
    """The transform with the shipped bound, or with the bound lifted (read when the backend is made)."""
    shipped = torch_backend.CPU_CALL_VALUES
    torch_backend.CPU_CALL_VALUES = shipped if bounded else 1 << 62
    try:
        return vaeaug.VAEAugment(model, p=1.0, seed=seed)
    finally:
        torch_backend.CPU_CALL_VALUES = shipped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="3,128,128")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    shape = tuple(int(v) for v in args.shape.split(","))
    model = vaeaug.VAE(vaeaug.VAEConfig(input_shape=shape))
    arms = {"one call (before)": build(model, False), "bounded calls (after)": build(model, True)}
    x = torch.randint(0, 256, (args.batch, *shape), dtype=torch.uint8)
    times: dict[str, list[float]] = {k: [] for k in arms}
    for r in range(args.rounds):
        for k, aug in (list(arms.items()) if r % 2 == 0 else list(arms.items())[::-1]):  # alternate who goes first
            t = time.perf_counter()
            aug(x)
            times[k].append((time.perf_counter() - t) / args.batch * 1e6)
    before, after = (min(v) for v in times.values())
    same = torch.equal(build(model, False, 5)(x), build(model, True, 5)(x))
    rows = max(1, torch_backend.CPU_CALL_VALUES // (shape[0] * shape[1] * shape[2]))
    print(f"{shape}, batch {args.batch}, {min(rows, args.batch)} rows a bounded call, best of {args.rounds}: "
          f"one call {before:.0f} us/image, bounded {after:.0f} us/image, after/before speed {before / after:.2f}x; "
          f"uint8 outputs {'identical' if same else 'DIFFER'}")


if __name__ == "__main__":
    main()
