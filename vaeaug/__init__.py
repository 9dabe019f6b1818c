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

from ._version import __version__

if TYPE_CHECKING:
    from .augmented_dataset import VAEAugmentedDataset
    from .backends.base import Generator
    from .backends.export import export_onnx
    from .backends.onnx_generator import OnnxGenerator
    from .backends.onnx_metadata import read_onnx_metadata
    from .backends.torch_generator import TorchGenerator
    from .classifier import Budget
    from .data import TensorData, ValueRange, as_tensor_data
    from .data.builtin import load_builtin
    from .data.generated import GeneratedDataset, verify_generated
    from .evaluation import evaluate
    from .io import read_metadata, save
    from .model import VAE, VAEConfig, load
    from .pregeneration import pregenerate
    from .rng import Noise
    from .settings import AugmentSetting
    from .training import fit
    from .transforms import VAEAugment
    from .tuning import tune

_LAZY = {
    "VAE": "model",
    "VAEConfig": "model",
    "TensorData": "data",
    "ValueRange": "data",
    "as_tensor_data": "data",
    "fit": "training",
    "load": "model",
    "load_builtin": "data.builtin",
    "read_metadata": "io",
    "save": "io",
    "VAEAugment": "transforms",
    "VAEAugmentedDataset": "augmented_dataset",
    "Generator": "backends.base",
    "TorchGenerator": "backends.torch_generator",
    "Noise": "rng",
    "evaluate": "evaluation",
    "Budget": "classifier",
    "tune": "tuning",
    "AugmentSetting": "settings",
    "export_onnx": "backends.export",
    "OnnxGenerator": "backends.onnx_generator",
    "read_onnx_metadata": "backends.onnx_metadata",
    "pregenerate": "pregeneration",
    "verify_generated": "data.generated",
    "GeneratedDataset": "data.generated",
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
    "Generator",
    "TorchGenerator",
    "Noise",
    "evaluate",
    "Budget",
    "tune",
    "AugmentSetting",
    "export_onnx",
    "OnnxGenerator",
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
