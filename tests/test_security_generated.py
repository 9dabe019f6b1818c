"""Generated sets on disk are checked before anything in them is used (issue 14, "Trust every byte").

A tiny set (an untrained VAE on 12 sklearn digits, k=2, four shards) is written once; each test
damages a copy of it with real files: edited ``.npy`` headers, edited or malformed manifests and
``run.json``, FIFOs and ``/dev/zero`` in place of files, files that are not ``.npy``, and random
mutations (:func:`mutate_set`, driven by hypothesis). Opening a damaged set must raise a
:class:`ValueError` that names the file, what was expected, what came and what to do, or read
back exactly the original items; never another exception, never a hang.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _helpers import fuzz_settings, time_limit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vaeaug
from vaeaug import GeneratedDataset, pregenerate, verify_generated
from vaeaug.files import parse_json
from vaeaug.generated.format import FORMAT_VERSION, manifest_sha256
from vaeaug.generated.shards import META_DTYPE

SHARD = 10  # 12 sources x 3 samples = 36 samples: shards of 10, 10, 10, 6
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
Item = tuple[bytes, str, tuple[int, ...], int, bool]


# ---------------------------------------------------------------------------------------------------
# The set, and ways to damage a copy of it


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("security_generated")


@pytest.fixture(scope="module")
def data_npz(work: Path) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[:12] * (255 / 16)).round().astype(np.uint8)
    path = work / "digits12.npz"
    np.savez(path, x=x, y=digits.target[:12], class_names=np.array(NAMES))
    return path


@pytest.fixture(scope="module")
def model() -> vaeaug.VAE:
    return vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 8, 8), num_classes=10))


def _generate(data_npz: Path, model: vaeaug.VAE, out: Path) -> dict[str, Any]:
    return pregenerate(data_npz, model, out, variants_per_sample=2, shard_size=SHARD, seed=3, progress=False)


@pytest.fixture(scope="module")
def base(work: Path, data_npz: Path, model: vaeaug.VAE) -> Path:
    out = work / "base"
    assert _generate(data_npz, model, out)["complete"]
    return out


@pytest.fixture(scope="module")
def original(base: Path) -> list[Item]:
    return _items(GeneratedDataset(base, verify=True, return_is_synthetic=True))


@pytest.fixture
def copy(base: Path, tmp_path: Path) -> Path:
    out = tmp_path / "set"
    shutil.copytree(base, out)
    return out


def _item(ds: GeneratedDataset, i: int) -> Item:
    x, y, synthetic = ds[i]
    a = x.numpy()
    return a.tobytes(), str(a.dtype), tuple(a.shape), y, synthetic


def _items(ds: GeneratedDataset) -> list[Item]:
    return [_item(ds, i) for i in range(len(ds))]


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def no_hang(seconds: int = 10) -> Any:
    """Fail (TimeoutError) instead of hanging: a FIFO opened for reading blocks until a writer comes."""
    return time_limit(seconds)


def rehash(folder: Path) -> None:
    """Recompute the manifest's own SHA-256 after an edit (a deliberate edit, not damage)."""
    path = folder / "manifest.json"
    try:
        manifest = parse_json(path.read_bytes(), path, "manifest")
    except ValueError:
        return  # damaged past strict JSON (1e999 included): nothing to recompute
    if isinstance(manifest, dict):
        manifest["manifest_sha256"] = manifest_sha256(manifest)
        path.write_text(json.dumps(manifest, indent=2, sort_keys=True))


def edit_json(path: Path, change: Callable[[Any], Any], *, rehashed: bool = False) -> None:
    """Apply ``change`` to a JSON file (it edits in place, or returns a replacement)."""
    doc = json.loads(path.read_text())
    replaced = change(doc)
    path.write_text(json.dumps(doc if replaced is None else replaced, indent=2, sort_keys=True))
    if rehashed:
        rehash(path.parent)


def npy_header(blob: bytes) -> tuple[dict[str, Any], int]:
    """The header dict and data offset of an .npy (version 1.0) blob."""
    (n,) = struct.unpack("<H", blob[8:10])
    return ast.literal_eval(blob[10:10 + n].decode("latin1")), 10 + n


