"""Fitting: it learns, it is deterministic, it keeps the best model, it stops cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import vaeaug
from vaeaug.data import as_tensor_data
from vaeaug.fitting.training import _evaluate, _split


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


def _default_sigint() -> None:
    """In the child: SIGINT raises KeyboardInterrupt even when the suite runs as a background job (where the
    shell starts it with SIGINT ignored, and Python then keeps it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_cleanly_and_keeps_the_best_model(tmp_path: Path) -> None:
    """A real `vaeaug fit` process gets SIGINT mid-training and still saves its best model."""
    out = tmp_path / "interrupted.vae"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaeaug", "fit", "--data", "digits", "--epochs", "100000",
         "--patience", "0", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=_default_sigint,
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
    # the bar redraws at most every 0.1 s, so on an idle machine it can skip straight past epoch 2
    past_one = re.compile(r"epoch (?:[2-9]|\d{2,})/")
    while not past_one.search("".join(seen)) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None and past_one.search("".join(seen)), "".join(seen)[-500:]
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
    from vaeaug.fitting.training import resolve_precision

    assert auto.history[0]["precision"] == resolve_precision("auto", torch.device("cpu"))
    with pytest.raises(ValueError, match="needs a CUDA device"):
        vaeaug.fit("digits", epochs=1, precision="fp16", device="cpu", progress=False)
    with pytest.raises(ValueError, match="precision must be one of"):
        vaeaug.fit("digits", epochs=1, precision="int8", progress=False)


# --------------------------------------------------------------------------- fit-time augmentation

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from _helpers import digits_uint8  # noqa: E402


class _Recorder:
    """A fit-time augmentation that records every batch it is given and returns it unchanged."""

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []
        self.generators: list[torch.Generator] = []

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        self.batches.append(x.detach().clone())
        self.generators.append(g)
        return x


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.contiguous().numpy().tobytes() for r in x}


def test_augment_sees_every_training_batch_and_no_validation_batch() -> None:
    d = vaeaug.load_builtin("digits")
    x = d.x[:300]
    rec = _Recorder()
    model = vaeaug.fit(x, epochs=2, batch_size=64, val_fraction=0.2, augment=rec, progress=False, seed=4)
    tr_idx, va_idx = _split(len(x), 0.2, torch.Generator().manual_seed(4))
    assert len(rec.batches) == 2 * 4  # 240 training samples in batches of 64, twice
    assert [len(b) for b in rec.batches[:4]] == [64, 64, 64, 48]
    seen = torch.cat(rec.batches)
    assert len(seen) == 2 * len(tr_idx)
    assert _rows(seen) == _rows(x[tr_idx]) and not _rows(seen) & _rows(x[va_idx])
    assert all(g is rec.generators[0] and g.device.type == "cpu" for g in rec.generators)
    # the identity transform leaves every other random stream alone: the same weights as no augmentation
    plain = vaeaug.fit(x, epochs=2, batch_size=64, val_fraction=0.2, progress=False, seed=4)
    assert _state_equal(model, plain)
    assert [r["fit_augment"] for r in plain.history] == [None, None]
    assert all(r["fit_augment"].startswith("callable:") and "_Recorder" in r["fit_augment"] for r in model.history)


def test_validation_measures_the_real_data_when_training_batches_are_augmented() -> None:
    d = vaeaug.load_builtin("digits")
    x = d.x[:300]
    kw: dict[str, Any] = {"epochs": 6, "val_fraction": 0.2, "kl_warmup": 0, "lr": 5e-3, "progress": False, "seed": 2}
    blank = vaeaug.fit(x, augment=lambda b, g: torch.zeros_like(b), **kw)
    plain = vaeaug.fit(x, **kw)
    # trained on blank images: the training loss falls fast while the validation loss (real digits) rises
    assert blank.history[-1]["train_loss"] < 0.6 * plain.history[-1]["train_loss"]
    assert blank.history[-1]["val_loss"] > 1.3 * plain.history[-1]["val_loss"]
    assert blank.history[-1]["val_loss"] > blank.history[0]["val_loss"]
    # the recorded validation loss is the model's loss on the real, unaugmented validation images
    _, va_idx = _split(len(x), 0.2, torch.Generator().manual_seed(2))
    best = min(blank.history, key=lambda r: r["val_loss"])
    r, k = _evaluate(blank, [(x[va_idx].contiguous(memory_format=torch.channels_last), None)], len(va_idx),
                     seed=2 + 2, device=torch.device("cpu"))
    assert r + k == pytest.approx(best["val_loss"], rel=1e-5)


def test_classic_augment_is_deterministic_and_changes_the_fit() -> None:
    x = vaeaug.load_builtin("digits").x[:400]
    kw: dict[str, Any] = {"epochs": 2, "progress": False, "seed": 5}
    a = vaeaug.fit(x, augment="classic", **kw)
    b = vaeaug.fit(x, augment="classic", **kw)
    assert _state_equal(a, b)
    assert [r["fit_augment"] for r in a.history] == ["classic", "classic"]
    assert not _state_equal(a, vaeaug.fit(x, **kw))
    flipped = vaeaug.fit(x, augment="classic+flip", **kw)
    assert not _state_equal(a, flipped) and flipped.history[-1]["fit_augment"] == "classic+flip"
    assert not _state_equal(a, vaeaug.fit(x, augment="classic", epochs=2, progress=False, seed=6))


