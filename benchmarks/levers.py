"""Experimental quality levers under the converged protocol, before any of them goes into the core.

Each lever is an augmenter built from the seed's generator and run as an extra arm of
:func:`vaeaug.evaluate` (same subset, split, VAE and classifier initialisation as ``none``), so
its paired gain is comparable with the tables of ``benchmarks/quality.py``. A lever that helps
across datasets and seeds moves into the core; one that does not is recorded in BENCHMARKS.md.

Levers here:

* ``filter``: label-consistency filter. The class-conditional VAE scores each variant under every
  label (negative ELBO at the posterior mean); a variant is kept if its own label scores within
  ``margin`` nats of the best label, else the original image is kept.
* ``pool10``/``pool5``: the published regime of a pre-generated set, K variants per real image
  (made once, with the default setting at p=1) mixed with the real images, so a draw is a variant
  with probability K/(K+1); ``fresh-p0.9`` is the control (fresh variants, the same share).
* ``vaegan``/``vaegan-p0.25`` (issue 21): a sharper decoder, VAE-GAN style and still a VAE: the seed's
  fitted VAE (encoder, reparameterised latent, KL unchanged) is fine-tuned for ``GAN_EPOCHS`` epochs
  with an adversarial term added to its loss: a small conv discriminator tells real images from
  decodings of posterior samples, and the decoder gets ``GAN_WEIGHT`` x the non-saturating GAN loss
  on top of reconstruction + KL. Variants then use the default setting (p = 0.5, or 0.25).
* ``m2``/``m2-p0.25`` (issue 21, the cheap probe of a semi-supervised fit): the seed's conditional VAE
  fine-tuned for ``M2_EPOCHS`` epochs with Kingma et al.'s M2 objective (arXiv 1406.5298) on its
  labelled training part plus ``M2_UNLABELLED`` unlabelled images of the same training split (never
  the seed's own subset, never the test split): a classifier ``q(y|x)`` is trained with it; each
  unlabelled image contributes ``sum_y q(y|x) (-ELBO(x, y)) - H(q(y|x))``, each labelled one its
  ``-ELBO(x, y)`` plus ``M2_ALPHA`` x the classifier's cross-entropy. Variants then use the default
  setting (p = 0.5, or 0.25) with the source's own label. ``m2-control`` fine-tunes the same steps on the
  labelled batches alone: what the extra training does without the unlabelled images.
* ``last-epoch`` (issue 21): the seed's VAE fitted again with ``val_fraction=0``, so that the variants come
  from the last epoch's model (trained past the validation optimum, on all of the training part) instead of
  the best validation epoch's. Variants use the default setting.
* ``gauss-balance``/``aggpost-balance`` (imbalanced runs): class balancing whose extra draws of
  the small classes are decoded from a fitted latent density instead of the prior N(0, I): a
  per-class diagonal Gaussian over the posterior means (``gauss``), or the per-class aggregate
  posterior, a mixture of the class's posteriors (``aggpost``).

Factories get ``(generator, x, y)``: the seed's VAE and training part.

Usage:
    python benchmarks/levers.py --data fashion-mnist --per-class 50 --seeds 3 --levers filter --out reports/levers
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from quality import write_report  # a sibling script: benchmarks/ is on sys.path when run

from vaeaug.core.augment import Augmenter
from vaeaug.core.rng import derive_keys
from vaeaug.core.settings import DEFAULT_AUGMENT, AugmentSetting
from vaeaug.protocol.evaluation import ExtraDraws, evaluate


class LabelFilter:
    """Variants of ``setting``, each kept only if the conditional VAE still finds its label the most likely."""

    def __init__(self, gen: Any, setting: AugmentSetting, margin: float = 0.0) -> None:
        if not gen.conditional:
            raise ValueError("the label filter needs a class-conditional VAE")
        self.aug = Augmenter(gen, setting)
        self.vae = gen.model
        self.num_classes = int(gen.config.num_classes)
        self.margin = margin
        self.kept: list[float] = []

    def codec(self, kind: str) -> Any:
        return self.aug.codec(kind)

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` negative ELBO (at the posterior mean) of every row under every label."""
        n, c = x.shape[0], self.num_classes
        xx = x.repeat_interleave(c, 0)
        yy = torch.arange(c).repeat(n)
        mu, logvar = self.vae.encode(xx, yy)
        rec = self.vae.recon_nll(self.vae.decode_logits(mu, yy), xx)
        return (rec + self.vae.kl(mu, logvar)).reshape(n, c)

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, *, key: int, codec: Any) -> torch.Tensor:
        out = self.aug(xb, yb, key=key, codec=codec)
        changed = torch.nonzero((out != xb).flatten(1).any(1)).flatten()
        if len(changed) == 0:
            return out
        s = self.scores(out[changed])
        own = s.gather(1, yb[changed].reshape(-1, 1)).flatten()
        bad = changed[own > s.min(1).values + self.margin]
        self.kept.append(1.0 - len(bad) / len(changed))
        if len(bad):
            out = out.clone()
            out[bad] = xb[bad]
        return out