def rewrite_npy_header(path: Path, **fields: Any) -> None:
    """Replace fields of an .npy file's header, keeping the data (and its offset when the text fits)."""
    blob = path.read_bytes()
    header, offset = npy_header(blob)
    header.update(fields)
    text = repr(header).encode("latin1")
    size = max(offset - 10, -(-(len(text) + 1 + 10) // 64) * 64 - 10)
    text = text + b" " * (size - len(text) - 1) + b"\n"
    path.write_bytes(blob[:8] + struct.pack("<H", len(text)) + text + blob[offset:])


def _json_paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indices) into a JSON document, containers included, in a fixed order."""
    out = [prefix]
    if isinstance(doc, dict):
        for key in sorted(doc):
            out += _json_paths(doc[key], (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _json_paths(value, (*prefix, i))
    return out


def _json_op(doc: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def mutate_set(folder: Path, ops: list[tuple[Any, ...]]) -> set[str]:
    """Damage a generated set in place; reusable by other adversarial tests.

    ``ops`` (applied in order; indices are taken modulo what they index):

    * ``("flip", file, position in [0, 1), xor in 1..255)``: change one byte;
    * ``("truncate", file, fraction in [0, 1))``: cut the file short;
    * ``("append", file, bytes)``: add trailing bytes;
    * ``("json", "manifest.json" | "run.json", path, value, delete, rehash)``: set (or delete) one
      field (``path`` indexes every field and container, the whole document included), then
      recompute the manifest's own SHA-256 if ``rehash`` (a deliberate edit);
    * ``("header", npy file, field, value)``: rewrite one field of an ``.npy`` header;
    * ``("overflow", "manifest.json" | "run.json", number index, text)``: replace one number in the JSON
      text by ``text``, such as ``1e999`` (beyond float range: no JSON encoder writes it).

    Returns:
        The image files (``shard-*-x.npy``) whose data bytes, after their header, were changed
        by a flip: opening notices those by their SHA-256, ``verify`` or not.
    """
    names = sorted(p.name for p in folder.iterdir())
    npys = [n for n in names if n.endswith(".npy")]
    payload: set[str] = set()
    for op in ops:
        kind = op[0]
        if kind in ("flip", "truncate", "append"):
            path = folder / names[op[1] % len(names)]
            blob = bytearray(path.read_bytes())
            if kind == "flip" and blob:
                at = int(op[2] * len(blob))
                blob[at] ^= op[3]
                if path.name.endswith("-x.npy") and blob[:8] == b"\x93NUMPY\x01\x00" and len(blob) >= 10 \
                        and at >= 10 + struct.unpack("<H", blob[8:10])[0]:
                    payload.add(path.name)
            elif kind == "truncate":
                del blob[int(op[2] * len(blob)):]
            elif kind == "append":
                blob += op[2]
            path.write_bytes(bytes(blob))
        elif kind == "json":
            path = folder / op[1]
            try:
                doc = parse_json(path.read_bytes(), path, "JSON file")
            except ValueError:
                continue  # already damaged past strict JSON (1e999 included)
            paths = _json_paths(doc)
            doc = _json_op(doc, paths[op[2] % len(paths)], op[3], op[4] and len(paths[op[2] % len(paths)]) > 0)
            path.write_text(json.dumps(doc, indent=2, sort_keys=True))
            if op[5]:
                rehash(folder)
        elif kind == "overflow":
            path = folder / op[1]
            try:
                text = path.read_text()
            except ValueError:
                continue  # already damaged past UTF-8
            numbers = list(re.finditer(r"(?<=: )-?[0-9][0-9.eE+-]*", text))
            if numbers:
                found = numbers[op[2] % len(numbers)]
                path.write_text(text[:found.start()] + op[3] + text[found.end():])
        elif kind == "header":
            path = folder / npys[op[1] % len(npys)]
            try:
                rewrite_npy_header(path, **{op[2]: op[3]})
            except (ValueError, TypeError, AttributeError, SyntaxError, struct.error):
                continue  # not an .npy any more
        else:
            raise ValueError(f"unknown mutation {kind!r}")
    return payload


def _raises(fn: Callable[[], Any], *needles: str) -> str:
    """Run ``fn`` (no hang allowed); it must raise ValueError whose message holds every needle."""
    with no_hang(), pytest.raises(ValueError) as info:
        fn()
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert "allow_pickle" not in message and "Traceback" not in message
    return message


# ---------------------------------------------------------------------------------------------------
# 1. Every shard's .npy header is checked, even with verify=False


def test_a_clean_set_opens_and_verifies(base: Path, original: list[Item]) -> None:
    manifest = json.loads((base / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION == 2
    assert manifest["manifest_sha256"] == manifest_sha256(manifest)
    assert verify_generated(base) == []
    ds = GeneratedDataset(base, return_is_synthetic=True)
    assert _items(ds) == original and len(original) == 36 and ds.class_names == NAMES
    assert original[0][1:3] == ("uint8", (1, 8, 8))


@pytest.mark.parametrize("fields, needle", [
    ({"descr": "|i1"}, "holds dtype '|i1'"),  # same size: read as int8, silently, before
    ({"descr": "|O"}, "Python objects"),
    ({"shape": (10, 8, 1, 8)}, "holds shape (10, 8, 1, 8)"),  # same size, another shape
    ({"shape": (10, 1, 4, 16)}, "holds shape"),
    ({"shape": (5, 1, 8, 8)}, "holds shape"),  # half the samples
    ({"descr": "<u2", "shape": (10, 1, 8, 4)}, "holds dtype '<u2'"),
    ({"fortran_order": True}, "Fortran order"),
], ids=["int8", "object", "transposed", "reshaped", "fewer", "uint16", "fortran"])
def test_image_shard_header_edits_are_refused_without_verify(copy: Path, fields: dict[str, Any], needle: str) -> None:
    rewrite_npy_header(copy / "shard-00001-x.npy", **fields)
    message = _raises(lambda: GeneratedDataset(copy), needle, "shard-00001-x.npy", "the manifest says",
                      f"vaeaug verify {copy}")
    assert "regenerate" in message or "run the same vaeaug generate" in message
    assert any("shard-00001-x.npy" in p for p in verify_generated(copy))


def test_image_shard_size_must_be_header_plus_data_exactly(copy: Path) -> None:
    path = copy / "shard-00002-x.npy"
    path.write_bytes(path.read_bytes() + b"\0" * 64)  # trailing bytes: np.load ignored them
    _raises(lambda: GeneratedDataset(copy), "shard-00002-x.npy", "trailing bytes")
    path.write_bytes(path.read_bytes()[:-65])
    _raises(lambda: GeneratedDataset(copy), "shard-00002-x.npy", "cut short")


# ---------------------------------------------------------------------------------------------------
# 2. The manifest and run.json are protected


def _set(path: tuple[Any, ...], value: Any) -> Callable[[Any], Any]:
    return lambda doc: _json_op(doc, path, value, False)


def _del(path: tuple[Any, ...]) -> Callable[[Any], Any]:
    return lambda doc: _json_op(doc, path, None, True)


MANIFEST_EDITS = {
    "value range": (("data", "value_range", "high"), 16.0),
    "class names": (("data", "class_names", 3), "eight"),
    "per-class counts": (("counts", "per_class"), {"zero": 12, "one": 24}),
    "model hash": (("model", "sha256"), "0" * 64),
    "seed": (("arguments", "seed"), 4),
    "file hash": (("shards", 0, "files", "meta", "sha256"), "f" * 64),
}


@pytest.mark.parametrize("edit", sorted(MANIFEST_EDITS))
def test_manifest_edits_are_caught_on_open_and_by_verify(copy: Path, edit: str) -> None:
    path, value = MANIFEST_EDITS[edit]
    edit_json(copy / "manifest.json", _set(path, value))
    _raises(lambda: GeneratedDataset(copy), "manifest.json was changed after it was written")
    problems = verify_generated(copy)
    assert len(problems) == 1 and "changed after it was written" in problems[0]


@pytest.mark.parametrize("edit", ["value range", "class names", "model hash", "seed"])
def test_an_edit_with_a_recomputed_checksum_is_caught_by_run_json(copy: Path, edit: str) -> None:
    path, value = MANIFEST_EDITS[edit]
    edit_json(copy / "manifest.json", _set(path, value), rehashed=True)
    _raises(lambda: GeneratedDataset(copy), "run.json and", "disagree on", ".".join(map(str, path[:2])))
    assert "disagree" in verify_generated(copy)[0]


def test_counts_and_labels_are_checked_against_the_label_files(copy: Path) -> None:
    edit_json(copy / "manifest.json", _set(*MANIFEST_EDITS["per-class counts"]), rehashed=True)
    _raises(lambda: GeneratedDataset(copy), "per-class counts")


def test_run_json_edits_are_caught(copy: Path) -> None:
    edit_json(copy / "run.json", _set(("model", "sha256"), "0" * 64))
    _raises(lambda: GeneratedDataset(copy), "disagree on model.sha256")
    cli = subprocess.run([sys.executable, "-m", "vaeaug", "verify", str(copy)], capture_output=True, text=True,
                         timeout=120)
    assert cli.returncode == 1 and cli.stdout.startswith("FAILED") and "every SHA-256 matches" not in cli.stdout
    assert "Traceback" not in cli.stderr
    (copy / "run.json").unlink()
    _raises(lambda: GeneratedDataset(copy), "run.json is missing")


@pytest.mark.parametrize("field, value", [("synthetic", True), ("y", 9)])
def test_label_files_are_checked_on_open(copy: Path, field: str, value: Any) -> None:
    """A flipped flag or label in a label file (before: read silently with verify=False); then the same edit
    with its SHA-256 updated everywhere, which the layout check still catches."""
    path = copy / "shard-00000-meta.npy"
    blob = path.read_bytes()
    _, offset = npy_header(blob)
    meta = np.frombuffer(blob, META_DTYPE, offset=offset).copy()
    meta[field][0] = value
    path.write_bytes(blob[:offset] + meta.tobytes())
    _raises(lambda: GeneratedDataset(copy), "shard-00000-meta.npy", "SHA-256")
    import hashlib

    edit_json(copy / "manifest.json", _set(("shards", 0, "files", "meta", "sha256"),
                                           hashlib.sha256(path.read_bytes()).hexdigest()), rehashed=True)
    _raises(lambda: GeneratedDataset(copy), "label", "do not")


def test_sets_from_an_older_vaeaug_are_refused_with_advice(copy: Path) -> None:
    def to_v1(doc: Any) -> None:
        doc["format_version"] = 1
        doc.pop("manifest_sha256", None)

    edit_json(copy / "manifest.json", to_v1)
    edit_json(copy / "run.json", to_v1)
    _raises(lambda: GeneratedDataset(copy), "written by an older vaeaug", "regenerate")
    assert "older vaeaug" in verify_generated(copy)[0]
    edit_json(copy / "manifest.json", _set(("format_version",), 3))
    _raises(lambda: GeneratedDataset(copy), "newer than this vaeaug", "upgrade vaeaug")


# ---------------------------------------------------------------------------------------------------
# 3. Every malformed manifest is a ValueError saying what was expected and what came


def _nested(folder: Path) -> None:
    (folder / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)


def _huge(folder: Path) -> None:
    with open(folder / "manifest.json", "wb") as f:  # sparse: 3 GiB announced, nothing on disk
        f.truncate(3 << 30)


MALFORMED: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "arguments.format changed": (lambda d: edit_json(d / "manifest.json", _set(("arguments", "format"),
                                                                               "imagefolder"), rehashed=True),
                                 ("shards[0] must be an object with the keys",)),
    "format changed": (lambda d: edit_json(d / "manifest.json", _set(("format",), "other"), rehashed=True),
                       ("format must be 'vaeaug-generated'", "got 'other'")),
    "key missing": (lambda d: edit_json(d / "manifest.json", _del(("counts",)), rehashed=True),
                    ("['counts'] missing",)),
    "key unexpected": (lambda d: edit_json(d / "manifest.json", _set(("extra",), 1), rehashed=True),
                       ("unexpected",)),
    "count as a string": (lambda d: edit_json(d / "manifest.json", _set(("counts", "total"), "36"), rehashed=True),
                          ("counts.total must be 36", "got '36'")),
    "huge count": (lambda d: edit_json(d / "manifest.json", _set(("data", "count"), 10**300), rehashed=True),
                   ("data.count must be an integer in 0..", "an integer of 301 digits")),
    "negative count": (lambda d: edit_json(d / "manifest.json", _set(("shards", 3, "count"), -6), rehashed=True),
                       ("shards[3].count must be 6", "got -6")),
    "version as a string": (lambda d: edit_json(d / "manifest.json", _set(("format_version",), "2")),
                            ("format_version must be an integer",)),
    "bool as a count": (lambda d: edit_json(d / "manifest.json", _set(("arguments", "shard_size"), True),
                                            rehashed=True), ("arguments.shard_size must be an integer", "got true")),
    "name with ..": (lambda d: edit_json(d / "manifest.json", _set(("shards", 0, "files", "x", "name"),
                                                                  "../../shard-00000-x.npy"), rehashed=True),
                     ("shards[0].files.x.name must be 'shard-00000-x.npy'", "got '../../shard-00000-x.npy'")),
    "absolute name": (lambda d: edit_json(d / "manifest.json", _set(("shards", 1, "files", "meta", "name"),
                                                                   "/etc/passwd"), rehashed=True),
                      ("must be 'shard-00001-meta.npy'", "got '/etc/passwd'")),
    "name with a separator": (lambda d: edit_json(d / "manifest.json", _set(("shards", 2, "marker", "name"),
                                                                           "sub/shard-00002.json"), rehashed=True),
                              ("must be 'shard-00002.json'",)),
    "bad value range": (lambda d: edit_json(d / "manifest.json", _set(("data", "value_range", "dtype"), "object"),
                                            rehashed=True), ("data.value_range must be a value range",)),
    "huge value range": (lambda d: edit_json(d / "manifest.json", _set(("data", "value_range", "high"), 10**400),
                                             rehashed=True), ("data.value_range must be a value range",)),
    "shape": (lambda d: edit_json(d / "manifest.json", _set(("data", "shape"), [1, 8]), rehashed=True),
              ("data.shape must be [C, H, W]",)),
    "NaN": (lambda d: edit_json(d / "manifest.json", _set(("arguments", "strength"), float("nan")), rehashed=False),
            ("NaN is not a number JSON allows",)),
    "not an object": (lambda d: (d / "manifest.json").write_text("[1, 2]"), ("the manifest must be an object",)),
    "not UTF-8": (lambda d: (d / "manifest.json").write_bytes(b"{\"format\": \"\xff\"}"), ("is not valid JSON",)),
    "not JSON": (lambda d: (d / "manifest.json").write_text("{'format': 1}"), ("is not valid JSON",)),
    "deeply nested": (_nested, ("nested more than 32 levels deep",)),
    "nested 500 deep": (lambda d: (d / "manifest.json").write_text("[" * 500 + "]" * 500),
                        ("nested more than 32 levels deep",)),
    "nested in a field": (lambda d: edit_json(d / "manifest.json", _set(("model", "config"), json.loads(
        "[" * 300 + "]" * 300)), rehashed=True), ("nested more than 32 levels deep",)),
    "gigabytes": (_huge, ("3221225472 bytes, more than",)),
    # issue 22, 7: '1e999' said 'Out of range float values are not JSON compliant', naming neither file nor field
    "1e999": (lambda d: _set_text(d / "manifest.json", '"strength": 1.0', '"strength": 1e999'),
              ("is not valid JSON (1e999 is out of the range of a float)",)),
    "-1e999 in a count": (lambda d: _set_text(d / "manifest.json", '"total": 36', '"total": -1e999'),
                          ("is not valid JSON (-1e999 is out of the range of a float)",)),
    "millions of values": (lambda d: (d / "manifest.json").write_text("[" + "[]," * 3_000_000 + "[]]"),
                           ("JSON values, more than the 2,097,152",)),
}


def _set_text(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (old, text[:400])
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_manifests_raise_value_error_saying_what_was_expected(copy: Path, case: str) -> None:
    damage, needles = MALFORMED[case]
    damage(copy)
    message = _raises(lambda: GeneratedDataset(copy), "manifest.json", *needles)
    if "must be" in message:
        assert "; got " in message and ("regenerate" in message or "vaeaug generate" in message)
    with no_hang():
        problems = verify_generated(copy)
    assert problems == [message]


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"variants_per_sample": 1_048_577}, r"variants_per_sample must be an integer in [0, 1048576]; got 1048577"),
    ({"variants_per_sample": 2**40}, r"variants_per_sample must be an integer in [0, 1048576]"),
    ({"shard_size": 2**41}, "shard_size must be None or an integer in [1, 1099511627776]"),
    ({"seed": 2**64}, "seed must be an integer in [0, 18446744073709551615]"),
    ({"shard_size": 1, "variants_per_sample": 6000}, "make 72,012 shards, more than the 65,536 a generated set can "
                                                     "have (its manifest lists each); pass a shard_size"),
], ids=["variants-1048577", "variants-2**40", "shard-size-2**41", "seed-2**64", "too-many-shards"])
def test_generate_refuses_what_its_reader_refuses_before_any_work(kwargs: dict[str, Any], needle: str,
                                                                   data_npz: Path, model: vaeaug.VAE,
                                                                   tmp_path: Path) -> None:
    """Issue 22, 6: --variants 1048577 wrote 89 MB of shards, then said the manifest was malformed (and to run the
    same command again); shard_size=2**41 the same; variants_per_sample=2**40 grew until the kernel killed it,
    leaving run.json. Every size the reader would refuse is refused before anything is written."""
    out = tmp_path / "g"
    kw = {"variants_per_sample": 2, "shard_size": SHARD, **kwargs}
    _raises(lambda: pregenerate(data_npz, model, out, progress=False, **kw), needle)
    assert not out.exists()


def test_one_shard_in_memory_is_bounded_whatever_the_arguments(tmp_path: Path) -> None:
    """A shard is made in memory: shard_size x the image size is bounded (256 MiB of float32), and the default
    shard size is lowered for large images instead of taking GBs."""
    from vaeaug.generated.writer import MAX_SHARD_BYTES

    big = vaeaug.VAE(vaeaug.VAEConfig(input_shape=(3, 256, 256), latent_dim=2, widths=(4,) * 5))
    x = np.zeros((2, 3, 256, 256), np.float32)
    most = MAX_SHARD_BYTES // (4 * 3 * 256 * 256)
    _raises(lambda: pregenerate(x, big, tmp_path / "a", variants_per_sample=200, shard_size=most + 1,
                                progress=False), f"more than the 256 MiB vaeaug allows; pass a shard_size "
                                                 f"(--shard-size) of at most {most}")
    assert not (tmp_path / "a").exists()
    r = pregenerate(x, big, tmp_path / "b", variants_per_sample=0, progress=False)  # the real images only
    assert r["manifest"]["arguments"]["shard_size"] == most == 341


def _nan_set(tmp_path: Path) -> Path:
    """A float set whose sample 1 holds a NaN (its shard's checksum not recomputed)."""
    x = np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32)
    out = tmp_path / "f"
    pregenerate(x, vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 8, 8))), out, variants_per_sample=1, progress=False)
    shard = out / "shard-00000-x.npy"
    blob = bytearray(shard.read_bytes())
    _, offset = npy_header(bytes(blob))
    blob[offset + 4 * 70:offset + 4 * 71] = np.float32(np.nan).tobytes()  # in sample 1 (64 values a sample)
    shard.write_bytes(bytes(blob))
    return out


