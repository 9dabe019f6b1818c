"""ONNX exports are integrity-checked byte for byte (issue 14, "Trust every byte").

Every finding has its test here: a whole-file checksum that covers the metadata and every other
top-level field (1), no external data (2), metadata that must describe its graph (3), metadata in
range (4), bounded reads of regular files only (5), an all-or-nothing export (6), protobuf errors
as ``ValueError`` (7); and a property-based fuzz test over byte flips, truncations and insertions
(:func:`mutate` is reusable by a longer benchmark-style run).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from _helpers import fuzz_settings, make_special
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vaeaug
import vaeaug.backends.onnx.export as export_module
from vaeaug.backends.onnx.metadata import (
    CHECKSUM_KEY,
    MAX_ONNX_BYTES,
    ONNX_FORMAT_VERSION,
    _scan,
    graph_sha256,
    onnx_paths,
    read_onnx_metadata,
    seal,
)
from vaeaug.backends.onnx_backend import OnnxBackend
from vaeaug.core.rng import Noise, derive_keys
from vaeaug.core.settings import MAX_STRENGTH

REEXPORT = "vaeaug export"  # every refusal says how to fix it


# --------------------------------------------------------------------------- one real export, shared


@pytest.fixture(scope="module")
def model() -> vaeaug.VAE:
    """A tiny untrained conditional VAE for scikit-learn's digits (8x8, values 0..16)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 8, 8), num_classes=10),
                      vaeaug.ValueRange(0.0, 16.0, "float64"), [str(i) for i in range(10)])


