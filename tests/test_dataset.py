"""VAEAugmentedDataset: index layout, item types, determinism, batching, class balancing, errors."""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

import vaeaug
from vaeaug import VAEAugmentedDataset
from vaeaug.core.codecs import NumpyImages, PILImages, TensorImages

N_SMALL = 6  # samples in the small bases of every kind
KINDS = ["tensor", "uint8", "pil", "numpy", "unlabelled", "folder"]


# ---------------------------------------------------------------- fixtures and base datasets


@pytest.fixture(scope="module")
def digits() -> Any:
    return vaeaug.load_builtin("digits")


@pytest.fixture(scope="module")
def model() -> vaeaug.VAE:
    return vaeaug.fit("digits", epochs=2, progress=False)


@pytest.fixture(scope="module")
def cmodel() -> vaeaug.VAE:
    return vaeaug.fit("digits", epochs=2, progress=False, conditional=True)


def _u8(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, 8, 8) floats in [0, 1] -> uint8 0..255."""
    return (x * 255).round().to(torch.uint8)


class PILDigits(Dataset):
    """(PIL 'L' image, int)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x = _u8(x)[:, 0].numpy()
        self.y = [int(v) for v in y]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.x[i]), self.y[i]


class NumpyDigits(Dataset):
    """(numpy (H, W, 1) uint8, numpy int64)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x = _u8(x).permute(0, 2, 3, 1).numpy().copy()
        self.y = y.numpy().astype(np.int64)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.int64]:
        return self.x[i].copy(), self.y[i]


class Unlabelled(Dataset):
    """x only: float32 tensors in the digits model's float range 0..16."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x * 16

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


class Listed(Dataset):
    """Wraps a dataset and yields whatever ``items`` holds (for odd bases)."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


class Tagged(Dataset):
    """Yields ``(index, item)``; forwards batches to the wrapped ``__getitems__`` (shuffled loaders)."""

    def __init__(self, ds: VAEAugmentedDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Any:
        return i, self.ds[i]

    def __getitems__(self, idx: list[int]) -> list[Any]:
        return list(zip(idx, self.ds.__getitems__(idx), strict=True))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, digits: Any) -> Any:
    """An ImageFolder over 8x8 grayscale PNGs of digits 0, 1 and 2 (two each)."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    root = tmp_path_factory.mktemp("digits_png")
    imgs = _u8(digits.x)[:, 0].numpy()
    for c in range(3):
        (root / str(c)).mkdir()
        for j, i in enumerate(np.nonzero(digits.y.numpy() == c)[0][:2]):
            Image.fromarray(imgs[i]).save(root / str(c) / f"{j}.png")
    return root, ImageFolder(str(root), transform=v2.Grayscale())


def make_base(kind: str, digits: Any, folder: Any, n: int = N_SMALL) -> tuple[Any, list[int] | None]:
    """A base dataset of ``kind`` with ``n`` digits samples, and its labels."""
    x, y = digits.x[:n], digits.y[:n]
    if kind == "tensor":
        return TensorDataset(x * 16, y), y.tolist()
    if kind == "uint8":
        return TensorDataset(_u8(x), y), y.tolist()
    if kind == "pil":
        return PILDigits(x, y), y.tolist()
    if kind == "numpy":
        return NumpyDigits(x, y), y.tolist()
    if kind == "unlabelled":
        return Unlabelled(x), None
    if kind == "folder":
        ds = folder[1]
        return ds, list(ds.targets)
    raise AssertionError(kind)


# ---------------------------------------------------------------- helpers


