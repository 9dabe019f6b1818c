"""Encode once, decode once per variant: the two stages against the one-call path on both backends, and the
bounded cache of encodings (bounds, least-recently-used eviction, results independent of its size and order)."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import vaeaug
from vaeaug.core.backend import Backend
from vaeaug.core.cache import EncodingCache, bytes_per_source
from vaeaug.core.rng import Noise, derive_keys
from vaeaug.core.settings import PARTNER_MODES, AugmentSetting

sys.path.insert(0, str(Path(__file__).parent))
from _helpers import digits_conditional_model, digits_model, digits_uint8  # noqa: E402

BOUND = 1e-6
"""Two stages against the one-call path, same keys: the largest difference allowed in model space ([0, 1]).
Measured on the digits models: 0 (torch, channels_last on the CPU) and at most 1.8e-7 (ONNX: the encoder
and sampler graphs against the fused augmenter graph), i.e. float32 rounding."""


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Backend]]:
    out = tmp_path_factory.mktemp("cache")
    gens: dict[str, dict[str, Backend]] = {}
    for name, model in (("uncond", digits_model()), ("cond", digits_conditional_model())):
        path = vaeaug.export_onnx(model, out / f"{name}.onnx")["augmenter"]
        gens[name] = {"torch": vaeaug.TorchBackend(model), "onnx": vaeaug.OnnxBackend(path)}
    return gens


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    u8, y = digits_uint8()
    return u8[:150, None].astype(np.float32) / np.float32(255.0), y[:150].astype(np.int64)


CASES = [(m, f) for m in ("isotropic", "posterior", "reconstruct", *PARTNER_MODES) for f in ("delta", "decode")]


@pytest.mark.parametrize("backend", ["torch", "onnx"])
@pytest.mark.parametrize("name", ["uncond", "cond"])
def test_two_stages_make_the_one_call_variants_within_float_rounding(backend: str, name: str, backends: Any,
                                                                     data: Any) -> None:
    gen = backends[name][backend]
    x, y = data
    labels = y if gen.conditional else None
    noise = Noise.from_keys(derive_keys(5, np.arange(len(x))), gen.latent_dim)
    partner = x[np.random.default_rng(0).permutation(len(x))]
    worst = 0.0
    for mode, form in [*CASES, *([("prior", "decode")] if gen.conditional else [])]:
        setting = AugmentSetting(mode, 1.5, form, 1.0)
        pb = partner if mode in PARTNER_MODES else None
        one_call = gen.generate(setting, x, labels, noise, pb, False)  # encoder + decoder(s) in one call
        staged = gen.generate(setting, x, labels, noise, pb, True)  # the two stages, fixed chunks
        enc = None if mode == "prior" else gen.encode_sources(x, labels, delta=form == "delta")
        mu_b = None if pb is None else gen.encode_sources(pb, labels, delta=False).mu
        encoded = gen.generate_encoded(setting, x, enc, labels, noise, mu_b)  # the two stages, any batch
        assert np.abs(one_call - x).max() > 0.01 or mode == "reconstruct"  # a real move
        for other in (staged, encoded):
            diff = float(np.abs(other - one_call).max())
            assert diff <= BOUND, (mode, form, diff)
            worst = max(worst, diff)
        if mode == "reconstruct" and form == "delta":
            assert np.array_equal(staged, x)  # D(mu) - D(mu) is exactly 0: the image back
    print(f"{backend} {name}: two stages within {worst:.2g} of the one-call path")


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_invariant_variants_do_not_depend_on_the_batch(backend: str, backends: Any, data: Any) -> None:
    gen = backends["uncond"][backend]
    x, _ = data
    noise = Noise.from_keys(derive_keys(9, np.arange(len(x))), gen.latent_dim)
    whole = gen.generate(AugmentSetting(), x, None, noise, None, True)
    for lo, hi in ((0, 1), (3, 70), (64, 150)):
        part = gen.generate(AugmentSetting(), x[lo:hi], None, Noise(noise.eps[lo:hi], noise.t[lo:hi]), None, True)
        assert np.array_equal(part, whole[lo:hi])


def test_invariant_rgb_variants_on_torch_do_not_depend_on_the_batch() -> None:
    """channels_last images: the zero-padded last chunk keeps the layout of the others (the same conv kernels)."""
    gen = vaeaug.TorchBackend(vaeaug.VAE(vaeaug.VAEConfig(input_shape=(3, 8, 8))))
    x = np.random.default_rng(0).random((150, 3, 8, 8), dtype=np.float32)
    noise = Noise.from_keys(derive_keys(2, np.arange(150)), gen.latent_dim)
    whole = gen.generate(AugmentSetting(), x, None, noise, None, True)
    for lo, hi in ((0, 1), (3, 70), (64, 150), (100, 150)):
        part = gen.generate(AugmentSetting(), x[lo:hi], None, Noise(noise.eps[lo:hi], noise.t[lo:hi]), None, True)
        assert np.array_equal(part, whole[lo:hi])


def test_torch_and_onnx_agree_on_the_two_stages(backends: Any, data: Any) -> None:
    x, y = data
    for name in ("uncond", "cond"):
        a, b = backends[name]["torch"], backends[name]["onnx"]
        labels = y if a.conditional else None
        ea, eb = (g.encode_sources(x, labels, delta=True, invariant=True) for g in (a, b))
        assert np.abs(ea.mu - eb.mu).max() <= 1e-4 and np.abs(ea.d_mu - eb.d_mu).max() <= 1e-4
        noise = Noise.from_keys(derive_keys(1, np.arange(len(x))), a.latent_dim)
        va, vb = (g.generate_encoded(AugmentSetting(), x, ea, labels, noise, None, True) for g in (a, b))
        assert np.abs(va - vb).max() <= 1e-4


# ---------------------------------------------------------------- the cache


def _cache(backends: Any, capacity: int | None, delta: bool = True) -> EncodingCache:
    return EncodingCache(backends["uncond"]["torch"], delta=delta, capacity=capacity)


def test_cache_keeps_at_most_capacity_sources_and_drops_the_least_recently_used(backends: Any, data: Any) -> None:
    x, _ = data
    cache = _cache(backends, 3)
    loads: list[list[int]] = []

    def load(idx: np.ndarray) -> np.ndarray:
        loads.append(idx.tolist())
        return x[idx]

    cache.get(np.array([0, 1, 2, 1]), load)  # three distinct sources encoded, once each
    assert loads == [[0, 1, 2]] and cache.encoded == 3 and len(cache) == 3
    cache.get(np.array([0]), load)  # a hit: 0 becomes the most recent, nothing loaded
    assert len(loads) == 1
    cache.get(np.array([5]), load)  # full: 1, the least recently used, is dropped
    assert loads[-1] == [5] and len(cache) == 3
    cache.get(np.array([0, 2, 5]), load)  # all kept
    assert len(loads) == 2
    cache.get(np.array([1]), load)  # 1 was dropped: encoded again
    assert loads[-1] == [1] and cache.encoded == 5 and len(cache) == 3
    assert cache.nbytes <= 3 * bytes_per_source((1, 8, 8), 16, delta=True)
    # more distinct sources in one call than the cache holds: all returned, the last 3 kept
    enc = cache.get(np.arange(10, 20), load)
    assert len(enc) == 10 and len(cache) == 3
    before = len(loads)
    cache.get(np.array([17, 18, 19]), load)
    assert len(loads) == before


def test_cache_results_are_the_same_whatever_its_size_and_the_order(backends: Any, data: Any) -> None:
    x, _ = data
    want = backends["uncond"]["torch"].encode_sources(x[:40], None, delta=True, invariant=True)
    rng = np.random.default_rng(3)
    for capacity in (None, 0, 1, 7):
        cache = _cache(backends, capacity)
        for _ in range(5):
            idx = rng.integers(0, 40, size=int(rng.integers(1, 30)))
            got = cache.get(idx, lambda m: x[m])
            assert np.array_equal(got.mu, want.mu[idx]) and np.array_equal(got.logvar, want.logvar[idx])
            assert np.array_equal(got.d_mu, want.d_mu[idx])
        assert len(cache) <= (40 if capacity is None else capacity)


def test_cache_without_room_still_encodes_each_distinct_source_once_per_call(backends: Any, data: Any) -> None:
    x, _ = data
    cache = _cache(backends, 0, delta=False)
    enc = cache.get(np.array([4, 4, 4, 9]), lambda m: x[m])
    assert cache.encoded == 2 and len(cache) == 0 and cache.nbytes == 0 and enc.d_mu is None
    cache.get(np.array([4]), lambda m: x[m])
    assert cache.encoded == 3


def test_cache_survives_pickling_as_dataloader_workers_do(backends: Any, data: Any) -> None:
    x, _ = data
    cache = EncodingCache(backends["uncond"]["onnx"], delta=True, capacity=10)
    first = cache.get(np.arange(5), lambda m: x[m])
    copy = pickle.loads(pickle.dumps(cache))
    assert len(copy) == 5
    again = copy.get(np.arange(5), lambda m: pytest.fail("a kept source was encoded again"))
    assert np.array_equal(again.d_mu, first.d_mu)


def test_cache_needs_a_backend_with_stages_and_a_valid_capacity(backends: Any) -> None:
    class OneCall(Backend):
        def __init__(self) -> None:
            self.config = backends["uncond"]["torch"].config

        def generate(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError

    assert not OneCall().amortizes and backends["uncond"]["onnx"].amortizes
    with pytest.raises(TypeError, match="no separate encoding stage"):
        EncodingCache(OneCall(), delta=True)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="capacity must be None"):
            _cache(backends, bad)  # type: ignore[arg-type]