@pytest.fixture(scope="module")
def export(model: vaeaug.VAE, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return vaeaug.export_onnx(model, tmp_path_factory.mktemp("export") / "m.onnx")


@pytest.fixture(scope="module")
def blobs(export: dict[str, Path]) -> dict[str, bytes]:
    return {g: p.read_bytes() for g, p in export.items()}


def _place(d: Path, blobs: dict[str, bytes], **replace: bytes) -> Path:
    """Write an export into ``d`` (``replace``: other bytes for some graphs); the augmenter's path."""
    d.mkdir(parents=True, exist_ok=True)
    paths = onnx_paths(d / "m.onnx")
    for g, p in paths.items():
        p.write_bytes(replace.get(g, blobs[g]))
    return paths["augmenter"]


def _edit(blob: bytes, **changes: str | None) -> bytes:
    """``blob`` with some ``vaeaug.<key>`` metadata set (``None``: removed), re-serialized by onnx, not resealed."""
    proto = onnx.load_from_string(blob)
    props = {e.key: e.value for e in proto.metadata_props}
    for k, v in changes.items():
        if v is None:
            props.pop(f"vaeaug.{k}", None)
        else:
            props[f"vaeaug.{k}"] = v
    del proto.metadata_props[:]
    for k, v in props.items():
        e = proto.metadata_props.add()
        e.key, e.value = k, v
    return bytes(proto.SerializeToString())


def _json_edit(blob: bytes, key: str, fn: Callable[[Any], Any]) -> bytes:
    """Reseal ``blob`` with the JSON metadata ``key`` replaced by ``fn(old value)``."""
    props = {e.key: e.value for e in onnx.load_from_string(blob).metadata_props}
    return seal(_edit(blob, **{key: json.dumps(fn(json.loads(props[f"vaeaug.{key}"])))}))


def _x(n: int = 3) -> tuple[np.ndarray, np.ndarray, Noise]:
    x = np.random.default_rng(0).random((n, 1, 8, 8), dtype=np.float32)
    return x, np.arange(n, dtype=np.int64) % 10, Noise.from_keys(derive_keys(7, np.arange(n)), 16)


def _outputs(gen: OnnxBackend) -> list[np.ndarray]:
    """The augmenter's and the sampler's outputs on fixed inputs."""
    x, y, noise = _x()
    return [gen.variants(x, y, mode="isotropic", noise=noise), gen.variants(x, y, mode="prior", noise=noise)]


# --------------------------------------------------------------------------- 1. the checksum covers every byte


def test_one_flipped_metadata_byte_is_refused(blobs: dict[str, bytes], tmp_path: Path) -> None:
    """``"high": 16.0`` -> ``36.0`` used to load silently, and VAEAugment then read inputs in the wrong range."""
    blob = blobs["augmenter"]
    assert blob.count(b'"high": 16.0') == 1
    path = _place(tmp_path, blobs, augmenter=blob.replace(b'"high": 16.0', b'"high": 36.0'))
    for load in (read_onnx_metadata, OnnxBackend, vaeaug.VAEAugment):
        with pytest.raises(ValueError, match="SHA-256 differs") as e:
            load(path)
        assert REEXPORT in str(e.value)


@pytest.mark.parametrize("field", ["config", "class_names", "value_range", "model_sha256", "augment", "version",
                                   "opset", "ir_version", "producer", "doc_string", "foreign_metadata",
                                   "function", "unknown_field", "checksum_value"])
def test_every_top_level_field_is_covered(field: str, blobs: dict[str, bytes], tmp_path: Path) -> None:
    """Any change anywhere outside the checksum entry (which must itself be canonical and last) is refused."""
    blob = blobs["augmenter"]
    proto = onnx.load_from_string(blob)
    if field in ("config", "class_names", "value_range", "model_sha256", "augment", "version"):
        props = {e.key: e.value for e in proto.metadata_props}
        old = props[f"vaeaug.{field}"]
        new = {"config": old.replace('"latent_dim": 16', '"latent_dim": 17'),
               "class_names": old.replace('"3"', '"8"'), "value_range": old.replace("16.0", "255.0"),
               "model_sha256": "0" * 64, "augment": '{"form": "delta", "mode": "isotropic", "p": 1.0, "strength": 4.0}',
               "version": "0.0.0"}[field]
        assert new != old
        bad = _edit(blob, **{field: new})
    elif field == "opset":
        proto.opset_import[0].version += 1
        bad = bytes(proto.SerializeToString())
    elif field == "ir_version":
        proto.ir_version -= 1
        bad = bytes(proto.SerializeToString())
    elif field == "producer":
        proto.producer_name = "someone"
        bad = bytes(proto.SerializeToString())
    elif field == "doc_string":
        proto.doc_string += "!"
        bad = bytes(proto.SerializeToString())
    elif field == "foreign_metadata":
        e = proto.metadata_props.add()
        e.key, e.value = "author", "me"
        bad = bytes(proto.SerializeToString())
    elif field == "function":
        proto.functions.add().name = "f"
        bad = bytes(proto.SerializeToString())
    elif field == "unknown_field":
        bad = b"\xf8\x07\x01" + blob  # field 127, varint 1: ignored by every ONNX reader
    else:
        i = blob.rindex(CHECKSUM_KEY.encode()) + len(CHECKSUM_KEY) + 2
        bad = blob[:i] + (b"0" if blob[i:i + 1] != b"0" else b"1") + blob[i + 1:]
    assert bad != blob
    path = _place(tmp_path, blobs, augmenter=bad)
    with pytest.raises(ValueError, match="SHA-256 differs|last field") as e:
        OnnxBackend(path)
    assert REEXPORT in str(e.value)


def test_unchanged_files_load_and_an_onnx_round_trip_keeps_them_valid(blobs: dict[str, bytes],
                                                                      tmp_path: Path) -> None:
    proto = onnx.load_from_string(blobs["augmenter"])
    assert bytes(proto.SerializeToString()) == blobs["augmenter"], "the checksum entry is the canonical last field"
    meta = read_onnx_metadata(_place(tmp_path, blobs))
    assert meta["format_version"] == ONNX_FORMAT_VERSION == 2 and len(meta["sha256"]) == 64
    assert meta["value_range"] == vaeaug.ValueRange(0.0, 16.0, "float64")


def test_a_format_1_export_asks_for_a_new_export(blobs: dict[str, bytes], tmp_path: Path) -> None:
    """The layout changed (format 2): an older file is refused with the command that makes a new one."""
    old = _edit(blobs["augmenter"], format_version="1", sha256=None)
    proto = onnx.load_from_string(old)
    e = proto.metadata_props.add()
    e.key, e.value = "vaeaug.graph_sha256", graph_sha256(old)
    path = _place(tmp_path, blobs, augmenter=bytes(proto.SerializeToString()))
    with pytest.raises(ValueError, match=r"format version 1.*vaeaug export model.vae --out model.onnx"):
        OnnxBackend(path)


def test_a_changed_augmenter_or_foreign_companion_is_refused_when_its_session_is_made(
        blobs: dict[str, bytes], tmp_path: Path) -> None:
    path = _place(tmp_path, blobs)
    gen = OnnxBackend(path)
    _place(tmp_path, blobs, augmenter=_json_edit(blobs["augmenter"], "value_range", lambda d: {**d, "high": 17.0}))
    with pytest.raises(ValueError, match="changed since this generator opened it"):
        _outputs(gen)
    # a sampler sealed with another description (here: other class names) does not belong to this export
    path = _place(tmp_path / "b", blobs, sampler=_json_edit(blobs["sampler"], "class_names",
                                                            lambda names: names[::-1]))
    gen = OnnxBackend(path)
    x, y, noise = _x()
    gen.variants(x, y, noise=noise)  # the augmenter alone is fine
    with pytest.raises(ValueError, match="does not belong to the export"):
        gen.variants(x, y, mode="prior", noise=noise)


# --------------------------------------------------------------------------- 2. no external data


def _tensor(name: str, external: str) -> onnx.TensorProto:
    t = onnx.numpy_helper.from_array(np.zeros(4, np.float32), name)
    if external in ("location", "both"):
        t.data_location = onnx.TensorProto.EXTERNAL
    if external in ("entries", "both"):
        e = t.external_data.add()
        e.key, e.value = "location", "weights.bin"
    if external != "entries":
        t.ClearField("raw_data")
    return t


@pytest.mark.parametrize("where", ["initializer", "sparse_initializer", "node_attribute", "subgraph", "function",
                                   "training_info"])
@pytest.mark.parametrize("external", ["location", "entries"])
def test_external_data_is_refused_anywhere(where: str, external: str, blobs: dict[str, bytes],
                                           tmp_path: Path) -> None:
    """A tensor stored beside the file is refused, wherever it is - even in a file whose checksum is right."""
    proto = onnx.load_from_string(blobs["augmenter"])
    t = _tensor("w_ext", external)
    if where == "initializer":
        proto.graph.initializer.append(t)
    elif where == "sparse_initializer":
        proto.graph.sparse_initializer.append(onnx.helper.make_sparse_tensor(t, _tensor("i", "none"), [4]))
    elif where == "node_attribute":
        proto.graph.node.append(onnx.helper.make_node("Constant", [], ["c"], value=t))
    elif where == "subgraph":
        inner = onnx.helper.make_graph([onnx.helper.make_node("Constant", [], ["c"], value=t)], "inner", [],
                                       [onnx.helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [4])])
        middle = onnx.helper.make_graph([onnx.helper.make_node("If", ["b"], ["c"], then_branch=inner,
                                                               else_branch=inner)], "middle", [], [])
        proto.graph.node.append(onnx.helper.make_node("If", ["b"], ["d"], then_branch=middle, else_branch=middle))
    elif where == "function":
        proto.functions.append(onnx.helper.make_function(
            "vaeaug.test", "f", [], ["c"], [onnx.helper.make_node("Constant", [], ["c"], value=t)],
            [onnx.helper.make_opsetid("", 20)]))
    else:
        proto.training_info.add().initialization.initializer.append(t)
    path = _place(tmp_path, blobs, augmenter=seal(bytes(proto.SerializeToString())))
    for load in (read_onnx_metadata, OnnxBackend):
        with pytest.raises(ValueError, match=r"'w_ext' is stored as ONNX external data.*self-contained") as e:
            load(path)
        assert REEXPORT in str(e.value)


