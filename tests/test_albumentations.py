"""The albumentations adapter: real models, real ``A.Compose`` pipelines, real DataLoader workers.

The worker tests also pin down the upstream behaviour the adapter works around: albumentations
2.0.8's ``Compose`` makes its random choices from state created once in the parent process, so
a plain albumentations transform (``GaussNoise``, ``HorizontalFlip``'s coin) repeats the same
choices in every worker and every epoch, while ``VAEAugment`` differs.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import vaeaug

A = pytest.importorskip("albumentations")

from vaeaug.albumentations import ALBUMENTATIONS_LINE, VAEAugment  # noqa: E402

# This file runs twice in `make test`: here on the main environment's albumentations 2.0.8, and in a
# subprocess (tests/test_albumentationsx.py) on AlbumentationsX, installed by `make albumentationsx`
# into its own folder. VAEAUG_EXPECT_ALBUMENTATIONS says which line that run must find.
ORIGINAL = ALBUMENTATIONS_LINE == "albumentations"


def test_the_expected_albumentations_line_is_loaded() -> None:
    expected = os.environ.get("VAEAUG_EXPECT_ALBUMENTATIONS", "albumentations")
    assert ALBUMENTATIONS_LINE == expected, (ALBUMENTATIONS_LINE, A.__file__)
    assert A.__version__.startswith("2.0.") == ORIGINAL

# Set in the parent by the worker tests: a spawned worker re-imports this module and sees it empty.
_PARENT_MARK: list[str] = []

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An unconditional model fit on digits (floats read as 0..16, uint8 as 0..255)."""
    path = tmp_path_factory.mktemp("albu") / "m.vae"
    vaeaug.fit("digits", epochs=2, progress=False, device="cpu").save(path)
    return path


@pytest.fixture(scope="module")
def cond_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("albu_cond") / "c.vae"
    vaeaug.fit("digits", epochs=2, progress=False, conditional=True, device="cpu").save(path)
    return path


@pytest.fixture(scope="module")
def digit_f32() -> np.ndarray:
    """One digit, float32 (8, 8) in 0..16."""
    return load_digits().images[0].astype(np.float32)


@pytest.fixture(scope="module")
def digit_u8(digit_f32: np.ndarray) -> np.ndarray:
    """The same digit as uint8 (8, 8) in 0..255."""
    return np.round(digit_f32 * 255.0 / 16.0).astype(np.uint8)


def run(pipeline: Any, **data: Any) -> np.ndarray:
    return pipeline(**data)["image"]


# --------------------------------------------------------------------------- images in, images out


@pytest.mark.parametrize("kind", ["u8_hwc", "f32_hwc", "u8_hw", "f32_hw", "f64_hwc"])
def test_in_compose_dtype_shape_and_range_are_kept(kind: str, model_path: Path, digit_u8: np.ndarray,
                                                   digit_f32: np.ndarray) -> None:
    img = {"u8_hwc": digit_u8[..., None], "f32_hwc": digit_f32[..., None], "u8_hw": digit_u8,
           "f32_hw": digit_f32, "f64_hwc": digit_f32[..., None].astype(np.float64)}[kind]
    pipeline = A.Compose([A.HorizontalFlip(p=0.5), VAEAugment(model_path, p=1.0)], seed=0)
    for _ in range(4):
        out = run(pipeline, image=img)
        assert out.shape == img.shape and out.dtype == img.dtype
        assert not np.array_equal(out, img) and not np.array_equal(out, img[:, ::-1])
        if img.dtype != np.uint8:
            assert np.isfinite(out).all() and 0.0 <= out.min() and out.max() <= 16.0
            assert out.max() > 1.0  # read and written in the digits' 0..16 range, not 0..1


def test_same_variant_as_the_torchvision_transform_for_the_same_key(model_path: Path, digit_u8: np.ndarray,
                                                                     digit_f32: np.ndarray) -> None:
    from vaeaug.core.augment import Augmenter

    aug = VAEAugment(model_path, p=1.0, mode="isotropic", form="delta", strength=0.7)
    core = Augmenter(aug.backend, vaeaug.AugmentSetting("isotropic", 0.7, "delta", 1.0))  # what the v2 one runs
    for img in (digit_u8, digit_u8[..., None], digit_f32, digit_f32[..., None]):
        for key in (0, 12345, 2**62 + 7):
            np.testing.assert_array_equal(aug.apply(img, key=key), core(img, key=key))
    # images=: image i uses derive_keys(key, i), as a torchvision batch does
    stack = np.stack([digit_u8] * 3)[..., None]
    np.testing.assert_array_equal(aug.apply_to_images(stack, key=99), core(stack, key=99))


