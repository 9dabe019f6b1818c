"""The files of an ONNX export and their vaeaug metadata, read and verified without onnx, onnxruntime or torch.

An export (:func:`vaeaug.export_onnx`) is three ONNX files beside each other, each with the
model's description in its ``metadata_props``: ``m.onnx`` (the augmenter), ``m.encoder.onnx`` and
``m.sampler.onnx`` (see :mod:`vaeaug.backends.onnx_backend`). The protobuf is parsed here by hand.

**Integrity (format version 2).** Every file carries one metadata entry ``vaeaug.sha256``: the
SHA-256 of the whole file without that entry's own bytes (it is the file's last field, written as
the canonical ``key``/``value`` pair). So every other byte is covered - the graph and its weights,
all metadata (config, value range, class names, model hash...), opset imports, IR version,
producer, functions, training info, unknown fields. :func:`read_onnx_file` checks it before
anything in the file is used, and onnxruntime is then given exactly the verified bytes (never the
path, which could change in between). It is a checksum against damage and careless edits, not a
signature: whoever can write the file can also recompute it.

After the checksum, a file must also be self-contained (no tensor stored as external data: those
bytes would not be covered), its metadata must validate to ranges in which the model works (the
bounds of :mod:`vaeaug.model.config`, see :func:`check_metadata`), and its graph's inputs and outputs must
be the ones its config describes. Files of format
version 1 (no whole-file checksum) are refused with a request to export again.

Reads go through :func:`vaeaug.files.read_bounded`: regular files of at most
:data:`MAX_ONNX_BYTES` (2 GiB, protobuf's limit on one message) only; a FIFO, a device or a
directory is refused at once. Any malformed protobuf (truncated, lengths past the end, nesting
deeper than :data:`MAX_NESTING`) is a :class:`ValueError`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vaeaug.core.settings import AugmentSetting
from vaeaug.core.values import ValueRange
from vaeaug.files import GiB, parse_json, read_bounded
from vaeaug.model.config import VAEConfig, check_class_names

__all__ = ["onnx_paths", "read_onnx_metadata", "read_onnx_file", "check_onnx_bytes", "check_metadata", "seal",
           "file_sha256", "graph_sha256", "GRAPHS", "ONNX_FORMAT_VERSION", "CHECKSUM_KEY", "MAX_ONNX_BYTES",
           "MAX_NESTING", "DAMAGED"]

GRAPHS = ("augmenter", "encoder", "sampler")
ONNX_FORMAT_VERSION = 2  # 2: a whole-file SHA-256 in "vaeaug.sha256" (1: only the graph field was hashed)
CHECKSUM_KEY = "vaeaug.sha256"
MAX_ONNX_BYTES = 2 * GiB  # protobuf cannot serialize a larger message; a self-contained ONNX file is one
MAX_NESTING = 64  # messages in messages: a vaeaug graph needs 4 levels (graph, node, attribute, tensor)
_PREFIX = "vaeaug."
_KEYS = ("format_version", "version", "model_sha256", "config", "value_range", "class_names", "augment", "files",
         "graph", "sha256")
_REEXPORT = "export the model again: vaeaug export model.vae --out model.onnx (or vaeaug.export_onnx)"
_ELEM = {1: "float32", 7: "int64"}


def onnx_paths(path: str | os.PathLike[str]) -> dict[str, Path]:
    """The three files of an export named ``path`` (the augmenter; the others beside it).

    Example:
        >>> {k: v.name for k, v in onnx_paths("out/m.onnx").items()}
        {'augmenter': 'm.onnx', 'encoder': 'm.encoder.onnx', 'sampler': 'm.sampler.onnx'}
    """
    p = Path(path)
    if p.suffix != ".onnx":
        raise ValueError(f"an ONNX export's path must end in .onnx; got {str(path)!r}")
    stem = p.name[: -len(".onnx")]
    return {"augmenter": p, "encoder": p.with_name(f"{stem}.encoder.onnx"),
            "sampler": p.with_name(f"{stem}.sampler.onnx")}


# --- protobuf, by hand: offsets into one buffer, never a copy, never recursion ---------------------


def _varint(buf: bytes, i: int, end: int) -> tuple[int, int]:
    """The varint at ``buf[i]`` and the offset after it (at most 10 bytes, within ``end``)."""
    result = shift = 0
    while True:
        if i >= end:
            raise ValueError("a varint runs past the end of its message (truncated)")
        if shift > 63:
            raise ValueError("a varint is longer than 10 bytes")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _enc_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _scan(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """The fields of the message in ``buf[start:end]``: ``(number, wire type, a, b, tag offset)``.

    Wire type 0: ``a`` is the value; types 1, 2 and 5: ``buf[a:b]`` is the payload. Lengths are
    checked against the message's end before anything is sliced, so no length can allocate memory.
    """
    i = start
    while i < end:
        at = i
        tag, i = _varint(buf, i, end)
        num, wire = tag >> 3, tag & 7
        if num == 0 or num >= 1 << 29:
            raise ValueError(f"invalid protobuf field number {num} at byte {at}")
        if wire == 0:
            v, i = _varint(buf, i, end)
            yield num, 0, v, i, at
            continue
        if wire == 2:
            n, i = _varint(buf, i, end)
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} at byte {at}")
        if n > end - i:
            raise ValueError(f"field {num} at byte {at} claims {n} bytes but its message has {end - i} left "
                             "(truncated)")
        yield num, wire, i, i + n, at
        i += n


def _text(buf: bytes, a: int, b: int, what: str) -> str:
    try:
        return bytes(buf[a:b]).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not UTF-8 text") from None


class _Top:
    """The top-level fields of a ModelProto that vaeaug reads."""

    def __init__(self, blob: bytes) -> None:
        self.props: dict[str, str] = {}
        self.graph: tuple[int, int] | None = None
        self.checksum: tuple[int, int, str] | None = None  # (start, end, value) of the checksum entry
        counts: dict[int, int] = {}
        for num, wire, a, b, at in _scan(blob, 0, len(blob)):
            counts[num] = counts.get(num, 0) + 1
            if (num == 1 and wire != 0) or (num in (7, 14) and wire != 2):
                raise ValueError(f"field {num} at byte {at} has the wrong wire type {wire}")
            if num == 7:
                self.graph = (a, b)
            elif num == 14:
                key, value = self._entry(blob, a, b, at)
                if key in self.props:
                    raise ValueError(f"metadata key {key!r} appears twice")
                self.props[key] = value
                if key == CHECKSUM_KEY:
                    self.checksum = (at, b, value)
        if counts.get(1) != 1:
            raise ValueError("no ir_version field" if 1 not in counts else "ir_version appears twice")
        if counts.get(7) != 1:
            raise ValueError("no graph" if 7 not in counts else "more than one graph")

    @staticmethod
    def _entry(blob: bytes, a: int, b: int, at: int) -> tuple[str, str]:
        got: dict[int, str] = {}
        for num, wire, x, y, _ in _scan(blob, a, b):
            if num not in (1, 2) or wire != 2 or num in got:
                raise ValueError(f"the metadata entry at byte {at} is malformed (field {num}, wire type {wire})")
            got[num] = _text(blob, x, y, f"the metadata entry at byte {at}")
        return got.get(1, ""), got.get(2, "")


def _entry_bytes(key: str, value: str) -> bytes:
    """The canonical encoding of one ``metadata_props`` entry (field 14: key 1, value 2)."""
    k, v = key.encode(), value.encode()
    body = b"\x0a" + _enc_varint(len(k)) + k + b"\x12" + _enc_varint(len(v)) + v
    return b"\x72" + _enc_varint(len(body)) + body


def _sha256_without(blob: bytes, skip: tuple[int, int] | None) -> str:
    h = hashlib.sha256()
    view = memoryview(blob)
    if skip is None:
        h.update(view)
    else:
        h.update(view[: skip[0]])
        h.update(view[skip[1]:])
    return h.hexdigest()


def seal(blob: bytes) -> bytes:
    """``blob`` (a serialized ModelProto) with its ``vaeaug.sha256`` entry (re)computed, as the export writes it.

    Any checksum entry is removed, and the SHA-256 of what remains is appended as the last field.
    This is what makes a file pass the integrity check: a checksum against damage, not a signature.
    """
    top = _Top(blob)
    if top.checksum is not None:
        blob = blob[: top.checksum[0]] + blob[top.checksum[1]:]
    return blob + _entry_bytes(CHECKSUM_KEY, _sha256_without(blob, None))


def file_sha256(blob: bytes) -> str:
    """The checksum ``seal`` records: the SHA-256 of ``blob`` without its checksum entry."""
    top = _Top(blob)
    return _sha256_without(blob, None if top.checksum is None else top.checksum[:2])


def graph_sha256(blob: bytes) -> str:
    """SHA-256 of the ``graph`` field (7) of a serialized ModelProto (what format version 1 recorded)."""
    graphs = [(a, b) for num, wire, a, b, _ in _scan(blob, 0, len(blob)) if num == 7 and wire == 2]
    if len(graphs) != 1:
        raise ValueError(f"expected one graph, found {len(graphs)}")
    return hashlib.sha256(memoryview(blob)[graphs[0][0]:graphs[0][1]]).hexdigest()


# --- self-contained: no tensor anywhere stored outside the file ----------------------------------

_MODEL, _GRAPH, _NODE, _ATTR, _TENSOR, _SPARSE, _FUNCTION, _TRAINING = range(8)
_CHILDREN: dict[int, dict[int, int]] = {  # message kind -> {field number: kind of its messages}
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},
    _TRAINING: {1: _GRAPH, 2: _GRAPH},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _NODE: {5: _ATTR},
    _ATTR: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _FUNCTION: {7: _NODE, 11: _ATTR},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
}


def _external_tensor(blob: bytes) -> str | None:
    """The name of the first tensor stored as external data (TensorProto fields 13/14), or ``None``.

    Walks every place a tensor can be: initializers, sparse initializers, node attributes (also in
    subgraphs, functions and training info), iteratively and at most :data:`MAX_NESTING` deep.
    """
    stack = [(_MODEL, 0, len(blob), 0)]
    while stack:
        kind, start, end, depth = stack.pop()
        if kind == _TENSOR:
            name, external = "", False
            for num, wire, a, b, _ in _scan(blob, start, end):
                if num == 8 and wire == 2:
                    name = _text(blob, a, b, "a tensor name")
                elif num == 13 or (num == 14 and not (wire == 0 and a == 0)):
                    external = True
            if external:
                return name or "(unnamed)"
            continue
        children = _CHILDREN[kind]
        for num, wire, a, b, at in _scan(blob, start, end):
            child = children.get(num)
            if child is None:
                continue
            if wire != 2:
                raise ValueError(f"field {num} at byte {at} has the wrong wire type {wire}")
            if depth >= MAX_NESTING:
                raise ValueError(f"messages nested more than {MAX_NESTING} deep")
            stack.append((child, a, b, depth + 1))
    return None


# --- the graph's inputs and outputs --------------------------------------------------------------


_Value = tuple[str, int | None, list[int | str] | None]  # (name, element type, dims) of a graph input/output


def _value_info(blob: bytes, a: int, b: int) -> _Value:
    """``(name, element type, dims)`` of a ValueInfoProto; a symbolic dim is its name ("" if unnamed)."""
    name: str = ""
    elem: int | None = None
    dims: list[int | str] | None = None
    for num, wire, x, y, _ in _scan(blob, a, b):
        if num == 1 and wire == 2:
            name = _text(blob, x, y, "a graph input or output name")
        elif num == 2 and wire == 2:  # TypeProto
            for n2, w2, x2, y2, _ in _scan(blob, x, y):
                if n2 != 1 or w2 != 2:  # tensor_type only
                    continue
                for n3, w3, x3, y3, _ in _scan(blob, x2, y2):
                    if n3 == 1 and w3 == 0:
                        elem = x3
                    elif n3 == 2 and w3 == 2:  # TensorShapeProto
                        dims = []
                        for n4, w4, x4, y4, _ in _scan(blob, x3, y3):
                            if n4 != 1 or w4 != 2:
                                continue
                            dim: int | str = ""
                            for n5, w5, x5, y5, _ in _scan(blob, x4, y4):
                                if n5 == 1 and w5 == 0:
                                    dim = x5
                                elif n5 == 2 and w5 == 2:
                                    dim = _text(blob, x5, y5, "a dimension name")
                            dims.append(dim)
    return name, elem, dims


def _io(blob: bytes, graph: tuple[int, int]) -> tuple[list[_Value], list[_Value]]:
    inputs: list[_Value] = []
    outputs: list[_Value] = []
    for num, wire, a, b, _ in _scan(blob, *graph):
        if wire == 2 and num in (11, 12):
            (inputs if num == 11 else outputs).append(_value_info(blob, a, b))
    return inputs, outputs


def _expected_io(graph: str, cfg: VAEConfig) -> tuple[list[Any], list[Any]]:
    """The ``(name, element type, dims)`` a graph of this config has; ``None`` is the dynamic batch."""
    x = ("x", 1, [None, *cfg.input_shape])
    z = [None, cfg.latent_dim]
    y = [("y", 7, [None])] if cfg.num_classes else []
    if graph == "augmenter":
        return [x, ("eps", 1, z), ("strength", 1, [None]), ("sigma_weight", 1, [None]), *y], \
            [("variants", 1, [None, *cfg.input_shape])]
    if graph == "encoder":
        return [x, *y], [("mu", 1, z), ("logvar", 1, z)]
    return [("z", 1, z), *y], [("x", 1, [None, *cfg.input_shape])]


def _show(v: Any) -> str:
    name, elem, dims = v
    shown = "unknown" if dims is None else "[" + ", ".join(
        "batch" if d is None else (repr(d) if isinstance(d, str) else str(d)) for d in dims) + "]"
    return f"{name!r} ({_ELEM.get(elem, f'element type {elem}')}, shape {shown})"


def _check_io(blob: bytes, graph_span: tuple[int, int], graph: str, cfg: VAEConfig, where: str) -> None:
    """Refuse a graph whose inputs or outputs are not those its metadata's config describes."""
    got = _io(blob, graph_span)
    want = _expected_io(graph, cfg)
    for side, g, w in (("inputs", got[0], want[0]), ("outputs", got[1], want[1])):
        fits = len(g) == len(w) and all(
            gn == wn and ge == we and gd is not None and len(gd) == len(wd)
            and all((isinstance(a, str) and a != "") if b is None else (a == b) for a, b in zip(gd, wd, strict=True))
            for (gn, ge, gd), (wn, we, wd) in zip(g, w, strict=True))
        if not fits:
            raise ValueError(
                f"{where}: the {graph} graph's {side} are {', '.join(map(_show, g)) or 'none'}, but its metadata "
                f"(config input_shape {list(cfg.input_shape)}, latent_dim {cfg.latent_dim}, num_classes "
                f"{cfg.num_classes}) describes {', '.join(map(_show, w))} (batch: a named dynamic dimension); "
                f"the metadata does not describe this graph - {_REEXPORT}"
            )


