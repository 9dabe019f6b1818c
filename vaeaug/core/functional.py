"""The perturbation math, once, for torch tensors and numpy arrays alike (torch-free module).

Both backends run these functions: the torch backend on tensors, the ONNX backend on numpy arrays
around its encoder and sampler graphs, and the export traces them into the augmenter graph. Modes:

* ``posterior``:   ``z = mu + s * sigma * eps`` (``s = 1`` samples ``q(z|x)``; ``logvar`` clamped to
  :data:`LOGVAR_RANGE`, so ``sigma`` is finite for any encoder output)
* ``isotropic``:   ``z = mu + s * eps``
* ``interpolate``: ``z = (1 - t) * mu_a + t * mu_b``, ``t = s * u / 2`` with ``u ~ U(0, 1)``,
  ``b`` a sample of the same class (``s = 1`` gives ``t`` in ``[0, 0.5)``)
* ``extrapolate``: ``z = mu_a + t * (mu_a - mu_b)``, ``t`` and ``b`` as for ``interpolate``: the
  mirror move, away from the partner (DeVries & Taylor, arXiv 1702.05538)
* ``prior``:       ``z = eps`` decoded with label ``y`` (conditional models: a new sample of class y)
* ``reconstruct``: ``z = mu``

Output forms: ``decode`` returns ``D(z)``; ``delta`` returns ``clip(x + D(z) - D(mu), 0, 1)``,
which keeps the original's detail and adds only the change the latent move makes. ``prior``
has no source sample and is always ``decode``.

Two stages, where the source is known (:func:`encode_sources`, then :func:`perturb_encoded`): what
every variant of a source shares, ``mu``, ``logvar`` and (delta form) ``D(mu)``, is computed once,
and each variant then costs one decoder pass, ``D(z')``. The same math as :func:`perturb`; the
results differ from it only by float rounding (the decoder runs on other batches).

One batching rule for both backends (:data:`ONE_CALL_ROWS`): two inputs of ``n`` rows that go
through the same network (``D(z')`` and ``D(mu)``; sources and partners in the encoder) run as one
call of ``2n`` rows up to 256 rows, as two calls above that (measured: a 512-row decoder call runs
at half the per-row speed of a 256-row one on CPU, its activations leave the cache). Big samples
run in fewer rows a call (:func:`call_rows`: at most :data:`CALL_VALUES` input values).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from vaeaug.core.settings import FORMS, MODES, PARTNER_MODES, Form, Mode, check_mode

__all__ = ["MODES", "FORMS", "PARTNER_MODES", "Mode", "Form", "check_mode", "latent_move", "gaussian_move",
           "delta_output", "perturb", "ONE_CALL_ROWS", "CALL_VALUES", "call_rows", "LOGVAR_RANGE", "clamp_logvar",
           "Encodings", "encode_sources", "perturb_encoded"]

ONE_CALL_ROWS = 256

CALL_VALUES = 1 << 19
"""A CPU model call without ``invariant`` takes at most this many input values (rows x values per
row), and at most :data:`ONE_CALL_ROWS` rows: the activations of a larger call leave the cache.
Measured one thread, 256 images a batch (BENCHMARKS.md, 2026-12-05): the torch backend 1.41x faster
at 128x128 RGB (10 rows a call) and 1.18x at 64x64 RGB (42 rows) than in one call; onnxruntime
about 1.0x; 28x28 keeps 256."""


def call_rows(row_values: int) -> int:
    """Rows per CPU model call for samples of ``row_values`` values each (see :data:`CALL_VALUES`).

    Example:
        >>> call_rows(784), call_rows(3 * 64 * 64), call_rows(3 * 128 * 128)
        (256, 42, 10)
    """
    return max(1, min(ONE_CALL_ROWS, CALL_VALUES // max(1, row_values)))

LOGVAR_RANGE = (-30.0, 20.0)
"""The posterior log-variances every move and score uses: ``sigma = exp(logvar / 2)`` in ``[3e-7, 2.2e4]``.