def test_images_target_gives_each_image_its_own_variant(model_path: Path, digit_u8: np.ndarray) -> None:
    pipeline = A.Compose([VAEAugment(model_path, p=1.0)], seed=0)
    out = pipeline(images=[digit_u8] * 3)["images"]
    assert isinstance(out, list) and len(out) == 3
    assert all(o.shape == (8, 8) and o.dtype == np.uint8 for o in out)
    assert not np.array_equal(out[0], out[1]) and not np.array_equal(out[1], out[2])
    alone = VAEAugment(model_path, p=1.0)(images=[digit_u8] * 2)["images"]  # outside Compose: a list too
    assert isinstance(alone, list) and len(alone) == 2 and not np.array_equal(alone[0], alone[1])
    stacked = VAEAugment(model_path, p=1.0)(images=np.stack([digit_u8] * 2))["images"]  # a stack stays a stack
    assert stacked.shape == (2, 8, 8) and not np.array_equal(stacked[0], stacked[1])


def test_p_zero_leaves_the_image_unchanged_and_loads_nothing(model_path: Path, digit_u8: np.ndarray) -> None:
    aug = VAEAugment(model_path, p=0.0)
    pipeline = A.Compose([aug], seed=0)
    for img in (digit_u8, digit_u8[..., None], digit_u8.astype(np.float32) / 16.0):
        out = run(pipeline, image=img)
        np.testing.assert_array_equal(out, img)
    assert aug._generator is None  # never needed, never loaded
    assert aug.get_applied_params() == {}
    # force_apply overrides p, as for every albumentations transform
    assert not np.array_equal(aug(image=digit_u8, force_apply=True)["image"], digit_u8)


def test_p_is_a_coin_per_call(model_path: Path, digit_u8: np.ndarray) -> None:
    aug = VAEAugment(model_path, p=0.5)
    pipeline = A.Compose([aug], seed=0)
    changed = [not np.array_equal(run(pipeline, image=digit_u8), digit_u8) for _ in range(200)]
    assert 70 < sum(changed) < 130
    assert aug.p == 0.5 and A.to_dict(aug)["transform"]["p"] == 0.5


# --------------------------------------------------------------------------- labels


def test_conditional_model_reads_the_label_key(cond_path: Path, digit_u8: np.ndarray) -> None:
    pipeline = A.Compose([A.HorizontalFlip(p=0.5), VAEAugment(cond_path, p=1.0)], seed=0)
    res = pipeline(image=digit_u8, label=3)
    assert res["label"] == 3 and res["image"].shape == (8, 8) and res["image"].dtype == np.uint8
    # the label matters: the same key with another class gives another variant
    aug = VAEAugment(cond_path, p=1.0)
    assert not np.array_equal(aug.apply(digit_u8, key=5, label=3), aug.apply(digit_u8, key=5, label=7))
    np.testing.assert_array_equal(aug.apply(digit_u8, key=5, label=np.int64(3)),
                                  aug.apply(digit_u8, key=5, label=torch.tensor(3)))
    # prior mode makes a new sample of the label's class; strict Compose accepts the label key
    strict = A.Compose([VAEAugment(cond_path, p=1.0, mode="prior")], strict=True, seed=0)
    assert strict(image=digit_u8, label=0)["image"].shape == (8, 8)
    # images=: one label for all, or one per image
    # (a stack: AlbumentationsX 2.5.1's own HorizontalFlip fails on a list of images whenever it applies)
    stack = np.stack([digit_u8] * 3)
    for label in (2, [1, 2, 3], np.array([1, 2, 3])):
        assert pipeline(images=stack, label=label)["images"].shape == (3, 8, 8)


def test_missing_or_bad_label_is_a_clear_error(cond_path: Path, digit_u8: np.ndarray) -> None:
    pipeline = A.Compose([VAEAugment(cond_path, p=1.0)], seed=0)
    with pytest.raises(ValueError, match=r"class-conditional \(10 classes\).*label=3"):
        pipeline(image=digit_u8)
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.9"):
        pipeline(image=digit_u8, label=10)
    with pytest.raises(TypeError, match=r"labels must be integers; got float 2\.0"):
        pipeline(image=digit_u8, label=2.0)
    with pytest.raises(ValueError, match="found 2 labels for 3 images"):
        pipeline(images=[digit_u8] * 3, label=[1, 2])


def test_unconditional_model_ignores_the_label(model_path: Path, digit_u8: np.ndarray) -> None:
    aug = VAEAugment(model_path, p=1.0)
    np.testing.assert_array_equal(aug.apply(digit_u8, key=1, label=4), aug.apply(digit_u8, key=1))


