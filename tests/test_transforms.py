"""VAEAugment: input types in and out, structures, labels, p, randomness, pickling, DataLoader workers, errors."""

from __future__ import annotations

import copy
import pickle
import sys
from pathlib import Path
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

# DataLoader workers started with "spawn" unpickle the dataset by importing its module: keep it in
# tests/_helpers.py and put this folder on sys.path (spawned workers inherit the parent's sys.path).
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from _helpers import ConstantImages, digits_conditional_model, digits_model, digits_uint8, rgb_model  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def model() -> vaeaug.VAE:
    return digits_model()


@pytest.fixture(scope="module")
def cmodel() -> vaeaug.VAE:
    return digits_conditional_model()


@pytest.fixture(scope="module")
def rgb() -> vaeaug.VAE:
    return rgb_model()


@pytest.fixture(scope="module")
def u8() -> np.ndarray:
    return digits_uint8()[0][:300]


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return digits_uint8()[1][:300]


class Recording(Backend):
    """A Backend that records every model call (``generate``) and delegates to the torch backend."""

    def __init__(self, model: vaeaug.VAE) -> None:
        self.inner = TorchBackend(model)
        self.config = self.inner.config
        self.value_range = self.inner.value_range
        self.class_names = self.inner.class_names
        self.calls: list[dict[str, Any]] = []

    def generate(self, setting: Any, x: Any, y: Any, noise: Any, partner: Any = None, invariant: bool = False) -> Any:
        self.calls.append({"x": torch.as_tensor(x).clone(), "y": None if y is None else torch.as_tensor(y).clone(),
                           "mode": setting.mode, "strength": setting.strength, "form": setting.form, "noise": noise,
                           "partner": None if partner is None else torch.as_tensor(partner).clone(),
                           "invariant": invariant})
        return self.inner.generate(setting, x, y, noise, partner, invariant)