def assert_same(a: Any, b: Any) -> None:
    """Equal values and the same types (recursively), bit for bit."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for u, v in zip(a, b, strict=True):
            assert_same(u, v)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and a.device == b.device
        assert torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b)
    elif isinstance(a, Image.Image):
        assert a.mode == b.mode and a.size == b.size
        assert a.tobytes() == b.tobytes()
    else:
        assert a == b


def image_of(item: Any) -> Any:
    return item[0] if isinstance(item, tuple) else item


def pixels(img: Any) -> np.ndarray:
    """An image as a float64 array in its own value range."""
    if isinstance(img, torch.Tensor):
        return img.double().numpy()
    return np.asarray(img).astype(np.float64)


def assert_valid_like(v: Any, ref: Any) -> None:
    """``v`` is an image of the same type, dtype, shape and value range as ``ref``."""
    assert type(v) is type(ref)
    if isinstance(ref, Image.Image):
        assert v.mode == ref.mode and v.size == ref.size
        return
    assert v.dtype == ref.dtype and v.shape == ref.shape
    p = pixels(v)
    assert np.isfinite(p).all()
    if isinstance(ref, torch.Tensor) and ref.dtype.is_floating_point:
        assert p.min() >= 0.0 and p.max() <= 16.0  # the digits model's float range
        assert p.max() > 1.0  # read and written as 0..16, not 0..1


class CountCalls:
    """Wraps a backend's two stages and records every call: ``calls`` (variants made, ``generate_encoded``:
    every dataset variant, the prior samples too, is made there) and ``encoded`` (``encode_sources``)."""

    def __init__(self, gen: Any) -> None:
        self.inner, self.inner_encode = gen.generate_encoded, gen.encode_sources
        self.calls: list[dict[str, Any]] = []
        self.encoded: list[dict[str, Any]] = []

    def __call__(self, setting: Any, x: Any, enc: Any, y: Any, noise: Any, partner_mu: Any = None,
                 invariant: bool = False) -> Any:
        self.calls.append({"n": x.shape[0], "y": None if y is None else torch.as_tensor(y).clone(),
                           "mode": setting.mode, "form": setting.form, "noise": noise, "partner_mu": partner_mu,
                           "invariant": invariant})
        return self.inner(setting, x, enc, y, noise, partner_mu, invariant)

    def encode(self, x: Any, y: Any, *, delta: bool, invariant: bool = False) -> Any:
        self.encoded.append({"x": torch.as_tensor(x).clone(), "y": None if y is None else np.array(y),
                             "delta": delta, "invariant": invariant})
        return self.inner_encode(x, y, delta=delta, invariant=invariant)


def count_calls(ds: VAEAugmentedDataset, monkeypatch: pytest.MonkeyPatch) -> CountCalls:
    counter = CountCalls(ds.backend)
    monkeypatch.setattr(ds.backend, "generate_encoded", counter)
    monkeypatch.setattr(ds.backend, "encode_sources", counter.encode)
    return counter


# ---------------------------------------------------------------- layout and item types


@pytest.mark.parametrize("k", [0, 1, 3])
def test_length_is_n_times_one_plus_k(k: int, digits: Any, model: Any) -> None:
    base = TensorDataset(digits.x[:7] * 16, digits.y[:7])
    ds = VAEAugmentedDataset(base, model, variants_per_sample=k)
    assert len(ds) == 7 * (1 + k)
    assert ds.n_real == 7


@pytest.mark.parametrize("kind", KINDS)
def test_real_samples_are_returned_unchanged(kind: str, digits: Any, folder: Any, model: Any) -> None:
    base, _ = make_base(kind, digits, folder)
    ds = VAEAugmentedDataset(base, model, variants_per_sample=2)
    for i in range(len(base)):
        assert_same(ds[i], base[i])
    assert_same(ds.__getitems__(list(range(len(base)))), [base[i] for i in range(len(base))])


@pytest.mark.parametrize("kind", KINDS)
def test_variants_keep_label_type_and_range(kind: str, digits: Any, folder: Any, model: Any) -> None:
    base, labels = make_base(kind, digits, folder)
    n, k = len(base), 3
    ds = VAEAugmentedDataset(base, model, variants_per_sample=k)
    for i in range(n):
        real = base[i]
        vs = [ds[n + i * k + j] for j in range(k)]
        for v in vs:
            assert type(v) is type(real)
            if isinstance(real, tuple):
                assert len(v) == len(real)
                assert_same(v[1], real[1])  # i's label, same type
                assert labels is not None and v[1] == labels[i]
            assert_valid_like(image_of(v), image_of(real))
            assert not np.array_equal(pixels(image_of(v)), pixels(image_of(real)))  # not the source
        for a in range(k):
            for b in range(a + 1, k):  # j changes the noise
                assert not np.array_equal(pixels(image_of(vs[a])), pixels(image_of(vs[b])))


@pytest.mark.parametrize("kind", ["tensor", "uint8", "numpy", "pil"])
def test_variant_n_plus_ik_plus_j_is_made_from_sample_i(kind: str, digits: Any, folder: Any, model: Any) -> None:
    # with mode 'reconstruct' (no noise) every variant of i is i's reconstruction
    base, _ = make_base(kind, digits, folder)
    n, k = len(base), 2
    ds = VAEAugmentedDataset(base, model, variants_per_sample=k, mode="reconstruct", form="decode")
    def to_model(img):  # the codec for the image's type, as the dataset picks it
        kind = (TensorImages if isinstance(img, torch.Tensor) else NumpyImages if isinstance(img, np.ndarray)
                else PILImages)
        return torch.as_tensor(kind((1, 8, 8), model.value_range).to_model(img, None))

    xs = torch.cat([to_model(image_of(base[i])) for i in range(n)])
    rec = model.reconstruct(xs).numpy()  # (n, 1, 8, 8) in [0, 1]
    scale, tol = (16.0, 1e-3) if kind == "tensor" else (255.0, 1.01)
    for i in range(n):
        v0, v1 = (pixels(image_of(ds[n + i * k + j])) for j in range(k))
        assert np.array_equal(v0, v1)
        want = rec[i, 0] * scale
        np.testing.assert_allclose(v0.reshape(8, 8), want, atol=tol)
        others = [np.abs(rec[m, 0] * scale - v0.reshape(8, 8)).max() for m in range(n) if m != i]
        assert min(others) > tol


def test_return_is_synthetic_appends_the_flag(digits: Any, folder: Any, model: Any) -> None:
    for kind in ("tensor", "pil", "unlabelled"):
        base, _ = make_base(kind, digits, folder)
        n, k = len(base), 2
        plain = VAEAugmentedDataset(base, model, variants_per_sample=k)
        flagged = VAEAugmentedDataset(base, model, variants_per_sample=k, return_is_synthetic=True)
        for idx in range(len(plain)):
            a, b = plain[idx], flagged[idx]
            assert isinstance(b, tuple) and b[-1] is (idx >= n)
            assert_same(b[:-1], a if isinstance(a, tuple) else (a,))
        batch = flagged.__getitems__(list(range(len(flagged))))
        assert [item[-1] for item in batch] == [False] * n + [True] * (n * k)


# ---------------------------------------------------------------- determinism


@pytest.fixture(scope="module")
def det_base(digits: Any) -> TensorDataset:
    # 40 samples x 2 variants: 80 variants, more than one model chunk (64)
    return TensorDataset(digits.x[:40] * 16, digits.y[:40])


@pytest.fixture(scope="module")
def det_ref(det_base: TensorDataset, model: Any) -> list[Any]:
    """Every item of the determinism dataset, fetched one by one."""
    ds = VAEAugmentedDataset(det_base, model, variants_per_sample=2, seed=3)
    return [ds[i] for i in range(len(ds))]


def test_variants_are_a_function_of_seed_and_index(det_base: Any, det_ref: list[Any], model: Any) -> None:
    n = len(det_base)
    again = VAEAugmentedDataset(det_base, model, variants_per_sample=2, seed=3)
    assert_same(again.__getitems__(list(range(len(again)))), det_ref)
    other = VAEAugmentedDataset(det_base, model, variants_per_sample=2, seed=4)
    for idx in range(len(other)):
        if idx < n:
            assert_same(other[idx], det_ref[idx])
        else:
            assert not torch.equal(other[idx][0], det_ref[idx][0])
    # a model file gives the same variants as the model object
    gen = vaeaug.TorchBackend(model)
    via_gen = VAEAugmentedDataset(det_base, gen, variants_per_sample=2, seed=3)
    assert_same(via_gen[len(via_gen) - 1], det_ref[-1])


@pytest.mark.parametrize("batch", [1, 3, 7, 64, 65, 120])
def test_getitems_is_bit_identical_in_any_order_and_grouping(
    batch: int, det_base: Any, det_ref: list[Any], model: Any
) -> None:
    ds = VAEAugmentedDataset(det_base, model, variants_per_sample=2, seed=3)
    order = np.random.default_rng(batch).permutation(len(ds)).tolist()
    for lo in range(0, len(order), batch):
        idx = order[lo:lo + batch]
        for i, item in zip(idx, ds.__getitems__(idx), strict=True):
            assert_same(item, det_ref[i])
    # repeated and reversed indices in one batch
    idx = [119, 0, 119, 50, 41, 40, 50]
    assert_same(ds.__getitems__(idx), [det_ref[i] for i in idx])


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_is_bit_identical_to_one_by_one(
    workers: int, det_base: Any, det_ref: list[Any], model: Any
) -> None:
    ds = VAEAugmentedDataset(det_base, model, variants_per_sample=2, seed=3)
    # in order, batches of 16
    loader = DataLoader(ds, batch_size=16, num_workers=workers)
    seen = 0
    for xb, yb in loader:
        for r in range(len(xb)):
            assert torch.equal(xb[r], det_ref[seen][0]) and torch.equal(yb[r], det_ref[seen][1])
            seen += 1
    assert seen == len(ds)
    # shuffled by a sampler we control, batches of 7
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(workers)).tolist()
    loader = DataLoader(ds, batch_size=7, sampler=order, num_workers=workers)
    got = [(x, y) for xb, yb in loader for x, y in zip(xb, yb, strict=True)]
    assert len(got) == len(order)
    for i, (x, y) in zip(order, got, strict=True):
        assert torch.equal(x, det_ref[i][0]) and torch.equal(y, det_ref[i][1])
    # shuffle=True: a wrapper returns each item's index
    loader = DataLoader(Tagged(ds), batch_size=9, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(5 + workers))
    indices = []
    for ib, (xb, yb) in loader:
        for i, x, y in zip(ib.tolist(), xb, yb, strict=True):
            assert torch.equal(x, det_ref[i][0]) and torch.equal(y, det_ref[i][1])
            indices.append(i)
    assert sorted(indices) == list(range(len(ds))) and indices != list(range(len(ds)))


def test_resample_each_epoch(det_base: Any, det_ref: list[Any], model: Any) -> None:
    n = len(det_base)
    fixed = VAEAugmentedDataset(det_base, model, variants_per_sample=2, seed=3)
    fixed.set_epoch(1)
    assert_same(fixed.__getitems__(list(range(len(fixed)))), det_ref)

    ds = VAEAugmentedDataset(det_base, model, variants_per_sample=2, seed=3, resample_each_epoch=True)
    ep0 = ds.__getitems__(list(range(len(ds))))
    ds.set_epoch(1)
    ep1 = ds.__getitems__(list(range(len(ds))))
    for idx in range(len(ds)):
        if idx < n:
            assert_same(ep1[idx], ep0[idx])
        else:
            assert not torch.equal(ep1[idx][0], ep0[idx][0])
            assert torch.equal(ep1[idx][1], ep0[idx][1])
    # the epoch reaches freshly started workers, and one-by-one equals batched
    loader = DataLoader(ds, batch_size=32, num_workers=2)
    xs = torch.cat([xb for xb, _ in loader])
    assert torch.equal(xs, torch.stack([item[0] for item in ep1]))
    assert torch.equal(ds[len(ds) - 1][0], ep1[-1][0])
    ds.set_epoch(0)
    assert_same(ds.__getitems__(list(range(len(ds)))), ep0)
    with pytest.raises(ValueError, match="epoch"):
        ds.set_epoch(-1)


# ---------------------------------------------------------------- one generator call per batch


def test_getitems_makes_all_variants_in_one_generator_call(
    det_base: Any, model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = VAEAugmentedDataset(det_base, model, variants_per_sample=2, seed=3)
    counter = count_calls(ds, monkeypatch)
    ds.__getitems__(list(range(len(ds))))
    assert [c["n"] for c in counter.calls] == [80]
    ds.__getitems__([0, 1, 2])  # only real samples: no model call
    assert len(counter.calls) == 1
    ds.__getitems__([45, 3, 100, 46])
    assert [c["n"] for c in counter.calls] == [80, 3]


def test_dataloader_uses_getitems_one_call_per_batch(
    det_base: Any, det_ref: list[Any], model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = VAEAugmentedDataset(det_base, model, variants_per_sample=2, seed=3)
    counter = count_calls(ds, monkeypatch)
    order = np.random.default_rng(0).permutation(len(ds)).tolist()
    batches = [order[lo:lo + 10] for lo in range(0, len(order), 10)] + [[0, 1, 2]]
    loader = DataLoader(ds, batch_sampler=batches, num_workers=0)
    it = iter(loader)
    for b in batches:
        before = len(counter.calls)
        xb, _ = next(it)
        n_var = sum(i >= len(det_base) for i in b)
        assert len(counter.calls) - before == (1 if n_var else 0)
        if n_var:
            assert counter.calls[-1]["n"] == n_var
        assert torch.equal(xb, torch.stack([det_ref[i][0] for i in b]))


# ---------------------------------------------------------------- encode once: the cache of encodings


@pytest.mark.parametrize("kind", ["torch", "onnx"])
def test_each_source_is_encoded_once_and_the_cache_never_changes_a_variant(
    kind: str, det_base: Any, det_ref: list[Any], model: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = model if kind == "torch" else str(vaeaug.export_onnx(model, tmp_path / "m.onnx")["augmenter"])
    n = len(det_base)
    ds = VAEAugmentedDataset(det_base, src, variants_per_sample=2, seed=3)
    assert ds.cache is not None and ds.cache.capacity == n  # the default: every source, they fit in CACHE_BYTES
    counter = count_calls(ds, monkeypatch)
    order = np.random.default_rng(0).permutation(np.arange(n, len(ds))).tolist()
    for _ in range(2):  # two epochs in shuffled batches of 7
        for lo in range(0, len(order), 7):
            idx = order[lo:lo + 7]
            got = ds.__getitems__(idx)
            if kind == "torch":
                assert_same(got, [det_ref[i] for i in idx])
    encoded = torch.cat([c["x"] for c in counter.encoded])
    assert len(encoded) == n and all(c["delta"] and c["invariant"] for c in counter.encoded)  # one pass per source
    assert sum(c["n"] for c in counter.calls) == 2 * (len(ds) - n)  # one decoder pass per variant
    if kind == "onnx":  # the same variants with no cache at all, or one of 5 sources
        for size in (0, 5):
            other = VAEAugmentedDataset(det_base, src, variants_per_sample=2, seed=3, cache_sources=size)
            assert_same(other.__getitems__(order[:50]), ds.__getitems__(order[:50]))
            assert other.cache is not None and len(other.cache) == size


def test_cache_sources_bounds_the_kept_encodings(det_base: Any, model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    n = len(det_base)
    ds = VAEAugmentedDataset(det_base, model, variants_per_sample=2, seed=3, cache_sources=4)
    counter = count_calls(ds, monkeypatch)
    ds.__getitems__([n, n + 1, n + 2, n + 3])  # sources 0 and 1, two variants each
    assert len(ds.cache) == 2 and len(torch.cat([c["x"] for c in counter.encoded])) == 2  # type: ignore[arg-type]
    ds.__getitems__(list(range(n + 4, n + 16)))  # sources 2..7: the cache keeps the last 4
    assert len(ds.cache) == 4  # type: ignore[arg-type]
    ds.__getitems__([n + 14, n + 15])  # source 7: kept, nothing encoded
    assert len(torch.cat([c["x"] for c in counter.encoded])) == 8
    ds.__getitems__([n])  # source 0: dropped long ago, encoded again
    assert len(torch.cat([c["x"] for c in counter.encoded])) == 9
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="cache_sources"):
            VAEAugmentedDataset(det_base, model, cache_sources=bad)  # type: ignore[arg-type]


def test_a_backend_without_stages_makes_the_same_variants_in_one_call(det_base: Any, det_ref: list[Any],
                                                                      model: Any) -> None:
    class OneCall(vaeaug.Backend):  # a user's backend: generate only
        def __init__(self) -> None:
            self.inner = vaeaug.TorchBackend(model)
            self.config, self.value_range, self.class_names = model.config, model.value_range, model.class_names

        def generate(self, *args: Any) -> Any:
            return self.inner.generate(*args)

    ds = VAEAugmentedDataset(det_base, OneCall(), variants_per_sample=2, seed=3)
    assert ds.cache is None
    idx = [45, 3, 100, 46, 119]
    assert_same(ds.__getitems__(idx), [det_ref[i] for i in idx])


# ---------------------------------------------------------------- class balancing


def _imbalanced(digits: Any, kind: str) -> tuple[Any, list[int]]:
    """Digits of classes 3, 5 and 8, 30/10/5 of them, interleaved."""
    y = digits.y.numpy()
    idx = np.concatenate([np.nonzero(y == 3)[0][:30], np.nonzero(y == 5)[0][:10], np.nonzero(y == 8)[0][:5]])
    idx = idx[np.random.default_rng(0).permutation(len(idx))]
    x, yt = digits.x[idx], digits.y[idx]
    base = {"tensor": lambda: TensorDataset(x * 16, yt), "pil": lambda: PILDigits(x, yt),
            "numpy": lambda: NumpyDigits(x, yt)}[kind]()
    return base, yt.tolist()


@pytest.mark.parametrize("kind,k", [("tensor", 1), ("pil", 0), ("numpy", 2)])
def test_balance_classes_fills_smaller_classes_with_prior_samples(
    kind: str, k: int, digits: Any, cmodel: Any
) -> None:
    base, labels = _imbalanced(digits, kind)
    n = len(base)
    ds = VAEAugmentedDataset(base, cmodel, variants_per_sample=k, balance_classes=True, balance_with="prior")
    per_class = 30 * (1 + k)
    assert ds.class_counts == {3: per_class, 5: per_class, 8: per_class}
    n_extra = (30 - 10) * (1 + k) + (30 - 5) * (1 + k)
    assert len(ds) == n * (1 + k) + n_extra

    items = ds.__getitems__(list(range(len(ds))))
    # the labels actually served add up to class_counts
    served = collections.Counter(int(item[1]) for item in items)
    assert served == collections.Counter(ds.class_counts)
    extras = items[n * (1 + k):]
    assert collections.Counter(int(item[1]) for item in extras) == {5: 20 * (1 + k), 8: 25 * (1 + k)}
    real0 = base[0]
    for item in extras:
        assert type(item) is tuple and len(item) == len(real0)
        assert_valid_like(item[0], real0[0])
        assert type(item[1]) is type(real0[1])
        if isinstance(real0[1], torch.Tensor):
            assert item[1].dtype == real0[1].dtype and item[1].shape == real0[1].shape
    # the real part and its variants keep their labels
    for i in range(n):
        assert int(items[i][1]) == labels[i]
        for j in range(k):
            assert int(items[n + i * k + j][1]) == labels[i]
    # prior samples are new samples, not copies of each other
    flat = {pixels(item[0]).tobytes() for item in extras}
    assert len(flat) == len(extras)
    # one by one == batched; flagged as synthetic
    assert_same(ds[len(ds) - 1], items[-1])
    assert_same(ds[-n_extra], items[-n_extra])
    flagged = VAEAugmentedDataset(base, cmodel, variants_per_sample=k, balance_classes=True, balance_with="prior",
                                  return_is_synthetic=True)
    tail = flagged.__getitems__(list(range(n * (1 + k), len(ds))))
    assert all(item[-1] is True for item in tail)
    assert_same([item[:-1] for item in tail], extras)


@pytest.mark.parametrize("conditional", [False, True])
def test_balance_classes_fills_smaller_classes_with_variants_of_their_own_samples(
    conditional: bool, digits: Any, model: Any, cmodel: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default balancing: the small classes' own samples in turn, each as a variant with its label."""
    base, labels = _imbalanced(digits, "tensor")  # classes 3, 5, 8 with 30, 10, 5 samples
    n, k = len(base), 1
    ds = VAEAugmentedDataset(base, cmodel if conditional else model, variants_per_sample=k, balance_classes=True,
                             return_is_synthetic=True, seed=4)
    assert ds.class_counts == {3: 60, 5: 60, 8: 60} and len(ds) == n * 2 + 40 + 50
    counter = count_calls(ds, monkeypatch)
    extras = ds.__getitems__(list(range(2 * n, len(ds))))
    (call,) = counter.calls  # one batched model call with the dataset's own setting
    assert call["mode"] == ds.mode and call["n"] == 90
    assert collections.Counter(int(it[1]) for it in extras) == {5: 40, 8: 50}
    assert all(it[2] is True for it in extras)
    sources = {c: [i for i in range(n) if labels[i] == c] for c in (5, 8)}
    for j, it in enumerate(extras):  # extra j of a class is a variant of that class's sample j mod count
        c = int(it[1])
        first = 0 if c == 5 else 40
        src = sources[c][(j - first) % len(sources[c])]
        assert torch.equal(it[1], base[src][1])
        assert not torch.equal(it[0], base[src][0])  # a variant, not a copy
    again = VAEAugmentedDataset(base, cmodel if conditional else model, variants_per_sample=k, balance_classes=True,
                                return_is_synthetic=True, seed=4)
    assert_same(again[len(ds) - 1], extras[-1])  # one by one == batched, same seed same variant
    assert "extra=90 (variants)" in repr(ds)


