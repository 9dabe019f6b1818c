"""The Generator interface: one way to make variants, whatever runs the model.

Everything that makes a variant (the transform, the dataset, and later pre-generation and the
ONNX backend) goes through :meth:`Generator.variants`. Noise is drawn outside the model from
integer keys (:mod:`vaeaug.rng`), so two backends given the same keys give the same variants.
"""

from __future__ import annotations

import copy
import functools
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .rng import Stream, normal, uniform

__all__ = ["Noise", "Generator", "TorchGenerator", "as_generator", "run_chunked"]


@dataclass(frozen=True)
class Noise:
    """The random inputs of one batch of variants.

    Attributes:
        eps: ``(N, latent_dim)`` float32 standard normals.
        t: ``(N,)`` float32 uniforms in ``(0, 1)`` (interpolation weights before scaling).
    """

    eps: np.ndarray
    t: np.ndarray

    @classmethod
    def from_keys(cls, keys: np.ndarray, latent_dim: int, *, with_t: bool = True) -> Noise:
        """Noise for per-sample ``keys`` (see :func:`vaeaug.rng.derive_keys`).

        ``with_t=False`` skips the interpolation uniforms (zeros instead), for modes without them.

        Example:
            >>> from vaeaug.rng import derive_keys
            >>> Noise.from_keys(derive_keys(0, np.arange(4)), 16).eps.shape
            (4, 16)
        """
        if with_t:  # 23 random bits: exactly representable in float32 and strictly inside (0, 1)
            t = ((np.floor(uniform(keys, Stream.T, 1)[:, 0] * 2.0**23) + 0.5) * 2.0**-23).astype(np.float32)
        else:
            t = np.zeros(len(keys), np.float32)
        return cls(normal(keys, Stream.EPS, latent_dim), t)

    def __len__(self) -> int:
        return int(self.eps.shape[0])


class Generator(ABC):
    """Makes variants of a batch in model space. Subclasses: :class:`TorchGenerator` (and ONNX).

    Attributes:
        config: the model's :class:`~vaeaug.model.VAEConfig`.
        value_range: the user's value range recorded at fit time.
        class_names: names of the classes, when known.
    """

    config: Any
    value_range: Any
    class_names: list[str] | None
    augment: dict[str, Any] | None = None  # the model's tuned setting, if any

    @property
    def conditional(self) -> bool:
        """True for a class-conditional model."""
        return self.config.num_classes is not None

    @property
    def latent_dim(self) -> int:
        """Size of the latent code."""
        return int(self.config.latent_dim)

    @abstractmethod
    def variants(
        self,
        x: Any,
        y: Any = None,
        *,
        mode: str = "isotropic",
        strength: float = 1.0,
        form: str | None = None,
        noise: Noise,
        partner: Any = None,
        invariant: bool = False,
    ) -> Any:
        """Variants of ``x`` (model space, ``(N, *input_shape)``), same array type as ``x``.

        Args:
            x: sources in ``[0, 1]``; for ``prior`` only their count and device matter.
            y: labels ``(N,)``; required by conditional models.
            mode: see :mod:`vaeaug.functional`.
            strength: size of the move.
            form: ``"decode"`` or ``"delta"``; ``None``: ``"decode"`` for ``prior`` (no source
                sample), else ``"delta"``.
            noise: from :meth:`Noise.from_keys`.
            partner: ``(N, *input_shape)`` same-class partners for ``interpolate``.
            invariant: make each sample's output independent of the batch it is in, bit for
                bit (the torch backend runs fixed-size, zero-padded chunks); otherwise results
                can differ across batch sizes by float rounding (~1e-7).

        Returns:
            Variants in ``[0, 1]`` with the shape of ``x``.
        """

    def resolve_form(self, mode: str, form: str | None, strength: float) -> str:
        """``form`` (``None``: decode for ``prior``, else delta), after checking the setting for this model."""
        from .settings import check_mode

        form = ("decode" if mode == "prior" else "delta") if form is None else form
        check_mode(mode, form, strength, conditional=self.conditional)
        return form

    def describe(self) -> str:
        """A short description for ``repr``."""
        shape = "x".join(map(str, self.config.input_shape))
        cond = f", {self.config.num_classes} classes" if self.conditional else ""
        return f"VAE({shape}, latent {self.latent_dim}{cond})"