def _same(a: Any, b: Any) -> bool:
    """Equality for images of any supported type."""
    if isinstance(a, PIL.Image.Image):
        return isinstance(b, PIL.Image.Image) and a.mode == b.mode and np.array_equal(np.asarray(a), np.asarray(b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    return isinstance(b, np.ndarray) and a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


def _model_space(img: Any, high: float) -> np.ndarray:
    """(C, H, W) float64 in [0, 1] from one image of any supported type and range [0, high]."""
    if isinstance(img, PIL.Image.Image):
        a = np.asarray(img).astype(np.float64)
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        return a / 255.0
    if isinstance(img, torch.Tensor):
        a = img.as_subclass(torch.Tensor).cpu().numpy().astype(np.float64)
        a = a[None] if a.ndim == 2 else a
    else:
        a = img.astype(np.float64)
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return a / (255.0 if img.dtype in (np.uint8, torch.uint8) else high)


# --------------------------------------------------------------------------- input types


def _case(name: str, u8: np.ndarray) -> tuple[str, Any, float]:
    """(model name, input, float high) for one input kind; digits floats are 0..16, uint8-fit floats 0..1."""
    g = u8[:5]
    rgb_hwc = np.stack([g[0], 255 - g[0], g[0] // 2], axis=-1)  # (8, 8, 3)
    f16 = g.astype(np.float32) / 255.0 * 16.0
    return {
        "pil_L": ("digits", PIL.Image.fromarray(g[0], mode="L"), 255.0),
        "pil_RGB": ("rgb", PIL.Image.fromarray(rgb_hwc, mode="RGB"), 255.0),
        "tensor_uint8_CHW": ("digits", torch.from_numpy(g[0])[None].clone(), 255.0),
        "tensor_float32_CHW": ("digits", torch.from_numpy(f16[0])[None].clone(), 16.0),
        "tensor_float64_CHW": ("digits", torch.from_numpy(f16[0])[None].double(), 16.0),
        "tensor_float_HW": ("digits", torch.from_numpy(f16[0]).clone(), 16.0),
        "tensor_float_CHW_rgb": ("rgb", torch.from_numpy(rgb_hwc.transpose(2, 0, 1) / 255.0).float(), 1.0),
        "batch_uint8_NCHW": ("digits", torch.from_numpy(g)[:, None].clone(), 255.0),
        "batch_float_NCHW": ("digits", torch.from_numpy(f16)[:, None].clone(), 16.0),
        "batch_float_NCHW_rgb": ("rgb", torch.from_numpy(np.repeat(g[:, None], 3, 1) / 255.0).float(), 1.0),
        "tv_image": ("digits", tv_tensors.Image(torch.from_numpy(g[0])[None].clone()), 255.0),
        "tv_image_batch_float": ("digits", tv_tensors.Image(torch.from_numpy(f16)[:, None].clone()), 16.0),
        "numpy_HWC_uint8": ("rgb", rgb_hwc.copy(), 255.0),
        "numpy_HWC_uint8_gray": ("digits", g[0][:, :, None].copy(), 255.0),
        "numpy_HWC_float64": ("digits", f16[0][:, :, None].astype(np.float64), 16.0),
        "numpy_HWC_float32_rgb": ("rgb", (rgb_hwc / 255.0).astype(np.float32), 1.0),
        "numpy_HW_uint8": ("digits", g[0].copy(), 255.0),
        "numpy_HW_float": ("digits", f16[0].astype(np.float64), 16.0),
        "numpy_NHWC_uint8": ("digits", g[:, :, :, None].copy(), 255.0),
    }[name]


CASES = ["pil_L", "pil_RGB", "tensor_uint8_CHW", "tensor_float32_CHW", "tensor_float64_CHW", "tensor_float_HW",
         "tensor_float_CHW_rgb", "batch_uint8_NCHW", "batch_float_NCHW", "batch_float_NCHW_rgb", "tv_image",
         "tv_image_batch_float", "numpy_HWC_uint8", "numpy_HWC_uint8_gray", "numpy_HWC_float64",
         "numpy_HWC_float32_rgb", "numpy_HW_uint8", "numpy_HW_float", "numpy_NHWC_uint8"]


@pytest.mark.parametrize("name", CASES)
def test_output_has_the_input_type_dtype_layout_and_range(name: str, model, rgb, u8) -> None:
    which, inpt, high = _case(name, u8)
    aug = VAEAugment(model if which == "digits" else rgb, p=1.0)
    before = copy.deepcopy(inpt)
    torch.manual_seed(0)
    out = aug(inpt)
    assert type(out) is type(inpt)
    assert _same(inpt, before), "the input was modified in place"
    if isinstance(inpt, PIL.Image.Image):
        assert out.mode == inpt.mode and out.size == inpt.size
        arr, arr_in = np.asarray(out), np.asarray(inpt)
    elif isinstance(inpt, torch.Tensor):
        assert out.dtype == inpt.dtype and out.shape == inpt.shape and out.device == inpt.device
        arr, arr_in = out.as_subclass(torch.Tensor).numpy(), inpt.as_subclass(torch.Tensor).numpy()
    else:
        assert out.dtype == inpt.dtype and out.shape == inpt.shape
        arr, arr_in = out, inpt
    assert not np.array_equal(arr, arr_in), "p=1 must change the image"
    # values in the input's range, and really spread over it (not left in model space's [0, 1])
    assert arr.min() >= 0 and arr.max() <= high
    assert arr.max() > 0.25 * high
    if arr.dtype != np.uint8:
        assert not np.all(arr == np.round(arr)), "float output looks quantised"


def test_every_type_gives_the_same_variant(model, rgb, u8) -> None:
    """One image as uint8/float tensor, PIL, numpy HW/HWC: the same key gives the same variant."""
    g = u8[0]
    f16 = g.astype(np.float32) / 255.0 * 16.0
    forms = [torch.from_numpy(g)[None].clone(), torch.from_numpy(f16)[None].clone(), PIL.Image.fromarray(g),
             g.copy(), g[:, :, None].copy(), f16.astype(np.float64), tv_tensors.Image(torch.from_numpy(f16)[None])]
    aug = VAEAugment(model, p=1.0)
    outs = []
    for f in forms:
        torch.manual_seed(5)
        outs.append(_model_space(aug(f), 16.0))
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], atol=1 / 255 + 1e-6)
    # colour: HWC numpy, CHW tensor and PIL RGB agree channel by channel
    rgb_hwc = np.stack([g, 255 - g, g // 2], axis=-1)
    aug3 = VAEAugment(rgb, p=1.0)
    outs3 = []
    for f in (rgb_hwc.copy(), torch.from_numpy(rgb_hwc.transpose(2, 0, 1).copy()), PIL.Image.fromarray(rgb_hwc),
              (rgb_hwc / 255.0).astype(np.float32)):
        torch.manual_seed(5)
        outs3.append(_model_space(aug3(f), 1.0))
    for o in outs3[1:]:
        np.testing.assert_allclose(o, outs3[0], atol=1 / 255 + 1e-6)
    # the channels differ, so a mixed-up layout could not pass the comparison above
    assert np.abs(outs3[0][0] - outs3[0][1]).max() > 0.2


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_output_stays_on_the_input_device(device: str, dtype: torch.dtype, model, u8) -> None:
    aug = VAEAugment(copy.deepcopy(model), p=1.0, device=device)
    x = torch.from_numpy(u8[:4])[:, None]
    x = x if dtype == torch.uint8 else x.float() / 255.0 * 16.0
    for inpt in (x.to(device), x.to(device)[0]):
        out = aug(inpt)
        assert out.device == inpt.device and out.dtype == inpt.dtype and out.shape == inpt.shape
    assert aug.backend.device.type == device


def test_non_contiguous_and_channels_last_inputs(model, u8) -> None:
    aug = VAEAugment(model, p=1.0)
    big = torch.from_numpy(u8[:4])[:, None]
    nc = big.transpose(2, 3)  # a view, not contiguous
    torch.manual_seed(0)
    a = aug(nc)
    torch.manual_seed(0)
    b = aug(nc.contiguous())
    assert torch.equal(a, b) and a.shape == nc.shape
    x = torch.from_numpy(u8[:4])[:, None].float().contiguous(memory_format=torch.channels_last) / 255.0 * 16
    torch.manual_seed(0)
    c = aug(x)
    torch.manual_seed(0)
    d = aug(x.contiguous())
    assert torch.equal(c, d)


# --------------------------------------------------------------------------- structures and labels


def test_only_the_image_changes_in_a_tuple(model, u8) -> None:
    aug = VAEAugment(model, p=1.0)
    img = torch.from_numpy(u8[0])[None].clone()
    out = aug(img, 3)
    assert isinstance(out, tuple) and len(out) == 2 and out[1] == 3
    assert out[0].shape == img.shape and not torch.equal(out[0], img)
    lab = torch.tensor(3)
    out = aug((PIL.Image.fromarray(u8[0]), lab))
    assert isinstance(out, tuple) and isinstance(out[0], PIL.Image.Image) and out[1] is lab
    # numpy image and numpy label
    nl = np.int64(4)
    out = aug(u8[0].copy(), nl)
    assert isinstance(out[0], np.ndarray) and out[0].shape == (8, 8) and out[1] is nl


def test_only_the_image_changes_in_a_dict(model, u8) -> None:
    aug = VAEAugment(model, p=1.0)
    img = tv_tensors.Image(torch.from_numpy(u8[0])[None].clone())
    mask = tv_tensors.Mask(torch.from_numpy((u8[0] > 100).astype(np.uint8))[None])
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[0, 0, 4, 4], [2, 3, 7, 8]]), format="XYXY", canvas_size=(8, 8))
    aux = torch.arange(10.0)
    sample = {"image": img, "mask": mask, "boxes": boxes, "label": 2, "aux": aux, "name": "x.png"}
    mask0, boxes0 = mask.clone(), boxes.clone()
    out = aug(sample)
    assert set(out) == set(sample)
    assert type(out["image"]) is tv_tensors.Image and not torch.equal(out["image"], img)
    assert out["mask"] is mask and torch.equal(mask, mask0) and type(out["mask"]) is tv_tensors.Mask
    assert out["boxes"] is boxes and torch.equal(boxes, boxes0) and type(out["boxes"]) is tv_tensors.BoundingBoxes
    assert out["boxes"].canvas_size == (8, 8)
    assert out["label"] == 2 and out["aux"] is aux and out["name"] == "x.png"


def test_detection_sample_with_per_box_labels(model, u8) -> None:
    """An unconditional model has no use for labels: per-box labels (K,) must not be an error."""
    aug = VAEAugment(model, p=1.0)
    img = tv_tensors.Image(torch.from_numpy(u8[0])[None].clone())
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[0, 0, 4, 4], [2, 3, 7, 8]]), format="XYXY", canvas_size=(8, 8))
    per_box = torch.tensor([1, 5])
    out = aug({"image": img, "boxes": boxes, "labels": per_box})
    assert out["labels"] is per_box and out["boxes"] is boxes
    assert not torch.equal(out["image"], img)


