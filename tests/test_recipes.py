"""VAEAugment on dict-of-lists batches (Hugging Face ``datasets``), and the recipes in examples/recipes/.

The recipes run in process (``main()`` with the session's fitted models), with real DataLoader
workers, real ``datasets``, ``lightning`` and ``timm`` objects; one also runs as a script.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import PIL.Image
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from torchvision.transforms import v2

import vaeaug
from vaeaug import VAEAugment
from vaeaug.backends.torch_backend import TorchBackend
from vaeaug.core.backend import Backend

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "examples" / "recipes"
for folder in (Path(__file__).resolve().parent, RECIPES):  # _helpers, and the recipes as modules
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
from _helpers import digits_conditional_model, digits_model, digits_uint8  # noqa: E402

datasets = pytest.importorskip("datasets")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def model() -> vaeaug.VAE:
    return digits_model()


@pytest.fixture(scope="module")
def cmodel() -> vaeaug.VAE:
    return digits_conditional_model()


@pytest.fixture(scope="module")
def u8() -> np.ndarray:
    return digits_uint8()[0][:64]


@pytest.fixture(scope="module")
def labels() -> list[int]:
    return [int(v) for v in digits_uint8()[1][:64]]


def _column(kind: str, u8: np.ndarray, n: int = 6, device: str = "cpu") -> list[Any]:
    """``n`` images of one kind, as ``datasets`` or a user would put them in a list."""
    g = u8[:n]
    return {
        "pil": lambda: [PIL.Image.fromarray(a, mode="L") for a in g],
        "numpy_uint8": lambda: [a.copy() for a in g],
        "numpy_float": lambda: [a.astype(np.float64) / 255.0 * 16.0 for a in g],  # the digits' own 0..16
        "numpy_hwc": lambda: [a[:, :, None].copy() for a in g],
        "tensor_uint8": lambda: [torch.from_numpy(a)[None].clone().to(device) for a in g],
        "tensor_float": lambda: [torch.from_numpy(a)[None].float().div(255.0).mul(16.0).to(device) for a in g],
        "tv_image": lambda: [tv_tensors.Image(torch.from_numpy(a)[None].clone()) for a in g],
    }[kind]()


def _pixels(img: Any) -> np.ndarray:
    if isinstance(img, PIL.Image.Image):
        return np.asarray(img)
    if isinstance(img, torch.Tensor):
        return img.as_subclass(torch.Tensor).cpu().numpy()
    return np.asarray(img)


def _same_kind(a: Any, b: Any) -> bool:
    """Same type (PIL: any PIL image, same mode), dtype, shape and device."""
    if isinstance(a, PIL.Image.Image):
        return isinstance(b, PIL.Image.Image) and a.mode == b.mode and a.size == b.size
    if isinstance(a, torch.Tensor):
        return type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape and a.device == b.device
    return type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape


def _equal(a: Any, b: Any) -> bool:
    return np.array_equal(_pixels(a), _pixels(b))


# --------------------------------------------------------------------------- dict of lists


KINDS = ["pil", "numpy_uint8", "numpy_float", "numpy_hwc", "tensor_uint8", "tensor_float", "tv_image"]


@pytest.mark.parametrize("kind", KINDS)
def test_dict_of_lists_keeps_structure_types_and_labels(kind: str, cmodel, u8, labels) -> None:
    images = _column(kind, u8)
    lab, ids = labels[:6], list(range(6))
    batch = {"image": images, "label": lab, "name": [f"{i}.png" for i in ids]}
    out = VAEAugment(cmodel, p=1.0)(batch)
    assert type(out) is dict and list(out) == list(batch)
    assert out is not batch and batch["image"] is images  # the input dict and its list are not changed
    assert type(out["image"]) is list and len(out["image"]) == len(images)
    assert out["label"] is lab and out["name"] is batch["name"]
    for new, old in zip(out["image"], images, strict=True):
        assert _same_kind(new, old)
        assert not _equal(new, old)
    if kind == "numpy_float" or kind == "tensor_float":
        assert all(0.0 <= float(_pixels(v).min()) and float(_pixels(v).max()) <= 16.0 for v in out["image"])


@pytest.mark.parametrize("kind", ["pil", "numpy_uint8", "tensor_uint8"])
def test_dict_of_lists_is_the_batch_path(kind: str, cmodel, u8, labels) -> None:
    """The list is one batch of the one core: the same variants as the (N, C, H, W) tensor with the same seed."""
    out = VAEAugment(cmodel, p=0.5, seed=11)({"image": _column(kind, u8, 16), "label": labels[:16]})
    ref, _ = VAEAugment(cmodel, p=0.5, seed=11)(torch.from_numpy(u8[:16])[:, None].clone(), labels[:16])
    assert all(np.array_equal(_pixels(a).reshape(8, 8), r[0].numpy()) for a, r in zip(out["image"], ref, strict=True))


class Recording(Backend):
    """A Backend that records the batches and labels of its model calls, then runs the torch backend."""

    def __init__(self, model: vaeaug.VAE) -> None:
        self.inner = TorchBackend(model)
        self.config, self.value_range, self.class_names = model.config, self.inner.value_range, self.inner.class_names
        self.calls: list[dict[str, Any]] = []

    def generate(self, setting: Any, x: Any, y: Any, noise: Any, partner: Any = None, invariant: bool = False) -> Any:
        self.calls.append({"x": torch.as_tensor(x).clone(), "y": None if y is None else torch.as_tensor(y).clone()})
        return self.inner.generate(setting, x, y, noise, partner, invariant)


def test_dict_of_lists_one_model_call_with_the_labels(cmodel, u8, labels) -> None:
    rec = Recording(cmodel)
    VAEAugment(rec, p=1.0)({"image": _column("pil", u8, 5), "label": labels[:5]})
    assert len(rec.calls) == 1 and rec.calls[0]["x"].shape == (5, 1, 8, 8)
    assert rec.calls[0]["y"].tolist() == labels[:5]


@pytest.mark.parametrize("device", DEVICES)
def test_dict_of_lists_tensors_stay_on_their_device(device: str, model, u8) -> None:
    images = _column("tensor_float", u8, 4, device=device)
    out = VAEAugment(model, p=1.0, device=device)({"image": images})
    assert all(o.device == i.device and o.dtype == i.dtype for o, i in zip(out["image"], images, strict=True))


def test_each_item_gets_its_own_coin_and_noise(model, u8) -> None:
    same = [u8[0].copy() for _ in range(40)]
    out = VAEAugment(model, p=1.0, seed=0)({"image": same})
    assert len({a.tobytes() for a in out["image"]}) == 40  # one image, 40 different variants
    half = VAEAugment(model, p=0.5, seed=0)({"image": same})
    changed = sum(not np.array_equal(a, u8[0]) for a in half["image"])
    assert 8 <= changed <= 32
    unchanged = [a for a in half["image"] if np.array_equal(a, u8[0])]
    assert all(any(a is s for s in same) for a in unchanged)  # an item not chosen is the input's object


def test_same_seed_same_output_and_the_stream_moves_on(model, u8) -> None:
    batch = {"image": _column("pil", u8, 8), "label": list(range(8))}
    a, b = VAEAugment(model, p=1.0, seed=3), VAEAugment(model, p=1.0, seed=3)
    first_a, first_b = a(batch), b(batch)
    assert all(_equal(p, q) for p, q in zip(first_a["image"], first_b["image"], strict=True))
    second = a(batch)
    assert not any(_equal(p, q) for p, q in zip(first_a["image"], second["image"], strict=True))
    torch.manual_seed(5)
    c = VAEAugment(model, p=1.0)(batch)
    torch.manual_seed(5)
    d = VAEAugment(model, p=1.0)(batch)
    assert all(_equal(p, q) for p, q in zip(c["image"], d["image"], strict=True))


def test_tuples_stay_tuples_and_labels_may_be_tensors_or_arrays(cmodel, u8, labels) -> None:
    aug = VAEAugment(cmodel, p=1.0)
    images = tuple(_column("tensor_uint8", u8, 3))
    for lab in (torch.tensor(labels[:3]), np.array(labels[:3]), [torch.tensor(v) for v in labels[:3]],
                [np.int64(v) for v in labels[:3]]):
        out = aug({"image": images, "label": lab})
        assert type(out["image"]) is tuple and len(out["image"]) == 3 and out["label"] is lab


def test_partner_modes_pick_partners_in_the_list(model, u8, labels) -> None:
    out = VAEAugment(model, p=1.0, mode="interpolate", strength=0.5)({"image": _column("pil", u8, 12),
                                                                        "label": labels[:12]})
    assert len(out["image"]) == 12
    with pytest.raises(ValueError, match=r"label_key='label'"):
        VAEAugment(model, p=1.0, mode="interpolate")({"image": _column("pil", u8, 4)})


def test_unconditional_model_needs_no_label_column(model, u8) -> None:
    out = VAEAugment(model, p=1.0)({"image": _column("pil", u8, 3), "idx": [0, 1, 2], "id": [7, 8, 9]})
    assert len(out["image"]) == 3 and out["idx"] == [0, 1, 2]


def test_keys_name_the_columns(cmodel, u8, labels) -> None:
    pil = _column("pil", u8, 4)
    batch = {"image": pil, "annotation": _column("pil", u8[10:], 4), "label": labels[:4], "idx": [9, 8, 7, 6]}
    out = VAEAugment(cmodel, p=1.0, image_key="image", label_key="label")(batch)
    assert out["annotation"] is batch["annotation"] and not _equal(out["image"][0], pil[0])
    # the label column is what the model reads: another column gives other variants
    other = VAEAugment(cmodel, p=1.0, seed=1, image_key="image", label_key="idx")(batch)
    same = VAEAugment(cmodel, p=1.0, seed=1, image_key="image", label_key="label")(batch)
    again = VAEAugment(cmodel, p=1.0, seed=1, image_key="image", label_key="label")(batch)
    assert all(_equal(p, q) for p, q in zip(same["image"], again["image"], strict=True))
    assert not all(_equal(p, q) for p, q in zip(same["image"], other["image"], strict=True))
    # keys also pick the image and the label in a one-sample dict
    single = {"a": pil[0], "b": pil[1], "l": 3, "m": 4}
    out = VAEAugment(cmodel, p=1.0, image_key="a", label_key="l")(single)
    assert out["b"] is pil[1] and out["l"] == 3 and not _equal(out["a"], pil[0])
    out = VAEAugment(cmodel, p=1.0, label_key="l")({"a": pil[0], "l": 3, "m": 4})
    assert not _equal(out["a"], pil[0]) and out["m"] == 4
    assert "image_key='image'" in repr(VAEAugment(cmodel, image_key="image"))


def test_empty_batch_and_other_mappings(model, u8) -> None:
    aug = VAEAugment(model, p=1.0)
    empty: dict[str, list[Any]] = {"image": [], "label": []}
    assert aug(empty) == empty
    from collections import OrderedDict

    out = aug(OrderedDict(image=_column("pil", u8, 2), label=[0, 1]))
    assert type(out) is OrderedDict and list(out) == ["image", "label"]


def _err(aug: VAEAugment, batch: Any, exc: type[Exception], *patterns: str) -> None:
    with pytest.raises(exc) as info:
        aug(batch)
    for p in patterns:
        assert p in str(info.value), str(info.value)


def test_dict_of_lists_errors(model, cmodel, u8, labels) -> None:
    pil = _column("pil", u8, 4)
    aug = VAEAugment(cmodel, p=1.0)
    _err(aug, {"image": pil, "mask": _column("pil", u8, 4), "label": labels[:4]}, ValueError,
         "columns 'image' and 'mask' both hold images", "image_key='image'")
    _err(aug, {"image": pil, "label": labels[:4], "idx": [0, 1, 2, 3]}, ValueError,
         "columns 'label' and 'idx'", "label_key='label'")
    _err(aug, {"image": pil}, ValueError, "class-conditional (10 classes)", "no column of the batch holds 4 integers",
         "label_key='label'")
    _err(aug, {"image": pil, "label": [1, 2]}, ValueError, "holds 4 integers", "'label': list of 2 int")
    _err(aug, {"image": pil, "label": ["a", "b", "c", "d"]}, ValueError, "'label': list of 4 str")
    _err(VAEAugment(cmodel, label_key="label"), {"image": pil, "label": [1.0, 2.0, 3.0, 4.0]}, TypeError,
         "label column 'label'", "labels must be integers")
    _err(aug, {"image": pil, "label": [1, 2, 3, 40]}, ValueError, "label column 'label'", "0..9")
    # nested lists: how datasets hands an array column to with_transform; the fix is shown
    nested = {"image": [a.tolist() for a in u8[:2]], "label": [1, 2]}
    _err(aug, nested, TypeError, "nested lists", "ds = ds.cast_column('image', datasets.Image())",
         "np.asarray(x, dtype=np.uint8)")
    _err(VAEAugment(cmodel, image_key="image"), nested, TypeError, "column 'image', item 0 is a nested list",
         "cast_column")
    # bad items say which
    _err(aug, {"image": [u8[0], np.zeros((28, 28), np.uint8)], "label": [1, 2]}, ValueError,
         "column 'image', item 1", "v2.Resize((8, 8))")
    _err(aug, {"image": [u8[0], u8[1], "x.png"], "label": [1, 2, 3]}, TypeError, "column 'image', item 2",
         "expected one image", "got str")
    _err(aug, {"image": [u8[0].astype(np.int32)] * 2, "label": [1, 2]}, TypeError, "item 0",
         "uint8 or floating-point")
    # keys that are not there, keys of the wrong type
    _err(VAEAugment(model, image_key="img"), {"image": pil}, ValueError, "image_key='img' is not a key",
         "['image']")
    _err(VAEAugment(cmodel, label_key="y"), {"image": pil, "label": labels[:4]}, ValueError,
         "label_key='y' is not a key")
    with pytest.raises(TypeError, match="image_key must be None or the str key"):
        VAEAugment(model, image_key=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="both 'x'"):
        VAEAugment(model, image_key="x", label_key="x")
    # a one-sample dict with two integers, for a model that needs the label
    _err(aug, {"image": pil[0], "a": 1, "b": 2}, ValueError, "keys 'a' and 'b'", "label_key='a'")


def test_errors_do_not_depend_on_the_coin(cmodel, u8) -> None:
    bad = {"image": _column("pil", u8, 2), "label": [1, 99]}
    for seed in range(5):
        with pytest.raises(ValueError, match="0..9"):
            VAEAugment(cmodel, p=0.01, seed=seed)(bad)


# --------------------------------------------------------------------------- datasets, for real


def _hf(u8: np.ndarray, labels: list[int], n: int = 8) -> Any:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    return datasets.Dataset.from_dict({"image": list(u8[:n]), "label": labels[:n]}, features=features)


def test_with_transform_rows_and_slices(cmodel, u8, labels) -> None:
    ds = _hf(u8, labels).with_transform(VAEAugment(cmodel, p=1.0))
    row = ds[0]  # datasets runs the transform on a batch of one, then unnests it
    assert isinstance(row["image"], PIL.Image.Image) and row["label"] == labels[0]
    assert not np.array_equal(np.asarray(row["image"]), u8[0])
    part = ds[2:5]
    assert len(part["image"]) == 3 and part["label"] == labels[2:5]


def test_map_batched_gets_a_lazy_batch(model, u8, labels) -> None:
    ds = _hf(u8, labels)
    out = ds.map(VAEAugment(model, p=1.0, seed=0), batched=True, batch_size=3, new_fingerprint="t")
    assert len(out) == 8 and out["label"] == labels[:8]
    assert not any(np.array_equal(np.asarray(a), b) for a, b in zip(out["image"], u8[:8], strict=True))


def _to_arrays(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {"image": [np.asarray(img) for img in batch["image"]], "label": batch["label"]}


def _images(loader: DataLoader) -> list[bytes]:
    return [img.numpy().tobytes() for batch in loader for img in batch["image"]]


@pytest.mark.parametrize("seed", [None, 2])
def test_dataloader_workers_draw_differently_and_reproducibly(seed: int | None, cmodel, u8) -> None:
    """Eight copies of one image through with_transform in two real worker processes."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    ds = datasets.Dataset.from_dict({"image": [u8[0]] * 8, "label": [3] * 8}, features=features)
    ds = ds.with_transform(v2.Compose([VAEAugment(cmodel, p=1.0, seed=seed), _to_arrays]))

    def run(s: int) -> list[bytes]:
        loader = DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="fork",
                            generator=torch.Generator().manual_seed(s))
        return _images(loader)

    first = run(0)
    assert len(first) == 8 and len(set(first)) == 8, "the workers repeat each other's draws"
    assert u8[0].tobytes() not in first
    assert run(0) == first, "a seeded DataLoader must reproduce its draws"
    assert not set(run(1)) & set(first), "another DataLoader seed must give other draws"