class TorchGenerator(Generator):
    """The torch backend: runs :func:`vaeaug.functional.perturb` on the model's device.

    Args:
        model: a :class:`~vaeaug.model.VAE` or the path of a model file.
        device: where to run; default: the model's device (CPU for a path).
        chunk_size: rows per model call when ``invariant=True`` (the last chunk is zero-padded,
            so every sample is computed in a call of the same shape, bit-identically).

    Example:
        >>> import vaeaug
        >>> from vaeaug.rng import derive_keys
        >>> gen = TorchGenerator(vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 8, 8))))
        >>> x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
        >>> gen.variants(x, noise=Noise.from_keys(derive_keys(0, np.arange(3)), 16)).shape
        (3, 1, 8, 8)
    """

    def __init__(self, model: Any, device: Any = None, chunk_size: int = 64) -> None:
        import torch

        from .io import load
        from .model import VAE

        if isinstance(model, (str, os.PathLike)):
            self.source: str | None = str(Path(model))
            model = load(model)
        elif isinstance(model, VAE):
            self.source = None
        else:
            raise TypeError(f"model must be a vaeaug VAE or a model file path; got {type(model).__name__}")
        if device is not None and torch.device(device) != model.device:
            model = copy.deepcopy(model).to(torch.device(device))  # never move the caller's model
        if model.config.is_image and model.device.type == "cpu":
            # channels_last runs the convs 2-3x faster on CPU (BENCHMARKS.md); on a copy, so the
            # caller's model is left as it is
            owned = model if self.source is not None else copy.deepcopy(model)
            model = owned.to(memory_format=torch.channels_last)
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an integer >= 1; got {chunk_size!r}")
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

    def variants(
        self,
        x: Any,
        y: Any = None,
        *,
        mode: str = "isotropic",
        strength: float = 1.0,
        form: str | None = None,
        noise: Noise,
        partner: Any = None,
        invariant: bool = False,
    ) -> Any:
        import torch

        from .functional import perturb

        form = self.resolve_form(mode, form, strength)
        is_numpy = isinstance(x, np.ndarray)
        xt = torch.from_numpy(x) if is_numpy else x
        if len(noise) != xt.shape[0]:
            raise ValueError(f"noise is for {len(noise)} samples but x has {xt.shape[0]}")
        dev = self.device
        in_dev = xt.device
        with torch.inference_mode():
            xd = xt.to(dev, torch.float32)
            if xd.dim() == 4 and dev.type == "cpu":
                xd = xd.contiguous(memory_format=torch.channels_last)
            yd = None if y is None else torch.as_tensor(y).to(dev)
            if self.conditional and yd is None:
                raise ValueError(
                    f"this model is class-conditional ({self.config.num_classes} classes): pass the labels y"
                )
            eps = torch.from_numpy(noise.eps).to(dev)
            t = torch.from_numpy(noise.t).to(dev)
            pb = None
            if mode == "interpolate":
                if partner is None:
                    raise ValueError("mode 'interpolate' needs partner samples of the same class")
                pb = (torch.from_numpy(partner) if isinstance(partner, np.ndarray) else partner).to(dev, torch.float32)
            run = functools.partial(perturb, self.model, mode=mode, strength=float(strength), form=form)
            if not invariant:
                out = run(xd, yd, eps=eps, t=t, x_b=pb)
            else:
                out = run_chunked(lambda xc, yc, ec, tc, bc: run(xc, yc, eps=ec, t=tc, x_b=bc),
                                  self.chunk_size, xd, yd, eps, t, pb)
        if is_numpy:
            return out.cpu().numpy()
        return out.to(in_dev)


def class_members(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Indices of every class: ``{class: sorted indices}``."""
    return {int(c): np.nonzero(labels == c)[0] for c in np.unique(labels)}


def same_class_partners(sources: np.ndarray, labels: np.ndarray, members: dict[int, np.ndarray],
                        u: np.ndarray) -> np.ndarray:
    """For each source index, another index of its class, picked by the uniform ``u``; itself if alone.

    Args:
        sources: indices of the samples that need a partner.
        labels: the class of every index.
        members: :func:`class_members` of ``labels``.
        u: one uniform in ``[0, 1)`` per source (from the source's key, so the choice is a pure
            function of it).

    Returns:
        Partner indices, one per source.

    Example:
        >>> y = np.array([0, 0, 1])
        >>> same_class_partners(np.array([0, 2]), y, class_members(y), np.array([0.3, 0.9])).tolist()
        [1, 2]
    """
    out = np.empty(len(sources), dtype=np.int64)
    for j, i in enumerate(sources):
        cands = members[int(labels[i])]
        cands = cands[cands != i]
        out[j] = i if len(cands) == 0 else cands[int(u[j] * len(cands))]
    return out


def run_chunked(run: Any, size: int, *arrays: Any) -> Any:
    """``run(*chunk)`` on zero-padded chunks of exactly ``size`` rows; the rows' results, concatenated.

    Every row is computed in a call of the same shape, so its result does not depend on the batch
    it came in (kernels may block a matrix product by its row count). Arrays may be numpy arrays or
    torch tensors (``None`` passes through); rows must be independent. Shared by both backends.
    """
    n = len(arrays[0])
    pad = -n % size

    def padded(v: Any) -> Any:
        if v is None or pad == 0:
            return v
        if isinstance(v, np.ndarray):
            return np.concatenate([v, np.zeros((pad, *v.shape[1:]), dtype=v.dtype)])
        import torch

        return torch.cat([v, v.new_zeros((pad, *v.shape[1:]))])

    full = [padded(v) for v in arrays]
    outs = [run(*(None if v is None else v[lo:lo + size] for v in full)) for lo in range(0, n + pad, size)]
    if isinstance(outs[0], np.ndarray):
        return np.concatenate(outs)[:n]
    import torch

    return torch.cat(outs)[:n]


def as_generator(model_or_path: Any, device: Any = None) -> Generator:
    """A :class:`Generator` for a model, a model file path, or a generator (returned as is).

    Args:
        model_or_path: a ``VAE``, a ``.vae`` path (torch backend), an ``.onnx`` export
            (:class:`~vaeaug.onnx_backend.OnnxGenerator`, numpy + onnxruntime) or a ``Generator``.
        device: device for the torch backend (an ONNX model runs on the CPU).

    Returns:
        The generator.
    """
    if isinstance(model_or_path, Generator):
        return model_or_path
    if isinstance(model_or_path, (str, os.PathLike)) and os.fspath(model_or_path).endswith(".onnx"):
        from .onnx_backend import OnnxGenerator

        if device is not None and str(device) != "cpu":
            raise ValueError(
                f"an ONNX model runs on the CPU through onnxruntime; got device={device!r} - pass a .vae "
                "model for the torch backend on another device"
            )
        return OnnxGenerator(model_or_path)
    return TorchGenerator(model_or_path, device=device)
