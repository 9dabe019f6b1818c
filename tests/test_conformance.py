"""One conformance suite over every consumer x backend (torch, ONNX).

Every consumer makes its variants with the one augmentation core (:class:`vaeaug.core.augment.Augmenter`),
so: the same keys give the same variants whichever consumer makes them; the input's type, dtype,
layout and value range are kept; ``p = 0`` returns the input object itself; each bad input gets the
same error class and message everywhere.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import PIL.Image
import pytest
import torch
from torchvision import tv_tensors

import vaeaug
from vaeaug.albumentations import VAEAugment as AlbAugment
from vaeaug.backends.factory import as_backend
from vaeaug.core.augment import Augmenter, class_members, same_class_partners, sample_keys
from vaeaug.core.rng import Stream, derive_keys, uniform
from vaeaug.core.settings import PARTNER_MODES

sys.path.insert(0, str(Path(__file__).parent))
from _helpers import digits_conditional_model, digits_model, digits_uint8  # noqa: E402

BACKENDS = ("torch", "onnx")
INF_MSG = r"strength must be a finite number >= 0; got inf"
NAN_MSG = r"strength must be a finite number >= 0; got nan"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """``{"uncond"|"cond"|"cond-fitaug": {"torch": .vae path, "onnx": .onnx path}}``; ``cond-fitaug`` is
    fit on classic-augmented batches (``fit(augment="classic")``)."""
    out = tmp_path_factory.mktemp("conformance")
    paths: dict[str, dict[str, str]] = {}
    fitaug = vaeaug.fit("digits", epochs=2, conditional=True, augment="classic", progress=False)
    for name, model in (("uncond", digits_model()), ("cond", digits_conditional_model()), ("cond-fitaug", fitaug)):
        model.save(out / f"{name}.vae")
        onnx = vaeaug.export_onnx(model, out / f"{name}.onnx")["augmenter"]
        paths[name] = {"torch": str(out / f"{name}.vae"), "onnx": str(onnx)}
    return paths


@pytest.fixture(scope="module")
def u8() -> np.ndarray:
    return digits_uint8()[0]


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return digits_uint8()[1]


def core(src: str, invariant: bool = False, **setting: Any) -> Augmenter:
    return Augmenter(as_backend(src), vaeaug.AugmentSetting(**{"p": 1.0, **setting}), invariant=invariant)


def call_key(seed: int) -> int:
    """The key ``VAEAugment(seed=None)`` draws for its next call after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return int(torch.randint(0, 2**63 - 1, (1,)).item())


def same(a: Any, b: Any) -> bool:
    if isinstance(a, PIL.Image.Image):
        return type(a) is type(b) and a.mode == b.mode and np.array_equal(np.asarray(a), np.asarray(b))
    if isinstance(a, torch.Tensor):
        return type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    return type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