# --- metadata: validated to what the model can work with -----------------------------------------


def _format_version(text: str, where: str) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= len(text) <= 6 and str(int(text)) == text):
        shown = repr(text) if len(text) <= 40 else f"{text[:40]!r}... ({len(text)} characters)"
        raise ValueError(f"{where}: vaeaug.format_version must be a decimal integer in ASCII digits (1 to 6, no sign, "
                         f"space or leading zero); got {shown} - the file is damaged; {_REEXPORT}")
    version = int(text)
    if version > ONNX_FORMAT_VERSION:
        raise ValueError(f"{where}: format version {version} is newer than this vaeaug understands "
                         f"({ONNX_FORMAT_VERSION}); upgrade vaeaug (pip install -U vaeaug)")
    if version < ONNX_FORMAT_VERSION:
        raise ValueError(f"{where} has ONNX format version {version}, written by an older vaeaug whose files "
                         f"are not integrity-checked byte for byte; this vaeaug reads format {ONNX_FORMAT_VERSION} "
                         f"only - {_REEXPORT}")
    return version


def _json(props: dict[str, str], key: str, where: str) -> Any:
    """A JSON metadata value: strict and bounded (:func:`vaeaug.files.parse_json`)."""
    try:
        return parse_json(props[_PREFIX + key], f"vaeaug.{key}", "JSON metadata value")
    except ValueError as e:
        raise ValueError(f"{where}: {e} - {_REEXPORT}") from None