def test_balanced_dataset_through_a_dataloader(digits: Any, cmodel: Any) -> None:
    base, _ = _imbalanced(digits, "tensor")
    ds = VAEAugmentedDataset(base, cmodel, variants_per_sample=1, balance_classes=True, seed=2)
    ref = [ds[i] for i in range(len(ds))]
    order = np.random.default_rng(1).permutation(len(ds)).tolist()
    loader = DataLoader(ds, batch_size=32, sampler=order)
    ys = []
    for b, (xb, yb) in enumerate(loader):
        for r, i in enumerate(order[b * 32:(b + 1) * 32]):
            assert torch.equal(xb[r], ref[i][0]) and torch.equal(yb[r], ref[i][1])
        ys.extend(yb.tolist())
    assert collections.Counter(ys) == {3: 60, 5: 60, 8: 60}


def test_balanced_base_that_is_already_balanced_adds_nothing(digits: Any, cmodel: Any) -> None:
    base = TensorDataset(digits.x[:20] * 16, digits.y[:20])  # two of each class
    ds = VAEAugmentedDataset(base, cmodel, variants_per_sample=1, balance_classes=True)
    assert len(ds) == 40
    assert ds.class_counts == {c: 4 for c in range(10)}


def test_conditional_variants_keep_labels(digits: Any, folder: Any, cmodel: Any) -> None:
    for kind in ("tensor", "numpy", "folder"):
        base, labels = make_base(kind, digits, folder)
        n, k = len(base), 2
        ds = VAEAugmentedDataset(base, cmodel, variants_per_sample=k, mode="prior")
        assert labels is not None
        assert ds.class_counts == {c: m * (1 + k) for c, m in collections.Counter(labels).items()}
        for i in range(n):
            for j in range(k):
                v = ds[n + i * k + j]
                assert_same(v[1], base[i][1])
                assert_valid_like(v[0], base[i][0])


