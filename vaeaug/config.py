"""What a model file describes, without torch: the architecture (:class:`VAEConfig`) and the
user's value range (:class:`ValueRange`).

Torch-free on purpose: the ONNX backend (:mod:`vaeaug.onnx_backend`) reads both from an ``.onnx``
file's metadata in processes where torch is not installed. ``ValueRange.to_model`` and
``from_model`` work on torch tensors and import torch when called.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["VAEConfig", "ValueRange", "Likelihood", "default_widths", "conv_sizes", "DTYPES"]

# the dtypes a user's data can have (names of torch and numpy dtypes alike, bfloat16 torch only)
DTYPES = ("uint8", "uint16", "uint32", "int8", "int16", "int32", "int64",
          "float16", "bfloat16", "float32", "float64")


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
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.high <= self.low:
            raise ValueError(
                f"value_range must be two finite numbers (low, high) with low < high; "
                f"got ({self.low}, {self.high})"
            )
        if self.dtype not in DTYPES:
            raise ValueError(
                f"value_range dtype must be one of {sorted(DTYPES)}; got {self.dtype!r}"
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
            raise ValueError(f"value_range must be a dict with keys low, high, dtype; got {d!r}")
        if not all(isinstance(d[k], (int, float)) and not isinstance(d[k], bool) for k in ("low", "high")):
            raise ValueError(f"value_range low/high must be numbers; got {d!r}")
        if not isinstance(d["dtype"], str):
            raise ValueError(f"value_range dtype must be a string; got {d['dtype']!r}")
        return cls(float(d["low"]), float(d["high"]), d["dtype"])



Likelihood = Literal["bernoulli", "gaussian"]
_MAX_STAGES = 5
_CONV_WIDTHS = (32, 64, 128, 256, 256)
_MLP_WIDTHS = (256, 128)


def conv_sizes(h: int, w: int) -> list[tuple[int, int]]:
    """Spatial sizes through the stride-2 encoder: halve (rounding up) while the side is >= 8.

    Example:
        >>> conv_sizes(28, 28)
        [(28, 28), (14, 14), (7, 7)]
    """
    sizes = [(h, w)]
    while min(sizes[-1]) >= 8 and len(sizes) <= _MAX_STAGES:
        ph, pw = sizes[-1]
        sizes.append(((ph + 1) // 2, (pw + 1) // 2))
    return sizes


def default_widths(input_shape: Sequence[int]) -> tuple[int, ...]:
    """Automatic widths: conv channels per stride-2 stage for images, hidden sizes for vectors.

    Example:
        >>> default_widths((1, 28, 28)), default_widths((3, 64, 64)), default_widths((20,))
        ((32, 64), (32, 64, 128, 256), (256, 128))
    """
    if len(input_shape) == 1:
        return _MLP_WIDTHS
    _, h, w = input_shape
    return _CONV_WIDTHS[: len(conv_sizes(h, w)) - 1]


@dataclass(frozen=True)
class VAEConfig:
    """Everything needed to rebuild a :class:`VAE`.

    Args:
        input_shape: ``(C, H, W)`` for images (C in 1, 3, 4; sides >= 8) or ``(D,)`` for vectors.
        latent_dim: size of ``z``.
        widths: conv channels per stride-2 stage (images) or hidden sizes (vectors); ``None``
            picks :func:`default_widths`. For images the number of stages is fixed by the size,
            so ``widths`` must have exactly that many entries.
        num_classes: if set, a class-conditional VAE: the one-hot label enters encoder and decoder.
        likelihood: ``"bernoulli"`` (binary cross-entropy; default for ``[0, 1]`` images) or
            ``"gaussian"`` (squared error scaled by ``gaussian_std``).
        gaussian_std: the fixed (or initial, with ``learn_std``) std of the Gaussian likelihood.
        learn_std: learn one global std of the Gaussian likelihood.
        beta: weight of the KL term.
        kl_warmup: epochs over which the KL weight rises linearly from 0 to ``beta`` in fitting.

    Example:
        >>> VAEConfig(input_shape=(1, 28, 28)).widths
        (32, 64)
    """

    input_shape: tuple[int, ...]
    latent_dim: int = 16
    widths: tuple[int, ...] | None = None
    num_classes: int | None = None
    likelihood: Likelihood = "bernoulli"
    gaussian_std: float = 0.1
    learn_std: bool = False
    beta: float = 1.0
    kl_warmup: int = 10

    def __post_init__(self) -> None:
        shape = tuple(self.input_shape)
        if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
            raise ValueError(f"input_shape must be positive integers; got {self.input_shape!r}")
        if len(shape) == 3:
            c, h, w = shape
            if c not in (1, 3, 4):
                raise ValueError(f"images must have 1, 3 or 4 channels; input_shape is {shape}")
            if min(h, w) < 8:
                raise ValueError(f"images must be at least 8x8 pixels; input_shape is {shape}")
        elif len(shape) != 1:
            raise ValueError(f"input_shape must be (C, H, W) or (D,); got {shape}")
        object.__setattr__(self, "input_shape", shape)
        check_int("latent_dim", self.latent_dim, 1)
        if self.num_classes is not None:
            check_int("num_classes", self.num_classes, 1)
        widths = default_widths(shape) if self.widths is None else tuple(self.widths)
        if not widths or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in widths):
            raise ValueError(f"widths must be positive integers; got {self.widths!r}")
        if len(shape) == 3:
            stages = len(conv_sizes(shape[1], shape[2])) - 1
            if len(widths) != stages:
                raise ValueError(
                    f"a {shape[1]}x{shape[2]} image needs {stages} conv widths (one per stride-2 "
                    f"stage); got {len(widths)}: {widths}"
                )
        object.__setattr__(self, "widths", widths)
        if self.likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian'; got {self.likelihood!r}")
        for name in ("gaussian_std", "beta"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0; got {v!r}")
        if self.gaussian_std <= 0:
            raise ValueError(f"gaussian_std must be > 0; got {self.gaussian_std!r}")
        if not isinstance(self.learn_std, bool):
            raise ValueError(f"learn_std must be a bool; got {self.learn_std!r}")
        check_int("kl_warmup", self.kl_warmup, 0)

    @property
    def is_image(self) -> bool:
        """True for a convolutional image model."""
        return len(self.input_shape) == 3

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["widths"] = list(self.widths or ())
        return d

    @classmethod
    def from_dict(cls, d: Any) -> VAEConfig:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise ``ValueError``."""
        if not isinstance(d, dict):
            raise ValueError(f"config must be a JSON object; got {type(d).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"config has unknown keys {sorted(unknown)}")
        if "input_shape" not in d:
            raise ValueError("config lacks 'input_shape'")
        kw = dict(d)
        for k in ("input_shape", "widths"):
            if kw.get(k) is not None:
                if not isinstance(kw[k], list):
                    raise ValueError(f"config {k} must be a list; got {kw[k]!r}")
                kw[k] = tuple(kw[k])
        try:
            return cls(**kw)
        except TypeError as e:
            raise ValueError(f"invalid config: {e}") from None


def check_int(name: str, v: Any, minimum: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {v!r}")