def test_a_file_saved_with_external_weights_is_refused(blobs: dict[str, bytes], tmp_path: Path) -> None:
    """What onnx.save(..., save_as_external_data=True) writes: weights in m.onnx.data, refused (sealed or not)."""
    proto = onnx.load_from_string(blobs["augmenter"])
    tmp_path.mkdir(exist_ok=True)
    onnx.save_model(proto, str(tmp_path / "x.onnx"), save_as_external_data=True, location="m.onnx.data",
                    size_threshold=0)
    moved = (tmp_path / "x.onnx").read_bytes()
    assert (tmp_path / "m.onnx.data").stat().st_size > 0
    for blob in (moved, seal(moved)):
        path = _place(tmp_path, blobs, augmenter=blob)
        with pytest.raises(ValueError, match="SHA-256 differs|external data"):
            OnnxBackend(path)
    with pytest.raises(ValueError, match="external data"):
        OnnxBackend(path)


def test_export_writes_weights_inline_when_torch_would_write_them_beside(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.onnx.export moves weights to external data above 1.5 GiB, whatever ``external_data=False`` says;
    the export reads them back inline (or fails clearly above protobuf's 2 GiB): never a file beside."""
    from torch.onnx._internal.exporter import _onnx_program

    monkeypatch.setattr(_onnx_program, "_LARGE_MODEL_THRESHOLD", 0)  # as if every model were huge
    vae = vaeaug.VAE(vaeaug.VAEConfig(input_shape=(12,), latent_dim=4, widths=(8,)))
    paths = vaeaug.export_onnx(vae, tmp_path / "v.onnx", verify=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.encoder.onnx", "v.onnx", "v.sampler.onnx"]
    for p in paths.values():
        proto = onnx.load(str(p), load_external_data=False)
        assert all(t.data_location == onnx.TensorProto.DEFAULT and not t.external_data
                   for t in proto.graph.initializer)
    x = np.random.default_rng(0).random((2, 12), dtype=np.float32)
    assert OnnxBackend(paths["augmenter"]).variants(x, seed=0).shape == (2, 12)


def test_a_graph_over_the_protobuf_limit_fails_clearly(model: vaeaug.VAE, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_module, "MAX_ONNX_BYTES", 10_000)  # every graph is now "too large"
    with pytest.raises(ValueError, match="more than one self-contained ONNX file can hold"):
        vaeaug.export_onnx(model, tmp_path / "m.onnx", verify=False)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- 3. metadata must describe its graph


@pytest.mark.parametrize("change", ["latent_dim", "input_shape", "unconditional", "vector"])
def test_metadata_that_disagrees_with_the_graph_is_refused_at_load(change: str, blobs: dict[str, bytes],
                                                                   tmp_path: Path) -> None:
    """A config whose sizes differ from the graph's inputs and outputs: a vaeaug ValueError from the
    constructor, not onnxruntime's InvalidArgument from ``variants``."""
    def fn(cfg: dict[str, Any]) -> dict[str, Any]:
        if change == "latent_dim":
            return {**cfg, "latent_dim": 8}
        if change == "input_shape":
            return {**cfg, "input_shape": [1, 16, 16], "widths": [32, 64]}
        if change == "unconditional":
            return {**cfg, "num_classes": None}
        return {**cfg, "input_shape": [64], "widths": [32]}

    blob = _json_edit(blobs["augmenter"], "config", fn)
    if change == "unconditional":  # names for 10 classes need num_classes = 10: drop them too
        blob = seal(_edit(blob, class_names="null"))
    path = _place(tmp_path, blobs, augmenter=blob)
    for load in (read_onnx_metadata, OnnxBackend):
        with pytest.raises(ValueError, match="the augmenter graph's inputs are .* but its metadata") as e:
            load(path)
        assert REEXPORT in str(e.value) and str(e.value).count("\n") == 0


def test_more_classes_than_the_graph_holds_is_a_value_error_when_the_session_is_made(
        blobs: dict[str, bytes], tmp_path: Path) -> None:
    """num_classes is invisible in the graph's inputs: the session's first run (labels 0 and k-1) shows it."""
    def more(d: dict[str, Any]) -> dict[str, Any]:
        return {**d, "num_classes": 12}

    names = json.dumps([str(i) for i in range(12)])
    path = _place(tmp_path, blobs, **{g: seal(_edit(_json_edit(blobs[g], "config", more), class_names=names))
                                      for g in blobs})
    gen = OnnxBackend(path)
    x, y, noise = _x()
    with pytest.raises(ValueError, match="does not run on the inputs its metadata describes.*num_classes 12"):
        gen.variants(x, y, noise=noise)


# --------------------------------------------------------------------------- 4. every field in range


_FULL_WIDTH_2 = "\uff12"  # "２": Python's int() accepts it

BAD_FIELDS: list[tuple[str, Any, str]] = [  # the bounds are vaeaug.model.config's (LIMITS), as for model files
    ("value_range", lambda d: {**d, "high": float("inf")}, "finite number|Infinity is not a number JSON allows"),
    ("value_range", lambda d: {**d, "high": float("nan")}, "finite number|NaN is not a number JSON allows"),
    ("value_range", lambda d: {**d, "high": 1e31}, r"\|high\| <= 1e\+30"),
    ("value_range", lambda d: {**d, "high": 10 ** 400}, "finite number"),
    ("value_range", lambda d: {**d, "high": 0.0}, "low < high"),
    ("value_range", lambda d: {**d, "low": 20.0}, "low < high"),
    ("value_range", lambda d: {**d, "low": 0.0, "high": 1e-40}, "too narrow to work in float32"),
    ("value_range", lambda d: {**d, "low": 1e6, "high": 1e6 + 1e-3}, "too narrow to work in float32"),
    ("value_range", lambda d: {**d, "high": True}, "must be numbers"),
    ("value_range", lambda d: {**d, "dtype": "complex128"}, "dtype must be one of"),
    ("value_range", lambda d: [0, 16], "keys low, high, dtype"),
    ("class_names", lambda names: names[:9], "name each of the 10 classes"),
    ("class_names", lambda names: list(range(10)), "strings of at most 1024 characters"),
    ("class_names", lambda names: "0123456789", "null or a list of strings"),
    ("class_names", lambda names: {n: 1 for n in names}, "null or a list of strings"),
    ("class_names", lambda names: [*names[:9], "x" * 5000], "at most 1024 characters"),
    ("config", lambda c: {**c, "latent_dim": 10 ** 9}, r"latent_dim must be an integer in \[1, 65536\]"),
    ("config", lambda c: {**c, "latent_dim": 0}, "latent_dim must be an integer >= 1"),
    ("config", lambda c: {**c, "input_shape": [1, 8, 10 ** 7], "widths": [32]}, "values per sample"),
    ("config", lambda c: {**c, "input_shape": [1, 8, 8.0]}, "positive integers"),
    ("config", lambda c: {**c, "num_classes": 10 ** 7}, r"num_classes must be an integer in \[1, 65536\]"),
    ("config", lambda c: {**c, "kl_warmup": 10 ** 12}, "kl_warmup must be an integer in"),
    ("config", lambda c: {**c, "beta": 1e300}, "beta must be a finite number in"),
    ("config", lambda c: {**c, "gaussian_std": 10 ** 400}, "gaussian_std must be a number in"),
    ("config", lambda c: {**c, "sneaky": 1}, "unknown keys"),
    ("config", lambda c: None, "config must be a JSON object"),
    ("augment", lambda a: {"mode": "isotropic", "strength": 1e300, "form": "delta", "p": 0.5},
     f"strength must be at most {MAX_STRENGTH:g}"),
    ("augment", lambda a: {"mode": "isotropic", "strength": float("nan"), "form": "delta", "p": 0.5}, "augment"),
    ("augment", lambda a: {"mode": "posterior", "strength": 1e39, "form": "delta", "p": 0.5},
     "strength must be at most 100"),  # finite in Python, inf in float32: NaN variants (issue 22, 2)
    ("augment", lambda a: {"mode": "warp", "strength": 1.0, "form": "delta", "p": 0.5}, "augment"),
    ("augment", lambda a: [1], "augment"),
    ("files", lambda f: {"augmenter": "../../etc/passwd.onnx"}, "files"),
]


@pytest.mark.parametrize(("key", "fn", "message"), BAD_FIELDS,
                         ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(BAD_FIELDS)])
def test_every_metadata_field_is_validated(key: str, fn: Callable[[Any], Any], message: str,
                                           blobs: dict[str, bytes], tmp_path: Path) -> None:
    """Sealed (the checksum is right), so only validation can refuse: the message says what was expected,
    what came, and what to do."""
    path = _place(tmp_path, blobs, augmenter=_json_edit(blobs["augmenter"], key, fn))
    with pytest.raises(ValueError, match=message) as e:
        read_onnx_metadata(path)
    assert REEXPORT in str(e.value) and str(e.value).count("\n") == 0 and len(str(e.value)) < 2000


@pytest.mark.parametrize(("changes", "message"), [
    ({"format_version": _FULL_WIDTH_2}, "ASCII digits"),
    ({"format_version": "2 "}, "ASCII digits"),
    ({"format_version": "+2"}, "ASCII digits"),
    ({"format_version": "02"}, "ASCII digits"),
    ({"format_version": ""}, "ASCII digits"),
    ({"format_version": "9" * 4000}, "ASCII digits"),
    ({"format_version": "3"}, "newer than this vaeaug understands"),
    ({"model_sha256": "A" * 64}, "64 lowercase hex digits"),
    ({"model_sha256": "0" * 63}, "64 lowercase hex digits"),
    ({"version": "1.0\n2"}, "printable ASCII"),
    ({"graph": "decoder"}, "one of"),
    ({"config": "[" * 100_000 + "]" * 100_000}, "nested too deeply|config"),
    ({"config": "{"}, "not valid JSON"),
    ({"value_range": '{"low": 0, "high": 1' + "0" * 5000 + ', "dtype": "uint8"}'}, "not valid JSON|finite"),
    ({"extra": "1"}, "unknown vaeaug metadata"),
    ({"augment": None}, "lacks"),
])
def test_format_version_and_other_text_fields(changes: dict[str, str | None], message: str,
                                              blobs: dict[str, bytes], tmp_path: Path) -> None:
    path = _place(tmp_path, blobs, augmenter=seal(_edit(blobs["augmenter"], **changes)))
    with pytest.raises(ValueError, match=message) as e:
        OnnxBackend(path)
    assert "vaeaug" in str(e.value) and len(str(e.value)) < 2000


def test_a_model_whose_description_is_out_of_range_is_refused_before_tracing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vae = vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 8, 8), num_classes=3))
    vae.class_names = ["a", "b"]  # set after construction, which would have refused it

    def no_trace(*args: Any) -> bytes:
        raise AssertionError("traced a model whose description cannot be exported")

    monkeypatch.setattr(export_module, "_export_graph", no_trace)
    with pytest.raises(ValueError, match="cannot export to ONNX: this model: class_names must be .*3 classes"):
        vaeaug.export_onnx(vae, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("clamp_in_graph", [True, False], ids=["new-export", "encoder-without-clamp"])
def test_a_huge_log_variance_bias_cannot_make_nan(clamp_in_graph: bool, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 22, 1: exp(0.5 * logvar) of a log-variance bias of 200 overflowed to inf: NaN variants. The export
    clamps logvar in its graphs, and the numpy side clamps it too, for an encoder graph without the clamp (an
    export made before the clamp existed)."""
    torch = pytest.importorskip("torch")
    import vaeaug.model.vae as vae_module

    torch.manual_seed(0)
    vae = vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 8, 8), num_classes=10)).eval()
    with torch.no_grad():
        vae.to_latent.bias[16:] = 200.0
    if not clamp_in_graph:
        monkeypatch.setattr(vae_module, "clamp_logvar", lambda v: v)
    paths = vaeaug.export_onnx(vae, tmp_path / "m.onnx", verify=clamp_in_graph)
    monkeypatch.undo()
    gen = OnnxBackend(paths["augmenter"])
    x, y, noise = _x(4)
    for form in ("decode", "delta"):
        for mode in ("posterior", "isotropic", "reconstruct"):
            out = gen.variants(x, y, mode=mode, strength=100.0, form=form, noise=noise)
            assert np.isfinite(out).all(), (mode, form)


def test_a_crafted_graph_that_makes_nan_is_a_value_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resealed graph runs whatever operators it holds: one that makes NaN only for large codes (so the probe at
    zero passes) is refused when it does, never handed on as variants."""
    torch = pytest.importorskip("torch")

    def nan_for_large_z(self: Any, z: Any, y: Any = None) -> Any:
        big = (z.abs().amax(1) > 50).to(z.dtype).reshape(-1, 1, 1, 1)
        return torch.sigmoid(self.vae.decode_logits_onehot(z, self.onehot(y))) + torch.log(1 - 2 * big)  # log(-1)

    monkeypatch.setattr(export_module._Sampler, "forward", nan_for_large_z)
    vae = vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 8, 8), num_classes=10)).eval()
    gen = OnnxBackend(vaeaug.export_onnx(vae, tmp_path / "m.onnx", verify=False)["augmenter"])
    x, y, noise = _x(4)
    assert np.isfinite(gen.variants(x, y, mode="isotropic", form="decode", noise=noise)).all()  # control
    with pytest.raises(ValueError, match=r"non-finite values .*export the model again"):
        gen.variants(x, y, mode="isotropic", strength=100.0, form="decode", noise=noise)


