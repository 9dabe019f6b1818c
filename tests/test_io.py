"""Model files: exact round trips, and every malformed or hostile file is refused with a ValueError.

Hostile-file tests plant a pickle whose unpickling creates a marker file, check that
``pickle.load`` / ``torch.load`` really would create it (so the test can fail), then check that
``vaeaug.load`` refuses the file and the marker never appears.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import shutil
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import vaeaug
from vaeaug import VAE, VAEConfig, ValueRange
from vaeaug.model.vaefile import FORMAT_VERSION, _content_sha256, read_metadata

# --------------------------------------------------------------------------- fitted models


@pytest.fixture(scope="module")
def conv_model() -> VAE:
    return vaeaug.fit("digits", epochs=2, progress=False, device="cpu")


@pytest.fixture(scope="module")
def cond_model() -> VAE:
    return vaeaug.fit("digits", epochs=2, progress=False, conditional=True, device="cpu")


@pytest.fixture(scope="module")
def gauss_model() -> VAE:
    return vaeaug.fit("digits", epochs=2, progress=False, likelihood="gaussian", learn_std=True,
                      gaussian_std=0.2, device="cpu")


@pytest.fixture(scope="module")
def mlp_model() -> VAE:
    x = np.random.default_rng(0).random((200, 20)).astype("float32")
    return vaeaug.fit(x, epochs=2, progress=False, device="cpu")


@pytest.fixture(scope="module")
def saved(conv_model: VAE, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid model file; tests copy it before tampering."""
    return vaeaug.save(conv_model, tmp_path_factory.mktemp("saved") / "digits.vae")


def _copy(src: Path, tmp_path: Path, name: str = "m.vae") -> Path:
    dst = tmp_path / name
    shutil.copyfile(src, dst)
    return dst


def _split_file(path: Path) -> tuple[dict[str, Any], bytes]:
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def _write_file(path: Path, header: dict[str, Any], data: bytes) -> None:
    """Write a safetensors-framed file with a correct header length (padded to 8 like safetensors)."""
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def _rewrite(path: Path, edit: Callable[[dict[str, Any], bytes], bytes | None], *, rehash: bool = True) -> None:
    """Edit header and data; by default also recompute the checksum, as a deliberate tamperer
    would, so that the checks behind the checksum are exercised too."""
    header, data = _split_file(path)
    new_data = edit(header, data)
    data = data if new_data is None else new_data
    meta = header.get("__metadata__")
    if rehash and isinstance(meta, dict) and "sha256" in meta:
        entries = {k: v for k, v in header.items() if k != "__metadata__"}
        meta["sha256"] = _content_sha256(meta, entries, data)
    _write_file(path, header, data)


# --------------------------------------------------------------------------- round trips


def _assert_same_outputs(a: VAE, b: VAE, y: Any = None) -> None:
    shape = a.config.input_shape
    x = torch.rand((7, *shape), generator=torch.Generator().manual_seed(1))
    assert type(a.encoder) is type(b.encoder)
    assert a.state_dict().keys() == b.state_dict().keys()
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    with torch.no_grad():
        mu_a, lv_a = a.encode(x, y)
        mu_b, lv_b = b.encode(x, y)
        assert torch.equal(mu_a, mu_b) and torch.equal(lv_a, lv_b)
        z = torch.randn((7, a.config.latent_dim), generator=torch.Generator().manual_seed(2))
        assert torch.equal(a.decode(z, y), b.decode(z, y))
        assert torch.equal(a.reconstruct(x, y), b.reconstruct(x, y))
        fa = a(x, y, generator=torch.Generator().manual_seed(3))
        fb = b(x, y, generator=torch.Generator().manual_seed(3))
        for ta, tb in zip(fa, fb, strict=True):
            assert torch.equal(ta, tb)
        sa = a.sample(7, y, generator=torch.Generator().manual_seed(4))
        sb = b.sample(7, y, generator=torch.Generator().manual_seed(4))
        assert sa.shape == (7, *shape)
        assert torch.equal(sa, sb)
        # and the outputs are not trivially equal (a different seed gives other samples)
        sc = b.sample(7, y, generator=torch.Generator().manual_seed(5))
        assert not torch.equal(sa, sc)
        assert torch.equal(a.recon_nll(a.decode_logits(z, y), x.clamp(0, 1)),
                           b.recon_nll(b.decode_logits(z, y), x.clamp(0, 1)))


