"""``TorchBackend``: the Backend interface on a torch :class:`~vaeaug.model.vae.VAE`, on its device."""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaeaug.core.backend import Backend, run_chunked
from vaeaug.core.functional import ONE_CALL_ROWS, Encodings, call_rows, encode_sources, perturb, perturb_encoded
from vaeaug.core.rng import Noise
from vaeaug.core.settings import AugmentSetting
from vaeaug.core.values import check_int
from vaeaug.model.devices import resolve_device
from vaeaug.model.vae import VAE, load

__all__ = ["SMALL_CALL_VALUES", "TorchBackend"]

SMALL_CALL_VALUES = 8192
"""A CPU call of at most this many input values (rows x values per row) runs with oneDNN off: its
per-call set-up costs more than it saves there. Measured one thread, delta form (BENCHMARKS.md,
2026-12-05): 28x28 at batch 1 1.40x faster, batch 8 1.14x, batch 16 0.78x (so on above 8,192 values);
8x8 1.7-2.0x up to batch 16; 64x64 RGB at batch 1 1.05x, batch 4 0.85x."""


@contextlib.contextmanager
def _small_call(rows: int, row_values: int, cpu: bool) -> Iterator[None]:
    """oneDNN off for the duration of a small CPU call (see :data:`SMALL_CALL_VALUES`), restored after.

    The switch is process-wide: another thread's convolution during the call runs without oneDNN
    too (slower, the same values within float rounding).
    """
    if not cpu or rows * row_values > SMALL_CALL_VALUES or not torch.backends.mkldnn.enabled:
        yield
        return
    torch.backends.mkldnn.enabled = False  # type: ignore[assignment]  # a module property, set as documented
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = True  # type: ignore[assignment]