# --------------------------------------------------------------------------- 5. bounded reads, regular files only


def _returns_within(fn: Callable[[], Any], seconds: float = 10.0) -> BaseException | None:
    """Run ``fn`` in a thread; the exception it raised (a hang fails the test instead of hanging it)."""
    box: list[BaseException | None] = []

    def target() -> None:
        try:
            fn()
            box.append(None)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s: a read that blocks or has no bound"
    return box[0]


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "directory", "too_large"])
def test_only_regular_files_of_bounded_size_are_read(kind: str, blobs: dict[str, bytes], tmp_path: Path) -> None:
    path = make_special(tmp_path / "m.onnx", {"dev_zero": "devzero", "directory": "dir", "too_large": "sparse"}
                        .get(kind, kind), MAX_ONNX_BYTES + 1)
    expected = {"fifo": "FIFO", "dev_zero": "character device", "directory": "directory",
                "too_large": "more than the 2147483648 bytes"}[kind]
    for load in (read_onnx_metadata, OnnxBackend):
        t = time.perf_counter()
        err = _returns_within(lambda: load(path))  # noqa: B023 - called at once
        assert isinstance(err, ValueError) and expected in str(err), err
        assert time.perf_counter() - t < 5


def test_a_fifo_companion_is_refused_when_needed(blobs: dict[str, bytes], tmp_path: Path) -> None:
    path = _place(tmp_path, blobs)
    onnx_paths(path)["sampler"].unlink()
    os.mkfifo(onnx_paths(path)["sampler"])
    gen = OnnxBackend(path)
    x, y, noise = _x()
    err = _returns_within(lambda: gen.variants(x, y, mode="prior", noise=noise))
    assert isinstance(err, ValueError) and "FIFO" in str(err), err
    onnx_paths(path)["sampler"].unlink()
    with pytest.raises(FileNotFoundError, match="no such ONNX file"):
        gen.variants(x, y, mode="prior", noise=noise)


