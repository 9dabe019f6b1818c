"""Generated sets in the WebDataset layout (``format="webdataset"``): read back by the real ``webdataset`` and
``datasets`` packages byte for byte against the ``shards`` output of the same run, the same tar bytes however
the work is split or interrupted (a real ``vaeaug generate`` killed and resumed), and verification that
catches damage and refuses links, ``..`` and surplus members before anything is read from them."""

from __future__ import annotations

import glob
import io
import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import vaeaug
from vaeaug import GeneratedDataset, pregenerate, verify_generated
from vaeaug.cli import main
from vaeaug.files import sha256_bytes
from vaeaug.generated.format import manifest_sha256
from vaeaug.generated.tars import tar_bytes

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from _helpers import digits_uint8, make_special, time_limit  # noqa: E402

N = 600  # source images: 1800 samples with the real one and 2 variants each
SHARD = 100  # 18 shards: room to kill a run between them
ARGS: dict[str, Any] = {"variants_per_sample": 2, "shard_size": SHARD, "seed": 7, "progress": False}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("webdataset")


@pytest.fixture(scope="module")
def data_npz(work: Path) -> Path:
    """The first 600 digits as uint8 0..255 with labels and class names."""
    x, y = digits_uint8()
    path = work / "digits_u8.npz"
    np.savez(path, x=x[:N], y=y[:N], class_names=np.array([f"digit {c}" for c in range(10)]))
    return path


@pytest.fixture(scope="module")
def model_path(work: Path, data_npz: Path) -> Path:
    x, y = digits_uint8()
    vaeaug.fit(x[:N], y[:N], epochs=1, progress=False).save(work / "m.vae")
    return work / "m.vae"


@pytest.fixture(scope="module")
def shards(work: Path, data_npz: Path, model_path: Path) -> Path:
    """The same run in the ``shards`` format: what every reading is compared with."""
    pregenerate(data_npz, model_path, work / "shards", **ARGS)
    return work / "shards"


@pytest.fixture(scope="module")
def png_set(work: Path, data_npz: Path, model_path: Path) -> Path:
    """The same run as tars; uint8 data of one channel: PNG payloads (chosen by dtype)."""
    r = pregenerate(data_npz, model_path, work / "png", format="webdataset", **ARGS)
    assert r["complete"] and r["manifest"]["arguments"]["payload"] == "png"
    return work / "png"


@pytest.fixture(scope="module")
def npy_set(work: Path, data_npz: Path, model_path: Path) -> Path:
    r = pregenerate(data_npz, model_path, work / "npy", format="webdataset", payload="npy", **ARGS)
    assert r["complete"] and r["manifest"]["arguments"]["payload"] == "npy"
    return work / "npy"


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _urls(out: Path) -> str:
    """The set's tars as one brace-expanded URL, as a job array's output is addressed."""
    last = len(list(out.glob("shard-*.tar"))) - 1
    return str(out / f"shard-{{00000..{last:05d}}}.tar")