def _assert_same_description(a: VAE, b: VAE) -> None:
    assert b.config == a.config
    assert b.value_range == a.value_range
    assert b.class_names == a.class_names
    assert b.history == a.history
    assert len(b.history) == 2 and "val_loss" in b.history[0]
    assert not b.training
    assert b.device == torch.device("cpu")


def test_round_trip_unconditional_conv(conv_model: VAE, tmp_path: Path) -> None:
    p = vaeaug.save(conv_model, tmp_path / "conv.vae")
    assert p == tmp_path / "conv.vae" and p.is_file()
    loaded = vaeaug.load(p)
    assert isinstance(loaded, VAE) and loaded.config.is_image and not loaded.conditional
    _assert_same_description(conv_model, loaded)
    assert loaded.value_range == ValueRange(0.0, 16.0, "float64")
    assert loaded.class_names == [str(i) for i in range(10)]
    _assert_same_outputs(conv_model, loaded)


def test_round_trip_with_model_save_method_and_str_path(conv_model: VAE, tmp_path: Path) -> None:
    conv_model.save(str(tmp_path / "sub" / "dir" / "m.vae"))  # creates parent folders
    loaded = vaeaug.load(str(tmp_path / "sub" / "dir" / "m.vae"), device="cpu")
    _assert_same_outputs(conv_model, loaded)


def test_round_trip_conditional(cond_model: VAE, tmp_path: Path) -> None:
    assert cond_model.conditional and cond_model.config.num_classes == 10
    loaded = vaeaug.load(vaeaug.save(cond_model, tmp_path / "cond.vae"))
    assert loaded.conditional and loaded.config.num_classes == 10
    _assert_same_description(cond_model, loaded)
    labels = torch.arange(7) % 10
    _assert_same_outputs(cond_model, loaded, labels)
    # one class for all samples
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(cond_model.sample(5, 3, generator=g1), loaded.sample(5, 3, generator=g2))
    with pytest.raises(ValueError, match="needs labels"):
        loaded.sample(2)


def test_round_trip_gaussian_learned_std(gauss_model: VAE, tmp_path: Path) -> None:
    assert isinstance(gauss_model.log_std, torch.nn.Parameter)
    # the std was learned, so a round trip that re-initialised it would be caught
    assert float(gauss_model.log_std.detach()) != pytest.approx(math.log(0.2), abs=1e-6)
    loaded = vaeaug.load(vaeaug.save(gauss_model, tmp_path / "gauss.vae"))
    assert loaded.config.likelihood == "gaussian" and loaded.config.learn_std
    assert loaded.config.gaussian_std == 0.2
    assert isinstance(loaded.log_std, torch.nn.Parameter)
    assert torch.equal(loaded.log_std, gauss_model.log_std)
    _assert_same_description(gauss_model, loaded)
    _assert_same_outputs(gauss_model, loaded)


def test_round_trip_mlp_vectors(mlp_model: VAE, tmp_path: Path) -> None:
    assert not mlp_model.config.is_image and mlp_model.config.input_shape == (20,)
    loaded = vaeaug.load(vaeaug.save(mlp_model, tmp_path / "mlp.vae"))
    assert loaded.config.input_shape == (20,) and not loaded.config.is_image
    assert loaded.value_range == ValueRange(0.0, 1.0, "float32")
    assert loaded.class_names is None
    _assert_same_description(mlp_model, loaded)
    _assert_same_outputs(mlp_model, loaded)