# --------------------------------------------------------------------------- 6. the export: all or nothing


@pytest.fixture
def fast_export(blobs: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """Export without tracing again: the graphs are the shared export's bytes (same model, same metadata)."""
    monkeypatch.setattr(export_module, "_export_graph", lambda vae, graph, meta, opset: blobs[graph])


def test_exporting_onto_a_directory_says_so_and_leaves_nothing(model: vaeaug.VAE, tmp_path: Path,
                                                               fast_export: None) -> None:
    (tmp_path / "m.onnx").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        vaeaug.export_onnx(model, tmp_path / "m.onnx")
    (tmp_path / "m.onnx").rmdir()
    (tmp_path / "m.sampler.onnx").mkdir()
    with pytest.raises(ValueError, match=r"m\.sampler\.onnx' is a directory"):
        vaeaug.export_onnx(model, tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.sampler.onnx"]
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        vaeaug.export_onnx(model, tmp_path / "file" / "m.onnx")


def test_a_failed_export_leaves_no_file_and_restores_the_previous_ones(
        model: vaeaug.VAE, blobs: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        fast_export: None) -> None:
    paths = onnx_paths(tmp_path / "m.onnx")
    for p in paths.values():
        p.write_bytes(b"previous " + p.name.encode())
    real = os.replace

    def failing(src: Any, dst: Any) -> None:
        if Path(dst) == paths["augmenter"]:  # the last rename: encoder and sampler are in place already
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(export_module.os, "replace", failing)
    with pytest.raises(ValueError, match="No space left on device; nothing was changed"):
        vaeaug.export_onnx(model, paths["augmenter"], verify=False)
    monkeypatch.setattr(export_module.os, "replace", real)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values()), "temporaries left"
    assert all(p.read_bytes() == b"previous " + p.name.encode() for p in paths.values()), "old files not restored"
    # a verification failure in a fresh directory: the directory it created is gone too
    monkeypatch.setattr(export_module, "VERIFY_ATOL", -1.0)
    with pytest.raises(RuntimeError, match="verification failed"):
        vaeaug.export_onnx(model, tmp_path / "new" / "deeper" / "m.onnx")
    assert not (tmp_path / "new").exists()


def test_overwrite_false_never_replaces_a_file(model: vaeaug.VAE, blobs: dict[str, bytes], tmp_path: Path,
                                               fast_export: None) -> None:
    paths = onnx_paths(tmp_path / "m.onnx")
    paths["sampler"].write_bytes(b"mine")
    with pytest.raises(ValueError, match="exists; pass overwrite=True"):
        vaeaug.export_onnx(model, paths["augmenter"], verify=False, overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.sampler.onnx"] and paths["sampler"].read_bytes() == b"mine"
    paths["sampler"].unlink()
    out = vaeaug.export_onnx(model, paths["augmenter"], verify=False, overwrite=False)
    assert {g: p.read_bytes() for g, p in out.items()} == blobs


# --------------------------------------------------------------------------- 7. protobuf errors are ValueErrors


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n >> 7 else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _with_graph(blob: bytes, extra: bytes) -> bytes:
    """``blob`` (checksum removed) with ``extra`` appended inside its graph field; resealed."""
    out = b""
    for num, _wire, a, b, at in _scan(blob, 0, len(blob)):
        raw = blob[at:b]
        if num == 7:
            raw = _field(7, blob[a:b] + extra)
        elif num == 14 and CHECKSUM_KEY.encode() in raw:
            continue
        out += raw
    return seal(out)


def test_malformed_protobuf_is_a_value_error(blobs: dict[str, bytes], tmp_path: Path) -> None:
    blob = blobs["augmenter"]
    cases = [blob[:n] for n in [*range(0, 64), *range(len(blob) - 300, len(blob))]]
    cases += [
        b"\x08\x0a\x3a" + _varint(2 ** 62) + b"xx",  # a graph claiming 2**62 bytes
        b"\x08" + b"\xff" * 11 + b"\x01",  # a varint of 12 bytes
        b"\x08\x0a" + b"\x0b",  # wire type 3 (a group)
        b"\x08\x0a\x72" + _varint(2 ** 40) + b"\x0a",  # a metadata entry claiming a terabyte
        b"\x08\x0a\x3a\x00\x72\x04\x0a\x02\xff\xfe",  # a key that is not UTF-8
        b"\x00\x01",  # field number 0
    ]
    # sealed, so that only the walker meets them: a tensor claiming more bytes than its node has,
    # graphs nested 10,000 deep (If -> then_branch -> If -> ...), a huge dims varint
    nested = b""
    for _ in range(2_000):  # deeper than Python's recursion limit: a recursive parser would fail here
        nested = _field(1, _field(5, _field(6, nested) + b"\xa0\x01\x05"))  # node{attribute{g{node...}, type}}
    cases += [_with_graph(blob, _field(5, b"\x42" + _varint(2 ** 50))), _with_graph(blob, nested)]
    for i, bad in enumerate(cases):
        path = _place(tmp_path / str(i), blobs, augmenter=bad)
        with pytest.raises(ValueError) as e:
            read_onnx_metadata(path)
        assert type(e.value) is ValueError and len(str(e.value)) < 2000, (i, e.value)
    with pytest.raises(ValueError, match="nested more than 64 deep"):
        read_onnx_metadata(_place(tmp_path / "deep", blobs, augmenter=_with_graph(blob, nested)))


# --------------------------------------------------------------------------- fuzz: random damage never passes


Op = tuple[Any, ...]


def mutate(blob: bytes, ops: Sequence[Op]) -> bytes:
    """``blob`` damaged by ``ops``, applied in order (reusable by a longer fuzzing run).

    Each op is ``("flip", pos, bit)``, ``("truncate", pos)`` or ``("insert", pos, data)``; a
    position ``>= 0`` counts from the start and one ``< 0`` from the end, both wrapped into the
    current length, so every op applies to any blob.
    """
    out = bytearray(blob)
    for op in ops:
        n = len(out)
        pos = op[1] % (n + 1) if op[1] >= 0 else max(0, n + op[1])
        if op[0] == "flip":
            if n:
                out[min(pos, n - 1)] ^= 1 << op[2]
        elif op[0] == "truncate":
            del out[pos:]
        elif op[0] == "insert":
            out[pos:pos] = op[2]
        else:
            raise ValueError(f"unknown mutation {op[0]!r}; expected flip, truncate or insert")
    return bytes(out)


# positions: mostly where the structure is (the header, the metadata and checksum at the end), some anywhere
_POS = st.one_of(st.integers(0, 300), st.integers(-2500, -1), st.integers(0, 1 << 31))
OPS = st.lists(st.one_of(st.tuples(st.just("flip"), _POS, st.integers(0, 7)),
                         st.tuples(st.just("truncate"), _POS),
                         st.tuples(st.just("insert"), _POS, st.binary(min_size=1, max_size=8))),
               min_size=0, max_size=3)


@pytest.fixture(scope="module")
def fuzz_path(blobs: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _place(tmp_path_factory.mktemp("fuzz"), blobs)


@pytest.fixture(scope="module")
def reference(fuzz_path: Path) -> tuple[dict[str, Any], list[np.ndarray]]:
    return read_onnx_metadata(fuzz_path), _outputs(OnnxBackend(fuzz_path))


@settings(**fuzz_settings(60), database=None, suppress_health_check=list(HealthCheck))
@given(ops=OPS)
def test_fuzz_damaged_exports_are_refused_or_identical(ops: list[Op], blobs: dict[str, bytes], fuzz_path: Path,
                                                       reference: tuple[dict[str, Any], list[np.ndarray]]) -> None:
    """Damage to the augmenter file: a ValueError, or a file that reads and generates exactly like the original."""
    damaged = mutate(blobs["augmenter"], ops)
    fuzz_path.write_bytes(damaged)
    try:
        meta = read_onnx_metadata(fuzz_path)
    except ValueError:
        with pytest.raises(ValueError):
            OnnxBackend(fuzz_path)
        return
    assert meta == reference[0]
    outputs = _outputs(OnnxBackend(fuzz_path))
    assert all(np.array_equal(a, b) for a, b in zip(outputs, reference[1], strict=True))


_TARGETS = st.sampled_from(["file", "config", "value_range", "class_names", "augment", "format_version",
                             "model_sha256", "graph", "files", "version"])


@settings(**fuzz_settings(60), database=None, suppress_health_check=list(HealthCheck))
@given(target=_TARGETS, ops=OPS)
def test_fuzz_resealed_damage_is_validated(target: str, ops: list[Op], blobs: dict[str, bytes],
                                           fuzz_path: Path) -> None:
    """Damage with the checksum recomputed (an edit by someone who knows the format), to the whole file or to
    one metadata value: the parser, the external-data walk, the metadata validation and the graph check still
    answer a ValueError or a valid description, never another exception."""
    blob = blobs["augmenter"]
    if target == "file":
        try:
            damaged = seal(mutate(blob, ops))
        except ValueError:
            return  # the top level does not parse: the reader refuses it the same way (the test above)
    else:
        old = {e.key: e.value for e in onnx.load_from_string(blob).metadata_props}[f"vaeaug.{target}"]
        new = mutate(old.encode(), ops).decode("utf-8", errors="replace")
        damaged = seal(_edit(blob, **{target: new}))
    fuzz_path.write_bytes(damaged)
    try:
        meta = read_onnx_metadata(fuzz_path)
    except ValueError:
        return
    assert isinstance(meta["config"], vaeaug.VAEConfig) and isinstance(meta["value_range"], vaeaug.ValueRange)
    assert OnnxBackend(fuzz_path).config == meta["config"]
