"""The ONNX export and the rules and bounded reader for an export's metadata (the reader is torch-free)."""
