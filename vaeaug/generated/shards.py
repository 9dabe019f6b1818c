"""The ``.npy`` files of a generated set's shards: their header parsed as a literal (never unpickled),
checked against the manifest's entry, the images memory-mapped from the checked descriptor, the labels
read whole and checked against their SHA-256 (see :mod:`vaeaug.generated.format`); the same header checks
serve a webdataset set's ``.npy`` members (:mod:`vaeaug.generated.tars`).
"""

from __future__ import annotations

import ast
import io
import math
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import numpy as np
from numpy.lib.format import dtype_to_descr

from vaeaug.core.values import short_repr
from vaeaug.files import FileId, check_same_file, file_id, open_regular, sha256_bytes, sha256_open

__all__ = ["npy_header", "npy_bytes", "check_npy", "mentions_object", "open_npy", "map_images", "read_meta",
           "META_DTYPE", "MAX_NPY_HEADER"]

# a shard's labels and flags, one row per sample (variant -1: the real sample)
META_DTYPE = np.dtype([("y", "<i8"), ("source", "<i8"), ("variant", "<i4"), ("synthetic", "?")])
MAX_NPY_HEADER = 1 << 14  # np.save writes ~128 bytes


def npy_bytes(a: np.ndarray) -> bytes:
    """The ``.npy`` bytes of ``a`` (C order, written with ``allow_pickle=False``: no object ever).

    Example:
        >>> len(npy_bytes(np.zeros(3, np.uint8)))
        131
    """
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()

def npy_header(f: BinaryIO, where: str, fix: str) -> tuple[dict[str, Any], int]:
    """The header dict of an ``.npy`` file open at 0 and the data's offset; parsed as a literal, no pickle."""
    def bad(why: str) -> NoReturn:
        raise ValueError(f"{where} is not a valid .npy file written by vaeaug ({why}); {fix}")

    head = f.read(12)
    if len(head) < 10 or head[:6] != b"\x93NUMPY":
        bad("it does not start with the .npy signature")
    if head[6:8] == b"\x01\x00":
        (n,), start = struct.unpack("<H", head[8:10]), 10
    elif head[6:8] == b"\x02\x00" and len(head) == 12:
        (n,), start = struct.unpack("<I", head[8:12]), 12
    else:
        bad(f".npy version {head[6]}.{head[7]}; vaeaug writes 1.0")
    if n > MAX_NPY_HEADER:
        bad(f"a header of {n} bytes")
    f.seek(start)
    text = f.read(n)
    if len(text) != n:
        bad("its header is cut short")
    try:
        d = ast.literal_eval(text.decode("latin1"))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        bad("its header is not a Python literal")
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        bad("its header is not a dict of descr, fortran_order and shape")
    return d, start + n


def mentions_object(descr: Any) -> bool:
    """Whether an ``.npy`` header's ``descr`` names Python objects (``'|O'``, a field of them, a subarray)."""
    if isinstance(descr, str):
        return descr.lstrip("<>|=").startswith("O")
    if isinstance(descr, tuple):  # (type, shape)
        return len(descr) > 0 and mentions_object(descr[0])
    return isinstance(descr, list) and any(  # fields (name, type[, shape])
        isinstance(field, tuple) and len(field) > 1 and mentions_object(field[1]) for field in descr)


def check_npy(f: BinaryIO, size: int, dtype: np.dtype[Any], shape: tuple[int, ...], where: str, fix: str) -> int:
    """Check the ``.npy`` bytes of ``size`` bytes open at 0 in ``f``: a header without objects, ``dtype`` in C order,
    ``shape``, and exactly the data they need; the data's offset.

    Example:
        >>> import io
        >>> blob = npy_bytes(np.zeros((2, 3), np.uint8))
        >>> check_npy(io.BytesIO(blob), len(blob), np.dtype(np.uint8), (2, 3), "a.npy", "write it again")
        128
    """
    header, offset = npy_header(f, where, fix)
    want = dtype_to_descr(dtype)
    if mentions_object(header["descr"]):
        raise ValueError(f"{where} holds Python objects (dtype {short_repr(header['descr'])}), which vaeaug never "
                         f"writes and never reads (reading them would unpickle; the manifest says {want!r}); {fix}")
    if header["descr"] != want:
        raise ValueError(f"{where} holds dtype {short_repr(header['descr'])}; the manifest says {want!r}; {fix}")
    if header["fortran_order"] is not False:
        raise ValueError(f"{where} is in Fortran order; vaeaug writes C order (the manifest says {want!r} in C "
                         f"order); {fix}")
    got = header["shape"]
    if not isinstance(got, tuple) or tuple(type(v) for v in got) != (int,) * len(shape) or got != shape:
        raise ValueError(f"{where} holds shape {short_repr(got)}; the manifest says {shape}; {fix}")
    need = offset + math.prod(shape) * dtype.itemsize
    if size != need:
        raise ValueError(f"{where} is {size} bytes; its header (shape {shape}, {want!r}) needs exactly {need} "
                         f"({'cut short' if size < need else 'trailing bytes'}); {fix}")
    return offset