def test_a_float_set_edited_to_hold_nan_is_refused_when_read(tmp_path: Path) -> None:
    """Issue 22: no accepted set yields a non-finite value. An edited shard fails its SHA-256 at opening; one whose
    checksum was recomputed in the manifest (a deliberate forgery) is refused when its NaN sample is read."""
    out = _nan_set(tmp_path)
    _raises(lambda: GeneratedDataset(out), "shard-00000-x.npy (shard 0 of", "is corrupt: its SHA-256 is",
            "the manifest says", f"vaeaug verify {out}")
    edit_json(out / "manifest.json", _set(("shards", 0, "files", "x", "sha256"),
                                          hashlib.sha256((out / "shard-00000-x.npy").read_bytes()).hexdigest()),
              rehashed=True)
    ds = GeneratedDataset(out)
    assert torch_isfinite(ds[0][0]) and torch_isfinite(ds[2][0])
    _raises(lambda: ds[1], "sample 1 (shard 0) holds NaN or infinite values", "regenerate the set")
    assert verify_generated(out) == ["shard 0: sample 1 holds NaN or infinite values, which vaeaug never writes (the "
                                     "shard was edited and its checksum recomputed); regenerate the set"]


def test_a_flipped_pixel_byte_is_refused_at_opening_without_verify(copy: Path) -> None:
    """Without verify=, a flipped pixel byte was read silently: opening now checks every image shard's SHA-256."""
    path = copy / "shard-00001-x.npy"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1  # the last pixel of the shard's last sample
    path.write_bytes(bytes(blob))
    _raises(lambda: GeneratedDataset(copy), "shard-00001-x.npy (shard 1 of", "is corrupt: its SHA-256 is",
            "the manifest says", f"vaeaug verify {copy}", "run the same vaeaug generate command again")