# --------------------------------------------------------------------------- the same keys, the same variants


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_consumer_makes_the_cores_variant_for_the_same_key(backend: str, models: Any, u8: np.ndarray,
                                                                 tmp_path: Path) -> None:
    src = models["uncond"][backend]
    img = torch.from_numpy(u8[3])[None].clone()  # (1, 8, 8) uint8
    ref = core(src)
    # the torchvision transform: sample i of a call keyed k uses derive_keys(k, i)
    aug = vaeaug.VAEAugment(src, p=1.0)  # built first: loading a model draws from torch's generator
    k = call_key(7)
    torch.manual_seed(7)
    assert same(aug(img), ref(img, key=k))
    batch = torch.from_numpy(u8[:5])[:, None].clone()
    k = call_key(8)
    torch.manual_seed(8)
    assert same(aug(batch), ref(batch, key=k))
    # the albumentations adapter, on HWC numpy
    hwc = u8[3][..., None]
    assert same(AlbAugment(src, p=1.0).apply(hwc, key=12345), ref(hwc, key=12345))
    # the dataset: variant j of sample i keyed (seed, epoch, index)
    base = [(img, 0), (img, 1)]
    ds = vaeaug.VAEAugmentedDataset(base, src, variants_per_sample=1, seed=4)
    inv = core(src, invariant=True)
    assert same(ds[2][0], inv(img, keys=derive_keys(4, 0, np.array([2]))))
    # pre-generation: variant j of source i keyed (seed, i, j)
    out = tmp_path / "gen"
    vaeaug.pregenerate(u8[:3], src, out, variants_per_sample=2, seed=9, progress=False)
    got = vaeaug.GeneratedDataset(out)[2 * 3 + 2][0]  # source 2, variant 1 (slot 0 is the real image)
    want = inv(torch.from_numpy(u8[2])[None].clone(), keys=derive_keys(9, np.array([2]), np.array([1])))
    assert same(got, want)
    # the generator called directly, and the core on model space (the evaluation and tuning path)
    gen = as_backend(src)
    xm = (batch.float() / 255.0).numpy()
    keys = derive_keys(11, np.arange(5))
    np.testing.assert_array_equal(gen.variants(xm, keys=keys), ref(xm, keys=keys, codec=ref.codec("model")))
    np.testing.assert_array_equal(gen.variants(xm, seed=11), gen.variants(xm, keys=keys))
    from_u8 = ref(batch, keys=keys)
    assert torch.equal(from_u8, torch.from_numpy(np.rint(ref(xm, keys=keys, codec=ref.codec("model")) * 255)
                                                 .astype(np.uint8)).reshape(from_u8.shape))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["cond", "cond-fitaug"])
def test_conditional_consumers_agree_and_keep_the_label(backend: str, name: str, models: Any, u8: np.ndarray,
                                                        labels: np.ndarray) -> None:
    src = models[name][backend]
    ref = core(src)
    img, y = torch.from_numpy(u8[0])[None].clone(), int(labels[0])
    aug = vaeaug.VAEAugment(src, p=1.0)
    k = call_key(3)
    torch.manual_seed(3)
    out, label = aug(img, y)
    assert label == y and same(out, ref(img, y, key=k))
    torch.manual_seed(3)
    assert same(aug({"image": img, "label": y})["image"], out)  # the same through torchvision's own forward
    alb = AlbAugment(src, p=1.0)
    assert same(alb.apply(u8[0], key=5, label=y), ref(u8[0], y, key=5))
    assert not same(alb.apply(u8[0], key=5, label=(y + 1) % 10), alb.apply(u8[0], key=5, label=y))


# --------------------------------------------------------------------------- the partner modes

N_PARTNERED = 30  # the first 30 digits: three of each class, so the key picks one of two partners


