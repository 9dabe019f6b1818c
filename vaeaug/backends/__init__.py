"""The generator backends: torch (:mod:`.torch_generator`), onnxruntime (:mod:`.onnx_generator`, with
its torch-free metadata reader :mod:`.onnx_metadata`), the ONNX export, and :func:`.factory.as_generator`,
the only place that knows both. Nothing is imported here, so ``vaeaug.backends.base`` stays torch-free.
"""
