"""Loader throughput with and without VAE augmentation, side by side in one run.

Fashion-MNIST 28x28 uint8, a DataLoader with 2 workers and batch 256, the default 28x28 model.
Arms (samples/s over the measured batches, the first batch excluded as start-up):
  (a) no augmentation
  (b) classic: torchvision v2.RandomAffine(10 deg, 10% translate, 0.9-1.1 scale) per sample
      (the reference, ratio 1.00); also albumentations Affine + GaussianBlur per sample
  (c) VAEAugment(p=1) as a per-sample transform in the workers (default form: delta)
  (d) VAEAugmentedDataset, variant indices only (every sample made), __getitems__ batches
  (e) the batch path: VAEAugment on the collated (N, C, H, W) tensor in the main process
  (d) and (e) in the default delta form and in the decode form (one decoder pass fewer)
  ONNX rows (the model exported with vaeaug.export_onnx, onnxruntime with one thread per worker):
  (c-onnx) the per-sample VAEAugment, (f-onnx) the albumentations adapter per sample, both
  beside (b'), the classic albumentations pipeline; (d-onnx) VAEAugmentedDataset

Usage:
    python benchmarks/augment.py                 # prints a markdown block
    python benchmarks/augment.py --record        # also appends it to BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

import vaeaug
from vaeaug.data.builtin import find_fashion_mnist, read_idx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, record  # noqa: E402


class Images(Dataset):
    """Fashion-MNIST as (uint8 tensor (1, 28, 28), int) or, with hwc=True, (uint8 HWC array, int)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform: Any = None, hwc: bool = False) -> None:
        self.x, self.y, self.transform, self.hwc = x, y, transform, hwc

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Any:
        img = self.x[i][:, :, None] if self.hwc else torch.from_numpy(self.x[i][None])
        if self.transform is not None:
            img = self.transform(image=img)["image"] if self.hwc else self.transform(img)
        if self.hwc:
            img = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
        return img, int(self.y[i])


class Range(Sampler[int]):
    def __init__(self, lo: int, hi: int, seed: int = 0) -> None:
        self.lo, self.hi, self.seed = lo, hi, seed

    def __len__(self) -> int:
        return self.hi - self.lo

    def __iter__(self) -> Any:
        g = torch.Generator().manual_seed(self.seed)
        return iter((self.lo + torch.randperm(self.hi - self.lo, generator=g)).tolist())