DAMAGED = f" - the metadata is damaged or was edited; {_REEXPORT}"  # the end of every out-of-range message


def _bad(where: str, what: str, expected: str, got: Any) -> ValueError:
    shown = repr(got)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return ValueError(f"{where}: {what} must be {expected}; got {shown}{DAMAGED}")


def _value_range(d: Any, where: str) -> ValueRange:
    try:  # finite, |low|, |high| <= 1e30, low < high, not too narrow for float32: vaeaug.model.config's bounds
        return ValueRange.from_dict(d)
    except (ValueError, TypeError, OverflowError) as e:
        raise _bad(where, "value_range", f"a range the model can work in ({e})", d) from None


def _config(d: Any, where: str) -> VAEConfig:
    try:  # sizes, parameter and activation counts within vaeaug.model.config's LIMITS
        return VAEConfig.from_dict(d)
    except (ValueError, TypeError, OverflowError) as e:
        raise _bad(where, "config", f"a config within vaeaug's limits ({e})", d) from None


def _class_names(names: Any, cfg: VAEConfig, where: str) -> list[str] | None:
    if names is not None and not isinstance(names, list):
        raise _bad(where, "class_names", "null or a list of strings", names)
    try:  # strings of at most 1024 characters, one per class of a conditional model
        return check_class_names(names, cfg.num_classes)
    except (ValueError, TypeError) as e:
        raise _bad(where, "class_names", f"null or valid names ({e})", names) from None