# --------------------------------------------------------------------------- arguments and inputs


def test_bad_arguments_are_value_errors(model_path: Path) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"p": 1.5}, "p must be a probability"),
        ({"p": True}, "p must be a probability"),
        ({"seed": -1}, "seed must be None or an integer"),
        ({"seed": 1.5}, "seed must be None or an integer"),
        ({"mode": "bogus"}, "mode must be one of"),
        ({"form": "blend"}, "form must be one of"),
        ({"strength": -1.0}, "strength must be a finite number"),
        ({"mode": "prior"}, "needs a class-conditional model"),
        ({"mode": "interpolate"}, "needs a partner image"),
        ({"device": 3}, "device must be None"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            VAEAugment(model_path, **kwargs)
    with pytest.raises(TypeError, match="model must be"):
        VAEAugment(42)
    with pytest.raises(FileNotFoundError, match="no such model file"):
        VAEAugment(model_path.parent / "missing.vae")
    with pytest.raises(ValueError, match="fit on vectors"):
        VAEAugment(vaeaug.VAE(vaeaug.VAEConfig(input_shape=(20,))))
    gone: dict[str, Any] = {"always_apply": True}
    with pytest.raises(TypeError):
        VAEAugment(model_path, **gone)  # always_apply is gone in albumentations 2.x; p=1.0 instead


def test_bad_images_are_clear_errors(model_path: Path, digit_u8: np.ndarray) -> None:
    aug = VAEAugment(model_path, p=1.0)
    with pytest.raises(ValueError, match=r"16x16x1.*expects 8x8x1; resize it with A\.Resize\(8, 8\)"):
        aug(image=np.zeros((16, 16), np.uint8))
    with pytest.raises(ValueError, match="make it grayscale"):
        aug(image=np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"span \[0, 239\].*reads floats in \[0, 16\]; nothing is clipped"):
        aug(image=digit_u8.astype(np.float32))
    with pytest.raises(ValueError, match="NaN or Inf"):
        aug(image=np.full((8, 8), np.nan, np.float32))
    with pytest.raises(TypeError, match="uint8 or floating-point"):
        aug(image=digit_u8.astype(np.int32))


# --------------------------------------------------------------------------- serialization, pickling


def test_to_dict_from_dict_and_json_round_trip(model_path: Path, digit_u8: np.ndarray, tmp_path: Path) -> None:
    def pipeline_of(aug: Any) -> Any:
        return A.Compose([A.HorizontalFlip(p=0.5), aug, A.GaussNoise(p=0.5)], seed=0)

    original = pipeline_of(VAEAugment(model_path, p=0.7, strength=0.5, mode="isotropic", form="delta", seed=11))
    d = A.to_dict(original)
    entry = d["transform"]["transforms"][1]
    assert entry == {"__class_fullname__": "vaeaug.albumentations.VAEAugment", "p": 0.7, "model": str(model_path),
                     "strength": 0.5, "mode": "isotropic", "form": "delta", "seed": 11, "device": None}
    restored = A.from_dict(d)
    A.save(original, tmp_path / "pipeline.json")
    assert json.loads((tmp_path / "pipeline.json").read_text()) == json.loads(json.dumps(d))
    loaded = A.load(tmp_path / "pipeline.json")
    for other in (restored, loaded):
        assert A.to_dict(other) == d and isinstance(other[1], VAEAugment)
        assert other[1].vae_seed == 11 and other[1]._generator is None  # lazy: loads on first use
        other.set_random_seed(0)  # albumentations does not serialize Compose(seed=...)
    for _ in range(5):
        want = run(original, image=digit_u8)
        np.testing.assert_array_equal(run(restored, image=digit_u8), want)
        np.testing.assert_array_equal(run(loaded, image=digit_u8), want)
    # seed=None (the default) round-trips too: same Compose seed and torch seed, same outputs
    torch.manual_seed(3)
    a = pipeline_of(VAEAugment(model_path, p=0.5))
    b = A.from_dict(A.to_dict(a))
    b.set_random_seed(0)
    for _ in range(6):
        np.testing.assert_array_equal(run(a, image=digit_u8), run(b, image=digit_u8))


def test_a_model_object_works_but_cannot_be_serialized(model_path: Path, digit_u8: np.ndarray) -> None:
    model = vaeaug.load(model_path)
    aug = VAEAugment(model, p=1.0)
    assert "VAE(1x8x8" in repr(aug)
    from_path = VAEAugment(model_path, p=1.0)
    np.testing.assert_array_equal(aug.apply(digit_u8, key=4), from_path.apply(digit_u8, key=4))
    for obj in (model, vaeaug.TorchBackend(model)):
        with pytest.raises(NotImplementedError, match=r"pass its path, VAEAugment\('model\.vae'"):
            A.to_dict(A.Compose([VAEAugment(obj)]))
    # pickling keeps the object (there is no path to reload from)
    again = pickle.loads(pickle.dumps(aug))
    np.testing.assert_array_equal(again.apply(digit_u8, key=4), aug.apply(digit_u8, key=4))


def test_pickling_drops_the_loaded_model_and_reloads_from_the_path(model_path: Path, digit_u8: np.ndarray) -> None:
    aug = VAEAugment(model_path, p=1.0)
    assert aug._generator is None  # nothing loaded at construction
    first = aug.apply(digit_u8, key=8)
    assert aug._generator is not None
    blob = pickle.dumps(aug)
    assert len(blob) < 5000  # no weights inside
    again = pickle.loads(blob)
    assert again._generator is None
    np.testing.assert_array_equal(again.apply(digit_u8, key=8), first)


# --------------------------------------------------------------------------- randomness, main process


def test_main_process_reproducibility(model_path: Path, digit_u8: np.ndarray) -> None:
    def outputs(compose_seed: int, torch_seed: int, vae_seed: int | None = None, n: int = 4) -> list[np.ndarray]:
        torch.manual_seed(torch_seed)
        pipeline = A.Compose([A.HorizontalFlip(p=0.5), VAEAugment(model_path, p=1.0, seed=vae_seed)],
                             seed=compose_seed)
        return [run(pipeline, image=digit_u8) for _ in range(n)]

    def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
        return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))

    base = outputs(0, 0)
    assert same(outputs(0, 0), base)
    assert not same(outputs(1, 0), base)  # follows Compose(seed=...)
    assert not same(outputs(0, 1), base)  # and torch's seed (the per-process component)
    assert not np.array_equal(base[0], base[1])  # and changes from call to call
    # seed=int: a fixed stream in the main process, whatever albumentations' and torch's seeds
    a, b = VAEAugment(model_path, p=1.0, seed=5), VAEAugment(model_path, p=1.0, seed=5)
    torch.manual_seed(123)
    a.set_random_seed(1)
    seq_a = [a(image=digit_u8)["image"] for _ in range(3)]
    torch.manual_seed(456)
    b.set_random_seed(2)
    seq_b = [b(image=digit_u8)["image"] for _ in range(3)]
    assert same(seq_a, seq_b) and not np.array_equal(seq_a[0], seq_a[1])
    c = VAEAugment(model_path, p=1.0, seed=6)
    assert not np.array_equal(c(image=digit_u8)["image"], seq_a[0])


