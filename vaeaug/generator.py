"""Moved to :mod:`vaeaug.backends` (and ``Noise`` to :mod:`vaeaug.rng`); the old names stay importable."""

from typing import Any

from .augment import class_members, same_class_partners  # noqa: F401
from .backends.base import Generator, run_chunked  # noqa: F401
from .backends.factory import as_generator  # noqa: F401
from .rng import Noise  # noqa: F401


def __getattr__(name: str) -> Any:  # TorchGenerator imports torch: only when asked for
    if name == "TorchGenerator":
        from .backends.torch_generator import TorchGenerator

        return TorchGenerator
    raise AttributeError(f"module 'vaeaug.generator' has no attribute {name!r}")