def test_a_label_tensor_before_the_image_does_not_hide_the_image(model, cmodel, u8) -> None:
    """torchvision treats only the first plain tensor as the image: a 0-d label first must not make it a no-op."""
    img = torch.from_numpy(u8[0])[None].clone()
    lab = torch.tensor(3)
    for m in (model, cmodel):
        out = VAEAugment(m, p=1.0)({"label": lab, "image": img})
        assert out["label"] is lab
        assert not torch.equal(out["image"], img), "the image was silently left unchanged"
        out = VAEAugment(m, p=1.0)((lab, img))
        assert not torch.equal(out[1], img)


@pytest.mark.parametrize("kind", ["int", "numpy_int", "tensor_0d", "tensor_1d_single"])
def test_conditional_model_reads_the_label_from_the_sample(kind: str, cmodel, u8) -> None:
    rec = Recording(cmodel)
    aug = VAEAugment(rec, p=1.0)
    label = {"int": 7, "numpy_int": np.int64(7), "tensor_0d": torch.tensor(7),
             "tensor_1d_single": torch.tensor([7])}[kind]
    img = torch.from_numpy(u8[0])[None].clone()
    out = aug(img, label)
    assert out[1] is label and out[0].shape == img.shape
    assert len(rec.calls) == 1 and rec.calls[0]["y"].tolist() == [7]
    aug({"image": PIL.Image.fromarray(u8[0]), "target": label})
    assert rec.calls[1]["y"].tolist() == [7]


def test_the_label_changes_the_variant(cmodel, u8) -> None:
    aug = VAEAugment(cmodel, p=1.0, mode="prior")
    img = torch.from_numpy(u8[0])[None].clone()
    outs = {}
    for label in (0, 7):
        torch.manual_seed(0)
        outs[label] = aug(img, label)[0]
    assert not torch.equal(outs[0], outs[7])
    # prior samples do not look at the source pixels
    torch.manual_seed(0)
    assert torch.equal(aug(torch.zeros_like(img), 0)[0], outs[0])


def test_batch_labels_reach_the_model(cmodel, u8, labels) -> None:
    rec = Recording(cmodel)
    aug = VAEAugment(rec, p=1.0)
    x = torch.from_numpy(u8[:12])[:, None].clone()
    y = torch.from_numpy(labels[:12]).long()
    out, y_out = aug(x, y)
    assert y_out is y and out.shape == x.shape
    assert len(rec.calls) == 1 and torch.equal(rec.calls[0]["y"], y)
    # numpy labels for a numpy batch, and one int label for the whole batch
    aug(u8[:12, :, :, None].copy(), labels[:12].copy())
    assert torch.equal(rec.calls[1]["y"], y)
    aug(x, 4)
    assert rec.calls[2]["y"].tolist() == [4] * 12


def test_batch_labels_as_a_list_are_not_silently_replaced_by_the_first(cmodel, u8, labels) -> None:
    """torchvision flattens a list of labels into separate ints: using only the first is wrong."""
    rec = Recording(cmodel)
    aug = VAEAugment(rec, p=1.0)
    x = torch.from_numpy(u8[:4])[:, None].clone()
    y = [int(v) for v in labels[:4]]
    assert len(set(y)) > 1
    try:
        aug(x, y)
    except ValueError:
        return  # refusing is fine
    assert rec.calls[-1]["y"].tolist() == y


