"""What a model file describes, without torch: the architecture (:class:`VAEConfig`) and the limits
every config is checked against.

Torch-free on purpose: the ONNX backend (:mod:`vaeaug.backends.onnx_backend`) reads it from an ``.onnx``
file's metadata in processes where torch is not installed. The user's value range is
:class:`vaeaug.core.values.ValueRange`.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from vaeaug.core.values import check_int, in_range, short_repr

__all__ = ["VAEConfig", "Likelihood", "default_widths", "conv_sizes",
           "parameter_count", "activation_count", "check_class_names", "LIMITS"]

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

LIMITS = {"parameters": MAX_PARAMETERS, "input elements": MAX_INPUT_ELEMENTS,
          "activations per sample": MAX_ACTIVATIONS, "latent_dim": MAX_LATENT_DIM, "width": MAX_WIDTH,
          "hidden layers": MAX_MLP_LAYERS, "num_classes": MAX_CLASSES, "kl_warmup": MAX_KL_WARMUP,
          "beta": MAX_BETA, "gaussian_std": GAUSSIAN_STD_RANGE}
"""The bounds of a config; a value range's are :mod:`vaeaug.core.values`'s (``|low|, |high| <= 1e30``), an
augment setting's :mod:`vaeaug.core.settings`' (``strength <= MAX_STRENGTH``)."""


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
            raise ValueError(f"input_shape must be a tuple (C, H, W) or (D,); got {short_repr(self.input_shape)}")
        shape = tuple(self.input_shape)
        if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
            raise ValueError(f"input_shape must be positive integers; got {short_repr(self.input_shape)}")
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
            raise ValueError(f"widths must be a tuple of positive integers; got {short_repr(self.widths)}")
        widths = default_widths(shape) if self.widths is None else tuple(self.widths)
        if not widths or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in widths):
            raise ValueError(f"widths must be positive integers; got {short_repr(self.widths)}")
        if max(widths) > MAX_WIDTH:
            raise ValueError(f"widths must be at most {MAX_WIDTH} each; got {short_repr(widths)}")
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
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian'; got {short_repr(self.likelihood)}")
        if not in_range(self.beta, 0.0, MAX_BETA):
            raise ValueError(f"beta must be a finite number in [0, {MAX_BETA:g}]; got {short_repr(self.beta)}")
        lo, hi = GAUSSIAN_STD_RANGE
        if not in_range(self.gaussian_std, lo, hi):
            raise ValueError(f"gaussian_std must be a number in [{lo:g}, {hi:g}] (model space is [0, 1]); "
                             f"got {short_repr(self.gaussian_std)}")
        if not isinstance(self.learn_std, bool):
            raise ValueError(f"learn_std must be a bool; got {short_repr(self.learn_std)}")
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
            raise ValueError(f"config has unknown keys {short_repr(sorted(unknown))}")
        if "input_shape" not in d:
            raise ValueError("config lacks 'input_shape'")
        kw = dict(d)
        for k in ("input_shape", "widths"):
            if kw.get(k) is not None:
                if not isinstance(kw[k], list):
                    raise ValueError(f"config {k} must be a list; got {short_repr(kw[k])}")
                kw[k] = tuple(kw[k])
        try:
            return cls(**kw)
        except TypeError as e:
            raise ValueError(f"invalid config: {e}") from None


def _stage_sizes(config: VAEConfig) -> tuple[tuple[int, ...], list[tuple[int, int]]]:
    """The layer widths (input first) and, for images, the spatial size after each conv stage."""
    widths = tuple(config.widths or ())
    if config.is_image:
        c, h, w = config.input_shape
        return (c, *widths), conv_sizes(h, w)
    return (config.input_shape[0], *widths), []


def parameter_count(config: VAEConfig) -> int:
    """The number of weights :class:`~vaeaug.model.vae.VAE` builds for ``config``, computed without torch.

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
            raise ValueError(f"class_names must be strings of at most {MAX_CLASS_NAME} characters; "
                             f"got {short_repr(shown)}")
        if any(unicodedata.category(ch) == "Cc" for ch in s):  # they would reach terminals as escape sequences
            raise ValueError(f"class_names must not hold control characters (newlines, escapes); got {short_repr(s)} - "
                             "rename the class")
    if num_classes is not None and len(out) != num_classes:
        raise ValueError(
            f"class_names must name each of the {num_classes} classes of the model; got {len(out)} names - "
            f"pass {num_classes} names (or none)"
        )
    return out