def _reference(shards: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ds = GeneratedDataset(shards)
    return np.stack([ds[i][0].numpy() for i in range(len(ds))]), ds.targets, ds.is_synthetic


def test_the_webdataset_package_reads_the_shards_samples_byte_for_byte(shards: Path, png_set: Path,
                                                                      npy_set: Path) -> None:
    import webdataset as wds

    x, y, synthetic = _reference(shards)
    assert len(x) == 3 * N and x.dtype == np.uint8
    names = [p.name for p in sorted(png_set.iterdir())]
    assert [n for n in names if n.endswith(".tar")] == [f"shard-{m:05d}.tar" for m in range(3 * N // SHARD)]
    assert not [n for n in names if n.endswith(".npy")]
    for out, decode in ((png_set, "l8"), (npy_set, None)):
        pipeline = wds.WebDataset(_urls(out), shardshuffle=False)
        samples = list(pipeline.decode(decode) if decode else pipeline.decode())
        assert [s["__key__"] for s in samples] == [f"{i:08d}" for i in range(3 * N)]
        images = np.stack([s["png"][None] if decode else s["npy"] for s in samples])  # (H, W) gray -> (1, H, W)
        assert images.dtype == np.uint8 and np.array_equal(images, x), out.name
        assert [s["cls"] for s in samples] == y.tolist()
        records = [s["json"] for s in samples]
        assert [r["synthetic"] for r in records] == synthetic.tolist()
        assert records[4] == {"index": 4, "source": 1, "variant": 0, "synthetic": True, "label": int(y[4]),
                              "class_name": f"digit {y[4]}"}
    with tarfile.open(png_set / "shard-00001.tar") as tar:  # fixed header fields, fixed member order
        members = tar.getmembers()
    assert [m.name for m in members[:3]] == ["00000100.png", "00000100.cls", "00000100.json"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode, m.type) for m in members} == {
        (0, 0, 0, "", "", 0o644, tarfile.REGTYPE)}
    assert len(members) == 3 * SHARD and tar_bytes([]) == bytes(10240)


def test_tar_bytes_are_what_tarfile_writes_with_every_field_fixed() -> None:
    """vaeaug writes the ustar headers itself (tarfile takes 30 us a member); the bytes are tarfile's."""
    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 7, 20, 21):
        members = [(f"{i:08d}.{ext}", rng.bytes(int(rng.integers(0, 3000)))) for i in range(n)
                   for ext in ("png", "cls")]
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, blob in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = (
                    len(blob), 0, 0o644, 0, 0, "", "")
                tar.addfile(info, io.BytesIO(blob))
        assert tar_bytes(members) == buf.getvalue(), n


def test_generated_dataset_reads_a_webdataset_set(shards: Path, png_set: Path, npy_set: Path) -> None:
    import pickle

    x, y, synthetic = _reference(shards)
    for out in (png_set, npy_set):
        ds = GeneratedDataset(out, verify=True, return_is_synthetic=True)
        assert len(ds) == 3 * N and np.array_equal(ds.targets, y) and np.array_equal(ds.is_synthetic, synthetic)
        got = np.stack([ds[i][0].numpy() for i in range(len(ds))])
        assert got.dtype == np.uint8 and np.array_equal(got, x)
        assert ds[5][1:] == (int(y[5]), True) and ds[-1][0].shape == (1, 8, 8)
        copy = pickle.loads(pickle.dumps(ds))  # what a spawned DataLoader worker gets: no open file
        assert torch.equal(copy[7][0], ds[7][0])
    assert verify_generated(png_set) == [] and verify_generated(npy_set) == []


def test_datasets_load_dataset_reads_the_shards_samples_byte_for_byte(shards: Path, png_set: Path, npy_set: Path,
                                                                     work: Path) -> None:
    datasets = pytest.importorskip("datasets")
    x, y, _ = _reference(shards)
    for out, column in ((png_set, "png"), (npy_set, "npy")):
        ds = datasets.load_dataset("webdataset", data_files={"train": sorted(glob.glob(str(out / "*.tar")))},
                                   split="train", cache_dir=str(work / "hf-cache"))
        assert len(ds) == 3 * N and ds["cls"] == y.tolist()
        images = np.stack([np.asarray(row[column], dtype=np.uint8).reshape(1, 8, 8) for row in ds])
        assert np.array_equal(images, x), out.name
        assert ds[4]["json"]["class_name"] == f"digit {y[4]}" and ds[4]["__key__"] == "00000004"


def test_float_and_rgb_data_and_the_payload_rule(work: Path, model_path: Path) -> None:
    """Float data gets .npy payloads (any dtype, exact); RGB uint8 gets RGB PNGs; png where it is not exact is
    refused, and so is a payload for another format."""
    import webdataset as wds

    x, y = digits_uint8()
    floats = x[:200].astype(np.float32) / 255.0
    for fmt in ("shards", "webdataset"):
        pregenerate(floats, model_path, work / f"f-{fmt}", y=y[:200], format=fmt, **ARGS)
    assert json.loads((work / "f-webdataset" / "manifest.json").read_text())["arguments"]["payload"] == "npy"
    ref, got = GeneratedDataset(work / "f-shards"), GeneratedDataset(work / "f-webdataset")
    assert all(torch.equal(ref[i][0], got[i][0]) and ref[i][0].dtype == torch.float32 for i in range(len(ref)))
    sample = next(iter(wds.WebDataset(_urls(work / "f-webdataset"), shardshuffle=False)))
    arr = np.load(io.BytesIO(sample["npy"]), allow_pickle=False)
    assert arr.dtype == np.float32 and np.array_equal(arr, ref[0][0].numpy())

    rgb = np.stack([x[:100], 255 - x[:100], x[:100] // 2], axis=1)  # (N, 3, 8, 8) uint8
    model = vaeaug.VAE(vaeaug.VAEConfig(input_shape=(3, 8, 8)), value_range=vaeaug.ValueRange(0, 255, "uint8"))
    pregenerate(rgb, model, work / "rgb-shards", **ARGS)
    pregenerate(rgb, model, work / "rgb", format="webdataset", **ARGS)
    ref = GeneratedDataset(work / "rgb-shards")
    decoded = list(wds.WebDataset(_urls(work / "rgb"), shardshuffle=False).decode("rgb8"))
    assert all(np.array_equal(s["png"].transpose(2, 0, 1), ref[i][0].numpy()) for i, s in enumerate(decoded))
    assert torch.equal(GeneratedDataset(work / "rgb")[5][0], ref[5][0])

    with pytest.raises(ValueError, match=r"payload 'png' stores 8-bit images.*float32.*payload='npy'"):
        pregenerate(floats, model_path, work / "no1", y=y[:200], format="webdataset", payload="png", **ARGS)
    with pytest.raises(ValueError, match=r"payload='npy' chooses the image member of format 'webdataset'"):
        pregenerate(floats, model_path, work / "no2", y=y[:200], payload="npy", **ARGS)
    with pytest.raises(ValueError, match=r"payload must be one of \['png', 'npy'\]"):
        pregenerate(floats, model_path, work / "no3", y=y[:200], format="webdataset", payload="jpg", **ARGS)
    assert not any((work / f"no{i}").exists() for i in (1, 2, 3))


def test_two_jobs_and_two_workers_write_the_same_tar_bytes(png_set: Path, data_npz: Path, model_path: Path,
                                                          work: Path) -> None:
    want = _files(png_set)
    out = work / "two-jobs"
    results = [pregenerate(data_npz, model_path, out, format="webdataset", num_shards=2, shard_index=i, **ARGS)
               for i in (1, 0)]
    assert [r["complete"] for r in results] == [False, True]
    assert _files(out) == want
    r = pregenerate(data_npz, model_path, work / "two-workers", format="webdataset", workers=2, **ARGS)
    assert r["complete"] and _files(work / "two-workers") == want


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vaeaug", *args]


def _generate(data: Path, model: Path, out: Path) -> list[str]:
    return _cli("generate", "--model", str(model), "--data", str(data), "--out", str(out), "--format", "webdataset",
                "--variants", "2", "--shard-size", str(SHARD), "--seed", "7", "--no-progress")


def test_cli_killed_mid_run_resumes_to_identical_bytes_and_verifies(png_set: Path, data_npz: Path,
                                                                   model_path: Path, work: Path) -> None:
    want = _files(png_set)
    rng = random.Random(0)
    killed = 0
    for trial, wait_for in enumerate((1, 9)):
        out = work / f"killed{trial}"
        proc = subprocess.Popen(_generate(data_npz, model_path, out), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and len(list(out.glob("shard-*.json"))) >= wait_for:
                break
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.01))  # land the kill somewhere inside the next shard (about 15 ms each)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed += proc.returncode == -signal.SIGKILL and not (out / "manifest.json").exists()
        resumed = subprocess.run(_generate(data_npz, model_path, out), capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        assert _files(out) == want, f"trial {trial}: the resumed set differs from the uninterrupted one"
    assert killed >= 1, "no kill landed before the set was complete"
    ok = subprocess.run(_cli("verify", str(out)), capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and ok.stdout.startswith("OK") and ok.stdout.count("\n") == 1, ok.stdout + ok.stderr


def test_cli_bad_option_values_are_one_line_errors(data_npz: Path, model_path: Path, work: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    bad = subprocess.run(_generate(data_npz, model_path, work / "bad") + ["--payload", "gif"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert "--payload: invalid choice: 'gif'" in bad.stderr
    floats = work / "floats.npz"
    x, y = digits_uint8()
    np.savez(floats, x=x[:50].astype(np.float32) / 255.0, y=y[:50])
    argv = _generate(floats, model_path, work / "bad")[3:] + ["--payload", "png"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vaeaug generate: error: payload 'png' stores 8-bit images")
    assert "--payload npy" in err and not (work / "bad").exists()


# ------------------------------------------------------------------------------------------- damage and forgery


def _copy(png_set: Path, work: Path, name: str) -> Path:
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(png_set, out)
    return out


def _forge(out: Path, m: int, edit: Callable[[list[tuple[tarfile.TarInfo, bytes]]], None]) -> None:
    """Rewrite tar ``m`` with ``edit`` applied to its members (ustar, by tarfile) and record the new bytes in the
    manifest as a forger would (new size, SHA-256 and manifest_sha256): only the parser stands in the way."""
    path = out / f"shard-{m:05d}.tar"
    with tarfile.open(path) as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar.getmembers()]  # type: ignore[union-attr]
    edit(members)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, blob in members:
            tar.addfile(info, io.BytesIO(blob) if info.isreg() else None)
    path.write_bytes(buf.getvalue())
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["shards"][m]["files"]["tar"]
    entry["bytes"], entry["sha256"] = len(buf.getvalue()), sha256_bytes(buf.getvalue())
    manifest["manifest_sha256"] = manifest_sha256(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _member(name: str, blob: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple[tarfile.TarInfo,
                                                                                                  bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(blob) if kind == tarfile.REGTYPE else 0, link
    return info, blob


def test_verify_catches_a_flipped_byte_a_truncated_tar_and_an_extra_member(png_set: Path, work: Path) -> None:
    out = _copy(png_set, work, "damaged")
    tar = out / "shard-00002.tar"
    good = tar.read_bytes()
    tar.write_bytes(good[:700] + bytes([good[700] ^ 1]) + good[701:])
    assert verify_generated(out)[0].startswith("shard 2: shard-00002.tar is corrupt (SHA-256 differs")
    with pytest.raises(ValueError, match="shard-00002.tar is corrupt"):
        GeneratedDataset(out)
    tar.write_bytes(good[:-1024])
    assert verify_generated(out)[0].startswith(f"shard 2: shard-00002.tar is corrupt ({len(good) - 1024} bytes")
    tar.unlink()
    make_special(tar, "fifo")  # never waited on
    with time_limit(20):
        assert "is a FIFO (named pipe), not a generated-set shard (.tar)" in verify_generated(out)[0]
    tar.unlink()
    tar.write_bytes(good)
    assert verify_generated(out) == []

    _forge(out, 2, lambda ms: ms.append(_member("00000300.png", b"\x89PNG")))  # a sample too many
    problems = verify_generated(out)
    assert len(problems) == 1 and "more members (or other data) after the manifest's 100 samples" in problems[0]
    tar.write_bytes(good)
    _forge(out, 2, lambda ms: ms.insert(3, _member("00000200.txt", b"hi")))  # one more inside
    assert "member '00000200.txt' where 00000201.png should be" in verify_generated(out)[0]
    tar.write_bytes(good)
    _forge(out, 2, lambda ms: ms.__delitem__(slice(3, 6)))  # a sample less: members shift
    assert "member '00000202.png' where 00000201.png should be" in verify_generated(out)[0]
    cli = subprocess.run(_cli("verify", str(out)), capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1 and cli.stdout.startswith("FAILED") and cli.stdout.count("\n") == 1
    assert "Traceback" not in cli.stderr


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "device", "fifo", "dotdot", "absolute", "too-large",
                                  "bad-label", "edited-record"])
def test_links_devices_dotdot_and_oversized_members_are_refused(png_set: Path, work: Path, kind: str) -> None:
    members = {  # what replaces member 4 of shard 0 (sample 1's .cls)
        "symlink": (_member("00000001.cls", kind=tarfile.SYMTYPE, link="/etc/passwd"), "is a symbolic link"),
        "hardlink": (_member("00000001.cls", kind=tarfile.LNKTYPE, link="00000000.cls"), "is a hard link"),
        "device": (_member("00000001.cls", kind=tarfile.CHRTYPE), "is a character device"),
        "fifo": (_member("00000001.cls", kind=tarfile.FIFOTYPE), "is a FIFO"),
        "dotdot": (_member("../00000001.cls", b"1"), "has an absolute path or '..'"),
        "absolute": (_member("/tmp/00000001.cls", b"1"), "has an absolute path or '..'"),
        "too-large": (_member("00000001.cls", b"1" * 100_000), "of 100000 bytes, more than the 18"),
        "bad-label": (_member("00000001.cls", b"01"), "not a label as vaeaug writes it"),
        "edited-record": (None, "00000001.json that is not the record the layout implies"),
    }
    member, expected = members[kind]
    out = _copy(png_set, work, f"forged-{kind}")

    def edit(ms: list[tuple[tarfile.TarInfo, bytes]]) -> None:
        if member is None:  # a record that names another source, the checksum recomputed
            info, blob = ms[5]
            assert b'"source":0' in blob
            ms[5] = (info, blob.replace(b'"source":0', b'"source":5'))
        else:
            ms[4] = member

    _forge(out, 0, edit)
    problems = verify_generated(out)
    assert len(problems) == 1 and problems[0].startswith("shard 0: shard-00000.tar (shard 0 of") and \
        expected in problems[0], problems
    with pytest.raises(ValueError, match="failed verification") as e:
        GeneratedDataset(out)
    assert expected in str(e.value)
    assert not (out / "etc").exists() and not (work / "00000001.cls").exists()  # nothing was extracted


def test_a_forged_nan_in_a_float_tar_is_refused_when_read_and_by_verify(work: Path, model_path: Path) -> None:
    """A float set's tar rewritten with a NaN in sample 1 and its checksum recomputed: opening passes (the bytes
    match the manifest), reading sample 1 and ``verify`` both refuse it, naming the sample."""
    x, y = digits_uint8()
    out = work / "f-nan"
    shutil.rmtree(out, ignore_errors=True)
    pregenerate(x[:20].astype(np.float32) / 255.0, model_path, out, y=y[:20], format="webdataset", **ARGS)
    assert verify_generated(out) == []

    def poison(members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
        k, (info, blob) = next((k, m) for k, m in enumerate(members) if m[0].name == "00000001.npy")
        arr = np.load(io.BytesIO(blob), allow_pickle=False)
        arr[0, 2, 3] = np.nan
        buf = io.BytesIO()
        np.save(buf, arr)
        assert len(buf.getvalue()) == len(blob)
        members[k] = (info, buf.getvalue())

    _forge(out, 0, poison)
    ds = GeneratedDataset(out)
    assert np.isfinite(ds[0][0].numpy()).all() and np.isfinite(ds[2][0].numpy()).all()
    with pytest.raises(ValueError, match=r"sample 1 \(shard 0\) holds NaN or infinite values"):
        ds[1]
    problem = ("shard 0: sample 1 holds NaN or infinite values, which vaeaug never writes (the shard was edited and "
               "its checksum recomputed); regenerate the set")
    assert verify_generated(out) == [problem]
    with pytest.raises(ValueError, match=re.escape(problem)):
        GeneratedDataset(out, verify=True)


def test_a_tar_swapped_after_opening_is_refused_by_a_reopened_copy(png_set: Path, work: Path) -> None:
    """A pickled copy (what a spawn or forkserver DataLoader worker gets) reopens the tars: one replaced since the
    set was opened, with the same size and a flipped byte, is refused, not read."""
    out = _copy(png_set, work, "swapped")
    ds = GeneratedDataset(out)
    blob = pickle.dumps(ds)
    tar = out / "shard-00000.tar"
    good = tar.read_bytes()
    at = int(ds._tars.indexes[0].offsets[0]) + 60  # inside sample 0's PNG
    (out / "new.tar").write_bytes(good[:at] + bytes([good[at] ^ 1]) + good[at + 1:])
    os.replace(out / "new.tar", tar)
    with pytest.raises(ValueError, match="shard-00000.tar changed after the set was opened"):
        pickle.loads(blob)[0]
