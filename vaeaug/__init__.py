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
    from .data import TensorData, ValueRange, as_tensor_data
    from .dataset import VAEAugmentedDataset
    from .datasets import load_builtin
    from .export import export_onnx
    from .generated import GeneratedDataset
    from .generator import Generator, Noise, TorchGenerator
    from .io import load, read_metadata, save
    from .model import VAE, VAEConfig
    from .ondisk import pregenerate, verify_generated
    from .onnx_backend import OnnxGenerator, read_onnx_metadata
    from .protocol import evaluate
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
    "load": "io",
    "load_builtin": "datasets",
    "read_metadata": "io",
    "save": "io",
    "VAEAugment": "transforms",
    "VAEAugmentedDataset": "dataset",
    "Generator": "generator",
    "TorchGenerator": "generator",
    "Noise": "generator",
    "evaluate": "protocol",
    "tune": "tuning",
    "AugmentSetting": "settings",
    "export_onnx": "export",
    "OnnxGenerator": "onnx_backend",
    "read_onnx_metadata": "onnx_backend",
    "pregenerate": "ondisk",
    "verify_generated": "ondisk",
    "GeneratedDataset": "generated",
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
