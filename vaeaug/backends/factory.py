"""``as_backend``: the one place that knows both backends and picks one for a model or a path."""

from __future__ import annotations

import os
from typing import Any

from vaeaug.core.backend import Backend

__all__ = ["as_backend"]


def as_backend(model_or_path: Any, device: Any = None) -> Backend:
    """A :class:`~vaeaug.core.backend.Backend` for a model, a model file path, or a generator (as is).

    Args:
        model_or_path: a ``VAE``, a ``.vae`` path (torch backend), an ``.onnx`` export
            (:class:`~vaeaug.backends.onnx_backend.OnnxBackend`, numpy + onnxruntime, torch not
            imported) or a ``Backend``.
        device: device for the torch backend (an ONNX model runs on the CPU).

    Returns:
        The generator.

    Example:
        >>> import vaeaug
        >>> as_backend(vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 8, 8)))).describe()
        'VAE(1x8x8, latent 16)'
    """
    if isinstance(model_or_path, Backend):
        return model_or_path
    if isinstance(model_or_path, (str, os.PathLike)) and os.fspath(model_or_path).endswith(".onnx"):
        from vaeaug.backends.onnx_backend import (  # torch-free: not at module level beside the torch backend
            OnnxBackend,
        )

        if device is not None and str(device) != "cpu":
            raise ValueError(
                f"an ONNX model runs on the CPU through onnxruntime; got device={device!r} - pass a .vae "
                "model for the torch backend on another device"
            )
        return OnnxBackend(model_or_path)
    from vaeaug.backends.torch_backend import TorchBackend

    return TorchBackend(model_or_path, device=device)