def torch_isfinite(t: Any) -> bool:
    return bool(np.isfinite(t.numpy()).all())


def test_a_changed_format_field_fails_verify_without_a_traceback(copy: Path) -> None:
    """Before: ``vaeaug verify`` raised KeyError('images') from the CLI."""
    edit_json(copy / "manifest.json", _set(("arguments", "format"), "imagefolder"))
    cli = subprocess.run([sys.executable, "-m", "vaeaug", "verify", str(copy)], capture_output=True, text=True,
                         timeout=120)
    assert cli.returncode == 1 and cli.stdout.startswith("FAILED") and "changed after it was written" in cli.stdout
    assert "Traceback" not in cli.stderr and "KeyError" not in cli.stderr


# ---------------------------------------------------------------------------------------------------
# 4. Special files: refused, never waited on or read without bound


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
@pytest.mark.parametrize("name", ["shard-00001-x.npy", "shard-00001-meta.npy", "manifest.json", "run.json",
                                  "shard-00001.json"])
def test_special_files_are_refused_not_waited_on(copy: Path, name: str, kind: str) -> None:
    path = copy / name
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    what = "FIFO" if kind == "fifo" else "character device"
    if name.startswith("shard-00001.json"):  # a shard's record is read by verify only
        with no_hang():
            assert len(GeneratedDataset(copy)) == 36
    else:
        _raises(lambda: GeneratedDataset(copy), what, name)
    with no_hang():
        problems = verify_generated(copy)
    assert len(problems) == 1 and what in problems[0] and name in problems[0]
    _raises(lambda: GeneratedDataset(copy, verify=True), what)


