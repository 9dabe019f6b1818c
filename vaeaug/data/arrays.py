"""Arrays and tensors in model space: :class:`TensorData`, layouts, value ranges, labels (``from_arrays``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from vaeaug.core.values import ValueRange, check_values, short_repr

__all__ = ["Layout", "LAYOUTS", "ValueRange", "TensorData", "from_arrays", "check_labels", "MIN_IMAGE_SIDE"]

Layout = Literal["NCHW", "NHWC", "NHW", "ND"]
LAYOUTS = ("NCHW", "NHWC", "NHW", "ND")
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
    check_values(x, "x")
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

    The number of classes comes from ``num_classes``, else from the data's class names, else from
    the labels, which must then be ``0..C-1`` with every class present: labels ``{0, 7}`` would
    silently make an 8-class model with six classes never seen, so they are refused with a remap
    hint (with names or an explicit ``num_classes``, classes without a sample are the caller's word).

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
    if num_classes is None and data.class_names is None and len(data.y):
        present = torch.unique(data.y)
        if len(present) < int(present[-1]) + 1:  # classes without a sample: the labels are not 0..C-1
            shown = present[:20].tolist()
            more = f" and {len(present) - 20} more" if len(present) > 20 else ""
            raise ValueError(
                f"labels must be 0..C-1 with every class present; got classes {shown}{more}, which would make a "
                f"{int(present[-1]) + 1}-class model with {int(present[-1]) + 1 - len(present)} classes never seen - "
                "remap them, e.g. y = np.unique(y, return_inverse=True)[1], or name every class "
                "(an .npz 'class_names' array, a Dataset's `classes`)"
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
    elif layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")
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
        low, high = float(low), float(high)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(
            f"value_range must be (low, high) with low < high; got {str(value_range)[:80]}"
        ) from e
    return ValueRange(low, high, dtype)  # its own message: the bounds a model works within


def _labels_tensor(y: Any, n: int) -> torch.Tensor | None:
    if y is None:
        return None
    if isinstance(y, torch.Tensor):
        check_values(y, "y")
    arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if arr.dtype == object and arr.ndim == 1 and all(type(v) is int for v in arr):  # Python ints beyond int64
        i = next(i for i, v in enumerate(arr) if not -2**63 <= v < 2**63)
        raise ValueError(f"the label of sample {i} is {short_repr(arr[i])}, beyond int64; labels are class indices "
                         "0..K-1 - remap them (e.g. np.unique(y, return_inverse=True))")
    check_values(arr, "y")
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},) to match the data; got {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError("labels must be integers; got non-integer float labels")
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers; got dtype {arr.dtype}")
    return torch.from_numpy(arr.astype(np.int64))
