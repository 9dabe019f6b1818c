"""Built-in datasets: scikit-learn's 8x8 digits (the embedded default) and Fashion-MNIST.

Fashion-MNIST is read from the original IDX files, looked up in this order: ``root``,
``root/FashionMNIST/raw`` (torchvision's layout), ``$VAEAUG_FASHION_MNIST``, and
``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist`` package). With
``download=True`` torchvision fetches it into ``root`` when none is found.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from vaeaug.data.arrays import TensorData, from_arrays
from vaeaug.files import GiB, open_regular

__all__ = ["BUILTIN_NAMES", "is_builtin", "load_builtin", "read_idx", "find_fashion_mnist"]

BUILTIN_NAMES = ("digits", "fashion-mnist")
_ALIASES = {"digits": "digits", "fashion-mnist": "fashion-mnist",
            "fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist"}
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
MAX_IDX_BYTES = 2 * GiB  # Fashion-MNIST's largest file is 47 MB decompressed
# digits has no official split: the first 80% (1437) is "train", the rest (360) "test".
DIGITS_TRAIN = 1437


def is_builtin(name: str) -> bool:
    """Whether ``name`` names a built-in dataset (case-insensitive, ``_`` or ``-``)."""
    return name.lower() in _ALIASES


def load_builtin(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    download: bool = False,
) -> TensorData:
    """Load a built-in dataset in model space.

    Args:
        name: ``"digits"`` or ``"fashion-mnist"``.
        root: folder holding the Fashion-MNIST IDX files (or ``FashionMNIST/raw`` under it).
        split: ``"train"`` or ``"test"``; digits also accepts ``"all"``.
        download: let torchvision download Fashion-MNIST into ``root`` if it is not found.

    Returns:
        The dataset as :class:`~vaeaug.data.TensorData`.

    Example:
        >>> d = load_builtin("digits")
        >>> d.x.shape, d.value_range.high
        (torch.Size([1437, 1, 8, 8]), 16.0)
    """
    key = _ALIASES.get(name.lower())
    if key is None:
        raise ValueError(f"unknown built-in dataset {name!r}; expected one of {', '.join(BUILTIN_NAMES)}")
    if key == "digits":
        return _digits(split)
    return _fashion_mnist(root, split, download)


def _digits(split: str) -> TensorData:
    if split not in ("train", "test", "all"):
        raise ValueError(f"digits split must be 'train', 'test' or 'all'; got {split!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "the built-in 'digits' set ships inside scikit-learn; install it with "
            "pip install 'vaeaug[data]'"
        ) from None
    bunch = load_digits()
    sl = {"train": slice(0, DIGITS_TRAIN), "test": slice(DIGITS_TRAIN, None), "all": slice(None)}[split]
    return from_arrays(bunch.images[sl], bunch.target[sl], value_range=(0, 16),
                       class_names=[str(i) for i in range(10)], source=f"digits[{split}]")


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes, as used by (Fashion-)MNIST.

    Args:
        path: the ``.idx``/``-ubyte`` file, or its ``.gz``.

    Returns:
        A uint8 array of the shape the header declares.
    """
    p = Path(path)
    where = repr(str(p))
    with open_regular(p, "IDX file", max_bytes=MAX_IDX_BYTES) as f:
        try:
            if p.suffix == ".gz":
                with gzip.GzipFile(fileobj=f, mode="rb") as g:
                    return _read_idx_stream(g, where)
            return _read_idx_stream(f, where)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"cannot read IDX file {where}: {e}") from None


def _read_idx_stream(f: Any, where: str) -> np.ndarray:
    """Header first; then exactly the bytes its dimensions declare (at most MAX_IDX_BYTES, even gzipped)."""
    head = f.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
        raise ValueError(f"{where} is not an unsigned-byte IDX file (bad magic number)")
    ndim = head[3]
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise ValueError(f"IDX file {where} is truncated inside its header")
    dims = [int.from_bytes(raw_dims[4 * i: 4 + 4 * i], "big") for i in range(ndim)]
    count = math.prod(dims)
    if count > MAX_IDX_BYTES:
        raise ValueError(f"IDX file {where} declares shape {tuple(dims)} ({count} bytes), more than the "
                         f"{MAX_IDX_BYTES} vaeaug reads; the file is corrupt or not (Fashion-)MNIST")
    data = f.read(count + 1)
    if len(data) != count:
        raise ValueError(
            f"IDX file {where} declares shape {tuple(dims)} ({count} bytes) but holds "
            f"{'more' if len(data) > count else len(data)} bytes of data; the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def find_fashion_mnist(root: str | os.PathLike[str] | None = None) -> Path | None:
    """Return the first folder holding the four Fashion-MNIST IDX files, or ``None``."""
    candidates: list[Path] = []
    if root is not None:
        candidates += [Path(root), Path(root) / "FashionMNIST" / "raw"]
    env = os.environ.get("VAEAUG_FASHION_MNIST")
    if env:
        candidates.append(Path(env))
    candidates.append(DEBIAN_FASHION_MNIST)
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    for c in candidates:
        if all(_idx_file(c, s) is not None for s in stems):
            return c
    return None


def _fashion_mnist(root: str | os.PathLike[str] | None, split: str, download: bool) -> TensorData:
    if split not in ("train", "test"):
        raise ValueError(f"fashion-mnist split must be 'train' or 'test'; got {split!r}")
    folder = find_fashion_mnist(root)
    if folder is None and download:
        from torchvision.datasets import FashionMNIST

        dl_root = Path(root) if root is not None else Path.home() / ".cache" / "vaeaug"
        FashionMNIST(str(dl_root), train=split == "train", download=True)
        folder = find_fashion_mnist(dl_root)
    if folder is None:
        where = f"{root!s}, {root!s}/FashionMNIST/raw, " if root is not None else ""
        raise ValueError(
            f"Fashion-MNIST IDX files not found (looked in {where}$VAEAUG_FASHION_MNIST and "
            f"{DEBIAN_FASHION_MNIST}); install the Debian package dataset-fashion-mnist, pass "
            "root= a folder holding them, or download=True (needs internet)"
        )
    prefix = "train" if split == "train" else "t10k"
    images_path = _idx_file(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = _idx_file(folder, f"{prefix}-labels-idx1-ubyte")
    assert images_path is not None and labels_path is not None
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"Fashion-MNIST files in {str(folder)!r} do not match: images {images.shape}, "
            f"labels {labels.shape}; expected (N, 28, 28) and (N,)"
        )
    return from_arrays(images, labels, layout="NHW", class_names=FASHION_MNIST_CLASSES,
                       source=f"fashion-mnist[{split}]")
