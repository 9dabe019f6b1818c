"""Pictures: training curves, the evaluation's gains chart and a model's overview (:mod:`.plots`: no model or
data needed), and the preview of a model's variants on data (:mod:`.previews`).

The names are imported lazily (PEP 562), so drawing a model's overview in Jupyter does not import the
previews' torch backend.

Example:
    >>> import vaeaug.viz
    >>> vaeaug.viz.curves([{"epoch": 1, "train_loss": 3.0}, {"epoch": 2, "train_loss": 2.0}]).size
    (900, 300)
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["preview", "curves", "curves_figure", "gains_chart", "gains_figure", "overview", "has_matplotlib",
           "PLOT_EXTRA"]
_LAZY = {name: "previews" if name == "preview" else "plots" for name in __all__}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vaeaug.viz' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"vaeaug.viz.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