class Pool:
    """A pre-generated set in memory: ``k`` variants per real image, drawn instead of it with probability k/(k+1).

    The variants of an image are made on its first draw, keyed by a hash of its bytes, so the pool
    is fixed for the whole run (what pre-generation to disk gives), whatever the batch order.
    """

    def __init__(self, gen: Any, setting: AugmentSetting, k: int) -> None:
        self.aug = Augmenter(gen, dataclasses.replace(setting, p=1.0), invariant=True)
        self.k = k
        self.pool: dict[bytes, torch.Tensor] = {}

    def codec(self, kind: str) -> Any:
        return self.aug.codec(kind)

    def _variants(self, x: torch.Tensor, y: torch.Tensor, codec: Any) -> torch.Tensor:
        h = hashlib.blake2b(x.numpy().tobytes(), digest_size=8).digest()
        if h not in self.pool:
            keys = derive_keys(int.from_bytes(h, "little") >> 1, np.arange(self.k))
            self.pool[h] = self.aug(x.expand(self.k, *x.shape).contiguous(), y.expand(self.k), keys=keys, codec=codec)
        return self.pool[h]

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, *, key: int, codec: Any) -> torch.Tensor:
        g = torch.Generator().manual_seed(key)
        pick = torch.randint(0, self.k + 1, (len(yb),), generator=g)  # k: the real image
        out = xb.clone()
        for i in torch.nonzero(pick < self.k).flatten().tolist():
            out[i] = self._variants(xb[i], yb[i], codec)[pick[i]]
        return out


class LatentDensity:
    """New samples of a class decoded from a latent density fitted to that class's training images."""

    def __init__(self, gen: Any, x: torch.Tensor, y: torch.Tensor, kind: str) -> None:
        if not gen.conditional:
            raise ValueError("class densities need a class-conditional VAE")
        self.vae = gen.model
        self.kind = kind
        self.codec_of = Augmenter(gen, AugmentSetting("prior", 1.0, "decode", 1.0))
        with torch.no_grad():
            mu, logvar = self.vae.encode(x, y)
        self.mu, self.std, self.y = mu, torch.exp(0.5 * logvar), y
        self.classes: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for c in y.unique().tolist():
            m, s = mu[y == c], self.std[y == c]
            # total variance of the class's aggregate posterior: spread of the means + mean posterior variance
            var = (m.var(0, unbiased=False) if len(m) > 1 else torch.zeros_like(m[0])) + s.pow(2).mean(0)
            self.classes[c] = (m.mean(0), var.sqrt())

    def codec(self, kind: str) -> Any:
        return self.codec_of.codec(kind)

    @torch.no_grad()
    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, *, key: int, codec: Any) -> torch.Tensor:
        g = torch.Generator().manual_seed(key)
        eps = torch.randn(len(yb), self.mu.shape[1], generator=g)
        if self.kind == "gauss":
            z = torch.stack([self.classes[c][0] for c in yb.tolist()]) + \
                eps * torch.stack([self.classes[c][1] for c in yb.tolist()])
        else:  # aggpost: a random training posterior of the class
            u = torch.rand(len(yb), generator=g)
            rows = []
            for c, ui in zip(yb.tolist(), u.tolist(), strict=True):
                members = torch.nonzero(self.y == c).flatten()
                rows.append(int(members[min(int(ui * len(members)), len(members) - 1)]))
            r = torch.tensor(rows)
            z = self.mu[r] + eps * self.std[r]
        return self.vae.decode(z, yb)