def test_unfitted_model_round_trip_keeps_empty_history(tmp_path: Path) -> None:
    cfg = VAEConfig(input_shape=(3, 12, 10), latent_dim=5, num_classes=4)
    m = VAE(cfg, ValueRange(-1.0, 1.0, "float32"), ["a", "b", "c", "d"])
    loaded = vaeaug.load(vaeaug.save(m, tmp_path / "u.vae"))
    assert loaded.config == cfg and loaded.history == []
    assert loaded.value_range == ValueRange(-1.0, 1.0, "float32")
    assert loaded.class_names == ["a", "b", "c", "d"]
    _assert_same_outputs(m.eval(), loaded, torch.arange(7) % 4)


def test_a_tuning_record_with_nan_still_loads(tmp_path: Path) -> None:
    """tune() with one fold records a NaN standard deviation; json.dumps writes it as NaN. The model-file entries
    are read with NaN allowed (their fields are validated after), so such a file loads as it did before the JSON
    reading was bounded (issue 22, 4)."""
    import math

    model = VAE(VAEConfig(input_shape=(1, 8, 8)))
    model.tuning = {"gain_sd": math.nan, "t": math.inf}
    model.history = [{"epoch": 1, "val_loss": math.nan}]
    model.save(tmp_path / "m.vae")
    back = vaeaug.load(tmp_path / "m.vae")
    assert back.tuning is not None and math.isnan(back.tuning["gain_sd"]) and back.tuning["t"] == math.inf
    assert math.isnan(back.history[0]["val_loss"])


def test_read_metadata(saved: Path, conv_model: VAE) -> None:
    meta = read_metadata(saved)
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["vaeaug_version"] == vaeaug.__version__
    assert meta["config"] == conv_model.config
    assert meta["value_range"] == conv_model.value_range
    assert meta["class_names"] == conv_model.class_names
    assert meta["history"] == conv_model.history
    assert meta["file_size"] == saved.stat().st_size


def test_saved_file_is_plain_safetensors(saved: Path, conv_model: VAE) -> None:
    """Other tools can read the weights: the file is ordinary safetensors."""
    from safetensors import safe_open

    with safe_open(str(saved), framework="pt") as f:
        assert f.metadata()["format"] == "vaeaug-model"
        keys = set(f.keys())
        assert keys == set(conv_model.state_dict())
        for k in keys:
            assert torch.equal(f.get_tensor(k), conv_model.state_dict()[k])


# --------------------------------------------------------------------------- saving


def test_save_leaves_no_temp_files(conv_model: VAE, tmp_path: Path) -> None:
    vaeaug.save(conv_model, tmp_path / "a.vae")
    vaeaug.save(conv_model, tmp_path / "a.vae")  # overwrite in place
    vaeaug.save(conv_model, tmp_path / "b.vae")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.vae", "b.vae"]
    assert read_metadata(tmp_path / "a.vae")["config"] == read_metadata(tmp_path / "b.vae")["config"]


