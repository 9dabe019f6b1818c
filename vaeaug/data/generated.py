"""The generated-set format on disk, its reader (:class:`GeneratedDataset`) and :func:`verify_generated`.

Sets are written by :func:`vaeaug.pregenerate`.

Layout of a set of ``N`` sources with ``k`` variants each (``r = 1`` with ``include_real``): sample
``s`` is slot ``s % (k + r)`` of source ``s // (k + r)``; slot 0 is the real sample when ``r = 1``,
the others are variants ``0..k-1``. Every variant is a pure function of ``(seed, source index,
variant id)`` (its noise keys, and for ``interpolate`` and ``extrapolate`` its partner), computed
in fixed-size, zero-padded chunks, so its bytes do not depend on which process, job or batch made it.

Samples are cut into shards of ``shard_size`` consecutive samples. A shard is two ``.npy`` files,
``shard-00000-x.npy`` (images ``(n, C, H, W)`` in the input's dtype and value range) and
``shard-00000-meta.npy`` (a structured array: ``y``, ``source``, ``variant`` (-1 for real),
``synthetic``), each written to a temporary name, fsynced and renamed: a file under its final
name is always complete, and a shard is done when both are. ``run.json`` (written first) holds
the run's identity: the arguments that change the bytes, the model's and the data's hashes, the
backend; a second run into the same folder with another identity is refused. ``manifest.json``
(written last, by whichever process completes the set) adds the counts and every file's SHA-256.

``num_shards`` / ``shard_index`` split the shards round-robin between independent jobs (Slurm
arrays, Kubernetes indexed jobs): job ``i`` writes shards ``m`` with ``m % num_shards == i``.

The image shards are memory-mapped (``np.load(mmap_mode="r")``): opening a set reads only its
manifest and the small per-shard label files, whatever its size; an item is copied out of the
map when it is read. Items are ``(x, y)`` with ``x`` a ``(C, H, W)`` tensor in the stored dtype
and value range (the input's), ``y`` an int (-1 for unlabelled data), plus the synthetic flag
with ``return_is_synthetic=True``.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ValueRange

__all__ = ["GeneratedDataset", "read_manifest", "verify_generated", "META_DTYPE", "FORMAT", "FORMAT_VERSION"]

FORMAT = "vaeaug-generated"
FORMAT_VERSION = 1
META_DTYPE = np.dtype([("y", "<i8"), ("source", "<i8"), ("variant", "<i4"), ("synthetic", "?")])
_FORMATS = ("shards", "imagefolder")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _shard_files(out: Path, m: int) -> dict[str, Path]:
    return {"x": out / f"shard-{m:05d}-x.npy", "meta": out / f"shard-{m:05d}-meta.npy"}


def _marker(out: Path, m: int) -> Path:
    """``shard-00000.json``: written last, with the SHA-256 of the shard's files as they were written."""
    return out / f"shard-{m:05d}.json"


def _safe_name(out: Path, name: Any, pattern: str) -> Path:
    """``out / name`` for a file name taken from a manifest, which must match the expected pattern."""
    if not isinstance(name, str) or not re.fullmatch(pattern, name):
        raise ValueError(f"unexpected file name {name!r} in the manifest")
    return out / name


def read_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a complete generated set, checked for shape; ``ValueError`` naming what is wrong.

    Example:
        >>> read_manifest("/no/such/folder")
        Traceback (most recent call last):
        ...
        FileNotFoundError: no generated set at /no/such/folder (expected /no/such/folder/manifest.json)
    """
    out = Path(out_dir)
    path = out / "manifest.json"
    if not path.is_file():
        if (out / "run.json").is_file():
            raise ValueError(f"{out} is an incomplete generated set (no manifest.json yet): resume the run, or run "
                             "the remaining shard jobs, then read it")
        raise FileNotFoundError(f"no generated set at {out} (expected {path})")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); run vaeaug verify {out}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a vaeaug generated-set manifest")
    try:
        if int(manifest["format_version"]) > FORMAT_VERSION:
            raise ValueError(f"format version {manifest['format_version']} is newer than this vaeaug "
                             f"({FORMAT_VERSION}); upgrade vaeaug")
        fmt = manifest["arguments"]["format"]
        if fmt not in _FORMATS:
            raise ValueError(f"unknown format {fmt!r}")
        shards, total, expected_first = manifest["shards"], int(manifest["counts"]["total"]), 0
        for i, shard in enumerate(shards):
            if shard["index"] != i or shard["first"] != expected_first:
                raise ValueError(f"shard entry {i} is out of order or missing")
            expected_first += int(shard["count"])
            _safe_name(out, shard["marker"]["name"], rf"shard-{i:05d}\.json")
            if fmt == "shards":
                _safe_name(out, shard["files"]["x"]["name"], rf"shard-{i:05d}-x\.npy")
                _safe_name(out, shard["files"]["meta"]["name"], rf"shard-{i:05d}-meta\.npy")
        if expected_first != total:
            raise ValueError(f"the shards hold {expected_first} samples, the counts say {total}")
    except (KeyError, TypeError, ValueError) as e:
        what = f"lacks {e}" if isinstance(e, KeyError) else str(e)
        raise ValueError(f"{path} is malformed: {what}; run vaeaug verify {out}") from None
    return manifest


def _check_file(out: Path, entry: dict[str, Any], pattern: str, shard: int) -> list[str]:
    p = _safe_name(out, entry["name"], pattern)
    if not p.is_file():
        return [f"shard {shard}: {entry['name']} is missing"]
    if p.stat().st_size != entry["bytes"] or _sha256_file(p) != entry["sha256"]:
        return [f"shard {shard}: {entry['name']} is corrupt (SHA-256 differs from the manifest)"]
    return []


def verify_generated(out_dir: str | os.PathLike[str]) -> list[str]:
    """Check a generated set: every shard present, every file's SHA-256 as recorded when it was written.

    Returns:
        The problems found (empty when the set is complete and intact).

    Example:
        >>> verify_generated("/no/such/folder")[0].startswith("no generated set")
        True
    """
    out = Path(out_dir)
    try:
        manifest = read_manifest(out)
    except (OSError, ValueError) as e:
        return [str(e)]
    problems: list[str] = []
    fmt = manifest["arguments"]["format"]
    for shard in manifest["shards"]:
        i = shard["index"]
        marker_ok = not (found := _check_file(out, shard["marker"], rf"shard-{i:05d}\.json", i))
        problems += found
        if fmt == "shards":
            problems += _check_file(out, shard["files"]["x"], rf"shard-{i:05d}-x\.npy", i)
            problems += _check_file(out, shard["files"]["meta"], rf"shard-{i:05d}-meta\.npy", i)
        elif marker_ok:
            for image in json.loads(_marker(out, i).read_text())["images"]:
                try:
                    problems += _check_file(out, image, r"(?!\.)[^/\\\0]+/\d{8}\.png", i)
                except ValueError as err:
                    problems.append(f"shard {i}: {err}")
    return problems



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
