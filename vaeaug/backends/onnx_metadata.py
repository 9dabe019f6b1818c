"""The files of an ONNX export and their vaeaug metadata, read without onnx, onnxruntime or torch.

An export (:func:`vaeaug.export_onnx`) is three ONNX files beside each other, each with the
model's description in its ``metadata_props``: ``m.onnx`` (the augmenter), ``m.encoder.onnx`` and
``m.sampler.onnx`` (see :mod:`vaeaug.backends.onnx_generator`). The few top-level fields of the
ModelProto message that vaeaug needs are parsed here directly from the protobuf bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..config import VAEConfig, ValueRange
from ..settings import AugmentSetting

__all__ = ["onnx_paths", "read_onnx_metadata", "graph_sha256", "GRAPHS", "ONNX_FORMAT_VERSION"]

GRAPHS = ("augmenter", "encoder", "sampler")
ONNX_FORMAT_VERSION = 1
_PREFIX = "vaeaug."


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


# --- metadata, read without onnx or torch: a few top-level fields of the ModelProto message --------


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated or malformed protobuf varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """``(field number, wire type, value)`` of one protobuf message (values of type 2 as bytes)."""
    out: list[tuple[int, int, Any]] = []
    i = 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        num, wire = tag >> 3, tag & 7
        if num == 0:
            raise ValueError("protobuf field number 0")
        v: Any
        if wire == 0:
            v, i = _varint(buf, i)
        elif wire == 1:
            v, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wire == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if i > len(buf):
            raise ValueError("truncated protobuf message")
        out.append((num, wire, v))
    return out


def graph_sha256(blob: bytes) -> str:
    """SHA-256 of the ``graph`` field (7) of a serialized ModelProto: the nodes and the weights.

    Recorded in the metadata at export (which lives outside that field), so a damaged or edited
    weight is caught when the file is opened.
    """
    graphs = [v for num, wire, v in _fields(blob) if num == 7 and wire == 2]
    if len(graphs) != 1:
        raise ValueError(f"expected one graph, found {len(graphs)}")
    return hashlib.sha256(graphs[0]).hexdigest()


def _metadata_props(path: Path) -> dict[str, str]:
    """``metadata_props`` (field 14 of ModelProto) of an ONNX file; ``ValueError`` if it is not one.

    The graph's SHA-256 is returned under ``"vaeaug.actual_graph_sha256"`` to be checked."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"ONNX file not found: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a directory; expected an .onnx file written by vaeaug export") from None
    try:
        fields = _fields(blob)
        if not any(num == 1 and wire == 0 for num, wire, _ in fields):  # ir_version
            raise ValueError("no ir_version field")
        if not any(num == 7 and wire == 2 for num, wire, _ in fields):  # graph
            raise ValueError("no graph")
        props: dict[str, str] = {}
        for num, wire, v in fields:
            if num == 14 and wire == 2:
                entry = {n: val for n, w, val in _fields(v) if w == 2}
                props[entry.get(1, b"").decode("utf-8")] = entry.get(2, b"").decode("utf-8")
        props[_PREFIX + "actual_graph_sha256"] = graph_sha256(blob)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{path} is not a valid ONNX file ({e}); it may be truncated or corrupt - export it again with "
            "vaeaug export model.vae --out model.onnx"
        ) from None
    return props


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The vaeaug description stored in an exported ONNX file, validated (no torch, no onnx needed).

    Args:
        path: one of the files written by :func:`vaeaug.export_onnx`.

    Returns:
        ``{"graph", "format_version", "vaeaug_version", "model_sha256", "config" (VAEConfig),
        "value_range" (ValueRange), "class_names", "augment"}``.

    Raises:
        ValueError: not an ONNX file, an ONNX file that vaeaug did not export, a newer format
            version, or metadata that does not validate.
    """
    p = Path(path)
    props = _metadata_props(p)
    if _PREFIX + "format_version" not in props:
        raise ValueError(
            f"{p} is an ONNX model but not one exported by vaeaug (no vaeaug metadata); export a vaeaug "
            "model with vaeaug.export_onnx or 'vaeaug export model.vae --out model.onnx'"
        )
    try:
        version = int(props[_PREFIX + "format_version"])
        if version > ONNX_FORMAT_VERSION:
            raise ValueError(
                f"format version {version} is newer than this vaeaug understands ({ONNX_FORMAT_VERSION}); "
                "upgrade vaeaug"
            )
        graph = props[_PREFIX + "graph"]
        if graph not in GRAPHS:
            raise ValueError(f"unknown graph {graph!r}; expected one of {GRAPHS}")
        class_names = json.loads(props[_PREFIX + "class_names"])
        names_ok = isinstance(class_names, list) and all(isinstance(c, str) for c in class_names)
        if class_names is not None and not names_ok:
            raise ValueError(f"class_names must be null or a list of strings; got {class_names!r}")
        augment = json.loads(props[_PREFIX + "augment"])
        if augment is not None:
            AugmentSetting.from_dict(augment)
        if props[_PREFIX + "graph_sha256"] != props[_PREFIX + "actual_graph_sha256"]:
            raise ValueError("the graph's SHA-256 differs from the one recorded at export: the file is corrupt or "
                             "was edited - export the model again")
        sha = props[_PREFIX + "model_sha256"]
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ValueError(f"model_sha256 must be 64 hex digits; got {sha!r}")
        meta = {
            "graph": graph,
            "format_version": version,
            "vaeaug_version": props[_PREFIX + "version"],
            "model_sha256": sha,
            "config": VAEConfig.from_dict(json.loads(props[_PREFIX + "config"])),
            "value_range": ValueRange.from_dict(json.loads(props[_PREFIX + "value_range"])),
            "class_names": class_names,
            "augment": augment,
        }
    except KeyError as e:
        raise ValueError(f"{p}: vaeaug metadata lacks {e.args[0]!r}; export the model again") from None
    except (ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{p}: invalid vaeaug metadata: {e}") from None
    return meta


