"""Moved to :mod:`vaeaug.backends.onnx_generator` and :mod:`vaeaug.backends.onnx_metadata`."""

from .backends.onnx_generator import OnnxGenerator  # noqa: F401
from .backends.onnx_metadata import GRAPHS, ONNX_FORMAT_VERSION, graph_sha256, onnx_paths, read_onnx_metadata  # noqa: F401
