"""Shared test helpers: small fitted models (fitted once per test session) and picklable datasets.

Kept out of the test modules so that DataLoader workers started with ``spawn`` can import the
dataset class cheaply (the test modules add this folder to ``sys.path``, and spawned workers
inherit the parent's ``sys.path``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Fail with ``TimeoutError`` instead of hanging if the block runs longer than ``seconds`` (SIGALRM)."""
    def handler(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s: a read blocks or runs without bound")
    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def make_special(path: Path, kind: str, size: int = 0) -> Path:
    """Put a file of ``kind`` at ``path``: ``fifo``, ``devzero`` (a symlink to /dev/zero), ``dir``, ``sparse``
    (``size`` bytes, no disk used), ``empty``, ``garbage`` (4 KiB of random bytes) or ``missing`` (nothing)."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "devzero":
        path.symlink_to("/dev/zero")
    elif kind == "dir":
        path.mkdir()
    elif kind == "sparse":
        with open(path, "wb") as f:
            f.truncate(size)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(os.urandom(4096))
    elif kind != "missing":
        raise ValueError(f"unknown kind {kind!r}")
    return path


def fuzz_settings(examples: int) -> dict[str, Any]:
    """Hypothesis settings of a fuzz test: ``examples`` fixed examples in ``make test``.

    ``VAEAUG_FUZZ_EXAMPLES=N`` (``benchmarks/fuzz.py``) runs ``N`` random examples instead.
    """
    n = os.environ.get("VAEAUG_FUZZ_EXAMPLES")
    return {"max_examples": int(n) if n else examples, "derandomize": not n, "deadline": None}


@functools.cache
def digits_model() -> Any:
    """Unconditional VAE on the 8x8 digits (floats read as 0..16)."""
    import vaeaug

    return vaeaug.fit("digits", epochs=2, progress=False)


@functools.cache
def digits_conditional_model() -> Any:
    """Class-conditional VAE on the 8x8 digits (10 classes)."""
    import vaeaug

    return vaeaug.fit("digits", epochs=2, progress=False, conditional=True)


@functools.cache
def digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """The digits training images as uint8 ``(N, 8, 8)`` in 0..255, and their labels."""
    import vaeaug

    d = vaeaug.load_builtin("digits")
    x = (d.x[:, 0].numpy() * 255.0).round().astype(np.uint8)
    return x, d.y.numpy()


@functools.cache
def rgb_model() -> Any:
    """Unconditional 3-channel VAE fit on uint8 images (floats read as 0..1)."""
    import vaeaug

    x, _ = digits_uint8()
    rgb = np.repeat(x[:, None], 3, axis=1)
    rgb[:, 1] = 255 - rgb[:, 1]  # make the channels differ
    return vaeaug.fit(rgb, epochs=2, progress=False)


class ConstantImages(Dataset):
    """``n`` copies of one image, each passed through ``transform``: any difference comes from it."""

    def __init__(self, image: torch.Tensor, transform: Any, n: int = 8, label: int | None = None) -> None:
        self.image = image
        self.transform = transform
        self.n = n
        self.label = label

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        if self.label is None:
            return self.transform(self.image)
        return self.transform(self.image, self.label)
