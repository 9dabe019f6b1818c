"""Labels of a call, checked in one place: integers, one per image, in the model's classes.

Torch-free: a torch tensor is read through its ``numpy()`` view, never imported.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vaeaug.core.values import check_values

__all__ = ["as_labels"]

_INT64 = np.iinfo(np.int64)


def _describe(v: Any) -> str:
    return f"{type(v).__name__} {v!r}" if np.ndim(v) == 0 else f"{type(v).__name__} of dtype {getattr(v, 'dtype', '?')}"


def as_labels(value: Any, n: int, num_classes: int | None = None) -> np.ndarray:
    """``value`` as ``(n,)`` int64 labels: an int (shared by all ``n`` images) or one per image.

    Args:
        value: an int, a numpy integer, a 0-d or ``(n,)`` integer array or tensor, or a list of ints.
        n: the number of images the labels are for.
        num_classes: if given, every label must be in ``0..num_classes-1``.

    Returns:
        An int64 array of shape ``(n,)``.

    Raises:
        TypeError: the labels are not integers (floats, bools, strings).
        ValueError: the wrong number of labels, a 2-D shape, or a value out of range.

    Example:
        >>> as_labels(3, 2).tolist()
        [3, 3]
        >>> as_labels(3.0, 1)
        Traceback (most recent call last):
        ...
        TypeError: labels must be integers; got float 3.0
    """
    if isinstance(value, (bool, np.bool_)) or isinstance(value, (float, complex, str, bytes)):
        raise TypeError(f"labels must be integers; got {_describe(value)}")
    if isinstance(value, int):
        if not _INT64.min <= value <= _INT64.max:
            raise ValueError(f"label {value} does not fit in int64; labels are class indices 0..K-1")
        arr = np.array([value], dtype=np.int64)
    else:
        if hasattr(value, "detach"):  # a torch tensor (on any device but meta, which holds no values)
            check_values(value, "the label tensor")
            value = value.detach().cpu().numpy()
        try:
            arr = np.asarray(value)
        except (OverflowError, ValueError, TypeError):
            raise ValueError(f"labels must be integers; got {type(value).__name__} {value!r}") from None
        if arr.dtype == object and all(isinstance(v, int) and not isinstance(v, bool) for v in arr.reshape(-1)):
            raise ValueError("labels do not fit in int64; labels are class indices 0..K-1")
        if arr.dtype.kind not in "iu":
            raise TypeError(f"labels must be integers; got {_describe(value)}")
        if arr.ndim > 1:
            raise ValueError(f"labels must be one integer per image, shape ({n},); got shape {arr.shape}")
        if arr.dtype == np.uint64 and arr.size and int(arr.max()) > _INT64.max:
            raise ValueError(f"label {int(arr.max())} does not fit in int64; labels are class indices 0..K-1")
        arr = arr.reshape(-1).astype(np.int64, copy=False)
    if arr.size == 1 and n != 1:
        arr = np.repeat(arr, n)
    if arr.shape != (n,):
        raise ValueError(f"found {arr.size} labels for {n} images; pass one label per image")
    if num_classes is not None and n and (int(arr.min()) < 0 or int(arr.max()) >= num_classes):
        i = int(np.flatnonzero((arr < 0) | (arr >= num_classes))[0])
        raise ValueError(f"labels must be in 0..{num_classes - 1} for this model; the label of sample {i} is "
                         f"{int(arr[i])}, outside 0..{num_classes - 1}")
    return arr
