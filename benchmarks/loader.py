"""Does training wait for vaeaug? A real DataLoader drained with each pipeline, images/s side by side.

Nothing is trained: each arm iterates one epoch of a ``torch.utils.data.DataLoader`` the way a
training loop would (2 worker processes, ``pin_memory=False``, batch 64, shuffled) and counts the
images that come out per second; the batch that starts the workers is not counted. Fashion-MNIST
28x28 uint8, the default 28x28 model (``vaeaug.fit`` for one epoch on 5,000 images: speed does not
depend on the weights), its ONNX export, the default setting (delta form, isotropic, strength 1).

Arms:
  (a)  no augmentation: ``(uint8 tensor (1, 28, 28), label)``
  (b)  classic torchvision: ``v2.RandomAffine(10 deg, 10% translate, 0.9-1.1 scale)`` per sample
  (b') classic albumentations: ``A.Compose([Affine(same), GaussianBlur(3)])`` per sample (HWC)
  (c)  ``vaeaug.VAEAugment(onnx path, p=1)`` per sample in the workers (one onnxruntime thread each)
  (c') the same on the torch backend
  (f)  the albumentations adapter ``vaeaug.albumentations.VAEAugment(onnx path, p=1)`` in ``A.Compose``
  (d)  ``VAEAugmentedDataset(onnx path, variants_per_sample=4)``, variant indices only (a quarter as
       many sources, so as many images as the other arms), ``__getitems__`` batches: the first epoch
       (new workers: every source encoded once, in the worker that first meets it)
  (d') the same, later epochs: ``persistent_workers=True``, two epochs first, so each worker keeps
       the encodings of the sources it met (each variant is then one decoder pass)
  (e)  the batch path: ``VAEAugment(onnx path, p=1)`` on each collated batch in the main process,
       fed by (a)'s loader

Method: all arms run in turn for ``--rounds`` rounds (one epoch per arm per round); the table gives
the best round's images/s and the median, and ratios to (a) and to (b') from the best rounds.
The main process runs on one torch thread.

Usage:
    python benchmarks/loader.py                 # prints a markdown block
    python benchmarks/loader.py --record        # also appends it to BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

import vaeaug
from vaeaug.data.builtin import find_fashion_mnist, read_idx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fit import cpu_name, record  # noqa: E402


class Images(Dataset):
    """Fashion-MNIST as ``(uint8 tensor (1, 28, 28), int)``; ``hwc=True`` runs an albumentations pipeline
    on the ``(28, 28, 1)`` array and returns the tensor."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform: Any = None, hwc: bool = False) -> None:
        self.x, self.y, self.transform, self.hwc = x, y, transform, hwc

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.hwc:
            img = self.transform(image=self.x[i][:, :, None])["image"]
            return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1), int(self.y[i])
        t = torch.from_numpy(self.x[i][None])
        return (t if self.transform is None else self.transform(t)), int(self.y[i])


