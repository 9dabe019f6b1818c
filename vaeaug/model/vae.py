"""The VAE: configuration, convolutional and MLP architectures, and the ELBO terms.

Textbook model: the encoder gives ``mu`` and ``logvar`` of ``q(z|x) = N(mu, exp(logvar))`` (``logvar``
clamped to :data:`vaeaug.core.functional.LOGVAR_RANGE`, far outside what a fit produces, so that
``exp(logvar / 2)`` is finite for any weights a file can hold),
``z = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)``, prior ``N(0, I)``, and the loss is the
reconstruction negative log-likelihood plus ``beta`` times the closed-form KL divergence, all in
nats per sample. Images live in model space (float32 in ``[0, 1]``, ``(N, C, H, W)``), vectors
as ``(N, D)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from io import BytesIO
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vaeaug.core.functional import LOGVAR_RANGE, clamp_logvar
from vaeaug.core.values import ValueRange, check_int, check_values, short_repr
from vaeaug.model.config import GAUSSIAN_STD_RANGE, Likelihood, VAEConfig, check_class_names, conv_sizes, default_widths
from vaeaug.model.devices import resolve_device
from vaeaug.model.vaefile import read_model, save

__all__ = ["load", "VAEConfig", "VAE", "VAEOutput", "Likelihood", "ValueRange", "default_widths", "conv_sizes"]

MAX_SAMPLE_VALUES = 1 << 32
"""Values one :meth:`VAE.sample` call returns (16 GiB of float32): more is refused, not left to the allocator."""


def _randn(shape: Any, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard normals drawn on the generator's device (a CPU generator works for a CUDA model)."""
    src = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=src).to(device)


class VAEOutput(NamedTuple):
    """What :meth:`VAE.forward` returns."""

    recon: torch.Tensor  # decoded mean, model space
    mu: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor


