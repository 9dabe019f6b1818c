"""The perturbation math, in one place: latent moves and output forms, noise given explicitly.

All functions work on a batch in model space (float32 in ``[0, 1]``) and take the noise as
input, so the same code runs in the torch backend and is traced into ONNX. Modes:

* ``posterior``:   ``z = mu + s * sigma * eps`` (``s = 1`` samples ``q(z|x)``)
* ``isotropic``:   ``z = mu + s * eps``
* ``interpolate``: ``z = (1 - t) * mu_a + t * mu_b``, ``t = s * u / 2`` with ``u ~ U(0, 1)``,
  ``b`` a sample of the same class (``s = 1`` gives ``t`` in ``[0, 0.5)``)
* ``prior``:       ``z = eps`` decoded with label ``y`` (conditional models: a new sample of class y)
* ``reconstruct``: ``z = mu``

Output forms: ``decode`` returns ``D(z)``; ``delta`` returns ``clip(x + D(z) - D(mu), 0, 1)``,
which keeps the original's detail and adds only the change the latent move makes (both
decoder passes run as one batched call up to 256 rows, as two calls above that). ``prior``
has no source sample and is always ``decode``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from .model import VAE

__all__ = ["MODES", "FORMS", "Mode", "Form", "check_mode", "latent_move", "perturb"]

Mode = Literal["posterior", "isotropic", "interpolate", "prior", "reconstruct"]
Form = Literal["decode", "delta"]
_ONE_CALL_ROWS = 256
MODES: tuple[str, ...] = ("posterior", "isotropic", "interpolate", "prior", "reconstruct")
FORMS: tuple[str, ...] = ("decode", "delta")


def check_mode(mode: str, form: str, strength: float, *, conditional: bool) -> None:
    """Validate a (mode, form, strength) setting for a model; raise ``ValueError`` if unusable.

    Example:
        >>> check_mode("posterior", "delta", 1.0, conditional=False)
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}; got {form!r}")
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not strength >= 0:
        raise ValueError(f"strength must be a number >= 0; got {strength!r}")
    if mode == "interpolate" and strength > 2:
        raise ValueError(f"interpolate needs strength in [0, 2] (t = strength * u / 2 <= 1); got {strength}")
    if mode == "prior" and not conditional:
        raise ValueError(
            "mode 'prior' makes a new sample of the source's class and needs a class-conditional "
            "model (fit with conditional=True); use 'posterior' or 'isotropic' with this model"
        )
    if mode == "prior" and form == "delta":
        raise ValueError("mode 'prior' has no source sample, so form 'delta' does not apply; use form='decode'")


def latent_move(
    mode: str,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    eps: torch.Tensor,
    strength: torch.Tensor | float,
    t: torch.Tensor | None = None,
    mu_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """The perturbed latent code ``z'`` for ``mode``.

    Args:
        mode: one of :data:`MODES`.
        mu: posterior means ``(N, L)``.
        logvar: posterior log-variances ``(N, L)``.
        eps: standard normal noise ``(N, L)``.
        strength: ``s``, a float or a tensor broadcastable to ``(N, 1)``.
        t: uniforms ``(N,)`` in ``[0, 1)`` for ``interpolate``.
        mu_b: partners' posterior means ``(N, L)`` for ``interpolate``.

    Returns:
        ``(N, L)`` latent codes.

    Example:
        >>> mu = torch.zeros(2, 3)
        >>> latent_move("isotropic", mu, mu, torch.ones(2, 3), 0.5)[0].tolist()
        [0.5, 0.5, 0.5]
    """
    s: torch.Tensor | float
    if isinstance(strength, torch.Tensor):
        s = strength.to(mu.device, mu.dtype)
        s = s.reshape(-1, 1) if s.dim() else s
    else:
        s = float(strength)
    if mode == "posterior":
        return mu + s * torch.exp(0.5 * logvar) * eps
    if mode == "isotropic":
        return mu + s * eps
    if mode == "reconstruct":
        return mu
    if mode == "prior":
        return eps
    if mode == "interpolate":
        if t is None or mu_b is None:
            raise ValueError("interpolate needs the uniforms t and the partners' means mu_b")
        w = (0.5 * s * t.to(mu.device, mu.dtype).reshape(-1, 1))
        return (1.0 - w) * mu + w * mu_b
    raise ValueError(f"mode must be one of {MODES}; got {mode!r}")


def perturb(
    vae: VAE,
    x: torch.Tensor,
    y: Any = None,
    *,
    mode: str,
    strength: torch.Tensor | float,
    eps: torch.Tensor,
    form: str = "decode",
    t: torch.Tensor | None = None,
    x_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """Variants of a batch ``x`` (model space) under ``mode`` and ``form``, noise given.

    Args:
        vae: the model.
        x: ``(N, *input_shape)`` sources in ``[0, 1]``.
        y: labels ``(N,)`` for conditional models (the variants keep them).
        mode: one of :data:`MODES`.
        strength: ``s`` of the move.
        eps: ``(N, latent_dim)`` standard normals.
        form: ``"decode"`` or ``"delta"``.
        t: ``(N,)`` uniforms for ``interpolate``.
        x_b: ``(N, *input_shape)`` partners (same classes as ``x``) for ``interpolate``.

    Returns:
        ``(N, *input_shape)`` variants in ``[0, 1]``.

    Example:
        >>> from vaeaug import VAE, VAEConfig
        >>> vae = VAE(VAEConfig(input_shape=(1, 8, 8))).eval()
        >>> x = torch.rand(2, 1, 8, 8)
        >>> perturb(vae, x, mode="isotropic", strength=1.0, eps=torch.randn(2, 16), form="delta").shape
        torch.Size([2, 1, 8, 8])
    """
    if mode == "prior":
        return vae.decode(eps, y)
    mu, logvar = vae.encode(x, y)
    mu_b = vae.encode(x_b, y)[0] if mode == "interpolate" and x_b is not None else None
    z = latent_move(mode, mu, logvar, eps, strength, t, mu_b)
    if form == "decode":
        return vae.decode(z, y)
    if form != "delta":
        raise ValueError(f"form must be one of {FORMS}; got {form!r}")
    n = x.shape[0]
    yy = None
    if y is not None:
        yt = torch.as_tensor(y).reshape(-1)
        yt = yt.expand(n) if yt.numel() == 1 else yt
        yy = torch.cat([yt, yt])
    if 2 * n <= _ONE_CALL_ROWS:  # small batches: one decoder call for D(z') and D(mu)
        both = vae.decode(torch.cat([z, mu]), yy)
        d_z, d_mu = both[:n], both[n:]
    else:  # large ones: two calls stay in cache (measured: 2x faster at 256 + 256 rows on CPU)
        d_z, d_mu = vae.decode(z, None if yy is None else yy[:n]), vae.decode(mu, None if yy is None else yy[n:])
    return (x + (d_z - d_mu)).clamp(0.0, 1.0)  # a zero move returns x exactly