def test_a_batch_is_one_batched_call(cmodel, u8, labels) -> None:
    rec = Recording(cmodel)
    aug = VAEAugment(rec, p=1.0)
    x = torch.from_numpy(u8[:64])[:, None].clone()
    y = torch.from_numpy(labels[:64]).long()
    aug(x, y)
    assert len(rec.calls) == 1
    call = rec.calls[0]
    assert call["x"].shape == (64, 1, 8, 8) and call["y"].shape == (64,)
    assert len(call["noise"]) == 64
    # model space, in order
    torch.testing.assert_close(call["x"], x.float() / 255.0)
    # with p < 1: still one call, on the chosen samples only; the others are untouched
    rec.calls.clear()
    aug.p = 0.5
    out, _ = aug(x, y)
    assert len(rec.calls) == 1
    changed = [i for i in range(64) if not torch.equal(out[i], x[i])]
    assert rec.calls[0]["x"].shape[0] == len(changed)
    assert torch.equal(rec.calls[0]["y"], y[changed])


def test_a_sample_keeps_its_variant_whatever_else_is_chosen(model, u8) -> None:
    """Sample i's noise comes from (call key, i): with p < 1 a chosen sample gets the variant it gets with p = 1."""
    x = torch.from_numpy(u8[:40])[:, None].float() / 255.0 * 16.0
    torch.manual_seed(0)
    full = VAEAugment(model, p=1.0)(x)
    torch.manual_seed(0)
    half = VAEAugment(model, p=0.5)(x)
    changed = [i for i in range(40) if not torch.equal(half[i], x[i])]
    assert 5 <= len(changed) <= 35
    for i in range(40):
        if i in changed:
            torch.testing.assert_close(half[i], full[i], atol=1e-4, rtol=0)  # batch sizes differ: rounding only
        else:
            assert torch.equal(half[i], x[i])


def test_each_sample_of_a_batch_gets_its_own_noise(model, u8) -> None:
    aug = VAEAugment(model, p=1.0)
    x = torch.from_numpy(np.repeat(u8[:1], 50, axis=0))[:, None].clone()  # 50 identical images
    out = aug(x)
    assert len({o.numpy().tobytes() for o in out}) == 50


def test_each_sample_of_a_batch_gets_its_own_coin_flip(model, u8) -> None:
    aug = VAEAugment(model, p=0.5)
    x = torch.from_numpy(np.repeat(u8[:1], 200, axis=0))[:, None].clone()
    sets = []
    for _ in range(2):
        out = aug(x)
        changed = frozenset(i for i in range(200) if not torch.equal(out[i], x[i]))
        assert 60 <= len(changed) <= 140
        sets.append(changed)
    assert sets[0] != sets[1]


def test_p0_returns_the_input_and_p1_changes_it(model, u8) -> None:
    img = torch.from_numpy(u8[0])[None].clone()
    pil = PIL.Image.fromarray(u8[0])
    batch = torch.from_numpy(u8[:20])[:, None].clone()
    never, always = VAEAugment(model, p=0.0), VAEAugment(model, p=1.0)
    for inpt in (img, pil, batch, u8[0]):
        for _ in range(5):
            assert never(inpt) is inpt
    sample = (img, 3)
    out = never(sample)
    assert out[0] is img and out[1] == 3
    out = always(batch)
    assert all(not torch.equal(out[i], batch[i]) for i in range(20))
    # an integer p works too
    assert VAEAugment(model, p=0)(img) is img and not torch.equal(VAEAugment(model, p=1)(img), img)


@pytest.mark.parametrize("mode", ["posterior", "isotropic", "reconstruct", "interpolate"])
def test_delta_form_with_zero_strength_leaves_the_image_unchanged(model, u8, mode: str) -> None:
    aug = VAEAugment(model, p=1.0, mode=mode, form="delta", strength=0.0)
    x = torch.from_numpy(u8[:6])[:, None].float() / 255.0 * 16.0
    inputs = [x, x.permute(0, 2, 3, 1).numpy()]
    if mode != "interpolate":  # single images have no partner
        inputs += [x[0], x[0, 0].double().numpy()]
    for inpt in inputs:
        out = aug(inpt, torch.zeros(6, dtype=torch.long))[0] if mode == "interpolate" else aug(inpt)
        assert _same(out, inpt), "x + D(mu) - D(mu) must be x"


def test_delta_form_keeps_the_range_and_reconstruct_is_deterministic(model, u8) -> None:
    x = torch.from_numpy(u8[:20])[:, None].float() / 255.0 * 16.0
    out = VAEAugment(model, p=1.0, form="delta", strength=3.0, mode="isotropic")(x)
    assert out.min() >= 0 and out.max() <= 16 and not torch.equal(out, x)
    rec = VAEAugment(model, p=1.0, mode="reconstruct")
    torch.manual_seed(0)
    a = rec(x)
    torch.manual_seed(1)
    assert torch.equal(rec(x), a)


