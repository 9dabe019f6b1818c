"""Fitting from data that stays on disk: an image folder and a generated set read through real
DataLoader worker processes (fit(stream=True))."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