# --------------------------------------------------------------------------- DataLoader workers


class _Copies(torch.utils.data.Dataset):
    """``n`` copies of one image through an albumentations pipeline; reports what happened."""

    def __init__(self, image: np.ndarray, pipeline: Any, n: int) -> None:
        self.image, self.pipeline, self.n = image, pipeline, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        vae = next(t for t in self.pipeline if isinstance(t, VAEAugment))
        loaded_before = vae._generator is not None
        out = self.pipeline(image=self.image)
        applied = [name.rsplit(".", 1)[-1] for name, _ in out["applied_transforms"]]
        # what albumentations drew for GaussNoise: 2.0.8 records the noise map, AlbumentationsX the std it chose
        noise = next(np.asarray(p["noise_map" if ORIGINAL else "std_range"])
                     for name, p in out["applied_transforms"] if name == "GaussNoise")
        info = torch.utils.data.get_worker_info()
        return {"index": i, "worker": -1 if info is None else info.id, "pid": os.getpid(),
                "parent_mark": len(_PARENT_MARK), "loaded_before": loaded_before, "image": out["image"],
                "noise": noise, "flipped": "HorizontalFlip" in applied,
                "coin": applied.count("VAEAugment") == 2}


def _pipeline(path: Path, seed: int | None = None) -> Any:
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.GaussNoise(std_range=(0.05, 0.1), p=1.0),
        VAEAugment(path, p=1.0, seed=seed),
        VAEAugment(path, p=0.5, mode="isotropic", seed=seed),  # its coin, recorded in "coin"
    ], seed=0, save_applied_params=True)


