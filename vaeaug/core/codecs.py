"""Conversion between the user's image types and model space, at the edge (torch-free).

Model space is float32 in ``[0, 1]``, ``(N, C, H, W)``. A codec reads one kind of input:

* :class:`NumpyImages`: numpy ``(H, W)``, ``(H, W, C)``, a batch ``(N, H, W, C)`` (and ``(N, H, W)``
  for stacks of grayscale images, as albumentations' ``images``);
* :class:`TensorImages`: torch tensors ``(H, W)``, ``(C, H, W)``, ``(N, C, H, W)``, plain or a subclass
  such as ``tv_tensors.Image`` (kept); on the CPU the arithmetic runs in numpy on the tensor's memory,
  on other devices in torch on that device;
* :class:`PILImages`: PIL images (L, RGB, RGBA);
* :class:`ModelSpace`: batches already in model space (numpy or torch), for pre-generation and evaluation.

uint8 means 0..255; floats mean the model's recorded float range (e.g. 0..16 for digits), or 0..1 for
models fit on uint8 images (torchvision's convention after ``v2.ToDtype(torch.float32, scale=True)``).
Every codec returns what it was given: type, dtype, layout, device and value range. Only the rows the
caller asks for are read and converted; nothing is clipped or resized. torch is never imported here: a
tensor's presence means torch is loaded (``sys.modules``).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from vaeaug.core.values import ValueRange, check_values

__all__ = ["not_an_image", "Codec", "NumpyImages", "TensorImages", "PILImages", "ModelSpace", "float_range",
           "is_tensor"]

_F32_255 = np.float32(255.0)


def is_tensor(x: Any) -> bool:
    """True for a torch tensor (checked without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def not_an_image(what: str) -> TypeError:
    """The error for a call with nothing that can be an image (the same in every consumer)."""
    return TypeError(f"expected an image: a PIL image, a tensor (C, H, W) or (N, C, H, W), or a numpy (H, W[, C]) "
                     f"array; got {what}")


def float_range(value_range: ValueRange) -> tuple[float, float]:
    """The range float inputs are read in: the model's own for float data, else ``[0, 1]``."""
    if value_range.dtype.startswith(("float", "bfloat")):
        return float(value_range.low), float(value_range.high)
    return 0.0, 1.0


class Codec:
    """Reads a kind of input as model-space rows and writes variants back in its type.

    Args:
        shape: the model's ``(C, H, W)``.
        value_range: the model's recorded value range (decides how floats are read).
    """


    albumentations = False  # name albumentations' transforms in errors (NumpyImages can say so)

    def __init__(self, shape: tuple[int, ...], value_range: ValueRange) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.low, self.high = float_range(value_range)
        self._scale = np.float32(self.high - self.low)

    def size(self, inpt: Any) -> int:
        """The number of images in ``inpt``, after checking its type, shape and dtype."""
        raise NotImplementedError

    def to_model(self, inpt: Any, rows: np.ndarray | None) -> Any:
        """Rows ``rows`` (all for ``None``) of ``inpt`` in model space ``(len(rows), C, H, W)``."""
        raise NotImplementedError

    def put_back(self, inpt: Any, rows: np.ndarray | None, out: Any) -> Any:
        """``inpt`` with rows ``rows`` replaced by the model-space ``out``, in ``inpt``'s type."""
        raise NotImplementedError

    # --- shared numpy arithmetic (N, C, H, W) -------------------------------------------------

    def _check_dtype(self, dtype: Any) -> None:
        """``TypeError`` unless uint8 or floating point."""
        if dtype != np.uint8 and getattr(dtype, "kind", "") != "f":
            raise TypeError(f"expected uint8 or floating-point images; got {dtype}")

    def _read(self, x: np.ndarray) -> np.ndarray:
        """``(N, C, H, W)`` uint8 or float in the input range -> float32 in ``[0, 1]``."""
        if x.dtype == np.uint8:
            return np.divide(x, _F32_255, dtype=np.float32)
        lo, hi = float(x.min()), float(x.max())  # NaN propagates into both
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("the image holds NaN or Inf values; expected finite numbers")
        if lo < self.low or hi > self.high:
            raise ValueError(
                f"float image values span [{lo:g}, {hi:g}] but this model reads floats in "
                f"[{self.low:g}, {self.high:g}]{self._range_hint(hi)}; nothing is clipped"
            )
        return np.ascontiguousarray((x.astype(np.float32) - np.float32(self.low)) / self._scale)

    def _range_hint(self, hi: float) -> str:
        if hi <= 1.0 or self.high != 1.0:
            return ""
        return (" - convert uint8-range floats with A.ToFloat(max_value=255)" if self.albumentations
                else " - convert uint8-range floats with v2.ToDtype(torch.float32, scale=True)")

    def _write(self, v: np.ndarray, dtype: Any) -> np.ndarray:
        """float32 ``[0, 1]`` -> the input's dtype and range (uint8: round half to even)."""
        if dtype == np.uint8:
            return np.rint(v * _F32_255).astype(np.uint8)
        return (v.astype(np.float64) * (self.high - self.low) + self.low).astype(dtype)

    def _shape_error(self, got: tuple[int, ...], resize: str, fix_channels: str, hwc: bool = False) -> ValueError:
        """``got`` and the model's shape, both ``(C, H, W)``; shown as HxWxC with ``hwc``."""
        c, h, w = self.shape
        fixes = []
        if got[1:] != (h, w):
            fixes.append("resize it with " + resize.format(h=h, w=w))
        if got[0] != c:
            fixes.append(fix_channels)
        show, want = ((got[1], got[2], got[0]), (h, w, c)) if hwc else (got, self.shape)
        return ValueError(f"image is {'x'.join(map(str, show))} ({'HxWxC' if hwc else 'CxHxW'}) but the model "
                          f"expects {'x'.join(map(str, want))}; " + " and ".join(fixes))

    def _channel_fix(self) -> str:
        c = self.shape[0]
        return ("convert it with v2.Grayscale()" if c == 1 else "convert it with v2.RGB()" if c == 3 else
                "give it 4 channels (RGBA)")


class NumpyImages(Codec):
    """numpy images, channels last: ``(H, W)``, ``(H, W, C)`` or a batch ``(N, H, W, C)``.

    Args:
        shape: the model's ``(C, H, W)``.
        value_range: the model's value range.
        stack: read a 3-D array as a stack ``(N, H, W)`` of grayscale images (albumentations'
            ``images``), not as one ``(H, W, C)`` image.
        albumentations: name albumentations' transforms in errors, and show shapes as HxWxC.

    Example:
        >>> codec = NumpyImages((1, 8, 8), ValueRange(0, 255, "uint8"))
        >>> img = np.zeros((8, 8, 1), np.uint8)
        >>> codec.size(img), codec.to_model(img, None).shape
        (1, (1, 1, 8, 8))
    """


    def __init__(self, shape: tuple[int, ...], value_range: ValueRange, *, stack: bool = False,
                 albumentations: bool = False) -> None:
        super().__init__(shape, value_range)
        self.stack, self.albumentations = stack, albumentations

    def _batched(self, a: np.ndarray) -> bool:
        nd = a.ndim
        if nd == 4 or (nd == 3 and self.stack):
            return True
        if nd in (2, 3):
            return False
        what = "(N, H, W[, C]) stack" if self.stack else "(H, W), (H, W, C) or a batch (N, H, W, C)"
        raise ValueError(f"expected a numpy image {what}; got shape {a.shape}")

    def size(self, inpt: np.ndarray) -> int:
        if not isinstance(inpt, np.ndarray):
            raise not_an_image(type(inpt).__name__)
        check_values(inpt, "the image")
        self._check_dtype(inpt.dtype)
        batched = self._batched(inpt)
        per = inpt.shape[1:] if batched else inpt.shape
        c, h, w = self.shape
        got = (per[2] if len(per) == 3 else 1, per[0], per[1])
        if got != (c, h, w):
            if self.albumentations:
                ch = "make it grayscale, (H, W) or (H, W, 1)" if c == 1 else f"give it {c} channels"
                raise self._shape_error(got, "A.Resize({h}, {w})", ch, hwc=True)
            raise self._shape_error(got, "v2.Resize(({h}, {w}))", self._channel_fix())
        return int(inpt.shape[0]) if batched else 1

    def to_model(self, inpt: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        x = inpt if self._batched(inpt) else inpt[None]
        if rows is not None:
            x = x[rows]
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(self._read(x))

    def put_back(self, inpt: np.ndarray, rows: np.ndarray | None, out: Any) -> np.ndarray:
        batched = self._batched(inpt)
        v = self._write(_numpy(out), inpt.dtype)
        v = v[:, 0] if inpt.ndim == (3 if batched else 2) else v.transpose(0, 2, 3, 1)
        if not batched:
            return np.ascontiguousarray(v[0])
        if rows is None:
            return np.ascontiguousarray(v)
        result = inpt.copy()
        result[rows] = v
        return result


class TensorImages(Codec):
    """torch tensors, channels first: ``(H, W)``, ``(C, H, W)`` or a batch ``(N, C, H, W)``.

    Example:
        >>> import torch
        >>> codec = TensorImages((1, 8, 8), ValueRange(0, 255, "uint8"))
        >>> codec.put_back(torch.zeros(1, 8, 8, dtype=torch.uint8), None, np.ones((1, 1, 8, 8), np.float32)).max()
        tensor(255, dtype=torch.uint8)
    """


    def size(self, inpt: Any) -> int:
        check_values(inpt, "the image")
        if inpt.dim() not in (2, 3, 4):
            raise ValueError(f"expected an image tensor (C, H, W) or a batch (N, C, H, W); got shape "
                             f"{tuple(inpt.shape)}")
        torch = sys.modules["torch"]
        if inpt.dtype != torch.uint8 and not inpt.dtype.is_floating_point:
            raise TypeError(f"expected uint8 or floating-point images; got {inpt.dtype}")
        per = tuple(inpt.shape[1:]) if inpt.dim() == 4 else tuple(inpt.shape)
        got = (1, *per) if len(per) == 2 else per
        if got != self.shape:
            raise self._shape_error(got, "v2.Resize(({h}, {w}))", self._channel_fix())
        return int(inpt.shape[0]) if inpt.dim() == 4 else 1

    def to_model(self, inpt: Any, rows: np.ndarray | None) -> Any:
        if _numpy_ok(inpt):  # numpy arithmetic on the tensor's own memory
            x = _cpu_numpy(inpt).reshape(-1, *self.shape)  # (H, W) and (C, H, W) become one-row batches
            return self._read(x if rows is None else x[rows])
        torch = sys.modules["torch"]
        x = inpt.detach().reshape(-1, *self.shape)
        if rows is not None:
            x = x[torch.from_numpy(rows).to(x.device)]
        if x.dtype == torch.uint8:
            return x.float().div_(255.0)
        if not bool(x.isfinite().all()):
            raise ValueError("the image holds NaN or Inf values; expected finite numbers")
        lo, hi = float(x.min()), float(x.max())
        if lo < self.low or hi > self.high:
            raise ValueError(f"float image values span [{lo:g}, {hi:g}] but this model reads floats in "
                             f"[{self.low:g}, {self.high:g}]{self._range_hint(hi)}; nothing is clipped")
        return (x.float() - self.low) / (self.high - self.low)

    def put_back(self, inpt: Any, rows: np.ndarray | None, out: Any) -> Any:
        torch = sys.modules["torch"]
        if _numpy_ok(inpt):
            mine = _cpu_numpy(inpt)
            v = self._write(_numpy(out), mine.dtype)
            if rows is None:
                result = torch.from_numpy(v.reshape(mine.shape))
            else:
                full = mine.copy()
                full[rows] = v
                result = torch.from_numpy(full)
        else:
            base = inpt.detach().as_subclass(torch.Tensor)
            o = (torch.from_numpy(out) if isinstance(out, np.ndarray) else out).to(base.device)
            if base.dtype == torch.uint8:
                v = o.mul(255.0).round_().to(torch.uint8)
            else:
                v = (o.to(torch.float64) * (self.high - self.low) + self.low).to(base.dtype)
            if rows is None:
                result = v.reshape(base.shape)
            else:
                result = base.clone()
                result[torch.from_numpy(rows).to(base.device)] = v
        return result if type(inpt) is torch.Tensor else result.as_subclass(type(inpt))


_NUMPY_DTYPES: set[Any] = set()


def _numpy_ok(t: Any) -> bool:
    """A CPU tensor of a dtype numpy has (not bfloat16): its arithmetic runs in numpy."""
    if not _NUMPY_DTYPES:
        torch = sys.modules["torch"]
        _NUMPY_DTYPES.update((torch.uint8, torch.float16, torch.float32, torch.float64))
    return bool(t.is_cpu) and t.dtype in _NUMPY_DTYPES


def _cpu_numpy(t: Any) -> np.ndarray:
    """A CPU tensor's memory as a numpy array (no copy), whatever its subclass or grad flag."""
    if type(t) is not sys.modules["torch"].Tensor:
        t = t.as_subclass(sys.modules["torch"].Tensor)
    return (t.detach() if t.requires_grad else t).numpy()  # type: ignore[no-any-return]


class PILImages(NumpyImages):
    """PIL images, one per call: modes L, RGB and RGBA (read as numpy ``(H, W[, C])`` uint8)."""


    def size(self, inpt: Any) -> int:
        if inpt.mode not in ("L", "RGB", "RGBA"):
            raise ValueError(f"PIL image mode {inpt.mode!r} is not supported; expected L, RGB or RGBA - convert "
                             "it first, e.g. img.convert('RGB')")
        return super().size(np.asarray(inpt))

    def to_model(self, inpt: Any, rows: np.ndarray | None) -> np.ndarray:
        return super().to_model(np.asarray(inpt), rows)

    def put_back(self, inpt: Any, rows: np.ndarray | None, out: Any) -> Any:
        arr = super().put_back(np.asarray(inpt), rows, out)
        return sys.modules["PIL.Image"].fromarray(arr)  # loaded: inpt is a PIL image


class ModelSpace(Codec):
    """Batches already in model space: ``(N, C, H, W)`` float32 in ``[0, 1]``, numpy or torch."""


    def size(self, inpt: Any) -> int:
        if tuple(inpt.shape[1:]) != self.shape:
            raise ValueError(f"expected a model-space batch (N, {', '.join(map(str, self.shape))}); got shape "
                             f"{tuple(inpt.shape)}")
        return int(inpt.shape[0])

    def to_model(self, inpt: Any, rows: np.ndarray | None) -> Any:
        if rows is None:
            return inpt
        return inpt[rows] if isinstance(inpt, np.ndarray) else inpt[sys.modules["torch"].from_numpy(rows)
                                                                    .to(inpt.device)]

    def put_back(self, inpt: Any, rows: np.ndarray | None, out: Any) -> Any:
        if rows is None:
            return out
        if isinstance(inpt, np.ndarray):
            result = inpt.copy()
            result[rows] = _numpy(out)
            return result
        torch = sys.modules["torch"]
        result = inpt.clone()
        result[torch.from_numpy(rows).to(inpt.device)] = out.to(inpt.device) if is_tensor(out) else \
            torch.from_numpy(out).to(inpt.device)
        return result


def _numpy(out: Any) -> np.ndarray:
    return out if isinstance(out, np.ndarray) else out.detach().cpu().numpy()