def test_conditional_variants_are_made_with_the_source_label(
    digits: Any, cmodel: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = digits.x[:6] * 16
    a = VAEAugmentedDataset(TensorDataset(x, torch.tensor([0, 1, 2, 3, 4, 5])), cmodel, variants_per_sample=2)
    b = VAEAugmentedDataset(TensorDataset(x, torch.tensor([5, 4, 3, 2, 1, 0])), cmodel, variants_per_sample=2)
    counter = count_calls(a, monkeypatch)
    va = a.__getitems__(list(range(6, 18)))
    vb = b.__getitems__(list(range(6, 18)))
    assert counter.calls[0]["y"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    for u, v in zip(va, vb, strict=True):  # same images and noise, other label: other variant
        assert not torch.equal(u[0], v[0])


def test_balancing_prior_samples_are_generated_for_their_label(
    digits: Any, cmodel: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = _imbalanced(digits, "tensor")
    ds = VAEAugmentedDataset(base, cmodel, variants_per_sample=0, balance_classes=True, balance_with="prior")
    counter = count_calls(ds, monkeypatch)
    extras = ds.__getitems__(list(range(len(base), len(ds))))
    (call,) = counter.calls
    assert call["mode"] == "prior" and call["n"] == len(extras) == 45
    assert call["y"].tolist() == [int(item[1]) for item in extras]


# ---------------------------------------------------------------- interpolation partners


@pytest.mark.parametrize("conditional", [False, True])
def test_interpolate_picks_partners_of_the_same_class(
    conditional: bool, digits: Any, model: Any, cmodel: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    y = digits.y.numpy()
    idx = np.concatenate([np.nonzero(y == c)[0][:m] for c, m in ((0, 6), (1, 5), (7, 4), (9, 1))])
    x, yt = digits.x[idx], digits.y[idx]
    base = TensorDataset(x * 16, yt)
    n, k = len(base), 4
    ds = VAEAugmentedDataset(base, cmodel if conditional else model, variants_per_sample=k,
                             mode="interpolate", strength=2.0)
    counter = count_calls(ds, monkeypatch)
    items = ds.__getitems__(list(range(len(ds))))
    assert len(counter.calls) == 1
    partner = counter.calls[0]["partner_mu"]  # the partners' means: each one a base sample's
    assert partner is not None and partner.shape == (n * k, ds.backend.latent_dim)
    mus = ds.backend.encode_sources(x, yt.numpy() if conditional else None, delta=False, invariant=True).mu
    chosen: dict[int, set[int]] = collections.defaultdict(set)
    for i in range(n):
        for j in range(k):
            row = partner[i * k + j]
            matches = [b for b in range(n) if np.array_equal(row, mus[b])]
            assert matches, "the partner is not a base sample"
            (b,) = matches
            assert yt[b] == yt[i]
            if int(yt[i]) != 9:  # the only 9 has no other partner
                assert b != i
            chosen[int(yt[i])].add(b)
            v = items[n + i * k + j]
            assert torch.equal(v[1], yt[i])
            assert_valid_like(v[0], base[i][0])
    # partners are drawn, not fixed: several members of a class get picked
    assert all(len(chosen[c]) >= 3 for c in (0, 1, 7))
    # the same partners whatever the batching
    assert_same([ds[i] for i in range(n, len(ds))], items[n:])


def test_interpolate_with_an_unconditional_model_needs_labels(digits: Any, model: Any) -> None:
    with pytest.raises(ValueError, match=r"\(x, y\).*interpolate"):
        VAEAugmentedDataset(Unlabelled(digits.x[:4]), model, mode="interpolate")


# ---------------------------------------------------------------- indexing


def test_indexing_bounds_and_negative_indices(det_base: Any, det_ref: list[Any], model: Any) -> None:
    ds = VAEAugmentedDataset(det_base, model, variants_per_sample=2, seed=3)
    total = len(ds)
    assert_same(ds[-1], det_ref[total - 1])
    assert_same(ds[-total], det_ref[0])
    assert_same(ds[-81], det_ref[total - 81])  # the last real sample
    assert_same(ds.__getitems__([-1, -80, 5]), [det_ref[total - 1], det_ref[total - 80], det_ref[5]])
    assert_same(ds[np.int64(44)], det_ref[44])  # type: ignore[index]
    for bad in (total, total + 5, -total - 1):
        with pytest.raises(IndexError):
            ds[bad]
    with pytest.raises(IndexError):
        ds.__getitems__([0, total])
    # the old iteration protocol stops at the end
    small = VAEAugmentedDataset(TensorDataset(det_base.tensors[0][:3], det_base.tensors[1][:3]), model,
                                variants_per_sample=1)
    assert len(list(small)) == 6  # type: ignore[call-overload]


@pytest.mark.parametrize("bad", [1.5, 2.0, "3"])
def test_only_integers_index_it(bad: Any, digits: Any, model: Any) -> None:
    # like a Python sequence: no silent truncation of 1.5 to 1, no parsing of strings
    ds = VAEAugmentedDataset(TensorDataset(digits.x[:4] * 16, digits.y[:4]), model, variants_per_sample=1)
    with pytest.raises(TypeError):
        ds[bad]
    with pytest.raises(TypeError):
        ds.__getitems__([0, bad])
    assert_same(ds[torch.tensor(5)], ds[5])  # type: ignore[index]  # integer scalars are fine
    assert_same(ds[np.int32(-1)], ds[7])  # type: ignore[index]


# ---------------------------------------------------------------- errors at construction


def test_conditional_model_needs_labels(digits: Any, cmodel: Any) -> None:
    with pytest.raises(ValueError, match=r"\(x, y\).*class-conditional"):
        VAEAugmentedDataset(Unlabelled(digits.x[:4]), cmodel)


def test_wrong_image_size_names_resize(model: Any) -> None:
    base = TensorDataset(torch.zeros(3, 1, 16, 16), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"1x16x16.*1x8x8.*v2\.Resize\(\(8, 8\)\)"):
        VAEAugmentedDataset(base, model)
    with pytest.raises(ValueError, match=r"v2\.Resize"):
        VAEAugmentedDataset(Listed([(Image.new("L", (10, 8)), 0)]), model)


def test_wrong_channel_count(model: Any, folder: Any) -> None:
    base = TensorDataset(torch.zeros(3, 3, 8, 8), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"3x8x8.*1x8x8.*Grayscale"):
        VAEAugmentedDataset(base, model)
    from torchvision.datasets import ImageFolder

    rgb = ImageFolder(str(folder[0]))  # the default loader gives RGB images
    with pytest.raises(ValueError, match="Grayscale"):
        VAEAugmentedDataset(rgb, model)


def test_float_values_outside_the_model_range(digits: Any, model: Any) -> None:
    base = TensorDataset(digits.x[:3] * 255, digits.y[:3])
    with pytest.raises(ValueError, match=r"\[0, 16\]"):
        VAEAugmentedDataset(base, model)


def test_balance_classes_with_prior_samples_needs_a_conditional_model(digits: Any, model: Any) -> None:
    with pytest.raises(ValueError, match="balance_with='prior'.*class-conditional.*balance_with='variants'"):
        VAEAugmentedDataset(TensorDataset(digits.x[:4] * 16, digits.y[:4]), model, balance_classes=True,
                            balance_with="prior")
    with pytest.raises(ValueError, match="balance_with must be 'variants' or 'prior'; got 'gmm'"):
        VAEAugmentedDataset(TensorDataset(digits.x[:4] * 16, digits.y[:4]), model, balance_classes=True,
                            balance_with="gmm")


@pytest.mark.parametrize("k", [-1, 1.5, True, "2", None])
def test_bad_variants_per_sample(k: Any, digits: Any, model: Any) -> None:
    with pytest.raises(ValueError, match="variants_per_sample"):
        VAEAugmentedDataset(TensorDataset(digits.x[:4] * 16, digits.y[:4]), model, variants_per_sample=k)


@pytest.mark.parametrize("seed", [-1, 1.0, True, "0", None])
def test_bad_seed(seed: Any, digits: Any, model: Any) -> None:
    with pytest.raises(ValueError, match="seed"):
        VAEAugmentedDataset(TensorDataset(digits.x[:4] * 16, digits.y[:4]), model, seed=seed)


@pytest.mark.parametrize("base", [42, iter([1, 2]), None])
def test_base_must_be_a_map_style_dataset(base: Any, model: Any) -> None:
    with pytest.raises(TypeError, match="map-style dataset"):
        VAEAugmentedDataset(base, model)


def test_empty_base(model: Any) -> None:
    with pytest.raises(ValueError, match="empty"):
        VAEAugmentedDataset(TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)), model)


@pytest.mark.parametrize("bad", [10, -1])
def test_labels_outside_the_model_classes(bad: int, digits: Any, cmodel: Any) -> None:
    y = digits.y[:5].clone()
    y[3] = bad
    with pytest.raises(ValueError, match=rf"sample 3 is {bad}.*0\.\.9"):
        VAEAugmentedDataset(TensorDataset(digits.x[:5] * 16, y), cmodel)


def test_bad_mode_settings(digits: Any, model: Any) -> None:
    base = TensorDataset(digits.x[:4] * 16, digits.y[:4])
    with pytest.raises(ValueError, match="mode"):
        VAEAugmentedDataset(base, model, mode="warp")
    with pytest.raises(ValueError, match="class-conditional"):
        VAEAugmentedDataset(base, model, mode="prior")
    with pytest.raises(ValueError, match="strength"):
        VAEAugmentedDataset(base, model, strength=-1.0)


# ---------------------------------------------------------------- item structures beyond (x, int)


def test_tv_tensor_images_stay_tv_tensors(digits: Any, model: Any, cmodel: Any) -> None:
    from torchvision import tv_tensors

    x, y = digits.x[:8] * 16, [0, 0, 0, 0, 0, 1, 1, 2]
    items = [(tv_tensors.Image(x[i]), y[i]) for i in range(8)]
    ds = VAEAugmentedDataset(Listed(items), model, variants_per_sample=1)
    assert_same(ds[0], items[0])
    v = ds[8]
    assert type(v[0]) is tv_tensors.Image and v[0].dtype == torch.float32 and v[0].shape == (1, 8, 8)
    balanced = VAEAugmentedDataset(Listed(items), cmodel, balance_classes=True)
    assert len(balanced) == 8 * 2 + 4 * 2 + 3 * 2
    for item in balanced.__getitems__(list(range(8, len(balanced)))):
        assert type(item[0]) is tv_tensors.Image


def test_list_items_keep_their_type(digits: Any, model: Any) -> None:
    items = [[digits.x[i] * 16, int(digits.y[i])] for i in range(4)]
    ds = VAEAugmentedDataset(Listed(items), model, variants_per_sample=1)
    assert_same(ds[0], items[0])  # unchanged: still a list
    v = ds[4]
    assert type(v) is list and len(v) == 2 and v[1] == items[0][1]
    # with the flag appended the item stays a list as well
    flagged = VAEAugmentedDataset(Listed(items), model, variants_per_sample=1, return_is_synthetic=True)
    assert_same(flagged[1], [*items[1], False])
    assert type(flagged[5]) is list and flagged[5][-1] is True


def test_balancing_keeps_the_shape_of_tensor_labels(digits: Any, cmodel: Any) -> None:
    # labels of shape (1,), as many datasets give them; prior samples must match or batches fail
    ys = [0, 0, 0, 1]
    items = [(digits.x[i] * 16, torch.tensor([c])) for i, c in enumerate(ys)]
    ds = VAEAugmentedDataset(Listed(items), cmodel, variants_per_sample=0, balance_classes=True)
    assert len(ds) == 4 + 2
    for item in ds.__getitems__(list(range(len(ds)))):
        assert item[1].shape == (1,) and item[1].dtype == torch.int64
    xb, yb = next(iter(DataLoader(ds, batch_size=len(ds))))
    assert xb.shape == (6, 1, 8, 8) and yb.shape == (6, 1)
    assert sorted(yb[:, 0].tolist()) == [0, 0, 0, 1, 1, 1]


def test_balancing_with_items_of_more_than_two_fields(digits: Any, cmodel: Any) -> None:
    # base items (x, y, name): prior samples have no name of their own; the dataset must either
    # refuse at construction or give items of the same structure, never a shorter tuple that
    # default_collate cannot batch with the real ones
    ys = [0, 0, 0, 1]
    items = [(digits.x[i] * 16, c, f"sample{i}") for i, c in enumerate(ys)]
    with pytest.raises(ValueError, match="balance_with='prior' makes new .x, y. samples.*3 fields"):
        VAEAugmentedDataset(Listed(items), cmodel, variants_per_sample=0, balance_classes=True, balance_with="prior")
    ds = VAEAugmentedDataset(Listed(items), cmodel, variants_per_sample=0, balance_classes=True)  # variants
    assert len(ds) == 6
    for item in ds.__getitems__(list(range(len(ds)))):
        assert type(item) is tuple and len(item) == 3
    assert len(next(iter(DataLoader(ds, batch_size=6)))) == 3


def test_one_field_items_such_as_tensordataset_x_are_unlabelled() -> None:
    d = vaeaug.load_builtin("digits")
    model = vaeaug.fit(d.x[:200], epochs=1, progress=False)
    base = torch.utils.data.TensorDataset(d.x[:10])
    ds = VAEAugmentedDataset(base, model, variants_per_sample=1, return_is_synthetic=True)
    real, variant = ds[0], ds[10]
    assert isinstance(real, tuple) and len(real) == 2 and real[1] is False
    assert isinstance(variant, tuple) and len(variant) == 2 and variant[1] is True
    assert variant[0].shape == (1, 8, 8) and not torch.equal(variant[0], real[0])