def test_interpolate_on_a_batch_uses_partners_of_the_same_class(cmodel, model, u8, labels) -> None:
    rec = Recording(cmodel)
    aug = VAEAugment(rec, p=1.0, mode="interpolate")
    x = torch.from_numpy(u8[:40])[:, None].clone()
    y = torch.from_numpy(labels[:40]).long()
    out, _ = aug(x, y)
    assert out.shape == x.shape and not torch.equal(out, x)
    call = rec.calls[0]
    xm = call["x"]
    for j, part in enumerate(call["partner"]):
        matches = [i for i in range(40) if torch.equal(xm[i], part)]
        assert matches, "a partner must be a sample of the batch"
        assert any(int(y[i]) == int(y[j]) for i in matches), "the partner must have the same class"
        if int((y == y[j]).sum()) > 1:
            assert any(i != j for i in matches if int(y[i]) == int(y[j])), "the partner must be another sample"
    # an unconditional model interpolates within the batch too, given the classes
    out, _ = VAEAugment(model, p=1.0, mode="interpolate")(x, y)
    assert out.shape == x.shape and not torch.equal(out, x)
    with pytest.raises(ValueError, match="needs the labels"):  # without them a partner could be of any class
        VAEAugment(model, p=1.0, mode="interpolate")(x)


def test_prior_mode_on_a_batch(cmodel, u8, labels) -> None:
    aug = VAEAugment(cmodel, p=1.0, mode="prior")
    x = torch.from_numpy(u8[:10])[:, None].clone()
    out, _ = aug(x, torch.from_numpy(labels[:10]).long())
    assert out.shape == x.shape and out.dtype == torch.uint8


# --------------------------------------------------------------------------- pipelines, pickling, repr


def test_composes_in_a_v2_pipeline(cmodel, rgb, u8) -> None:
    img = tv_tensors.Image(torch.from_numpy(u8[0])[None].clone())
    aug = VAEAugment(cmodel, p=1.0)
    pipe = v2.Compose([v2.RandomHorizontalFlip(p=1.0), aug])
    torch.manual_seed(0)
    out, label = pipe(img, 3)
    assert type(out) is tv_tensors.Image and out.dtype == torch.uint8 and label == 3
    torch.manual_seed(0)
    expected = aug(v2.RandomHorizontalFlip(p=1.0)(img), 3)[0]
    assert torch.equal(out, expected)
    # PIL -> Image -> float [0, 1] -> VAEAugment (model fit on uint8 reads floats as 0..1) -> normalise
    pil = PIL.Image.fromarray(np.stack([u8[1], 255 - u8[1], u8[1]], axis=-1))
    pipe = v2.Compose([v2.RandomHorizontalFlip(), v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                       VAEAugment(rgb, p=1.0), v2.Normalize([0.5] * 3, [0.5] * 3)])
    out = pipe(pil)
    assert type(out) is tv_tensors.Image and out.shape == (3, 8, 8) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    # the README's example: a float digit (0..16) and its label through Compose
    readme = v2.Compose([VAEAugment(cmodel, p=0.5, strength=1.0, mode="posterior"), v2.ToDtype(torch.float32)])
    for s in range(4):
        torch.manual_seed(s)
        x = torch.rand(1, 8, 8) * 16
        out, label = readme((x, 3))
        assert out.shape == (1, 8, 8) and out.dtype == torch.float32 and label == 3
        assert out.min() >= 0 and out.max() <= 16
    # VAEAugment first, on PIL, then the conversions
    pipe = v2.Compose([VAEAugment(rgb, p=1.0), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    out = pipe(pil)
    assert type(out) is tv_tensors.Image and out.shape == (3, 8, 8)


@pytest.mark.parametrize("seed", [None, 3])
def test_pickle_round_trip(model, u8, seed) -> None:
    aug = VAEAugment(model, p=0.7, strength=0.5, mode="isotropic", form="delta", seed=seed)
    aug(torch.from_numpy(u8[0])[None])  # some state before pickling
    clone = pickle.loads(pickle.dumps(aug))
    assert repr(clone) == repr(aug)
    assert (clone.p, clone.strength, clone.mode, clone.form, clone.seed) == (0.7, 0.5, "isotropic", "delta", seed)
    x = torch.from_numpy(u8[:30])[:, None].clone()
    for s in (0, 1):
        torch.manual_seed(s)
        a = aug(x)
        torch.manual_seed(s)
        b = clone(x)
        assert torch.equal(a, b)
    # the copy is independent: changing it leaves the original alone
    clone.p = 0.0
    assert aug.p == 0.7


def test_transform_from_a_model_file(model, u8, tmp_path) -> None:
    path = vaeaug.save(model, tmp_path / "digits.vae")
    from_file = VAEAugment(str(path), p=1.0)
    from_model = VAEAugment(model, p=1.0)
    assert str(path) in repr(from_file)
    x = torch.from_numpy(u8[:5])[:, None].clone()
    torch.manual_seed(0)
    a = from_file(x)
    torch.manual_seed(0)
    assert torch.equal(a, from_model(x))
    torch.manual_seed(0)
    assert torch.equal(pickle.loads(pickle.dumps(from_file))(x), a)


def test_repr(model, cmodel) -> None:
    r = repr(VAEAugment(model, p=0.25, strength=0.5, mode="isotropic", form="delta", seed=7))
    assert r.startswith("VAEAugment(")
    for part in ("p=0.25", "strength=0.5", "mode='isotropic'", "form='delta'", "seed=7", "1x8x8"):
        assert part in r
    r = repr(VAEAugment(cmodel))
    # the measured library default: the delta form of an isotropic move, on half of the samples
    for part in ("p=0.5", "strength=1.0", "mode='isotropic'", "form='delta'", "seed=None", "10 classes"):
        assert part in r


# --------------------------------------------------------------------------- randomness


def test_follows_torch_manual_seed(model, u8) -> None:
    aug = VAEAugment(model, p=1.0)
    img = torch.from_numpy(u8[0])[None].clone()
    torch.manual_seed(0)
    a = [aug(img) for _ in range(3)]
    torch.manual_seed(0)
    b = [aug(img) for _ in range(3)]
    torch.manual_seed(1)
    c = aug(img)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[1], a[2])
    assert not torch.equal(a[0], c)
    # a fresh transform on the same seed gives the same draws
    torch.manual_seed(0)
    assert torch.equal(VAEAugment(model, p=1.0)(img), a[0])


def test_explicit_seed_is_a_fixed_stream(model, u8) -> None:
    img = torch.from_numpy(u8[0])[None].clone()
    a, b, c = VAEAugment(model, p=1.0, seed=3), VAEAugment(model, p=1.0, seed=3), VAEAugment(model, p=1.0, seed=4)
    seq_a, seq_b, seq_c = [], [], []
    for i in range(4):
        torch.manual_seed(100 + i)  # torch's global generator plays no part
        seq_a.append(a(img))
        torch.manual_seed(i)
        seq_b.append(b(img))
        seq_c.append(c(img))
    assert all(torch.equal(p, q) for p, q in zip(seq_a, seq_b, strict=True))
    assert len({t.numpy().tobytes() for t in seq_a}) == 4  # the stream moves on
    assert not any(torch.equal(p, q) for p, q in zip(seq_a, seq_c, strict=True))
    # and it leaves torch's global generator alone
    torch.manual_seed(0)
    ref = torch.rand(3)
    torch.manual_seed(0)
    a(img)
    assert torch.equal(torch.rand(3), ref)
    # seed=0 is a seed, not "no seed"
    z1, z2 = VAEAugment(model, p=1.0, seed=0), VAEAugment(model, p=1.0, seed=0)
    torch.manual_seed(1)
    o1 = z1(img)
    torch.manual_seed(2)
    assert torch.equal(z2(img), o1)


def _epochs(ds: ConstantImages, ctx: str, seed: int, persistent: bool, epochs: int = 2) -> list[list[torch.Tensor]]:
    loader = DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context=ctx, persistent_workers=persistent,
                        generator=torch.Generator().manual_seed(seed))
    return [[img for batch in loader for img in batch] for _ in range(epochs)]