def partner_picks(keys: np.ndarray, sources: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The same-class partner of each source (an index into the set labelled ``y``), picked by its key."""
    return same_class_partners(sources, y, class_members(y), uniform(keys, Stream.PARTNER)[:, 0])


def to_u8(xm: np.ndarray) -> np.ndarray:
    """Model space to uint8 0..255, as the consumers round it."""
    return np.rint(xm * np.float32(255.0)).astype(np.uint8)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", PARTNER_MODES)
def test_partner_modes_make_the_generators_variant_for_the_same_key_in_every_consumer(
        backend: str, mode: str, models: Any, u8: np.ndarray, labels: np.ndarray, tmp_path: Path) -> None:
    src, n = models["uncond"][backend], N_PARTNERED
    x8, y = u8[:n], labels[:n].astype(np.int64)
    xm = x8[:, None].astype(np.float32) / np.float32(255.0)
    gen = as_backend(src)

    def want(sources: np.ndarray, keys: np.ndarray, invariant: bool = False) -> np.ndarray:
        """The generator called directly, with each source's partner picked by its key from the set."""
        picks = partner_picks(keys, sources, y)
        assert (y[picks] == y[sources]).all() and (picks != sources).all()
        return gen.variants(xm[sources], mode=mode, strength=2.0, keys=keys, partner=xm[picks],
                            invariant=invariant)

    # the core on model space (the evaluation and tuning path): partners from the batch, by key
    ref = core(src, mode=mode, strength=2.0)
    keys = derive_keys(11, np.arange(n))
    made = ref(xm, y, keys=keys, codec=ref.codec("model"))
    np.testing.assert_array_equal(made, want(np.arange(n), keys))
    assert np.abs(made - xm).max() > 0.01  # a real move, not the input back
    # the torchvision transform on a labelled batch: sample i of a call keyed k uses derive_keys(k, i)
    batch = torch.from_numpy(x8)[:, None].clone()
    aug = vaeaug.VAEAugment(src, p=1.0, mode=mode, strength=2.0)
    k = call_key(8)
    torch.manual_seed(8)
    out, out_y = aug(batch, torch.from_numpy(y))
    assert torch.equal(out_y, torch.from_numpy(y))
    assert same(out, torch.from_numpy(to_u8(want(np.arange(n), sample_keys(k, n)))))
    assert same(out, ref(batch, y, key=k))
    # the dataset: variant j of sample i keyed (seed, epoch, index), its partner picked from the whole dataset
    base = [(torch.from_numpy(x8[i])[None].clone(), int(y[i])) for i in range(n)]
    ds = vaeaug.VAEAugmentedDataset(base, src, variants_per_sample=2, seed=4, mode=mode, strength=2.0)
    idx = np.arange(n, 3 * n)
    items = ds.__getitems__(idx.tolist())
    got = torch.stack([item[0] for item in items])
    assert [item[1] for item in items] == y[(idx - n) // 2].tolist()
    assert same(got, torch.from_numpy(to_u8(want((idx - n) // 2, derive_keys(4, 0, idx), invariant=True))))
    assert same(ds[int(idx[7])][0], got[7])  # alone or in a batch: the same partner, the same variant
    # pre-generation: variant j of source i keyed (seed, i, j), its partner picked from the whole set
    out_dir = tmp_path / "gen"
    vaeaug.pregenerate(x8, src, out_dir, y=y, variants_per_sample=2, seed=9, mode=mode, strength=2.0,
                       progress=False)
    sources, variant = np.repeat(np.arange(n), 2), np.tile(np.arange(2), n)
    stored = vaeaug.GeneratedDataset(out_dir)
    got = torch.stack([stored[int(3 * i + 1 + j)][0] for i, j in zip(sources, variant, strict=True)])
    assert same(got, torch.from_numpy(to_u8(want(sources, derive_keys(9, sources, variant), invariant=True))))
    # albumentations (one image per call) has no partner: refused when built, naming the mode
    with pytest.raises(ValueError, match=f"mode '{mode}' needs a partner image of the same class"):
        AlbAugment(src, p=1.0, mode=mode)
    # nor does a single image, nor a batch without labels: the fix is named
    with pytest.raises(ValueError, match=f"mode '{mode}' needs a partner image.*got a single image.*on a batch"):
        aug(batch[0], int(y[0]))
    with pytest.raises(ValueError, match=f"mode '{mode}' moves each image relative to a partner.*needs the labels"):
        aug(batch)


@pytest.mark.parametrize("mode", PARTNER_MODES)
def test_partner_modes_agree_across_backends(mode: str, models: Any, u8: np.ndarray, labels: np.ndarray) -> None:
    n = N_PARTNERED
    x8, y = u8[:n], labels[:n].astype(np.int64)
    xm = x8[:, None].astype(np.float32) / np.float32(255.0)
    keys = derive_keys(21, np.arange(n))
    for name in ("uncond", "cond", "cond-fitaug"):
        for invariant in (False, True):
            a, b = (core(models[name][backend], invariant=invariant, mode=mode, strength=2.0) for backend in BACKENDS)
            za, zb = a(xm, y, keys=keys, codec=a.codec("model")), b(xm, y, keys=keys, codec=b.codec("model"))
            assert np.abs(za - zb).max() <= 1e-4, (name, invariant)
            assert np.abs(za - xm).max() > 0.01  # a real move
        batch = torch.from_numpy(x8)[:, None].clone()
        ua, ub = (core(models[name][backend], mode=mode, strength=2.0)(batch, y, key=3).numpy().astype(int)
                  for backend in BACKENDS)
        assert np.abs(ua - ub).max() <= 1 and (ua != ub).mean() < 0.01, name  # uint8: at most one level, rarely


def test_extrapolate_mirrors_interpolate_for_the_same_keys(models: Any, u8: np.ndarray, labels: np.ndarray) -> None:
    """The same keys pick the same partner and t: the two latent points mirror each other through mu."""
    src, n = models["uncond"]["torch"], N_PARTNERED
    xm = u8[:n, None].astype(np.float32) / np.float32(255.0)
    y = labels[:n].astype(np.int64)
    keys = derive_keys(5, np.arange(n))
    inter, extra, rec = (core(src, mode=mode, strength=2.0, form="decode")(xm, y, keys=keys, codec=core(src).codec(
        "model")) for mode in ("interpolate", "extrapolate", "reconstruct"))
    assert not np.array_equal(inter, extra)
    # decoded, the two land on either side of the reconstruction: their mean is close to it, their gap is not
    assert np.abs((inter + extra) / 2 - rec).mean() < 0.5 * np.abs(extra - inter).mean()


# --------------------------------------------------------------------------- types, dtypes, layouts, ranges


def inputs(u8: np.ndarray) -> dict[str, Any]:
    f16 = u8[:4].astype(np.float64) * (16.0 / 255.0)  # the digits model reads floats in 0..16
    return {
        "pil": PIL.Image.fromarray(u8[0]),
        "tensor_u8": torch.from_numpy(u8[0])[None].clone(),
        "tensor_float": torch.from_numpy(f16[0])[None].float(),
        "tv_image": tv_tensors.Image(torch.from_numpy(u8[0])[None].clone()),
        "numpy_hw": u8[0].copy(),
        "numpy_hwc_float": f16[0][..., None].copy(),
        "batch_u8": torch.from_numpy(u8[:4])[:, None].clone(),
        "numpy_nhwc": u8[:4, :, :, None].copy(),
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", list(inputs(np.zeros((4, 8, 8), np.uint8))))
def test_type_dtype_layout_and_range_are_kept(backend: str, kind: str, models: Any, u8: np.ndarray) -> None:
    src = models["uncond"][backend]
    x = inputs(u8)[kind]
    for out in (vaeaug.VAEAugment(src, p=1.0)(x), core(src)(x, key=1)):
        assert type(out) is type(x)
        if isinstance(x, PIL.Image.Image):
            assert out.mode == x.mode and out.size == x.size
            continue
        assert out.dtype == x.dtype and tuple(out.shape) == tuple(x.shape)
        arr = np.asarray(out.as_subclass(torch.Tensor) if isinstance(out, torch.Tensor) else out, dtype=np.float64)
        high = 255.0 if "float" not in kind else 16.0
        assert arr.min() >= 0.0 and arr.max() <= high and not same(out, x)  # a variant, in the input's range
    if isinstance(x, np.ndarray) and x.ndim <= 3 and "nhwc" not in kind:  # albumentations: one HWC image
        out = A.Compose([AlbAugment(src, p=1.0)], seed=0)(image=x)["image"]
        assert type(out) is np.ndarray and out.dtype == x.dtype and out.shape == x.shape


@pytest.mark.parametrize("backend", BACKENDS)
def test_p0_returns_the_input_object_itself(backend: str, models: Any, u8: np.ndarray) -> None:
    src = models["uncond"][backend]
    for x in inputs(u8).values():
        assert vaeaug.VAEAugment(src, p=0.0)(x) is x
        assert core(src, p=0.0)(x, key=3) is x
    img = u8[0][..., None]
    assert A.Compose([AlbAugment(src, p=0.0)], seed=0)(image=img)["image"] is img
    half = core(src, p=0.5)
    img = torch.from_numpy(u8[0])[None].clone()
    outs = [half(img, key=k) for k in range(40)]
    kept = sum(o is img for o in outs)
    assert 8 < kept < 32 and all(o is img or not torch.equal(o, img) for o in outs)  # not chosen: the input itself
    batch = torch.from_numpy(u8[:64])[:, None].clone()
    out = half(batch, key=0)
    same_rows = [i for i in range(64) if torch.equal(out[i], batch[i])]
    assert out is not batch and 10 < len(same_rows) < 54  # a new batch, the unchosen rows the input's own


# --------------------------------------------------------------------------- bad input, the same error everywhere


def _every_consumer(src: str, **setting: Any) -> list[Any]:
    base = [(torch.zeros(1, 8, 8, dtype=torch.uint8), 0)]
    return [
        lambda: vaeaug.VAEAugment(src, **setting),
        lambda: AlbAugment(src, **setting),
        lambda: vaeaug.VAEAugmentedDataset(base, src, **{k: v for k, v in setting.items() if k != "p"}),
        lambda: Augmenter(as_backend(src), vaeaug.AugmentSetting(**setting)),
        lambda: as_backend(src).variants(np.zeros((1, 1, 8, 8), np.float32), seed=0, **setting),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value, message", [(float("inf"), INF_MSG), (float("nan"), NAN_MSG)])
def test_every_numeric_setting_must_be_finite(backend: str, value: float, message: str, models: Any,
                                             tmp_path: Path) -> None:
    src = models["uncond"][backend]
    for make in _every_consumer(src, strength=value):
        with pytest.raises(ValueError, match=message):
            make()
    with pytest.raises(ValueError, match=message):
        vaeaug.pregenerate("digits", src, tmp_path / "gen", strength=value, progress=False)
    assert not (tmp_path / "gen").exists()
    with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\]; got inf"):
        vaeaug.VAEAugment(src, p=float("inf"))


def test_a_stored_setting_must_be_finite_too(tmp_path: Path) -> None:
    model = digits_model()
    stored = model.augment
    try:
        model.augment = {"mode": "isotropic", "strength": float("inf"), "form": "delta", "p": 0.5}
        with pytest.raises(ValueError, match=INF_MSG):
            vaeaug.VAEAugment(model)
        model.save(tmp_path / "m.vae")  # a file that holds it is refused when read
        with pytest.raises(ValueError, match=INF_MSG):
            vaeaug.load(tmp_path / "m.vae")
    finally:
        model.augment = stored


def test_cli_generate_refuses_an_infinite_strength(tmp_path: Path) -> None:
    model = tmp_path / "m.vae"
    digits_model().save(model)
    proc = subprocess.run([sys.executable, "-m", "vaeaug", "generate", "--model", str(model), "--data", "digits",
                           "--out", str(tmp_path / "gen"), "--strength", "inf"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "strength must be a finite number >= 0; got inf" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / "gen").exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_empty_batch_comes_back_as_it_is(backend: str, models: Any) -> None:
    src = models["uncond"][backend]
    empty = torch.zeros(0, 1, 8, 8, dtype=torch.uint8)
    assert vaeaug.VAEAugment(src, p=1.0)(empty) is empty
    assert core(src)(empty, key=0) is empty
    stack = np.zeros((0, 8, 8), np.uint8)
    alb = AlbAugment(src, p=1.0)
    assert alb.apply_to_images(stack, key=0) is stack
    assert alb.apply_to_images([], key=0) == []
    assert alb(images=stack)["images"] is stack and alb(images=[])["images"] == []  # (A.Compose itself refuses it)
    assert as_backend(src).variants(np.zeros((0, 1, 8, 8), np.float32), seed=0).shape == (0, 1, 8, 8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nothing_that_can_be_an_image_is_a_type_error(backend: str, models: Any) -> None:
    msg = r"expected an image: a PIL image, a tensor \(C, H, W\) or \(N, C, H, W\), or a numpy \(H, W\[, C\]\) array"
    for src in (models["uncond"][backend], models["cond"][backend]):
        aug, ref, alb = vaeaug.VAEAugment(src, p=1.0), core(src), AlbAugment(src, p=1.0)
        for thing in (None, "an image", torch.zeros(5), 3):
            with pytest.raises(TypeError, match=msg + ".*got"):
                aug(thing)
            if not isinstance(thing, torch.Tensor):
                with pytest.raises(TypeError, match=msg):
                    ref(thing, 0, key=0)
                with pytest.raises(TypeError, match=msg):
                    alb.apply(thing, key=0, label=0)
    # leaves of a larger sample that are not images still pass through
    aug = vaeaug.VAEAugment(models["uncond"][backend], p=1.0)
    sample = {"image": torch.zeros(1, 8, 8, dtype=torch.uint8), "name": "a", "score": 0.5, "none": None}
    out = aug(sample)
    assert out["name"] == "a" and out["score"] == 0.5 and out["none"] is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("label, error, message", [
    (3.0, TypeError, r"labels must be integers; got float 3\.0"),
    (True, TypeError, r"labels must be integers; got bool True"),
    ("3", TypeError, r"labels must be integers; got str '3'"),
    (np.array([[3]]), ValueError, r"labels must be one integer per image, shape \(1,\); got shape \(1, 1\)"),
    (2**70, ValueError, r"label 1180591620717411303424 does not fit in int64"),
    (10, ValueError, r"labels must be in 0\.\.9 for this model; the label of sample 0 is 10"),
])
def test_a_bad_label_gets_the_same_error_everywhere(backend: str, label: Any, error: type, message: str,
                                                    models: Any, u8: np.ndarray) -> None:
    src = models["cond"][backend]
    img = torch.from_numpy(u8[0])[None].clone()
    calls = [
        lambda: vaeaug.VAEAugment(src, p=1.0)(img, label),
        lambda: vaeaug.VAEAugment(src, p=1.0)({"image": img, "label": label}),
        lambda: AlbAugment(src, p=1.0).apply(u8[0], key=0, label=label),
        lambda: A.Compose([AlbAugment(src, p=1.0)], seed=0)(image=u8[0], label=label),
        lambda: core(src)(img, label, key=0),
        lambda: as_backend(src).variants(np.zeros((1, 1, 8, 8), np.float32), label, seed=0),
        lambda: vaeaug.VAEAugmentedDataset([(img, label)], src),
    ]
    for call in calls:
        with pytest.raises(error, match=message):
            call()


def test_numpy_and_pil_on_the_onnx_backend_never_touch_torch(models: Any, u8: np.ndarray, tmp_path: Path) -> None:
    np.save(tmp_path / "img.npy", u8[0])
    code = f"""
import sys
sys.modules["torch"] = None  # any import of torch now fails
import numpy as np, PIL.Image
from vaeaug import AugmentSetting, OnnxBackend
from vaeaug.core.augment import Augmenter
img = np.load({str(tmp_path / "img.npy")!r})
aug = Augmenter(OnnxBackend({models["cond"]["onnx"]!r}), AugmentSetting(p=1.0))
outs = [aug(img, 3, key=1), aug(img[..., None], 3, key=1), aug(PIL.Image.fromarray(img), 3, key=1),
        aug(np.stack([img] * 4)[..., None], [1, 2, 3, 4], key=2), aug(img, 3, key=1)]
assert outs[0].shape == (8, 8) and outs[1].shape == (8, 8, 1) and outs[2].size == (8, 8)
assert np.array_equal(outs[0], outs[1][..., 0]) and np.array_equal(outs[0], np.asarray(outs[2]))
assert np.array_equal(outs[0], outs[4]) and not np.array_equal(outs[0], img)
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
