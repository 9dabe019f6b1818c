"""Does training wait for vaeaug? A real DataLoader drained with each pipeline, images/s side by side.

Nothing is trained: each arm iterates one epoch of a ``torch.utils.data.DataLoader`` the way a
training loop would (2 worker processes, ``pin_memory=False``, batch 64, shuffled) and counts the
images that come out per second; the batch that starts the workers is not counted. Fashion-MNIST
28x28 uint8, the default 28x28 model (``vaeaug.fit`` for one epoch on 5,000 images: speed does not
depend on the weights), its ONNX export, the default setting (delta form, isotropic, strength 1).
``--shape C,H,W`` (e.g. 3,64,64) measures another size as ``benchmarks/percall.py`` does: seeded random
uint8 images, the library's default model for the shape fitted for one epoch on 300 of them, the
albumentations blur kernel grown with the side (3, 5 from 48 pixels, 7 from 96); an epoch is then
6,400 images up to 1,024 values an image, 3,200 up to 16,384 (3x64x64), 1,280 above (``--images``).

Arms:
  (a)  no augmentation: ``(uint8 tensor (1, 28, 28), label)`` (or (C, H, W))
  (b)  classic torchvision: ``v2.RandomAffine(10 deg, 10% translate, 0.9-1.1 scale)`` per sample
  (b') classic albumentations: ``A.Compose([Affine(same), GaussianBlur(3)])`` per sample (HWC; the
       kernel 5 or 7 at bigger sizes)
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
    python benchmarks/loader.py --shape 3,64,64 # random 64x64 RGB images, the default model for them
    python benchmarks/loader.py --json out.json # also writes the figures
    python benchmarks/loader.py --record        # also appends it to BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

import vaeaug

sys.path.insert(0, str(Path(__file__).resolve().parent))
from augment import rate as drain  # noqa: E402  # images/s over an epoch, the first batch not counted
from common import cpu_name, record  # noqa: E402
from percall import DEFAULT_SHAPE, blur_kernel, load_images, model_cost, parse_shape, shape_text  # noqa: E402


class Images(Dataset):
    """Images ``x`` (N, C, H, W) as ``(uint8 tensor (C, H, W), int)``; ``hwc=True`` runs an albumentations
    pipeline on the ``(H, W, C)`` array (kept as an HWC copy) and returns the tensor."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform: Any = None, hwc: bool = False) -> None:
        self.x, self.y, self.transform, self.hwc = x, y, transform, hwc
        if hwc:
            self.x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.hwc:
            img = self.transform(image=self.x[i])["image"]
            return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1), int(self.y[i])
        t = torch.from_numpy(self.x[i])
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=None,
                    help="images per epoch (per arm and round); default 6,400, or 3,200 / 1,280 for bigger images")
    ap.add_argument("--shape", type=parse_shape, default=DEFAULT_SHAPE, metavar="C,H,W",
                    help="image shape (default 1,28,28: Fashion-MNIST; any other: seeded random uint8 images)")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the figures as JSON")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="epochs per arm; the best and the median are reported")
    ap.add_argument("--record", action="store_true", help="also append the block to BENCHMARKS.md")
    args = ap.parse_args()

    torch.set_num_threads(1)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    from vaeaug.albumentations import VAEAugment as AlbVAEAugment

    shape: tuple[int, int, int] = args.shape
    values = int(np.prod(shape))
    n = args.images or (6400 if values <= 1024 else 3200 if values <= 16384 else 1280)
    blur = blur_kernel(shape)
    fit_x, x, y = load_images(shape, n)  # x: (n, C, H, W) uint8
    model = vaeaug.fit(fit_x, epochs=1, progress=False, device="cpu")
    onnx_path = str(vaeaug.export_onnx(model, Path(tempfile.mkdtemp()) / "m.onnx")["augmenter"])
    params, flops = model_cost(model, shape)
    model_line = (f"model: {shape_text(shape)}, widths {model.config.widths}, latent {model.config.latent_dim}, "
                  f"{params:,} parameters, {flops / 1e6:,.1f} MFLOPs per per-sample call (delta form); "
                  f"{n:,} images an epoch, GaussianBlur kernel {blur}")
    print(model_line, flush=True)
    kw: dict[str, Any] = {"batch_size": args.batch_size, "num_workers": args.workers, "pin_memory": False}

    affine = v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))
    classic_alb = A.Compose([A.Affine(rotate=(-10, 10), translate_percent=(-0.1, 0.1), scale=(0.9, 1.1), p=1.0),
                             A.GaussianBlur(blur_limit=(blur, blur), p=1.0)])
    aug_onnx = vaeaug.VAEAugment(onnx_path, p=1.0)
    aug_torch = vaeaug.VAEAugment(model, p=1.0)
    adapter = A.Compose([AlbVAEAugment(onnx_path, p=1.0)])
    batch_aug = vaeaug.VAEAugment(onnx_path, p=1.0)
    k, m = 4, n // 4  # m sources x 4 variants: n images an epoch
    base = Images(x[:m], y[:m])
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
        f"### loader: {shape_text(shape)}, a DataLoader with {args.workers} workers, batch {args.batch_size}, "
        f"pin_memory off, {n:,} images an epoch, best of {args.rounds} epochs per arm ({when})",
        "",
        f"Machine: {cpu_name()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"Python {platform.python_version()}, vaeaug {vaeaug.__version__}. Command: `{cmd}`. Default model "
        "and setting (delta, isotropic, strength 1), p=1; one onnxruntime thread per process.",
        *([] if shape == DEFAULT_SHAPE else ["", f"The {model_line[7:]}."]),
        "",
        "| arm | images/s (best) | median | ratio to (a) | ratio to classic albumentations (b') |",
        "|---|---|---|---|---|",
        *[f"| {name} | {best[name]:,.0f} | {statistics.median(v):,.0f} | {best[name] / none:.2f} "
          f"| {best[name] / classic:.2f} |" for name, v in runs.items()],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.json is not None:
        doc = {
            "benchmark": "loader", "date": when, "command": cmd, "machine": cpu_name(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
            "vaeaug": vaeaug.__version__, "rounds": args.rounds, "workers": args.workers,
            "batch_size": args.batch_size, "images_per_epoch": n, "shape": list(shape), "data": shape_text(shape),
            "albumentations_blur_kernel": blur, "model_widths": list(model.config.widths or ()),
            "model_parameters": params, "flops_per_sample_call": flops,
            "statistic": "images/s: best (highest) epoch and median over epochs; ratios from the best",
            "arms": {name: {"images_per_s_best": best[name], "images_per_s_median": statistics.median(v),
                            "images_per_s_rounds": v, "ratio_to_no_augmentation": best[name] / none,
                            "ratio_to_classic_albumentations": best[name] / classic} for name, v in runs.items()},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.record:
        record(text)


if __name__ == "__main__":
    main()
