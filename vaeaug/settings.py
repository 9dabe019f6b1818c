"""Augmentation settings: modes, forms and their validation, the library default, and precedence.

Torch-free, so that the ONNX backend can validate settings where torch is not installed.

Precedence for every field (mode, strength, form, p): an explicit argument, then the setting
stored in the model by :func:`vaeaug.tune` (``model.augment``), then :data:`DEFAULT_AUGMENT`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["AugmentSetting", "DEFAULT_AUGMENT", "resolve_setting", "MODES", "FORMS", "Mode", "Form", "check_mode"]

Mode = Literal["posterior", "isotropic", "interpolate", "prior", "reconstruct"]
Form = Literal["decode", "delta"]
MODES: tuple[str, ...] = ("posterior", "isotropic", "interpolate", "prior", "reconstruct")
FORMS: tuple[str, ...] = ("decode", "delta")


@dataclass(frozen=True)
class AugmentSetting:
    """How variants are made: ``mode``, ``strength`` and ``form`` of the move, share ``p`` replaced.

    Example:
        >>> AugmentSetting().label()
        'delta isotropic s=1 p=0.5'
    """

    mode: str = "isotropic"
    strength: float = 1.0
    form: str = "delta"
    p: float = 0.5

    def label(self) -> str:
        """A short human-readable description."""
        return f"{self.form} {self.mode} s={self.strength:g} p={self.p:g}"

    @classmethod
    def from_dict(cls, d: Any) -> AugmentSetting:
        """Validate and build from a JSON dict (as stored in model files)."""
        keys = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, dict) or set(d) != keys:
            raise ValueError(f"an augmentation setting must be a dict with keys mode, strength, form, p; got {d!r}")
        for k in ("strength", "p"):
            if isinstance(d[k], bool) or not isinstance(d[k], (int, float)):
                raise ValueError(f"augmentation setting {k} must be a number; got {d[k]!r}")
        for k in ("mode", "form"):
            if not isinstance(d[k], str):
                raise ValueError(f"augmentation setting {k} must be a string; got {d[k]!r}")
        if not 0.0 <= d["p"] <= 1.0:
            raise ValueError(f"augmentation setting p must be in [0, 1]; got {d['p']!r}")
        return cls(d["mode"], float(d["strength"]), d["form"], float(d["p"]))


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
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}; got {form!r}")
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not strength >= 0:
        raise ValueError(f"strength must be a number >= 0; got {strength!r}")
    if mode == "interpolate" and strength > 2:
        raise ValueError(f"interpolate needs strength in [0, 2] (t = strength * u / 2 <= 1); got {strength}")
    if mode == "prior" and not conditional:
        raise ValueError(
            "mode 'prior' makes a new sample of the source's class and needs a class-conditional "
            "model (fit with conditional=True); use 'posterior' or 'isotropic' with this model"
        )
    if mode == "prior" and form == "delta":
        raise ValueError("mode 'prior' has no source sample, so form 'delta' does not apply; use form='decode'")
