"""Input normalisation (vaeaug.data) and built-in datasets (vaeaug.data.builtin), on real data.

Every accepted input form is checked against an independently computed model-space tensor
(float32 in [0, 1], NCHW or ND), and every rejected input against the ValueError that says
what was expected. Image data comes from scikit-learn's digits; Fashion-MNIST from the Debian
package files under /usr/share/datasets/fashion-mnist.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from vaeaug.data import (
    MIN_IMAGE_SIDE,
    TensorData,
    ValueRange,
    as_tensor_data,
    check_labels,
    from_arrays,
)
from vaeaug.data import builtin as vds
from vaeaug.data.builtin import load_builtin, read_idx

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
IDX_STEMS = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
N = 24  # samples used for the small array / Dataset / folder cases


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's digits bunch (images float64 0..16, (1797, 8, 8))."""
    return load_digits()


@pytest.fixture(scope="module")
def gray_u8(digits) -> np.ndarray:
    """N digit images as uint8 (N, 8, 8), 0..16 stretched to 0..255."""
    return np.round(digits.images[:N] * 255.0 / 16.0).astype(np.uint8)


@pytest.fixture(scope="module")
def labels(digits) -> np.ndarray:
    return digits.target[:N].astype(np.int64)


def tint(gray: np.ndarray) -> np.ndarray:
    """(..., H, W) uint8 -> (..., H, W, 3) uint8 with three different channels."""
    return np.stack([gray, 255 - gray, gray // 2], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def rgb_u8(gray_u8) -> np.ndarray:
    """N digit images as RGB uint8, NHWC (N, 8, 8, 3)."""
    return tint(gray_u8)


def expected_model(u8_nchw: np.ndarray) -> torch.Tensor:
    """Independent model-space reference: uint8 NCHW -> float32 / 255."""
    return torch.from_numpy(u8_nchw.astype(np.float32)) / 255.0


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file (magic 0x00 0x00 0x08 ndim, big-endian dims)."""
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


@pytest.fixture(scope="module")
def fmnist_raw() -> dict[tuple[str, str], np.ndarray]:
    """The Debian Fashion-MNIST files decoded with gzip + numpy, independently of read_idx."""
    out = {}
    for key, stem in IDX_STEMS.items():
        with gzip.open(DEBIAN / f"{stem}.gz", "rb") as f:
            raw = f.read()
        offset = 16 if key[1] == "images" else 8
        arr = np.frombuffer(raw, dtype=np.uint8, offset=offset)
        out[key] = arr.reshape(-1, 28, 28) if key[1] == "images" else arr
    return out


@pytest.fixture
def isolated_fmnist(monkeypatch, tmp_path):
    """Hide the Debian copy and $VAEAUG_FASHION_MNIST so only the given root can be found."""
    monkeypatch.delenv("VAEAUG_FASHION_MNIST", raising=False)
    monkeypatch.setattr(vds, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-here")


@pytest.fixture(scope="module")
def fmnist_debian():
    """Both splits loaded through the default lookup (Debian files), env var cleared."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("VAEAUG_FASHION_MNIST", raising=False)
        return {s: load_builtin("fashion-mnist", split=s) for s in ("train", "test")}


class ListDataset(Dataset):
    """A map-style torch Dataset over a list of items."""

    def __init__(self, items, classes=None):
        self.items = list(items)
        if classes is not None:
            self.classes = classes

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class Canary:
    """Unpickling this creates a directory: proof that something was unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


# --------------------------------------------------------------------------- arrays and tensors


# name -> (how to build the array from NCHW uint8, channels, layout that must be recorded)
FORMS = {
    "NHW": (lambda a: a[:, 0], 1, "NHW"),
    "NCHW-1": (lambda a: a, 1, "NCHW"),
    "NHWC-1": (lambda a: a.transpose(0, 2, 3, 1), 1, "NHWC"),
    "NCHW-3": (lambda a: a, 3, "NCHW"),
    "NHWC-3": (lambda a: a.transpose(0, 2, 3, 1), 3, "NHWC"),
}


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
@pytest.mark.parametrize("form", list(FORMS))
def test_array_forms_to_model_space(form, dtype, backend, gray_u8, rgb_u8, labels):
    build, channels, layout = FORMS[form]
    nchw_u8 = gray_u8[:, None] if channels == 1 else rgb_u8.transpose(0, 3, 1, 2)
    arr = np.ascontiguousarray(build(nchw_u8))
    if dtype != "uint8":
        arr = (arr.astype(np.float64) / 255.0).astype(dtype)
    data = torch.from_numpy(arr) if backend == "torch" else arr

    td = as_tensor_data(data, labels)

    assert isinstance(td, TensorData)
    assert td.x.dtype == torch.float32
    assert td.x.shape == (N, channels, 8, 8)
    assert td.x.is_contiguous()
    assert float(td.x.min()) >= 0.0 and float(td.x.max()) <= 1.0
    assert td.layout == layout
    assert td.is_image and td.sample_shape == (channels, 8, 8)
    expected_high = 255.0 if dtype == "uint8" else 1.0
    assert td.value_range == ValueRange(0.0, expected_high, dtype)
    torch.testing.assert_close(td.x, expected_model(nchw_u8), rtol=0, atol=1e-6)
    assert torch.equal(td.y, torch.from_numpy(labels))
    assert td.y.dtype == torch.int64
    assert td.num_classes == int(labels.max()) + 1


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_same_images_in_every_layout_give_the_same_model_tensor(dtype, gray_u8, rgb_u8):
    gray = gray_u8 if dtype == "uint8" else gray_u8.astype(np.float32) / 255
    rgb = rgb_u8 if dtype == "uint8" else rgb_u8.astype(np.float32) / 255

    nhw = as_tensor_data(gray).x
    nchw1 = as_tensor_data(np.ascontiguousarray(gray[:, None])).x
    nhwc1 = as_tensor_data(np.ascontiguousarray(gray[..., None])).x
    assert torch.equal(nhw, nchw1) and torch.equal(nhw, nhwc1)

    nhwc3 = as_tensor_data(rgb).x
    nchw3 = as_tensor_data(np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))).x
    nhwc3_torch = as_tensor_data(torch.from_numpy(rgb)).x
    nhwc3_view = as_tensor_data(torch.from_numpy(rgb.transpose(0, 3, 1, 2)).permute(0, 2, 3, 1)).x
    assert torch.equal(nhwc3, nchw3)
    assert torch.equal(nhwc3, nhwc3_torch)
    assert torch.equal(nhwc3, nhwc3_view)
    # the channels really are kept apart (tint makes them differ)
    assert not torch.equal(nhwc3[:, 0], nhwc3[:, 1])
    assert torch.equal(nhwc3[:, 0:1], nhw if dtype == "uint8" else nchw1)


def test_uint8_and_float_versions_agree(gray_u8):
    from_u8 = as_tensor_data(gray_u8)
    from_float = as_tensor_data(gray_u8.astype(np.float64) / 255.0)
    torch.testing.assert_close(from_u8.x, from_float.x, rtol=0, atol=1e-7)
    assert from_u8.value_range == ValueRange(0.0, 255.0, "uint8")
    assert from_float.value_range == ValueRange(0.0, 1.0, "float64")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_vectors_nd(backend, digits):
    vec = digits.data  # (1797, 64) float64 in 0..16
    data = torch.from_numpy(vec) if backend == "torch" else vec
    td = as_tensor_data(data, digits.target, value_range=(0, 16))
    assert td.layout == "ND" and not td.is_image
    assert td.x.shape == (1797, 64) and td.x.dtype == torch.float32
    assert torch.equal(td.x, torch.from_numpy(vec.astype(np.float32)) / 16)
    assert td.value_range == ValueRange(0.0, 16.0, "float64")
    assert torch.equal(td.value_range.from_model(td.x), torch.from_numpy(vec))

    unit = as_tensor_data(vec / 16.0)  # floats in [0, 1]: range inferred
    assert unit.value_range == ValueRange(0.0, 1.0, "float64")
    assert unit.y is None and unit.num_classes is None


def test_uint8_round_trip_is_exact_for_every_value():
    x = np.arange(256, dtype=np.uint8).reshape(4, 8, 8)
    td = as_tensor_data(x)
    assert td.value_range == ValueRange(0.0, 255.0, "uint8")
    assert float(td.x.min()) == 0.0 and float(td.x.max()) == 1.0
    back = td.value_range.from_model(td.x)
    assert back.dtype == torch.uint8
    assert torch.equal(back, torch.from_numpy(x)[:, None])


def test_explicit_value_range_maps_to_unit_interval():
    x = np.linspace(-3.0, 5.0, 2 * 64).reshape(2, 8, 8)
    td = as_tensor_data(x, value_range=(-3, 5))
    assert float(td.x.min()) == 0.0 and float(td.x.max()) == 1.0
    torch.testing.assert_close(td.x, torch.from_numpy((x[:, None] + 3) / 8).float())
    td2 = as_tensor_data(x, value_range=ValueRange(-4.0, 6.0, "float32"))
    assert td2.value_range.dtype == "float32"
    assert float(td2.x.min()) > 0.0 and float(td2.x.max()) < 1.0


def test_int16_data_with_value_range(gray_u8):
    x = gray_u8.astype(np.int16) - 100
    td = as_tensor_data(x, value_range=(-100, 155))
    assert td.value_range == ValueRange(-100.0, 155.0, "int16")
    assert torch.equal(td.value_range.from_model(td.x), torch.from_numpy(x)[:, None])


def test_uint16_images_with_value_range():
    # 16-bit images (e.g. 16-bit PNG) are integer images like int16; with an explicit
    # value_range they must convert, and without one ask for it with a ValueError.
    x = (np.arange(2 * 8 * 8).reshape(2, 8, 8) * 500).astype(np.uint16)  # max 63500
    with pytest.raises(ValueError, match="value_range"):
        as_tensor_data(x)
    td = as_tensor_data(x, value_range=(0, 65535))
    torch.testing.assert_close(td.x, torch.from_numpy(x[:, None].astype(np.float32)) / 65535)
    assert torch.equal(td.value_range.from_model(td.x).to(torch.int64),
                       torch.from_numpy(x[:, None].astype(np.int64)))


def test_read_only_and_non_contiguous_numpy_inputs(gray_u8):
    ro = gray_u8.copy()
    ro.flags.writeable = False
    flipped = gray_u8[:, ::-1, :]
    assert torch.equal(as_tensor_data(ro).x, expected_model(gray_u8[:, None]))
    assert torch.equal(as_tensor_data(flipped).x, expected_model(np.ascontiguousarray(flipped[:, None])))


def test_tensor_data_is_passed_through(gray_u8):
    td = as_tensor_data(gray_u8)
    assert as_tensor_data(td) is td


# --------------------------------------------------------------------------- torch Datasets


def _item(kind: str, gray: np.ndarray):
    if kind == "pil-L":
        return Image.fromarray(gray, mode="L")
    if kind == "pil-RGB":
        return Image.fromarray(tint(gray), mode="RGB")
    if kind == "tensor-chw-uint8":
        return torch.from_numpy(tint(gray)).permute(2, 0, 1).contiguous()
    if kind == "tensor-chw-float":  # what v2.ToTensor / ToImage+ToDtype(scale=True) yields
        return torch.from_numpy(tint(gray)).permute(2, 0, 1).float() / 255
    if kind == "numpy-hwc-uint8":
        return tint(gray)
    if kind == "numpy-hwc-gray":
        return gray[:, :, None].copy()
    raise AssertionError(kind)


@pytest.mark.parametrize("labelled", [False, True], ids=["x", "x-y"])
@pytest.mark.parametrize(
    "kind",
    ["pil-L", "pil-RGB", "tensor-chw-uint8", "tensor-chw-float", "numpy-hwc-uint8", "numpy-hwc-gray"],
)
def test_dataset_items(kind, labelled, gray_u8, labels):
    items = [_item(kind, g) for g in gray_u8]
    if labelled:
        # labels as a mix of int, numpy int and 0-d tensor, as real datasets yield them
        wrap = [int, np.int64, torch.tensor]
        items = [(x, wrap[i % 3](int(k))) for i, (x, k) in enumerate(zip(items, labels, strict=False))]
    classes = [str(i) for i in range(10)]
    td = as_tensor_data(ListDataset(items, classes=classes if labelled else None))

    rgb = kind not in ("pil-L", "numpy-hwc-gray")
    ref = tint(gray_u8).transpose(0, 3, 1, 2) if rgb else gray_u8[:, None]
    assert td.x.shape == (N, 3 if rgb else 1, 8, 8)
    assert td.x.dtype == torch.float32
    torch.testing.assert_close(td.x, expected_model(ref), rtol=0, atol=1e-6)
    float_input = kind == "tensor-chw-float"
    assert td.value_range == ValueRange(0.0, 1.0 if float_input else 255.0,
                                        "float32" if float_input else "uint8")
    assert td.source == "ListDataset"
    if labelled:
        assert torch.equal(td.y, torch.from_numpy(labels))
        assert td.class_names == classes
        assert check_labels(td) == 10
    else:
        assert td.y is None and td.class_names is None


def test_dataset_same_as_stacked_tensor(gray_u8):
    chw = [torch.from_numpy(tint(g)).permute(2, 0, 1).contiguous() for g in gray_u8]
    assert torch.equal(as_tensor_data(ListDataset(chw)).x, as_tensor_data(torch.stack(chw)).x)


def test_dataset_of_vectors(digits):
    vecs = [torch.from_numpy(v / 16.0) for v in digits.data[:N]]
    td = as_tensor_data(ListDataset(vecs))
    assert td.layout == "ND" and td.x.shape == (N, 64)
    torch.testing.assert_close(td.x, torch.from_numpy(digits.data[:N] / 16.0).float())


def test_dataset_of_bfloat16_tensors(gray_u8):
    # bfloat16 is an accepted dtype for tensors; a Dataset yielding such tensors must work too.
    chw = [torch.from_numpy(g[None].astype(np.float32) / 255).to(torch.bfloat16) for g in gray_u8]
    direct = as_tensor_data(torch.stack(chw))
    via_ds = as_tensor_data(ListDataset(chw))
    assert torch.equal(via_ds.x, direct.x)
    assert (via_ds.value_range.low, via_ds.value_range.high) == (0.0, 1.0)


def test_dataset_with_y_argument_is_rejected(gray_u8, labels):
    with pytest.raises(ValueError, match="carries its own labels"):
        as_tensor_data(ListDataset(list(gray_u8)), labels)


# --------------------------------------------------------------------------- image folders


def write_folder(root: Path, gray_u8, labels, *, mode: str, scale: int) -> dict[str, np.ndarray]:
    """Write PNGs in ImageFolder layout; return {file path: HWC or HW uint8 pixels written}.

    Class folders are named so that their sorted order differs from the digit value, and file
    names so that their sorted order differs from numeric order (img_10 < img_2).
    """
    names = {0: "zero", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six",
             7: "seven", 8: "eight", 9: "nine"}
    written = {}
    for k, (g, lab) in enumerate(zip(gray_u8, labels, strict=False)):
        if scale > 1:
            g = np.kron(g, np.ones((scale, scale), dtype=np.uint8))
        pix = g if mode == "L" else tint(g)
        d = root / names[int(lab)]
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"img_{k}.png"
        Image.fromarray(pix, mode=mode).save(path)
        written[str(path)] = pix
    return written


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("scale", [1, 2], ids=["8px", "16px"])
def test_image_folder_matches_torchvision_imagefolder(tmp_path, gray_u8, labels, mode, scale):
    root = tmp_path / "folder"
    written = write_folder(root, gray_u8, labels, mode=mode, scale=scale)

    td = as_tensor_data(root)
    ref = ImageFolder(str(root), loader=lambda p: Image.open(p).convert(mode))

    side = 8 * scale
    channels = 1 if mode == "L" else 3
    assert td.x.shape == (N, channels, side, side)
    assert td.class_names == ref.classes
    assert td.class_names == sorted(td.class_names)
    assert torch.equal(td.y, torch.tensor(ref.targets))
    # pixels in ImageFolder order, from what was written to each file
    order = [written[p] for p, _ in ref.samples]
    stacked = np.stack(order)
    nchw = stacked[:, None] if mode == "L" else stacked.transpose(0, 3, 1, 2)
    assert torch.equal(td.x, expected_model(np.ascontiguousarray(nchw)))
    assert td.value_range == ValueRange(0.0, 255.0, "uint8")
    assert td.source == "folder"
    # the order is not just the writing order (so the comparison above is meaningful)
    assert [p for p, _ in ref.samples] != list(written)
    # and the same folder read through torchvision's ImageFolder as a Dataset agrees
    via_ds = as_tensor_data(ref)
    assert torch.equal(via_ds.x, td.x) and torch.equal(via_ds.y, td.y)
    assert via_ds.class_names == td.class_names
    # str path works the same as Path
    assert torch.equal(as_tensor_data(str(root)).x, td.x)


def test_image_folder_mixed_sizes_names_the_file(tmp_path, gray_u8, labels):
    root = tmp_path / "mixed"
    write_folder(root, gray_u8[:6], [3] * 6, mode="L", scale=1)
    odd = root / "three" / "img_9.png"  # sorts last in its class
    Image.fromarray(np.kron(gray_u8[7], np.ones((2, 2), np.uint8)), mode="L").save(odd)
    with pytest.raises(ValueError, match=re.escape(str(odd)) + r".*same size"):
        as_tensor_data(root)


def test_image_folder_mixed_modes_names_the_file(tmp_path, gray_u8):
    root = tmp_path / "modes"
    write_folder(root, gray_u8[:4], [1] * 4, mode="L", scale=1)
    odd = root / "two" / "rgb.png"  # class "two" sorts after "one"
    odd.parent.mkdir()
    Image.fromarray(tint(gray_u8[5]), mode="RGB").save(odd)
    with pytest.raises(ValueError, match=re.escape(str(odd)) + r".*channels"):
        as_tensor_data(root)


def test_image_folder_too_small_images(tmp_path, gray_u8):
    root = tmp_path / "small"
    (root / "a").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(gray_u8[i, :7, :7], mode="L").save(root / "a" / f"{i}.png")
    with pytest.raises(ValueError, match=rf"at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}.*7x7"):
        as_tensor_data(root)


def test_image_folder_without_images_or_classes(tmp_path):
    no_classes = tmp_path / "no_classes"
    no_classes.mkdir()
    with pytest.raises(ValueError, match="not an image folder.*one sub-folder per class"):
        as_tensor_data(no_classes)
    no_images = tmp_path / "no_images"
    (no_images / "cat").mkdir(parents=True)
    (no_images / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="not an image folder"):
        as_tensor_data(no_images)


# --------------------------------------------------------------------------- .npz files


def test_npz_with_x_y_and_class_names(tmp_path, gray_u8, labels):
    path = tmp_path / "data.npz"
    names = np.array([f"digit {i}" for i in range(10)])
    np.savez(path, x=gray_u8, y=labels, class_names=names)
    td = as_tensor_data(path)
    assert torch.equal(td.x, expected_model(gray_u8[:, None]))
    assert torch.equal(td.y, torch.from_numpy(labels))
    assert td.class_names == list(names)
    assert td.source == "data.npz"
    assert torch.equal(as_tensor_data(str(path)).x, td.x)


def test_npz_with_only_x(tmp_path, rgb_u8):
    path = tmp_path / "x_only.npz"
    np.savez_compressed(path, x=rgb_u8)
    td = as_tensor_data(path)
    assert td.y is None and td.class_names is None
    assert torch.equal(td.x, expected_model(rgb_u8.transpose(0, 3, 1, 2).copy()))


def test_npz_layout_and_value_range_are_used(tmp_path, digits):
    path = tmp_path / "digits.npz"
    np.savez(path, x=digits.images[:N], y=digits.target[:N])
    with pytest.raises(ValueError, match="value_range"):
        as_tensor_data(path)
    td = as_tensor_data(path, value_range=(0, 16))
    assert torch.equal(td.value_range.from_model(td.x), torch.from_numpy(digits.images[:N, None]))


def test_npz_without_x(tmp_path, gray_u8):
    path = tmp_path / "images.npz"
    np.savez(path, images=gray_u8)
    with pytest.raises(ValueError, match=r"\['images'\].*expected an array named 'x'"):
        as_tensor_data(path)


@pytest.mark.parametrize("where", ["x", "y"])
def test_npz_object_array_is_not_unpickled(tmp_path, gray_u8, where):
    canary = tmp_path / "unpickled"
    obj = np.empty(N, dtype=object)
    obj[:] = 0
    obj[0] = Canary(str(canary))  # one only: a second os.mkdir of the same path would fail
    path = tmp_path / "obj.npz"
    if where == "x":
        np.savez(path, x=obj)
    else:
        np.savez(path, x=gray_u8, y=obj)

    with pytest.raises(ValueError, match="object arrays.*never unpickles"):
        as_tensor_data(path)
    assert not canary.exists()
    # control: the file really is booby-trapped, unpickling it creates the canary
    with np.load(path, allow_pickle=True) as npz:
        npz[where]
    assert canary.exists()


def test_npz_not_a_zip_is_reported_as_unreadable(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(ValueError, match="cannot read") as e:
        as_tensor_data(path)
    assert "object arrays" not in str(e.value)


def test_npz_wrong_label_length(tmp_path, gray_u8, labels):
    path = tmp_path / "short.npz"
    np.savez(path, x=gray_u8, y=labels[:-1])
    with pytest.raises(ValueError, match=rf"labels must have shape \({N},\).*\({N - 1},\)"):
        as_tensor_data(path)


def test_npz_empty_x(tmp_path):
    path = tmp_path / "empty.npz"
    np.savez(path, x=np.zeros((0, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        as_tensor_data(path)


# --------------------------------------------------------------------------- built-in digits


@pytest.mark.parametrize("split,n,sl", [("train", 1437, slice(0, 1437)),
                                         ("test", 360, slice(1437, None)),
                                         ("all", 1797, slice(None))])
def test_builtin_digits(split, n, sl, digits):
    td = load_builtin("digits", split=split)
    assert len(td) == n
    assert td.x.shape == (n, 1, 8, 8) and td.x.dtype == torch.float32
    assert td.value_range == ValueRange(0.0, 16.0, "float64")
    assert td.class_names == [str(i) for i in range(10)]
    assert td.num_classes == 10 and check_labels(td) == 10
    assert float(td.x.min()) == 0.0 and float(td.x.max()) == 1.0  # digits use all of 0..16
    assert torch.equal(td.x, torch.from_numpy(digits.images[sl, None].astype(np.float32)) / 16)
    assert torch.equal(td.y, torch.from_numpy(digits.target[sl]).long())
    # exact round trip back to the user's values and dtype
    back = td.value_range.from_model(td.x)
    assert back.dtype == torch.float64
    assert torch.equal(back, torch.from_numpy(digits.images[sl, None]))


def test_builtin_digits_by_name_and_alias():
    a = as_tensor_data("digits", split="test")
    b = as_tensor_data("DIGITS", split="test")
    assert len(a) == 360 and torch.equal(a.x, b.x)
    assert a.source == "digits[test]"


def test_builtin_digits_bad_split():
    with pytest.raises(ValueError, match="digits split must be 'train', 'test' or 'all'"):
        load_builtin("digits", split="validation")


# --------------------------------------------------------------------------- built-in Fashion-MNIST


@pytest.mark.parametrize("split,n", [("train", 60000), ("test", 10000)])
def test_fashion_mnist_debian(fmnist_debian, fmnist_raw, split, n):
    td = fmnist_debian[split]
    raw_x, raw_y = fmnist_raw[(split, "images")], fmnist_raw[(split, "labels")]
    assert raw_x.shape == (n, 28, 28) and raw_x.dtype == np.uint8
    assert int(raw_x.min()) == 0 and int(raw_x.max()) == 255
    assert len(td) == n and td.x.shape == (n, 1, 28, 28) and td.x.dtype == torch.float32
    assert td.value_range == ValueRange(0.0, 255.0, "uint8")
    assert td.class_names == vds.FASHION_MNIST_CLASSES and len(td.class_names) == 10
    assert td.class_names[0] == "T-shirt/top" and td.class_names[9] == "Ankle boot"
    assert torch.equal(torch.bincount(td.y), torch.full((10,), n // 10))  # balanced classes
    assert torch.equal(td.y, torch.from_numpy(raw_y.astype(np.int64)))
    back = td.value_range.from_model(td.x)
    assert back.dtype == torch.uint8
    assert torch.equal(back[:, 0], torch.from_numpy(raw_x.copy()))
    assert check_labels(td) == 10


def test_fashion_mnist_by_name_and_aliases(fmnist_debian, monkeypatch):
    monkeypatch.delenv("VAEAUG_FASHION_MNIST", raising=False)
    for name in ("fashion-mnist", "fashion_mnist", "FashionMNIST"):
        td = as_tensor_data(name, split="test")
        assert torch.equal(td.x, fmnist_debian["test"].x)


def test_fashion_mnist_torchvision_layout(tmp_path, isolated_fmnist, fmnist_debian):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in IDX_STEMS.values():
        (raw / f"{stem}.gz").symlink_to(DEBIAN / f"{stem}.gz")

    assert vds.find_fashion_mnist(tmp_path) == raw
    assert vds.find_fashion_mnist(raw) == raw
    td = load_builtin("fashion-mnist", root=tmp_path, split="test")
    assert torch.equal(td.x, fmnist_debian["test"].x)
    assert torch.equal(td.y, fmnist_debian["test"].y)


def _write_subset(folder: Path, fmnist_raw, n_train: int, n_test: int, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"train": n_train, "test": n_test}
    for (split, kind), stem in IDX_STEMS.items():
        data = idx_bytes(fmnist_raw[(split, kind)][: sizes[split]])
        if gz:
            with gzip.open(folder / f"{stem}.gz", "wb") as f:
                f.write(data)
        else:
            (folder / stem).write_bytes(data)


@pytest.mark.parametrize("gz", [False, True], ids=["raw-idx", "gz"])
def test_fashion_mnist_root_is_used_not_the_debian_copy(tmp_path, fmnist_raw, gz):
    # a 300/200 subset in root must win over the Debian copy (which is still visible)
    _write_subset(tmp_path / "FashionMNIST" / "raw", fmnist_raw, 300, 200, gz)
    train = load_builtin("fashion-mnist", root=tmp_path, split="train")
    test = load_builtin("fashion-mnist", root=tmp_path, split="test")
    assert len(train) == 300 and len(test) == 200
    assert torch.equal(train.x, expected_model(fmnist_raw[("train", "images")][:300, None].copy()))
    assert torch.equal(test.y, torch.from_numpy(fmnist_raw[("test", "labels")][:200].astype(np.int64)))


def test_fashion_mnist_env_var(tmp_path, fmnist_raw, monkeypatch):
    _write_subset(tmp_path / "env", fmnist_raw, 50, 40, gz=False)
    monkeypatch.setenv("VAEAUG_FASHION_MNIST", str(tmp_path / "env"))
    assert len(load_builtin("fashion-mnist", split="test")) == 40


def test_fashion_mnist_not_found(tmp_path, isolated_fmnist):
    with pytest.raises(ValueError, match="Fashion-MNIST IDX files not found.*root="):
        load_builtin("fashion-mnist", root=tmp_path / "empty")


def test_fashion_mnist_bad_split():
    with pytest.raises(ValueError, match="fashion-mnist split must be 'train' or 'test'"):
        load_builtin("fashion-mnist", split="all")


def test_read_idx_real_files(fmnist_raw):
    images = read_idx(DEBIAN / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(DEBIAN / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,)
    assert np.array_equal(images, fmnist_raw[("test", "images")])
    assert np.array_equal(labels, fmnist_raw[("test", "labels")])


@pytest.fixture(scope="module")
def t10k_labels_bytes() -> bytes:
    with gzip.open(DEBIAN / "t10k-labels-idx1-ubyte.gz", "rb") as f:
        return f.read()


def test_read_idx_truncated_data(tmp_path, t10k_labels_bytes):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(t10k_labels_bytes[:-10])
    with pytest.raises(ValueError, match=r"declares shape \(10000,\).*9990 bytes.*truncated"):
        read_idx(path)
    too_long = tmp_path / "long-idx1-ubyte"
    too_long.write_bytes(t10k_labels_bytes + b"\x00")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx(too_long)


def test_read_idx_truncated_header(tmp_path, t10k_labels_bytes):
    path = tmp_path / "hdr-idx1-ubyte"
    path.write_bytes(t10k_labels_bytes[:6])
    with pytest.raises(ValueError, match="truncated inside its header"):
        read_idx(path)


@pytest.mark.parametrize("magic", [b"\x00\x00\x0d\x01", b"\x01\x00\x08\x01", b"PK\x03\x04", b"\x00"])
def test_read_idx_bad_magic(tmp_path, t10k_labels_bytes, magic):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(magic + t10k_labels_bytes[4:] if len(magic) == 4 else magic)
    with pytest.raises(ValueError, match="not an unsigned-byte IDX file.*bad magic"):
        read_idx(path)


def test_read_idx_truncated_gzip(tmp_path):
    src = (DEBIAN / "t10k-labels-idx1-ubyte.gz").read_bytes()
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(src[: len(src) // 2])
    with pytest.raises(ValueError, match="cannot read IDX file"):
        read_idx(path)


def test_truncated_file_in_root_is_an_error_not_a_fallback(tmp_path, fmnist_raw):
    raw = tmp_path / "FashionMNIST" / "raw"
    _write_subset(raw, fmnist_raw, 30, 20, gz=False)
    p = raw / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-28])
    with pytest.raises(ValueError, match="truncated"):
        load_builtin("fashion-mnist", root=tmp_path, split="test")
    # mismatched images/labels counts
    _write_subset(tmp_path / "mm", fmnist_raw, 30, 20, gz=False)
    (tmp_path / "mm" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(fmnist_raw[("test", "labels")][:21]))
    with pytest.raises(ValueError, match=r"do not match.*\(20, 28, 28\).*\(21,\)"):
        load_builtin("fashion-mnist", root=tmp_path / "mm", split="test")


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "data",
    [np.zeros((0, 8, 8), np.uint8), torch.zeros(0, 1, 8, 8), np.zeros((0, 5)),
     np.zeros((5,), np.float32)],
    ids=["numpy-NHW", "torch-NCHW", "vectors", "1-D"],
)
def test_empty_data(data):
    with pytest.raises(ValueError, match=r"empty or has no sample dimension.*N >= 1"):
        as_tensor_data(data)


def test_empty_dataset():
    with pytest.raises(ValueError, match="dataset is empty.*at least one sample"):
        as_tensor_data(ListDataset([]))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_non_finite_values_name_first_sample(gray_u8, bad, dtype, backend):
    x = np.ascontiguousarray(tint(gray_u8).astype(dtype) / 255)  # NHWC
    x[5, 2, 3, 1] = bad
    x[3, 7, 0, 2] = bad
    data = torch.from_numpy(x) if backend == "torch" else x
    with pytest.raises(ValueError, match=r"NaN or Inf.*first in sample 3\b.*expected finite"):
        as_tensor_data(data, value_range=(0, 1))


def test_non_finite_in_dataset_and_vectors(gray_u8):
    items = [torch.from_numpy(g[None].astype(np.float32) / 255) for g in gray_u8]
    items[11][0, 4, 4] = float("nan")
    with pytest.raises(ValueError, match=r"first in sample 11\b"):
        as_tensor_data(ListDataset(items))
    vec = np.zeros((6, 4))
    vec[4, 1] = np.inf
    with pytest.raises(ValueError, match=r"first in sample 4\b"):
        as_tensor_data(vec)


def test_dataset_mixed_shapes_names_first_index(gray_u8):
    items = [Image.fromarray(g, mode="L") for g in gray_u8]
    big = Image.fromarray(np.kron(gray_u8[0], np.ones((2, 2), np.uint8)), mode="L")
    items[4] = big
    items[9] = big
    with pytest.raises(ValueError, match=r"dataset sample 4 has shape \(16, 16\).*sample 0 has \(8, 8\)"):
        as_tensor_data(ListDataset(items))
    # an RGB image among grayscale ones is a shape mismatch too
    items = [Image.fromarray(g, mode="L") for g in gray_u8]
    items[6] = items[6].convert("RGB")
    with pytest.raises(ValueError, match=r"dataset sample 6 has shape \(8, 8, 3\)"):
        as_tensor_data(ListDataset(items))


def test_dataset_mixed_dtypes_and_forms(gray_u8):
    items = [torch.from_numpy(g[None].copy()) for g in gray_u8]
    items[2] = items[2].float() / 255
    with pytest.raises(ValueError, match=r"dataset sample 2 .*dtype float32.*convert them to one dtype"):
        as_tensor_data(ListDataset(items))
    items = [(torch.from_numpy(g[None].copy()), 0) for g in gray_u8]
    items[5] = items[5][0]
    with pytest.raises(ValueError, match=r"dataset sample 5 is x but sample 0 was \(x, y\)"):
        as_tensor_data(ListDataset(items))


def test_dataset_item_of_wrong_type():
    with pytest.raises(TypeError, match="dataset sample 0 is a str; expected a PIL image"):
        as_tensor_data(ListDataset(["not an image"] * 3))


def test_ambiguous_layout_asks_for_layout():
    x = np.zeros((4, 3, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=r"ambiguous layout for shape \(4, 3, 32, 3\).*layout='NHWC'"):
        as_tensor_data(x)
    # layout= is honoured: no longer ambiguous, the shape is read as asked. With an 8 px minimum
    # side no reading of an ambiguous shape is large enough, so each is then rejected as too small.
    with pytest.raises(ValueError, match=r"got 3x32 \(shape \(4, 3, 32, 3\) read as NHWC\)"):
        as_tensor_data(x, layout="NHWC")
    with pytest.raises(ValueError, match=r"got 32x3 \(shape \(4, 3, 32, 3\) read as NCHW\)"):
        as_tensor_data(x, layout="NCHW")


def test_explicit_layout_overrides_inference(rgb_u8):
    inferred = as_tensor_data(rgb_u8)
    explicit = as_tensor_data(rgb_u8, layout="NHWC")
    assert torch.equal(inferred.x, explicit.x) and explicit.layout == "NHWC"
    with pytest.raises(ValueError, match=r"1, 3 or 4 channels; got 8 .*read as NCHW.*layout="):
        as_tensor_data(rgb_u8, layout="NCHW")
    with pytest.raises(ValueError, match=r"layout 'NHW' needs a 3-D array"):
        as_tensor_data(rgb_u8, layout="NHW")
    # (N, 64) vectors read as images on request is a dimension error, not a silent reshape
    with pytest.raises(ValueError, match=r"layout 'NCHW' needs a 4-D array"):
        as_tensor_data(np.zeros((3, 64), np.uint8), layout="NCHW")


@pytest.mark.parametrize("call", ["as_tensor_data", "from_arrays"])
def test_unknown_layout_name(gray_u8, call):
    fn = as_tensor_data if call == "as_tensor_data" else from_arrays
    with pytest.raises(ValueError, match=r"layout must be one of .*'CHW'"):
        fn(gray_u8, layout="CHW")


def test_no_channel_axis():
    with pytest.raises(ValueError, match=r"cannot find a channel axis .*\(N, C, H, W\) or \(N, H, W, C\)"):
        as_tensor_data(np.zeros((2, 8, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"got 5-D shape"):
        as_tensor_data(np.zeros((2, 1, 8, 8, 1), np.uint8))


@pytest.mark.parametrize(
    "shape,got",
    [((4, 7, 7), "7x7"), ((4, 8, 7), "8x7"), ((4, 1, 7, 9), "7x9"), ((4, 7, 7, 3), "7x7"),
     ((4, 2, 2), "2x2")],
)
def test_images_smaller_than_min_side(shape, got):
    with pytest.raises(ValueError, match=rf"at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels; got {got}.*upscale"):
        as_tensor_data(np.zeros(shape, np.uint8))


def test_min_side_is_eight_and_inclusive():
    assert MIN_IMAGE_SIDE == 8
    assert as_tensor_data(np.zeros((1, 8, 8), np.uint8)).x.shape == (1, 1, 8, 8)


def test_small_vectors_are_fine():
    td = as_tensor_data(np.array([[0.0], [1.0]]))
    assert td.x.shape == (2, 1) and td.layout == "ND"


@pytest.mark.parametrize("scale,shift", [(1.0001, 0.0), (16.0, 0.0), (1.0, -0.25)])
def test_float_outside_unit_interval_needs_value_range(gray_u8, scale, shift):
    x = gray_u8.astype(np.float32) / 255 * scale + shift
    with pytest.raises(ValueError, match=r"cannot infer the value range .*pass value_range=\(low, high\)"):
        as_tensor_data(x)


def test_integer_non_uint8_needs_value_range(digits):
    with pytest.raises(ValueError, match=r"int64 data with values in \[0, 16\].*value_range="):
        as_tensor_data(digits.images.astype(np.int64))


@pytest.mark.parametrize("value_range", [(0, 15.5), (0.5, 16), (1, 20)])
def test_data_outside_explicit_value_range_is_not_clipped(digits, value_range):
    with pytest.raises(ValueError, match=r"data values span \[0, 16\], outside value_range .*nothing is clipped"):
        as_tensor_data(digits.images, value_range=value_range)


def test_uint8_outside_explicit_value_range(gray_u8):
    assert int(gray_u8.max()) == 255
    with pytest.raises(ValueError, match=r"outside value_range \[0, 200\]"):
        as_tensor_data(gray_u8, value_range=(0, 200))


@pytest.mark.parametrize("value_range", [(1, 1), (2, 1), (0, float("inf")), (0,), "0..1"])
def test_invalid_value_range(gray_u8, value_range):
    with pytest.raises(ValueError, match="value_range must be"):
        as_tensor_data(gray_u8, value_range=value_range)


@pytest.mark.parametrize(
    "y,match",
    [("short", r"labels must have shape \(24,\) to match the data; got \(23,\)"),
     ("long", r"labels must have shape \(24,\) to match the data; got \(25,\)"),
     ("2d", r"labels must have shape \(24,\) to match the data; got \(24, 1\)"),
     ("float", "labels must be integers; got non-integer float labels"),
     ("str", "labels must be integers; got dtype <U")],
)
def test_bad_labels(gray_u8, labels, y, match):
    bad = {"short": labels[:-1], "long": np.append(labels, 1), "2d": labels[:, None],
           "float": labels + 0.5, "str": labels.astype(str)}[y]
    with pytest.raises(ValueError, match=match):
        as_tensor_data(gray_u8, bad)


def test_integral_float_and_tensor_labels_are_accepted(gray_u8, labels):
    assert torch.equal(as_tensor_data(gray_u8, labels.astype(np.float32)).y, torch.from_numpy(labels))
    assert torch.equal(as_tensor_data(gray_u8, torch.from_numpy(labels)).y, torch.from_numpy(labels))


def test_check_labels(gray_u8, labels):
    with pytest.raises(ValueError, match="class-conditional model needs labels.*conditional=False"):
        check_labels(as_tensor_data(gray_u8))
    with pytest.raises(ValueError, match="class-conditional model needs labels"):
        check_labels(as_tensor_data(ListDataset(list(gray_u8))))

    neg = labels.copy()
    neg[7], neg[12] = -1, -3
    with pytest.raises(ValueError, match=r">= 0 .*label of sample 7 is -1\b.*0..K-1"):
        check_labels(as_tensor_data(gray_u8, neg))

    assert check_labels(as_tensor_data(gray_u8, labels)) == int(labels.max()) + 1
    assert check_labels(as_tensor_data(gray_u8, labels), num_classes=12) == 12
    k = int(labels.max())
    first = int(np.argmax(labels >= k))
    with pytest.raises(ValueError, match=rf"labels must be in 0..{k - 1} for {k} classes; label of sample {first}\b"):
        check_labels(as_tensor_data(gray_u8, labels), num_classes=k)
    # class names fix the number of classes: a label beyond them is an error
    short_names = from_arrays(gray_u8, labels, class_names=[str(i) for i in range(k)])
    with pytest.raises(ValueError, match=rf"labels must be in 0..{k - 1}"):
        check_labels(short_names)


def test_unknown_builtin_name():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist-ish'.*digits, fashion-mnist"):
        as_tensor_data("mnist-ish")
    with pytest.raises(ValueError, match=r"unknown built-in dataset 'cifar10'; expected one of digits, fashion-mnist"):
        load_builtin("cifar10")


def test_nonexistent_path(tmp_path):
    missing = tmp_path / "missing_folder"
    with pytest.raises(ValueError, match=re.escape(repr(str(missing))) + ".*not an existing path"):
        as_tensor_data(missing)


def test_nonexistent_npz_path(tmp_path):
    missing = tmp_path / "missing.npz"
    with pytest.raises(FileNotFoundError, match=re.escape(repr(str(missing)))):
        as_tensor_data(missing)


def test_existing_file_that_is_not_data(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ValueError, match="neither a .npz file nor an image folder"):
        as_tensor_data(path)


@pytest.mark.parametrize("data", [42, None, 3.5], ids=["int", "None", "float"])
def test_unsupported_type(data):
    with pytest.raises(TypeError, match="data must be a numpy array, torch tensor"):
        as_tensor_data(data)


@pytest.mark.parametrize("dtype", [np.bool_, np.complex64])
def test_bool_and_complex_arrays(dtype):
    with pytest.raises(ValueError, match="x must hold integers or floats"):
        as_tensor_data(np.zeros((2, 8, 8), dtype))


def test_arguments_that_a_path_or_builtin_would_ignore_are_refused(tmp_path):
    with pytest.raises(ValueError, match="drop the y argument"):
        as_tensor_data("digits", y=np.zeros(1437, dtype=int))
    with pytest.raises(ValueError, match="layout do not apply"):
        as_tensor_data("digits", layout="NHW")
    (tmp_path / "a").mkdir()
    with pytest.raises(ValueError, match="value_range do not apply"):
        as_tensor_data(tmp_path, value_range=(0, 255))


def test_tensordataset_of_images_only_is_unlabelled():
    x = torch.rand(6, 1, 8, 8)
    d = as_tensor_data(torch.utils.data.TensorDataset(x))
    assert d.y is None and torch.equal(d.x, x)