def test_resume_refuses_a_special_run_json(copy: Path, data_npz: Path, model: vaeaug.VAE) -> None:
    (copy / "run.json").unlink()
    os.mkfifo(copy / "run.json")
    _raises(lambda: _generate(data_npz, model, copy), "run.json", "FIFO")
    (copy / "run.json").unlink()
    (copy / "run.json").symlink_to("/dev/zero")
    _raises(lambda: _generate(data_npz, model, copy), "run.json", "character device")


# ---------------------------------------------------------------------------------------------------
# 5. A shard that is not an .npy says so


@pytest.mark.parametrize("blob", [b"\x89PNG\r\n\x1a\n" + b"\0" * 100, b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00.",
                                  b"", b"\x93NUMPY\x01\x00\xff\xff{", b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}    \n"],
                         ids=["png", "pickle", "empty", "cut", "bad-header"])
@pytest.mark.parametrize("name", ["shard-00003-x.npy", "shard-00003-meta.npy"])
def test_a_shard_that_is_not_npy_says_so(copy: Path, name: str, blob: bytes) -> None:
    (copy / name).write_bytes(blob)
    _raises(lambda: GeneratedDataset(copy), f"{name} (shard 3 of {copy}) is not a valid .npy file written by vaeaug",
            f"vaeaug verify {copy}", "run the same vaeaug generate command again")


