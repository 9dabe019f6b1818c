"""Input normalisation: every accepted data form becomes one :class:`TensorData` in model space.

Model space is float32 in ``[0, 1]``: images ``(N, C, H, W)``, vectors ``(N, D)``. The
original value range and dtype are kept in a :class:`ValueRange` so generated samples can be
returned in the user's range. Nothing is silently clipped, resized or dropped: input that does
not fit gets a ``ValueError`` saying what was expected, what came and how to fix it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaeaug.core.values import ValueRange
from vaeaug.data import builtin
from vaeaug.data.arrays import LAYOUTS, MIN_IMAGE_SIDE, Layout, TensorData, check_labels, from_arrays
from vaeaug.data.readers import from_dataset, from_image_folder, from_npz

__all__ = ["Layout", "ValueRange", "TensorData", "as_tensor_data", "from_arrays", "check_labels", "MIN_IMAGE_SIDE"]


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
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")
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
        return from_dataset(data, layout=layout, value_range=value_range)
    raise TypeError(
        "data must be a numpy array, torch tensor, torch Dataset, .npz path, image folder "
        f"or built-in name ('digits', 'fashion-mnist'); got {type(data).__name__}"
    )


def _from_name_or_path(
    data: str | os.PathLike[str], *, layout: Layout | None, value_range: Any,
    root: Any, split: str, download: bool,
) -> TensorData:
    path = Path(data)
    try:
        path.exists()  # stat: a folder on the way that cannot be entered is said here, not as a PermissionError
    except PermissionError:
        raise ValueError(f"cannot read {str(path)!r}: permission denied; check the permissions of the file and "
                         "of the folders above it") from None
    if path.is_dir() or builtin.is_builtin(str(data)):
        unused = [n for n, v in (("layout", layout), ("value_range", value_range)) if v is not None]
        if unused:
            raise ValueError(
                f"{' and '.join(unused)} do not apply to an image folder or a built-in dataset, "
                "whose layout and value range are known - drop them"
            )
    if path.is_dir():
        return from_image_folder(path)
    if path.suffix == ".npz":
        if not path.exists():
            raise FileNotFoundError(f"no such .npz file: {str(path)!r}")
        return from_npz(path, layout=layout, value_range=value_range)  # a FIFO or device: a ValueError there
    name = str(data)
    if builtin.is_builtin(name):
        return builtin.load_builtin(name, root=root, split=split, download=download)
    if path.exists():
        raise ValueError(
            f"{name!r} is neither a .npz file nor an image folder; expected a .npz with arrays "
            "'x' (and 'y'), a folder of class sub-folders, or a built-in name "
            f"({', '.join(builtin.BUILTIN_NAMES)})"
        )
    raise ValueError(
        f"unknown dataset {name!r}: not an existing path and not a built-in name; expected one "
        f"of {', '.join(builtin.BUILTIN_NAMES)}, a .npz file or an image folder"
    )