class Shuffled(torch.utils.data.Sampler[int]):
    """The indices ``lo..hi-1`` in a new order every epoch (the variant indices of the dataset arms)."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi, self.epoch = lo, hi, 0

    def __len__(self) -> int:
        return self.hi - self.lo

    def __iter__(self) -> Any:
        self.epoch += 1
        g = torch.Generator().manual_seed(self.epoch)
        return iter((self.lo + torch.randperm(self.hi - self.lo, generator=g)).tolist())


def drain(loader: DataLoader, after: Callable[[Any], Any] | None = None) -> float:
    """Images/s over one epoch of ``loader``, the first batch (worker start-up) not counted."""
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
    ap.add_argument("--images", type=int, default=6400, help="images per epoch (per arm and round)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="epochs per arm; the best and the median are reported")
    ap.add_argument("--record", action="store_true", help="also append the block to BENCHMARKS.md")
    args = ap.parse_args()

    torch.set_num_threads(1)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    from vaeaug.albumentations import VAEAugment as AlbVAEAugment

    folder = find_fashion_mnist()
    if folder is None:
        raise SystemExit("Fashion-MNIST not found: apt-get install dataset-fashion-mnist")
    x_all = np.array(read_idx(next(folder.glob("train-images-idx3-ubyte*"))))
    y_all = np.array(read_idx(next(folder.glob("train-labels-idx1-ubyte*")))).astype(np.int64)
    model = vaeaug.fit(x_all[:5000], epochs=1, progress=False, device="cpu")
    onnx_path = str(vaeaug.export_onnx(model, Path(tempfile.mkdtemp()) / "m.onnx")["augmenter"])
    n = args.images
    x, y = x_all[5000:5000 + n], y_all[5000:5000 + n]
    kw: dict[str, Any] = {"batch_size": args.batch_size, "num_workers": args.workers, "pin_memory": False}

    affine = v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))
    classic_alb = A.Compose([A.Affine(rotate=(-10, 10), translate_percent=(-0.1, 0.1), scale=(0.9, 1.1), p=1.0),
                             A.GaussianBlur(blur_limit=(3, 3), p=1.0)])
    aug_onnx = vaeaug.VAEAugment(onnx_path, p=1.0)
    aug_torch = vaeaug.VAEAugment(model, p=1.0)
    adapter = A.Compose([AlbVAEAugment(onnx_path, p=1.0)])
    batch_aug = vaeaug.VAEAugment(onnx_path, p=1.0)
    k, m = 4, n // 4  # m sources x 4 variants: n images an epoch
    base = Images(x_all[5000:5000 + m], y_all[5000:5000 + m])
    ds_cold = vaeaug.VAEAugmentedDataset(base, onnx_path, variants_per_sample=k)
    ds_warm = vaeaug.VAEAugmentedDataset(base, onnx_path, variants_per_sample=k)
    warm = DataLoader(ds_warm, sampler=Shuffled(m, m * (1 + k)), persistent_workers=True, **kw)
    for _ in range(2):  # each persistent worker meets (and keeps) most sources
        for _ in warm:
            pass

    arms: dict[str, Callable[[], float]] = {
        "(a) no augmentation": lambda: drain(DataLoader(Images(x, y), shuffle=True, **kw)),
        "(b) classic torchvision RandomAffine": lambda: drain(DataLoader(Images(x, y, affine), shuffle=True, **kw)),
        "(b') classic albumentations Affine + GaussianBlur": lambda: drain(
            DataLoader(Images(x, y, classic_alb, hwc=True), shuffle=True, **kw)),
        "(c) VAEAugment(onnx) per sample": lambda: drain(DataLoader(Images(x, y, aug_onnx), shuffle=True, **kw)),
        "(c') VAEAugment(model) per sample, torch backend": lambda: drain(
            DataLoader(Images(x, y, aug_torch), shuffle=True, **kw)),
        "(f) albumentations adapter VAEAugment(onnx) in A.Compose": lambda: drain(
            DataLoader(Images(x, y, adapter, hwc=True), shuffle=True, **kw)),
        "(d) VAEAugmentedDataset(onnx, k=4), first epoch": lambda: drain(
            DataLoader(ds_cold, sampler=Shuffled(m, m * (1 + k)), **kw)),
        "(d') VAEAugmentedDataset(onnx, k=4), later epochs (persistent workers)": lambda: drain(warm),
        "(e) batch path: VAEAugment(onnx) on the collated batch, main process": lambda: drain(
            DataLoader(Images(x, y), shuffle=True, **kw), after=lambda b: batch_aug(b[0], b[1])),
    }
    runs: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(args.rounds):
        for j in range(len(arms)):  # the order rotated by one arm each round
            name = list(arms)[(j + r) % len(arms)]
            runs[name].append(arms[name]())
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{v[-1]:,.0f}" for v in runs.values()), flush=True)
    best = {name: max(v) for name, v in runs.items()}
    none, classic = best["(a) no augmentation"], best["(b') classic albumentations Affine + GaussianBlur"]
    when = datetime.date.today().isoformat()
    cmd = "python benchmarks/loader.py " + " ".join(sys.argv[1:])
    lines = [
        f"### loader: Fashion-MNIST 28x28, a DataLoader with {args.workers} workers, batch {args.batch_size}, "
        f"pin_memory off, {n:,} images an epoch, best of {args.rounds} epochs per arm ({when})",
        "",
        f"Machine: {cpu_name()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"Python {platform.python_version()}, vaeaug {vaeaug.__version__}. Command: `{cmd}`. Default model "
        "and setting (delta, isotropic, strength 1), p=1; one onnxruntime thread per process.",
        "",
        "| arm | images/s (best) | median | ratio to (a) | ratio to classic albumentations (b') |",
        "|---|---|---|---|---|",
        *[f"| {name} | {best[name]:,.0f} | {statistics.median(v):,.0f} | {best[name] / none:.2f} "
          f"| {best[name] / classic:.2f} |" for name, v in runs.items()],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.record:
        record(text)


if __name__ == "__main__":
    main()
