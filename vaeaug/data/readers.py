"""Readers of data held in files and Datasets: ``.npz`` files, image folders, map-style Datasets.

Each returns a :class:`~vaeaug.data.arrays.TensorData` in model space, or an error that says what
was expected, what came and how to fix it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .arrays import Layout, TensorData, from_arrays

__all__: list[str] = []


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
