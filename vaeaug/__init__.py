"""vaeaug: a fitted variational autoencoder as a data augmentation for PyTorch pipelines.

The public names are imported lazily (PEP 562), so ``import vaeaug`` and the command line's
argument errors stay fast and torch is imported only when a name that needs it is used.

Example:
    >>> import torch, vaeaug
    >>> model = vaeaug.fit("digits", epochs=1, progress=False)
    >>> model.sample(2, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 1, 8, 8])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vaeaug._version import __version__

if TYPE_CHECKING:
    from vaeaug.augmented_dataset import VAEAugmentedDataset
    from vaeaug.backends.onnx.export import export_onnx
    from vaeaug.backends.onnx.metadata import read_onnx_metadata
    from vaeaug.backends.onnx_backend import OnnxBackend
    from vaeaug.backends.torch_backend import TorchBackend
    from vaeaug.core.backend import Backend
    from vaeaug.core.rng import Noise
    from vaeaug.core.settings import AugmentSetting
    from vaeaug.data import TensorData, ValueRange, as_tensor_data
    from vaeaug.data.builtin import load_builtin
    from vaeaug.fitting.training import fit
    from vaeaug.generated.reader import GeneratedDataset, verify_generated
    from vaeaug.generated.writer import pregenerate
    from vaeaug.model.vae import VAE, VAEConfig, load
    from vaeaug.model.vaefile import read_metadata, save
    from vaeaug.protocol.classifier import Budget
    from vaeaug.protocol.evaluation import evaluate
    from vaeaug.protocol.tuning import tune
    from vaeaug.transforms import VAEAugment, tuned_pipeline

_LAZY = {
    "VAE": "model.vae",
    "VAEConfig": "model.vae",
    "TensorData": "data",
    "ValueRange": "data",
    "as_tensor_data": "data",
    "fit": "fitting.training",
    "load": "model.vae",
    "load_builtin": "data.builtin",
    "read_metadata": "model.vaefile",
    "save": "model.vaefile",
    "VAEAugment": "transforms",
    "VAEAugmentedDataset": "augmented_dataset",
    "Backend": "core.backend",
    "TorchBackend": "backends.torch_backend",
    "Noise": "core.rng",
    "evaluate": "protocol.evaluation",
    "Budget": "protocol.classifier",
    "tune": "protocol.tuning",
    "tuned_pipeline": "transforms",
    "AugmentSetting": "core.settings",
    "export_onnx": "backends.onnx.export",
    "OnnxBackend": "backends.onnx_backend",
    "read_onnx_metadata": "backends.onnx.metadata",
    "pregenerate": "generated.writer",
    "verify_generated": "generated.reader",
    "GeneratedDataset": "generated.reader",
}

__all__ = [
    "__version__",
    "VAE",
    "VAEConfig",
    "TensorData",
    "ValueRange",
    "as_tensor_data",
    "fit",
    "load",
    "load_builtin",
    "read_metadata",
    "save",
    "VAEAugment",
    "VAEAugmentedDataset",
    "Backend",
    "TorchBackend",
    "Noise",
    "evaluate",
    "Budget",
    "tune",
    "tuned_pipeline",
    "AugmentSetting",
    "export_onnx",
    "OnnxBackend",
    "read_onnx_metadata",
    "pregenerate",
    "verify_generated",
    "GeneratedDataset",
]
assert set(__all__) == {"__version__", *_LAZY}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vaeaug' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
