"""The backends that run a model: torch (:mod:`.torch_backend`), onnxruntime (:mod:`.onnx_backend`, torch-free),
the ONNX export and its metadata rules (:mod:`.onnx`), and :func:`.factory.as_backend`, the only place that
knows both. Nothing is imported here, so the onnxruntime backend stays torch-free.
"""
