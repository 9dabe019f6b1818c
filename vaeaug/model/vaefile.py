"""Model files: one safetensors file, weights as tensors, everything else as JSON metadata.

Loading parses the header itself before safetensors touches the file, never unpickles, and
validates everything: format name and version, a SHA-256 over the header and the tensor
bytes, config, value range, tensor names, shapes, dtypes (checked on a meta-device skeleton
before anything is allocated), and finiteness of the weights. Any problem is a ``ValueError``
that names it. The checksum detects corruption and careless edits; it is not a signature (whoever
edits the file can recompute it), which is why every field is validated as well.

Reads are bounded and never hang: the file is opened through :func:`vaeaug.files.open_regular`
(regular files only: a FIFO, a device such as ``/dev/zero`` or a directory is refused at once),
at most :data:`MAX_MODEL_FILE` bytes; the 8-byte length and the header (2 bytes to 64 MiB, strict JSON of
at most :data:`vaeaug.files.MAX_JSON_ITEMS` values, counted before it is parsed, nested at most 32 deep) are
read first, and the tensor data only once the header's tensor table
(contiguous, every size consistent with its dtype and shape) declares exactly the bytes the file
holds and the float32 weights its config builds (a config itself bounded by
:data:`vaeaug.model.config.MAX_PARAMETERS` and the other limits in :mod:`vaeaug.model.config`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import sys
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import torch
from safetensors.torch import load as st_load

from vaeaug._version import __version__
from vaeaug.core.settings import AugmentSetting
from vaeaug.core.values import ValueRange
from vaeaug.files import MiB, open_regular, parse_json, write_atomic
from vaeaug.model.config import MAX_PARAMETERS, VAEConfig, check_class_names, parameter_count

__all__ = ["save", "read_model", "read_metadata", "model_bytes", "SavedModel", "FORMAT", "FORMAT_VERSION"]


class SavedModel(Protocol):
    """What the file format stores of a model (a :class:`vaeaug.VAE` is one): its weights and description."""

    config: VAEConfig
    value_range: ValueRange
    class_names: list[str] | None
    history: list[dict[str, Any]]
    augment: dict[str, Any] | None
    tuning: dict[str, Any] | None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The weights by name (``nn.Module.state_dict``)."""
        ...

FORMAT = "vaeaug-model"
FORMAT_VERSION = 1


