"""The generated-set format on disk: the layout, ``run.json`` and ``manifest.json`` (schema, checksum, reading).

Sets are written by :func:`vaeaug.pregenerate` (:mod:`vaeaug.generated.writer`), read by
:class:`~vaeaug.generated.reader.GeneratedDataset` and checked by :func:`~vaeaug.generated.reader.verify_generated`
(:mod:`vaeaug.generated.reader`); their ``.npy`` files are :mod:`vaeaug.generated.shards`.

Layout of a set of ``N`` sources with ``k`` variants each (``r = 1`` with ``include_real``): sample
``s`` is slot ``s % (k + r)`` of source ``s // (k + r)``; slot 0 is the real sample when ``r = 1``,
the others are variants ``0..k-1``. Every variant is a pure function of ``(seed, source index,
variant id)`` (its noise keys, and for ``interpolate`` and ``extrapolate`` its partner), computed
in fixed-size, zero-padded chunks, so its bytes do not depend on which process, job or batch made it.

Samples are cut into shards of ``shard_size`` consecutive samples. A shard is two ``.npy`` files,
``shard-00000-x.npy`` (images ``(n, C, H, W)`` in the input's dtype and value range) and
``shard-00000-meta.npy`` (a structured array: ``y``, ``source``, ``variant`` (-1 for real),
``synthetic``), each written to a temporary name, fsynced and renamed: a file under its final
name is always complete, and a shard is done when both are. With ``format="webdataset"`` a shard is
one tar file instead, ``shard-00000.tar`` (:mod:`vaeaug.generated.tars`: per sample ``KEY.png`` or
``KEY.npy``, ``KEY.cls`` and ``KEY.json``, ``KEY`` the sample's index in 8 or more digits), written the
same way; with ``format="imagefolder"``, PNGs in class folders. ``run.json`` (written first) holds
the run's identity: the arguments that change the bytes, the model's and the data's hashes, the
backend; a second run into the same folder with another identity is refused. ``manifest.json``
(written last, by whichever process completes the set) adds the counts, every file's SHA-256 and
``manifest_sha256``, the SHA-256 of its own canonical content (format version 2).

Trust: nothing read from a set is used before it is checked. Opening a set (``verify=False``)
checks:

* ``manifest.json`` (at most 64 MiB, a regular file): its schema and every number in it
  (:func:`validate_manifest`: the counts and the shard layout follow from the arguments and the
  data's size), its ``manifest_sha256``, and that ``run.json`` holds exactly its identity part;
* each label file (small): its bytes against the manifest's SHA-256, then its content against the
  layout (source, variant and synthetic flag of every sample; labels constant per source and in
  range; the per-class counts);
* each image file: its ``.npy`` header (dtype, shape, C order, parsed without ``allow_pickle`` and
  compared with what the manifest implies) and its size (header plus data exactly), then its SHA-256
  (read in blocks of 1 MiB).

``verify=True`` (and :func:`verify_generated`, ``vaeaug verify``) also checks the shard records and that
every value of a float set is finite. A
``webdataset`` set's labels are inside its tars, so opening one checks what ``verify`` checks: each
tar's size and SHA-256 against the manifest before it is parsed, then every member against the
layout (:mod:`vaeaug.generated.tars`). Every
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

import json
import math
import os
import re
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from vaeaug.core.values import ValueRange, short_repr
from vaeaug.files import MiB, canonical_json, read_json, sha256_bytes

__all__ = ["read_manifest", "validate_manifest", "manifest_sha256", "class_key", "shard_files", "marker_path",
           "Schema", "FORMAT", "FORMAT_VERSION", "FORMATS", "MAX_JSON_BYTES", "MAX_COUNT", "MAX_VARIANTS",
           "MAX_SHARDS", "PNG_NAME", "PAYLOADS", "payload_for", "shard_keys"]

FORMAT = "vaeaug-generated"
FORMAT_VERSION = 2  # 2: manifest_sha256, every field validated; 1 (no checksum) is refused
MAX_JSON_BYTES = 64 * MiB  # manifest.json, run.json, a shard's record
FORMATS = ("shards", "imagefolder", "webdataset")
PAYLOADS = ("png", "npy")  # the image member of a webdataset sample (payload_for)
_IDENTITY = ("format", "format_version", "vaeaug_version", "model", "data", "arguments")  # == run.json
_TOP_KEYS = frozenset((*_IDENTITY, "counts", "shards", "manifest_sha256"))
_DATA_KEYS = frozenset(("source", "count", "shape", "labelled", "value_range", "class_names", "sha256"))
_ARG_KEYS = frozenset(("variants_per_sample", "mode", "strength", "form", "seed", "include_real", "format",
                       "shard_size", "layout"))
MAX_COUNT = 1 << 40  # samples, sources, shard size
MAX_VARIANTS = 1 << 20  # variants of one source
MAX_SHARDS = 1 << 16  # shards of a set: its manifest lists each (about 450 bytes and 25 JSON values a shard)
_MAX_SIDE = 1 << 16  # channels, height, width
_MAX_FILE = 1 << 50  # bytes
_HEX64 = re.compile(r"[0-9a-f]{64}")
PNG_NAME = re.compile(r"(?!\.)[^/\\\0]+/\d{8}\.png")


def shard_files(out: Path, m: int, fmt: str = "shards") -> dict[str, Path]:
    """The files of shard ``m`` listed in the manifest: images (``x``) and labels and flags (``meta``) of a
    ``shards`` set, the tar (``tar``) of a ``webdataset`` set, none for an image folder (its record lists them).

    Example:
        >>> sorted(p.name for p in shard_files(Path("gen"), 3).values())
        ['shard-00003-meta.npy', 'shard-00003-x.npy']
        >>> shard_files(Path("gen"), 3, "webdataset")["tar"].name
        'shard-00003.tar'
    """
    if fmt == "webdataset":
        return {"tar": out / f"shard-{m:05d}.tar"}
    if fmt == "shards":
        return {"x": out / f"shard-{m:05d}-x.npy", "meta": out / f"shard-{m:05d}-meta.npy"}
    return {}


def shard_keys(fmt: str) -> frozenset[str]:
    """The keys of a shard's ``files`` entry in the manifest (:func:`shard_files`)."""
    return frozenset(shard_files(Path(), 0, fmt))


