"""Conversion between the user's image types and model space, at the edge.

In: PIL images (L, RGB, RGBA), torch tensors ``(C, H, W)`` / ``(N, C, H, W)`` (plain or
``tv_tensors.Image``), numpy arrays ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)``; uint8 or float.
Out: the same type, dtype, layout, device and value range. uint8 means 0..255; floats mean the
model's recorded float range (e.g. 0..16 for digits), or 0..1 for models fit on uint8 images
(torchvision's convention after ``v2.ToDtype(torch.float32, scale=True)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .data import ValueRange

__all__ = ["ImageSpec", "to_model", "from_model", "batch_size_of"]


@dataclass(frozen=True)
class ImageSpec:
    """How to turn model-space output back into the input's type."""

    kind: str  # "pil" | "tensor" | "numpy"
    batched: bool
    layout: str  # "CHW" | "HW" | "HWC" (per sample)
    dtype: Any
    low: float
    high: float
    pil_mode: str | None = None
    device: Any = None


def input_range(is_uint8: bool, value_range: ValueRange) -> tuple[float, float]:
    """The value range an input of this dtype is read in."""
    if is_uint8:
        return 0.0, 255.0
    if value_range.dtype.startswith(("float", "bfloat")):
        return value_range.low, value_range.high
    return 0.0, 1.0


def batch_size_of(inpt: Any) -> int:
    """Number of images in ``inpt`` (1 for a single image)."""
    if isinstance(inpt, torch.Tensor):
        return int(inpt.shape[0]) if inpt.dim() == 4 else 1
    if isinstance(inpt, np.ndarray):
        return int(inpt.shape[0]) if inpt.ndim == 4 else 1
    return 1


def to_model(inpt: Any, value_range: ValueRange, shape: tuple[int, ...]) -> tuple[torch.Tensor, ImageSpec]:
    """Convert one image or a batch to model space ``(N, C, H, W)`` float32 in ``[0, 1]``.

    Args:
        inpt: PIL image, tensor or numpy array (see the module docstring).
        value_range: the model's recorded value range (decides how floats are read).
        shape: the model's ``(C, H, W)``.

    Returns:
        The batch on the input's device, and the spec to convert back with :func:`from_model`.

    Example:
        >>> x, spec = to_model(torch.zeros(1, 8, 8, dtype=torch.uint8), ValueRange(0, 255, "uint8"), (1, 8, 8))
        >>> x.shape, spec.batched
        (torch.Size([1, 1, 8, 8]), False)
    """
    from PIL import Image

    pil_mode = None
    device = None
    if isinstance(inpt, Image.Image):
        if inpt.mode not in ("L", "RGB", "RGBA"):
            raise ValueError(
                f"PIL image mode {inpt.mode!r} is not supported; expected L, RGB or RGBA - convert it "
                "first, e.g. img.convert('RGB')"
            )
        pil_mode = inpt.mode
        arr = np.asarray(inpt)
        kind, batched = "pil", False
        t = torch.from_numpy(arr.copy())
        layout = "HW" if arr.ndim == 2 else "HWC"
        dtype: Any = np.uint8
    elif isinstance(inpt, torch.Tensor):
        kind, device, dtype = "tensor", inpt.device, inpt.dtype
        if inpt.dim() not in (2, 3, 4):
            raise ValueError(
                f"expected an image tensor (C, H, W) or a batch (N, C, H, W); got shape {tuple(inpt.shape)}"
            )
        batched = inpt.dim() == 4
        layout = "HW" if inpt.dim() == 2 else "CHW"
        t = inpt.as_subclass(torch.Tensor)
    elif isinstance(inpt, np.ndarray):
        kind, dtype = "numpy", inpt.dtype
        if inpt.ndim not in (2, 3, 4):
            raise ValueError(
                f"expected a numpy image (H, W), (H, W, C) or a batch (N, H, W, C); got shape {inpt.shape}"
            )
        batched = inpt.ndim == 4
        layout = "HW" if inpt.ndim == 2 else "HWC"
        t = torch.from_numpy(np.ascontiguousarray(inpt))
    else:
        raise TypeError(
            f"expected a PIL image, a torch tensor or a numpy array; got {type(inpt).__name__}"
        )
    is_uint8 = t.dtype == torch.uint8
    if not (is_uint8 or t.dtype.is_floating_point):
        raise TypeError(f"expected uint8 or floating-point images; got {t.dtype}")
    # to (N, C, H, W)
    if not batched:
        t = t.unsqueeze(0)
    if layout == "HW":
        t = t.unsqueeze(1)
    elif layout == "HWC":
        t = t.permute(0, 3, 1, 2)
    c, h, w = shape
    got = tuple(t.shape[1:])
    if got != (c, h, w):
        raise ValueError(_shape_message(got, (c, h, w), kind, layout))
    low, high = input_range(is_uint8, value_range)
    if not is_uint8:
        if not bool(torch.isfinite(t).all()):
            raise ValueError("the image holds NaN or Inf values; expected finite numbers")
        lo, hi = float(t.min()), float(t.max())
        if lo < low or hi > high:
            hint = (" - convert uint8-range floats with v2.ToDtype(torch.float32, scale=True)"
                    if hi > 1.0 and high == 1.0 else "")
            raise ValueError(
                f"float image values span [{lo:g}, {hi:g}] but this model reads floats in "
                f"[{low:g}, {high:g}]{hint}; nothing is clipped"
            )
    x = (t.to(torch.float32) - low) / (high - low)
    spec = ImageSpec(kind, batched, layout, dtype, low, high, pil_mode, device)
    return x.contiguous(), spec


def _shape_message(got: tuple[int, ...], want: tuple[int, int, int], kind: str, layout: str) -> str:
    c, h, w = want
    order = "CxHxW" if layout in ("CHW", "HW") or kind == "tensor" else "CxHxW (read from HWC)"
    fixes = []
    if got[1:] != (h, w):
        fixes.append(f"resize it with v2.Resize(({h}, {w}))")
    if got[0] != c:
        fixes.append("convert it with v2.Grayscale()" if c == 1 else
                     "convert it with v2.RGB()" if c == 3 else "give it 4 channels (RGBA)")
    return (f"image is {got[0]}x{got[1]}x{got[2]} ({order}) but the model expects {c}x{h}x{w}; "
            + " and ".join(fixes))


def from_model(x: torch.Tensor, spec: ImageSpec) -> Any:
    """Convert a model-space batch ``(N, C, H, W)`` back to the type described by ``spec``.

    For unbatched specs ``x`` must hold one image. PIL output needs a CPU tensor.
    """
    from PIL import Image

    v = x.detach()
    if spec.dtype in (torch.uint8, np.uint8):
        v = (v * 255.0).round().to(torch.uint8)
    else:
        v = v.to(torch.float64) * (spec.high - spec.low) + spec.low
    if spec.layout == "HW":
        v = v[:, 0]
    elif spec.layout == "HWC":
        v = v.permute(0, 2, 3, 1)
    if not spec.batched:
        v = v[0]
    if spec.kind == "tensor":
        return v.to(device=spec.device, dtype=spec.dtype).contiguous()
    arr = v.cpu().numpy()
    if spec.kind == "numpy":
        return np.ascontiguousarray(arr.astype(spec.dtype, copy=False))
    return Image.fromarray(np.ascontiguousarray(arr))  # L, RGB or RGBA from the shape