def save(model: SavedModel, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` to ``path`` atomically (a temporary file renamed into place).

    Args:
        model: the VAE to save.
        path: destination, conventionally ending in ``.vae``.

    Returns:
        The path written.

    Example:
        >>> import tempfile, os
        >>> from vaeaug import VAE, VAEConfig
        >>> p = os.path.join(tempfile.mkdtemp(), "m.vae")
        >>> _ = save(VAE(VAEConfig(input_shape=(1, 8, 8))), p)
        >>> os.path.getsize(p) > 0
        True
    """
    return write_atomic(path, model_bytes(model))


def model_bytes(model: SavedModel) -> bytes:
    """The bytes :func:`save` writes for ``model`` (canonical: the same model gives the same bytes).

    Their SHA-256 identifies a model, e.g. in an ONNX export's metadata.
    """
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "vaeaug_version": __version__,
        "config": json.dumps(model.config.to_dict(), sort_keys=True),
        "value_range": json.dumps(model.value_range.to_dict(), sort_keys=True),
        "class_names": json.dumps(model.class_names),
        "history": json.dumps(model.history),
        "augment": json.dumps(model.augment, sort_keys=True),
        "tuning": json.dumps(model.tuning, sort_keys=True),
    }
    return _serialize(model.state_dict(), meta)


_ST_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
              torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
              torch.uint8: "U8", torch.bool: "BOOL"}


def _serialize(state: dict[str, torch.Tensor], meta: dict[str, str]) -> bytes:
    """A safetensors file with a canonical header: same model, same bytes; checksum over all of it."""
    if sys.byteorder != "little":
        raise RuntimeError("vaeaug model files are little-endian; saving on a big-endian machine is unsupported")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    entries: dict[str, Any] = {}
    chunks: list[bytes] = []
    offset = 0
    # widest dtypes first keeps every tensor aligned to its item size, as safetensors does
    for name in sorted(tensors, key=lambda k: (-tensors[k].element_size(), k)):
        t = tensors[name]
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        entries[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape),
                         "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    data = b"".join(chunks)
    meta = dict(meta, sha256=_content_sha256(meta, entries, data))
    header = json.dumps({"__metadata__": meta, **entries}, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


def _content_sha256(meta: dict[str, Any], entries: dict[str, Any], data: bytes) -> str:
    """SHA-256 over the metadata (without the checksum), the tensor table and the tensor bytes."""
    h = _content_hash(meta, entries)
    h.update(data)
    return h.hexdigest()


def _content_hash(meta: dict[str, Any], entries: dict[str, Any]) -> Any:
    """The checksum's hash object, fed the description; the tensor bytes follow."""
    described = {"metadata": {k: v for k, v in meta.items() if k != "sha256"}, "tensors": entries}
    return hashlib.sha256(json.dumps(described, sort_keys=True, separators=(",", ":")).encode())


_MAX_HEADER = 64 * MiB  # metadata (config, history, tuning) and the tensor table
_MIN_HEADER = 2  # "{}"
# the small metadata entries, in bytes (a config is under 1 KiB); the others are bounded by the header
_MAX_ENTRY = {"config": 64 * 1024, "value_range": 1024, "augment": 1024, "format": 64, "sha256": 64}
_MAX_TENSORS = 1024  # a VAE has fewer than 40
_MAX_DIMS = 8
_MAX_VERSION_TEXT = 64
# the largest file a valid model can be: its header, then float32 weights (double that for slack)
MAX_MODEL_FILE = 8 + _MAX_HEADER + 8 * MAX_PARAMETERS
_ITEM_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_VERSION_TEXT = re.compile(r"[0-9A-Za-z.+!_-]{1,64}")


def _loads(text: bytes | str, path: Path, what: str, *, allow_nan: bool = False) -> Any:
    """Bounded JSON (:func:`vaeaug.files.parse_json`: values counted and nesting checked before use)."""
    return parse_json(text, path, what, fix="the file is corrupt or was edited; use a copy from where it came from",
                      allow_nan=allow_nan)


def _diagnose(first: bytes, n: int, size: int, where: str) -> str:
    """Say what a file that is not a safetensors file is, from its first bytes."""
    if first[:4] == b"PK\x03\x04":
        return (f"{where} is a zip archive, such as a torch.save() checkpoint, not a vaeaug model "
                "file; vaeaug never unpickles - load it in trusted code and save it with model.save()")
    if first[0] == 0x80 and 2 <= first[1] <= 5:
        return (f"{where} is a Python pickle, not a vaeaug model file; vaeaug never unpickles "
                "files - save models with model.save()")
    if n < _MIN_HEADER:
        return (f"{where} is not a vaeaug model file: its first 8 bytes declare a header of {n} bytes (an empty "
                f"header); a model file's header is a JSON object of {_MIN_HEADER} to {_MAX_HEADER} bytes")
    if n <= _MAX_HEADER and first[8:9] == b"{":
        return f"{where} is truncated: its header needs {n} bytes, the file has {size - 8}"
    return f"{where} is not a vaeaug model file (no safetensors header)"


def _read_exact(f: BinaryIO, n: int, where: str) -> bytes:
    """Exactly ``n`` bytes, or a ValueError (the file shrank while it was read)."""
    got = f.read(n)
    if len(got) != n:
        raise ValueError(f"{where} is truncated: {n} bytes expected at offset {f.tell() - len(got)}, "
                         f"{len(got)} read (was it changed while it was read?)")
    return got


def _tensor_table(header: dict[str, Any], where: str) -> int:
    """Validate every tensor entry (dtype, shape, offsets: contiguous from 0); return the data length."""
    if len(header) > _MAX_TENSORS:
        raise ValueError(f"{where} has a tampered header: {len(header)} tensors, expected at most {_MAX_TENSORS}")
    spans = []
    for name, info in header.items():
        bad = f"{where} has a tampered header: bad entry for tensor {name[:100]!r}"
        if not (isinstance(info, dict) and set(info) == {"dtype", "shape", "data_offsets"}):
            raise ValueError(f"{bad} (expected the keys dtype, shape, data_offsets)")
        offs, shape, dtype = info["data_offsets"], info["shape"], info["dtype"]
        if not (isinstance(offs, list) and len(offs) == 2 and all(_is_index(o) for o in offs) and offs[0] <= offs[1]):
            raise ValueError(f"{bad} (data_offsets {str(offs)[:100]}: expected [begin, end] with 0 <= begin <= end)")
        if not (isinstance(shape, list) and len(shape) <= _MAX_DIMS and all(_is_index(d) for d in shape)):
            raise ValueError(f"{bad} (shape {str(shape)[:100]}: expected at most {_MAX_DIMS} sizes >= 0)")
        if not isinstance(dtype, str) or dtype not in _ITEM_SIZE:
            raise ValueError(f"{bad} (dtype {str(dtype)[:20]!r}: expected one of {sorted(_ITEM_SIZE)})")
        if math.prod(shape) * _ITEM_SIZE[dtype] != offs[1] - offs[0]:
            raise ValueError(f"{bad} (shape {shape} of {dtype} takes {math.prod(shape) * _ITEM_SIZE[dtype]} bytes, "
                             f"data_offsets span {offs[1] - offs[0]})")
        spans.append((offs[0], offs[1]))
    end = 0
    for lo, hi in sorted(spans):
        if lo != end:
            raise ValueError(f"{where} has a tampered header: tensor data overlaps or has gaps (a tensor starts at "
                             f"byte {lo}, expected {end})")
        end = hi
    return end


def _is_index(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_MODEL_FILE


def _parse(path: Path, *, keep_data: bool) -> tuple[bytes, dict[str, Any], dict[str, Any], int]:
    """Read and validate a model file; return (the whole file if ``keep_data``, header, decoded meta, size).

    Bounded: the file must be a regular file of at most :data:`MAX_MODEL_FILE` bytes; the header
    (at most 64 MiB) is read and validated first, and the tensor data is read only when its size,
    declared by the header, matches the config's weights and the file's size.
    """
    where = repr(str(path))
    with open_regular(path, "model file", max_bytes=MAX_MODEL_FILE) as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise ValueError(f"{where} is not a vaeaug model file: only {size} bytes (empty or truncated)")
        first = _read_exact(f, min(size, 9), where)
        (n,) = struct.unpack("<Q", first[:8])
        if not (_MIN_HEADER <= n <= _MAX_HEADER and 8 + n <= size and first[8:9] == b"{"):
            raise ValueError(_diagnose(first, n, size, where))
        raw = first[8:] + _read_exact(f, n - 1, where)
        header = _loads(raw, path, "model file header")
        if not isinstance(header, dict):
            raise ValueError(f"{where} has a corrupt or tampered header (not a JSON object)")
        meta = header.pop("__metadata__", None)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(
                f"{where} is a safetensors file without vaeaug metadata; expected a file written by "
                "vaeaug's model.save()"
            )
        if not all(isinstance(v, str) for v in meta.values()):
            raise ValueError(f"{where} has a tampered header: metadata values must be strings")
        for key, most in _MAX_ENTRY.items():
            if len(meta.get(key, "")) > most:
                raise ValueError(f"{where} has a tampered header: its {key!r} entry is {len(meta[key]):,} characters, "
                                 f"expected at most {most:,}")
        _check_version(meta, where)
        end = _tensor_table(header, where)
        data_len = size - 8 - n
        if end > data_len:
            raise ValueError(
                f"{where} is truncated: the header declares {end} bytes of tensor data, the file holds {data_len}"
            )
        if end < data_len:
            raise ValueError(f"{where} has {data_len - end} unexpected trailing bytes after the tensor data")
        info = _decode_meta(path, meta, size)
        weights = 4 * parameter_count(info["config"])
        if end != weights:
            raise ValueError(f"{where} does not match its config: its tensors take {end} bytes, the config builds "
                             f"{weights // 4} float32 weights ({weights} bytes)")
        h = _content_hash(meta, header)
        chunks = []
        left = end
        while left:  # the data, in pieces: hashed as it comes, kept only for read_model
            piece = _read_exact(f, min(left, 16 * MiB), where)
            h.update(piece)
            if keep_data:
                chunks.append(piece)
            left -= len(piece)
    if meta.get("sha256") != h.hexdigest():
        raise ValueError(
            f"{where} is corrupt or was edited: its content does not match the SHA-256 checksum "
            "recorded in its header"
        )
    blob = first[:8] + raw + b"".join(chunks) if keep_data else b""
    return blob, header, info, size


def _check_version(meta: dict[str, str], where: str) -> None:
    """``format_version``: ASCII decimal digits only (``int()`` would also take ``"１"`` or ``" 1_0"``)."""
    text = meta.get("format_version", "")
    if not re.fullmatch(r"[0-9]{1,9}", text):
        raise ValueError(f"{where} has an invalid format_version {text[:20]!r}; expected ASCII decimal digits "
                         f"such as {str(FORMAT_VERSION)!r}")
    version = int(text)
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{where} has format version {version}, newer than this vaeaug ({__version__}) reads "
            f"(up to {FORMAT_VERSION}); upgrade vaeaug"
        )
    if version < 1:
        raise ValueError(f"{where} has an invalid format_version {version}; expected 1 to {FORMAT_VERSION}")
    vv = meta.get("vaeaug_version", "?")
    if vv != "?" and not _VERSION_TEXT.fullmatch(vv):
        raise ValueError(f"{where} has an invalid vaeaug_version {vv[:_MAX_VERSION_TEXT]!r}; expected a version "
                         "such as '1.2.0'")


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Validated metadata of a model file, JSON fields decoded (no model is built).

    The whole file is checked (its checksum covers the weights), but the weights are not kept.

    Args:
        path: the model file.

    Returns:
        A dict with ``format_version``, ``vaeaug_version``, ``config``, ``value_range``,
        ``class_names``, ``history``, ``augment``, ``tuning`` and ``file_size``.
    """
    _, _, info, _ = _parse(Path(path), keep_data=False)
    return info


def _decode_meta(path: Path, meta: dict[str, str], size: int) -> dict[str, Any]:
    """Decode and validate the JSON metadata entries (config, value range, class names...)."""
    where = repr(str(path))
    out: dict[str, Any] = {"format_version": int(meta["format_version"]),
                           "vaeaug_version": meta.get("vaeaug_version", "?"),
                           "file_size": size}
    for key in ("config", "value_range", "class_names", "history"):
        if key not in meta:
            raise ValueError(f"{where} lacks the {key!r} metadata entry")
        out[key] = _loads(meta[key], path, f"model file's {key!r} entry", allow_nan=True)  # validated below
    if not isinstance(out["history"], list) or not all(isinstance(h, dict) for h in out["history"]):
        raise ValueError(f"{where} has an invalid history entry; expected a list of objects (one per epoch)")
    for key in ("augment", "tuning"):  # optional: files written before tuning existed lack them
        out[key] = _loads(meta[key], path, f"model file's {key!r} entry", allow_nan=True) if key in meta else None
        if out[key] is not None and not isinstance(out[key], dict):
            raise ValueError(f"{where} has an invalid {key!r} entry")
    try:
        out["config"] = VAEConfig.from_dict(out["config"])
        out["value_range"] = ValueRange.from_dict(out["value_range"])
        out["class_names"] = check_class_names(out["class_names"], out["config"].num_classes)
        if out["augment"] is not None:  # strength at most MAX_STRENGTH, as for every setting
            AugmentSetting.from_dict(out["augment"]).check_for(conditional=out["config"].num_classes is not None)
    except (ValueError, TypeError) as e:
        msg = str(e)
        if msg.startswith("class_names"):
            raise ValueError(f"{where} has invalid class_names: {msg}") from None
        raise ValueError(f"{where} has an invalid model description: {msg}") from None
    return out


def read_model(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the validated description of a model file (:func:`vaeaug.load` builds the VAE).

    Args:
        path: the model file.

    Returns:
        ``(tensors, info)``: the weights by name, and ``config``, ``value_range``, ``class_names``,
        ``history``, ``augment``, ``tuning``.
    """
    p = Path(path)
    blob, _, info, _ = _parse(p, keep_data=True)
    try:
        tensors = st_load(blob)
    except Exception as e:  # safetensors raises its own error type for malformed files
        raise ValueError(f"{str(p)!r} has malformed tensor data: {e}") from None
    return tensors, info