def test_failed_save_keeps_the_old_file_and_leaves_no_temp_file(
    conv_model: VAE, mlp_model: VAE, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = vaeaug.save(mlp_model, tmp_path / "m.vae")
    before = target.read_bytes()

    def boom(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        vaeaug.save(conv_model, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.vae"]


def test_saved_file_permissions_follow_the_umask(conv_model: VAE, tmp_path: Path) -> None:
    """Like open(..., "w"), torch.save or np.save: 0o666 minus the umask, not mkstemp's 0o600."""
    old = os.umask(0o022)
    try:
        p = vaeaug.save(conv_model, tmp_path / "perm.vae")
        reference = tmp_path / "reference.txt"
        reference.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(reference.stat().st_mode) == 0o644
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_save_onto_directory_fails_without_temp_files(conv_model: VAE, tmp_path: Path) -> None:
    (tmp_path / "d.vae").mkdir()
    with pytest.raises(OSError):
        vaeaug.save(conv_model, tmp_path / "d.vae")
    assert [p.name for p in tmp_path.iterdir()] == ["d.vae"]


# --------------------------------------------------------------------------- planted pickles


def _payload(marker: Path, source: Path) -> object:
    class Planted:
        def __reduce__(self) -> tuple[Any, ...]:
            # unpickling copies a file to the marker path: any code execution would show
            return (shutil.copyfile, (str(source), str(marker)))

    return Planted()


@pytest.fixture
def marker(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "source.txt"
    src.write_text("planted")
    return tmp_path / "PWNED", src


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_planted_pickle_is_refused_without_unpickling(
    protocol: int, tmp_path: Path, marker: tuple[Path, Path]
) -> None:
    mark, src = marker
    evil = tmp_path / "evil.vae"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": _payload(mark, src)}, f, protocol=protocol)

    # control: unpickling this file really does create the marker
    with open(evil, "rb") as f:
        pickle.load(f)
    assert mark.exists()
    mark.unlink()

    with pytest.raises(ValueError) as exc:
        vaeaug.load(evil)
    assert not mark.exists()
    msg = str(exc.value)
    assert "evil.vae" in msg
    if protocol >= 2:  # protocols 2+ start with the PROTO opcode, so the file is recognisably a pickle
        assert "pickle" in msg.lower() and "never unpickles" in msg
    else:
        assert "not a vaeaug model file" in msg
    with pytest.raises(ValueError):
        read_metadata(evil)
    assert not mark.exists()


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_planted_torch_save_is_refused_without_unpickling(
    zipfile: bool, tmp_path: Path, marker: tuple[Path, Path]
) -> None:
    mark, src = marker
    evil = tmp_path / "evil.pt"
    torch.save({"model": _payload(mark, src), "w": torch.ones(3)}, evil,
               _use_new_zipfile_serialization=zipfile)

    # control: torch.load without weights_only runs the payload
    torch.load(evil, weights_only=False)
    assert mark.exists()
    mark.unlink()

    with pytest.raises(ValueError) as exc:
        vaeaug.load(evil)
    assert not mark.exists()
    msg = str(exc.value)
    if zipfile:
        assert "torch.save" in msg and "zip" in msg
    else:
        assert "pickle" in msg.lower()
    assert "never unpickles" in msg


def test_torch_saved_state_dict_of_a_real_model_is_refused(conv_model: VAE, tmp_path: Path) -> None:
    p = tmp_path / "model.pt"
    torch.save(conv_model.state_dict(), p)
    with pytest.raises(ValueError, match="torch.save"):
        vaeaug.load(p)


# --------------------------------------------------------------------------- damaged files


@pytest.mark.parametrize("where", ["length", "header", "data", "data_end"])
def test_truncated_file(where: str, saved: Path, tmp_path: Path) -> None:
    blob = saved.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    cut = {"length": 5, "header": 8 + n // 2, "data": 8 + n + (len(blob) - 8 - n) // 2,
           "data_end": len(blob) - 1}[where]
    p = tmp_path / "cut.vae"
    p.write_bytes(blob[:cut])
    with pytest.raises(ValueError, match=r"truncated|not a vaeaug model file") as exc:
        vaeaug.load(p)
    assert "cut.vae" in str(exc.value)
    with pytest.raises(ValueError):
        read_metadata(p)


def test_truncated_right_after_the_length(saved: Path, tmp_path: Path) -> None:
    p = tmp_path / "cut.vae"
    p.write_bytes(saved.read_bytes()[:8])
    with pytest.raises(ValueError, match=r"truncated|not a vaeaug model file"):
        vaeaug.load(p)


def test_trailing_bytes_are_refused(saved: Path, tmp_path: Path) -> None:
    p = _copy(saved, tmp_path)
    with open(p, "ab") as f:
        f.write(b"\0" * 16)
    with pytest.raises(ValueError, match="trailing bytes"):
        vaeaug.load(p)


def test_rewriting_the_header_unchanged_still_loads(saved: Path, tmp_path: Path, conv_model: VAE) -> None:
    """Control for the tamper tests: the rewrite helper itself produces a loadable file."""
    p = _copy(saved, tmp_path)
    _rewrite(p, lambda h, d: None)
    _assert_same_outputs(conv_model, vaeaug.load(p))


def _edit_config(**changes: Any) -> Callable[[dict[str, Any], bytes], None]:
    def edit(header: dict[str, Any], data: bytes) -> None:
        cfg = json.loads(header["__metadata__"]["config"])
        cfg.update(changes)
        header["__metadata__"]["config"] = json.dumps(cfg)
    return edit


def test_tampered_latent_dim_is_refused(saved: Path, tmp_path: Path) -> None:
    p = _copy(saved, tmp_path)
    _rewrite(p, _edit_config(latent_dim=15))
    with pytest.raises(ValueError, match="does not match its config"):
        vaeaug.load(p)


def test_tampered_widths_are_refused(saved: Path, tmp_path: Path) -> None:
    p = _copy(saved, tmp_path)
    _rewrite(p, _edit_config(widths=[16]))
    with pytest.raises(ValueError, match="does not match its config"):
        vaeaug.load(p)


def test_tampered_num_classes_is_refused(saved: Path, tmp_path: Path) -> None:
    p = _copy(saved, tmp_path)
    _rewrite(p, _edit_config(num_classes=10))
    with pytest.raises(ValueError, match="does not match its config"):
        vaeaug.load(p)


@pytest.mark.parametrize("changes", [
    {"latent_dim": 0}, {"latent_dim": "16"}, {"input_shape": [2, 8, 8]}, {"likelihood": "poisson"},
    {"beta": -1.0}, {"evil": 1}, {"input_shape": None},
], ids=["latent0", "latent-str", "channels", "likelihood", "beta", "unknown-key", "no-shape"])
def test_invalid_config_is_refused(changes: dict[str, Any], saved: Path, tmp_path: Path) -> None:
    p = _copy(saved, tmp_path)
    _rewrite(p, _edit_config(**changes))
    with pytest.raises(ValueError, match="invalid model description|config"):
        vaeaug.load(p)
    with pytest.raises(ValueError):
        read_metadata(p)


@pytest.mark.parametrize("key,value,match", [
    ("config", "{not json", "not valid JSON .*expected a model file's 'config' entry"),
    ("value_range", json.dumps({"low": 1.0, "high": 0.0, "dtype": "float32"}), "invalid model description"),
    ("value_range", json.dumps({"low": 0.0, "high": 1.0, "dtype": "object"}), "invalid model description"),
    ("class_names", json.dumps([1, 2]), "class_names"),
    ("class_names", json.dumps("0123456789"), "class_names"),
    ("history", json.dumps({"epoch": 1}), "history"),
])
def test_invalid_metadata_entries_are_refused(key: str, value: str, match: str, saved: Path,
                                               tmp_path: Path) -> None:
    p = _copy(saved, tmp_path)

    def edit(header: dict[str, Any], data: bytes) -> None:
        header["__metadata__"][key] = value

    _rewrite(p, edit)
    with pytest.raises(ValueError, match=match):
        vaeaug.load(p)


@pytest.mark.parametrize("key", ["config", "value_range", "class_names", "history"])
def test_missing_metadata_entry_is_refused(key: str, saved: Path, tmp_path: Path) -> None:
    p = _copy(saved, tmp_path)
    _rewrite(p, lambda h, d: h["__metadata__"].pop(key) and None)
    with pytest.raises(ValueError, match=f"lacks the '{key}'"):
        vaeaug.load(p)


def test_broken_header_json_is_refused(saved: Path, tmp_path: Path) -> None:
    p = _copy(saved, tmp_path)
    blob = bytearray(p.read_bytes())
    (n,) = struct.unpack("<Q", blob[:8])
    i = blob.index(b'"', 8)  # first quote inside the header
    blob[i] = ord("'")  # same length, no longer JSON
    p.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="not valid JSON .*expected a model file header; the file is corrupt"):
        vaeaug.load(p)


def test_header_without_vaeaug_metadata_is_refused(saved: Path, tmp_path: Path) -> None:
    _, data = _split_file(saved)
    p = tmp_path / "m.vae"
    raw = b"{}"  # starts with "{" but is not what a header holds
    p.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    with pytest.raises(ValueError, match="without vaeaug metadata"):
        vaeaug.load(p)
    raw = b'{"a":1}'
    p.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    with pytest.raises(ValueError, match="without vaeaug metadata"):
        vaeaug.load(p)


def test_non_string_metadata_values_are_refused(saved: Path, tmp_path: Path) -> None:
    p = _copy(saved, tmp_path)

    def edit(header: dict[str, Any], data: bytes) -> None:
        header["__metadata__"]["config"] = json.loads(header["__metadata__"]["config"])

    _rewrite(p, edit)
    with pytest.raises(ValueError, match="tampered header"):
        vaeaug.load(p)


def test_bad_tensor_entry_is_refused(saved: Path, tmp_path: Path) -> None:
    p = _copy(saved, tmp_path)

    def edit(header: dict[str, Any], data: bytes) -> None:
        name = next(k for k in header if k != "__metadata__")
        header[name]["data_offsets"] = "0-10"

    _rewrite(p, edit)
    with pytest.raises(ValueError, match="tampered header"):
        vaeaug.load(p)


def test_swapped_tensor_shapes_are_refused(saved: Path, tmp_path: Path) -> None:
    """The header lies about a shape (same byte count), with the checksum still valid."""
    p = _copy(saved, tmp_path)

    def edit(header: dict[str, Any], data: bytes) -> None:
        name = next(k for k, v in header.items() if k != "__metadata__" and len(v["shape"]) == 2
                    and v["shape"][0] != v["shape"][1])
        header[name]["shape"] = header[name]["shape"][::-1]

    _rewrite(p, edit)
    with pytest.raises(ValueError, match="does not match its config"):
        vaeaug.load(p)


def test_flipped_data_byte_fails_the_checksum(saved: Path, tmp_path: Path) -> None:
    p = _copy(saved, tmp_path)
    blob = bytearray(p.read_bytes())
    (n,) = struct.unpack("<Q", blob[:8])
    i = 8 + n + (len(blob) - 8 - n) // 3
    blob[i] ^= 0x01
    p.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="checksum"):
        vaeaug.load(p)
    with pytest.raises(ValueError, match="checksum"):
        read_metadata(p)


def test_flipped_last_data_byte_fails_the_checksum(saved: Path, tmp_path: Path) -> None:
    p = _copy(saved, tmp_path)
    blob = bytearray(p.read_bytes())
    blob[-1] ^= 0x80
    p.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="checksum"):
        vaeaug.load(p)


def test_non_finite_weights_are_refused_even_with_a_valid_checksum(saved: Path, tmp_path: Path) -> None:
    p = _copy(saved, tmp_path)

    def edit(header: dict[str, Any], data: bytes) -> bytes:
        name = next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32")
        lo = header[name]["data_offsets"][0]
        nan = struct.pack("<f", float("nan"))
        return data[:lo] + nan + data[lo + 4:]

    _rewrite(p, edit)
    with pytest.raises(ValueError, match="non-finite"):
        vaeaug.load(p)


@pytest.mark.parametrize("version", ["99", str(FORMAT_VERSION + 1)])
def test_newer_format_version_asks_for_an_upgrade(version: str, saved: Path, tmp_path: Path) -> None:
    p = _copy(saved, tmp_path)

    def edit(header: dict[str, Any], data: bytes) -> None:
        header["__metadata__"]["format_version"] = version

    _rewrite(p, edit)
    with pytest.raises(ValueError, match="upgrade") as exc:
        vaeaug.load(p)
    assert f"format version {version}" in str(exc.value)
    with pytest.raises(ValueError, match="upgrade"):
        read_metadata(p)


@pytest.mark.parametrize("version", ["0", "-1", "one", "1.5", ""])
def test_invalid_format_version_is_refused(version: str, saved: Path, tmp_path: Path) -> None:
    p = _copy(saved, tmp_path)

    def edit(header: dict[str, Any], data: bytes) -> None:
        header["__metadata__"]["format_version"] = version

    _rewrite(p, edit)
    with pytest.raises(ValueError, match="format_version"):
        vaeaug.load(p)


def test_other_format_name_is_refused(saved: Path, tmp_path: Path) -> None:
    p = _copy(saved, tmp_path)

    def edit(header: dict[str, Any], data: bytes) -> None:
        header["__metadata__"]["format"] = "someone-else"

    _rewrite(p, edit)
    with pytest.raises(ValueError, match="without vaeaug metadata"):
        vaeaug.load(p)


def test_plain_safetensors_file_is_refused(conv_model: VAE, tmp_path: Path) -> None:
    p = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in conv_model.state_dict().items()}, str(p))
    with pytest.raises(ValueError, match="safetensors file without vaeaug metadata"):
        vaeaug.load(p)
    q = tmp_path / "weights_meta.safetensors"
    save_file({"w": torch.ones(2)}, str(q), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="without vaeaug metadata"):
        vaeaug.load(q)