Far outside anything a fit produces (fitted posteriors have ``logvar`` within a few units of 0), so
the clamp never binds on a real model; it keeps ``exp(logvar / 2)`` finite in float32 for any
encoder output, e.g. a model file whose log-variance bias was edited to 200 (``exp(100)`` is inf).
"""


def clamp_logvar(logvar: Any) -> Any:
    """``logvar`` clipped to :data:`LOGVAR_RANGE` (a torch tensor or a numpy array; traced into ONNX as Clip).

    Example:
        >>> clamp_logvar(np.array([-100.0, 0.5, 200.0])).tolist()
        [-30.0, 0.5, 20.0]
    """
    return logvar.clip(*LOGVAR_RANGE)


def _exp(a: Any) -> Any:
    return np.exp(a) if isinstance(a, np.ndarray) else a.exp()


def _cat(parts: list[Any]) -> Any:
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return sys.modules["torch"].cat(parts)  # a tensor is here, so torch is loaded


def _col(v: Any) -> Any:
    """A per-sample ``(N,)`` array as a column ``(N, 1)``; numbers and 0-d arrays as they are."""
    return v if isinstance(v, (int, float)) or v.ndim == 0 else v.reshape(-1, 1)


def latent_move(
    mode: str,
    mu: Any,
    logvar: Any,
    eps: Any,
    strength: Any,
    t: Any = None,
    mu_b: Any = None,
) -> Any:
    """The perturbed latent code ``z'`` for ``mode`` (torch tensors or numpy arrays).

    Args:
        mode: one of :data:`MODES`.
        mu: posterior means ``(N, L)``.
        logvar: posterior log-variances ``(N, L)``.
        eps: standard normal noise ``(N, L)``.
        strength: ``s``, a number or per-sample ``(N,)`` values.
        t: uniforms ``(N,)`` in ``[0, 1)`` for the partner modes (``interpolate``, ``extrapolate``).
        mu_b: partners' posterior means ``(N, L)`` for the partner modes.

    Returns:
        ``(N, L)`` latent codes, of the type of ``mu``.

    Example:
        >>> mu = np.zeros((2, 3), np.float32)
        >>> latent_move("isotropic", mu, mu, np.ones((2, 3), np.float32), 0.5)[0].tolist()
        [0.5, 0.5, 0.5]
        >>> u, mu_b = np.ones(2, np.float32), np.ones((2, 3), np.float32)
        >>> latent_move("extrapolate", mu, mu, mu, 2.0, u, mu_b)[0].tolist()  # t = 1, away from mu_b
        [-1.0, -1.0, -1.0]
    """
    s = _col(strength)
    if mode == "posterior":
        return mu + s * _exp(0.5 * clamp_logvar(logvar)) * eps
    if mode == "isotropic":
        return mu + s * eps
    if mode == "reconstruct":
        return mu
    if mode == "prior":
        return eps
    if mode in PARTNER_MODES:
        if t is None or mu_b is None:
            missing = " and ".join(n for n, v in (("t", t), ("mu_b", mu_b)) if v is None)
            raise ValueError(f"mode {mode!r} needs the uniforms t and the partners' means mu_b; {missing} "
                             "missing: pass both")
        w = 0.5 * s * t.reshape(-1, 1)
        if mode == "extrapolate":
            return mu + w * (mu - mu_b)
        return (1.0 - w) * mu + w * mu_b
    raise ValueError(f"mode must be one of {MODES}; got {mode!r}")


def gaussian_move(mu: Any, logvar: Any, eps: Any, strength: Any, sigma_weight: Any) -> Any:
    """``z = mu + s * (w * sigma + (1 - w)) * eps``: ``posterior`` at ``w = 1``, ``isotropic`` at ``w = 0``.

    The per-sample form of the two Gaussian moves, as traced into the ONNX augmenter graph (one
    graph serves both modes; ``s = 0`` gives ``reconstruct``). At ``w`` in {0, 1} it equals
    :func:`latent_move` bit for bit.

    Args:
        mu: posterior means ``(N, L)``.
        logvar: posterior log-variances ``(N, L)``.
        eps: standard normal noise ``(N, L)``.
        strength: ``(N,)`` move sizes.
        sigma_weight: ``(N,)`` weights ``w``.

    Returns:
        ``(N, L)`` latent codes.

    Example:
        >>> mu, lv, e = np.zeros((1, 2)), np.zeros((1, 2)), np.ones((1, 2))
        >>> gaussian_move(mu, lv, e, np.array([2.0]), np.array([0.0])).tolist()
        [[2.0, 2.0]]
    """
    w = sigma_weight.reshape(-1, 1)
    return mu + strength.reshape(-1, 1) * (w * _exp(0.5 * clamp_logvar(logvar)) + (1.0 - w)) * eps


def delta_output(x: Any, d_z: Any, d_mu: Any) -> Any:
    """The ``delta`` form: ``clip(x + D(z') - D(mu), 0, 1)``; a zero move returns ``x`` exactly.

    Example:
        >>> delta_output(np.array([0.2, 0.9]), np.array([0.5, 0.7]), np.array([0.4, 0.5])).tolist()
        [0.3, 1.0]
    """
    if isinstance(d_z, np.ndarray) and isinstance(x, np.ndarray) and x.dtype == d_z.dtype == d_mu.dtype:
        # in place: the same values (IEEE addition commutes), without two temporaries
        out = np.subtract(d_z, d_mu)
        out += x
        return np.clip(out, 0.0, 1.0, out=out)
    return (x + (d_z - d_mu)).clip(0.0, 1.0)


def _paired(f: Any, a: Any, b: Any, y: Any) -> tuple[Any, Any]:
    """``f(a, y)`` and ``f(b, y)`` under :data:`ONE_CALL_ROWS`; outputs may be tuples (the encoder)."""
    n = a.shape[0]
    if 2 * n > ONE_CALL_ROWS:
        return f(a, y), f(b, y)
    both = f(_cat([a, b]), y if y is None or isinstance(y, int) else _cat([y, y]))
    if isinstance(both, tuple):
        return tuple(v[:n] for v in both), tuple(v[n:] for v in both)
    return both[:n], both[n:]


def perturb(
    model: Any,
    x: Any,
    y: Any = None,
    *,
    mode: str,
    strength: Any,
    eps: Any,
    form: str = "decode",
    t: Any = None,
    x_b: Any = None,
) -> Any:
    """Variants of a batch ``x`` (model space) under ``mode`` and ``form``, noise given.

    Args:
        model: anything with ``encode(x, y) -> (mu, logvar)`` and ``decode(z, y) -> x``: a
            :class:`~vaeaug.model.vae.VAE` on tensors, or the ONNX generator on numpy arrays.
        x: ``(N, *input_shape)`` sources in ``[0, 1]``.
        y: labels ``(N,)`` for conditional models (the variants keep them).
        mode: one of :data:`MODES`.
        strength: ``s`` of the move.
        eps: ``(N, latent_dim)`` standard normals.
        form: ``"decode"`` or ``"delta"``.
        t: ``(N,)`` uniforms for the partner modes (``interpolate``, ``extrapolate``).
        x_b: ``(N, *input_shape)`` partners (same classes as ``x``) for the partner modes.

    Returns:
        ``(N, *input_shape)`` variants in ``[0, 1]``.

    Example:
        >>> import torch
        >>> from vaeaug import VAE, VAEConfig
        >>> vae = VAE(VAEConfig(input_shape=(1, 8, 8))).eval()
        >>> x = torch.rand(2, 1, 8, 8)
        >>> perturb(vae, x, mode="isotropic", strength=1.0, eps=torch.randn(2, 16), form="delta").shape
        torch.Size([2, 1, 8, 8])
    """
    if mode == "prior":
        return model.decode(eps, y)
    if mode in PARTNER_MODES and x_b is not None:
        (mu, logvar), (mu_b, _) = _paired(model.encode, x, x_b, y)
    else:
        (mu, logvar), mu_b = model.encode(x, y), None
    z = latent_move(mode, mu, logvar, eps, strength, t, mu_b)
    if form == "decode":
        return model.decode(z, y)
    if form != "delta":
        raise ValueError(f"form must be one of {FORMS}; got {form!r}")
    d_z, d_mu = _paired(model.decode, z, mu, y)
    return delta_output(x, d_z, d_mu)


@dataclass(frozen=True)
class Encodings:
    """What every variant of a source shares: its posterior and, for the delta form, its decoded mean.

    Attributes:
        mu: ``(N, L)`` posterior means.
        logvar: ``(N, L)`` posterior log-variances (clamped to :data:`LOGVAR_RANGE`).
        d_mu: ``(N, *input_shape)`` decoded means ``D(mu)`` (the delta form needs them), or ``None``.
    """

    mu: Any
    logvar: Any
    d_mu: Any = None

    def __len__(self) -> int:
        return int(self.mu.shape[0])

    def take(self, rows: Any) -> Encodings:
        """The encodings of ``rows`` (indices or a slice), in their order.

        Example:
            >>> e = Encodings(np.arange(6.0).reshape(3, 2), np.zeros((3, 2)))
            >>> e.take(np.array([2, 0])).mu.tolist(), e.take(np.array([2, 0])).d_mu is None
            ([[4.0, 5.0], [0.0, 1.0]], True)
        """
        return Encodings(self.mu[rows], self.logvar[rows], None if self.d_mu is None else self.d_mu[rows])


def encode_sources(model: Any, x: Any, y: Any = None, *, delta: bool) -> Encodings:
    """The first stage: ``mu``, ``logvar`` and, with ``delta``, ``D(mu)`` of the sources ``x``.

    Args:
        model: anything with ``encode(x, y) -> (mu, logvar)`` and ``decode(z, y) -> x`` (see :func:`perturb`).
        x: ``(N, *input_shape)`` sources in ``[0, 1]``.
        y: labels ``(N,)`` for conditional models.
        delta: also decode the means (what the delta form subtracts); partners need only ``mu``.

    Returns:
        The sources' :class:`Encodings`, of the array type of ``x``.

    Example:
        >>> import torch
        >>> from vaeaug import VAE, VAEConfig
        >>> vae = VAE(VAEConfig(input_shape=(1, 8, 8))).eval()
        >>> enc = encode_sources(vae, torch.rand(2, 1, 8, 8), delta=True)
        >>> tuple(enc.mu.shape), tuple(enc.d_mu.shape)
        ((2, 16), (2, 1, 8, 8))
    """
    mu, logvar = model.encode(x, y)
    return Encodings(mu, logvar, model.decode(mu, y) if delta else None)


def perturb_encoded(
    model: Any,
    x: Any,
    enc: Encodings,
    y: Any = None,
    *,
    mode: str, strength: Any, eps: Any, form: str = "decode", t: Any = None,
    mu_b: Any = None,
) -> Any:
    """The second stage: variants of sources already encoded, one decoder pass each.

    Args:
        model: as for :func:`perturb` (only ``decode`` is called).
        x: ``(N, *input_shape)`` sources (read by the delta form only).
        enc: the sources' :class:`Encodings`, row for row (``d_mu`` needed by the delta form).
        y: labels ``(N,)`` for conditional models.
        mode: one of :data:`MODES`.
        strength: ``s`` of the move.
        eps: ``(N, latent_dim)`` standard normals.
        form: ``"decode"`` or ``"delta"``.
        t: ``(N,)`` uniforms for the partner modes.
        mu_b: ``(N, latent_dim)`` partners' means for the partner modes.

    Returns:
        ``(N, *input_shape)`` variants in ``[0, 1]``: :func:`perturb`'s, within float rounding.

    Example:
        >>> import torch
        >>> from vaeaug import VAE, VAEConfig
        >>> vae = VAE(VAEConfig(input_shape=(1, 8, 8))).eval()
        >>> x, eps = torch.rand(2, 1, 8, 8), torch.randn(2, 16)
        >>> with torch.no_grad():
        ...     a = perturb_encoded(vae, x, encode_sources(vae, x, delta=True), mode="isotropic", strength=1.0,
        ...                         eps=eps, form="delta")
        ...     b = perturb(vae, x, mode="isotropic", strength=1.0, eps=eps, form="delta")
        >>> bool((a - b).abs().max() < 1e-5)
        True
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}; got {form!r}")
    if mode == "prior":
        return model.decode(eps, y)
    d_z = model.decode(latent_move(mode, enc.mu, enc.logvar, eps, strength, t, mu_b), y)
    if form == "decode":
        return d_z
    if enc.d_mu is None:
        raise ValueError("the delta form needs the sources' decoded means: encode them with delta=True")
    return delta_output(x, d_z, enc.d_mu)