def _repair(root: Path, i: int) -> str:
    """What to do about a damaged shard ``i`` of the set in ``root``."""
    return (f"run vaeaug verify {root}; to repair, delete shard {i}'s files ({root / f'shard-{i:05d}'}*) and run the "
            "same vaeaug generate command again")


def open_npy(root: Path, shard: dict[str, Any], key: str, dtype: np.dtype[Any],
              shape: tuple[int, ...]) -> tuple[BinaryIO, int, int]:
    """Open a shard's ``.npy`` file (regular), check its header and size; ``(file, size, data offset)``."""
    entry, i = shard["files"][key], shard["index"]
    where, fix = f"{entry['name']} (shard {i} of {root})", _repair(root, i)
    try:
        f = open_regular(root / entry["name"], "generated-set shard (.npy)")
    except FileNotFoundError:
        raise ValueError(f"{where} is missing; {fix}") from None
    except ValueError as e:  # a FIFO, a device, a folder, unreadable
        raise ValueError(f"{e}; {fix}") from None
    try:
        size = os.fstat(f.fileno()).st_size
        offset = check_npy(f, size, dtype, shape, where, fix)
        if size != entry["bytes"]:
            raise ValueError(f"{where} is {size} bytes; the manifest says {entry['bytes']}; {fix}")
        return f, size, offset
    except BaseException:
        f.close()
        raise


def map_images(root: Path, shard: dict[str, Any], dtype: np.dtype[Any], sample_shape: tuple[int, ...], *,
               sha256: bool = False, same_as: FileId | None = None) -> tuple[np.ndarray, FileId]:
    """Memory-map a shard's images from the very descriptor whose header and size were checked.

    Args:
        root, shard, dtype, sample_shape: the set's folder, the shard's manifest entry, what its images hold.
        sha256: first check that descriptor's bytes against the manifest's SHA-256.
        same_as: the :data:`~vaeaug.files.FileId` the file had when it was checked (a copy of the set reopened
            in a DataLoader worker): another file, or the same one changed since, is refused.

    Returns:
        The images ``(count, *sample_shape)`` and the file's id.
    """
    shape = (int(shard["count"]), *sample_shape)
    f, _, offset = open_npy(root, shard, "x", dtype, shape)
    entry, i = shard["files"]["x"], shard["index"]
    where = f"{entry['name']} (shard {i} of {root})"
    with f:
        fid = file_id(f) if same_as is None else check_same_file(f, same_as, where)
        if sha256 and (digest := sha256_open(f, where)) != entry["sha256"]:
            raise ValueError(f"{where} is corrupt: its SHA-256 is {digest}, the manifest says {entry['sha256']}; "
                             f"{_repair(root, i)}")
        if math.prod(shape) == 0:
            return np.zeros(shape, dtype), fid
        return np.memmap(f, dtype=dtype, mode="r", offset=offset, shape=shape), fid


def read_meta(root: Path, shard: dict[str, Any]) -> np.ndarray:
    """A shard's labels and flags: header and size checked, bytes against the manifest's SHA-256."""
    count = int(shard["count"])
    f, size, offset = open_npy(root, shard, "meta", META_DTYPE, (count,))
    with f:
        f.seek(0)
        blob = f.read(size + 1)
    entry, i = shard["files"]["meta"], shard["index"]
    if len(blob) != size or sha256_bytes(blob) != entry["sha256"]:
        raise ValueError(f"{entry['name']} (shard {i} of {root}) does not match the SHA-256 in the manifest: its "
                         f"labels or flags were changed; to repair, delete shard {i}'s files and run the same vaeaug "
                         "generate command again")
    return np.frombuffer(blob, META_DTYPE, count=count, offset=offset)
