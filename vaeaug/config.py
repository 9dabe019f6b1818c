"""What a model file describes, without torch: the architecture (:class:`VAEConfig`) and the
user's value range (:class:`ValueRange`).

Torch-free on purpose: the ONNX backend (:mod:`vaeaug.onnx_backend`) reads both from an ``.onnx``
file's metadata in processes where torch is not installed. ``ValueRange.to_model`` and
``from_model`` work on torch tensors and import torch when called.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["VAEConfig", "ValueRange", "Likelihood", "default_widths", "conv_sizes", "DTYPES",
           "parameter_count", "activation_count", "check_class_names", "LIMITS"]

# the dtypes a user's data can have (names of torch and numpy dtypes alike, bfloat16 torch only)
DTYPES = ("uint8", "uint16", "uint32", "int8", "int16", "int32", "int64",
          "float16", "bfloat16", "float32", "float64")

# Bounds within which a model works (numbers stay finite in float32, memory stays reasonable).
# Every config and value range is checked against them, whether it comes from a user or a file,
# so a file whose checksum was recomputed by hand cannot make NaN or exhaust memory.
MAX_PARAMETERS = 1 << 28  # 268M weights: 1 GiB in float32, far above any VAE vaeaug fits
MAX_INPUT_ELEMENTS = 1 << 24  # C*H*W or D of one sample: 16.7M (e.g. 3 x 2364 x 2364)
MAX_ACTIVATIONS = 1 << 28  # activations of one sample through encoder and decoder
MAX_LATENT_DIM = 1 << 16
MAX_WIDTH = 1 << 16  # channels of a conv stage, units of a hidden layer
MAX_MLP_LAYERS = 64
MAX_CLASSES = 1 << 16
MAX_CLASS_NAME = 1024  # characters of one class name
MAX_KL_WARMUP = 1_000_000  # epochs
MAX_BETA = 1e6
GAUSSIAN_STD_RANGE = (1e-6, 1e3)  # exp(-log std) and its square stay finite in float32
MAX_STRENGTH = 100.0  # a stored augment setting's strength: moves of at most 100 prior standard deviations
MAX_ABS_VALUE = 1e30  # |low|, |high| of a value range: their difference is finite in float32
MIN_SPAN = 1e-30  # high - low: a normal float32 (min normal 1.2e-38), so the division is exact enough
MIN_RELATIVE_SPAN = 1e-5  # high - low relative to max(|low|, |high|): >= ~80 distinct float32 values

LIMITS = {"parameters": MAX_PARAMETERS, "input elements": MAX_INPUT_ELEMENTS,
          "activations per sample": MAX_ACTIVATIONS, "latent_dim": MAX_LATENT_DIM, "width": MAX_WIDTH,
          "hidden layers": MAX_MLP_LAYERS, "num_classes": MAX_CLASSES, "kl_warmup": MAX_KL_WARMUP,
          "beta": MAX_BETA, "gaussian_std": GAUSSIAN_STD_RANGE, "augment strength": MAX_STRENGTH,
          "value range |low|, |high|": MAX_ABS_VALUE}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _show(v: Any) -> str:
    """``repr(v)``, cut to 60 characters (a value from a file can be huge)."""
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _in_range(v: Any, lo: float, hi: float) -> bool:
    """``lo <= v <= hi`` for an int or float, false for NaN; exact for huge ints (no float overflow)."""
    return _is_number(v) and lo <= v <= hi


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
        if not (_in_range(lo, -MAX_ABS_VALUE, MAX_ABS_VALUE) and _in_range(hi, -MAX_ABS_VALUE, MAX_ABS_VALUE)):
            raise ValueError(
                f"value_range must be two finite numbers (low, high) with |low|, |high| <= {MAX_ABS_VALUE:g} "
                f"(beyond, float32 model space overflows); got ({_show(lo)}, {_show(hi)}) - rescale the data first"
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
                f"value_range dtype must be one of {sorted(DTYPES)}; got {_show(self.dtype)}"
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
            raise ValueError(f"value_range must be a dict with keys low, high, dtype; got {_show(d)}")
        if not all(_is_number(d[k]) for k in ("low", "high")):
            raise ValueError(f"value_range low/high must be numbers; got {_show(d)}")
        if not isinstance(d["dtype"], str):
            raise ValueError(f"value_range dtype must be a string; got {_show(d['dtype'])}")
        for k in ("low", "high"):  # float() of a huge int overflows: check before converting
            if not _in_range(d[k], -MAX_ABS_VALUE, MAX_ABS_VALUE):
                raise ValueError(f"value_range {k} must be a finite number with |{k}| <= {MAX_ABS_VALUE:g}; "
                                 f"got {_show(d[k])}")
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
        if not isinstance(self.input_shape, (tuple, list)):
            raise ValueError(f"input_shape must be a tuple (C, H, W) or (D,); got {_show(self.input_shape)}")
        shape = tuple(self.input_shape)
        if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
            raise ValueError(f"input_shape must be positive integers; got {_show(self.input_shape)}")
        if len(shape) == 3:
            c, h, w = shape
            if c not in (1, 3, 4):
                raise ValueError(f"images must have 1, 3 or 4 channels; input_shape is {shape}")
            if min(h, w) < 8:
                raise ValueError(f"images must be at least 8x8 pixels; input_shape is {shape}")
        elif len(shape) != 1:
            raise ValueError(f"input_shape must be (C, H, W) or (D,); got {shape}")
        if math.prod(shape) > MAX_INPUT_ELEMENTS:
            raise ValueError(f"input_shape {shape} has {math.prod(shape)} values per sample, more than the "
                             f"{MAX_INPUT_ELEMENTS} vaeaug supports; downscale the data first")
        object.__setattr__(self, "input_shape", shape)
        check_int("latent_dim", self.latent_dim, 1, MAX_LATENT_DIM)
        if self.num_classes is not None:
            check_int("num_classes", self.num_classes, 1, MAX_CLASSES)
        if self.widths is not None and not isinstance(self.widths, (tuple, list)):
            raise ValueError(f"widths must be a tuple of positive integers; got {_show(self.widths)}")
        widths = default_widths(shape) if self.widths is None else tuple(self.widths)
        if not widths or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in widths):
            raise ValueError(f"widths must be positive integers; got {_show(self.widths)}")
        if max(widths) > MAX_WIDTH:
            raise ValueError(f"widths must be at most {MAX_WIDTH} each; got {_show(widths)}")
        if len(shape) == 3:
            stages = len(conv_sizes(shape[1], shape[2])) - 1
            if len(widths) != stages:
                raise ValueError(
                    f"a {shape[1]}x{shape[2]} image needs {stages} conv widths (one per stride-2 "
                    f"stage); got {len(widths)}: {widths}"
                )
        elif len(widths) > MAX_MLP_LAYERS:
            raise ValueError(f"widths may list at most {MAX_MLP_LAYERS} hidden layers; got {len(widths)}")
        object.__setattr__(self, "widths", widths)
        if self.likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian'; got {_show(self.likelihood)}")
        if not _in_range(self.beta, 0.0, MAX_BETA):
            raise ValueError(f"beta must be a finite number in [0, {MAX_BETA:g}]; got {_show(self.beta)}")
        lo, hi = GAUSSIAN_STD_RANGE
        if not _in_range(self.gaussian_std, lo, hi):
            raise ValueError(f"gaussian_std must be a number in [{lo:g}, {hi:g}] (model space is [0, 1]); "
                             f"got {_show(self.gaussian_std)}")
        if not isinstance(self.learn_std, bool):
            raise ValueError(f"learn_std must be a bool; got {_show(self.learn_std)}")
        check_int("kl_warmup", self.kl_warmup, 0, MAX_KL_WARMUP)
        params, acts = parameter_count(self), activation_count(self)
        if params > MAX_PARAMETERS:
            raise ValueError(
                f"this config builds {params:,} parameters, more than the {MAX_PARAMETERS:,} vaeaug allows "
                f"(input_shape {shape}, latent_dim {self.latent_dim}, widths {widths}); use smaller widths, "
                "a smaller latent_dim or smaller inputs"
            )
        if acts > MAX_ACTIVATIONS:
            raise ValueError(
                f"this config computes {acts:,} activations per sample, more than the {MAX_ACTIVATIONS:,} "
                f"vaeaug allows (input_shape {shape}, widths {widths}); use smaller widths or smaller inputs"
            )

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
            raise ValueError(f"config has unknown keys {_show(sorted(unknown))}")
        if "input_shape" not in d:
            raise ValueError("config lacks 'input_shape'")
        kw = dict(d)
        for k in ("input_shape", "widths"):
            if kw.get(k) is not None:
                if not isinstance(kw[k], list):
                    raise ValueError(f"config {k} must be a list; got {_show(kw[k])}")
                kw[k] = tuple(kw[k])
        try:
            return cls(**kw)
        except TypeError as e:
            raise ValueError(f"invalid config: {e}") from None


def check_int(name: str, v: Any, minimum: int, maximum: int | None = None) -> None:
    """Raise ``ValueError`` unless ``v`` is an int (not a bool) in ``[minimum, maximum]``."""
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {_show(v)}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be an integer in [{minimum}, {maximum}]; got {_show(v)}")


def _stage_sizes(config: VAEConfig) -> tuple[tuple[int, ...], list[tuple[int, int]]]:
    """The layer widths (input first) and, for images, the spatial size after each conv stage."""
    widths = tuple(config.widths or ())
    if config.is_image:
        c, h, w = config.input_shape
        return (c, *widths), conv_sizes(h, w)
    return (config.input_shape[0], *widths), []


def parameter_count(config: VAEConfig) -> int:
    """The number of weights :class:`~vaeaug.model.VAE` builds for ``config``, computed without torch.

    Example:
        >>> parameter_count(VAEConfig(input_shape=(20,), latent_dim=4, widths=(8,)))
        460
    """
    chans, sizes = _stage_sizes(config)
    k, latent = config.num_classes or 0, config.latent_dim
    pairs = list(zip(chans[:-1], chans[1:], strict=True))
    if config.is_image:  # 3x3 convolutions down, 3x3 transposed convolutions up
        body = sum(a * b * 9 + b for a, b in pairs) + sum(a * b * 9 + a for a, b in pairs)
        feat = chans[-1] * sizes[-1][0] * sizes[-1][1]
    else:
        body = sum(a * b + b for a, b in pairs) + sum(a * b + a for a, b in pairs)
        feat = chans[-1]
    heads = (feat + k) * 2 * latent + 2 * latent + (latent + k) * feat + feat
    learned_std = 1 if config.likelihood == "gaussian" and config.learn_std else 0
    return body + heads + learned_std


def activation_count(config: VAEConfig) -> int:
    """Values one sample produces through the encoder and the decoder (a bound on working memory)."""
    chans, sizes = _stage_sizes(config)
    if config.is_image:
        per_stage = [c * h * w for c, (h, w) in zip(chans, sizes, strict=True)]
    else:
        per_stage = list(chans)
    return 2 * sum(per_stage) + 4 * config.latent_dim


def check_class_names(names: Any, num_classes: int | None) -> list[str] | None:
    """Validate class names: strings, at most :data:`MAX_CLASSES`, one per class of a conditional model.

    Returns:
        The names as a list, or ``None``.

    Example:
        >>> check_class_names(("cat", "dog"), 2)
        ['cat', 'dog']
    """
    if names is None:
        return None
    if isinstance(names, (str, bytes)) or not hasattr(names, "__len__") or not hasattr(names, "__iter__"):
        raise ValueError(f"class_names must be a list of strings; got {type(names).__name__}")
    if len(names) > MAX_CLASSES:
        raise ValueError(f"class_names lists {len(names)} classes, more than the {MAX_CLASSES} vaeaug supports")
    out = list(names)
    for s in out:
        if not isinstance(s, str) or len(s) > MAX_CLASS_NAME:
            shown = s if not isinstance(s, str) else f"a name of {len(s)} characters"
            raise ValueError(f"class_names must be strings of at most {MAX_CLASS_NAME} characters; got {_show(shown)}")
        if any(unicodedata.category(ch) == "Cc" for ch in s):  # they would reach terminals as escape sequences
            raise ValueError(f"class_names must not hold control characters (newlines, escapes); got {_show(s)} - "
                             "rename the class")
    if num_classes is not None and len(out) != num_classes:
        raise ValueError(
            f"class_names must name each of the {num_classes} classes of the model; got {len(out)} names - "
            f"pass {num_classes} names (or none)"
        )
    return out
