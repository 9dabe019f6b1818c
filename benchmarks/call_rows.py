"""Large CPU batches: one model call against calls bounded by ``vaeaug.core.functional.CALL_VALUES``.

For the torch backend (a model) and the ONNX backend (its export), builds the same
``VAEAugment(p=1)`` twice: once with the bound lifted (the whole batch in one
call, as before the bound) and once as shipped; times them interleaved on batches of uint8 images
(each goes first in every other round), one thread, and checks that the outputs are identical for the same seed.

The ONNX backend's augmenter graph runs half the rows a call (it decodes ``z'`` and ``mu`` together).

Usage:
    OMP_NUM_THREADS=1 python benchmarks/call_rows.py --shape 3,128,128 [--rounds 10] [--batch 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import vaeaug
from vaeaug.core import functional


def build(model: vaeaug.VAE | str, bounded: bool, seed: int = 0) -> vaeaug.VAEAugment:
    """The transform with the shipped bound, or with the bound lifted (read when the backend is made)."""
    shipped = functional.CALL_VALUES
    functional.CALL_VALUES = shipped if bounded else 1 << 62
    try:
        return vaeaug.VAEAugment(model, p=1.0, seed=seed)
    finally:
        functional.CALL_VALUES = shipped


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
    x = torch.randint(0, 256, (args.batch, *shape), dtype=torch.uint8)
    rows = functional.call_rows(shape[0] * shape[1] * shape[2])
    with tempfile.TemporaryDirectory() as d:
        onnx = str(Path(d) / "model.onnx")
        vaeaug.export_onnx(model, onnx)
        for name, source in (("torch", model), ("onnx", onnx)):
            arms = {"one call (before)": build(source, False), "bounded calls (after)": build(source, True)}
            times: dict[str, list[float]] = {k: [] for k in arms}
            for r in range(args.rounds):
                for k, aug in (list(arms.items()) if r % 2 == 0 else list(arms.items())[::-1]):  # alternate the lead
                    t = time.perf_counter()
                    aug(x)
                    times[k].append((time.perf_counter() - t) / args.batch * 1e6)
            before, after = (min(v) for v in times.values())
            same = torch.equal(build(source, False, 5)(x), build(source, True, 5)(x))
            print(f"{name} {shape}, batch {args.batch}, {min(rows, args.batch)} rows a bounded call, best of "
                  f"{args.rounds}: one call {before:.0f} us/image, bounded {after:.0f} us/image, after/before speed "
                  f"{before / after:.2f}x; uint8 outputs {'identical' if same else 'DIFFER'}", flush=True)


if __name__ == "__main__":
    main()
