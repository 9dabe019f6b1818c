"""The VAE: configuration, convolutional and MLP architectures, and the ELBO terms.

Textbook model: the encoder gives ``mu`` and ``logvar`` of ``q(z|x) = N(mu, exp(logvar))``,
``z = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)``, prior ``N(0, I)``, and the loss is the
reconstruction negative log-likelihood plus ``beta`` times the closed-form KL divergence, all in
nats per sample. Images live in model space (float32 in ``[0, 1]``, ``(N, C, H, W)``), vectors
as ``(N, D)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import Likelihood, VAEConfig, ValueRange, check_int, conv_sizes, default_widths
from .io import read_model, save

__all__ = ["load", "VAEConfig", "VAE", "VAEOutput", "Likelihood", "ValueRange", "default_widths", "conv_sizes"]

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
        self.config = config
        self.value_range = value_range or ValueRange(0.0, 1.0, "float32")
        self.class_names = list(class_names) if class_names is not None else None
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

        The traceable core that the ONNX export runs (no data-dependent checks).
        """
        h = self.encoder(x)
        if onehot is not None:
            h = torch.cat([h, onehot], dim=1)
        mu, logvar = self.to_latent(h).chunk(2, dim=1)
        return mu, logvar

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
        """``z = mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)`` drawn from ``generator``."""
        eps = _randn(mu.shape, generator, mu.device).to(mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

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
        """
        check_int("n", n, 0)
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
            mu, logvar = self.encode(xb, yb)
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

    def extra_repr(self) -> str:
        cfg = self.config
        cond = f", num_classes={cfg.num_classes}" if cfg.num_classes else ""
        return (f"input_shape={cfg.input_shape}, latent_dim={cfg.latent_dim}, widths={cfg.widths}{cond}, "
                f"likelihood={cfg.likelihood!r}")

def load(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> VAE:
    """Load a model written by :func:`vaeaug.save`; never unpickles (the file format: :mod:`vaeaug.io`).

    Args:
        path: the model file.
        device: where to put the weights.

    Returns:
        The VAE in eval mode, with ``value_range``, ``class_names`` and ``history`` restored.

    Example:
        >>> import os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "m.vae")
        >>> VAE(VAEConfig(input_shape=(1, 8, 8))).save(p)
        >>> load(p).config.input_shape
        (1, 8, 8)
    """
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
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{p!r} holds non-finite values in tensor {k!r}")
    model = VAE(info["config"], info["value_range"], info["class_names"])
    model.load_state_dict(tensors, strict=True)
    model.history = info["history"]
    model.augment = info["augment"]
    model.tuning = info["tuning"]
    return model.to(device).eval()
