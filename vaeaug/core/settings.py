"""Augmentation settings: modes, forms and their validation, the library default, and precedence.

Torch-free, so that the ONNX backend can validate settings where torch is not installed.

Precedence for every field (mode, strength, form, p): an explicit argument, then the setting
stored in the model by :func:`vaeaug.tune` (``model.augment``), then :data:`DEFAULT_AUGMENT`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["AugmentSetting", "DEFAULT_AUGMENT", "resolve_setting", "MODES", "FORMS", "PARTNER_MODES", "Mode", "Form",
           "check_mode", "MAX_STRENGTH", "MAX_PARTNER_STRENGTH"]

Mode = Literal["posterior", "isotropic", "interpolate", "extrapolate", "prior", "reconstruct"]
Form = Literal["decode", "delta"]
MODES: tuple[str, ...] = ("posterior", "isotropic", "interpolate", "extrapolate", "prior", "reconstruct")
FORMS: tuple[str, ...] = ("decode", "delta")
PARTNER_MODES: tuple[str, ...] = ("interpolate", "extrapolate")
"""The modes that move each sample relative to a same-class partner: they need labels and partners.
Test ``mode in PARTNER_MODES``, never a mode's name."""

# Largest strength of each partner mode; t = strength * u / 2 with u ~ U(0, 1), so t < strength / 2.
# interpolate, 2: t < 1 keeps z on the segment from mu_a to mu_b (t = 1 would be the partner).
# extrapolate, 4: t < 2, z at most twice the partner's distance beyond mu_a. DeVries & Taylor
# (arXiv 1702.05538) extrapolate with a fixed t = 0.5: the top of the range at strength 1, the
# mean at strength 2; 4 leaves room to tune past that, and refuses the large strengths that suit
# the Gaussian moves (a leftover strength of 5 or 10 would push z many partner distances off the
# class, where the decoder no longer makes a sample of it).
MAX_PARTNER_STRENGTH: dict[str, float] = {"interpolate": 2.0, "extrapolate": 4.0}

MAX_STRENGTH = 100.0
"""The largest strength of any setting: a user's, the command line's, one stored in a model file or an
ONNX export. A move of at most 100 prior standard deviations, far past any useful one (tuned strengths
are below 10); the model's activation bound (:mod:`vaeaug.model.vae`) proves variants finite up to it,
where a strength beyond float32 (``1e39``) made NaN."""


def _number(v: Any) -> bool:
    """An int or a float, not a bool, not NaN (compared exactly: a 400-digit int is not converted)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def _check_p(v: Any) -> float:
    if not (_number(v) and 0 <= v <= 1):
        raise ValueError(f"p must be a probability in [0, 1]; got {v!r:.60}")
    return float(v)


def _check_strength(v: Any) -> float:
    if not (_number(v) and 0 <= v < math.inf):
        raise ValueError(f"strength must be a finite number >= 0; got {v!r:.60}")
    if v > MAX_STRENGTH:
        raise ValueError(f"strength must be at most {MAX_STRENGTH:g} (a move of {MAX_STRENGTH:g} prior standard "
                         f"deviations, far past any useful one); got {v!r:.60} - pass a strength in "
                         f"[0, {MAX_STRENGTH:g}]")
    return float(v)


@dataclass(frozen=True)
class AugmentSetting:
    """How variants are made: ``mode``, ``strength`` and ``form`` of the move, share ``p`` replaced.

    Validated when built (every consumer, stored tuned settings and the CLI go through here):
    known mode and form, ``strength`` in ``[0, 100]`` (:data:`MAX_STRENGTH`; ``<= 2`` for
    ``interpolate``, ``<= 4`` for ``extrapolate``), ``p`` in ``[0, 1]``; :meth:`check_for` adds what
    depends on the model.

    Example:
        >>> AugmentSetting().label()
        'delta isotropic s=1 p=0.5'
        >>> AugmentSetting(strength=float("inf"))
        Traceback (most recent call last):
        ...
        ValueError: strength must be a finite number >= 0; got inf
        >>> AugmentSetting(strength=1e39)
        Traceback (most recent call last):
        ...
        ValueError: strength must be at most 100 (...); got 1e+39 - pass a strength in [0, 100]
    """

    mode: str = "isotropic"
    strength: float = 1.0
    form: str = "delta"
    p: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {self.mode!r}")
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}; got {self.form!r}")
        strength, p = _check_strength(self.strength), _check_p(self.p)
        high = MAX_PARTNER_STRENGTH.get(self.mode)
        if high is not None and strength > high:
            raise ValueError(f"{self.mode} needs strength in [0, {high:g}] (t = strength * u / 2 < {high / 2:g}); "
                             f"got {strength:g} - pass a strength of at most {high:g}")
        if self.mode == "prior" and self.form == "delta":
            raise ValueError("mode 'prior' has no source sample, so form 'delta' does not apply; use form='decode'")
        object.__setattr__(self, "strength", strength)
        object.__setattr__(self, "p", p)

    def check_for(self, *, conditional: bool) -> AugmentSetting:
        """``self`` if it works with a model (conditional or not); ``ValueError`` otherwise."""
        if self.mode == "prior" and not conditional:
            raise ValueError(
                "mode 'prior' makes a new sample of the source's class and needs a class-conditional "
                "model (fit with conditional=True); use 'posterior' or 'isotropic' with this model"
            )
        return self

    def label(self) -> str:
        """A short human-readable description."""
        return f"{self.form} {self.mode} s={self.strength:g} p={self.p:g}"

    @classmethod
    def from_dict(cls, d: Any) -> AugmentSetting:
        """Validate and build from a JSON dict (as stored in model files)."""
        keys = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, dict) or set(d) != keys:
            raise ValueError(f"an augmentation setting must be a dict with keys mode, strength, form, p; got {d!r}")
        for k in ("mode", "form"):
            if not isinstance(d[k], str):
                raise ValueError(f"augmentation setting {k} must be a string; got {d[k]!r}")
        return cls(d["mode"], d["strength"], d["form"], d["p"])


# Measured default (QUALITY.md and BENCHMARKS.md): the delta form with an isotropic move of one
# prior standard deviation, on half of each batch; the only form that has helped a classifier.
DEFAULT_AUGMENT = AugmentSetting()


def resolve_setting(stored: dict[str, Any] | None, **explicit: Any) -> AugmentSetting:
    """Fill the ``None`` fields of ``explicit`` from ``stored`` (the model's tuned choice), then defaults.

    Example:
        >>> resolve_setting({"mode": "posterior", "strength": 2.0, "form": "delta", "p": 0.5}, p=1.0).label()
        'delta posterior s=2 p=1'
    """
    base = DEFAULT_AUGMENT if not stored else AugmentSetting.from_dict(stored)
    changes = {k: v for k, v in explicit.items() if v is not None}
    if base.p == 0.0 and "p" not in changes and changes.keys() & {"mode", "strength", "form"}:
        # tuned "off", but the caller asks for a specific move: use the default share, not 0
        changes["p"] = DEFAULT_AUGMENT.p
    if changes.get("mode") == "prior" and "form" not in changes:
        changes["form"] = "decode"  # prior has no source sample: it is always decoded
    return dataclasses.replace(base, **changes)


def check_mode(mode: str, form: str, strength: float, *, conditional: bool) -> None:
    """Validate a (mode, form, strength) setting for a model; raise ``ValueError`` if unusable.

    Example:
        >>> check_mode("posterior", "delta", 1.0, conditional=False)
    """
    AugmentSetting(mode, strength, form, 1.0).check_for(conditional=conditional)