def payload_for(dtype: str, channels: int, payload: str | None = None) -> str:
    """The image member of a webdataset sample: ``"png"`` or ``"npy"``.

    ``None`` chooses: ``"png"`` for uint8 data of 1 or 3 channels (lossless, what image tools read),
    ``"npy"`` for anything else (any dtype and channel count, exact). ``"npy"`` is always possible;
    ``"png"`` only where it is exact.

    Args:
        dtype: the data's dtype name (its value range's).
        channels: ``C`` of the ``(C, H, W)`` samples.
        payload: ``"png"``, ``"npy"`` or ``None``.

    Raises:
        ValueError: an unknown payload, or ``"png"`` for data a PNG cannot hold exactly.

    Example:
        >>> payload_for("uint8", 3), payload_for("float32", 1), payload_for("uint8", 4)
        ('png', 'npy', 'npy')
    """
    if payload is not None and payload not in PAYLOADS:
        raise ValueError(f"payload must be one of {list(PAYLOADS)} or None (chosen by dtype); got "
                         f"{short_repr(payload)}")
    fits = dtype == "uint8" and channels in (1, 3)
    if payload == "png" and not fits:
        raise ValueError(f"payload 'png' stores 8-bit images of 1 or 3 channels, but this data is {dtype} with "
                         f"{channels} channel(s); use payload='npy' (--payload npy, any dtype, exact) or leave it "
                         "unset")
    return payload or ("png" if fits else "npy")


def marker_path(out: Path, m: int) -> Path:
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



def manifest_sha256(manifest: dict[str, Any]) -> str:
    """The SHA-256 a manifest records about itself: over its canonical JSON, ``manifest_sha256`` left out.

    Example:
        >>> manifest_sha256({"b": 1, "a": [1.0]}) == manifest_sha256({"a": [1.0], "b": 1, "manifest_sha256": "x"})
        True
    """
    return sha256_bytes(canonical_json({k: v for k, v in manifest.items() if k != "manifest_sha256"}))




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


