"""The Backend interface: one way to make variants, whatever runs the model (torch-free).

Everything that makes a variant goes through a :class:`Backend`: the augmentation core calls
:meth:`Backend.generate` with a setting it validated once; users call :meth:`Backend.variants`,
which checks its arguments and can draw the noise from a seed. Noise is drawn outside the model
from integer keys (:mod:`vaeaug.core.rng`), so two backends given the same keys give the same variants.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from vaeaug.core.codecs import is_tensor as _is_tensor
from vaeaug.core.labels import as_labels
from vaeaug.core.rng import Noise, derive_keys
from vaeaug.core.settings import PARTNER_MODES, AugmentSetting

__all__ = ["Backend", "run_chunked"]


class Backend(ABC):
    """Makes variants of a batch in model space. Backends: torch and onnxruntime.

    Attributes:
        config: the model's :class:`~vaeaug.model.config.VAEConfig`.
        value_range: the user's value range recorded at fit time.
        class_names: names of the classes, when known.
        augment: the model's tuned setting (a dict), if any.
    """

    config: Any
    value_range: Any
    class_names: list[str] | None
    augment: dict[str, Any] | None = None

    @property
    def conditional(self) -> bool:
        """True for a class-conditional model."""
        return self.config.num_classes is not None

    @property
    def latent_dim(self) -> int:
        """Size of the latent code."""
        return int(self.config.latent_dim)

    @abstractmethod
    def generate(self, setting: AugmentSetting, x: Any, y: np.ndarray | None, noise: Noise, partner: Any = None,
                 invariant: bool = False) -> Any:
        """Variants of the model-space batch ``x``, without checks: for callers holding a setting
        already validated for this model and checked inputs (the augmentation core, :meth:`variants`).

        Args:
            setting: the move (its ``p`` is not used here: every row is replaced).
            x: ``(N, *input_shape)`` float32 in ``[0, 1]``, numpy or torch.
            y: ``(N,)`` int64 labels (conditional models), else ``None``.
            noise: one row per sample.
            partner: same-class partners for the partner modes (``interpolate``, ``extrapolate``), like ``x``.
            invariant: each row's result independent of the batch it is in, bit for bit.

        Returns:
            Variants like ``x`` (the same array type; torch tensors on their device).
        """

    def variants(
        self,
        x: Any,
        y: Any = None,
        *,
        mode: str = "isotropic",
        strength: float = 1.0,
        form: str | None = None,
        noise: Noise | None = None,
        seed: int | None = None,
        keys: np.ndarray | None = None,
        partner: Any = None,
        invariant: bool = False,
    ) -> Any:
        """Variants of ``x`` (model space, ``(N, *input_shape)``), same array type as ``x``.

        Args:
            x: sources in ``[0, 1]``; for ``prior`` only their count and device matter.
            y: labels ``(N,)`` (or one int for all); required by conditional models.
            mode: see :mod:`vaeaug.core.functional`.
            strength: size of the move.
            form: ``"decode"`` or ``"delta"``; ``None``: ``"decode"`` for ``prior``, else ``"delta"``.
            noise: the random inputs, or give
            seed: a seed (sample ``i`` is keyed ``derive_keys(seed, i)``, as in every consumer), or
            keys: one key per sample (:func:`vaeaug.core.rng.derive_keys`).
            partner: ``(N, *input_shape)`` same-class partners for ``interpolate`` and ``extrapolate``.
            invariant: make each sample's output independent of the batch it is in, bit for bit
                (fixed-size, zero-padded chunks); otherwise results can differ across batch sizes
                by float rounding (~1e-7).

        Returns:
            Variants in ``[0, 1]`` with the shape of ``x``.

        Example:
            >>> import vaeaug
            >>> gen = vaeaug.TorchBackend(vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 8, 8))))
            >>> x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
            >>> gen.variants(x, seed=0).shape
            (3, 1, 8, 8)
        """
        form = ("decode" if mode == "prior" else "delta") if form is None else form
        setting = AugmentSetting(mode, strength, form, 1.0).check_for(conditional=self.conditional)
        want = tuple(self.config.input_shape)
        if not (isinstance(x, np.ndarray) or _is_tensor(x)) or tuple(x.shape[1:]) != want or x.ndim != len(want) + 1:
            got = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise ValueError(f"expected x of shape (N, {', '.join(map(str, want))}) in model space; got {got}")
        n = int(x.shape[0])
        if sum(v is not None for v in (noise, seed, keys)) != 1:
            raise ValueError("pass exactly one of seed= (an int), keys= (one per sample) or noise=")
        if noise is None:
            if seed is not None:
                keys = derive_keys(seed, np.arange(n))
            noise = Noise.from_keys(np.asarray(keys), self.latent_dim, with_t=mode in PARTNER_MODES)
        if len(noise) != n:
            raise ValueError(f"noise is for {len(noise)} samples but x has {n}")
        labels = None
        if not self.conditional and y is not None:
            raise ValueError("labels were given to an unconditional model; pass y=None")
        if self.conditional:
            if y is None:
                raise ValueError(f"this model is class-conditional ({self.config.num_classes} classes): pass the "
                                 "labels y")
            labels = as_labels(y, n, self.config.num_classes)
        if mode in PARTNER_MODES:
            if partner is None:
                raise ValueError(f"mode {mode!r} needs partner samples of the same class: pass partner=, an array "
                                 "shaped like x")
            if tuple(partner.shape) != tuple(x.shape):
                raise ValueError(f"partner must have the shape of x {tuple(x.shape)}; got {tuple(partner.shape)}")
        if n == 0:
            return x[:0]
        return self.generate(setting, x, labels, noise, partner, invariant)

    def describe(self) -> str:
        """A short description for ``repr``."""
        shape = "x".join(map(str, self.config.input_shape))
        cond = f", {self.config.num_classes} classes" if self.conditional else ""
        return f"VAE({shape}, latent {self.latent_dim}{cond})"


def run_chunked(run: Any, size: int, *arrays: Any) -> Any:
    """``run(*chunk)`` on zero-padded chunks of exactly ``size`` rows; the rows' results, concatenated.

    Every row is computed in a call of the same shape, so its result does not depend on the batch
    it came in (kernels may block a matrix product by its row count). Arrays may be numpy arrays or
    torch tensors (``None`` passes through); rows must be independent. Shared by both backends.
    """
    n = len(arrays[0])
    pad = -n % size
    torch: Any = sys.modules.get("torch")  # loaded wherever a tensor is among the arrays

    def padded(v: Any) -> Any:
        if v is None or pad == 0:
            return v
        if isinstance(v, np.ndarray):
            return np.concatenate([v, np.zeros((pad, *v.shape[1:]), dtype=v.dtype)])
        return torch.cat([v, v.new_zeros((pad, *v.shape[1:]))])

    full = [padded(v) for v in arrays]
    outs = [run(*(None if v is None else v[lo:lo + size] for v in full)) for lo in range(0, n + pad, size)]
    if isinstance(outs[0], np.ndarray):
        return np.concatenate(outs)[:n]
    return torch.cat(outs)[:n]
