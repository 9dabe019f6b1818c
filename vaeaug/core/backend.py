"""The Backend interface: one way to make variants, whatever runs the model (torch-free).

Everything that makes a variant goes through a :class:`Backend`: the augmentation core calls
:meth:`Backend.generate` with a setting it validated once; users call :meth:`Backend.variants`,
which checks its arguments and can draw the noise from a seed. Noise is drawn outside the model
from integer keys (:mod:`vaeaug.core.rng`), so two backends given the same keys give the same variants.

Where the source of a variant is known, a backend also runs the two stages of
:mod:`vaeaug.core.functional`: :meth:`Backend.encode_sources` once per source, then
:meth:`Backend.generate_encoded`, one decoder pass per variant. ``invariant=True`` always runs
these two stages, each on fixed-size zero-padded chunks (:func:`run_chunked`), so a variant is the
same bit for bit whether its source was encoded in this call, in another batch, or cached.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from vaeaug.core.codecs import is_tensor as _is_tensor
from vaeaug.core.functional import Encodings
from vaeaug.core.labels import as_labels
from vaeaug.core.rng import Noise, derive_keys
from vaeaug.core.settings import PARTNER_MODES, AugmentSetting
from vaeaug.core.values import MAX_SEED, check_int

_NOT_STAGED = "runs no separate stages; use generate()"

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

    @property
    def amortizes(self) -> bool:
        """True where this backend runs the two stages (:meth:`encode_sources`, :meth:`generate_encoded`)."""
        return type(self).encode_sources is not Backend.encode_sources

    def encode_sources(self, x: Any, y: np.ndarray | None, *, delta: bool, invariant: bool = False) -> Encodings:
        """The first stage: what every variant of each source shares (checked inputs, as for :meth:`generate`).

        Args:
            x: ``(N, *input_shape)`` sources, float32 in ``[0, 1]``, numpy or torch.
            y: ``(N,)`` int64 labels (conditional models), else ``None``.
            delta: also decode the means (the delta form needs them; partners do not).
            invariant: fixed-size zero-padded chunks: each row's result independent of its batch.

        Returns:
            :class:`~vaeaug.core.functional.Encodings` as float32 numpy arrays on the CPU (what a cache keeps).
        """
        raise NotImplementedError(f"{type(self).__name__} {_NOT_STAGED}")

    def generate_encoded(self, setting: AugmentSetting, x: Any, enc: Encodings | None, y: np.ndarray | None,
                         noise: Noise, partner_mu: np.ndarray | None = None, invariant: bool = False) -> Any:
        """The second stage: variants of sources encoded by :meth:`encode_sources`, one decoder pass each.

        Args:
            setting: the move, validated for this model.
            x: ``(N, *input_shape)`` sources like :meth:`generate`'s (read by the delta form only).
            enc: their encodings, row for row (``None`` for ``prior``).
            y: ``(N,)`` int64 labels (conditional models), else ``None``.
            noise: one row per sample.
            partner_mu: ``(N, latent_dim)`` the partners' means, for the partner modes.
            invariant: fixed-size zero-padded chunks.

        Returns:
            Variants like ``x``: :meth:`generate`'s within float rounding, and bit for bit with
            ``invariant=True``.
        """
        raise NotImplementedError(f"{type(self).__name__} {_NOT_STAGED}")

    def generate_in_stages(self, setting: AugmentSetting, x: Any, y: np.ndarray | None, noise: Noise,
                           partner: Any = None, invariant: bool = True) -> Any:
        """:meth:`generate` through the two stages, each source encoded once (what ``invariant=True`` runs);
        the arguments are :meth:`generate`'s.

        Returns:
            Variants like ``x``.
        """
        enc = None
        if setting.mode != "prior":
            enc = self.encode_sources(x, y, delta=setting.form == "delta", invariant=invariant)
        mu_b = None if partner is None else self.encode_sources(partner, y, delta=False, invariant=invariant).mu
        return self.generate_encoded(setting, x, enc, y, noise, mu_b, invariant)

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
                (the two stages, on fixed-size, zero-padded chunks); otherwise results can differ across
                batch sizes by float rounding (~1e-7).

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
        check_int("seed", seed, 0, MAX_SEED, optional=True)
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


def run_chunked(run: Any, size: int, *arrays: Any, pad: bool = True) -> Any:
    """``run(*chunk)`` on zero-padded chunks of exactly ``size`` rows; the rows' results, concatenated.

    Every row is computed in a call of the same shape, so its result does not depend on the batch
    it came in (kernels may block a matrix product by its row count). Arrays may be numpy arrays or
    torch tensors (``None`` passes through); rows must be independent. Shared by both backends.

    Args:
        run: ``run(*chunk)`` returns an array, or a tuple of arrays (or ``None``), one row per input row.
        size: rows per call.
        *arrays: the inputs, row for row (``None`` passes through as ``None``).
        pad: zero-pad the last chunk to ``size`` rows (``False``: it runs short, for speed alone).

    Returns:
        The rows' results, like ``run``'s (a tuple of concatenations for a tuple).

    Example:
        >>> run_chunked(lambda a: (a * 2, None), 2, np.arange(3))
        (array([0, 2, 4]), None)
        >>> run_chunked(lambda a: a * 2, 2, np.arange(0))  # no rows: one call on the empty arrays
        array([], dtype=int64)
    """
    n = len(arrays[0])
    if n == 0:
        return run(*arrays)
    pad_rows = -n % size if pad else 0
    torch: Any = sys.modules.get("torch")  # loaded wherever a tensor is among the arrays

    def chunk(v: Any, lo: int) -> Any:
        """Rows ``lo..lo+size`` of ``v``; the last chunk zero-padded (a copy of that chunk only)."""
        if v is None:
            return None
        part = v[lo:lo + size]
        if lo + size <= n or pad_rows == 0:
            return part
        if isinstance(v, np.ndarray):
            return np.concatenate([part, np.zeros((pad_rows, *v.shape[1:]), dtype=v.dtype)])
        out = torch.cat([part, v.new_zeros((pad_rows, *v.shape[1:]))])
        if part.dim() == 4 and part.is_contiguous(memory_format=torch.channels_last):
            out = out.contiguous(memory_format=torch.channels_last)  # the layout of the other chunks: same kernels
        return out

    def joined(parts: list[Any]) -> Any:
        if parts[0] is None:
            return None
        if len(parts) == 1:
            return parts[0][:n]
        if isinstance(parts[0], np.ndarray):
            return np.concatenate(parts)[:n]
        return torch.cat(parts)[:n]

    outs = [run(*(chunk(v, lo) for v in arrays)) for lo in range(0, n + pad_rows, size)]
    if isinstance(outs[0], tuple):
        return tuple(joined([o[j] for o in outs]) for j in range(len(outs[0])))
    return joined(outs)