def _epochs(loader: Any, epochs: int) -> list[dict[int, list[dict[str, Any]]]]:
    """Per epoch: worker id -> its items in call order."""
    result = []
    for _ in range(epochs):
        per_worker: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for item in loader:
            per_worker[int(item["worker"])].append(item)
        result.append({w: sorted(items, key=lambda it: int(it["index"])) for w, items in per_worker.items()})
    return result


def _loader(dataset: Any, context: str) -> Any:
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context=context)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_get_different_variants_where_albumentations_repeats(context: str, model_path: Path,
                                                                     digit_u8: np.ndarray) -> None:
    pipeline = _pipeline(model_path)
    pipeline(image=digit_u8)  # the parent loads the model: fork inherits it, pickling (spawn) drops it
    _PARENT_MARK.append("parent")
    try:
        torch.manual_seed(0)
        n_epochs = 2 if context == "fork" else 1
        epochs = _epochs(_loader(_Copies(digit_u8, pipeline, 12), context), n_epochs)
    finally:
        _PARENT_MARK.clear()
    # the workers really ran, in their own processes, started the way asked
    items = [it for ep in epochs for its in ep.values() for it in its]
    pids = {int(it["pid"]) for it in items}
    assert len(pids) == 2 * n_epochs and os.getpid() not in pids
    assert all(int(it["parent_mark"]) == (1 if context == "fork" else 0) for it in items)
    first_calls = [ep[w][0] for ep in epochs for w in (0, 1)]
    assert all(bool(it["loaded_before"]) == (context == "fork") for it in first_calls)

    w0, w1 = epochs[0][0], epochs[0][1]
    assert len(w0) == len(w1) == 6
    # upstream: albumentations 2.0.8 repeats the j-th call's choices in every worker; AlbumentationsX reseeds its
    # workers from DataLoader's seed (recorded here so that a change on either line shows)
    assert all(np.array_equal(a["noise"], b["noise"]) and bool(a["flipped"]) == bool(b["flipped"])
               for a, b in zip(w0, w1, strict=True)) == ORIGINAL
    for a, b in zip(w0, w1, strict=True):
        # VAEAugment: another variant in each worker
        assert not torch.equal(a["image"], b["image"])
        assert a["image"].dtype == torch.uint8 and a["image"].shape == (8, 8)
    # the coin for p differs across workers too (albumentations 2.0.8's own coin above does not)
    assert [bool(it["coin"]) for it in w0] != [bool(it["coin"]) for it in w1]
    assert 0 < sum(bool(it["coin"]) for it in w0 + w1) < 12
    if n_epochs == 2:
        for w in (0, 1):
            for a, b in zip(epochs[0][w], epochs[1][w], strict=True):
                if ORIGINAL:
                    np.testing.assert_array_equal(a["noise"], b["noise"])  # 2.0.8 repeats every epoch
                assert not torch.equal(a["image"], b["image"])  # VAEAugment does not


@pytest.mark.parametrize("vae_seed", [None, 7])
def test_workers_are_reproducible_under_torch_manual_seed(vae_seed: int | None, model_path: Path,
                                                          digit_u8: np.ndarray) -> None:
    def images(torch_seed: int) -> list[torch.Tensor]:
        torch.manual_seed(torch_seed)
        (epoch,) = _epochs(_loader(_Copies(digit_u8, _pipeline(model_path, vae_seed), 6), "fork"), 1)
        return [it["image"] for w in (0, 1) for it in epoch[w]]

    first, again, other = images(0), images(0), images(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not any(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert not torch.equal(first[0], first[3])  # worker 0's and worker 1's first calls differ


# --------------------------------------------------------------------------- imports


def _python(code: str) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root,
                          timeout=120)


def test_import_vaeaug_does_not_import_albumentations() -> None:
    res = _python("import sys, vaeaug; vaeaug.VAEAugment; vaeaug.fit; vaeaug.load; "
                  "print(sorted(m for m in sys.modules if m.split('.')[0] == 'albumentations'))")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
    # the adapter module imports without torch (albumentations 2.0.8 itself imports torch when it
    # is installed, via albumentations.pytorch); its per-process entropy falls back to 0 in the
    # main process. Constructing one still needs torch for now (model metadata, check_mode).
    res = _python("import sys; sys.modules['torch'] = None\n"
                  "import vaeaug.albumentations as m; print(m._process_entropy(), m.worker_component())")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "0 0"


def test_missing_albumentations_says_how_to_install() -> None:
    res = _python("import sys; sys.modules['albumentations'] = None\n"
                  "try:\n    import vaeaug.albumentations\nexcept ImportError as e:\n    print(e)")
    assert res.returncode == 0, res.stderr
    assert "pip install 'vaeaug[albumentations]'" in res.stdout
