"""Per-call cost of every way vaeaug makes a variant, side by side in one process on one thread.

Fashion-MNIST 28x28 uint8, the default 28x28 model (``vaeaug.fit`` for one epoch on the first 5,000
training images: speed does not depend on the weights), unconditional, the default setting (delta
form, isotropic, strength 1), exported with ``vaeaug.export_onnx``. ``--shape C,H,W`` (e.g. 3,64,64 or
3,128,128) measures another size instead: seeded random uint8 images of that shape (speed does not
depend on the content either) and the library's default model for it (``vaeaug.fit`` for one epoch on
300 other such images); the classic albumentations blur kernel grows with the side (3 up to 47 pixels,
5 up to 95, 7 above: :func:`blur_kernel`), the affine parameters stay the same. The arms below name the
28x28 shapes; at another size read (C, H, W) and (H, W, C). Everything runs in this process
on one thread: ``torch.set_num_threads(1)``, onnxruntime sessions with one intra-op and one inter-op
thread and no spinning (vaeaug's default). Every arm runs at p=1, so every call makes a variant.

Arms (microseconds per image; per-image arms cycle through 256 different images):
  (1)  raw onnxruntime: ``sess.run`` on the exported augmenter at batch 1 (x, eps, strength=1,
       sigma_weight=0 fed by hand): the reference, ratio 1.00
  (1b) the same raw call at batch 256 (the floor for the batch arms)
  (2)  vaeaug.VAEAugment(onnx path), uint8 tensor (1, 28, 28)
  (3)  the same on a uint8 numpy HWC array (28, 28, 1)
  (4)  vaeaug.albumentations.VAEAugment(onnx path) inside A.Compose, ``pipe(image=img)`` on uint8
       (28, 28, 1); (4b) the same transform called bare, ``t(image=img)``
  (5)  vaeaug.VAEAugment(model), torch backend, uint8 tensor (1, 28, 28)
  (6)  classic albumentations: Compose([Affine(10 deg, 10% translate, 0.9-1.1 scale), GaussianBlur 3])
       on uint8 (28, 28, 1): the second reference
  (7)  classic torchvision: v2.RandomAffine(10 deg, 10% translate, 0.9-1.1 scale), uint8 (1, 28, 28)
  (8)  batch path: VAEAugment on a collated (256, 1, 28, 28) uint8 batch with its labels, torch and
       ONNX backends (call time / 256)
  (9)  VAEAugmentedDataset(base, ..., variants_per_sample=1).__getitems__ of 256 variant indices
       (n..2n-1), torch and ONNX backends (call time / 256)
  (9c) the same with variants_per_sample=4: blocks of 256 consecutive variant indices (64 sources x 4
       variants), ONNX and torch (9d); every source is encoded once, in the warm-up, and kept (the
       default cache), so this is the rate from the second epoch on. (9e) ONNX with
       cache_sources=0 (nothing kept: each block encodes its 64 sources once; the first epoch's rate
       with shuffling off); only where the dataset has that argument.
  (10) vaeaug.pregenerate of 2,560 images x 1 variant (no real copies) to .npy shards in a temporary
       folder, ONNX backend, one worker (call time / 2,560, the writing included; --no-pregenerate
       skips it); (10b) 640 images x 4 variants (2,560 variants, no real copies)

Counts at other sizes: the images behind the pool, batches and dataset are 2,560, fewer where the
dataset's default encodings cache (256 MiB: ``4 * (C*H*W + 2 * latent) + ~100`` bytes a source for the
delta form) could not hold them all, since (9c) and (9d) measure a cache that holds every source
(1,280 at 3x128x128; ``--images``); pregenerate makes 2,560 variants a call up to 1,024 values an image,
640 up to 16,384 (e.g. 3x64x64), 256 above (``--pregenerate-images``), so one call stays near a second
or two. The output names the counts used.

Method: every arm is warmed up, then all arms run in turn for --rounds rounds (the order rotated by
one arm each round), each timed for --seconds per round in blocks of about 10 ms. Many short rounds
(default 60 x 0.05 s, 3 s per arm) rather than a few long ones: every arm then samples the same
stretches of a noisy machine, and on a shared 2-core VM the best round came out within a few percent
from run to run, where 7 x 0.4 s moved by up to 20%. (pregenerate, ~0.3 s a call, makes one call a
round.) The table gives the **best round** (the lowest microseconds per image over the rounds: the
least disturbed by other work) and the median over rounds; the ratio to the raw onnxruntime call
(raw_us / arm_us: 1.00 = as fast as the bare graph, 0.50 = twice its cost) and the ratio to classic
albumentations (classic_us / arm_us) are computed from the best rounds (the JSON also holds them
from the medians). Only public API is used.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/percall.py                      # prints a markdown block
    OMP_NUM_THREADS=1 python benchmarks/percall.py --shape 3,64,64      # random 64x64 RGB, its default model
    OMP_NUM_THREADS=1 python benchmarks/percall.py --json out.json      # also writes the figures
    OMP_NUM_THREADS=1 python benchmarks/percall.py --record             # also appends to BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

import vaeaug
from vaeaug.augmented_dataset import CACHE_BYTES
from vaeaug.data.builtin import find_fashion_mnist, read_idx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, record  # noqa: E402

POOL = 256  # distinct inputs the per-image arms cycle through
BATCH = 256
PREGENERATE_N = 2560
BLOCK_S = 0.01  # calls are timed in blocks of about this long
DEFAULT_SHAPE = (1, 28, 28)  # Fashion-MNIST; any other shape: seeded random images
FIT_IMAGES = 300  # random images the model of another shape is fitted on (one epoch)


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"C,H,W"`` as a tuple (the ``--shape`` argument): C in 1, 3, 4, sides at least 8."""
    try:
        c, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shape takes C,H,W (e.g. 3,64,64); got {text!r}") from None
    if c not in (1, 3, 4) or min(h, w) < 8:
        raise argparse.ArgumentTypeError(f"--shape needs C in 1, 3, 4 and sides >= 8; got {text!r}")
    return c, h, w