def check_metadata(props: dict[str, str], where: str) -> dict[str, Any]:
    """Validate the ``vaeaug.*`` metadata of one export file (already checksummed); the described model.

    Every field is checked to a range in which the model works: the config and the value range to
    the bounds of :mod:`vaeaug.model.config` (its ``LIMITS``: e.g. ``|low|, |high| <= 1e30`` and a range
    not too narrow for float32), class names to one string per class, the stored augment setting
    to one the model can use (a strength of at most :data:`vaeaug.core.settings.MAX_STRENGTH`, as for
    every setting), and the format version, hashes and names to their exact textual forms.
    """
    ours = {k[len(_PREFIX):] for k in props if k.startswith(_PREFIX)}
    unknown, missing = sorted(ours - set(_KEYS)), [k for k in _KEYS if k not in ours]
    if unknown:
        raise ValueError(f"{where}: unknown vaeaug metadata {['vaeaug.' + k for k in unknown]}; expected only "
                         f"{['vaeaug.' + k for k in _KEYS]} - {_REEXPORT}")
    if missing:
        raise ValueError(f"{where}: vaeaug metadata lacks {['vaeaug.' + k for k in missing]} - {_REEXPORT}")
    version = _format_version(props[_PREFIX + "format_version"], where)
    graph = props[_PREFIX + "graph"]
    if graph not in GRAPHS:
        raise _bad(where, "vaeaug.graph", f"one of {GRAPHS}", graph)
    vaeaug_version = props[_PREFIX + "version"]
    if not (vaeaug_version.isascii() and vaeaug_version.isprintable() and 0 < len(vaeaug_version) <= 64):
        raise _bad(where, "vaeaug.version", "a version of at most 64 printable ASCII characters", vaeaug_version)
    sha = props[_PREFIX + "model_sha256"]
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise _bad(where, "vaeaug.model_sha256", "64 lowercase hex digits", sha)
    cfg = _config(_json(props, "config", where), where)
    value_range = _value_range(_json(props, "value_range", where), where)
    class_names = _class_names(_json(props, "class_names", where), cfg, where)
    augment = _json(props, "augment", where)
    if augment is not None:
        try:
            AugmentSetting.from_dict(augment).check_for(conditional=cfg.num_classes is not None)  # strength <= 100
        except (ValueError, TypeError, OverflowError) as e:
            raise _bad(where, "vaeaug.augment", f"null or a setting this model can use ({e})", augment) from None
    files = _json(props, "files", where)
    if not isinstance(files, dict) or set(files) != set(GRAPHS) or not all(
            isinstance(v, str) and v.endswith(".onnx") and "/" not in v and "\\" not in v for v in files.values()):
        raise _bad(where, "vaeaug.files", f"an object naming the {len(GRAPHS)} .onnx files of {GRAPHS}", files)
    return {"graph": graph, "format_version": version, "vaeaug_version": vaeaug_version, "model_sha256": sha,
            "config": cfg, "value_range": value_range, "class_names": class_names, "augment": augment}


