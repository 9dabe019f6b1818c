"""Model files: one safetensors file, weights as tensors, everything else as JSON metadata.

Loading parses the header itself before safetensors touches the file, never unpickles, and
validates everything: format name and version, a SHA-256 over the header and the tensor
bytes, config, value range, tensor names, shapes, dtypes (checked on a meta-device skeleton
before anything is allocated), and finiteness of the weights. Any problem is a ``ValueError``
that names it. The checksum detects corruption and careless edits; it is not a signature (whoever
edits the file can recompute it), which is why every field is validated as well.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load as st_load

from ._version import __version__
from .config import VAEConfig, ValueRange
from .settings import AugmentSetting

if TYPE_CHECKING:
    from .model import VAE

__all__ = ["save", "read_model", "read_metadata", "model_bytes", "write_atomic", "FORMAT", "FORMAT_VERSION"]

FORMAT = "vaeaug-model"
FORMAT_VERSION = 1


def save(model: VAE, path: str | os.PathLike[str]) -> Path:
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


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()  # read once: os.umask is process-wide, changing it per write would race


def write_atomic(path: str | os.PathLike[str], blob: bytes, *, tmp_tag: str | None = None,
                 exclusive: bool = False) -> Path:
    """Write ``blob`` to ``path`` through a temporary file renamed into place (fsynced, umask honoured).

    A crash leaves either the old file or the new one, never half of one.

    Args:
        path: destination.
        blob: the bytes.
        tmp_tag: name the temporary file ``.<name>.<tag>.tmp`` instead of a random name, so that
            the writer that owns the tag can find and remove it after a crash.
        exclusive: publish with a hard link, which fails with ``FileExistsError`` if ``path``
            exists (two writers racing: exactly one wins).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tmp_tag is None:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    else:
        tmp = str(path.with_name(f".{path.name}.{tmp_tag}.tmp"))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # like open(): mkstemp's 0o600 would make the file private
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)
            Path(tmp).unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def model_bytes(model: VAE) -> bytes:
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
    described = {"metadata": {k: v for k, v in meta.items() if k != "sha256"}, "tensors": entries}
    h = hashlib.sha256(json.dumps(described, sort_keys=True, separators=(",", ":")).encode())
    h.update(data)
    return h.hexdigest()


_MAX_HEADER = 64 * 1024 * 1024


def _diagnose(blob: bytes, n: int, where: str) -> str:
    """Say what a file that is not a safetensors file is."""
    if blob[:4] == b"PK\x03\x04":
        return (f"{where} is a zip archive, such as a torch.save() checkpoint, not a vaeaug model "
                "file; vaeaug never unpickles - load it in trusted code and save it with model.save()")
    if blob[0] == 0x80 and 2 <= blob[1] <= 5:
        return (f"{where} is a Python pickle, not a vaeaug model file; vaeaug never unpickles "
                "files - save models with model.save()")
    if n <= _MAX_HEADER and blob[8:9] == b"{":
        return f"{where} is truncated: its header needs {n} bytes, the file has {len(blob) - 8}"
    return f"{where} is not a vaeaug model file (no safetensors header)"


def _parse(path: Path) -> tuple[bytes, dict[str, Any], dict[str, str]]:
    """Read and validate the file's framing and header; return (blob, header, metadata)."""
    if not path.exists():
        raise FileNotFoundError(f"no such model file: {str(path)!r}")
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a directory, not a model file")
    blob = path.read_bytes()
    where = repr(str(path))
    if len(blob) < 8:
        raise ValueError(f"{where} is not a vaeaug model file: only {len(blob)} bytes (empty or truncated)")
    (n,) = struct.unpack("<Q", blob[:8])
    if not (n <= _MAX_HEADER and 8 + n <= len(blob) and blob[8:9] == b"{"):
        raise ValueError(_diagnose(blob, n, where))
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{where} has a corrupt or tampered header (not valid JSON: {e})") from None
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
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise ValueError(f"{where} has an invalid format_version {meta.get('format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{where} has format version {version}, newer than this vaeaug ({__version__}) reads "
            f"(up to {FORMAT_VERSION}); upgrade vaeaug"
        )
    if version < 1:
        raise ValueError(f"{where} has an invalid format_version {version}")
    data_len = len(blob) - 8 - n
    end = 0
    for name, info in header.items():
        offs = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)):
            raise ValueError(f"{where} has a tampered header: bad entry for tensor {name!r}")
        end = max(end, offs[1])
    if end > data_len:
        raise ValueError(
            f"{where} is truncated: the header declares {end} bytes of tensor data, the file holds {data_len}"
        )
    if end < data_len:
        raise ValueError(f"{where} has {data_len - end} unexpected trailing bytes after the tensor data")
    if meta.get("sha256") != _content_sha256(meta, header, blob[8 + n:]):
        raise ValueError(
            f"{where} is corrupt or was edited: its content does not match the SHA-256 checksum "
            "recorded in its header"
        )
    return blob, header, meta


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Validated metadata of a model file, JSON fields decoded (no model is built).

    Args:
        path: the model file.

    Returns:
        A dict with ``format_version``, ``vaeaug_version``, ``config``, ``value_range``,
        ``class_names``, ``history``, ``augment``, ``tuning`` and ``file_size``.
    """
    p = Path(path)
    _, _, meta = _parse(p)
    return _decode_meta(p, meta)


def _decode_meta(path: Path, meta: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"format_version": int(meta["format_version"]),
                           "vaeaug_version": meta.get("vaeaug_version", "?"),
                           "file_size": path.stat().st_size}
    for key in ("config", "value_range", "class_names", "history"):
        if key not in meta:
            raise ValueError(f"{str(path)!r} lacks the {key!r} metadata entry")
        try:
            out[key] = json.loads(meta[key])
        except json.JSONDecodeError as e:
            raise ValueError(f"{str(path)!r} has a tampered {key!r} entry (not JSON: {e})") from None
    names = out["class_names"]
    if names is not None and not (isinstance(names, list) and all(isinstance(s, str) for s in names)):
        raise ValueError(f"{str(path)!r} has invalid class_names {names!r}")
    if not isinstance(out["history"], list):
        raise ValueError(f"{str(path)!r} has an invalid history entry")
    for key in ("augment", "tuning"):  # optional: files written before tuning existed lack them
        try:
            out[key] = json.loads(meta[key]) if key in meta else None
        except json.JSONDecodeError as e:
            raise ValueError(f"{str(path)!r} has a tampered {key!r} entry (not JSON: {e})") from None
        if out[key] is not None and not isinstance(out[key], dict):
            raise ValueError(f"{str(path)!r} has an invalid {key!r} entry")
    try:
        out["config"] = VAEConfig.from_dict(out["config"])
        out["value_range"] = ValueRange.from_dict(out["value_range"])
        if out["augment"] is not None:
            AugmentSetting.from_dict(out["augment"]).check_for(conditional=out["config"].num_classes is not None)
    except ValueError as e:
        raise ValueError(f"{str(path)!r} has an invalid model description: {e}") from None
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
    blob, header, meta = _parse(p)
    info = _decode_meta(p, meta)
    try:
        tensors = st_load(blob)
    except Exception as e:  # safetensors raises its own error type for malformed files
        raise ValueError(f"{str(p)!r} has malformed tensor data: {e}") from None
    return tensors, info
