"""Moved to :mod:`vaeaug.data.generated`."""

from .data.generated import GeneratedDataset  # noqa: F401