# --------------------------------------------------------------------------- the recipes


def _recipe(name: str) -> ModuleType:
    pytest.importorskip({"hf_datasets": "datasets", "lightning_datamodule": "lightning",
                         "timm_pipeline": "timm"}.get(name, "torch"))
    return importlib.import_module(name)


def test_recipe_hf_datasets(cmodel) -> None:
    r = _recipe("hf_datasets").main(cmodel, n=128, k=2)
    assert r["batch_shape"] == (32, 1, 8, 8) and r["batch_dtype"] == "torch.float32"
    assert r["workers"] == [0, 1], "the batches did not come from two worker processes"
    assert r["changed"] == 1.0 and r["labels_kept"]
    assert (r["rows"], r["real"], r["synthetic"]) == (3 * 128, 128, 2 * 128)
    assert r["synthetic_changed"] == 1.0 and r["pregen_labels_kept"]


@pytest.mark.parametrize("on_device", [False, True])
def test_recipe_lightning_datamodule(on_device: bool, cmodel) -> None:
    module = _recipe("lightning_datamodule")
    r = module.main(cmodel, steps=40, on_device=on_device)
    assert r["steps"] == 40 and r["workers"] == [0, 1]
    assert r["last_loss"] < 0.6 * r["first_loss"], r
    assert r["accuracy"] > 0.5, r  # chance: 0.1
    # the DataModule's training samples are variants (p=0.5: about half), labels kept
    dm = module.DigitsDataModule(cmodel, on_device=on_device)
    dm.setup("fit")
    if on_device:
        assert dm.device_aug is not None and dm.train.transform is None
        return
    torch.manual_seed(0)
    changed = sum(not torch.equal(dm.train[i]["image"], dm.train.x[i]) for i in range(40))
    assert 8 <= changed <= 32 and all(dm.train[i]["label"] == int(dm.train.y[i]) for i in range(10))