def _distinct(imgs: list[torch.Tensor]) -> int:
    return len({t.numpy().tobytes() for t in imgs})


@pytest.mark.parametrize(
    "ctx,seed,persistent",
    [("fork", None, False), ("fork", 3, False), ("fork", None, True), ("fork", 3, True), ("spawn", None, True)],
)
def test_dataloader_workers(ctx: str, seed: int | None, persistent: bool, model, u8) -> None:
    """Real worker processes over identical images: every difference comes from the transform."""
    img = torch.from_numpy(u8[0])[None].clone()
    ds = ConstantImages(img, VAEAugment(model, p=1.0, seed=seed), n=8)
    run1 = _epochs(ds, ctx, 0, persistent)
    for epoch in run1:
        assert len(epoch) == 8 and all(t.shape == (1, 8, 8) and t.dtype == torch.uint8 for t in epoch)
        assert not any(torch.equal(t, img) for t in epoch)
        # batches 0, 2 come from worker 0 and batches 1, 3 from worker 1
        assert _distinct(epoch) == 8, "samples (from two workers) repeat each other's draws"
    assert _distinct(run1[0] + run1[1]) == 16, "the second epoch repeats the first"
    # a second run with the same DataLoader generator reproduces the draws. Spawned workers take
    # seconds to start, so the spawn run is reproduced with fork: the draws must not depend on the
    # start method either (the worker seeds are the same).
    run2 = _epochs(ds, "fork", 0, persistent)
    assert all(torch.equal(p, q) for e1, e2 in zip(run1, run2, strict=True) for p, q in zip(e1, e2, strict=True)), \
        "a seeded DataLoader must reproduce its draws"
    if ctx == "fork":
        other = _epochs(ds, ctx, 1, persistent, epochs=1)[0]
        assert _distinct(other + run1[0]) == 16, "another DataLoader seed must give other draws"


def test_dataloader_samples_with_labels(cmodel, u8) -> None:
    img = torch.from_numpy(u8[0])[None].clone()
    ds = ConstantImages(img, VAEAugment(cmodel, p=1.0), n=6, label=4)
    loader = DataLoader(ds, batch_size=3, num_workers=2, multiprocessing_context="fork")
    batches = list(loader)
    imgs = [t for b, _ in batches for t in b]
    assert all(int(v) == 4 for _, y in batches for v in y)
    assert _distinct(imgs) == 6


# --------------------------------------------------------------------------- errors


