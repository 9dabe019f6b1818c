"""``GeneratedDataset``: a map-style Dataset over a set written by :func:`vaeaug.pregenerate`.

The image shards are memory-mapped (``np.load(mmap_mode="r")``): opening a set reads only its
manifest and the small per-shard label files, whatever its size; an item is copied out of the
map when it is read. Items are ``(x, y)`` with ``x`` a ``(C, H, W)`` tensor in the stored dtype
and value range (the input's), ``y`` an int (-1 for unlabelled data), plus the synthetic flag
with ``return_is_synthetic=True``.
"""

from __future__ import annotations

import bisect
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .ondisk import META_DTYPE, read_manifest, verify_generated

__all__ = ["GeneratedDataset"]


class GeneratedDataset(torch.utils.data.Dataset):
    """The samples of a generated set, in order: source by source, real first, then its variants.

    Args:
        out_dir: a folder written by :func:`vaeaug.pregenerate` (format ``"shards"``).
        verify: check every file's SHA-256 against the manifest first (reads the whole set once).
        transform: applied to each image.
        return_is_synthetic: append ``True`` for variants, ``False`` for real samples.

    Example:
        >>> import os, tempfile, vaeaug
        >>> out = os.path.join(tempfile.mkdtemp(), "gen")
        >>> _ = vaeaug.pregenerate("digits", vaeaug.fit("digits", epochs=1, progress=False), out,
        ...                        variants_per_sample=1, progress=False)
        >>> ds = GeneratedDataset(out, return_is_synthetic=True)
        >>> x, y, synthetic = ds[1]
        >>> x.shape, x.dtype, synthetic
        (torch.Size([1, 8, 8]), torch.float64, True)
    """

    def __init__(self, out_dir: str | os.PathLike[str], verify: bool = False, transform: Any = None,
                 return_is_synthetic: bool = False) -> None:
        self.root = Path(out_dir)
        self.manifest = read_manifest(self.root)
        if self.manifest["arguments"]["format"] != "shards":
            raise ValueError(
                f"{self.root} was written as an image folder: read it with torchvision.datasets.ImageFolder"
            )
        if verify:
            problems = verify_generated(self.root)
            if problems:
                raise ValueError(f"{self.root} failed verification: {'; '.join(problems[:5])}"
                                 + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
        self.transform = transform
        self.return_is_synthetic = return_is_synthetic
        self.class_names = self.manifest["data"]["class_names"]
        self._x: list[np.ndarray] | None = None
        metas = []
        for shard in self.manifest["shards"]:
            try:
                meta = np.load(self.root / shard["files"]["meta"]["name"], allow_pickle=False)
            except (OSError, ValueError) as e:
                raise ValueError(f"shard {shard['index']} of {self.root} cannot be read ({e}); run vaeaug verify "
                                 f"{self.root}") from None
            if meta.dtype != META_DTYPE or len(meta) != shard["count"]:
                raise ValueError(f"shard {shard['index']} of {self.root} does not match the manifest; run "
                                 f"vaeaug verify {self.root}")
            metas.append(meta)
        self._open()
        self.meta = np.concatenate(metas) if metas else np.zeros(0, META_DTYPE)
        self._starts = [int(s["first"]) for s in self.manifest["shards"]]

    def _open(self) -> list[np.ndarray]:
        """Memory-map the image shards (again after unpickling: maps are never pickled)."""
        maps = []
        for shard in self.manifest["shards"]:
            try:
                x = np.load(self.root / shard["files"]["x"]["name"], mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise ValueError(f"shard {shard['index']} of {self.root} cannot be read ({e}); run vaeaug verify "
                                 f"{self.root}") from None
            if len(x) != shard["count"]:
                raise ValueError(f"shard {shard['index']} of {self.root} does not match the manifest; run "
                                 f"vaeaug verify {self.root}")
            maps.append(x)
        self._x = maps
        return maps

    def __getstate__(self) -> dict[str, Any]:
        # pickling a memory map copies its data: DataLoader workers started by spawn or forkserver
        # would each receive the whole set. They reopen the files instead.
        state = self.__dict__.copy()
        state["_x"] = None
        return state

    def __len__(self) -> int:
        return len(self.meta)

    @property
    def value_range(self) -> Any:
        """The stored images' value range and dtype (a :class:`vaeaug.ValueRange`)."""
        from .config import ValueRange

        return ValueRange.from_dict(self.manifest["data"]["value_range"])

    @property
    def targets(self) -> np.ndarray:
        """Every sample's label (int64), like torchvision datasets' ``targets``."""
        return np.asarray(self.meta["y"])

    @property
    def is_synthetic(self) -> np.ndarray:
        """Every sample's synthetic flag."""
        return np.asarray(self.meta["synthetic"])

    def __getitem__(self, index: int) -> Any:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"GeneratedDataset indices must be integers; got {type(index).__name__}")
        n = len(self)
        i = int(index) + n if index < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(f"index {index} is out of range for a set of {n} samples")
        m = bisect.bisect_right(self._starts, i) - 1
        maps = self._x if self._x is not None else self._open()
        x = torch.from_numpy(np.array(maps[m][i - self._starts[m]]))
        if self.transform is not None:
            x = self.transform(x)
        row = self.meta[i]
        if self.return_is_synthetic:
            return x, int(row["y"]), bool(row["synthetic"])
        return x, int(row["y"])
