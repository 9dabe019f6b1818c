"""Side-by-side generation speed of the torch and onnxruntime backends (used by ``vaeaug export --speed``
and ``benchmarks/generate.py``). Both run in this process, on one thread, on the same inputs, in
alternating rounds, so that their ratio survives a noisy machine.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from vaeaug.backends.factory import as_backend
from vaeaug.backends.torch_backend import TorchBackend
from vaeaug.core.backend import Backend
from vaeaug.core.rng import Noise, derive_keys

__all__ = ["generation_speed", "time_generator"]


def time_generator(gen: Backend, batch: int, *, mode: str = "isotropic", form: str = "delta",
                   seconds: float = 0.5, seed: int = 0) -> float:
    """Samples per second of ``gen.variants`` on batches of ``batch`` random images (best of 3 rounds).

    Args:
        gen: the generator.
        batch: rows per call.
        mode: latent move.
        form: output form.
        seconds: time per round.
        seed: input and noise seed.

    Returns:
        Samples per second of the fastest round.
    """
    cfg = gen.config
    x = np.random.default_rng(seed).random((batch, *cfg.input_shape), dtype=np.float32)
    y = (np.arange(batch) % cfg.num_classes).astype(np.int64) if cfg.num_classes else None
    noise = Noise.from_keys(derive_keys(seed, np.arange(batch)), cfg.latent_dim)
    arg: Any = x if not isinstance(gen, TorchBackend) else torch.from_numpy(x)
    gen.variants(arg, y, mode=mode, form=form, noise=noise)  # warm-up (session creation, allocations)
    best = 0.0
    for _ in range(3):
        calls, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            gen.variants(arg, y, mode=mode, form=form, noise=noise)
            calls += 1
        best = max(best, calls * batch / elapsed)
    return best


def generation_speed(model: Any, onnx_path: Any, *, batch: int, seconds: float = 0.3,
                     mode: str = "isotropic", form: str = "delta") -> dict[str, float]:
    """``{"torch": samples/s, "onnx": samples/s}`` for one model, one thread each, same inputs.

    Args:
        model: a ``VAE`` or ``.vae`` path (torch backend).
        onnx_path: its ONNX export.
        batch: rows per call.
        seconds: time per round (3 rounds per backend, best kept).
        mode: latent move.
        form: output form.

    Returns:
        Samples per second per backend.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tgen, ogen = as_backend(model), as_backend(str(onnx_path))
        return {"torch": time_generator(tgen, batch, mode=mode, form=form, seconds=seconds),
                "onnx": time_generator(ogen, batch, mode=mode, form=form, seconds=seconds)}
    finally:
        torch.set_num_threads(threads)