def test_recipe_timm_pipeline(model) -> None:
    module = _recipe("timm_pipeline")
    r = module.main(model, steps=40)  # 25 steps left some runs near chance (2 threads, Mixup)
    assert r["train_transform"][0] == "VAEAugment" and "Normalize" in r["train_transform"]
    assert r["batch_shape"] == (64, 1, 32, 32) and r["workers"] == [0, 1]
    assert r["last_loss"] < r["first_loss"], r
    assert r["accuracy"] > 0.3, r  # chance: 0.1
    train, _ = module.make_transforms(model, p=1.0)
    plain, _ = module.make_transforms(model, p=0.0)  # the same crop and jitter without the VAE: another tensor
    img = PIL.Image.fromarray(digits_uint8()[0][0], mode="L")
    torch.manual_seed(0)
    a = train(img)
    torch.manual_seed(0)
    b = plain(img)
    assert a.shape == b.shape == (1, 32, 32) and not torch.equal(a, b)


def test_recipe_batch_on_device(cmodel) -> None:
    r = _recipe("batch_on_device").main(cmodel, steps=100)
    assert r["last_loss"] < 0.5 * r["first_loss"], r
    assert r["accuracy"] > 0.6, r
    assert 0.4 < r["replaced"] < 0.6 and r["labels_kept"]  # p=0.5, a coin per image
    assert r["batch_shape"] == (128, 1, 8, 8) and r["augment_ms"] > 0


def test_recipe_runs_as_a_script() -> None:
    """As a user runs it: fits its own model, prints the result."""
    proc = subprocess.run([sys.executable, str(RECIPES / "batch_on_device.py")], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "'accuracy'" in proc.stdout and "'labels_kept': True" in proc.stdout