def shape_text(shape: tuple[int, int, int]) -> str:
    """What the data are, for titles: ``Fashion-MNIST 28x28`` or ``random uint8 3x64x64``."""
    return "Fashion-MNIST 28x28" if shape == DEFAULT_SHAPE else "random uint8 " + "x".join(map(str, shape))


def blur_kernel(shape: tuple[int, int, int]) -> int:
    """The classic pipeline's GaussianBlur kernel for an image side: 3 up to 47 pixels, 5 up to 95, 7 above."""
    side = min(shape[1:])
    return 3 if side < 48 else 5 if side < 96 else 7


def cached_sources(shape: tuple[int, int, int], latent: int = 16) -> int:
    """How many sources the dataset's default encodings cache holds (delta form, ``CACHE_BYTES``)."""
    return CACHE_BYTES // (4 * (int(np.prod(shape)) + 2 * latent) + 100)


def load_images(shape: tuple[int, int, int], n: int, skip: int = 5000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fit_x, x, y)``: the images the model is fitted on, ``n`` others ``(n, C, H, W)`` uint8 and labels.

    The default shape reads Fashion-MNIST (the model fitted on its first ``skip`` training images,
    ``x`` the ``n`` after them); any other shape draws seeded random images (``FIT_IMAGES`` to fit on).
    """
    if shape == DEFAULT_SHAPE:
        folder = find_fashion_mnist()
        if folder is None:
            raise SystemExit("Fashion-MNIST not found: apt-get install dataset-fashion-mnist")
        x_all = np.array(read_idx(next(folder.glob("train-images-idx3-ubyte*"))))  # a writable copy
        y_all = np.array(read_idx(next(folder.glob("train-labels-idx1-ubyte*")))).astype(np.int64)
        return x_all[:skip], x_all[skip:skip + n][:, None], y_all[skip:skip + n]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (FIT_IMAGES + n, *shape), dtype=np.uint8)
    return x[:FIT_IMAGES], x[FIT_IMAGES:], rng.integers(0, 10, n).astype(np.int64)


def model_cost(model: vaeaug.VAE, shape: tuple[int, int, int]) -> tuple[int, int]:
    """The model's parameter count and the FLOPs of one per-sample ``VAEAugment(model)`` call (torch's
    ``FlopCounterMode``: 2 per multiply-add, convolutions and linear layers)."""
    from torch.utils.flop_counter import FlopCounterMode

    aug = vaeaug.VAEAugment(model, p=1.0)
    with FlopCounterMode(display=False) as counter:
        aug(torch.zeros(shape, dtype=torch.uint8))
    return sum(p.numel() for p in model.parameters()), int(counter.get_total_flops())


@dataclass
class Arm:
    """One way of making variants: ``call(i)`` makes ``images`` of them (i cycles the inputs)."""

    key: str
    name: str
    call: Callable[[int], Any]
    images: int = 1
    like: Callable[[int], Any] | None = None  # the input of call(i), to check that it changed
    after: Callable[[], None] | None = None  # untimed clean-up after each block
    block: int = 1
    rounds_us: list[float] = field(default_factory=list)

    def warm_up(self, seconds: float) -> None:
        """Run for ``seconds`` (at least twice) and size the timing block to about ``BLOCK_S``."""
        calls, t0 = 0, time.perf_counter()
        while calls < 2 or time.perf_counter() - t0 < seconds:
            self.call(calls)
            calls += 1
            if self.after is not None:
                self.after()
        per_call = (time.perf_counter() - t0) / calls
        self.block = 1 if self.after is not None else max(1, int(BLOCK_S / per_call))

    def measure(self, seconds: float) -> float:
        """Microseconds per image over blocks of calls totalling at least ``seconds``."""
        spent, calls, i = 0.0, 0, 0
        while spent < seconds:
            t = time.perf_counter()
            for j in range(i, i + self.block):
                self.call(j)
            spent += time.perf_counter() - t
            i += self.block
            calls += self.block
            if self.after is not None:
                self.after()
        us = spent / (calls * self.images) * 1e6
        self.rounds_us.append(us)
        return us

    @property
    def best(self) -> float:
        return min(self.rounds_us)

    @property
    def median(self) -> float:
        return statistics.median(self.rounds_us)


class Images(Dataset):
    """A plain map-style dataset: (uint8 tensor (C, H, W), int) from ``x`` (N, C, H, W)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.x[i]), int(self.y[i])