# --- reading ---------------------------------------------------------------------------------------


def check_onnx_bytes(blob: bytes, where: str) -> dict[str, Any]:
    """Verify a whole export file held in memory and return its description (see :func:`read_onnx_metadata`).

    In order: the protobuf's top level parses; it has vaeaug metadata of this format version; the
    checksum matches every other byte; no tensor is stored outside the file; the metadata validates;
    the graph's inputs and outputs are those of the config.
    """
    try:
        top = _Top(blob)
    except ValueError as e:
        raise ValueError(f"{where} is not a valid ONNX file ({e}); it may be truncated or corrupt - "
                         f"{_REEXPORT}") from None
    props = top.props
    if _PREFIX + "format_version" not in props:
        raise ValueError(
            f"{where} is an ONNX model but not one exported by vaeaug (no vaeaug metadata); export a vaeaug "
            "model with vaeaug.export_onnx or 'vaeaug export model.vae --out model.onnx'"
        )
    _format_version(props[_PREFIX + "format_version"], where)
    if top.checksum is None:
        raise ValueError(f"{where}: no {CHECKSUM_KEY} metadata entry (the file's checksum); expected one in every "
                         f"file of format {ONNX_FORMAT_VERSION} - the file is damaged or was edited; {_REEXPORT}")
    start, end, recorded = top.checksum
    if blob[start:end] != _entry_bytes(CHECKSUM_KEY, recorded) or end != len(blob):
        raise ValueError(f"{where}: the {CHECKSUM_KEY} entry is not the file's last field in its canonical form, as "
                         f"vaeaug writes it - the file was rewritten by another tool or damaged; {_REEXPORT}")
    actual = _sha256_without(blob, (start, end))
    if actual != recorded:
        raise ValueError(f"{where}: its SHA-256 differs from the one recorded at export ({actual[:16]}... against "
                         f"{recorded[:16]}...): the file is corrupt or was edited - {_REEXPORT}")
    try:
        external = _external_tensor(blob)
        if external is not None:
            raise ValueError(
                f"{where}: tensor {external!r} is stored as ONNX external data (in a file beside it), whose bytes "
                "no checksum covers; vaeaug exports are self-contained (every weight inside the .onnx file) and "
                f"vaeaug refuses external data - {_REEXPORT}")
        meta = check_metadata(props, where)
        _check_io(blob, top.graph or (0, 0), meta["graph"], meta["config"], where)
    except RecursionError:  # defensive: nothing here recurses on the file's structure
        raise ValueError(f"{where}: nested too deeply to be a vaeaug export - {_REEXPORT}") from None
    except ValueError as e:
        if str(e).startswith(where):
            raise
        raise ValueError(f"{where} is not a valid ONNX file ({e}) - {_REEXPORT}") from None
    meta["sha256"] = actual
    return meta


def read_onnx_file(path: str | os.PathLike[str]) -> tuple[bytes, dict[str, Any]]:
    """The verified bytes of one export file and its description (see :func:`read_onnx_metadata`).

    The file is read once (a regular file of at most :data:`MAX_ONNX_BYTES`); hand these bytes,
    not the path, to onnxruntime, so that what runs is what was verified.
    """
    p = Path(path)
    blob = read_bounded(p, "ONNX file", max_bytes=MAX_ONNX_BYTES)
    return blob, check_onnx_bytes(blob, str(p))


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The vaeaug description stored in an exported ONNX file, verified (no torch, no onnx needed).

    Args:
        path: one of the files written by :func:`vaeaug.export_onnx`.

    Returns:
        ``{"graph", "format_version", "vaeaug_version", "model_sha256", "config" (VAEConfig),
        "value_range" (ValueRange), "class_names", "augment", "sha256"}`` (``sha256``: the file's
        checksum).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a regular file or larger than 2 GiB, not an ONNX file, one vaeaug did not
            export, another format version, a checksum that does not match, external data,
            metadata that does not validate, or a graph the metadata does not describe.
    """
    return read_onnx_file(path)[1]