GAN_EPOCHS = 100
GAN_WEIGHT = 0.1


def _discriminator(shape: tuple[int, ...]) -> torch.nn.Module:
    c, h, w = shape
    return torch.nn.Sequential(
        torch.nn.Conv2d(c, 32, 3, 2, 1), torch.nn.LeakyReLU(0.2), torch.nn.Conv2d(32, 64, 3, 2, 1),
        torch.nn.LeakyReLU(0.2), torch.nn.Flatten(), torch.nn.LazyLinear(1))


def vae_gan(gen: Any, x: torch.Tensor, y: torch.Tensor, epochs: int = GAN_EPOCHS, weight: float = GAN_WEIGHT,
            seed: int = 0) -> Any:
    """A copy of the seed's VAE fine-tuned with an adversarial term on its decodings (see the module doc);
    made once per seed's VAE (its arms and their +classic twins share it)."""
    import copy

    key = (id(gen.model), epochs, weight, seed)
    if key in _GAN_CACHE and _GAN_CACHE[key][0] is gen.model:  # an id is reused once its model is freed
        return _GAN_CACHE[key][1]

    import torch.nn.functional as F

    from vaeaug.backends.torch_backend import TorchBackend

    vae = copy.deepcopy(gen.model).train()
    torch.manual_seed(seed)
    disc = _discriminator(tuple(x.shape[1:]))
    disc(x[:2])  # materialise the lazy layer
    opt_g = torch.optim.Adam(vae.parameters(), lr=5e-4)
    opt_d = torch.optim.Adam(disc.parameters(), lr=5e-4, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(seed)
    cond = gen.conditional
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            xb, yb = x[idx], (y[idx] if cond else None)
            mu, logvar = vae.encode(xb, yb)
            z = vae.reparameterize(mu, logvar, g)
            logits = vae.decode_logits(z, yb)
            fake = torch.sigmoid(logits)
            d_real, d_fake = disc(xb), disc(fake.detach())
            loss_d = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + \
                F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            d_gen = disc(fake)
            adv = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen), reduction="sum")
            loss = vae.recon_nll(logits, xb).sum() + vae.config.beta * vae.kl(mu, logvar).sum() + weight * adv
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
    _GAN_CACHE[key] = (gen.model, TorchBackend(vae.eval()))
    return _GAN_CACHE[key][1]


_GAN_CACHE: dict[tuple[int, int, float, int], tuple[Any, Any]] = {}  # key -> (the seed's VAE, kept alive; tuned)

M2_EPOCHS = 20
M2_UNLABELLED = 5000
M2_ALPHA = 100.0
UNLABELLED: dict[str, Any] = {}  # main() sets "data", "per_class", "imbalance": where the unlabelled pool comes from


def subset_of(x: torch.Tensor) -> tuple[Any, int, torch.Tensor]:
    """The run's training split, the data seed whose subset holds the training part ``x``, and that subset's
    indices (:func:`reduce_per_class` draws it from the seed)."""
    from vaeaug.data import as_tensor_data
    from vaeaug.protocol.evaluation import reduce_per_class

    train = as_tensor_data(UNLABELLED["data"], split="train")
    assert train.y is not None
    want = {hashlib.blake2b(r.numpy().tobytes(), digest_size=8).digest() for r in x}
    for s in range(1000):
        idx = reduce_per_class(train.y, UNLABELLED["per_class"], s, UNLABELLED["imbalance"])
        have = {hashlib.blake2b(r.numpy().tobytes(), digest_size=8).digest() for r in train.x[idx]}
        if want <= have:
            return train, s, idx
    raise RuntimeError("the seed's subset was not found among seeds 0..999")