class TorchBackend(Backend):
    """The torch backend: runs :func:`vaeaug.core.functional.perturb` on the model's device.

    Args:
        model: a :class:`~vaeaug.model.vae.VAE` or the path of a model file.
        device: where to run; default: the model's device (CPU for a path).
        chunk_size: rows per model call when ``invariant=True`` (the last chunk is zero-padded,
            so every sample is computed in a call of the same shape, bit-identically).

    Example:
        >>> import vaeaug
        >>> gen = TorchBackend(vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 8, 8))))
        >>> x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
        >>> gen.variants(x, seed=0).shape
        (3, 1, 8, 8)
    """

    def __init__(self, model: Any, device: Any = None, chunk_size: int = 64) -> None:
        if isinstance(model, (str, os.PathLike)):
            self.source: str | None = str(Path(model))
            model = load(model)
        elif isinstance(model, VAE):
            self.source = None
        else:
            raise TypeError(f"model must be a vaeaug VAE or a model file path; got {type(model).__name__}")
        dev = None if device is None else resolve_device(device)  # a bad string: vaeaug's ValueError
        if dev is not None and dev != model.device:
            model = copy.deepcopy(model).to(dev)  # never move the caller's model
        if model.config.is_image and model.device.type == "cpu":
            # channels_last runs the convs 2-3x faster on CPU (BENCHMARKS.md); on a copy, so the
            # caller's model is left as it is
            owned = model if self.source is not None else copy.deepcopy(model)
            model = owned.to(memory_format=torch.channels_last)
        check_int("chunk_size", chunk_size, 1)
        self.model = model.eval()
        self.chunk_size = chunk_size
        self._device = model.device  # cached: looking it up walks the parameters
        self._row_values = math.prod(model.config.input_shape)
        # rows per call without invariant: fewer for big samples on the CPU (their activations stay in cache)
        self._call_rows = call_rows(self._row_values) if self._device.type == "cpu" else ONE_CALL_ROWS
        self.config = model.config
        self.value_range = model.value_range
        self.class_names = model.class_names
        self.augment = model.augment

    @property
    def device(self) -> Any:
        """The device the model runs on."""
        return self._device

    def _input(self, a: Any) -> torch.Tensor:
        """A numpy array or tensor as float32 on the model's device (channels_last images on the CPU)."""
        t = (torch.from_numpy(a) if isinstance(a, np.ndarray) else a).to(self._device, torch.float32)
        if t.dim() == 4 and self._device.type == "cpu":
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def _small(self, rows: int) -> contextlib.AbstractContextManager[None]:
        """Where a call of ``rows`` rows runs faster without oneDNN (:data:`SMALL_CALL_VALUES`), switch it off."""
        return _small_call(min(rows, ONE_CALL_ROWS), self._row_values, self._device.type == "cpu")

    def _labels(self, y: np.ndarray | None) -> torch.Tensor | None:
        return None if y is None else torch.from_numpy(y).to(self._device)

    def generate(self, setting: AugmentSetting, x: Any, y: np.ndarray | None, noise: Noise, partner: Any = None,
                 invariant: bool = False) -> Any:
        if invariant:
            return self.generate_in_stages(setting, x, y, noise, partner, invariant)
        is_numpy = isinstance(x, np.ndarray)
        in_dev = x.device if not is_numpy else None
        mode, s, form = setting.mode, setting.strength, setting.form
        with torch.inference_mode(), self._small(len(noise)):
            xd, yd = self._input(x), self._labels(y)
            eps = torch.from_numpy(noise.eps).to(self._device)
            t = torch.from_numpy(noise.t).to(self._device)
            pb = None if partner is None else self._input(partner)

            def run(xc: Any, yc: Any, ec: Any, tc: Any, bc: Any) -> Any:
                return perturb(self.model, xc, yc, mode=mode, strength=s, form=form, eps=ec, t=tc, x_b=bc)

            out = run_chunked(run, self._call_rows, xd, yd, eps, t, pb, pad=False)  # one call when it fits: views
        if is_numpy:
            return out.cpu().numpy()
        return out.to(in_dev)

    def encode_sources(self, x: Any, y: np.ndarray | None, *, delta: bool, invariant: bool = False) -> Encodings:
        def run(xc: torch.Tensor, yc: torch.Tensor | None) -> tuple[Any, ...]:
            e = encode_sources(self.model, xc, yc, delta=delta)
            return e.mu, e.logvar, e.d_mu

        with torch.inference_mode(), self._small(self.chunk_size if invariant else len(x)):
            xd, yd = self._input(x), self._labels(y)
            parts = run_chunked(run, self.chunk_size if invariant else self._call_rows, xd, yd, pad=invariant)
        mu, logvar, d_mu = (None if v is None else np.ascontiguousarray(v.cpu().numpy()) for v in parts)
        return Encodings(mu, logvar, d_mu)

    def generate_encoded(self, setting: AugmentSetting, x: Any, enc: Encodings | None, y: np.ndarray | None,
                         noise: Noise, partner_mu: np.ndarray | None = None, invariant: bool = False) -> Any:
        is_numpy = isinstance(x, np.ndarray)
        in_dev = x.device if not is_numpy else None
        mode, s, form = setting.mode, setting.strength, setting.form

        def run(xc: Any, yc: Any, ec: Any, tc: Any, mc: Any, lc: Any, dc: Any, bc: Any) -> Any:
            return perturb_encoded(self.model, xc, Encodings(mc, lc, dc), yc, mode=mode, strength=s, eps=ec,
                                   form=form, t=tc, mu_b=bc)

        def tensor(a: Any) -> Any:
            return None if a is None else torch.from_numpy(a).to(self._device)

        with torch.inference_mode(), self._small(self.chunk_size if invariant else len(noise)):
            xd, yd = self._input(x), self._labels(y)
            mu, logvar, d_mu = (None, None, None) if enc is None else (tensor(enc.mu), tensor(enc.logvar),
                                                                        enc.d_mu)
            if d_mu is not None:
                d_mu = self._input(d_mu)
            out = run_chunked(run, self.chunk_size if invariant else self._call_rows, xd, yd, tensor(noise.eps),
                              tensor(noise.t), mu, logvar, d_mu, tensor(partner_mu), pad=invariant)
        if is_numpy:
            return out.cpu().numpy()
        return out.to(in_dev)