class Schema:
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
    s = Schema(where, fix)
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

    args = s.obj(top["arguments"], "arguments")
    fmt = args.get("format")
    if fmt not in FORMATS:
        s.fail("arguments.format", f"one of {list(FORMATS)}", fmt)
    s.obj(args, "arguments", _ARG_KEYS | ({"payload"} if fmt == "webdataset" else set()))
    k = s.integer(args["variants_per_sample"], "arguments.variants_per_sample", 0, MAX_VARIANTS)
    r = int(s.flag(args["include_real"], "arguments.include_real"))
    if k + r == 0:
        s.fail("arguments.variants_per_sample", "at least 1 without include_real", k)
    s.integer(args["seed"], "arguments.seed", 0, (1 << 64) - 1)
    shard_size = s.integer(args["shard_size"], "arguments.shard_size", 1, MAX_COUNT)
    s.text(args["mode"], "arguments.mode", 64)
    s.text(args["form"], "arguments.form", 64)
    strength = args["strength"]
    if isinstance(strength, bool) or not (type(strength) is int or (type(strength) is float
                                                                    and math.isfinite(strength))):
        s.fail("arguments.strength", "a finite number", strength)
    if args["layout"] != "NCHW":
        s.fail("arguments.layout", "'NCHW'", args["layout"])

    data = s.obj(top["data"], "data", _DATA_KEYS)
    n = s.integer(data["count"], "data.count", 0, MAX_COUNT)
    shape = data["shape"]
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(type(v) is int and 1 <= v <= _MAX_SIDE for v in shape)):
        s.fail("data.shape", f"[C, H, W], three integers in 1..{_MAX_SIDE}", shape)
    labelled = s.flag(data["labelled"], "data.labelled")
    try:
        vr = ValueRange.from_dict(data["value_range"])
    except (ValueError, TypeError, OverflowError) as e:
        s.fail("data.value_range", "a value range", str(e)[:200], raw=True)
    if fmt != "imagefolder":
        try:
            np.dtype(vr.dtype)
        except TypeError:
            s.fail("data.value_range.dtype", "a dtype numpy can store", vr.dtype)
    if fmt == "webdataset":
        if args["payload"] not in PAYLOADS:
            s.fail("arguments.payload", f"one of {list(PAYLOADS)}", args["payload"])
        if args["payload"] == "png" and payload_for(vr.dtype, shape[0]) != "png":
            s.fail("arguments.payload", f"'npy' for {vr.dtype} data of {shape[0]} channel(s)", args["payload"])
    names = data["class_names"]
    if names is not None and (not isinstance(names, list) or len(names) > _MAX_SIDE
                              or not all(isinstance(c, str) and len(c) <= 1024 for c in names)):
        s.fail("data.class_names", f"null or a list of at most {_MAX_SIDE} strings", names)
    s.text(data["source"], "data.source", 4096)
    s.hex(data["sha256"], "data.sha256")

    total = n * (k + r)
    if total > MAX_COUNT:
        s.fail("data.count", f"at most {MAX_COUNT} samples in all ({k + r} per source)", n)
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
    if want > MAX_SHARDS:
        s.fail("arguments.shard_size", f"at least {-(-total // MAX_SHARDS)} (at most {MAX_SHARDS} shards)", shard_size)
    if not isinstance(shards, list) or len(shards) != want:
        s.fail("shards", f"a list of {want} shard entries ({total} samples, {shard_size} a shard)", shards)
    files_keys = shard_keys(fmt)
    keys = frozenset(("index", "first", "count", "marker", *(("files",) if files_keys else ())))
    for i, shard in enumerate(shards):
        field = f"shards[{i}]"
        s.obj(shard, field, keys)
        s.equal(shard["index"], f"{field}.index", i)
        s.equal(shard["first"], f"{field}.first", i * shard_size)
        s.equal(shard["count"], f"{field}.count", min((i + 1) * shard_size, total) - i * shard_size)
        s.file(shard["marker"], f"{field}.marker", f"shard-{i:05d}.json")
        if files_keys:
            files = s.obj(shard["files"], f"{field}.files", files_keys)
            for key, path in shard_files(Path(), i, fmt).items():
                s.file(files[key], f"{field}.files.{key}", path.name)
    return manifest


def _differences(a: Any, b: Any, path: str = "", depth: int = 2) -> list[str]:
    """The fields where two JSON values differ (dotted paths, down to ``depth`` levels)."""
    if canonical_json(a) == canonical_json(b):
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
        manifest = read_json(path, "generated-set manifest (manifest.json)", fix=fix, max_bytes=MAX_JSON_BYTES)
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
                             f"it records {short_repr(recorded[:16])}...; {fix}")
    validate_manifest(manifest, str(path), fix)  # then every field, whoever computed the checksum
    run_path = out / "run.json"
    try:
        run = read_json(run_path, "run identity (run.json)", fix=fix, max_bytes=MAX_JSON_BYTES)
    except FileNotFoundError:
        raise ValueError(f"{run_path} is missing: the set's identity cannot be checked; {fix}") from None
    identity = {key: manifest[key] for key in _IDENTITY}
    if canonical_json(run) != canonical_json(identity):
        diff = _differences(identity, run)
        raise ValueError(f"{run_path} and {path} disagree on {', '.join(diff[:5])}: one of them was changed after "
                         "the set was written; regenerate the set into a new folder (or delete this one first)")
    return manifest  # type: ignore[no-any-return]