def unlabelled_pool(x: torch.Tensor, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images of the run's training split outside the seed's whole subset (its training part and
    validation slice), found by matching ``x`` to the subset that :func:`reduce_per_class` draws for a seed;
    with their labels, which only measure how well ``q(y|x)`` infers them."""
    train, _, idx = subset_of(x)
    rest = torch.ones(len(train.x), dtype=torch.bool)
    rest[idx] = False
    pool = torch.nonzero(rest).flatten()
    pick = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:n]]
    return train.x[pick], train.y[pick]


def _q_net(shape: tuple[int, ...], num_classes: int) -> torch.nn.Module:
    c, h, w = shape
    return torch.nn.Sequential(
        torch.nn.Conv2d(c, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(64 * (h // 4) * (w // 4), 128), torch.nn.ReLU(), torch.nn.Linear(128, num_classes))


def m2_fit(gen: Any, x: torch.Tensor, y: torch.Tensor, epochs: int = M2_EPOCHS, n_unlabelled: int = M2_UNLABELLED,
           alpha: float = M2_ALPHA, seed: int = 0, use_unlabelled: bool = True) -> Any:
    """A copy of the seed's conditional VAE fine-tuned with the M2 objective on labelled + unlabelled
    images (see the module doc); made once per seed's VAE. Prints how often ``q(y|x)`` is right on the
    unlabelled images. ``use_unlabelled=False`` is the control: the same steps and labelled batches,
    the unlabelled term left out (what the extra fine-tuning alone does)."""
    import copy

    import torch.nn.functional as F

    from vaeaug.backends.torch_backend import TorchBackend

    key = (id(gen.model), epochs, n_unlabelled, alpha, seed, use_unlabelled)
    if key in _M2_CACHE and _M2_CACHE[key][0] is gen.model:  # an id is reused once its model is freed
        return _M2_CACHE[key][1]
    if not gen.conditional:
        raise ValueError("M2 needs a class-conditional VAE")
    t0 = time.perf_counter()
    xu, yu_hidden = unlabelled_pool(x, n_unlabelled, seed)
    vae = copy.deepcopy(gen.model).train()
    c = int(gen.config.num_classes)
    torch.manual_seed(seed)
    q = _q_net(tuple(x.shape[1:]), c)
    opt = torch.optim.Adam([*vae.parameters(), *q.parameters()], lr=5e-4)
    g = torch.Generator().manual_seed(seed)
    beta = vae.config.beta

    def neg_elbo(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        mu, logvar = vae.encode(xb, yb)
        z = vae.reparameterize(mu, logvar, g)
        return vae.recon_nll(vae.decode_logits(z, yb), xb) + beta * vae.kl(mu, logvar)

    for _ in range(epochs):
        for ub in torch.randperm(len(xu), generator=g).split(64):
            lb = torch.randint(0, len(x), (len(ub),), generator=g)
            xl, yl, xb = x[lb], y[lb], xu[ub]
            loss = (neg_elbo(xl, yl) + alpha * F.cross_entropy(q(xl), yl, reduction="none")).mean()
            if use_unlabelled:
                n = len(xb)
                nll = neg_elbo(xb.repeat_interleave(c, 0), torch.arange(c).repeat(n)).reshape(n, c)
                logq = F.log_softmax(q(xb), dim=1)
                loss = loss + (logq.exp() * (nll + logq)).sum(1).mean()  # E_q[-ELBO] - H(q)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = float((q.eval()(xu).argmax(1) == yu_hidden).float().mean())
    what = "m2" if use_unlabelled else "m2 control"
    print(f"{what}: {epochs} epochs on {len(x)} labelled + {len(xu)} unlabelled images, q(y|x) right on "
          f"{100 * acc:.1f}% of the unlabelled ones, {time.perf_counter() - t0:.0f} s", flush=True)
    _M2_CACHE[key] = (gen.model, TorchBackend(vae.eval()))
    return _M2_CACHE[key][1]


_M2_CACHE: dict[tuple[Any, ...], tuple[Any, Any]] = {}  # key -> (the seed's VAE, kept alive; the fine-tuned one)


def last_epoch_fit(gen: Any, x: torch.Tensor, y: torch.Tensor) -> Any:
    """The seed's VAE fitted again with the protocol's options but ``val_fraction=0``: the same seed and epochs,
    all of the training part, and the last epoch's model instead of the best validation epoch's (what training
    past the validation optimum does for the variants). Made once per seed."""
    from vaeaug import fit
    from vaeaug.backends.torch_backend import TorchBackend
    from vaeaug.protocol.evaluation import protocol_fit_kwargs

    key = id(gen.model)
    if key not in _LAST_CACHE or _LAST_CACHE[key][0] is not gen.model:  # an id is reused once its model is freed
        t0 = time.perf_counter()
        _, seed, _ = subset_of(x)
        epochs = len(gen.model.history)
        vae = fit(x, y, seed=seed, progress=False, device="cpu",
                  **protocol_fit_kwargs(epochs, {"val_fraction": 0.0}))
        print(f"last-epoch: seed {seed}, {epochs} epochs on all {len(x)} images, train loss "
              f"{vae.history[-1]['train_loss']:.2f}, {time.perf_counter() - t0:.0f} s", flush=True)
        _LAST_CACHE[key] = (gen.model, TorchBackend(vae))
    return _LAST_CACHE[key][1]


_LAST_CACHE: dict[int, tuple[Any, Any]] = {}  # id(seed's VAE) -> (that VAE, kept alive so the id stays its own; refit)


def _balanced(kind: str) -> Any:
    def make(gen: Any, x: torch.Tensor, y: torch.Tensor) -> Any:
        counts = torch.bincount(y, minlength=int(gen.config.num_classes))
        return ExtraDraws(LatentDensity(gen, x, y, kind), counts)  # type: ignore[arg-type]
    make.oversample = True  # type: ignore[attr-defined]
    return make


LEVERS = {
    "filter": lambda gen, x, y: LabelFilter(gen, DEFAULT_AUGMENT, 0.0),
    "filter-m5": lambda gen, x, y: LabelFilter(gen, DEFAULT_AUGMENT, 5.0),
    "filter-s2": lambda gen, x, y: LabelFilter(gen, AugmentSetting("isotropic", 2.0, "delta", 0.5), 0.0),
    "pool5": lambda gen, x, y: Pool(gen, DEFAULT_AUGMENT, 5),
    "pool10": lambda gen, x, y: Pool(gen, DEFAULT_AUGMENT, 10),
    "fresh-p0.9": lambda gen, x, y: Augmenter(gen, dataclasses.replace(DEFAULT_AUGMENT, p=10 / 11)),
    "vaegan": lambda gen, x, y: Augmenter(vae_gan(gen, x, y), DEFAULT_AUGMENT),
    "vaegan-p0.25": lambda gen, x, y: Augmenter(vae_gan(gen, x, y), dataclasses.replace(DEFAULT_AUGMENT, p=0.25)),
    "m2": lambda gen, x, y: Augmenter(m2_fit(gen, x, y), DEFAULT_AUGMENT),
    "m2-control": lambda gen, x, y: Augmenter(m2_fit(gen, x, y, use_unlabelled=False), DEFAULT_AUGMENT),
    "m2-p0.25": lambda gen, x, y: Augmenter(m2_fit(gen, x, y), dataclasses.replace(DEFAULT_AUGMENT, p=0.25)),
    "last-epoch": lambda gen, x, y: Augmenter(last_epoch_fit(gen, x, y), DEFAULT_AUGMENT),
    "gauss-balance": _balanced("gauss"),
    "aggpost-balance": _balanced("aggpost"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--vae-epochs", type=int, default=300)
    ap.add_argument("--levers", default="filter", help=f"from {', '.join(LEVERS)}")
    ap.add_argument("--arms", default="none,vae")
    ap.add_argument("--imbalance", type=float, default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    args = ap.parse_args()
    UNLABELLED.update(data=args.data, per_class=args.per_class, imbalance=args.imbalance)
    t = time.perf_counter()
    report = evaluate(args.data, per_class=args.per_class,
                      seeds=list(range(args.first_seed, args.first_seed + args.seeds)), arms=args.arms.split(","),
                      extra_arms={n: LEVERS[n] for n in args.levers.split(",")}, vae_epochs=args.vae_epochs,
                      imbalance=args.imbalance)
    write_report(report, Path(args.out), "levers.py", time.perf_counter() - t)

if __name__ == "__main__":
    main()
