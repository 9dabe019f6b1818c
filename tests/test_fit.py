"""Fitting: it learns, it is deterministic, it keeps the best model, it stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import vaeaug
from vaeaug.data import as_tensor_data
from vaeaug.training import _evaluate, _split


def _state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fit_learns_the_digits() -> None:
    model = vaeaug.fit("digits", epochs=15, progress=False, seed=0)
    h = model.history
    assert len(h) == 15
    expected = {"epoch", "beta", "train_loss", "train_recon", "train_kl", "val_loss",
                "val_recon", "val_kl", "seconds", "samples_per_s"}
    assert expected <= set(h[0])
    best = min(r["val_loss"] for r in h)
    assert best < 0.8 * h[0]["val_loss"]
    # the KL weight warms up linearly, then stays at beta
    assert h[0]["beta"] < h[5]["beta"] < 1.0 and h[-1]["beta"] == 1.0
    assert not model.training


def test_same_seed_gives_bit_identical_weights_and_another_seed_does_not() -> None:
    a = vaeaug.fit("digits", epochs=3, progress=False, seed=7)
    b = vaeaug.fit("digits", epochs=3, progress=False, seed=7)
    c = vaeaug.fit("digits", epochs=3, progress=False, seed=8)
    assert _state_equal(a, b)
    assert [r["val_loss"] for r in a.history] == [r["val_loss"] for r in b.history]
    assert not _state_equal(a, c)


def test_fit_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    vaeaug.fit("digits", epochs=1, progress=False)
    assert torch.equal(torch.get_rng_state(), before)


def test_best_validation_model_is_kept_and_early_stopping_stops() -> None:
    # 120 samples overfit fast: validation loss turns up and patience ends the run
    d = vaeaug.load_builtin("digits")
    x, y = d.x[:120], d.y[:120]
    model = vaeaug.fit(x, y, epochs=400, batch_size=16, lr=5e-3, kl_warmup=0, patience=3,
                       val_fraction=0.25, progress=False, seed=1)
    h = model.history
    assert len(h) < 400
    best = min(h, key=lambda r: r["val_loss"])
    assert best["epoch"] == len(h) - 3
    # the returned weights are the best epoch's: recompute its validation loss exactly
    td = as_tensor_data(x, y)
    _, va_idx = _split(len(td), 0.25, torch.Generator().manual_seed(1))
    batches = [(td.x[va_idx].contiguous(memory_format=torch.channels_last), None)]
    rec, kl = _evaluate(model, batches, len(va_idx), seed=1 + 2, device=torch.device("cpu"))
    assert rec + kl == pytest.approx(best["val_loss"], rel=1e-5)


def test_conditional_gaussian_and_vector_fits(capsys: pytest.CaptureFixture[str]) -> None:
    cond = vaeaug.fit("digits", epochs=2, conditional=True, progress=False)
    assert cond.config.num_classes == 10
    assert cond.sample(3, y=4).shape == (3, 1, 8, 8)
    gauss = vaeaug.fit("digits", epochs=2, likelihood="gaussian", learn_std=True, progress=False)
    assert np.isfinite(gauss.history[-1]["val_loss"])
    vec = np.random.default_rng(0).random((300, 12)).astype(np.float32)
    mlp = vaeaug.fit(vec, epochs=2, latent_dim=3, progress=False)
    assert mlp.config.input_shape == (12,)
    assert capsys.readouterr().out == ""  # progress=False prints nothing


def test_progress_prints_one_summary_line(capsys: pytest.CaptureFixture[str]) -> None:
    vaeaug.fit("digits", epochs=2, progress=True)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert "2 epochs" in out[0] and "samples/s" in out[0] and "best val loss" in out[0]


def test_without_validation_the_last_model_is_returned() -> None:
    model = vaeaug.fit("digits", epochs=2, val_fraction=0.0, progress=False)
    assert len(model.history) == 2 and "val_loss" not in model.history[-1]


def test_fit_accepts_a_torch_dataset() -> None:
    d = vaeaug.load_builtin("digits")
    ds = torch.utils.data.TensorDataset(d.x[:200], d.y[:200])
    model = vaeaug.fit(ds, epochs=1, conditional=True, progress=False)
    assert model.config.num_classes == 10


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": -1}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"patience": 0}, "patience"),
        ({"device": "tpu9"}, "device"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        vaeaug.fit("digits", progress=False, **kwargs)


def test_conditional_fit_needs_labels() -> None:
    x = np.random.default_rng(0).random((50, 1, 8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="needs labels"):
        vaeaug.fit(x, conditional=True, progress=False)
    with pytest.raises(ValueError, match=">= 0"):
        vaeaug.fit(x, y=np.r_[np.zeros(49, int), -1], conditional=True, progress=False)


def test_cuda_request_runs_on_cuda_or_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        model = vaeaug.fit("digits", epochs=1, device="cuda", progress=False)
        assert model.device.type == "cuda"
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            vaeaug.fit("digits", epochs=1, device="cuda", progress=False)


def test_ctrl_c_stops_cleanly_and_keeps_the_best_model(tmp_path: Path) -> None:
    """A real `vaeaug fit` process gets SIGINT mid-training and still saves its best model."""
    out = tmp_path / "interrupted.vae"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaeaug", "fit", "--data", "digits", "--epochs", "100000",
         "--patience", "0", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()  # the data summary, printed just before training starts
    assert first.startswith("digits[train]"), first
    # interrupt once an epoch has been completed and shown by the progress bar (on a loaded machine
    # start-up alone can take seconds, so a fixed sleep is not enough)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while "epoch 2/" not in "".join(seen) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout = proc.stdout.read()
    proc.wait(timeout=120)
    reader.join(timeout=10)
    stderr = "".join(seen)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "(interrupted)" in stdout and "saved" in stdout
    model = vaeaug.load(out)
    assert 1 <= len(model.history) < 100000
    best = min(r["val_loss"] for r in model.history)
    assert f"best val loss {best:.2f}" in stdout


def test_precision_choices() -> None:
    """bf16 autocast trains on the CPU (parameters stay fp32); fp16 needs CUDA; auto is recorded."""
    bf = vaeaug.fit("digits", epochs=2, precision="bf16", progress=False, seed=0)
    assert [r["precision"] for r in bf.history] == ["bf16", "bf16"]
    assert all(p.dtype == torch.float32 for p in bf.parameters())
    assert bf.history[-1]["train_loss"] < bf.history[0]["train_loss"] * 1.2 and all(
        np.isfinite(r["val_loss"]) for r in bf.history)
    again = vaeaug.fit("digits", epochs=2, precision="bf16", progress=False, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(bf.state_dict().values(), again.state_dict().values(), strict=True))
    fp = vaeaug.fit("digits", epochs=1, precision="fp32", progress=False, seed=0)
    assert fp.history[0]["precision"] == "fp32"
    auto = vaeaug.fit("digits", epochs=1, progress=False, seed=0)
    from vaeaug.training import resolve_precision

    assert auto.history[0]["precision"] == resolve_precision("auto", torch.device("cpu"))
    with pytest.raises(ValueError, match="needs a CUDA device"):
        vaeaug.fit("digits", epochs=1, precision="fp16", device="cpu", progress=False)
    with pytest.raises(ValueError, match="precision must be one of"):
        vaeaug.fit("digits", epochs=1, precision="int8", progress=False)