def rate(loader: DataLoader, after: Any = None) -> float:
    """Samples/s over all batches but the first (worker start-up)."""
    it = iter(loader)
    next(it)
    n, t = 0, time.perf_counter()
    for batch in it:
        if after is not None:
            batch = after(batch)
        n += len(batch[0])
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=20480, help="samples per arm")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="repeat all arms, report the best round")
    ap.add_argument("--arms", default=None, help="only these arms, by their ids, e.g. a,b,b',c-onnx,f-onnx "
                    "(b and b' always run: the references)")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()

    folder = find_fashion_mnist()
    if folder is None:
        raise SystemExit("Fashion-MNIST not found: apt-get install dataset-fashion-mnist")
    x = read_idx(next(folder.glob("train-images-idx3-ubyte*")))[: args.samples]
    y = read_idx(next(folder.glob("train-labels-idx1-ubyte*")))[: args.samples].astype(np.int64)
    model = vaeaug.fit(x[:5000], epochs=1, progress=False, device="cpu")
    n = len(x)
    kw = dict(batch_size=args.batch_size, num_workers=args.workers, persistent_workers=False)

    import albumentations as A

    affine = v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))
    alb = A.Compose([A.Affine(rotate=(-10, 10), translate_percent=(-0.1, 0.1), scale=(0.9, 1.1), p=1.0),
                     A.GaussianBlur(blur_limit=(3, 3), p=1.0)])
    aug = vaeaug.VAEAugment(model, p=1.0)  # the default form: delta (two decoder passes)
    batch_aug = vaeaug.VAEAugment(model, p=1.0)
    batch_dec = vaeaug.VAEAugment(model, p=1.0, form="decode", mode="posterior")
    ds_var = vaeaug.VAEAugmentedDataset(Images(x, y), model, variants_per_sample=1)
    ds_dec = vaeaug.VAEAugmentedDataset(Images(x, y), model, variants_per_sample=1, form="decode", mode="posterior")
    onnx_path = str(vaeaug.export_onnx(model, Path(tempfile.mkdtemp()) / "m.onnx")["augmenter"])
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from vaeaug.albumentations import VAEAugment as AlbVAEAugment

    aug_onnx = vaeaug.VAEAugment(onnx_path, p=1.0)
    alb_onnx = A.Compose([AlbVAEAugment(onnx_path, p=1.0)])
    ds_onnx = vaeaug.VAEAugmentedDataset(Images(x, y), onnx_path, variants_per_sample=1)

    arms: dict[str, Any] = {
        "(a) no augmentation": lambda: rate(DataLoader(Images(x, y), shuffle=True, **kw)),
        "(b) classic: torchvision RandomAffine": lambda: rate(DataLoader(Images(x, y, affine), shuffle=True, **kw)),
        "(b') classic: albumentations Affine + GaussianBlur": lambda: rate(
            DataLoader(Images(x, y, alb, hwc=True), shuffle=True, **kw)),
        "(c) VAEAugment p=1, per-sample transform": lambda: rate(DataLoader(Images(x, y, aug), shuffle=True, **kw)),
        "(d) VAEAugmentedDataset, __getitems__ (variant indices), delta": lambda: rate(
            DataLoader(ds_var, sampler=Range(n, 2 * n), **kw)),
        "(d') the same, decode form": lambda: rate(DataLoader(ds_dec, sampler=Range(n, 2 * n), **kw)),
        "(e) batch path: VAEAugment on the collated batch, delta": lambda: rate(
            DataLoader(Images(x, y), shuffle=True, **kw), after=lambda b: (batch_aug(b[0], b[1])[0], b[1])),
        "(e') the same, decode form": lambda: rate(
            DataLoader(Images(x, y), shuffle=True, **kw), after=lambda b: (batch_dec(b[0], b[1])[0], b[1])),
        "(c-onnx) VAEAugment p=1, per-sample, ONNX backend, delta": lambda: rate(
            DataLoader(Images(x, y, aug_onnx), shuffle=True, **kw)),
        "(f-onnx) albumentations adapter p=1, per-sample, ONNX backend, delta": lambda: rate(
            DataLoader(Images(x, y, alb_onnx, hwc=True), shuffle=True, **kw)),
        "(d-onnx) VAEAugmentedDataset, __getitems__, ONNX backend, delta": lambda: rate(
            DataLoader(ds_onnx, sampler=Range(n, 2 * n), **kw)),
    }
    if args.arms is not None:
        wanted = set(args.arms.split(",")) | {"b", "b'"}
        unknown = wanted - {name[1:name.index(")")] for name in arms}
        if unknown:
            raise SystemExit(f"--arms: no arm {sorted(unknown)}; the arms are "
                             f"{[name[1:name.index(')')] for name in arms]}")
        arms = {name: run for name, run in arms.items() if name[1:name.index(")")] in wanted}
    import vaeaug.albumentations as va

    best: dict[str, float] = {}
    for r in range(args.rounds):
        for j in range(len(arms)):  # the order rotated by one arm each round (the same as loader.py)
            name = list(arms)[(j + r) % len(arms)]
            v = arms[name]()
            best[name] = max(best.get(name, 0.0), v)
            print(f"round {r + 1}: {name}: {v:,.0f} samples/s", flush=True)
    ref = best["(b) classic: torchvision RandomAffine"]
    ref_alb = best["(b') classic: albumentations Affine + GaussianBlur"]
    when = datetime.date.today().isoformat()
    cmd = "python benchmarks/augment.py " + " ".join(sys.argv[1:])
    lines = [
        f"### augment: Fashion-MNIST 28x28, {args.workers} workers, batch {args.batch_size}, "
        f"{n:,} samples per arm, best of {args.rounds} rounds ({when})",
        "",
        f"Machine: {cpu_name()}, torch {torch.__version__}, Python {platform.python_version()}. "
        f"onnxruntime {onnxruntime.__version__}. albumentations: {va.ALBUMENTATIONS_LINE} {A.__version__}. "
        f"Command: `{cmd}`. Backend: torch (eager, CPU) unless "
        "the arm says ONNX (onnxruntime, one thread per worker).",
        "",
        "| arm | samples/s | ratio to (b) | ratio to (b') |",
        "|---|---|---|---|",
        *[f"| {name} | {v:,.0f} | {v / ref:.2f} | {v / ref_alb:.2f} |" for name, v in best.items()],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.record:
        record(text)


if __name__ == "__main__":
    main()
