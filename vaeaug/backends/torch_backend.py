"""``TorchBackend``: the Backend interface on a torch :class:`~vaeaug.model.vae.VAE`, on its device."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaeaug.core.backend import Backend, run_chunked
from vaeaug.core.functional import perturb
from vaeaug.core.rng import Noise
from vaeaug.core.settings import AugmentSetting
from vaeaug.core.values import check_int
from vaeaug.model.devices import resolve_device
from vaeaug.model.vae import VAE, load

__all__ = ["TorchBackend"]


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
        self.config = model.config
        self.value_range = model.value_range
        self.class_names = model.class_names
        self.augment = model.augment

    @property
    def device(self) -> Any:
        """The device the model runs on."""
        return self._device

    def generate(self, setting: AugmentSetting, x: Any, y: np.ndarray | None, noise: Noise, partner: Any = None,
                 invariant: bool = False) -> Any:
        is_numpy = isinstance(x, np.ndarray)
        xt = torch.from_numpy(x) if is_numpy else x
        dev, in_dev = self._device, xt.device
        mode, s, form = setting.mode, setting.strength, setting.form
        with torch.inference_mode():
            xd = xt.to(dev, torch.float32)
            if xd.dim() == 4 and dev.type == "cpu":
                xd = xd.contiguous(memory_format=torch.channels_last)
            yd = None if y is None else torch.from_numpy(y).to(dev)
            eps = torch.from_numpy(noise.eps).to(dev)
            t = torch.from_numpy(noise.t).to(dev)
            pb = None
            if partner is not None:
                pb = (torch.from_numpy(partner) if isinstance(partner, np.ndarray) else partner).to(dev, torch.float32)

            if not invariant:
                out = perturb(self.model, xd, yd, mode=mode, strength=s, form=form, eps=eps, t=t, x_b=pb)
            else:
                out = run_chunked(lambda xc, yc, ec, tc, bc: perturb(self.model, xc, yc, mode=mode, strength=s,
                                                                     form=form, eps=ec, t=tc, x_b=bc),
                                  self.chunk_size, xd, yd, eps, t, pb)
        if is_numpy:
            return out.cpu().numpy()
        return out.to(in_dev)
