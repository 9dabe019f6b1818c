"""Preview grids and training curves: real PNGs with the expected layout; CLI success and failure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vaeaug
from vaeaug.viz import curves, preview


@pytest.fixture(scope="module")
def cond_model() -> vaeaug.VAE:
    return vaeaug.fit("digits", epochs=3, conditional=True, progress=False)


def test_preview_layout_for_a_conditional_model(cond_model) -> None:
    test = vaeaug.load_builtin("digits", split="test")
    small = preview(cond_model, test, n=2, strengths=(1.0,), per_class=3, steps=4)
    big = preview(cond_model, test, n=5, strengths=(0.5, 1.0, 2.0), per_class=3, steps=4)
    assert small.mode == big.mode == "RGB"
    assert big.height > small.height  # more rows
    assert big.width >= small.width  # more columns
    unconditional = vaeaug.fit("digits", epochs=1, progress=False)
    no_prior = preview(unconditional, test, n=2, strengths=(1.0,), steps=4)
    assert no_prior.height < small.height  # no block of prior samples
    # the original tile shows the real image: brightest pixels of the picture are not uniform
    assert np.asarray(big).std() > 20


def test_preview_is_deterministic_and_rejects_bad_data(cond_model) -> None:
    test = vaeaug.load_builtin("digits", split="test")
    a = np.asarray(preview(cond_model, test, n=3, seed=4))
    b = np.asarray(preview(cond_model, test, n=3, seed=4))
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="needs labels"):
        preview(cond_model, test.x, n=2)
    with pytest.raises(ValueError, match="model takes"):
        preview(cond_model, np.zeros((4, 9, 9), np.uint8), n=2)


def test_curves_from_history(cond_model) -> None:
    img = curves(cond_model.history)
    assert img.size == (900, 300)
    arr = np.asarray(img)
    blue = ((arr[..., 2] > 150) & (arr[..., 0] < 80)).sum()
    red = ((arr[..., 0] > 180) & (arr[..., 1] < 80)).sum()
    assert blue > 50 and red > 50  # both train and val lines drawn
    with pytest.raises(ValueError, match="no training history"):
        curves([])


def test_cli_preview_and_curves(tmp_path: Path, cond_model) -> None:
    model_path = tmp_path / "m.vae"
    cond_model.save(model_path)
    png = tmp_path / "preview.png"
    ok = subprocess.run([sys.executable, "-m", "vaeaug", "preview", "--model", str(model_path), "--data", "digits",
                         "--out", str(png)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 100
    again = subprocess.run([sys.executable, "-m", "vaeaug", "preview", "--model", str(model_path), "--data",
                            "digits", "--out", str(png)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "exists" in again.stderr
    bad = subprocess.run([sys.executable, "-m", "vaeaug", "preview", "--model", str(model_path), "--data",
                          "fashion-mnist", "--out", str(tmp_path / "x.png")], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "model takes" in bad.stderr and "Traceback" not in bad.stderr
    curves_png = tmp_path / "curves.png"
    fit = subprocess.run([sys.executable, "-m", "vaeaug", "fit", "--data", "digits", "--epochs", "2", "--out",
                          str(tmp_path / "c.vae"), "--curves", str(curves_png)], capture_output=True, text=True,
                         timeout=120)
    assert fit.returncode == 0, fit.stderr
    with Image.open(curves_png) as im:
        assert im.size == (900, 300)