def test_wrong_size_mentions_resize(model, u8) -> None:
    aug = VAEAugment(model, p=1.0)
    with pytest.raises(ValueError, match=r"v2\.Resize\(\(8, 8\)\)"):
        aug(torch.zeros(1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"v2\.Resize"):
        aug(PIL.Image.new("L", (10, 8)))
    big = VAEAugment(vaeaug.VAE(vaeaug.VAEConfig((1, 28, 28))), p=1.0)
    with pytest.raises(ValueError, match=r"v2\.Resize\(\(28, 28\)\)"):
        big(torch.from_numpy(u8[0])[None])
    # the error does not depend on p
    with pytest.raises(ValueError, match=r"v2\.Resize"):
        VAEAugment(model, p=0.0)(torch.zeros(1, 28, 28, dtype=torch.uint8))


def test_wrong_channels_mention_grayscale_or_rgb(model, rgb, u8) -> None:
    rgb_img = PIL.Image.fromarray(np.repeat(u8[0][:, :, None], 3, axis=2))
    with pytest.raises(ValueError, match=r"v2\.Grayscale\(\)"):
        VAEAugment(model, p=1.0)(rgb_img)
    with pytest.raises(ValueError, match=r"v2\.Grayscale\(\)"):
        VAEAugment(model, p=1.0)(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"v2\.RGB\(\)"):
        VAEAugment(rgb, p=1.0)(PIL.Image.fromarray(u8[0]))
    with pytest.raises(ValueError, match=r"v2\.RGB\(\)"):
        VAEAugment(rgb, p=1.0)(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"v2\.RGB\(\)"):
        VAEAugment(rgb, p=1.0)(np.zeros((8, 8), dtype=np.uint8))


def test_nan_and_inf_are_refused(model) -> None:
    aug = VAEAugment(model, p=1.0)
    for bad in (float("nan"), float("inf")):
        x = torch.full((1, 8, 8), 3.0)
        x[0, 2, 2] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            aug(x)
        with pytest.raises(ValueError, match="NaN or Inf"):
            aug(x.numpy()[0])


def test_float_values_outside_the_model_range(model, rgb) -> None:
    # a model fit on uint8 reads floats as 0..1: 0..255 floats get the ToDtype hint
    with pytest.raises(ValueError, match=r"ToDtype\(torch\.float32, scale=True\)"):
        VAEAugment(rgb, p=1.0)(torch.full((3, 8, 8), 200.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        VAEAugment(rgb, p=1.0)(torch.full((3, 8, 8), -0.5))
    # the digits model reads floats as 0..16
    with pytest.raises(ValueError, match=r"\[0, 16\]"):
        VAEAugment(model, p=1.0)(torch.full((1, 8, 8), 17.0))
    with pytest.raises(ValueError, match=r"\[0, 16\]"):
        VAEAugment(model, p=1.0)(np.full((8, 8), -1.0))
    # the edges are inside
    assert VAEAugment(model, p=1.0)(torch.full((1, 8, 8), 16.0)).shape == (1, 8, 8)
    assert VAEAugment(rgb, p=1.0)(torch.ones(3, 8, 8)).shape == (3, 8, 8)


def test_missing_label_for_a_conditional_model(cmodel, u8) -> None:
    aug = VAEAugment(cmodel, p=1.0)
    with pytest.raises(ValueError, match=r"\(image, label\)"):
        aug(torch.from_numpy(u8[0])[None])
    with pytest.raises(ValueError, match="label"):
        aug(torch.from_numpy(u8[:4])[:, None])
    with pytest.raises(ValueError, match=r"0\.\.9"):
        aug(torch.from_numpy(u8[0])[None], 10)
    with pytest.raises(ValueError, match="3 labels for 4 images"):
        aug(torch.from_numpy(u8[:4])[:, None], torch.tensor([1, 2, 3]))


@pytest.mark.parametrize("case", ["missing_label", "label_out_of_range", "interpolate_single"])
def test_usage_errors_do_not_depend_on_the_coin_flip(case: str, model, cmodel, u8) -> None:
    """A mistake in how the transform is called must fail on every call, not on a random half."""
    img = torch.from_numpy(u8[0])[None].clone()
    if case == "missing_label":
        aug, args = VAEAugment(cmodel, p=0.5), (img,)
    elif case == "label_out_of_range":
        aug, args = VAEAugment(cmodel, p=0.5), (img, 12)
    else:
        aug, args = VAEAugment(model, p=0.5, mode="interpolate"), (img,)
    failures = 0
    for s in range(12):
        torch.manual_seed(s)
        try:
            aug(*args)
        except ValueError:
            failures += 1
    assert failures == 12


def test_mode_errors(model, u8) -> None:
    with pytest.raises(ValueError, match="conditional=True"):
        VAEAugment(model, mode="prior")
    with pytest.raises(ValueError, match="form='decode'"):
        VAEAugment(digits_conditional_model(), mode="prior", form="delta")
    aug = VAEAugment(model, p=1.0, mode="interpolate")
    with pytest.raises(ValueError, match=r"batch \(N, C, H, W\)"):
        aug(torch.from_numpy(u8[0])[None])
    with pytest.raises(ValueError, match="batch"):
        aug(PIL.Image.fromarray(u8[0]))
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        VAEAugment(model, mode="interpolate", strength=3.0)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"p": -0.1}, "p must be"), ({"p": 1.5}, "p must be"), ({"p": True}, "p must be"), ({"p": "0.5"}, "p must be"),
     ({"p": float("nan")}, "p must be"),
     ({"seed": -1}, "seed must be"), ({"seed": 1.5}, "seed must be"), ({"seed": True}, "seed must be"),
     ({"seed": "3"}, "seed must be"),
     ({"mode": "sideways"}, "mode must be one of"), ({"form": "blend"}, "form must be one of"),
     ({"strength": -1.0}, "strength must be"), ({"strength": float("nan")}, "strength must be")],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str, model) -> None:
    with pytest.raises(ValueError, match=match):
        VAEAugment(model, **kwargs)