def raw_session(path: str) -> onnxruntime.InferenceSession:
    """The exported augmenter in onnxruntime, one intra-op and one inter-op thread, no spinning."""
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def raw_feeds(sess: onnxruntime.InferenceSession, x: np.ndarray, latent: int, seed: int) -> dict[str, np.ndarray]:
    """The augmenter's feeds for uint8 images ``x`` (N, C, H, W): isotropic move, strength 1."""
    names = [i.name for i in sess.get_inputs()]
    if names != ["x", "eps", "strength", "sigma_weight"]:
        raise SystemExit(f"unexpected inputs of the augmenter graph: {names}")
    n = len(x)
    return {
        "x": (x.astype(np.float32) / np.float32(255.0)),
        "eps": np.random.default_rng(seed).standard_normal((n, latent), dtype=np.float32),
        "strength": np.ones(n, dtype=np.float32),
        "sigma_weight": np.zeros(n, dtype=np.float32),  # 0: isotropic (1 would be posterior)
    }


def describe(out: Any, inp: Any) -> str:
    """Type, shape and dtype of an arm's output, and the share of pixels it changed."""
    img = out[0] if isinstance(out, (tuple, list)) else out
    img = img["image"] if isinstance(img, dict) else img
    if isinstance(img, (tuple, list)):  # a dataset item (x, y)
        img = img[0]
    shape = tuple(img.shape) if hasattr(img, "shape") else "?"
    text = f"{type(img).__name__} {shape} {getattr(img, 'dtype', '')}"
    if inp is not None:
        a, b = np.asarray(img), np.asarray(inp)
        text += f", {np.mean(a != b):.0%} of pixels changed" if a.shape == b.shape else f" (input {b.shape})"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=60, help="rounds over all arms (best and median reported)")
    ap.add_argument("--seconds", type=float, default=0.05, help="timed seconds per arm per round")
    ap.add_argument("--warmup", type=float, default=0.2, help="warm-up seconds per arm")
    ap.add_argument("--no-pregenerate", action="store_true", help="skip the pregenerate arm")
    ap.add_argument("--shape", type=parse_shape, default=DEFAULT_SHAPE, metavar="C,H,W",
                    help="image shape (default 1,28,28: Fashion-MNIST; any other: seeded random uint8 images)")
    ap.add_argument("--images", type=int, default=None,
                    help="images behind the pool, batches and dataset (default 2,560, or as many multiples of 256 "
                         "as the dataset's default cache holds)")
    ap.add_argument("--pregenerate-images", type=int, default=None,
                    help="variants a pregenerate call makes (default 2,560 up to 1,024 values an image, 640 up to "
                         "16,384, 256 above; a multiple of 4)")
    ap.add_argument("--verbose", action="store_true", help="print every arm's figure in every round")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the figures as JSON")
    ap.add_argument("--record", action="store_true", help="also append the block to BENCHMARKS.md")
    args = ap.parse_args()

    torch.set_num_threads(1)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    from vaeaug.albumentations import VAEAugment as AlbVAEAugment

    shape: tuple[int, int, int] = args.shape
    values = int(np.prod(shape))
    n_images = args.images or min(PREGENERATE_N, max(BATCH, cached_sources(shape) // BATCH * BATCH))
    n_pregen = args.pregenerate_images or (PREGENERATE_N if values <= 1024 else 640 if values <= 16384 else 256)
    if n_images < BATCH or n_pregen < 4 or n_pregen % 4 or n_pregen > n_images:
        raise SystemExit(f"--images must be >= {BATCH}; --pregenerate-images a multiple of 4, at most --images")
    blur = blur_kernel(shape)
    fit_x, x, y = load_images(shape, n_images)  # x: (N, C, H, W) uint8
    t0 = time.perf_counter()
    model = vaeaug.fit(fit_x, epochs=1, progress=False, device="cpu")
    tmp = Path(tempfile.mkdtemp(prefix="vaeaug-percall-"))
    onnx_path = str(vaeaug.export_onnx(model, tmp / "m.onnx")["augmenter"])
    print(f"fit + export: {time.perf_counter() - t0:.1f} s", flush=True)
    params, flops = model_cost(model, shape)
    model_line = (f"model: {shape_text(shape)}, widths {model.config.widths}, latent {model.config.latent_dim}, "
                  f"{params:,} parameters, {flops / 1e6:,.1f} MFLOPs per per-sample call (delta form); "
                  f"{n_images:,} images, pregenerate {n_pregen:,} variants a call, GaussianBlur kernel {blur}")
    print(model_line, flush=True)

    # inputs: POOL single images in each layout, a few collated batches, a base dataset
    x_pregen = x[:, 0] if shape == DEFAULT_SHAPE else x  # pregenerate reads (N, 28, 28) as before
    chw = [torch.from_numpy(x[i]) for i in range(POOL)]
    hwc = [np.ascontiguousarray(x[i].transpose(1, 2, 0)) for i in range(POOL)]
    nb = len(x) // BATCH
    batches = [(torch.from_numpy(x[b * BATCH:(b + 1) * BATCH]), torch.from_numpy(y[b * BATCH:(b + 1) * BATCH]))
               for b in range(nb)]
    base = Images(x, y)
    n = len(base)
    blocks = [list(range(n + b * BATCH, n + (b + 1) * BATCH)) for b in range(nb)]  # variant indices

    sess = raw_session(onnx_path)
    latent = int(sess.get_inputs()[1].shape[1])
    feeds1 = [raw_feeds(sess, x[i:i + 1], latent, i) for i in range(POOL)]
    feeds_b = [raw_feeds(sess, x[b * BATCH:(b + 1) * BATCH], latent, b) for b in range(nb)]

    aug_onnx = vaeaug.VAEAugment(onnx_path, p=1.0)
    aug_torch = vaeaug.VAEAugment(model, p=1.0)
    alb_onnx = AlbVAEAugment(onnx_path, p=1.0)
    alb_pipe = A.Compose([AlbVAEAugment(onnx_path, p=1.0)])
    classic_alb = A.Compose([A.Affine(rotate=(-10, 10), translate_percent=(-0.1, 0.1), scale=(0.9, 1.1), p=1.0),
                             A.GaussianBlur(blur_limit=(blur, blur), p=1.0)])
    classic_tv = v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))
    ds_torch = vaeaug.VAEAugmentedDataset(base, model, variants_per_sample=1)
    ds_onnx = vaeaug.VAEAugmentedDataset(base, onnx_path, variants_per_sample=1)
    ds_onnx4 = vaeaug.VAEAugmentedDataset(base, onnx_path, variants_per_sample=4)
    ds_torch4 = vaeaug.VAEAugmentedDataset(base, model, variants_per_sample=4)
    has_cache = "cache_sources" in inspect.signature(vaeaug.VAEAugmentedDataset).parameters
    ds_onnx4_nocache = (vaeaug.VAEAugmentedDataset(base, onnx_path, variants_per_sample=4, cache_sources=0)
                        if has_cache else None)
    blocks4 = [list(range(n + b * BATCH, n + (b + 1) * BATCH)) for b in range(4 * n // BATCH)]

    pregen_runs = [0]

    def pregenerate(_: int) -> Any:
        pregen_runs[0] += 1
        return vaeaug.pregenerate(x_pregen[:n_pregen], onnx_path, tmp / f"gen{pregen_runs[0]}", variants_per_sample=1,
                                  include_real=False, workers=1, progress=False)

    def pregenerate4(_: int) -> Any:
        pregen_runs[0] += 1
        return vaeaug.pregenerate(x_pregen[:n_pregen // 4], onnx_path, tmp / f"gen{pregen_runs[0]}",
                                  variants_per_sample=4, include_real=False, workers=1, progress=False)

    def pregen_clean() -> None:
        shutil.rmtree(tmp / f"gen{pregen_runs[0]}", ignore_errors=True)

    def one_chw(i: int) -> torch.Tensor:
        return chw[i % POOL]

    def one_hwc(i: int) -> np.ndarray:
        return hwc[i % POOL]

    def batch(i: int) -> torch.Tensor:
        return batches[i % nb][0]

    chw_s, hwc_s = "({},{},{})".format(*shape), "({},{},{})".format(*shape[1:], shape[0])
    blur_s = "" if shape == DEFAULT_SHAPE else f" {blur}"  # the kernel, where it is not the usual 3
    arms = [
        Arm("raw_onnx", "(1) raw onnxruntime sess.run, batch 1 (reference)",
            lambda i: sess.run(None, feeds1[i % POOL])),
        Arm("raw_onnx_b256", "(1b) raw onnxruntime sess.run, batch 256",
            lambda i: sess.run(None, feeds_b[i % nb]), images=BATCH),
        Arm("onnx_tensor", f"(2) VAEAugment(onnx), uint8 tensor {chw_s}",
            lambda i: aug_onnx(one_chw(i)), like=one_chw),
        Arm("onnx_numpy_hwc", f"(3) VAEAugment(onnx), uint8 numpy {hwc_s}",
            lambda i: aug_onnx(one_hwc(i)), like=one_hwc),
        Arm("alb_onnx_compose", f"(4) albumentations VAEAugment(onnx) in A.Compose, {hwc_s}",
            lambda i: alb_pipe(image=one_hwc(i)), like=one_hwc),
        Arm("alb_onnx_bare", f"(4b) albumentations VAEAugment(onnx) bare, t(image=img), {hwc_s}",
            lambda i: alb_onnx(image=one_hwc(i)), like=one_hwc),
        Arm("torch_tensor", f"(5) VAEAugment(model), torch backend, uint8 tensor {chw_s}",
            lambda i: aug_torch(one_chw(i)), like=one_chw),
        Arm("classic_alb", f"(6) classic albumentations Affine + GaussianBlur{blur_s}, {hwc_s}",
            lambda i: classic_alb(image=one_hwc(i)), like=one_hwc),
        Arm("classic_tv", f"(7) classic torchvision v2.RandomAffine, uint8 tensor {chw_s}",
            lambda i: classic_tv(one_chw(i)), like=one_chw),
        Arm("batch_torch", f"(8) batch path: VAEAugment(model) on (256,{chw_s[1:]} + labels",
            lambda i: aug_torch(batch(i), batches[i % nb][1]), images=BATCH, like=batch),
        Arm("batch_onnx", f"(8b) batch path: VAEAugment(onnx) on (256,{chw_s[1:]} + labels",
            lambda i: aug_onnx(batch(i), batches[i % nb][1]), images=BATCH, like=batch),
        Arm("dataset_torch", "(9) VAEAugmentedDataset(model).__getitems__(256 variants)",
            lambda i: ds_torch.__getitems__(blocks[i % nb]), images=BATCH, like=lambda i: chw[0]),
        Arm("dataset_onnx", "(9b) VAEAugmentedDataset(onnx).__getitems__(256 variants)",
            lambda i: ds_onnx.__getitems__(blocks[i % nb]), images=BATCH, like=lambda i: chw[0]),
        Arm("dataset_onnx_k4", "(9c) VAEAugmentedDataset(onnx, k=4).__getitems__(256 variants of 64 sources)",
            lambda i: ds_onnx4.__getitems__(blocks4[i % len(blocks4)]), images=BATCH, like=lambda i: chw[0]),
        Arm("dataset_torch_k4", "(9d) VAEAugmentedDataset(model, k=4).__getitems__(256 variants of 64 sources)",
            lambda i: ds_torch4.__getitems__(blocks4[i % len(blocks4)]), images=BATCH, like=lambda i: chw[0]),
    ]
    if ds_onnx4_nocache is not None:
        arms.append(Arm("dataset_onnx_k4_nocache", "(9e) the same as (9c) with cache_sources=0",
                        lambda i: ds_onnx4_nocache.__getitems__(blocks4[i % len(blocks4)]), images=BATCH,
                        like=lambda i: chw[0]))
    if not args.no_pregenerate:
        arms.append(Arm("pregenerate_onnx", f"(10) pregenerate(onnx), {n_pregen:,} images x 1 variant, shards",
                        pregenerate, images=n_pregen, after=pregen_clean))
        arms.append(Arm("pregenerate_onnx_k4", f"(10b) pregenerate(onnx), {n_pregen // 4:,} images x 4 variants, "
                        "shards", pregenerate4, images=n_pregen, after=pregen_clean))

    for ds in (ds_onnx4, ds_torch4):  # one epoch first: (9c) and (9d) measure the epochs after it
        for block in blocks4:
            ds.__getitems__(block)
    for arm in arms:
        out = arm.call(0)
        if arm.after is not None:
            arm.after()
        if not arm.key.startswith("pregenerate"):
            print(f"check {arm.key}: {describe(out, arm.like(0) if arm.like else None)}", flush=True)
        arm.warm_up(args.warmup)

    t0 = time.perf_counter()
    for r in range(args.rounds):
        for j in range(len(arms)):
            arm = arms[(j + r) % len(arms)]
            us = arm.measure(args.seconds)
            if args.verbose:
                print(f"round {r + 1}: {arm.key}: {us:,.2f} us/image", flush=True)
        if not args.verbose and ((r + 1) % 10 == 0 or r + 1 == args.rounds):
            print(f"round {r + 1}/{args.rounds} ({time.perf_counter() - t0:.0f} s)", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)

    by_key = {a.key: a for a in arms}
    raw, classic = by_key["raw_onnx"].best, by_key["classic_alb"].best
    raw_med, classic_med = by_key["raw_onnx"].median, by_key["classic_alb"].median
    when = datetime.date.today().isoformat()
    cmd = "python benchmarks/percall.py " + " ".join(sys.argv[1:])
    lines = [
        f"### percall: {shape_text(shape)}, one process, one thread, us per image, best of {args.rounds} "
        f"interleaved rounds x {args.seconds:g} s per arm ({when})",
        "",
        f"Machine: {cpu_name()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"Python {platform.python_version()}, vaeaug {vaeaug.__version__}. Command: `{cmd}`. "
        "Default model and setting (delta, isotropic, strength 1), p=1; onnxruntime with 1 intra-op and "
        "1 inter-op thread, no spinning; torch.set_num_threads(1).",
        *([] if shape == DEFAULT_SHAPE else ["", f"The {model_line[7:]}."]),
        "",
        "| arm | us per image (best) | median | ratio to raw onnx (1) | ratio to classic alb (6) |",
        "|---|---|---|---|---|",
        *[f"| {a.name} | {a.best:,.1f} | {a.median:,.1f} | {raw / a.best:.2f} | {classic / a.best:.2f} |"
          for a in arms],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.json is not None:
        doc = {
            "benchmark": "percall", "date": when, "command": cmd, "machine": cpu_name(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
            "vaeaug": vaeaug.__version__, "rounds": args.rounds, "seconds_per_round": args.seconds,
            "shape": list(shape), "data": shape_text(shape), "images": n_images, "pregenerate_images": n_pregen,
            "albumentations_blur_kernel": blur, "model_widths": list(model.config.widths or ()),
            "model_parameters": params, "flops_per_sample_call": flops,
            "statistic": "us per image: best (lowest) round and median over rounds; ratios from each",
            "arms": {a.key: {"name": a.name, "images_per_call": a.images, "us_per_image_best": a.best,
                             "us_per_image_median": a.median, "us_per_image_rounds": a.rounds_us,
                             "ratio_to_raw_onnx": raw / a.best, "ratio_to_classic_albumentations": classic / a.best,
                             "ratio_to_raw_onnx_median": raw_med / a.median,
                             "ratio_to_classic_albumentations_median": classic_med / a.median} for a in arms},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.record:
        record(text)


if __name__ == "__main__":
    main()