# --------------------------------------------------------------------------- not model files


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.vae"
    p.write_bytes(b"")
    with pytest.raises(ValueError, match=r"not a vaeaug model file.*0 bytes"):
        vaeaug.load(p)


@pytest.mark.parametrize("text", ["hello, this is a text file and not a model\n", "{\"a\": 1}\n",
                                  "x" * 3, "\x00" * 64])
def test_text_and_junk_files(text: str, tmp_path: Path) -> None:
    p = tmp_path / "notes.vae"
    p.write_text(text)
    with pytest.raises(ValueError, match=r"not a vaeaug model file|truncated|corrupt"):
        vaeaug.load(p)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a directory"):
        vaeaug.load(tmp_path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such model file"):
        vaeaug.load(tmp_path / "nope.vae")
    with pytest.raises(FileNotFoundError):
        read_metadata(tmp_path / "nope.vae")


@pytest.mark.parametrize("key,value", [("config", None), ("value_range", '{"low": 0.0, "high": 1.0, "dtype": "uint8"}'),
                                       ("history", "[]"), ("class_names", '["a"]')])
def test_header_edits_without_a_matching_checksum_are_refused(key: str, value: str | None, saved: Path,
                                                              tmp_path: Path) -> None:
    """An edit that keeps the model loadable (another beta, another value range) is still caught."""
    p = _copy(saved, tmp_path)

    def edit(header: dict[str, Any], data: bytes) -> None:
        if key == "config":
            cfg = json.loads(header["__metadata__"]["config"])
            cfg["beta"] = 4.0
            header["__metadata__"]["config"] = json.dumps(cfg)
        else:
            header["__metadata__"][key] = value

    _rewrite(p, edit, rehash=False)
    with pytest.raises(ValueError, match="checksum"):
        vaeaug.load(p)
    q = _copy(saved, tmp_path, "rehashed.vae")
    _rewrite(q, edit)  # with the checksum recomputed the (valid) edit loads: the check above is the checksum's
    vaeaug.load(q)


def test_saving_the_same_model_twice_gives_identical_bytes(conv_model: VAE, tmp_path: Path) -> None:
    a = vaeaug.save(conv_model, tmp_path / "a.vae").read_bytes()
    b = vaeaug.save(vaeaug.load(tmp_path / "a.vae"), tmp_path / "b.vae").read_bytes()
    assert a == b
    assert hashlib.sha256(a).hexdigest() == hashlib.sha256(b).hexdigest()