# ---------------------------------------------------------------------------------------------------
# 6. Resuming stays byte-identical; a damaged shard record stops the run with advice


def test_resume_after_a_crash_is_byte_identical(base: Path, copy: Path, data_npz: Path, model: vaeaug.VAE) -> None:
    """What a kill leaves: no manifest, a shard without its record, a temporary file (tests/test_ondisk.py
    kills real runs with SIGKILL)."""
    (copy / "manifest.json").unlink()
    for f in copy.glob("shard-00002*"):
        f.unlink()
    (copy / "shard-00001.json").unlink()
    (copy / ".shard-00002-x.npy.job0of1.tmp").write_bytes(b"half")
    r = _generate(data_npz, model, copy)
    assert r["complete"] and r["written"] == 2 and _files(copy) == _files(base)
    (copy / "manifest.json").unlink()  # a record edited while the run was down
    edit_json(copy / "shard-00001.json", _set(("per_class",), {"x": 1}))
    _raises(lambda: _generate(data_npz, model, copy), "shard-00001.json", "delete shard 1's files")
    (copy / "shard-00001.json").write_text("[" * 100_000)
    _raises(lambda: _generate(data_npz, model, copy), "shard-00001.json", "nested more than 32 levels")
    for f in copy.glob("shard-00001*"):
        f.unlink()
    _generate(data_npz, model, copy)
    assert _files(copy) == _files(base)