def test_classic_augment_moves_each_image_and_stays_in_model_space() -> None:
    from vaeaug.fitting.classic import CLASSIC_AUGMENTS, classic_augment
    from vaeaug.protocol.classifier import classic_augment as from_classifier

    assert from_classifier is classic_augment and CLASSIC_AUGMENTS == {"classic": False, "classic+flip": True}
    x = vaeaug.load_builtin("digits").x[:1].repeat(32, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    out = classic_augment(x, g)
    assert len(_rows(out)) == 32 and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(out, classic_augment(x, torch.Generator().manual_seed(0), flip=False))
    flipped = classic_augment(x, torch.Generator().manual_seed(0), flip=True)
    assert not torch.equal(flipped, out) and float(flipped.min()) >= 0 and float(flipped.max()) <= 1
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        classic_augment(x[:, 0], g)


def test_streamed_fit_augments_its_training_batches() -> None:
    x, _ = digits_uint8()
    ds = torch.utils.data.TensorDataset(torch.from_numpy(x[:300, None]))
    rec = _Recorder()
    kw: dict[str, Any] = {"stream": True, "num_workers": 0, "epochs": 2, "batch_size": 64, "val_fraction": 0.2,
          "progress": False, "seed": 1}
    model = vaeaug.fit(ds, augment=rec, **kw)
    assert len(rec.batches) == 8 and sum(len(b) for b in rec.batches) == 2 * 240
    assert all(b.shape[1:] == (1, 8, 8) and b.dtype == torch.float32 for b in rec.batches)
    a = vaeaug.fit(ds, augment="classic", **kw)
    b = vaeaug.fit(ds, augment="classic", **kw)
    assert _state_equal(a, b) and not _state_equal(a, model)
    assert a.history[-1]["fit_augment"] == "classic"


@pytest.mark.parametrize(
    "augment,error,match",
    [
        ("flip", ValueError, "augment must be None, 'classic', 'classic\\+flip' or a callable"),
        ("classic-noflip", ValueError, "'classic' has no flips already"),
        ("CLASSIC", ValueError, "got 'CLASSIC'"),
        (3, TypeError, "got int 3"),
        (True, TypeError, "got bool True"),
        (lambda b, g: b[:, :, :4], ValueError, "must return a float tensor like its input"),
        (lambda b, g: (b * 255).to(torch.uint8), ValueError, "must return a float tensor"),
        (lambda b, g: b.numpy(), ValueError, "it returned ndarray"),
        (lambda b, g: b * 2 - 0.5, ValueError, r"clamp them"),
    ],
)
def test_bad_augment_values(augment: Any, error: type, match: str) -> None:
    x = vaeaug.load_builtin("digits").x[:100]
    with pytest.raises(error, match=match):
        vaeaug.fit(x, epochs=1, augment=augment, progress=False)


def test_augment_refuses_vector_data() -> None:
    vec = np.random.default_rng(0).random((100, 12)).astype(np.float32)
    with pytest.raises(ValueError, match="vectors of shape \\(12,\\); leave augment=None"):
        vaeaug.fit(vec, epochs=1, augment="classic", progress=False)


def test_recorded_augment_survives_save_and_load(tmp_path: Path) -> None:
    from vaeaug.model.vaefile import read_metadata

    class Shifter:
        """A callable object whose default repr holds a memory address."""

        def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            return torch.roll(x, 1, dims=3)

    x = vaeaug.load_builtin("digits").x[:200]
    for augment, want in (("classic+flip", "classic+flip"), (Shifter(), "callable:")):
        model = vaeaug.fit(x, epochs=2, augment=augment, progress=False)
        model.save(tmp_path / "m.vae")
        loaded = vaeaug.load(tmp_path / "m.vae")
        assert [r["fit_augment"] for r in loaded.history] == [r["fit_augment"] for r in model.history]
        assert loaded.history[0]["fit_augment"].startswith(want)
        assert "0x" not in loaded.history[0]["fit_augment"]  # no memory address: same code, same file bytes
        assert read_metadata(tmp_path / "m.vae")["history"] == model.history
    # a file from before fit_augment existed (rows without the key) still loads; info reports None
    old = vaeaug.fit(x, epochs=1, progress=False)
    for r in old.history:
        del r["fit_augment"]
    old.save(tmp_path / "old.vae")
    assert "fit_augment" not in vaeaug.load(tmp_path / "old.vae").history[0]


def test_cli_fit_augment_and_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`vaeaug fit --augment` in a real subprocess: recorded, shown by `info`; bad uses exit 2 with one line."""
    from vaeaug.cli import main

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}

    def start(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "vaeaug", *args], cwd=tmp_path, text=True, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    fit = start("fit", "--data", "digits", "--epochs", "2", "--augment", "classic", "--out", "a.vae",
                "--device", "cpu")
    out, err = fit.communicate(timeout=300)
    assert fit.returncode == 0, err
    assert ", augment classic)" in out, out  # the summary line names it
    assert [r["fit_augment"] for r in vaeaug.load(tmp_path / "a.vae").history] == ["classic", "classic"]
    # the rest in this process: main() is what the command runs, without another torch start-up
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--data", "digits", "--augment", "flip", "--out", str(tmp_path / "b.vae")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
    assert "--augment" in err and "invalid choice: 'flip'" in err and "classic+flip" in err, err
    assert main(["info", str(tmp_path / "a.vae")]) == 0
    assert "fit augment classic (training batches only)" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "a.vae"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fit_augment"] == "classic"
    np.savez(tmp_path / "vec.npz", x=np.random.default_rng(0).random((60, 6)).astype(np.float32))
    assert main(["fit", "--data", str(tmp_path / "vec.npz"), "--augment", "classic+flip", "--out",
                 str(tmp_path / "c.vae"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaeaug fit: error: augment='classic+flip' transforms images") and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.vae", "vec.npz"]


def test_num_classes_keeps_classes_without_a_sample() -> None:
    """A cross-validation fold may lack a class: fit(num_classes=) keeps the model's classes (tune's refits)."""
    d = vaeaug.load_builtin("digits")
    keep = d.y != 9
    x, y = d.x[keep][:200], d.y[keep][:200]
    with pytest.raises(ValueError, match="labels must be 0..C-1|got classes"):
        vaeaug.fit(x, torch.where(y == 8, torch.tensor(12), y), conditional=True, epochs=1, progress=False)
    m = vaeaug.fit(x, y, conditional=True, num_classes=10, epochs=1, progress=False)
    assert m.config.num_classes == 10
    assert m.sample(2, y=9).shape == (2, 1, 8, 8)  # the unseen class still has a decoder input
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.7 for 8 classes"):
        vaeaug.fit(x, y, conditional=True, num_classes=8, epochs=1, progress=False)


def test_streamed_targets_with_a_missing_class_are_refused(tmp_path: Path) -> None:
    """Streamed data follows the in-memory rule: targets {0, 2} without class names say what to do."""
    from torch.utils.data import Dataset

    class Gappy(Dataset):
        targets = [0, 2] * 8

        def __len__(self) -> int:
            return 16

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return torch.full((1, 8, 8), 0.5), self.targets[i]

    with pytest.raises(ValueError, match=r"every class present.*\[0, 2\].*num_classes="):
        vaeaug.fit(Gappy(), conditional=True, stream=True, epochs=1, progress=False, num_workers=0)
    m = vaeaug.fit(Gappy(), conditional=True, stream=True, num_classes=3, epochs=1, progress=False, num_workers=0)
    assert m.config.num_classes == 3


def test_interruptible_false_lets_ctrl_c_through() -> None:
    """evaluate and tune fit with interruptible=False: Ctrl-C must stop them, not leave a half-trained VAE that
    they go on using (it did: `vaeaug evaluate` kept training classifiers after a Ctrl-C in its VAE fit)."""
    def ctrl_c_on_third_batch(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        ctrl_c_on_third_batch.calls += 1  # type: ignore[attr-defined]
        if ctrl_c_on_third_batch.calls == 3:  # type: ignore[attr-defined]
            raise KeyboardInterrupt
        return x
    ctrl_c_on_third_batch.calls = 0  # type: ignore[attr-defined]
    with pytest.raises(KeyboardInterrupt):
        vaeaug.fit("digits", epochs=5, augment=ctrl_c_on_third_batch, interruptible=False, progress=False)
    ctrl_c_on_third_batch.calls = 0  # type: ignore[attr-defined]
    model = vaeaug.fit("digits", epochs=5, augment=ctrl_c_on_third_batch, progress=False)  # the default: stop
    assert len(model.history) <= 1  # stopped in its first epoch, and returned what it had


def test_evaluate_and_tune_fit_with_interruptible_false(monkeypatch: pytest.MonkeyPatch) -> None:
    from vaeaug.fitting import training
    from vaeaug.protocol import evaluation, tuning

    seen: list[bool] = []
    real = training.fit

    def spy(*a: Any, **kw: Any) -> Any:
        seen.append(kw.get("interruptible", True))
        return real(*a, **kw)
    monkeypatch.setattr(evaluation, "fit", spy)
    monkeypatch.setattr(training, "fit", spy)
    evaluation.evaluate("digits", per_class=6, seeds=1, steps=2, arms=["none"], vae_epochs=1, progress=False)
    model = real("digits", epochs=1, conditional=True, progress=False)
    d = vaeaug.load_builtin("digits")
    tuning._refit(model, d.x[:60], d.y[:60], 1, 0)
    assert seen == [False, False]
