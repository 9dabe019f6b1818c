"""Moved to :mod:`vaeaug.data.builtin`."""

from .data.builtin import BUILTIN_NAMES, find_fashion_mnist, is_builtin, load_builtin, read_idx  # noqa: F401