def test_a_damaged_record_is_caught_by_the_manifest_check(copy: Path, data_npz: Path, model: vaeaug.VAE) -> None:
    (copy / "manifest.json").unlink()
    edit_json(copy / "shard-00000.json", _set(("real",), 99))
    _raises(lambda: _generate(data_npz, model, copy), "counts.real must be 12", "got 107")
    assert not (copy / "manifest.json").exists()


# ---------------------------------------------------------------------------------------------------
# Fuzz: random damage is a ValueError or reads back unchanged


_files_st = st.integers(0, 63)
_values = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False,
                    allow_infinity=False), st.text(max_size=12),
                    st.sampled_from([1.7976931348623157e308, -1.7e308, 1e39, 3.5e38, 5e-324, 2**64, 2**64 - 1, 2**40,
                                     2**40 + 1, 1 << 20, (1 << 20) + 1, 65537]),  # extremes and the format's limits
                    st.sampled_from(["../x", "/etc/passwd", "a/b", "shard-00000-x.npy", "uint8", "float64", "object",
                                     "shards", "imagefolder", "vaeaug-generated", "0" * 64]),
                    st.lists(st.integers(-2, 40), max_size=4), st.dictionaries(st.text(max_size=4), st.integers(0, 9),
                                                                               max_size=3))