def test_bad_models_and_inputs(model, u8) -> None:
    with pytest.raises(ValueError, match="vectors"):
        VAEAugment(vaeaug.VAE(vaeaug.VAEConfig((20,))))
    with pytest.raises(TypeError, match="VAE or a model file path"):
        VAEAugment(object())
    aug = VAEAugment(model, p=1.0)
    with pytest.raises(ValueError, match="convert"):
        aug(PIL.Image.fromarray(u8[0]).convert("P"))
    with pytest.raises(ValueError, match="convert"):
        aug(PIL.Image.fromarray(u8[0].astype(np.float32), mode="F"))
    with pytest.raises(TypeError, match="uint8 or floating-point"):
        aug(torch.zeros(1, 8, 8, dtype=torch.int32))
    with pytest.raises(TypeError, match="uint8 or floating-point"):
        aug(np.zeros((8, 8), dtype=np.int64))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        aug(torch.zeros(1, 1, 1, 8, 8))


def test_small_cpu_calls_of_the_torch_backend_run_without_onednn_and_restore_it() -> None:
    from vaeaug.backends.torch_backend import SMALL_CALL_VALUES
    from vaeaug.core.functional import perturb
    from vaeaug.core.rng import Noise

    torch.manual_seed(0)
    gen = TorchBackend(vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 28, 28))))
    seen: list[bool] = []
    decode = gen.model.decode
    gen.model.decode = lambda *a, **k: (seen.append(torch.backends.mkldnn.enabled), decode(*a, **k))[1]  # type: ignore
    setting = vaeaug.AugmentSetting()  # delta: two decoder passes per call
    small, large = SMALL_CALL_VALUES // 784, SMALL_CALL_VALUES // 784 + 1  # 10 rows of 28x28: off; 11: on
    for rows, expected in ((1, False), (small, False), (large, True)):
        seen.clear()
        x = torch.rand(rows, 1, 28, 28)
        noise = Noise.from_keys(np.arange(rows, dtype=np.uint64), 16, with_t=False)
        out = gen.generate(setting, x, None, noise)
        assert seen and all(s == expected for s in seen), (rows, seen)
        assert torch.backends.mkldnn.enabled  # restored
        with torch.inference_mode():  # the same values as with oneDNN, within float rounding
            ref = perturb(gen.model, x.contiguous(memory_format=torch.channels_last), None, mode="isotropic",
                          strength=1.0, eps=torch.from_numpy(noise.eps), form="delta")
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    # restored after an error too
    gen.model.decode = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom"))  # type: ignore
    with pytest.raises(RuntimeError, match="boom"):
        gen.generate(setting, torch.rand(1, 1, 28, 28), None, Noise.from_keys(np.arange(1, dtype=np.uint64), 16))
    assert torch.backends.mkldnn.enabled


def test_large_cpu_batches_of_the_torch_backend_run_in_calls_bounded_by_values() -> None:
    """A batch of big images runs in calls of at most CALL_VALUES input values (activations that stay
    in cache); each row's result is the one a call of that row alone gives, within float rounding, on the
    direct, the encoded and the encoding paths alike."""
    from vaeaug.core.functional import CALL_VALUES, call_rows
    from vaeaug.core.rng import Noise

    torch.manual_seed(0)
    shape = (3, 64, 64)
    gen = TorchBackend(vaeaug.VAE(vaeaug.VAEConfig(input_shape=shape, widths=(4, 4, 4, 4))))
    rows_per_call = CALL_VALUES // (3 * 64 * 64)
    assert 1 < rows_per_call == call_rows(3 * 64 * 64) < 256
    sizes: list[int] = []
    encode = gen.model.encode_onehot
    gen.model.encode_onehot = lambda x, *a: (sizes.append(len(x)), encode(x, *a))[1]  # type: ignore
    n = rows_per_call + 3
    x = torch.rand(n, *shape)
    noise = Noise.from_keys(np.arange(n, dtype=np.uint64), 16, with_t=False)
    setting = vaeaug.AugmentSetting()
    out = gen.generate(setting, x, None, noise)
    assert sizes == [rows_per_call, 3]
    one = torch.cat([gen.generate(setting, x[i:i + 1], None, Noise.from_keys(np.array([i], dtype=np.uint64), 16,
                                                                               with_t=False)) for i in range(n)])
    torch.testing.assert_close(out, one, rtol=0, atol=1e-5)
    sizes.clear()
    enc = gen.encode_sources(x.numpy(), None, delta=True)
    assert sizes == [rows_per_call, 3] and enc.mu is not None and len(enc.mu) == n
    small = TorchBackend(vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 28, 28))))
    assert CALL_VALUES // 784 > 256  # 28x28 batches of up to 256 still run in one call
    sizes.clear()
    enc28 = small.model.encode_onehot
    small.model.encode_onehot = lambda x, *a: (sizes.append(len(x)), enc28(x, *a))[1]  # type: ignore
    small.generate(setting, torch.rand(256, 1, 28, 28), None, Noise.from_keys(np.arange(256, dtype=np.uint64), 16,
                                                                              with_t=False))
    assert sizes == [256]
