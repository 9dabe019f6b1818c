"""The examples run end to end (quick modes), as a user would run them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_train_classifier_digits_quick() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "train_classifier_digits.py"), "--quick"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rates = re.search(r"variants/s: ([\d,]+) batched .* ([\d,]+) one image at a time", proc.stdout)
    assert rates and all(int(r.replace(",", "")) > 0 for r in rates.groups()), proc.stdout
    acc = re.search(r"none ([\d.]+)%, VAEAugment\(p=[\d.]+\) ([\d.]+)%", proc.stdout)
    assert acc, proc.stdout
    assert all(10.0 < float(a) <= 100.0 for a in acc.groups())  # better than chance: it trained


def test_train_classifier_digits_with_onnx_workers(tmp_path: Path) -> None:
    import vaeaug

    model = vaeaug.fit("digits", epochs=2, conditional=True, progress=False)
    model.save(tmp_path / "d.vae")
    vaeaug.export_onnx(model, tmp_path / "d.onnx")
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "train_classifier_digits.py"), "--quick",
                           "--model", str(tmp_path / "d.vae"), "--onnx", str(tmp_path / "d.onnx")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "d.onnx" in proc.stdout  # the transform in the workers is the ONNX one (its repr)
    rate = re.search(r"ONNX backend: ([\d,]+) \(([\d.]+)x torch\)", proc.stdout)
    assert rate and int(rate.group(1).replace(",", "")) > 0, proc.stdout
    assert re.search(r"none ([\d.]+)%, VAEAugment", proc.stdout), proc.stdout


def test_fit_and_sample_example(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "fit_and_sample.py"), "--epochs", "2",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    from PIL import Image

    with Image.open(tmp_path / "digits-preview.png") as im:
        assert im.size[0] > 16 * 8 and im.size[1] > 10 * 8  # 16 columns, one row per class