_ops = st.one_of(
    st.tuples(st.just("flip"), _files_st, st.floats(0, 0.999), st.integers(1, 255)),
    st.tuples(st.just("truncate"), _files_st, st.floats(0, 0.999)),
    st.tuples(st.just("append"), _files_st, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("json"), st.sampled_from(["manifest.json", "run.json"]), st.integers(0, 400), _values,
              st.booleans(), st.booleans()),
    st.tuples(st.just("overflow"), st.sampled_from(["manifest.json", "run.json"]), st.integers(0, 200),
              st.sampled_from(["1e999", "-1e999", "1e308", "NaN", "Infinity", "9" * 5000])),
    st.tuples(st.just("header"), st.integers(0, 7), st.sampled_from(["descr", "shape", "fortran_order"]),
              st.sampled_from(["|u1", "|i1", "<u2", "<f8", "|O", ">u1", [("y", "<i8")], (10, 1, 8, 8), (10, 8, 1, 8),
                               (6, 1, 8, 8), (10,), (), (-1, 1, 8, 8), True, False, 0])),
)


@settings(**fuzz_settings(60), database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ops=st.lists(_ops, min_size=1, max_size=3))
def test_fuzz_damaged_sets_raise_value_error_or_read_back_unchanged(base: Path, original: list[Item],
                                                                     ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "set"
        shutil.copytree(base, folder)
        payload = mutate_set(folder, ops)
        for verify in (False, True):
            try:
                with no_hang(20):
                    ds = GeneratedDataset(folder, verify=verify, return_is_synthetic=True)
                    got = _items(ds)
            except ValueError as e:
                assert str(e) and "Traceback" not in str(e)
                continue
            assert ds.class_names == NAMES and ds.value_range == vaeaug.ValueRange(0.0, 255.0, "uint8")
            assert len(got) == len(original)
            assert not payload, f"a flipped pixel byte was read without an error after {ops} (verify={verify})"
            for i, (a, b) in enumerate(zip(got, original, strict=True)):
                assert a == b, f"item {i} differs after {ops} (verify={verify})"