class VAE(nn.Module):
    """A (optionally class-conditional) VAE for images ``(N, C, H, W)`` or vectors ``(N, D)``.

    Args:
        config: the architecture and likelihood.
        value_range: the user's value range, recorded by :func:`vaeaug.fit`.
        class_names: names of the classes, when known.

    Example:
        >>> vae = VAE(VAEConfig(input_shape=(1, 8, 8), latent_dim=4))
        >>> mu, logvar = vae.encode(torch.rand(2, 1, 8, 8))
        >>> vae.decode(mu).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self,
        config: VAEConfig,
        value_range: ValueRange | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(config, VAEConfig):
            raise TypeError(f"config must be a VAEConfig; got {type(config).__name__}")
        if value_range is not None and not isinstance(value_range, ValueRange):
            raise TypeError(f"value_range must be a ValueRange or None; got {type(value_range).__name__}")
        self.config = config
        self.value_range = value_range or ValueRange(0.0, 1.0, "float32")
        self.class_names = check_class_names(class_names, config.num_classes)
        self.history: list[dict[str, Any]] = []
        self.augment: dict[str, Any] | None = None  # the setting chosen by vaeaug.tune, if any
        self.tuning: dict[str, Any] | None = None  # tune's grid and scores
        k = config.num_classes or 0
        widths = tuple(config.widths or ())
        latent = config.latent_dim
        if config.is_image:
            c, h, w = config.input_shape
            sizes = conv_sizes(h, w)
            enc: list[nn.Module] = []
            chans = (c, *widths)
            for cin, cout in zip(chans[:-1], chans[1:], strict=True):
                enc += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            self.encoder = nn.Sequential(*enc, nn.Flatten())
            self._bottom: tuple[int, ...] = (widths[-1], *sizes[-1])
            feat = widths[-1] * sizes[-1][0] * sizes[-1][1]
            dec: list[nn.Module] = []
            for i in range(len(widths) - 1, -1, -1):
                cin, cout = chans[i + 1], chans[i]
                (th, tw), (sh, sw) = sizes[i], sizes[i + 1]
                # ConvTranspose(k=3, s=2, p=1) gives 2*s - 1 + output_padding: hit odd/even sizes exactly
                op = (th - (2 * sh - 1), tw - (2 * sw - 1))
                dec.append(nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=op))
                if i > 0:
                    dec.append(nn.ReLU(inplace=True))
            self.decoder = nn.Sequential(*dec)
        else:
            (d,) = config.input_shape
            enc = []
            dims = (d, *widths)
            for din, dout in zip(dims[:-1], dims[1:], strict=True):
                enc += [nn.Linear(din, dout), nn.ReLU(inplace=True)]
            self.encoder = nn.Sequential(*enc)
            self._bottom = (widths[-1],)
            feat = widths[-1]
            dec = []
            for i in range(len(widths) - 1, -1, -1):
                dec.append(nn.Linear(dims[i + 1], dims[i]))
                if i > 0:
                    dec.append(nn.ReLU(inplace=True))
            self.decoder = nn.Sequential(*dec)
        self.to_latent = nn.Linear(feat + k, 2 * latent)
        self.from_latent = nn.Sequential(nn.Linear(latent + k, feat), nn.ReLU(inplace=True))
        if config.likelihood == "gaussian" and config.learn_std:
            self.log_std = nn.Parameter(torch.tensor(math.log(config.gaussian_std)))
        else:
            self.register_buffer("log_std", torch.tensor(math.log(config.gaussian_std)), persistent=False)

    # ----------------------------------------------------------------- helpers

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters."""
        return next(self.parameters()).device

    @property
    def conditional(self) -> bool:
        """True for a class-conditional model."""
        return self.config.num_classes is not None

    def _check_x(self, x: torch.Tensor) -> None:
        check_values(x, "x")
        want = self.config.input_shape
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != want or x.dim() != len(want) + 1:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected a float tensor of shape (N, {', '.join(map(str, want))}); got {got}")

    def _onehot(self, y: Any, n: int) -> torch.Tensor | None:
        k = self.config.num_classes
        if k is None:
            if y is not None:
                raise ValueError("labels were given to an unconditional model; pass y=None")
            return None
        if y is None:
            raise ValueError(f"this model is class-conditional ({k} classes) and needs labels y")
        check_values(y, "y")
        y = torch.as_tensor(y, device=self.device)
        if y.dim() == 0:
            y = y.expand(n)
        if y.shape != (n,) or y.dtype.is_floating_point:
            raise ValueError(f"labels must be integers of shape ({n},); got {tuple(y.shape)} {y.dtype}")
        if n and (int(y.min()) < 0 or int(y.max()) >= k):
            raise ValueError(f"labels must be in 0..{k - 1}; got values in [{int(y.min())}, {int(y.max())}]")
        return F.one_hot(y.long(), k).to(self.to_latent.weight.dtype)

    # ----------------------------------------------------------------- model

    def encode(self, x: torch.Tensor, y: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode ``x`` (model space) to the posterior's ``(mu, logvar)``, each ``(N, latent_dim)``."""
        self._check_x(x)
        return self.encode_onehot(x, self._onehot(y, x.shape[0]))

    def encode_onehot(self, x: torch.Tensor, onehot: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`encode` without input checks, the label given one-hot (``None`` if unconditional).

        The traceable core that the ONNX export runs (no data-dependent checks); ``logvar`` is clamped to
        :data:`~vaeaug.core.functional.LOGVAR_RANGE` (a Clip in the exported graphs).
        """
        h = self.encoder(x)
        if onehot is not None:
            h = torch.cat([h, onehot], dim=1)
        mu, logvar = self.to_latent(h).chunk(2, dim=1)
        return mu, clamp_logvar(logvar)

    def decode_logits(self, z: torch.Tensor, y: Any = None) -> torch.Tensor:
        """Decoder output before the sigmoid (Bernoulli logits / Gaussian mean logits)."""
        return self.decode_logits_onehot(z, self._onehot(y, z.shape[0]))

    def decode_logits_onehot(self, z: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
        """:meth:`decode_logits` without input checks, the label given one-hot (for the ONNX export)."""
        if onehot is not None:
            z = torch.cat([z, onehot], dim=1)
        h = self.from_latent(z)
        return self.decoder(h.reshape(z.shape[0], *self._bottom))

    def decode(self, z: torch.Tensor, y: Any = None) -> torch.Tensor:
        """Decode latent codes ``(N, latent_dim)`` to samples in model space ``[0, 1]``."""
        return torch.sigmoid(self.decode_logits(z, y))

    def forward(self, x: torch.Tensor, y: Any = None, generator: torch.Generator | None = None) -> VAEOutput:
        """Encode, draw ``z = mu + sigma * eps`` and decode."""
        mu, logvar = self.encode(x, y)
        z = self.reparameterize(mu, logvar, generator)
        return VAEOutput(self.decode(z, y), mu, logvar, z)

    @staticmethod
    def reparameterize(
        mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``z = mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)`` drawn from ``generator`` (``logvar`` clamped)."""
        eps = _randn(mu.shape, generator, mu.device).to(mu.dtype)
        return mu + torch.exp(0.5 * clamp_logvar(logvar)) * eps

    def recon_nll(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-sample reconstruction negative log-likelihood in nats, ``(N,)``."""
        if self.config.likelihood == "bernoulli":
            nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        else:
            log_std = self.log_std
            nll = 0.5 * ((x - torch.sigmoid(logits)) * torch.exp(-log_std)) ** 2 + log_std + 0.5 * math.log(2 * math.pi)
        return nll.flatten(1).sum(1)

    @staticmethod
    def kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Closed-form ``KL(N(mu, exp(logvar)) || N(0, I))`` per sample in nats, ``(N,)``."""
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)

    def elbo_terms(
        self, x: torch.Tensor, y: Any = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample ``(reconstruction NLL, KL)`` in nats; the negative ELBO is their sum.

        Example:
            >>> vae = VAE(VAEConfig(input_shape=(1, 8, 8), latent_dim=4))
            >>> rec, kl = vae.elbo_terms(torch.rand(3, 1, 8, 8))
            >>> rec.shape, kl.shape
            (torch.Size([3]), torch.Size([3]))
        """
        mu, logvar = self.encode(x, y)
        z = self.reparameterize(mu, logvar, generator)
        return self.recon_nll(self.decode_logits(z, y), x), self.kl(mu, logvar)

    # ----------------------------------------------------------------- conveniences

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: Any = None) -> torch.Tensor:
        """Decode the posterior mean: ``D(mu(x))`` in model space."""
        mu, _ = self.encode(x, y)
        return self.decode(mu, y)

    @torch.no_grad()
    def sample(self, n: int, y: Any = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` new samples from the prior, of classes ``y`` for a conditional model.

        Args:
            n: number of samples.
            y: an int (all the same class) or ``n`` labels; required for conditional models.
            generator: source of the noise, for reproducible samples.

        Returns:
            ``(n, *input_shape)`` in model space.

        Raises:
            ValueError: ``n`` is not an int, or more than one call returns (:data:`MAX_SAMPLE_VALUES` values).
        """
        check_int("n", n, 0)
        most = max(1, MAX_SAMPLE_VALUES // math.prod(self.config.input_shape))
        if n > most:
            raise ValueError(f"n must be at most {most:,} for this model (one call returns at most "
                             f"{MAX_SAMPLE_VALUES:,} values, 16 GiB of float32); got {short_repr(n)} - draw more in "
                             f"calls of at most {most:,}")
        z = _randn((n, self.config.latent_dim), generator, self.device)
        return self.decode(z, y)

    @torch.no_grad()
    def score(
        self, x: torch.Tensor, y: Any = None, *, k: int = 1, generator: torch.Generator | None = None,
        batch_size: int = 512,
    ) -> torch.Tensor:
        """Anomaly score: per-sample negative ELBO in nats (higher = less like the training data).

        A Monte-Carlo estimate: for ``k = 1`` the reconstruction term at one posterior sample plus
        the closed-form KL, as in :meth:`elbo_terms`. With the Bernoulli likelihood on
        continuous values the "nats" are not a normalised density: compare scores within one
        model and dataset, not across them.

        Args:
            x: ``(N, *input_shape)`` in model space.
            y: labels for conditional models.
            k: importance samples; ``k > 1`` gives the tighter importance-weighted bound
                ``-log(1/k sum_i p(x|z_i) p(z_i) / q(z_i|x))``.
            generator: source of the posterior samples, for reproducible scores.
            batch_size: samples per model call.

        Returns:
            ``(N,)`` scores.

        Example:
            >>> vae = VAE(VAEConfig(input_shape=(1, 8, 8)))
            >>> vae.score(torch.rand(3, 1, 8, 8), k=4).shape
            torch.Size([3])
        """
        check_int("k", k, 1)
        self._check_x(x)
        n = x.shape[0]
        yt = None if y is None else torch.as_tensor(y).reshape(-1)
        if yt is not None and yt.numel() == 1 and n > 1:
            yt = yt.expand(n)
        out = []
        for lo in range(0, n, batch_size):
            xb = x[lo:lo + batch_size].to(self.device)
            yb = None if yt is None else yt[lo:lo + batch_size]
            mu, logvar = self.encode(xb, yb)  # logvar clamped: std and the KL stay finite
            std = torch.exp(0.5 * logvar)
            b = xb.shape[0]
            eps = _randn((k, b, mu.shape[1]), generator, mu.device)
            z = mu + std * eps
            yk = None if yb is None else yb.repeat(k)
            rec = self.recon_nll(self.decode_logits(z.reshape(k * b, -1), yk), xb.repeat(k, *([1] * (xb.dim() - 1))))
            log_px = -rec.reshape(k, b)
            log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)
            log_qz = -0.5 * (eps.pow(2) + math.log(2 * math.pi) + logvar).sum(-1)
            if k == 1:  # the usual single-sample ELBO: reconstruction at one z plus the closed-form KL
                out.append(-log_px[0] + self.kl(mu, logvar))
                continue
            log_w = log_px + log_pz - log_qz
            out.append(-(torch.logsumexp(log_w, 0) - math.log(k)))
        return torch.cat(out)

    def save(self, path: Any) -> None:
        """Write the model to one safetensors file; see :func:`vaeaug.save`."""
        save(self, path)

    def _repr_png_(self) -> bytes | None:
        """Jupyter's inline picture of the model: training curves and prior samples, as PNG bytes.

        :func:`vaeaug.viz.plots.overview` draws it from the model alone (no data); ``None`` (the text
        repr only) for a vector model that was never fit.

        Example:
            >>> VAE(VAEConfig(input_shape=(1, 8, 8), latent_dim=4))._repr_png_()[:8]
            b'\\x89PNG\\r\\n\\x1a\\n'
        """
        if not self.history and not self.config.is_image:
            return None
        from vaeaug.viz.plots import overview  # drawing only, in this layer (PIL and matplotlib load when shown)

        buf = BytesIO()
        overview(self).save(buf, format="PNG")
        return buf.getvalue()

    def extra_repr(self) -> str:
        cfg = self.config
        cond = f", num_classes={cfg.num_classes}" if cfg.num_classes else ""
        return (f"input_shape={cfg.input_shape}, latent_dim={cfg.latent_dim}, widths={cfg.widths}{cond}, "
                f"likelihood={cfg.likelihood!r}")

# Fitting moves a weight by about lr per Adam step; fitted VAEs stay within a few units (measured
# on digits: max |w| 0.35 after 2 epochs, 0.84 after 40, 3.0 at lr=0.05; 1.6 Gaussian with a learned
# std). 1e4 is far beyond any fit; check_activation_bound then proves the layers' products finite.
MAX_WEIGHT = 1e4
# |activation| anywhere in encode/decode, for inputs in [0, 1]: float32 overflows at 3.4e38.
MAX_ACTIVATION = 1e30
# |mu| and |logvar| (before its clamp): mu**2 and z**2 summed over 65536 latent dimensions (the KL
# term and the score's log-densities) stay finite in float32 (1e15**2 * 65536 = 6.6e34).
MAX_LATENT = 1e15
# decoder inputs covered by the bound: prior draws and Gaussian moves (|z| <= |mu| + Z_PRIOR * sigma:
# 10 standard deviations at the largest strength, 100, sigma at most SIGMA_MAX, the clamp's) and
# latent moves up to Z_MOVE times the largest posterior mean the encoder can produce.
Z_PRIOR = 1000.0
Z_MOVE = 5.0
SIGMA_MAX = math.exp(LOGVAR_RANGE[1] / 2)


def check_weight(name: str, t: torch.Tensor, where: str) -> None:
    """Refuse a non-finite weight, or one beyond :data:`MAX_WEIGHT` (or a ``log_std`` out of range)."""
    if not t.is_floating_point():
        return
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{where!r} holds non-finite values in tensor {name!r}; expected finite weights "
                         "(the file is corrupt or was not written by a successful fit)")
    if name == "log_std":
        lo, hi = (math.log(v) for v in GAUSSIAN_STD_RANGE)
        v = float(t.reshape(-1)[0]) if t.numel() else 0.0
        if not lo - 1e-6 <= v <= hi + 1e-6:
            raise ValueError(f"{where!r} holds log_std {v:g}; expected a value in [{lo:.3g}, {hi:.3g}] "
                             f"(std in {GAUSSIAN_STD_RANGE})")
        return
    big = float(t.abs().max()) if t.numel() else 0.0
    if big > MAX_WEIGHT:
        raise ValueError(f"{where!r} holds a weight of magnitude {big:g} in tensor {name!r}; expected |w| <= "
                         f"{MAX_WEIGHT:g}, far beyond what fitting produces (the file was edited or is corrupt)")


def _bound_layers(layers: nn.Sequential, b: torch.Tensor, worst: float,
                  spatial: tuple[int, ...] | None) -> tuple[torch.Tensor, float]:
    """Propagate per-channel (or per-feature) bounds on |activation| through ``layers``."""
    for m in layers:
        bias = getattr(m, "bias", None)
        bias_bound = bias.detach().abs().double() if isinstance(bias, torch.Tensor) else 0.0
        if isinstance(m, nn.Conv2d):
            b = m.weight.abs().sum((2, 3)).double() @ b + bias_bound
        elif isinstance(m, nn.ConvTranspose2d):  # weight (in, out, kh, kw): an output pixel sums a subset
            b = m.weight.abs().sum((2, 3)).double().T @ b + bias_bound
        elif isinstance(m, nn.Linear):
            b = m.weight.abs().double() @ b + bias_bound
        elif isinstance(m, nn.Flatten):
            assert spatial is not None
            b = b.repeat_interleave(math.prod(spatial))  # channel-major, as Flatten orders them
        elif not isinstance(m, nn.ReLU):  # pragma: no cover - the architecture has no other layers
            raise TypeError(f"no activation bound for layer {type(m).__name__}")
        worst = max(worst, float(b.max()))
    return b, worst


def _head_bound(model: VAE) -> tuple[torch.Tensor, float]:
    """Bounds on ``to_latent``'s outputs (``mu`` then ``logvar``) and the largest bound on the way."""
    cfg = model.config
    b = torch.ones(cfg.input_shape[0], dtype=torch.float64)
    b, worst = _bound_layers(model.encoder, b, 1.0, model._bottom[1:] if cfg.is_image else None)
    b = torch.cat([b, torch.ones(cfg.num_classes or 0, dtype=torch.float64)])
    return _bound_layers(nn.Sequential(model.to_latent), b, worst, None)


@torch.no_grad()
def latent_bound(model: VAE) -> float:
    """An upper bound on ``|mu|`` and ``|logvar|`` (before its clamp) for any input in ``[0, 1]`` and any label."""
    b, _ = _head_bound(model)
    return float(b.max())


@torch.no_grad()
def activation_bound(model: VAE) -> float:
    """An upper bound on ``|value|`` anywhere in :meth:`VAE.encode` and :meth:`VAE.decode_logits`.

    Interval arithmetic over the weights for any input in ``[0, 1]``, any one-hot label, and
    decoder inputs ``|z| <= max(|mu| + Z_PRIOR * SIGMA_MAX, Z_MOVE * |mu|)`` (``|mu|`` its bound); a
    bound below :data:`MAX_ACTIVATION` proves that every mode's variants are finite in float32.
    """
    cfg = model.config
    b, worst = _head_bound(model)
    mu_bound = float(b[: cfg.latent_dim].max())
    z = torch.full((cfg.latent_dim,), max(mu_bound + Z_PRIOR * SIGMA_MAX, Z_MOVE * mu_bound), dtype=torch.float64)
    b = torch.cat([z, torch.ones(cfg.num_classes or 0, dtype=torch.float64)])
    worst = max(worst, float(z[0]))
    b, worst = _bound_layers(model.from_latent, b, worst, None)
    if cfg.is_image:
        b = b.reshape(model._bottom[0], -1).amax(1)  # per channel, for the transposed convolutions
    _, worst = _bound_layers(model.decoder, b, worst, None)
    return worst


def check_activation_bound(model: VAE, where: str) -> None:
    """Refuse weights whose activations could overflow float32 (see :func:`activation_bound`), or whose
    posterior means could exceed :data:`MAX_LATENT` (their squares, summed, overflow in the KL and the score)."""
    bound = activation_bound(model)
    if not bound <= MAX_ACTIVATION:
        raise ValueError(
            f"{where!r} holds weights whose activations can reach {bound:.3g} for inputs in [0, 1]; expected at "
            f"most {MAX_ACTIVATION:g} (beyond, float32 overflows to inf and NaN) - the file was edited or is corrupt"
        )
    latent = latent_bound(model)
    if not latent <= MAX_LATENT:
        raise ValueError(
            f"{where!r} holds weights whose posterior means can reach {latent:.3g} for inputs in [0, 1]; expected at "
            f"most {MAX_LATENT:g} (beyond, their squares overflow float32 in the score) - the file was edited or is "
            "corrupt"
        )


def load(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> VAE:
    """Load a model written by :func:`vaeaug.save`; never unpickles (the file format: :mod:`vaeaug.model.vaefile`).

    Args:
        path: the model file.
        device: where to put the weights: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"``.

    Returns:
        The VAE in eval mode, with ``value_range``, ``class_names`` and ``history`` restored.

    Example:
        >>> import os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "m.vae")
        >>> VAE(VAEConfig(input_shape=(1, 8, 8))).save(p)
        >>> load(p).config.input_shape
        (1, 8, 8)
    """
    dev = resolve_device(device)  # before reading: a bad device is said as such, not as torch's RuntimeError
    tensors, info = read_model(path)
    p = str(path)
    with torch.device("meta"):  # shapes only: nothing is allocated before they match the file
        skeleton = VAE(info["config"], info["value_range"], info["class_names"])
    want = skeleton.state_dict()
    missing, unexpected = sorted(set(want) - set(tensors)), sorted(set(tensors) - set(want))
    if missing or unexpected:
        raise ValueError(
            f"{p!r} does not match its config: missing tensors {missing}, unexpected {unexpected}"
        )
    for k, v in want.items():
        t = tensors[k]
        if t.shape != v.shape or t.dtype != v.dtype:
            raise ValueError(
                f"{p!r} does not match its config: tensor {k!r} is {tuple(t.shape)} {t.dtype}, "
                f"expected {tuple(v.shape)} {v.dtype}"
            )
        check_weight(k, t, p)
    model = VAE(info["config"], info["value_range"], info["class_names"])
    model.load_state_dict(tensors, strict=True)
    check_activation_bound(model, p)
    model.history = info["history"]
    model.augment = info["augment"]
    model.tuning = info["tuning"]
    return model.to(dev).eval()
