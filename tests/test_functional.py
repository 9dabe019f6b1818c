"""Counter-based RNG, the perturbation math, and the Backend interface (torch backend)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vaeaug
from vaeaug.backends.factory import as_backend
from vaeaug.backends.torch_backend import TorchBackend
from vaeaug.core import functional as F
from vaeaug.core.backend import Backend
from vaeaug.core.rng import Noise, Stream, derive_keys, normal, randint_key, uniform

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from _helpers import digits_conditional_model, digits_model  # noqa: E402

N_MOMENTS = 100_000


@pytest.fixture(scope="module")
def model() -> vaeaug.VAE:
    return digits_model()


@pytest.fixture(scope="module")
def cmodel() -> vaeaug.VAE:
    return digits_conditional_model()


@pytest.fixture(scope="module")
def digits_x() -> tuple[torch.Tensor, torch.Tensor]:
    d = vaeaug.load_builtin("digits", split="test")
    return d.x[:100].contiguous(), d.y[:100].contiguous()


def _noise(n: int, dim: int = 16, seed: int = 0) -> Noise:
    return Noise.from_keys(derive_keys(seed, np.arange(n)), dim)


# --------------------------------------------------------------------------- rng


def test_derive_keys_is_a_deterministic_hash() -> None:
    a = derive_keys(7, 1, np.arange(5))
    assert a.dtype == np.uint64 and a.shape == (5,)
    np.testing.assert_array_equal(a, derive_keys(7, 1, np.arange(5)))
    assert len(set(a.tolist())) == 5
    # a scalar call is the matching element of the vectorised one
    assert derive_keys(7, 1, 3).shape == (1,)
    assert derive_keys(7, 1, 3)[0] == a[3]
    # every input matters, and the order of the parts matters
    others = [derive_keys(8, 1, 3)[0], derive_keys(7, 2, 3)[0], derive_keys(7, 3, 1)[0], derive_keys(7, 1)[0],
              derive_keys(7)[0], derive_keys(7, 1, 3, 0)[0]]
    assert len({int(a[3]), *map(int, others)}) == 1 + len(others)
    # broadcasting: a vector seed pairs element-wise
    np.testing.assert_array_equal(derive_keys(np.array([7, 8]), 1, 3), [a[3], derive_keys(8, 1, 3)[0]])
    # numpy integer types are accepted and agree with Python ints
    assert derive_keys(np.int32(7), np.uint8(1), np.int64(3))[0] == a[3]
    # mixed Python ints and numpy values hash the same way
    assert derive_keys(7, np.int64(1), 3)[0] == derive_keys(7, 1, np.uint16(3))[0] == a[3]
    assert derive_keys(2**64 - 1)[0] == derive_keys(np.uint64(2**64 - 1))[0]


def test_derive_keys_rejects_bad_keys() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        derive_keys(-1)
    with pytest.raises(ValueError, match=">= 0"):
        derive_keys(0, np.array([1, -2]))
    with pytest.raises(TypeError, match="integers"):
        derive_keys(0.5)
    with pytest.raises(TypeError, match="integers"):
        derive_keys(0, np.array([1.0]))


@pytest.mark.parametrize("draw", [lambda k: uniform(k, Stream.EPS, 3), lambda k: normal(k, Stream.EPS, 5)],
                         ids=["uniform", "normal"])
def test_rows_depend_only_on_their_key(draw) -> None:
    keys = derive_keys(3, np.arange(50))
    full = draw(keys)
    np.testing.assert_array_equal(full, draw(keys))
    # any sub-batch, permutation or single key gives the same rows
    perm = np.random.default_rng(0).permutation(50)
    np.testing.assert_array_equal(draw(keys[perm]), full[perm])
    np.testing.assert_array_equal(draw(keys[10:13]), full[10:13])
    for i in (0, 17, 49):
        np.testing.assert_array_equal(draw(keys[i : i + 1])[0], full[i])
    # a key repeated in a batch gives the same row twice
    rep = draw(keys[[4, 9, 4]])
    np.testing.assert_array_equal(rep[0], rep[2])
    assert not np.array_equal(rep[0], rep[1])


def test_more_draws_per_key_extend_the_row() -> None:
    keys = derive_keys(4, np.arange(3))
    long = uniform(keys, Stream.EPS, 100)
    for n in (1, 2, 63, 64, 65):
        np.testing.assert_array_equal(uniform(keys, Stream.EPS, n), long[:, :n])
        np.testing.assert_array_equal(uniform(keys[1:2], Stream.EPS, n)[0], long[1, :n])


def test_uniform_moments_and_range() -> None:
    u = uniform(derive_keys(0, np.arange(N_MOMENTS)), Stream.APPLY)[:, 0]
    assert u.dtype == np.float64 and u.shape == (N_MOMENTS,)
    assert u.min() > 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005
    assert abs(u.var() - 1 / 12) < 0.002
    hist = np.histogram(u, bins=10, range=(0, 1))[0] / N_MOMENTS
    assert np.all(np.abs(hist - 0.1) < 0.005)
    # within a row too: many draws for one key are uniform as well
    row = uniform(derive_keys(5), Stream.T, N_MOMENTS)[0]
    assert abs(row.mean() - 0.5) < 0.005 and abs(row.var() - 1 / 12) < 0.002
    # neighbouring keys are uncorrelated
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.02


def test_normal_moments() -> None:
    z = normal(derive_keys(1, np.arange(N_MOMENTS // 4)), Stream.EPS, 4).reshape(-1)
    assert z.dtype == np.float32 and z.size == N_MOMENTS
    assert np.isfinite(z).all()
    assert abs(z.mean()) < 0.02
    assert abs(z.std() - 1.0) < 0.02
    assert abs(np.mean(z**3)) < 0.05  # skewness
    assert abs(np.mean(z**4) - 3.0) < 0.15  # kurtosis
    assert abs(np.mean(np.abs(z) < 1.0) - 0.6827) < 0.01
    # an odd count per key works and is still standard normal
    z7 = normal(derive_keys(2, np.arange(N_MOMENTS // 7)), Stream.EPS, 7)
    assert z7.shape == (N_MOMENTS // 7, 7)
    assert abs(z7.mean()) < 0.02 and abs(z7.std() - 1.0) < 0.02
    # the columns of one row are uncorrelated (cos and sin halves of Box-Muller included)
    c = np.corrcoef(z7.T)
    assert np.abs(c - np.eye(7)).max() < 0.05


def test_streams_and_keys_differ() -> None:
    keys = derive_keys(0, np.arange(1000))
    a = uniform(keys, Stream.APPLY)[:, 0]
    streams = [uniform(keys, s)[:, 0] for s in Stream]
    for i in range(len(streams)):
        for j in range(i + 1, len(streams)):
            assert not np.any(streams[i] == streams[j])
            assert abs(np.corrcoef(streams[i], streams[j])[0, 1]) < 0.1
    other = uniform(derive_keys(1, np.arange(1000)), Stream.APPLY)[:, 0]
    assert not np.any(a == other)
    assert not np.array_equal(normal(keys, Stream.EPS, 4), normal(keys, Stream.T, 4))


def test_randint_key() -> None:
    a = [randint_key(np.random.default_rng(0)) for _ in range(2)]
    assert a[0] == a[1] and isinstance(a[0], int)
    rng = np.random.default_rng(1)
    ks = [randint_key(rng) for _ in range(100)]
    assert len(set(ks)) == 100 and all(0 <= k < 2**63 for k in ks)
    assert derive_keys(ks[0]).shape == (1,)


def test_noise_from_keys() -> None:
    keys = derive_keys(0, np.arange(6))
    nz = Noise.from_keys(keys, 16)
    assert nz.eps.shape == (6, 16) and nz.eps.dtype == np.float32
    assert nz.t.shape == (6,) and nz.t.dtype == np.float32
    assert len(nz) == 6
    assert np.all((nz.t > 0) & (nz.t < 1))
    odd = Noise.from_keys(keys, 7)
    assert odd.eps.shape == (6, 7)
    # per-row: a subset of keys gives the matching rows
    sub = Noise.from_keys(keys[[5, 2]], 16)
    np.testing.assert_array_equal(sub.eps, nz.eps[[5, 2]])
    np.testing.assert_array_equal(sub.t, nz.t[[5, 2]])
    assert len(Noise.from_keys(derive_keys(0, np.arange(0)), 4)) == 0
    # without the interpolation uniforms: zeros for t, the same eps
    no_t = Noise.from_keys(keys, 16, with_t=False)
    np.testing.assert_array_equal(no_t.eps, nz.eps)
    assert no_t.t.shape == (6,) and no_t.t.dtype == np.float32 and not no_t.t.any()


# --------------------------------------------------------------------------- latent_move


@pytest.fixture
def latents() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "mu": torch.randn(5, 4, generator=g, dtype=torch.float64),
        "logvar": torch.randn(5, 4, generator=g, dtype=torch.float64),
        "eps": torch.randn(5, 4, generator=g, dtype=torch.float64),
        "t": torch.rand(5, generator=g, dtype=torch.float64),
        "mu_b": torch.randn(5, 4, generator=g, dtype=torch.float64),
    }


def _hand(mode: str, L: dict[str, torch.Tensor], s: np.ndarray) -> np.ndarray:
    """The documented formulas, written out element by element in numpy."""
    mu, lv, eps, t, mb = (L[k].numpy() for k in ("mu", "logvar", "eps", "t", "mu_b"))
    out = np.empty_like(mu)
    for i in range(mu.shape[0]):
        for j in range(mu.shape[1]):
            if mode == "posterior":
                out[i, j] = mu[i, j] + s[i] * np.sqrt(np.exp(lv[i, j])) * eps[i, j]
            elif mode == "isotropic":
                out[i, j] = mu[i, j] + s[i] * eps[i, j]
            elif mode == "interpolate":
                w = s[i] * t[i] / 2
                out[i, j] = (1 - w) * mu[i, j] + w * mb[i, j]
            elif mode == "extrapolate":
                w = s[i] * t[i] / 2
                out[i, j] = mu[i, j] + w * (mu[i, j] - mb[i, j])
            elif mode == "reconstruct":
                out[i, j] = mu[i, j]
            elif mode == "prior":
                out[i, j] = eps[i, j]
    return out


@pytest.mark.parametrize("mode", ["posterior", "isotropic", "interpolate", "extrapolate", "reconstruct", "prior"])
def test_latent_move_formulas(mode: str, latents: dict[str, torch.Tensor]) -> None:
    L = latents
    for strength in (0.0, 0.5, 1.0, 2.0):
        z = F.latent_move(mode, L["mu"], L["logvar"], L["eps"], strength, L["t"], L["mu_b"])
        assert z.shape == (5, 4) and z.dtype == torch.float64
        np.testing.assert_allclose(z.numpy(), _hand(mode, L, np.full(5, strength)), rtol=1e-12, atol=1e-12)
    # per-sample strengths, as an (N,) tensor
    s = torch.tensor([0.0, 0.25, 1.0, 1.5, 2.0], dtype=torch.float64)
    z = F.latent_move(mode, L["mu"], L["logvar"], L["eps"], s, L["t"], L["mu_b"])
    np.testing.assert_allclose(z.numpy(), _hand(mode, L, s.numpy()), rtol=1e-12, atol=1e-12)


def test_latent_move_edge_cases(latents: dict[str, torch.Tensor]) -> None:
    L = latents
    mu, lv, eps = L["mu"], L["logvar"], L["eps"]
    # zero strength is exactly mu for the noisy moves
    for mode in ("posterior", "isotropic"):
        assert torch.equal(F.latent_move(mode, mu, lv, eps, 0.0), mu)
    assert torch.equal(F.latent_move("interpolate", mu, lv, eps, 0.0, L["t"], L["mu_b"]), mu)
    # strength 2 with t = 1 lands on the partner, t = 0 stays on the source
    ones, zeros = torch.ones(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    assert torch.equal(F.latent_move("interpolate", mu, lv, eps, 2.0, ones, L["mu_b"]), L["mu_b"])
    assert torch.equal(F.latent_move("interpolate", mu, lv, eps, 2.0, zeros, L["mu_b"]), mu)
    # unit strength posterior is a sample of q(z|x): mean mu, std exp(logvar/2)
    g = torch.Generator().manual_seed(1)
    m1, lv1 = torch.full((20000, 2), 3.0), torch.log(torch.tensor([[0.25, 4.0]])).expand(20000, 2)
    z = F.latent_move("posterior", m1, lv1, torch.randn(20000, 2, generator=g), 1.0)
    np.testing.assert_allclose(z.mean(0).numpy(), [3.0, 3.0], atol=0.05)
    np.testing.assert_allclose(z.std(0).numpy(), [0.5, 2.0], rtol=0.03)
    for mode in F.PARTNER_MODES:
        with pytest.raises(ValueError, match=f"mode '{mode}' needs the uniforms t and the partners' means mu_b"):
            F.latent_move(mode, mu, lv, eps, 1.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        F.latent_move("sideways", mu, lv, eps, 1.0)


def test_extrapolate_is_the_mirror_of_interpolate(latents: dict[str, torch.Tensor]) -> None:
    L = latents
    mu, lv, eps, t, mu_b = L["mu"], L["logvar"], L["eps"], L["t"], L["mu_b"]
    # no move at t = 0 or strength 0: mu itself, bit for bit
    zeros = torch.zeros(5, dtype=torch.float64)
    assert torch.equal(F.latent_move("extrapolate", mu, lv, eps, 4.0, zeros, mu_b), mu)
    assert torch.equal(F.latent_move("extrapolate", mu, lv, eps, 0.0, t, mu_b), mu)
    # away from the partner, along the line through it: z - mu = t (mu - mu_b), so |z - mu_b| = (1 + t) |mu - mu_b|
    for s in (0.5, 1.0, 2.0, 4.0):
        z = F.latent_move("extrapolate", mu, lv, eps, s, t, mu_b)
        w = (s * t / 2)[:, None]
        torch.testing.assert_close(z - mu, w * (mu - mu_b), atol=1e-12, rtol=0)
        torch.testing.assert_close((z - mu_b).norm(dim=1), (1 + w[:, 0]) * (mu - mu_b).norm(dim=1), atol=1e-12,
                                   rtol=0)
        assert bool(((z - mu) * (mu_b - mu)).sum(dim=1).lt(0).all()), "the move must point away from the partner"
        # the mirror image of interpolate's point through mu
        zi = F.latent_move("interpolate", mu, lv, eps, min(s, 2.0), t, mu_b)
        ze = F.latent_move("extrapolate", mu, lv, eps, min(s, 2.0), t, mu_b)
        torch.testing.assert_close(zi + ze, 2 * mu, atol=1e-12, rtol=0)
    # strength 1 keeps t in [0, 0.5): at most half the partner distance beyond mu
    z = F.latent_move("extrapolate", mu, lv, eps, 1.0, torch.full((5,), 1 - 2**-23, dtype=torch.float64), mu_b)
    assert bool(((z - mu).norm(dim=1) < 0.5 * (mu - mu_b).norm(dim=1)).all())


@pytest.mark.parametrize("mode", ["interpolate", "extrapolate"])
def test_partner_moves_agree_on_numpy_and_torch(mode: str) -> None:
    """The ONNX backend runs the partner moves in numpy, the torch backend in torch: the same numbers."""
    nz = _noise(64, seed=5)  # t from the keys, as every consumer draws it
    rng = np.random.default_rng(2)
    mu, lv, mu_b = (rng.standard_normal((64, 16), dtype=np.float32) for _ in range(3))
    for s in (0.0, 1.0, 2.0, np.linspace(0.0, 2.0, 64, dtype=np.float32)):
        a = F.latent_move(mode, mu, lv, nz.eps, s, nz.t, mu_b)
        s_t = torch.from_numpy(s) if isinstance(s, np.ndarray) else s
        mu_t, lv_t, eps_t, t_t, mu_b_t = map(torch.from_numpy, (mu, lv, nz.eps, nz.t, mu_b))
        b = F.latent_move(mode, mu_t, lv_t, eps_t, s_t, t_t, mu_b_t)
        assert isinstance(a, np.ndarray) and a.dtype == np.float32 and isinstance(b, torch.Tensor)
        np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=1e-6)


def test_check_mode() -> None:
    for mode in F.MODES:
        for form in F.FORMS:
            if mode == "prior" and form == "delta":
                continue
            F.check_mode(mode, form, 1.0, conditional=True)
            if mode != "prior":
                F.check_mode(mode, form, 1.0, conditional=False)
    F.check_mode("interpolate", "decode", 2, conditional=False)  # the largest allowed
    F.check_mode("extrapolate", "delta", 4, conditional=False)  # the largest allowed
    F.check_mode("posterior", "decode", 0, conditional=False)
    with pytest.raises(ValueError, match="mode must be one of"):
        F.check_mode("sideways", "decode", 1.0, conditional=False)
    with pytest.raises(ValueError, match="form must be one of"):
        F.check_mode("posterior", "blend", 1.0, conditional=False)
    for bad in (-0.1, float("nan"), True, "1", None):
        with pytest.raises(ValueError, match="strength"):
            F.check_mode("posterior", "decode", bad, conditional=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        F.check_mode("interpolate", "decode", 2.5, conditional=False)
    with pytest.raises(ValueError, match=r"extrapolate needs strength in \[0, 4\].*got 4\.5 - pass a strength"):
        F.check_mode("extrapolate", "delta", 4.5, conditional=False)
    with pytest.raises(ValueError, match="conditional=True"):
        F.check_mode("prior", "decode", 1.0, conditional=False)
    with pytest.raises(ValueError, match="form='decode'"):
        F.check_mode("prior", "delta", 1.0, conditional=True)


# --------------------------------------------------------------------------- perturb


def test_reconstruct_is_decode_of_mu(model, digits_x) -> None:
    x = digits_x[0][:20]
    eps = torch.from_numpy(_noise(20).eps)
    with torch.no_grad():
        mu, _ = model.encode(x)
        expected = model.decode(mu)
        rec = F.perturb(model, x, mode="reconstruct", strength=1.0, eps=eps)
        post0 = F.perturb(model, x, mode="posterior", strength=0.0, eps=eps)
        iso0 = F.perturb(model, x, mode="isotropic", strength=0.0, eps=eps)
        post1 = F.perturb(model, x, mode="posterior", strength=1.0, eps=eps)
    assert torch.equal(rec, expected)
    assert torch.equal(post0, rec)
    assert torch.equal(iso0, rec)
    assert not torch.allclose(post1, rec)
    assert rec.shape == x.shape and rec.min() >= 0 and rec.max() <= 1


def test_perturb_decode_matches_formula(model, digits_x) -> None:
    x = digits_x[0][:10]
    nz = _noise(10)
    eps = torch.from_numpy(nz.eps)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        for mode, z in [("posterior", mu + 0.7 * torch.exp(0.5 * logvar) * eps), ("isotropic", mu + 0.7 * eps)]:
            out = F.perturb(model, x, mode=mode, strength=0.7, eps=eps)
            torch.testing.assert_close(out, model.decode(z), atol=1e-6, rtol=0)


def test_delta_form_formula_and_range(model, digits_x) -> None:
    x = digits_x[0][:30]
    eps = torch.from_numpy(_noise(30).eps)
    with torch.no_grad():
        mu, _ = model.encode(x)
        out = F.perturb(model, x, mode="isotropic", strength=3.0, eps=eps, form="delta")
        expected = (x + model.decode(mu + 3.0 * eps) - model.decode(mu)).clamp(0, 1)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.equal(out, x)
    # a large move does push values against both ends, and they are clipped, not wrapped
    assert bool((out == 0).any()) and bool((out == 1).any())


@pytest.mark.parametrize("mode", ["posterior", "isotropic", "reconstruct", "interpolate", "extrapolate"])
def test_delta_form_with_zero_move_returns_x_exactly(model, digits_x, mode: str) -> None:
    # x + D(z) - D(mu) with z == mu must be x itself, bit for bit (not (x + a) - a, which rounds)
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    x = torch.cat([x, digits_x[0][:40]])
    nz = _noise(80)
    strength = 0.0 if mode != "reconstruct" else 1.0
    with torch.no_grad():
        out = F.perturb(model, x, mode=mode, strength=strength, eps=torch.from_numpy(nz.eps), form="delta",
                        t=torch.from_numpy(nz.t), x_b=x.flip(0))
    assert torch.equal(out, x)


def test_prior_mode_needs_labels_and_uses_them(cmodel) -> None:
    eps = torch.from_numpy(_noise(6).eps)
    x = torch.zeros(6, 1, 8, 8)
    with torch.no_grad():
        a = F.perturb(cmodel, x, torch.full((6,), 3), mode="prior", strength=1.0, eps=eps)
        b = F.perturb(cmodel, x, torch.full((6,), 8), mode="prior", strength=1.0, eps=eps)
        assert torch.equal(a, cmodel.decode(eps, torch.full((6,), 3)))
        # the source pixels play no part in a prior sample
        c = F.perturb(cmodel, torch.ones(6, 1, 8, 8), torch.full((6,), 3), mode="prior", strength=1.0, eps=eps)
    assert torch.equal(a, c)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="class-conditional"):
        F.perturb(cmodel, x, None, mode="prior", strength=1.0, eps=eps)


def test_interpolate_moves_towards_the_partner(model, digits_x) -> None:
    x = digits_x[0][:8]
    xb = digits_x[0][8:16]
    eps = torch.from_numpy(_noise(8).eps)
    with torch.no_grad():
        rec_b = F.perturb(model, xb, mode="reconstruct", strength=1.0, eps=eps)
        rec_a = F.perturb(model, x, mode="reconstruct", strength=1.0, eps=eps)
        at_b = F.perturb(model, x, mode="interpolate", strength=2.0, eps=eps, t=torch.ones(8), x_b=xb)
        at_a = F.perturb(model, x, mode="interpolate", strength=2.0, eps=eps, t=torch.zeros(8), x_b=xb)
        mid = F.perturb(model, x, mode="interpolate", strength=1.0, eps=eps, t=torch.ones(8), x_b=xb)
        mu_a, mu_b = model.encode(x)[0], model.encode(xb)[0]
    torch.testing.assert_close(at_b, rec_b, atol=1e-6, rtol=0)
    torch.testing.assert_close(at_a, rec_a, atol=1e-6, rtol=0)
    torch.testing.assert_close(mid, model.decode(0.5 * mu_a + 0.5 * mu_b), atol=1e-6, rtol=0)


def test_extrapolate_moves_away_from_the_partner(model, digits_x) -> None:
    x, xb = digits_x[0][:8], digits_x[0][8:16]
    eps = torch.from_numpy(_noise(8).eps)
    ones = torch.ones(8)
    with torch.no_grad():
        mu_a, mu_b = model.encode(x)[0], model.encode(xb)[0]
        at_a = F.perturb(model, x, mode="extrapolate", strength=4.0, eps=eps, t=torch.zeros(8), x_b=xb)
        far = F.perturb(model, x, mode="extrapolate", strength=2.0, eps=eps, t=ones, x_b=xb)
        half = F.perturb(model, x, mode="extrapolate", strength=1.0, eps=eps, t=ones, x_b=xb)
        delta = F.perturb(model, x, mode="extrapolate", strength=2.0, eps=eps, t=ones, x_b=xb, form="delta")
        torch.testing.assert_close(at_a, model.decode(mu_a), atol=1e-6, rtol=0)
        torch.testing.assert_close(far, model.decode(2 * mu_a - mu_b), atol=1e-6, rtol=0)
        torch.testing.assert_close(half, model.decode(1.5 * mu_a - 0.5 * mu_b), atol=1e-6, rtol=0)
        want = (x + model.decode(2 * mu_a - mu_b) - model.decode(mu_a)).clamp(0, 1)
        torch.testing.assert_close(delta, want, atol=1e-6, rtol=0)
        # in image space too it moves away from the partner's reconstruction
        rec_b = model.decode(mu_b)
        assert (far - rec_b).norm() > (model.decode(mu_a) - rec_b).norm()


def test_perturb_rejects_unknown_form(model) -> None:
    with pytest.raises(ValueError, match="form must be one of"):
        F.perturb(model, torch.rand(2, 1, 8, 8), mode="posterior", strength=1.0, eps=torch.zeros(2, 16),
                  form="blend")


# --------------------------------------------------------------------------- generator


def test_torch_generator_basics(model, cmodel, tmp_path) -> None:
    gen = TorchBackend(model)
    assert isinstance(gen, Backend)
    assert as_backend(gen) is gen
    assert isinstance(as_backend(model), TorchBackend)
    assert not gen.conditional and TorchBackend(cmodel).conditional
    assert gen.latent_dim == 16 and gen.value_range == model.value_range
    assert gen.describe() == "VAE(1x8x8, latent 16)"
    assert "10 classes" in TorchBackend(cmodel).describe()
    assert str(gen.device) == "cpu"
    with pytest.raises(TypeError, match="VAE or a model file path"):
        TorchBackend(object())
    # from a file: same variants as from the model
    path = vaeaug.save(model, tmp_path / "m.vae")
    from_file = TorchBackend(path)
    assert from_file.source == str(path)
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    np.testing.assert_array_equal(from_file.variants(x, noise=_noise(4)), gen.variants(x, noise=_noise(4)))


def test_variants_numpy_in_numpy_out_tensor_in_tensor_out(model, cmodel, digits_x) -> None:
    x, y = digits_x[0][:12], digits_x[1][:12]
    nz = _noise(12)
    for m, labels in ((model, None), (cmodel, y)):
        gen = TorchBackend(m)
        for form in F.FORMS:
            t_out = gen.variants(x, labels, noise=nz, form=form)
            n_out = gen.variants(x.numpy(), None if labels is None else labels.numpy(), noise=nz, form=form)
            assert isinstance(t_out, torch.Tensor) and isinstance(n_out, np.ndarray)
            assert t_out.dtype == torch.float32 and n_out.dtype == np.float32
            assert t_out.shape == n_out.shape == x.shape
            np.testing.assert_array_equal(n_out, t_out.numpy())
            assert 0 <= n_out.min() and n_out.max() <= 1
    # the same keys give the same variants; other keys give others
    gen = TorchBackend(model)
    assert torch.equal(gen.variants(x, noise=_noise(12)), gen.variants(x, noise=_noise(12)))
    assert not torch.allclose(gen.variants(x, noise=_noise(12)), gen.variants(x, noise=_noise(12, seed=1)))


def test_variants_errors(model, cmodel, digits_x) -> None:
    x, y = digits_x[0][:4], digits_x[1][:4]
    gen, cgen = TorchBackend(model), TorchBackend(cmodel)
    with pytest.raises(ValueError, match="noise is for 3 samples but x has 4"):
        gen.variants(x, noise=_noise(3))
    with pytest.raises(ValueError, match="pass the labels y"):
        cgen.variants(x, noise=_noise(4))
    for mode in F.PARTNER_MODES:
        with pytest.raises(ValueError, match=f"mode '{mode}' needs partner samples of the same class: pass partner="):
            gen.variants(x, mode=mode, noise=_noise(4))
    with pytest.raises(ValueError, match="class-conditional"):
        gen.variants(x, mode="prior", noise=_noise(4))
    with pytest.raises(ValueError, match="form='decode'"):
        cgen.variants(x, y, mode="prior", form="delta", noise=_noise(4))
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        gen.variants(x, mode="interpolate", strength=2.5, noise=_noise(4), partner=x)
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        gen.variants(x, mode="extrapolate", strength=4.5, noise=_noise(4), partner=x)
    # the valid counterparts run
    assert cgen.variants(x, y, mode="prior", noise=_noise(4)).shape == x.shape
    assert gen.variants(x, mode="interpolate", strength=2.0, noise=_noise(4), partner=x.flip(0)).shape == x.shape
    assert gen.variants(x, mode="extrapolate", strength=4.0, noise=_noise(4), partner=x.flip(0)).shape == x.shape


@pytest.mark.parametrize(
    "conditional,mode,form",
    [(False, "posterior", "decode"), (False, "isotropic", "delta"), (False, "interpolate", "decode"),
     (False, "extrapolate", "delta"), (True, "extrapolate", "decode"), (True, "posterior", "delta"),
     (True, "prior", "decode")],
)
def test_invariant_output_does_not_depend_on_the_batch(model, cmodel, digits_x, conditional, mode, form) -> None:
    gen = TorchBackend(cmodel if conditional else model)
    x, y = digits_x
    y = y if conditional else None
    partner = x.flip(0)
    nz = _noise(100, seed=11)
    full = gen.variants(x, y, mode=mode, form=form, noise=nz, partner=partner, invariant=True)
    assert full.shape == x.shape
    for i in (0, 1, 37, 63, 64, 65, 99):
        sl = slice(i, i + 1)
        one = gen.variants(x[sl], None if y is None else y[sl], mode=mode, form=form,
                           noise=Noise(nz.eps[sl], nz.t[sl]), partner=partner[sl], invariant=True)
        assert torch.equal(one[0], full[i]), f"sample {i} differs between a batch of 1 and a batch of 100"
    # other batch compositions: a shuffled batch and a batch of 7 around the sample
    perm = torch.from_numpy(np.random.default_rng(0).permutation(100))
    shuffled = gen.variants(x[perm], None if y is None else y[perm], mode=mode, form=form,
                            noise=Noise(nz.eps[perm.numpy()], nz.t[perm.numpy()]), partner=partner[perm],
                            invariant=True)
    assert torch.equal(shuffled, full[perm])
    sl = slice(60, 67)
    seven = gen.variants(x[sl], None if y is None else y[sl], mode=mode, form=form,
                         noise=Noise(nz.eps[sl], nz.t[sl]), partner=partner[sl], invariant=True)
    assert torch.equal(seven, full[sl])
    # and it is the same computation as the plain path, up to float rounding
    plain = gen.variants(x, y, mode=mode, form=form, noise=nz, partner=partner)
    torch.testing.assert_close(plain, full, atol=1e-5, rtol=0)
    # numpy input takes the same route
    np.testing.assert_array_equal(
        gen.variants(x.numpy(), None if y is None else y.numpy(), mode=mode, form=form, noise=nz,
                     partner=partner.numpy(), invariant=True),
        full.numpy(),
    )


def test_invariant_with_small_chunks(model, digits_x) -> None:
    gen = TorchBackend(model, chunk_size=8)
    x = digits_x[0][:21]
    nz = _noise(21)
    full = gen.variants(x, noise=nz, invariant=True)
    for i in (0, 7, 8, 20):
        one = gen.variants(x[i : i + 1], noise=Noise(nz.eps[i : i + 1], nz.t[i : i + 1]), invariant=True)
        assert torch.equal(one[0], full[i])
    torch.testing.assert_close(gen.variants(x, noise=nz), full, atol=1e-5, rtol=0)
