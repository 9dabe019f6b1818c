"""Fitting from data that stays on disk: an image folder and a generated set read through real
DataLoader worker processes (fit(stream=True))."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

import vaeaug

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from _helpers import digits_uint8  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stream") / "digits"
    x, y = digits_uint8()
    for i, (img, c) in enumerate(zip(x[:600], y[:600], strict=True)):
        (root / str(c)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / str(c) / f"{i:04d}.png")
    return root


def _weights(model: vaeaug.VAE) -> list[torch.Tensor]:
    return list(model.state_dict().values())


def test_streamed_fit_from_an_image_folder_with_workers(folder: Path) -> None:
    kw = {"epochs": 4, "conditional": True, "progress": False, "precision": "fp32", "seed": 3}
    a = vaeaug.fit(folder, stream=True, num_workers=2, **kw)
    assert a.config.input_shape == (1, 8, 8)  # grayscale PNGs stay one channel, as in memory
    assert a.config.num_classes == 10 and a.class_names == [str(i) for i in range(10)]
    assert a.value_range == vaeaug.ValueRange(0, 255, "uint8")
    losses = [r["train_loss"] for r in a.history]
    assert losses[-1] < losses[0] and all(np.isfinite(r["val_loss"]) for r in a.history)
    # worker processes only decode: the same seed gives the same weights with 0 or 2 workers
    b = vaeaug.fit(folder, stream=True, num_workers=0, **kw)
    assert all(torch.equal(p, q) for p, q in zip(_weights(a), _weights(b), strict=True))
    # and it learns about as well as the in-memory fit of the same images
    mem = vaeaug.fit(folder, **kw)
    assert min(r["val_loss"] for r in a.history) < 1.1 * min(r["val_loss"] for r in mem.history)


def test_streamed_fit_from_a_generated_set(tmp_path: Path) -> None:
    x, y = digits_uint8()
    gen = vaeaug.VAE(vaeaug.VAEConfig((1, 8, 8), num_classes=10), value_range=vaeaug.ValueRange(0, 255, "uint8"))
    vaeaug.pregenerate(x[:300], gen, tmp_path / "set", variants_per_sample=1, y=y[:300], progress=False)
    model = vaeaug.fit(tmp_path / "set", stream=True, num_workers=2, epochs=2, conditional=True, progress=False)
    assert model.config.input_shape == (1, 8, 8) and model.config.num_classes == 10
    assert model.value_range.dtype == "uint8" and len(model.history) == 2


def test_streaming_errors(tmp_path: Path) -> None:
    x, y = digits_uint8()
    with pytest.raises(ValueError, match="leave y and layout unset"):
        vaeaug.fit(TensorDataset(torch.from_numpy(x[:50])), y[:50], stream=True, progress=False)
    with pytest.raises(TypeError, match="map-style Dataset"):
        vaeaug.fit(object(), stream=True, progress=False)
    floats = TensorDataset(torch.from_numpy(x[:64, None].astype(np.float32)))  # 0..255 floats, read as 0..1
    with pytest.raises(ValueError, match="value_range"):
        vaeaug.fit(floats, stream=True, num_workers=0, epochs=1, progress=False)
    ok = vaeaug.fit(floats, stream=True, num_workers=0, epochs=1, progress=False, value_range=(0, 255))
    assert ok.value_range.high == 255.0
    unlabelled = TensorDataset(torch.from_numpy(x[:50, None]))
    with pytest.raises(ValueError, match="targets"):
        vaeaug.fit(unlabelled, stream=True, conditional=True, progress=False)
    with pytest.raises(ValueError, match="num_workers"):
        vaeaug.fit(unlabelled, stream=True, num_workers=-1, progress=False)


def test_cli_fit_stream(folder: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "vaeaug", "fit", "--data", str(folder), "--stream", "--workers", "2", "--epochs", "2",
           "--out", str(tmp_path / "s.vae")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "streamed with 2 DataLoader workers" in p.stdout
    assert vaeaug.load(tmp_path / "s.vae").config.input_shape == (1, 8, 8)
    bad = subprocess.run([sys.executable, "-m", "vaeaug", "fit", "--data", str(tmp_path / "s.vae"), "--stream",
                          "--out", str(tmp_path / "t.vae")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "not a folder" in bad.stderr


def _small_folder(root: Path) -> Path:
    x, y = digits_uint8()
    for i in range(40):
        (root / str(y[i] % 2)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).save(root / str(y[i] % 2) / f"{i:04d}.png")
    return root


def _png_claiming(path: Path, side: int, rows: bytes = b"") -> None:
    from test_security_files import _png_header

    _png_header(path, side, side, rows)


@pytest.mark.parametrize("bad", ["fifo", "huge-header", "over-the-cap"])
def test_streamed_image_folders_go_through_the_safe_reader(bad: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 22, 3: fit --stream read images around the safe reader: a FIFO named x.png hung the fit, a PNG
    claiming 100000x100000 pixels ended in 'internal error', and a 12000x12000 PNG (above the 2**24-pixel cap)
    was decoded whole before a shape error. Each is now the safe reader's one-line ValueError, and nothing
    above the cap is decoded."""
    import zlib

    from _helpers import time_limit

    from vaeaug import cli
    from vaeaug.data.readers import MAX_IMAGE_PIXELS

    root = _small_folder(tmp_path / "imgs")
    target = root / "1" / "x.png"
    if bad == "fifo":
        os.mkfifo(target)
        match = "FIFO"
    elif bad == "huge-header":
        _png_claiming(target, 100_000)
        match = "decompression bomb"
    else:  # a real image just above the cap (4100 x 4100 zeros, 16 KB compressed): decoding it would succeed
        _png_claiming(target, 4100, zlib.compress(bytes(4101 * 4100)))
        match = "decompression bomb"
    decoded: list[tuple[int, int]] = []
    load = Image.Image.load

    def recording_load(self: Image.Image) -> Any:
        decoded.append(self.size)
        return load(self)

    monkeypatch.setattr(Image.Image, "load", recording_load)
    with time_limit(60):
        with pytest.raises(ValueError, match=match) as e:
            vaeaug.fit(root, stream=True, num_workers=0, epochs=1, progress=False)
        assert str(target) in str(e.value)
        rc = cli.main(["fit", "--data", str(root), "--stream", "--workers", "2", "--epochs", "1", "--no-progress",
                       "--out", str(tmp_path / "m.vae")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and match in err and "internal error" not in err, err
    assert all(w * h <= MAX_IMAGE_PIXELS for w, h in decoded) and decoded  # the 8x8 digits only
    assert not (tmp_path / "m.vae").exists()
