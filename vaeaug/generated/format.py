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
(written last, by whichever process completes the set) adds the counts, every file's SHA-256 and
``manifest_sha256``, the SHA-256 of its own canonical content (format version 2).

Trust: nothing read from a set is used before it is checked. Opening a set (``verify=False``)
checks, without reading the images:

* ``manifest.json`` (at most 64 MiB, a regular file): its schema and every number in it
  (:func:`validate_manifest`: the counts and the shard layout follow from the arguments and the
  data's size), its ``manifest_sha256``, and that ``run.json`` holds exactly its identity part;
* each label file (small): its bytes against the manifest's SHA-256, then its content against the
  layout (source, variant and synthetic flag of every sample; labels constant per source and in
  range; the per-class counts);
* each image file: its ``.npy`` header (dtype, shape, C order, parsed without ``allow_pickle`` and
  compared with what the manifest implies) and its size (header plus data exactly).

``verify=True`` (and :func:`verify_generated`, ``vaeaug verify``) also hashes every image. Every
file is opened through :mod:`vaeaug.files`: a FIFO, a device or a symlink to one is refused, never
waited on or read without bound. A SHA-256 is a checksum, not a signature: it finds damage and
edits, not a forger who can rewrite every file consistently.

``num_shards`` / ``shard_index`` split the shards round-robin between independent jobs (Slurm
arrays, Kubernetes indexed jobs): job ``i`` writes shards ``m`` with ``m % num_shards == i``.

The image shards are memory-mapped from the descriptor that was checked: opening a set reads
only its manifest, its headers and the small per-shard label files, whatever its size; an item is
copied out of the map when it is read. Items are ``(x, y)`` with ``x`` a ``(C, H, W)`` tensor in
the stored dtype and value range (the input's), ``y`` an int (-1 for unlabelled data), plus the
synthetic flag with ``return_is_synthetic=True``.
"""

from __future__ import annotations

import ast
import bisect
import hashlib
import json
import math
import os
import re
import struct
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import numpy as np
import torch
from numpy.lib.format import dtype_to_descr

from vaeaug.core.values import ValueRange
from vaeaug.files import MiB, open_regular, read_bounded

__all__ = ["GeneratedDataset", "read_manifest", "validate_manifest", "manifest_sha256", "verify_generated",
           "load_json", "parse_json", "class_key", "META_DTYPE", "FORMAT", "FORMAT_VERSION", "MAX_JSON_BYTES"]

FORMAT = "vaeaug-generated"
FORMAT_VERSION = 2  # 2: manifest_sha256, every field validated; 1 (no checksum) is refused
META_DTYPE = np.dtype([("y", "<i8"), ("source", "<i8"), ("variant", "<i4"), ("synthetic", "?")])
MAX_JSON_BYTES = 64 * MiB  # manifest.json, run.json, a shard's record
_FORMATS = ("shards", "imagefolder")
_IDENTITY = ("format", "format_version", "vaeaug_version", "model", "data", "arguments")  # == run.json
_TOP_KEYS = frozenset((*_IDENTITY, "counts", "shards", "manifest_sha256"))
_DATA_KEYS = frozenset(("source", "count", "shape", "labelled", "value_range", "class_names", "sha256"))
_ARG_KEYS = frozenset(("variants_per_sample", "mode", "strength", "form", "seed", "include_real", "format",
                       "shard_size", "layout"))
_MAX_COUNT = 1 << 40  # samples, sources, shard size
_MAX_SIDE = 1 << 16  # channels, height, width
_MAX_FILE = 1 << 50  # bytes
_MAX_NPY_HEADER = 1 << 14  # np.save writes ~128 bytes
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PNG_NAME = re.compile(r"(?!\.)[^/\\\0]+/\d{8}\.png")


def _sha256_file(path: Path) -> str:
    """SHA-256 of a regular file (see :func:`vaeaug.files.open_regular`)."""
    h = hashlib.sha256()
    with open_regular(path, "file") as f:
        left = os.fstat(f.fileno()).st_size
        while left > 0 and (block := f.read(min(1 << 20, left))):
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def _shard_files(out: Path, m: int) -> dict[str, Path]:
    return {"x": out / f"shard-{m:05d}-x.npy", "meta": out / f"shard-{m:05d}-meta.npy"}


def _marker(out: Path, m: int) -> Path:
    """``shard-00000.json``: written last, with the SHA-256 of the shard's files as they were written."""
    return out / f"shard-{m:05d}.json"


def class_key(label: int, class_names: list[str] | None) -> str:
    """The key of a label in ``counts.per_class`` (its class name when known, ``"unlabelled"`` for -1).

    Example:
        >>> class_key(1, ["cat", "dog"]), class_key(7, None), class_key(-1, None)
        ('dog', '7', 'unlabelled')
    """
    if label < 0:
        return "unlabelled"
    return class_names[label] if class_names is not None and label < len(class_names) else str(label)


# ---------------------------------------------------------------------------------------------------
# JSON: bounded, strict, canonical


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number JSON allows")


def load_json(path: Path, what: str, *, max_bytes: int = MAX_JSON_BYTES, fix: str = "") -> Any:
    """Parse a JSON file of at most ``max_bytes`` (a regular file; strict JSON: no NaN, no deep nesting).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a regular file, too large, not UTF-8 or not JSON (the message names the file).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
        >>> _ = p.write_text('{"a": NaN}')
        >>> load_json(p, "test file")
        Traceback (most recent call last):
        ...
        ValueError: ... is not valid JSON (NaN is not a number JSON allows); expected a test file
    """
    return parse_json(read_bounded(path, what, max_bytes=max_bytes), path, what, fix=fix)


def parse_json(blob: bytes, path: Path, what: str, *, fix: str = "") -> Any:
    """Parse the bytes of ``path`` (see :func:`load_json`)."""
    hint = f"; {fix}" if fix else ""
    try:
        doc = json.loads(blob.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        doc = deep = None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an integer of thousands of digits
        raise ValueError(f"{str(path)!r} is not valid JSON ({str(e)[:200]}); expected a {what}{hint}") from None
    else:
        deep = _too_deep(doc)
    if deep is not False:  # vaeaug writes 6 levels; later code recurses over what it reads
        raise ValueError(f"{str(path)!r} is nested more than {_MAX_DEPTH} levels deep: it is not a {what} vaeaug "
                         f"wrote{hint}")
    return doc


_MAX_DEPTH = 32


def _too_deep(doc: Any) -> bool:
    """Whether a parsed JSON document nests deeper than ``_MAX_DEPTH`` (iterative: no recursion)."""
    stack = [(doc, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth >= _MAX_DEPTH:
                return True
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return False


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def manifest_sha256(manifest: dict[str, Any]) -> str:
    """The SHA-256 a manifest records about itself: over its canonical JSON, ``manifest_sha256`` left out.

    Example:
        >>> manifest_sha256({"b": 1, "a": [1.0]}) == manifest_sha256({"a": [1.0], "b": 1, "manifest_sha256": "x"})
        True
    """
    return hashlib.sha256(_canonical({k: v for k, v in manifest.items() if k != "manifest_sha256"})).hexdigest()


# ---------------------------------------------------------------------------------------------------
# The manifest's schema


def _describe(value: Any) -> str:
    """What came, short: a JSON value's type and, for scalars, its (cut) text."""
    if isinstance(value, dict):
        return f"an object with {len(value)} key(s)"
    if isinstance(value, list):
        return f"a list of {len(value)} item(s)"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int) and abs(value) >= 10**60:
        return f"an integer of {len(str(value))} digits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Schema:
    """Field checks that fail with 'FIELD must be EXPECTED; got CAME' (then where and how to fix)."""

    def __init__(self, where: str, fix: str) -> None:
        self.where, self.fix = where, fix

    def fail(self, field: str, expected: str, got: Any, *, raw: bool = False) -> NoReturn:
        came = got if raw else _describe(got)
        raise ValueError(f"{self.where} is malformed: {field} must be {expected}; got {came}; {self.fix}")

    def obj(self, value: Any, field: str, keys: frozenset[str] | None = None) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(field, "an object", value)
        if keys is not None and set(value) != keys:
            missing, extra = sorted(keys - set(value)), sorted(set(value) - keys)
            came = "; ".join([f"{missing} missing"] * bool(missing)
                             + [f"{[k[:40] for k in extra[:5]]} unexpected"] * bool(extra))
            self.fail(field, f"an object with the keys {sorted(keys)}", came, raw=True)
        return value

    def integer(self, value: Any, field: str, least: int, most: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
            self.fail(field, f"an integer in {least}..{most}", value)
        return value

    def equal(self, value: Any, field: str, want: Any) -> None:
        if type(value) is not type(want) or value != want:
            self.fail(field, f"{_describe(want)} (from the arguments and the data)", value)

    def flag(self, value: Any, field: str) -> bool:
        if not isinstance(value, bool):
            self.fail(field, "true or false", value)
        return value

    def text(self, value: Any, field: str, most: int = 1024) -> str:
        if not isinstance(value, str) or len(value) > most:
            self.fail(field, f"a string of at most {most} characters", value)
        return value

    def hex(self, value: Any, field: str) -> str:
        if not isinstance(value, str) or not _HEX64.fullmatch(value):
            self.fail(field, "a SHA-256 (64 lowercase hex digits)", value)
        return value

    def file(self, value: Any, field: str, name: str, *, also: tuple[str, ...] = ()) -> dict[str, Any]:
        entry = self.obj(value, field, frozenset(("name", "bytes", "sha256", *also)))
        if entry["name"] != name:
            self.fail(f"{field}.name", repr(name), entry["name"])
        self.integer(entry["bytes"], f"{field}.bytes", 0, _MAX_FILE)
        self.hex(entry["sha256"], f"{field}.sha256")
        return entry


def _older(where: str, version: int) -> ValueError:
    return ValueError(
        f"{where} was written by an older vaeaug (generated-set format {version}; this vaeaug reads format "
        f"{FORMAT_VERSION}, whose manifest carries its own SHA-256): its value range, class names and counts are "
        "not protected and cannot be trusted - regenerate the set with this vaeaug: the same vaeaug generate "
        "command into a new folder (or delete this one first)"
    )


def validate_manifest(manifest: Any, where: str = "manifest.json", fix: str = "regenerate the set") -> dict[str, Any]:
    """Check every field of a manifest: types, keys, ranges, file names, and the counts and shard layout
    that follow from the arguments and the data's size. The checksum and ``run.json`` are
    :func:`read_manifest`'s.

    Returns:
        ``manifest``, unchanged.

    Raises:
        ValueError: saying which field, what was expected, what came, and ``fix``.

    Example:
        >>> validate_manifest({"format": "vaeaug-generated", "format_version": 1})
        Traceback (most recent call last):
        ...
        ValueError: manifest.json was written by an older vaeaug (generated-set format 1; ...
    """
    s = _Schema(where, fix)
    top = s.obj(manifest, "the manifest")
    if top.get("format") != FORMAT:
        s.fail("format", repr(FORMAT) + " (a vaeaug generated-set manifest)", top.get("format"))
    version = s.integer(top.get("format_version"), "format_version", 1, 1 << 31)
    if version > FORMAT_VERSION:
        raise ValueError(f"{where} is generated-set format {version}, newer than this vaeaug reads ({FORMAT_VERSION}); "
                         "upgrade vaeaug")
    if version < FORMAT_VERSION:
        raise _older(where, version)
    s.obj(top, "the manifest", _TOP_KEYS)
    s.text(top["vaeaug_version"], "vaeaug_version", 64)
    s.hex(top["manifest_sha256"], "manifest_sha256")
    model = s.obj(top["model"], "model")
    s.hex(model.get("sha256"), "model.sha256")
    if model.get("backend") not in ("torch", "onnx"):
        s.fail("model.backend", "'torch' or 'onnx'", model.get("backend"))

    args = s.obj(top["arguments"], "arguments", _ARG_KEYS)
    k = s.integer(args["variants_per_sample"], "arguments.variants_per_sample", 0, 1 << 20)
    r = int(s.flag(args["include_real"], "arguments.include_real"))
    if k + r == 0:
        s.fail("arguments.variants_per_sample", "at least 1 without include_real", k)
    s.integer(args["seed"], "arguments.seed", 0, (1 << 64) - 1)
    shard_size = s.integer(args["shard_size"], "arguments.shard_size", 1, _MAX_COUNT)
    s.text(args["mode"], "arguments.mode", 64)
    s.text(args["form"], "arguments.form", 64)
    strength = args["strength"]
    if isinstance(strength, bool) or not (type(strength) is int or (type(strength) is float
                                                                    and math.isfinite(strength))):
        s.fail("arguments.strength", "a finite number", strength)
    if args["format"] not in _FORMATS:
        s.fail("arguments.format", f"one of {list(_FORMATS)}", args["format"])
    if args["layout"] != "NCHW":
        s.fail("arguments.layout", "'NCHW'", args["layout"])

    data = s.obj(top["data"], "data", _DATA_KEYS)
    n = s.integer(data["count"], "data.count", 0, _MAX_COUNT)
    shape = data["shape"]
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(type(v) is int and 1 <= v <= _MAX_SIDE for v in shape)):
        s.fail("data.shape", f"[C, H, W], three integers in 1..{_MAX_SIDE}", shape)
    labelled = s.flag(data["labelled"], "data.labelled")
    try:
        vr = ValueRange.from_dict(data["value_range"])
    except (ValueError, TypeError, OverflowError) as e:
        s.fail("data.value_range", "a value range", str(e)[:200], raw=True)
    if args["format"] == "shards":
        try:
            np.dtype(vr.dtype)
        except TypeError:
            s.fail("data.value_range.dtype", "a dtype numpy can store", vr.dtype)
    names = data["class_names"]
    if names is not None and (not isinstance(names, list) or len(names) > _MAX_SIDE
                              or not all(isinstance(c, str) and len(c) <= 1024 for c in names)):
        s.fail("data.class_names", f"null or a list of at most {_MAX_SIDE} strings", names)
    s.text(data["source"], "data.source", 4096)
    s.hex(data["sha256"], "data.sha256")

    total = n * (k + r)
    counts = s.obj(top["counts"], "counts", frozenset(("total", "real", "synthetic", "per_class")))
    s.equal(counts["total"], "counts.total", total)
    s.equal(counts["real"], "counts.real", n * r)
    s.equal(counts["synthetic"], "counts.synthetic", n * k)
    per_class = s.obj(counts["per_class"], "counts.per_class")
    for name, c in per_class.items():
        s.text(name, "a key of counts.per_class")
        s.integer(c, f"counts.per_class[{_describe(name)}]", 1, total)
    if sum(per_class.values()) != total or (not labelled and set(per_class) - {"unlabelled"}):
        s.fail("counts.per_class", f"per-class counts that add up to {total} samples", per_class)

    shards = top["shards"]
    want = max(1, -(-total // shard_size))
    if not isinstance(shards, list) or len(shards) != want:
        s.fail("shards", f"a list of {want} shard entries ({total} samples, {shard_size} a shard)", shards)
    keys = frozenset(("index", "first", "count", "marker", *(("files",) if args["format"] == "shards" else ())))
    for i, shard in enumerate(shards):
        field = f"shards[{i}]"
        s.obj(shard, field, keys)
        s.equal(shard["index"], f"{field}.index", i)
        s.equal(shard["first"], f"{field}.first", i * shard_size)
        s.equal(shard["count"], f"{field}.count", min((i + 1) * shard_size, total) - i * shard_size)
        s.file(shard["marker"], f"{field}.marker", f"shard-{i:05d}.json")
        if "files" in keys:
            files = s.obj(shard["files"], f"{field}.files", frozenset(("x", "meta")))
            s.file(files["x"], f"{field}.files.x", f"shard-{i:05d}-x.npy")
            s.file(files["meta"], f"{field}.files.meta", f"shard-{i:05d}-meta.npy")
    return manifest


def _differences(a: Any, b: Any, path: str = "", depth: int = 2) -> list[str]:
    """The fields where two JSON values differ (dotted paths, down to ``depth`` levels)."""
    if _canonical(a) == _canonical(b):
        return []
    if depth == 0 or not (isinstance(a, dict) and isinstance(b, dict)):
        return [path or "everything"]
    out: list[str] = []
    for key in sorted(set(a) | set(b)):
        out += _differences(a.get(key), b.get(key), f"{path}.{key}" if path else str(key), depth - 1)
    return out


def read_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a complete generated set, checked before anything in it is used.

    Its own SHA-256, its schema (:func:`validate_manifest`), and its identity against ``run.json``;
    ``ValueError`` naming what is wrong and what to do.

    Example:
        >>> read_manifest("/no/such/folder")
        Traceback (most recent call last):
        ...
        FileNotFoundError: no generated set at /no/such/folder (expected /no/such/folder/manifest.json)
    """
    out = Path(out_dir)
    path = out / "manifest.json"
    fix = (f"run the same vaeaug generate command again (it rewrites {path.name} from the shards' own records), or "
           "regenerate the set into a new folder")
    try:
        manifest = load_json(path, "generated-set manifest (manifest.json)", fix=fix)
    except FileNotFoundError:
        if os.path.lexists(out / "run.json"):
            raise ValueError(f"{out} is an incomplete generated set (no manifest.json yet): resume the run, or run "
                             "the remaining shard jobs, then read it") from None
        raise FileNotFoundError(f"no generated set at {out} (expected {path})") from None
    recorded = manifest.get("manifest_sha256") if isinstance(manifest, dict) else None
    if (isinstance(recorded, str) and manifest.get("format") == FORMAT
            and manifest.get("format_version") == FORMAT_VERSION):  # an edit is said as such, before its details
        actual = manifest_sha256(manifest)
        if recorded != actual:
            raise ValueError(f"{path} was changed after it was written: its content's SHA-256 is {actual[:16]}..., "
                             f"it records {_short(recorded[:16])}...; {fix}")
    validate_manifest(manifest, str(path), fix)  # then every field, whoever computed the checksum
    run_path = out / "run.json"
    try:
        run = load_json(run_path, "run identity (run.json)", fix=fix)
    except FileNotFoundError:
        raise ValueError(f"{run_path} is missing: the set's identity cannot be checked; {fix}") from None
    identity = {key: manifest[key] for key in _IDENTITY}
    if _canonical(run) != _canonical(identity):
        diff = _differences(identity, run)
        raise ValueError(f"{run_path} and {path} disagree on {', '.join(diff[:5])}: one of them was changed after "
                         "the set was written; regenerate the set into a new folder (or delete this one first)")
    return manifest  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------------
# Shard files


def _npy_header(f: BinaryIO, where: str, fix: str) -> tuple[dict[str, Any], int]:
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
    if n > _MAX_NPY_HEADER:
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


def _mentions_object(descr: Any) -> bool:
    """Whether an ``.npy`` header's ``descr`` names Python objects (``'|O'``, a field of them, a subarray)."""
    if isinstance(descr, str):
        return descr.lstrip("<>|=").startswith("O")
    if isinstance(descr, tuple):  # (type, shape)
        return len(descr) > 0 and _mentions_object(descr[0])
    return isinstance(descr, list) and any(  # fields (name, type[, shape])
        isinstance(field, tuple) and len(field) > 1 and _mentions_object(field[1]) for field in descr)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _open_npy(root: Path, shard: dict[str, Any], key: str, dtype: np.dtype[Any],
              shape: tuple[int, ...]) -> tuple[BinaryIO, int, int]:
    """Open a shard's ``.npy`` file (regular), check its header and size; ``(file, size, data offset)``."""
    entry, i = shard["files"][key], shard["index"]
    where = f"{entry['name']} (shard {i} of {root})"
    fix = (f"run vaeaug verify {root}; to repair, delete shard {i}'s files ({root / f'shard-{i:05d}'}*) and run the "
           "same vaeaug generate command again")
    try:
        f = open_regular(root / entry["name"], "generated-set shard (.npy)")
    except FileNotFoundError:
        raise ValueError(f"{where} is missing; {fix}") from None
    except ValueError as e:  # a FIFO, a device, a folder, unreadable
        raise ValueError(f"{e}; {fix}") from None
    try:
        size = os.fstat(f.fileno()).st_size
        header, offset = _npy_header(f, where, fix)
        want = dtype_to_descr(dtype)
        if _mentions_object(header["descr"]):
            raise ValueError(f"{where} holds Python objects (dtype {_short(header['descr'])}), which vaeaug never "
                             f"writes and never reads (reading them would unpickle; the manifest says {want!r}); {fix}")
        if header["descr"] != want:
            raise ValueError(f"{where} holds dtype {_short(header['descr'])}; the manifest says {want!r}; {fix}")
        if header["fortran_order"] is not False:
            raise ValueError(f"{where} is in Fortran order; vaeaug writes C order (the manifest says {want!r} in C "
                             f"order); {fix}")
        got = header["shape"]
        if not isinstance(got, tuple) or tuple(type(v) for v in got) != (int,) * len(shape) or got != shape:
            raise ValueError(f"{where} holds shape {_short(got)}; the manifest says {shape}; {fix}")
        need = offset + math.prod(shape) * dtype.itemsize
        if size != need:
            raise ValueError(f"{where} is {size} bytes; its header (shape {shape}, {want!r}) needs exactly {need} "
                             f"({'cut short' if size < need else 'trailing bytes'}); {fix}")
        if size != entry["bytes"]:
            raise ValueError(f"{where} is {size} bytes; the manifest says {entry['bytes']}; {fix}")
        return f, size, offset
    except BaseException:
        f.close()
        raise


def _map_x(root: Path, shard: dict[str, Any], dtype: np.dtype[Any], sample_shape: tuple[int, ...]) -> np.ndarray:
    """Memory-map a shard's images from the very descriptor whose header and size were checked."""
    shape = (int(shard["count"]), *sample_shape)
    f, _, offset = _open_npy(root, shard, "x", dtype, shape)
    with f:
        if math.prod(shape) == 0:
            return np.zeros(shape, dtype)
        return np.memmap(f, dtype=dtype, mode="r", offset=offset, shape=shape)


def _read_meta(root: Path, shard: dict[str, Any]) -> np.ndarray:
    """A shard's labels and flags: header and size checked, bytes against the manifest's SHA-256."""
    count = int(shard["count"])
    f, size, offset = _open_npy(root, shard, "meta", META_DTYPE, (count,))
    with f:
        f.seek(0)
        blob = f.read(size + 1)
    entry, i = shard["files"]["meta"], shard["index"]
    if len(blob) != size or hashlib.sha256(blob).hexdigest() != entry["sha256"]:
        raise ValueError(f"{entry['name']} (shard {i} of {root}) does not match the SHA-256 in the manifest: its "
                         f"labels or flags were changed; to repair, delete shard {i}'s files and run the same vaeaug "
                         "generate command again")
    return np.frombuffer(blob, META_DTYPE, count=count, offset=offset)


def _check_meta(meta: np.ndarray, manifest: dict[str, Any], root: Path, chunk: int = 1 << 20) -> None:
    """Every sample's source, variant, flag and label as the layout and the manifest's counts say
    (in chunks: the temporaries stay small whatever the set's size)."""
    args, data = manifest["arguments"], manifest["data"]
    r = int(args["include_real"])
    per = args["variants_per_sample"] + r
    names, labelled = data["class_names"], data["labelled"]
    fix = f"run vaeaug verify {root}, and regenerate the set"
    counts: dict[str, int] = {}
    for lo in range(0, len(meta), chunk):
        part = meta[lo:lo + chunk]
        s = np.arange(lo, lo + len(part), dtype=np.int64)
        variant = s % per - r
        if not (np.array_equal(part["source"], s // per) and np.array_equal(part["variant"], variant)
                and np.array_equal(part["synthetic"], variant >= 0)):
            raise ValueError(f"the label files of {root} do not follow the set's layout (source, variant and "
                             f"synthetic flag of each sample); {fix}")
        y = part["y"]
        if labelled:  # in range, and the same for every sample of a source
            bad = bool((y < 0).any()) or (names is not None and int(y.max()) >= len(names))
            bad = bad or not np.array_equal(y, meta["y"][s - s % per])
        else:
            bad = bool((y != -1).any())
        if bad:
            raise ValueError(f"the labels in {root} do not match its manifest (out of range, or not the same for "
                             f"every variant of a source); {fix}")
        labels, n = np.unique(y, return_counts=True)
        for label, c in zip(labels.tolist(), n.tolist(), strict=True):
            key = class_key(label, names)
            counts[key] = counts.get(key, 0) + c
    if counts != manifest["counts"]["per_class"]:
        raise ValueError(f"the labels in {root} do not match its manifest: per-class counts {_short(counts)}, the "
                         f"manifest says {_short(manifest['counts']['per_class'])}; {fix}")


def _check_file(out: Path, entry: dict[str, Any], shard: int) -> list[str]:
    """A file's size and SHA-256 against its manifest entry: [] or one problem."""
    name = entry["name"]
    try:
        with open_regular(out / name, "generated-set file") as f:
            size = os.fstat(f.fileno()).st_size
            if size != entry["bytes"]:
                return [f"shard {shard}: {name} is corrupt ({size} bytes, the manifest says {entry['bytes']})"]
            h, left = hashlib.sha256(), size
            while left > 0 and (block := f.read(min(1 << 20, left))):
                h.update(block)
                left -= len(block)
    except FileNotFoundError:
        return [f"shard {shard}: {name} is missing"]
    except ValueError as e:
        return [f"shard {shard}: {e}"]
    if left or h.hexdigest() != entry["sha256"]:
        return [f"shard {shard}: {name} is corrupt (SHA-256 differs from the manifest)"]
    return []


def _marker_images(out: Path, shard: dict[str, Any], manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The PNG entries of an image-folder shard's record (already checked against its SHA-256)."""
    first, count = shard["first"], shard["count"]
    s = _Schema(f"{out / shard['marker']['name']}", "regenerate the set")
    record = s.obj(load_json(out / shard["marker"]["name"], "shard record", max_bytes=shard["marker"]["bytes"]),
                   "the record")
    images = record.get("images")
    if not isinstance(images, list) or len(images) != count:
        s.fail("images", f"a list of {count} entries", images)
    args, data = manifest["arguments"], manifest["data"]
    r = int(args["include_real"])
    per = args["variants_per_sample"] + r
    for j, image in enumerate(images):
        field, sample = f"images[{j}]", first + j
        also = ("y", "source", "variant")
        entry = s.obj(image, field, frozenset(("name", "bytes", "sha256", *also)))
        y = s.integer(entry["y"], f"{field}.y", 0 if data["labelled"] else -1, _MAX_COUNT if data["labelled"] else -1)
        s.equal(entry["source"], f"{field}.source", sample // per)
        s.equal(entry["variant"], f"{field}.variant", sample % per - r)
        name = f"{class_key(y, data['class_names'])}/{sample:08d}.png"
        if not _PNG_NAME.fullmatch(name):
            s.fail(f"{field}.name", "a safe relative name class/00000000.png", name)
        s.file(entry, field, name, also=also)
    return images


def verify_generated(out_dir: str | os.PathLike[str]) -> list[str]:
    """Check a generated set: its manifest (schema, own SHA-256, ``run.json``), every file's size and
    SHA-256 as recorded when it was written, every ``.npy`` header, and the labels against the layout.

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
    if manifest["arguments"]["format"] != "shards":
        for shard in manifest["shards"]:
            i = shard["index"]
            found = _check_file(out, shard["marker"], i)
            if not found:
                try:
                    for image in _marker_images(out, shard, manifest):
                        found += _check_file(out, image, i)
                except (OSError, ValueError) as e:
                    found.append(f"shard {i}: {e}")
            problems += found
        return problems
    dtype, sample_shape = np.dtype(manifest["data"]["value_range"]["dtype"]), tuple(manifest["data"]["shape"])
    metas: list[np.ndarray] = []
    for shard in manifest["shards"]:
        i = shard["index"]
        problems += _check_file(out, shard["marker"], i)
        for key in ("x", "meta"):
            found = _check_file(out, shard["files"][key], i)
            if not found:  # the bytes are as written: now their header, and the labels' content
                try:
                    if key == "x":
                        _map_x(out, shard, dtype, sample_shape)  # its header and size; the map is dropped
                    else:
                        metas.append(_read_meta(out, shard))
                except ValueError as e:
                    found.append(f"shard {i}: {e}")
            problems += found
    if len(metas) == len(manifest["shards"]):
        try:
            _check_meta(np.concatenate(metas), manifest, out)
        except ValueError as e:
            problems.append(str(e))
    return problems


class GeneratedDataset(torch.utils.data.Dataset):
    """The samples of a generated set, in order: source by source, real first, then its variants.

    Args:
        out_dir: a folder written by :func:`vaeaug.pregenerate` (format ``"shards"``).
        verify: check every file's SHA-256 against the manifest first (reads the whole set once).
            Without it, the manifest, the label files and every image file's header and size are
            still checked (see the module's documentation).
        transform: applied to each image.
        return_is_synthetic: append ``True`` for variants, ``False`` for real samples.

    Raises:
        ValueError: the set is incomplete, damaged or edited (the message says which file and what to do).

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
        metas = [_read_meta(self.root, shard) for shard in self.manifest["shards"]]
        self.meta = np.concatenate(metas) if metas else np.zeros(0, META_DTYPE)
        _check_meta(self.meta, self.manifest, self.root)
        self._open()
        self._starts = [int(s["first"]) for s in self.manifest["shards"]]

    def _open(self) -> list[np.ndarray]:
        """Memory-map the image shards, headers and sizes checked (again after unpickling: maps are never pickled)."""
        dtype = np.dtype(self.manifest["data"]["value_range"]["dtype"])
        sample_shape = tuple(self.manifest["data"]["shape"])
        self._x = [_map_x(self.root, shard, dtype, sample_shape) for shard in self.manifest["shards"]]
        return self._x

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
