"""The VAE model: architecture sizing, shapes, ELBO terms, conditional sampling, config checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from vaeaug import VAE, VAEConfig
from vaeaug.model.vae import conv_sizes, default_widths


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("side", [8, 20, 25, 28, 32, 64, 96, 128])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_encode_decode_round_trip_shapes(side: int, channels: int) -> None:
    vae = VAE(VAEConfig(input_shape=(channels, side, side), latent_dim=6)).eval()
    x = torch.rand(2, channels, side, side, generator=_gen())
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (2, 6)
    out = vae.decode(mu)
    assert out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1
    assert vae(x, generator=_gen()).recon.shape == x.shape


@pytest.mark.parametrize("h,w", [(8, 20), (25, 28), (31, 9)])
def test_non_square_images(h: int, w: int) -> None:
    vae = VAE(VAEConfig(input_shape=(1, h, w), latent_dim=4)).eval()
    x = torch.rand(3, 1, h, w, generator=_gen())
    assert vae.reconstruct(x).shape == x.shape


def test_sizes_and_widths_follow_the_image() -> None:
    assert conv_sizes(8, 8) == [(8, 8), (4, 4)]
    assert conv_sizes(25, 25) == [(25, 25), (13, 13), (7, 7)]
    assert conv_sizes(128, 128)[-1] == (4, 4)
    assert default_widths((1, 28, 28)) == (32, 64)
    assert len(default_widths((3, 96, 96))) == len(conv_sizes(96, 96)) - 1
    # the bottleneck is small whatever the size, so the dense layers stay small
    for side in (8, 20, 25, 28, 32, 64, 96, 128):
        bh, bw = conv_sizes(side, side)[-1]
        assert 4 <= bh <= 7 and 4 <= bw <= 7


def test_mlp_variant_for_vectors() -> None:
    vae = VAE(VAEConfig(input_shape=(20,), latent_dim=3)).eval()
    x = torch.rand(5, 20, generator=_gen())
    mu, logvar = vae.encode(x)
    assert mu.shape == (5, 3)
    assert vae.decode(mu).shape == (5, 20)
    assert not any(isinstance(m, torch.nn.Conv2d) for m in vae.modules())


def test_conditional_sampling_returns_requested_classes() -> None:
    vae = VAE(VAEConfig(input_shape=(1, 28, 28), latent_dim=8, num_classes=10)).eval()
    assert vae.sample(5, y=3, generator=_gen()).shape == (5, 1, 28, 28)
    assert vae.sample(3, y=[0, 4, 9], generator=_gen()).shape == (3, 1, 28, 28)
    # the label changes the decoder's output for the same noise
    a = vae.sample(4, y=0, generator=_gen(1))
    b = vae.sample(4, y=7, generator=_gen(1))
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="class-conditional"):
        vae.sample(2)
    with pytest.raises(ValueError, match=r"0\.\.9"):
        vae.sample(2, y=10)
    with pytest.raises(ValueError, match="shape"):
        vae.sample(3, y=[1, 2])


def test_unconditional_model_refuses_labels() -> None:
    vae = VAE(VAEConfig(input_shape=(1, 8, 8)))
    with pytest.raises(ValueError, match="unconditional"):
        vae.encode(torch.rand(2, 1, 8, 8), y=torch.tensor([0, 1]))


def test_sample_is_reproducible_with_a_generator() -> None:
    vae = VAE(VAEConfig(input_shape=(1, 8, 8))).eval()
    assert torch.equal(vae.sample(4, generator=_gen(5)), vae.sample(4, generator=_gen(5)))
    assert not torch.equal(vae.sample(4, generator=_gen(5)), vae.sample(4, generator=_gen(6)))


def test_kl_is_the_closed_form_gaussian_kl() -> None:
    g = _gen(3)
    mu, logvar = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    ref = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(VAE.kl(mu, logvar), ref)


def test_bernoulli_and_gaussian_nll_match_torch_distributions() -> None:
    g = _gen(4)
    x = (torch.rand(3, 1, 8, 8, generator=g) > 0.5).float()
    logits = torch.randn(3, 1, 8, 8, generator=g)
    bern = VAE(VAEConfig(input_shape=(1, 8, 8)))
    ref = -Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(bern.recon_nll(logits, x), ref)
    gauss = VAE(VAEConfig(input_shape=(1, 8, 8), likelihood="gaussian", gaussian_std=0.2))
    ref = -Normal(torch.sigmoid(logits), 0.2).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(gauss.recon_nll(logits, x), ref)


def test_elbo_terms_are_per_sample_nats() -> None:
    vae = VAE(VAEConfig(input_shape=(3, 20, 20), latent_dim=4))
    x = torch.rand(7, 3, 20, 20, generator=_gen())
    rec, kl = vae.elbo_terms(x, generator=_gen())
    assert rec.shape == kl.shape == (7,)
    assert bool((kl >= 0).all())
    # an image of 1200 values in (0, 1) costs more than 0 and less than 1200 * log(2) * 10 nats
    assert bool((rec > 0).all()) and bool((rec < 1200 * math.log(2) * 10).all())


def test_learned_std_is_a_parameter_only_when_asked() -> None:
    fixed = VAE(VAEConfig(input_shape=(8,), likelihood="gaussian"))
    learned = VAE(VAEConfig(input_shape=(8,), likelihood="gaussian", learn_std=True))
    assert "log_std" not in dict(fixed.named_parameters())
    assert "log_std" in dict(learned.named_parameters())


def test_encode_rejects_the_wrong_shape() -> None:
    vae = VAE(VAEConfig(input_shape=(1, 28, 28)))
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        vae.encode(torch.rand(2, 3, 28, 28))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"input_shape": (2, 28, 28)}, "1, 3 or 4 channels"),
        ({"input_shape": (1, 7, 28)}, "at least 8x8"),
        ({"input_shape": (1, 28, 28), "widths": (32,)}, "needs 2 conv widths"),
        ({"input_shape": (1, 28, 28), "latent_dim": 0}, "latent_dim"),
        ({"input_shape": (1, 28, 28), "likelihood": "poisson"}, "likelihood"),
        ({"input_shape": (1, 28, 28), "beta": -1.0}, "beta"),
        ({"input_shape": (1, 28, 28), "gaussian_std": 0.0}, "gaussian_std"),
        ({"input_shape": (4, 5)}, r"\(C, H, W\) or \(D,\)"),
    ],
)
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        VAEConfig(**kwargs)


def test_config_dict_round_trip_and_unknown_keys() -> None:
    cfg = VAEConfig(input_shape=(3, 32, 32), latent_dim=12, num_classes=5, likelihood="gaussian")
    assert VAEConfig.from_dict(cfg.to_dict()) == cfg
    bad = cfg.to_dict() | {"dropout": 0.1}
    with pytest.raises(ValueError, match="unknown keys"):
        VAEConfig.from_dict(bad)


def test_public_names_resolve_whatever_was_imported_first() -> None:
    """`vaeaug.fit` is the function even after the module defining it was imported directly."""
    import subprocess
    import sys

    code = ("import vaeaug.fitting.training, vaeaug.model.vaefile, vaeaug.model.vae\n"
            "import vaeaug\n"
            "assert callable(vaeaug.fit) and vaeaug.fit.__module__ == 'vaeaug.fitting.training'\n"
            "assert callable(vaeaug.load) and vaeaug.VAE.__name__ == 'VAE'\n"
            "import vaeaug.protocol, vaeaug.protocol.tuning\n"
            "assert callable(vaeaug.evaluate) and callable(vaeaug.tune)\n"
            "import sys; assert 'torch' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    lazy = "import sys, vaeaug; assert 'torch' not in sys.modules, 'import vaeaug must not import torch'"
    subprocess.run([sys.executable, "-c", lazy], check=True)
