"""Input normalisation: every accepted data form becomes one :class:`TensorData` in model space.

Model space is float32 in ``[0, 1]``: images ``(N, C, H, W)``, vectors ``(N, D)``. The
original value range and dtype are kept in a :class:`ValueRange` so generated samples can be
returned in the user's range. Nothing is silently clipped, resized or dropped: input that does
not fit gets a ``ValueError`` saying what was expected, what came and how to fix it.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .config import ValueRange

__all__ = [
    "Layout",
    "ValueRange",
    "TensorData",
    "as_tensor_data",
    "check_labels",
    "MIN_IMAGE_SIDE",
]

Layout = Literal["NCHW", "NHWC", "NHW", "ND"]
_LAYOUTS = ("NCHW", "NHWC", "NHW", "ND")
_CHANNELS = (1, 3, 4)
MIN_IMAGE_SIDE = 8


@dataclass
class TensorData:
    """Data in model space, ready for fitting.

    Attributes:
        x: float32 in ``[0, 1]``, ``(N, C, H, W)`` for images or ``(N, D)`` for vectors.
        y: int64 labels ``(N,)`` or ``None``.
        value_range: the user's value range and dtype.
        class_names: names for labels ``0..K-1`` when known.
        source: a short description of where the data came from.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    value_range: ValueRange
    class_names: list[str] | None = None
    source: str = "array"
    layout: str = "NCHW"

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def is_image(self) -> bool:
        """True for ``(N, C, H, W)`` images, False for ``(N, D)`` vectors."""
        return self.x.dim() == 4

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample in model space."""
        return tuple(int(s) for s in self.x.shape[1:])

    @property
    def num_classes(self) -> int | None:
        """``len(class_names)`` if known, else ``max(y) + 1``, else ``None``."""
        if self.class_names is not None:
            return len(self.class_names)
        if self.y is None or len(self.y) == 0:
            return None
        return int(self.y.max()) + 1

    def summary(self) -> str:
        """One line: source, count, shape, range, classes."""
        vr = self.value_range
        classes = "unlabelled" if self.y is None else f"{self.num_classes} classes"
        return (
            f"{self.source}: {len(self)} samples of shape {self.sample_shape}, "
            f"{vr.dtype} in [{vr.low:g}, {vr.high:g}], {classes}"
        )


# --------------------------------------------------------------------------- public entry


def as_tensor_data(
    data: Any,
    y: Any = None,
    *,
    layout: Layout | None = None,
    value_range: tuple[float, float] | ValueRange | None = None,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    download: bool = False,
) -> TensorData:
    """Turn any accepted data form into :class:`TensorData` in model space.

    Accepted: numpy arrays and torch tensors ``(N, H, W)``, ``(N, C, H, W)``, ``(N, H, W, C)``
    or ``(N, D)``; a torch ``Dataset`` (anything with ``__len__`` and ``__getitem__``) yielding
    ``x`` or ``(x, y)`` with ``x`` a PIL image, tensor or array; a folder in ``ImageFolder``
    layout; an ``.npz`` file with arrays ``x`` (and ``y``); a built-in name (``"digits"``,
    ``"fashion-mnist"``); or a :class:`TensorData` (returned as is).

    Args:
        data: the data, in one of the forms above.
        y: labels ``(N,)`` for array/tensor input (ignored for other forms, which carry their own).
        layout: ``"NCHW"``, ``"NHWC"``, ``"NHW"`` or ``"ND"``; needed only where the shape is
            ambiguous, such as ``(N, 3, 32, 3)``.
        value_range: ``(low, high)`` of the input values. Inferred for uint8 (0..255) and for
            floats already in ``[0, 1]``; required otherwise.
        root: folder for built-in datasets (e.g. holding ``FashionMNIST/raw``).
        split: ``"train"``, ``"test"`` (or ``"all"`` for digits) for built-in datasets.
        download: let torchvision download a built-in dataset that is not found locally.

    Returns:
        The data in model space.

    Example:
        >>> import numpy as np
        >>> d = as_tensor_data(np.zeros((4, 8, 8), dtype=np.uint8), y=np.arange(4))
        >>> d.x.shape, d.value_range.high
        (torch.Size([4, 1, 8, 8]), 255.0)
    """
    if isinstance(data, TensorData):
        return data
    if layout is not None and layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}; got {layout!r}")
    if isinstance(data, (str, os.PathLike)):
        if y is not None:
            raise ValueError(
                "y was given together with a path or built-in name; those carry their own labels "
                "(an .npz file's 'y' array, the class folders) - drop the y argument"
            )
        return _from_name_or_path(data, layout=layout, value_range=value_range,
                                  root=root, split=split, download=download)
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return from_arrays(data, y, layout=layout, value_range=value_range)
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        if y is not None:
            raise ValueError(
                "y was given together with a Dataset; a Dataset carries its own labels "
                "(yield (x, y) from __getitem__) - drop the y argument"
            )
        return _from_dataset(data, layout=layout, value_range=value_range)
    raise TypeError(
        "data must be a numpy array, torch tensor, torch Dataset, .npz path, image folder "
        f"or built-in name ('digits', 'fashion-mnist'); got {type(data).__name__}"
    )


def from_arrays(
    x: np.ndarray | torch.Tensor,
    y: Any = None,
    *,
    layout: Layout | None = None,
    value_range: tuple[float, float] | ValueRange | None = None,
    class_names: Sequence[str] | None = None,
    source: str = "array",
) -> TensorData:
    """Validate a batch array and its labels and convert it to model space.

    Args:
        x: ``(N, H, W)``, ``(N, C, H, W)``, ``(N, H, W, C)`` or ``(N, D)``, uint8/int/float.
        y: labels, anything ``np.asarray`` turns into ``(N,)`` integers, or ``None``.
        layout: explicit layout when the shape is ambiguous.
        value_range: ``(low, high)``; see :func:`as_tensor_data`.
        class_names: optional names of the classes.
        source: description for summaries.

    Returns:
        The data in model space.
    """
    if isinstance(x, np.ndarray):
        x = np.ascontiguousarray(x)
        t = torch.from_numpy(x if x.flags.writeable else x.copy())
    else:
        t = x
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"x must be a numpy array or torch tensor; got {type(x).__name__}")
    t = t.detach().cpu()
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"x must hold integers or floats; got dtype {t.dtype}")
    if t.dim() < 2 or t.shape[0] == 0:
        raise ValueError(
            f"data is empty or has no sample dimension: got shape {tuple(t.shape)}; expected "
            "(N, H, W), (N, C, H, W), (N, H, W, C) or (N, D) with N >= 1"
        )
    t, used_layout = _to_model_layout(t, layout)
    if t.dtype.is_floating_point:
        bad = ~torch.isfinite(t.reshape(t.shape[0], -1)).all(dim=1)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"data holds NaN or Inf values (first in sample {i}); expected finite numbers - "
                "remove or repair those samples"
            )
    vr = _resolve_value_range(t, value_range)
    xm = vr.to_model(t).contiguous()
    labels = _labels_tensor(y, t.shape[0])
    return TensorData(
        x=xm,
        y=labels,
        value_range=vr,
        class_names=list(class_names) if class_names is not None else None,
        source=source,
        layout=used_layout,
    )


def check_labels(data: TensorData, num_classes: int | None = None) -> int:
    """Check the labels a class-conditional model needs; return the number of classes.

    Args:
        data: the data whose labels to check.
        num_classes: expected number of classes, or ``None`` to infer it.

    Returns:
        The number of classes.
    """
    if data.y is None:
        raise ValueError(
            "a class-conditional model needs labels but the data has none; pass y=... "
            "(or a Dataset yielding (x, y)), or fit with conditional=False"
        )
    if len(data.y) and int(data.y.min()) < 0:
        i = int((data.y < 0).nonzero()[0, 0])
        raise ValueError(
            f"labels must be integers >= 0 for a class-conditional model; label of sample {i} "
            f"is {int(data.y[i])} - map labels to 0..K-1 or fit with conditional=False"
        )
    k = num_classes if num_classes is not None else data.num_classes
    assert k is not None
    if int(data.y.max()) >= k:
        i = int((data.y >= k).nonzero()[0, 0])
        raise ValueError(
            f"labels must be in 0..{k - 1} for {k} classes; label of sample {i} is {int(data.y[i])}"
        )
    return k


# --------------------------------------------------------------------------- helpers


def _to_model_layout(t: torch.Tensor, layout: Layout | None) -> tuple[torch.Tensor, str]:
    shape = tuple(t.shape)
    if layout is None:
        layout = _infer_layout(shape)
    elif layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}; got {layout!r}")
    expected_dims = {"NCHW": 4, "NHWC": 4, "NHW": 3, "ND": 2}[layout]
    if t.dim() != expected_dims:
        raise ValueError(f"layout {layout!r} needs a {expected_dims}-D array; got shape {shape}")
    if layout == "ND":
        if shape[1] < 1:
            raise ValueError(f"vectors need at least one feature; got shape {shape}")
        return t, layout
    if layout == "NHW":
        t = t.unsqueeze(1)
    elif layout == "NHWC":
        t = t.permute(0, 3, 1, 2)
    c, h, w = t.shape[1:]
    if c not in _CHANNELS:
        raise ValueError(
            f"images must have 1, 3 or 4 channels; got {c} in shape {shape} read as {layout} - "
            "pass layout= if the channel axis is elsewhere"
        )
    if h < MIN_IMAGE_SIDE or w < MIN_IMAGE_SIDE:
        raise ValueError(
            f"images must be at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels; got {h}x{w} "
            f"(shape {shape} read as {layout}) - upscale them first, e.g. with v2.Resize"
        )
    return t, layout


def _infer_layout(shape: tuple[int, ...]) -> Layout:
    if len(shape) == 2:
        return "ND"
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4:
        first, last = shape[1] in _CHANNELS, shape[3] in _CHANNELS
        if first and last:
            raise ValueError(
                f"ambiguous layout for shape {shape}: both axis 1 and axis 3 could be channels; "
                "pass layout='NCHW' or layout='NHWC' (read either way, a side is under "
                f"{MIN_IMAGE_SIDE} pixels, the minimum: check the array, or upscale it first)"
            )
        if first:
            return "NCHW"
        if last:
            return "NHWC"
        raise ValueError(
            f"cannot find a channel axis of size 1, 3 or 4 in shape {shape}; expected "
            "(N, C, H, W) or (N, H, W, C)"
        )
    raise ValueError(
        f"expected (N, H, W), (N, C, H, W), (N, H, W, C) or (N, D); got {len(shape)}-D shape {shape}"
    )


def _resolve_value_range(
    t: torch.Tensor, value_range: tuple[float, float] | ValueRange | None
) -> ValueRange:
    dtype = str(t.dtype).removeprefix("torch.")
    try:
        lo, hi = float(t.min()), float(t.max())
    except (NotImplementedError, RuntimeError):  # e.g. uint16/uint32 lack min/max kernels
        lo, hi = float(t.to(torch.float64).min()), float(t.to(torch.float64).max())
    if value_range is None:
        if t.dtype == torch.uint8:
            return ValueRange(0.0, 255.0, dtype)
        if t.dtype.is_floating_point and lo >= 0.0 and hi <= 1.0:
            return ValueRange(0.0, 1.0, dtype)
        raise ValueError(
            f"cannot infer the value range of {dtype} data with values in [{lo:g}, {hi:g}]: "
            "only uint8 (0..255) and floats in [0, 1] are inferred - pass value_range=(low, high), "
            "e.g. value_range=(0, 255)"
        )
    vr = value_range if isinstance(value_range, ValueRange) else _range_from_tuple(value_range, dtype)
    if lo < vr.low or hi > vr.high:
        raise ValueError(
            f"data values span [{lo:g}, {hi:g}], outside value_range [{vr.low:g}, {vr.high:g}]; "
            "nothing is clipped - pass a value_range that covers the data"
        )
    return vr


def _range_from_tuple(value_range: Any, dtype: str) -> ValueRange:
    try:
        low, high = value_range
        return ValueRange(float(low), float(high), dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"value_range must be (low, high) with low < high; got {value_range!r}"
        ) from e


def _labels_tensor(y: Any, n: int) -> torch.Tensor | None:
    if y is None:
        return None
    arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},) to match the data; got {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError("labels must be integers; got non-integer float labels")
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers; got dtype {arr.dtype}")
    return torch.from_numpy(arr.astype(np.int64))


# --------------------------------------------------------------------------- datasets


def _item_to_array(x: Any, index: int) -> tuple[np.ndarray, str | None]:
    """One dataset item as a numpy array and its per-sample layout hint."""
    from PIL import Image

    if isinstance(x, Image.Image):
        return _pil_to_array(x, f"sample {index}"), "HWC"
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        arr = (x.float() if x.dtype == torch.bfloat16 else x).numpy()  # numpy has no bfloat16
        # torchvision convention: tensors are (C, H, W)
        return arr, ("CHW" if arr.ndim == 3 else None)
    if isinstance(x, np.ndarray):
        return x, None
    raise TypeError(
        f"dataset sample {index} is a {type(x).__name__}; expected a PIL image, tensor or "
        "numpy array (or a tuple (x, y) of those)"
    )


def _pil_to_array(img: Any, what: str) -> np.ndarray:
    if img.mode == "1":
        img = img.convert("L")
    elif img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode not in ("L", "RGB", "RGBA"):
        raise ValueError(
            f"{what} has PIL mode {img.mode!r}; expected L, RGB or RGBA (8-bit) - convert the "
            "images first, e.g. img.convert('RGB')"
        )
    return np.asarray(img)


def _from_dataset(ds: Any, *, layout: Layout | None, value_range: Any) -> TensorData:
    n = len(ds)
    if n == 0:
        raise ValueError("the dataset is empty; expected at least one sample")
    xs: list[np.ndarray] = []
    ys: list[int] = []
    has_labels: bool | None = None
    hint: str | None = None
    for i in range(n):
        item = ds[i]
        if isinstance(item, (tuple, list)) and len(item) == 1:
            item = item[0]  # e.g. TensorDataset(x) yields (x,)
        labelled = isinstance(item, (tuple, list)) and len(item) == 2
        if has_labels is None:
            has_labels = labelled
        elif labelled != has_labels:
            raise ValueError(
                f"dataset sample {i} is {'(x, y)' if labelled else 'x'} but sample 0 was "
                f"{'(x, y)' if has_labels else 'x'}; every sample must have the same form"
            )
        x = item[0] if labelled else item
        arr, h = _item_to_array(x, i)
        if i == 0:
            hint = h
        elif arr.shape != xs[0].shape or arr.dtype != xs[0].dtype:
            raise ValueError(
                f"dataset sample {i} has shape {arr.shape} and dtype {arr.dtype} but sample 0 "
                f"has {xs[0].shape} and {xs[0].dtype}; all samples must match - resize them "
                "first (e.g. v2.Resize) or convert them to one dtype"
            )
        xs.append(arr)
        if labelled:
            ys.append(_label_to_int(item[1], i))
    batch = np.stack(xs)
    if layout is None and batch.ndim == 4:
        layout = {"HWC": "NHWC", "CHW": "NCHW"}.get(hint or "")  # type: ignore[assignment]
    return from_arrays(batch, ys if has_labels else None, layout=layout,
                       value_range=value_range, class_names=getattr(ds, "classes", None),
                       source=type(ds).__name__)


def _label_to_int(label: Any, index: int) -> int:
    if isinstance(label, torch.Tensor):
        if label.numel() != 1:
            raise ValueError(f"label of dataset sample {index} must be a scalar; got {tuple(label.shape)}")
        label = label.item()
    if isinstance(label, (np.integer, np.floating)):
        label = label.item()
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    if not isinstance(label, int) or isinstance(label, bool):
        raise ValueError(f"label of dataset sample {index} must be an integer; got {label!r}")
    return label


def _from_name_or_path(
    data: str | os.PathLike[str], *, layout: Layout | None, value_range: Any,
    root: Any, split: str, download: bool,
) -> TensorData:
    from . import datasets

    path = Path(data)
    if path.is_dir() or datasets.is_builtin(str(data)):
        unused = [n for n, v in (("layout", layout), ("value_range", value_range)) if v is not None]
        if unused:
            raise ValueError(
                f"{' and '.join(unused)} do not apply to an image folder or a built-in dataset, "
                "whose layout and value range are known - drop them"
            )
    if path.is_dir():
        return _from_image_folder(path)
    if path.suffix == ".npz":
        if not path.is_file():
            raise FileNotFoundError(f"no such .npz file: {str(path)!r}")
        return _from_npz(path, layout=layout, value_range=value_range)
    name = str(data)
    if datasets.is_builtin(name):
        return datasets.load_builtin(name, root=root, split=split, download=download)
    if path.exists():
        raise ValueError(
            f"{name!r} is neither a .npz file nor an image folder; expected a .npz with arrays "
            "'x' (and 'y'), a folder of class sub-folders, or a built-in name "
            f"({', '.join(datasets.BUILTIN_NAMES)})"
        )
    raise ValueError(
        f"unknown dataset {name!r}: not an existing path and not a built-in name; expected one "
        f"of {', '.join(datasets.BUILTIN_NAMES)}, a .npz file or an image folder"
    )


def _from_npz(path: Path, *, layout: Layout | None, value_range: Any) -> TensorData:
    if not zipfile.is_zipfile(path):
        raise ValueError(f"cannot read {str(path)!r} as a .npz file: it is not a zip archive (np.savez writes one)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.keys())
            if "x" not in keys:
                raise ValueError(
                    f"{str(path)!r} holds arrays {keys}; expected an array named 'x' (and "
                    "optionally 'y') - save with np.savez(path, x=images, y=labels)"
                )
            x = npz["x"]
            y = npz["y"] if "y" in keys else None
            names = [str(s) for s in npz["class_names"]] if "class_names" in keys else None
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise ValueError(
                f"{str(path)!r} holds object arrays, which would need unpickling; vaeaug never "
                "unpickles - save plain numeric arrays"
            ) from None
        raise
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"cannot read {str(path)!r} as a .npz file (corrupt?): {e}") from None
    return from_arrays(x, y, layout=layout, value_range=value_range,
                       class_names=names, source=path.name)


def _from_image_folder(path: Path) -> TensorData:
    from PIL import Image
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes, class_to_idx = find_classes(str(path))
        samples = make_dataset(str(path), class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as e:
        raise ValueError(
            f"{str(path)!r} is not an image folder: {e} - expected one sub-folder per class "
            "holding image files (torchvision ImageFolder layout)"
        ) from None
    xs: list[np.ndarray] = []
    for file, _ in samples:
        try:
            with Image.open(file) as img:
                arr = _pil_to_array(img, f"image {file!r}")
        except OSError as e:
            raise ValueError(f"cannot read image {file!r}: {e}") from None
        if xs and arr.shape != xs[0].shape:
            raise ValueError(
                f"image {file!r} has shape {arr.shape} but {samples[0][0]!r} has {xs[0].shape}; "
                "all images must have the same size and channels - resize or convert them first"
            )
        xs.append(arr)
    batch = np.stack(xs)
    return from_arrays(batch, [c for _, c in samples], layout="NHWC" if batch.ndim == 4 else None,
                       class_names=classes, source=path.name)
