"""Pre-generated sets on disk: kill -9 and resume, identical bytes however the work is split, torch vs
ONNX, refusals, verification, image folders, memory-mapped reading, write failures."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import vaeaug
from vaeaug import GeneratedDataset, pregenerate, verify_generated

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from _helpers import digits_uint8  # noqa: E402

SHARD = 300  # small shards: many kill points, several shards per job


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ondisk")


@pytest.fixture(scope="module")
def data_npz(work: Path) -> Path:
    """Digits as uint8 0..255 with labels: 1437 images, so variants are uint8 like the input."""
    x, y = digits_uint8()
    path = work / "digits_u8.npz"
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="module")
def model_path(work: Path, data_npz: Path) -> Path:
    x, y = digits_uint8()
    model = vaeaug.fit(x, y, epochs=2, progress=False, conditional=True)
    model.save(work / "m.vae")
    return work / "m.vae"


@pytest.fixture(scope="module")
def reference(work: Path, data_npz: Path, model_path: Path) -> Path:
    """The uninterrupted run everything else is compared with."""
    out = work / "ref"
    pregenerate(data_npz, model_path, out, variants_per_sample=2, shard_size=SHARD, seed=7, progress=False)
    return out


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _generate_cmd(data: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vaeaug", "generate", "--model", str(model), "--data", str(data), "--out", str(out),
            "--variants", "2", "--shard-size", str(SHARD), "--seed", "7", "--no-progress", *extra]


def test_the_reference_set_is_complete_and_readable(reference: Path) -> None:
    manifest = json.loads((reference / "manifest.json").read_text())
    x, y = digits_uint8()
    assert manifest["counts"]["total"] == 3 * len(x) and manifest["counts"]["real"] == len(x)
    assert sum(manifest["counts"]["per_class"].values()) == 3 * len(x)
    assert manifest["counts"]["per_class"]["3"] == 3 * int((y == 3).sum())
    assert manifest["model"]["backend"] == "torch" and len(manifest["shards"]) == -(-3 * len(x) // SHARD)
    ds = GeneratedDataset(reference, return_is_synthetic=True)
    assert len(ds) == 3 * len(x)
    img, label, synthetic = ds[3 * 10]  # slot 0 of source 10: the real sample, unchanged
    assert img.dtype == torch.uint8 and img.shape == (1, 8, 8) and not synthetic
    assert torch.equal(img[0], torch.from_numpy(x[10])) and label == int(y[10])
    img, label, synthetic = ds[3 * 10 + 2]  # its variant 1 keeps its label
    assert synthetic and label == int(y[10]) and not torch.equal(img[0], torch.from_numpy(x[10]))
    assert ds[-1][0].shape == (1, 8, 8)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_kill_9_at_random_points_then_resume_is_byte_identical(reference: Path, data_npz: Path, model_path: Path,
                                                               work: Path) -> None:
    want = _files(reference)
    rng = random.Random(0)
    total_shards = sum(1 for name in want if name.endswith("-x.npy"))
    unfinished = 0
    for trial, wait_for in enumerate([0, rng.randint(1, 3), rng.randint(4, total_shards // 2), total_shards - 3]):
        out = work / f"killed{trial}"
        proc = subprocess.Popen(_generate_cmd(data_npz, model_path, out), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            done = len(list(out.glob("shard-*.json"))) if out.exists() else 0
            if done >= wait_for and (wait_for > 0 or out.exists()):
                break
            time.sleep(0.005)
        if wait_for:  # land the kill somewhere inside the next shard (a shard takes tens of ms here)
            time.sleep(rng.uniform(0.0, 0.02))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
        unfinished += not (out / "manifest.json").exists()
        resumed = subprocess.run(_generate_cmd(data_npz, model_path, out), capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        assert _files(out) == want, f"trial {trial}: the resumed set differs from the uninterrupted one"
    assert unfinished >= 3, "most kills must land before the set is complete"


def test_split_jobs_and_workers_give_identical_bytes(reference: Path, data_npz: Path, model_path: Path,
                                                    work: Path) -> None:
    want = _files(reference)
    out = work / "three_jobs"
    results = [pregenerate(data_npz, model_path, out, variants_per_sample=2, shard_size=SHARD, seed=7,
                           num_shards=3, shard_index=i, progress=False) for i in (2, 0, 1)]
    assert [r["complete"] for r in results] == [False, False, True], "only the last job completes the set"
    assert _files(out) == want
    out = work / "two_workers"
    r = pregenerate(data_npz, model_path, out, variants_per_sample=2, shard_size=SHARD, seed=7, workers=2,
                    progress=False)
    assert r["complete"] and _files(out) == want
    out = work / "cli_jobs"  # two jobs started at the same moment, as a job array does
    procs = [subprocess.Popen(_generate_cmd(data_npz, model_path, out, "--num-shards", "2", "--shard-index", str(i)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (1, 0)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert _files(out) == want


def test_each_source_is_encoded_once_a_shard_and_rows_do_not_depend_on_the_split(
        reference: Path, data_npz: Path, model_path: Path, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Encode once, decode once per variant: every stage on fixed-size chunks, so a row's bytes are the same
    whatever shard (of 64 or of 300 samples) made it; each source is encoded once in each shard holding its
    variants. A set begun by the one-call code of earlier versions is not resumed (model.generation)."""
    encoded: list[int] = []
    real_encode = vaeaug.TorchBackend.encode_sources

    def spy(self: Any, x: Any, y: Any, **kw: Any) -> Any:
        encoded.append(len(x))
        return real_encode(self, x, y, **kw)

    monkeypatch.setattr(vaeaug.TorchBackend, "encode_sources", spy)
    out = work / "small_shards"
    pregenerate(data_npz, model_path, out, variants_per_sample=2, shard_size=64, seed=7, progress=False)
    monkeypatch.undo()
    n = len(digits_uint8()[0])
    s = np.arange(3 * n)
    pairs = {(int(i) // 64, int(i) // 3) for i in s[s % 3 != 0]}  # (shard, source) of every variant
    assert sum(encoded) == len(pairs) < 2 * n  # one encoding per source and shard, not one per variant
    a, b = GeneratedDataset(reference), GeneratedDataset(out)
    assert np.concatenate([np.asarray(x) for x in a._x]).tobytes() == np.concatenate(
        [np.asarray(x) for x in b._x]).tobytes()
    assert a.manifest["model"]["generation"] == "encode once"
    older = work / "older"
    shutil.copytree(reference, older)
    run = json.loads((older / "run.json").read_text())
    del run["model"]["generation"]
    (older / "run.json").write_text(json.dumps(run, indent=2, sort_keys=True) + "\n")
    with pytest.raises(ValueError, match="model.generation"):
        pregenerate(data_npz, model_path, older, variants_per_sample=2, shard_size=SHARD, seed=7, progress=False)


def test_torch_and_onnx_backends(reference: Path, data_npz: Path, model_path: Path, work: Path) -> None:
    """The ONNX backend makes the same set up to uint8 rounding: real samples identical, variants within
    one level in a small, measured fraction of pixels. The manifest names the backend, same model hash."""
    onnx_path = vaeaug.export_onnx(model_path, work / "m.onnx")["augmenter"]
    out = work / "onnx"
    pregenerate(data_npz, onnx_path, out, variants_per_sample=2, shard_size=SHARD, seed=7, progress=False)
    a, b = GeneratedDataset(reference), GeneratedDataset(out)
    ma, mb = a.manifest, b.manifest
    assert mb["model"]["backend"] == "onnx" and ma["model"]["backend"] == "torch"
    assert mb["model"]["sha256"] == ma["model"]["sha256"]
    xa = np.concatenate([np.asarray(x) for x in a._x])
    xb = np.concatenate([np.asarray(x) for x in b._x])
    assert np.array_equal(a.meta, b.meta)
    real = ~a.is_synthetic
    assert np.array_equal(xa[real], xb[real])
    diff = np.abs(xa.astype(int) - xb.astype(int))
    assert diff.max() <= 1
    assert (diff[~real] > 0).mean() < 0.005, f"{(diff[~real] > 0).mean():.4%} of synthetic pixels differ"
    with pytest.raises(ValueError, match="model.backend"):  # resuming a torch run with ONNX would mix them
        pregenerate(data_npz, onnx_path, reference, variants_per_sample=2, shard_size=SHARD, seed=7, progress=False)


def test_refusals(reference: Path, data_npz: Path, model_path: Path, work: Path) -> None:
    before = _files(reference)
    with pytest.raises(ValueError, match=r"arguments.variants_per_sample"):
        pregenerate(data_npz, model_path, reference, variants_per_sample=3, shard_size=SHARD, seed=7, progress=False)
    with pytest.raises(ValueError, match=r"arguments.seed"):
        pregenerate(data_npz, model_path, reference, variants_per_sample=2, shard_size=SHARD, seed=8, progress=False)
    other = vaeaug.fit(*digits_uint8(), epochs=1, progress=False, conditional=True)
    with pytest.raises(ValueError, match=r"model.sha256"):
        pregenerate(data_npz, other, reference, variants_per_sample=2, shard_size=SHARD, seed=7, progress=False)
    with pytest.raises(ValueError, match="resume"):
        pregenerate(data_npz, model_path, reference, variants_per_sample=2, shard_size=SHARD, seed=7,
                    resume=False, progress=False)
    assert _files(reference) == before, "a refused run must not touch the set"
    foreign = work / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        pregenerate(data_npz, model_path, foreign, progress=False)
    with pytest.raises(ValueError, match="shard_index"):
        pregenerate(data_npz, model_path, work / "x", num_shards=2, progress=False)
    with pytest.raises(ValueError, match="imagefolder"):
        pregenerate("digits", vaeaug.fit("digits", epochs=1, progress=False), work / "y", format="imagefolder",
                    progress=False)
    x, y = digits_uint8()
    np.savez(work / "evil.npz", x=x[:20], y=y[:20] % 2, class_names=np.array(["../../escaped", "ok"]))
    evil_model = vaeaug.fit(x[:20], y[:20] % 2, epochs=1, progress=False)
    with pytest.raises(ValueError, match="cannot be a folder name"):
        pregenerate(work / "evil.npz", evil_model, work / "evil", format="imagefolder", progress=False)
    assert not (work.parent / "escaped").exists()
    p = subprocess.run(_generate_cmd(data_npz, work / "missing.vae", work / "z"), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 2 and "not found" in p.stderr and p.stderr.count("\n") == 1


def test_verify_catches_a_flipped_byte_and_a_missing_shard(reference: Path, work: Path) -> None:
    import shutil

    copy = work / "damaged"
    shutil.copytree(reference, copy)
    ok = subprocess.run([sys.executable, "-m", "vaeaug", "verify", str(copy)], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("OK") and ok.stdout.count("\n") == 1
    shard = copy / "shard-00002-x.npy"
    blob = bytearray(shard.read_bytes())
    blob[-5] ^= 0x01
    shard.write_bytes(bytes(blob))
    assert any("shard-00002-x.npy is corrupt" in p for p in verify_generated(copy))
    with pytest.raises(ValueError, match="failed verification"):
        GeneratedDataset(copy, verify=True)
    # running the same command again must not bless the damaged file by rewriting the manifest
    pregenerate(work / "digits_u8.npz", work / "m.vae", copy, variants_per_sample=2, shard_size=SHARD, seed=7,
                progress=False)
    assert any("shard-00002-x.npy is corrupt" in p for p in verify_generated(copy))
    for f in copy.glob("shard-00002*"):  # the repair the README describes: delete the shard, run again
        f.unlink()
    pregenerate(work / "digits_u8.npz", work / "m.vae", copy, variants_per_sample=2, shard_size=SHARD, seed=7,
                progress=False)
    assert verify_generated(copy) == [] and _files(copy) == _files(reference)
    (copy / "shard-00004-meta.npy").unlink()
    problems = verify_generated(copy)
    assert problems == ["shard 4: shard-00004-meta.npy is missing"]
    bad = subprocess.run([sys.executable, "-m", "vaeaug", "verify", str(copy)], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stdout.startswith("FAILED") and bad.stdout.count("\n") == 1
    assert verify_generated(work / "nothing-here")[0].startswith("no generated set")


def test_imagefolder_output_loads_with_torchvision(reference: Path, data_npz: Path, model_path: Path,
                                                  work: Path) -> None:
    from torchvision.datasets import ImageFolder

    out = work / "folder"
    r = pregenerate(data_npz, model_path, out, variants_per_sample=2, shard_size=SHARD, seed=7, format="imagefolder",
                    progress=False)
    assert r["complete"] and verify_generated(out) == []
    folder = ImageFolder(str(out))
    ref = GeneratedDataset(reference)
    assert len(folder) == len(ref)
    assert folder.classes == sorted(str(c) for c in range(10))
    # file 00000031.png is sample 31 of the set; its pixels are the shards' sample 31
    path, cls = next((p, c) for p, c in folder.samples if p.endswith("00000031.png"))
    img = np.asarray(folder.loader(path).convert("L"))
    x31, y31 = ref[31]
    assert np.array_equal(img, x31[0].numpy()) and folder.classes[cls] == str(y31)


def test_reading_is_memory_mapped(work: Path) -> None:
    """Opening a set maps its images and hashes them in blocks of 1 MiB, never holding a shard: memory stays far
    below its size."""
    x = (np.random.default_rng(0).random((20_000, 28, 28)) * 255).astype(np.uint8)
    model = vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 28, 28)), value_range=vaeaug.ValueRange(0, 255, "uint8"))
    out = work / "big"
    pregenerate(x, model, out, variants_per_sample=0, shard_size=10_000, progress=False)  # real samples only: fast
    size = sum(p.stat().st_size for p in out.glob("shard-*-x.npy"))
    assert size >= 15_000_000
    tracemalloc.start()
    ds = GeneratedDataset(out)
    first = ds[0][0]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert isinstance(ds._x[0], np.memmap) and len(ds) == 20_000
    import pickle

    blob = pickle.dumps(ds)  # what a spawned DataLoader worker receives: no image data
    assert len(blob) < size / 10
    assert torch.equal(pickle.loads(blob)[7][0], ds[7][0])
    # a shard replaced since the set was opened (same size, one byte flipped) is refused by the reopened copy
    shard = out / "shard-00000-x.npy"
    data = shard.read_bytes()
    (out / "new.npy").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    os.replace(out / "new.npy", shard)
    with pytest.raises(ValueError, match="shard-00000-x.npy .shard 0 of .*. changed after the set was opened"):
        pickle.loads(blob)[7]
    # what it holds is the labels (21 bytes a sample) and a hash's blocks, never the images (784 bytes a sample)
    assert peak < 3.5e6 < size / 4, f"opening a {size / 1e6:.0f} MB set allocated {peak / 1e6:.1f} MB"
    assert torch.equal(first[0], torch.from_numpy(x[0]))


def test_a_failed_write_leaves_no_half_shard(data_npz: Path, model_path: Path, work: Path) -> None:
    """A real OS write limit (RLIMIT_FSIZE, as a full disk would) stops the run with a clear error; no
    temporary or partial file stays behind, and the same command without the limit writes the set."""
    out = work / "full"
    for workers in (1, 2):  # in this process, and in DataLoader worker processes
        code = textwrap.dedent(f"""
            import resource, signal, sys
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # let write() fail with EFBIG instead of killing us
            import vaeaug
            resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))
            try:
                vaeaug.pregenerate({str(data_npz)!r}, {str(model_path)!r}, {str(out)!r}, variants_per_sample=2,
                                   shard_size={SHARD}, seed=7, progress=False, workers={workers})
            except OSError as e:
                print(str(e).splitlines()[0]); sys.exit(3)
        """)
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert p.returncode == 3, p.stderr
        assert "cannot write shard" in p.stdout and "resume" in p.stdout and "DataLoader" not in p.stdout, p.stdout
        # no shard was complete: nothing to resume, so not even run.json stays (issue 22, 10)
        assert not out.exists(), sorted(f.name for f in out.iterdir())
    pregenerate(data_npz, model_path, out, variants_per_sample=2, shard_size=SHARD, seed=7, progress=False)
    assert verify_generated(out) == []
    with pytest.raises(OSError, match="cannot create the output folder"):
        pregenerate(data_npz, model_path, data_npz / "sub", progress=False)


def test_incomplete_sets_are_not_read_as_complete(data_npz: Path, model_path: Path, work: Path) -> None:
    out = work / "partial"
    pregenerate(data_npz, model_path, out, variants_per_sample=2, shard_size=SHARD, seed=7, num_shards=2,
                shard_index=0, progress=False)
    with pytest.raises(ValueError, match="incomplete"):
        GeneratedDataset(out)
    assert "incomplete" in verify_generated(out)[0]
    assert not os.path.exists(out / "manifest.json")
