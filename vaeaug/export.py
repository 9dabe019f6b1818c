"""Moved to :mod:`vaeaug.backends.export`."""

from .backends.export import VERIFY_ATOL, export_onnx  # noqa: F401
