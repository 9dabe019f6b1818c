"""Plain values, checked once for every module: integers, finite numbers in a range, a short repr, and
the value range of the user's data (:class:`ValueRange`, the map to and from model space).

Torch-free and dependency-free. Every check that refuses a value says what was expected and what
came, with the value cut to 60 characters (a value read from a file can be huge).
``ValueRange.to_model`` and ``from_model`` work on torch tensors and import torch when called.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["is_int", "is_number", "in_range", "short_repr", "check_int", "check_number", "check_values", "MAX_SEED",
           "ValueRange", "DTYPES", "MAX_ABS_VALUE", "MIN_SPAN", "MIN_RELATIVE_SPAN"]


def is_int(v: Any) -> bool:
    """Whether ``v`` is an int, not a bool.

    Example:
        >>> is_int(3), is_int(True), is_int(3.0)
        (True, False, False)
    """
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """Whether ``v`` is an int or a float, not a bool (NaN and infinities included).

    Example:
        >>> is_number(1.5), is_number(False), is_number("1")
        (True, False, False)
    """
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def in_range(v: Any, lo: float, hi: float) -> bool:
    """``lo <= v <= hi`` for an int or float, false for NaN; exact for huge ints (no float overflow).

    Example:
        >>> in_range(10**400, 0, 1e30), in_range(float("nan"), 0, 1), in_range(0.5, 0, 1)
        (False, False, True)
    """
    return is_number(v) and lo <= v <= hi


def short_repr(v: Any) -> str:
    """``repr(v)``, cut to 60 characters.

    Example:
        >>> short_repr("x" * 100)[-3:], len(short_repr("x" * 100))
        ('...', 60)
    """
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def check_int(name: str, v: Any, minimum: int, maximum: int | None = None, *, optional: bool = False) -> None:
    """Raise ``ValueError`` unless ``v`` is an int (not a bool) in ``[minimum, maximum]`` (or ``None`` if ``optional``).

    Example:
        >>> check_int("variants", 0, 1)
        Traceback (most recent call last):
        ...
        ValueError: variants must be an integer >= 1; got 0
        >>> check_int("seed", 2**64, 0, 2**64 - 1, optional=True)
        Traceback (most recent call last):
        ...
        ValueError: seed must be None or an integer in [0, 18446744073709551615]; got 18446744073709551616
    """
    if optional and v is None:
        return
    what = f"{name} must be {'None or ' if optional else ''}an integer"
    if not is_int(v) or v < minimum:
        raise ValueError(f"{what} >= {minimum}" + (f" (at most {maximum})" if maximum is not None else "")
                         + f"; got {short_repr(v)}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{what} in [{minimum}, {maximum}]; got {short_repr(v)}")


MAX_SEED = 2**64 - 1
"""Seeds are 64-bit: the counter-based keys are derived from ``seed mod 2**64``, so a larger one is refused."""


def check_number(name: str, v: Any, low: float, high: float) -> float:
    """``float(v)`` if ``v`` is a finite int or float in ``[low, high]``, else a ``ValueError``.

    Example:
        >>> check_number("strength", 2, 0, 100)
        2.0
        >>> check_number("strength", 1e39, 0, 100)
        Traceback (most recent call last):
        ...
        ValueError: strength must be a finite number in [0, 100]; got 1e+39
    """
    if not in_range(v, low, high) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number in [{low:g}, {high:g}]; got {short_repr(v)}")
    return float(v)


def check_values(x: Any, what: str) -> None:
    """Refuse an array or tensor that holds no numbers vaeaug can read, before anything reads it: a tensor on
    PyTorch's ``meta`` device (a shape without values) or a numpy array of Python objects.

    Example:
        >>> import numpy as np
        >>> check_values(np.zeros(2, dtype=object), "x")
        Traceback (most recent call last):
        ...
        TypeError: x is a numpy array of Python objects (dtype object); expected numbers (uint8, integers or ...
    """
    if getattr(getattr(x, "device", None), "type", None) == "meta":
        raise TypeError(f"{what} is a tensor on the meta device: it has a shape but no values; expected a tensor on "
                        "the CPU or a GPU - create it there (a meta tensor only describes one)")
    if getattr(getattr(x, "dtype", None), "kind", None) == "O":  # numpy's object dtype (torch dtypes have no kind)
        raise TypeError(f"{what} is a numpy array of Python objects (dtype object); expected numbers (uint8, integers "
                        "or floats) - convert it first, e.g. np.asarray(x, dtype=np.float32), or np.stack(...) a "
                        "list of arrays of one shape")


# the dtypes a user's data can have (names of torch and numpy dtypes alike, bfloat16 torch only)
DTYPES = ("uint8", "uint16", "uint32", "int8", "int16", "int32", "int64",
          "float16", "bfloat16", "float32", "float64")
MAX_ABS_VALUE = 1e30  # |low|, |high| of a value range: their difference is finite in float32
MIN_SPAN = 1e-30  # high - low: a normal float32 (min normal 1.2e-38), so the division is exact enough
MIN_RELATIVE_SPAN = 1e-5  # high - low relative to max(|low|, |high|): >= ~80 distinct float32 values


@dataclass(frozen=True)
class ValueRange:
    """The value range and dtype of the user's data, and the map to and from model space.

    Args:
        low: value that maps to 0 in model space.
        high: value that maps to 1 in model space.
        dtype: the user's dtype name (``"uint8"``, ``"float32"``, ...), used for outputs.

    Example:
        >>> import torch
        >>> vr = ValueRange(0.0, 16.0, "float64")
        >>> vr.to_model(torch.tensor([0.0, 8.0, 16.0])).tolist()
        [0.0, 0.5, 1.0]
    """

    low: float
    high: float
    dtype: str

    def __post_init__(self) -> None:
        lo, hi = self.low, self.high
        if not (in_range(lo, -MAX_ABS_VALUE, MAX_ABS_VALUE) and in_range(hi, -MAX_ABS_VALUE, MAX_ABS_VALUE)):
            raise ValueError(
                f"value_range must be two finite numbers (low, high) with |low|, |high| <= {MAX_ABS_VALUE:g} "
                f"(beyond, float32 model space overflows); got ({short_repr(lo)}, {short_repr(hi)}) - "
                "rescale the data first"
            )
        if hi <= lo:
            raise ValueError(f"value_range must be two numbers (low, high) with low < high; got ({lo!r}, {hi!r})")
        span = float(hi) - float(lo)
        if span < MIN_SPAN or span < MIN_RELATIVE_SPAN * max(abs(lo), abs(hi)):
            raise ValueError(
                f"value_range ({lo!r}, {hi!r}) is too narrow to work in float32: high - low = {span:g}, "
                f"expected at least {MIN_SPAN:g} and at least {MIN_RELATIVE_SPAN:g} x max(|low|, |high|) - "
                "subtract an offset from the data or rescale it first"
            )
        if not isinstance(self.dtype, str) or self.dtype not in DTYPES:
            raise ValueError(
                f"value_range dtype must be one of {sorted(DTYPES)}; got {short_repr(self.dtype)}"
            )

    def to_model(self, x: Any) -> Any:
        """Map a tensor's values in ``[low, high]`` to float32 in ``[0, 1]`` (no clipping)."""
        import torch

        return (x.to(torch.float32) - self.low) / (self.high - self.low)

    def from_model(self, x: Any) -> Any:
        """Map float ``[0, 1]`` back to ``[low, high]`` in the user's dtype (integers rounded).

        Model outputs are in ``[0, 1]`` by construction; values outside are an error upstream.
        """
        import torch

        out = x.to(torch.float64) * (self.high - self.low) + self.low
        dtype = getattr(torch, self.dtype)
        if not dtype.is_floating_point:
            out = out.round()
        return out.to(dtype)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {"low": self.low, "high": self.high, "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: Any) -> ValueRange:
        """Inverse of :meth:`to_dict`, validating types."""
        if not isinstance(d, dict) or set(d) != {"low", "high", "dtype"}:
            raise ValueError(f"value_range must be a dict with keys low, high, dtype; got {short_repr(d)}")
        if not all(is_number(d[k]) for k in ("low", "high")):
            raise ValueError(f"value_range low/high must be numbers; got {short_repr(d)}")
        if not isinstance(d["dtype"], str):
            raise ValueError(f"value_range dtype must be a string; got {short_repr(d['dtype'])}")
        for k in ("low", "high"):  # float() of a huge int overflows: check before converting
            if not in_range(d[k], -MAX_ABS_VALUE, MAX_ABS_VALUE):
                raise ValueError(f"value_range {k} must be a finite number with |{k}| <= {MAX_ABS_VALUE:g}; "
                                 f"got {short_repr(d[k])}")
        return cls(float(d["low"]), float(d["high"]), d["dtype"])
