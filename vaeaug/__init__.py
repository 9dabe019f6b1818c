"""vaeaug: a fitted variational autoencoder as a data augmentation for PyTorch pipelines.

Example:
    >>> import vaeaug
    >>> model = vaeaug.fit("digits", epochs=1, progress=False)
    >>> model.sample(2, generator=__import__("torch").Generator().manual_seed(0)).shape
    torch.Size([2, 1, 8, 8])
"""

from ._version import __version__
from .data import TensorData, ValueRange, as_tensor_data
from .datasets import load_builtin
from .fit import fit
from .io import load, read_metadata, save
from .model import VAE, VAEConfig

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
]
