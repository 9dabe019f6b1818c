"""The ``vaeaug`` command, run as real subprocesses (``python -m vaeaug`` and the console script).

Failures must exit with code 2 and print exactly one line on stderr, never a traceback.

Each subprocess pays for importing torch, so every invocation of this module is declared up
front in ``PHASES`` and the ``cli`` fixture runs them concurrently (phase 2 needs the model
file phase 1 writes); the tests then check the results.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import vaeaug

SCRIPT = Path(sys.executable).parent / "vaeaug"
Result = tuple[Path, subprocess.CompletedProcess[str]]


@dataclass
class Call:
    """One command line, run in its own folder ``base/<name>`` after ``setup(folder, base)``."""

    args: list[str]
    script: bool = False  # the installed console script instead of ``python -m vaeaug``
    setup: Callable[[Path, Path], None] | None = None
    cwd: str | None = None  # run in ``base/<cwd>`` instead of the call's own folder


def run(args: list[str], cwd: Path, script: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [str(SCRIPT)] if script else [sys.executable, "-m", "vaeaug"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def assert_usage_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit code 2, nothing on stdout, one line on stderr holding each fragment, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert proc.stderr.endswith("\n")
    assert lines[0].startswith("vaeaug"), lines[0]
    assert "error" in lines[0]
    for f in fragments:
        assert f.lower() in lines[0].lower(), (f, lines[0])
    assert proc.stdout == "", proc.stdout
    return lines[0]


def _size(n: int) -> str:
    return f"{n} B" if n < 1000 else f"{n / 1000:.1f} kB" if n < 1_000_000 else f"{n / 1e6:.1f} MB"


# --------------------------------------------------------------------------- set-ups


def _write_npz(d: Path, base: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(60, 10, 12), dtype=np.uint8)
    np.savez(d / "data.npz", x=x, y=np.arange(60) % 3, class_names=np.array(["cat", "dog", "eel"]))
    (d / "npz.vae").write_bytes(b"old contents")  # --force overwrites it


def _write_vector_npz(d: Path, base: Path) -> None:
    x = np.random.default_rng(1).uniform(-3, 3, size=(50, 6)).astype(np.float32)
    np.savez(d / "vec.npz", x=x)


def _write_image_folder(d: Path, base: Path) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for cls in (0, 1, 2):
        (d / "images" / f"digit{cls}").mkdir(parents=True)
        for i, im in enumerate(digits.images[digits.target == cls][:6]):
            Image.fromarray((im * 255 / 16).round().astype(np.uint8), mode="L").save(
                d / "images" / f"digit{cls}" / f"{i}.png")


def _write_unvalidated_model(d: Path, base: Path) -> None:
    x = np.random.default_rng(0).random((40, 5)).astype("float32")
    vaeaug.fit(x, epochs=1, val_fraction=0.0, progress=False, device="cpu").save(d / "nv.vae")


class _Planted:
    """Unpickling copies ``src`` to ``marker``: proof that code ran."""

    def __init__(self, src: Path, marker: Path) -> None:
        self.src, self.marker = src, marker

    def __reduce__(self) -> tuple[object, ...]:
        return (shutil.copyfile, (str(self.src), str(self.marker)))


def _write_pickles(d: Path, base: Path) -> None:
    (d / "src.txt").write_text("planted")
    with open(d / "evil.vae", "wb") as f:
        pickle.dump(_Planted(d / "src.txt", d / "PWNED"), f)


def _write_precious(d: Path, base: Path) -> None:
    (d / "keep.vae").write_bytes(b"precious bytes")
    os.utime(d / "keep.vae", (1_000_000_000, 1_000_000_000))


def _write_plain_file(d: Path, base: Path) -> None:
    (d / "notadir").write_text("a file")


# --------------------------------------------------------------------------- every invocation

FIT_1 = ["fit", "--data", "digits", "--epochs", "1", "--out", "o.vae"]

BAD_ARGS: dict[str, tuple[list[str], list[str]]] = {
    "epochs-x": (["fit", "--data", "digits", "--epochs", "x", "--out", "o.vae"], ["--epochs", "'x'"]),
    "no-out": (["fit", "--data", "digits", "--epochs", "1"], ["--out"]),
    "unknown-flag": ([*FIT_1, "--no-such-flag"], ["--no-such-flag"]),
    "no-command": ([], ["command"]),
    # accepted by argparse, refused by fit
    "widths-count": ([*FIT_1, "--no-progress", "--widths", "32,64"], ["widths"]),
    "value-range-words": ([*FIT_1, "--value-range", "low", "high"],
                          ["--value-range", "expected two numbers LOW HIGH, e.g. --value-range -1e3 1e3"]),
}

PHASES: list[dict[str, Call]] = [
    {
        "fit_digits": Call(["fit", "--data", "digits", "--epochs", "3", "--out", "X.vae"]),
        "fit_conditional": Call(["fit", "--data", "digits", "--epochs", "2", "--conditional",
                                 "--latent-dim", "4", "--out", "models/cond.vae"], script=True),
        # -3e0: a negative number argparse alone reads as an option (issue 22, 9: --value-range -1e3 1e3)
        "fit_no_progress": Call(["fit", "--data", "vec.npz", "--epochs", "1", "--value-range", "-3e0", "3",
                                 "--out", "vec.vae", "--no-progress", "--device", "cpu"],
                                setup=_write_vector_npz),
        "fit_npz": Call(["fit", "--data", "data.npz", "--epochs", "2", "--batch-size", "16",
                         "--conditional", "--out", "npz.vae", "--force", "--device", "cpu"],
                        setup=_write_npz),
        "fit_images": Call(["fit", "--data", "images", "--epochs", "2", "--batch-size", "8",
                            "--out", "img.vae", "--device", "cpu"], setup=_write_image_folder),
        "info_no_validation": Call(["info", "nv.vae"], setup=_write_unvalidated_model),
        "info_missing": Call(["info", "missing.vae"], script=True),
        "info_pickle": Call(["info", "evil.vae"], setup=_write_pickles),
        "fit_unknown_dataset": Call(["fit", "--data", "mnist-but-not-really", "--out", "o.vae"]),
        "fit_existing_out": Call(["fit", "--data", "digits", "--epochs", "1", "--out", "keep.vae"],
                                 setup=_write_precious),
        "fit_out_under_a_file": Call(["fit", "--data", "digits", "--epochs", "1", "--no-progress",
                                      "--device", "cpu", "--out", "notadir/m.vae"],
                                     setup=_write_plain_file),
        "fit_diverges": Call(["fit", "--data", "digits", "--epochs", "1", "--lr", "1e8", "--no-progress",
                              "--device", "cpu", "--out", "o.vae"]),
        **{f"bad:{k}": Call(args) for k, (args, _) in BAD_ARGS.items()},
    },
    {
        "info_text": Call(["info", "X.vae"], cwd="fit_digits"),
        "info_json": Call(["info", "X.vae", "--json"], cwd="fit_digits", script=True),
    },
]


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """Run every declared invocation, concurrently within each phase; name -> (folder, process)."""
    base = tmp_path_factory.mktemp("cli")
    results: dict[str, Result] = {}
    workers = max(2, os.cpu_count() or 2)
    for phase in PHASES:
        jobs = {}
        for name, call in phase.items():
            d = base / name.replace(":", "_")
            d.mkdir()
            if call.setup is not None:
                call.setup(d, base)
            jobs[name] = (d, base / call.cwd if call.cwd else d, call)
        with ThreadPoolExecutor(workers) as pool:
            futures = {name: pool.submit(run, call.args, cwd, call.script)
                       for name, (_, cwd, call) in jobs.items()}
            for name, fut in futures.items():
                results[name] = (jobs[name][1], fut.result())
    return results


# --------------------------------------------------------------------------- fit


def test_console_script_is_installed() -> None:
    assert SCRIPT.is_file() and os.access(SCRIPT, os.X_OK), SCRIPT
    assert "vaeaug.cli" in SCRIPT.read_text()  # the console script of this package


def test_fit_digits(cli: dict[str, Result]) -> None:
    d, proc = cli["fit_digits"]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout.splitlines()
    assert out[0].startswith("digits[train]: 1437 samples of shape (1, 8, 8)"), out
    summary = [ln for ln in out if "samples/s" in ln]
    assert len(summary) == 1 and "best val loss" in summary[0], out
    assert summary[0].startswith("fit: 1x8x8 -> latent 16") and "3 epochs" in summary[0]
    path = d / "X.vae"
    assert out[-1] == f"saved X.vae ({_size(path.stat().st_size)})", out
    model = vaeaug.load(path)
    assert model.config.input_shape == (1, 8, 8) and not model.conditional
    assert len(model.history) == 3
    assert model.class_names == [str(i) for i in range(10)]
    best = min(h["val_loss"] for h in model.history)
    assert f"best val loss {best:.2f}" in summary[0]
    assert sorted(p.name for p in d.iterdir()) == ["X.vae"]  # no temp files left


def test_fit_conditional_with_console_script(cli: dict[str, Result]) -> None:
    d, proc = cli["fit_conditional"]
    assert proc.returncode == 0, proc.stderr
    assert "samples/s" in proc.stdout and "best val loss" in proc.stdout
    assert "saved models/cond.vae" in proc.stdout
    model = vaeaug.load(d / "models" / "cond.vae")  # the parent folder was created
    assert model.conditional and model.config.num_classes == 10 and model.config.latent_dim == 4
    assert model.sample(3, 7, generator=torch.Generator().manual_seed(0)).shape == (3, 1, 8, 8)


def test_fit_vectors_with_value_range_and_no_progress_prints_nothing(cli: dict[str, Result]) -> None:
    d, proc = cli["fit_no_progress"]
    assert proc.returncode == 0, proc.stderr
    model = vaeaug.load(d / "vec.vae")
    assert model.config.input_shape == (6,) and not model.config.is_image
    assert (model.value_range.low, model.value_range.high) == (-3.0, 3.0)
    assert len(model.history) == 1
    assert proc.stderr == ""  # no progress bar
    assert proc.stdout == "", proc.stdout  # no data summary, fit summary or "saved" line


def test_fit_from_npz_and_force_overwrites(cli: dict[str, Result]) -> None:
    d, proc = cli["fit_npz"]
    assert proc.returncode == 0, proc.stderr
    assert "data.npz: 60 samples of shape (1, 10, 12), uint8 in [0, 255], 3 classes" in proc.stdout
    assert "samples/s" in proc.stdout and "saved npz.vae" in proc.stdout
    model = vaeaug.load(d / "npz.vae")
    assert model.config.input_shape == (1, 10, 12)
    assert model.config.num_classes == 3
    assert model.class_names == ["cat", "dog", "eel"]
    assert model.value_range.to_dict() == {"low": 0.0, "high": 255.0, "dtype": "uint8"}


def test_fit_from_image_folder(cli: dict[str, Result]) -> None:
    d, proc = cli["fit_images"]
    assert proc.returncode == 0, proc.stderr
    assert "images: 18 samples of shape (1, 8, 8), uint8 in [0, 255], 3 classes" in proc.stdout
    assert "samples/s" in proc.stdout and "saved img.vae" in proc.stdout
    model = vaeaug.load(d / "img.vae")
    assert model.config.input_shape == (1, 8, 8)
    assert model.class_names == ["digit0", "digit1", "digit2"]
    assert model.value_range.dtype == "uint8"


# --------------------------------------------------------------------------- info


def test_info_text(cli: dict[str, Result]) -> None:
    d, proc = cli["info_text"]
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    path = d / "X.vae"
    model = vaeaug.load(path)
    best = min(model.history, key=lambda h: h["val_loss"])
    out = proc.stdout
    assert f"X.vae ({_size(path.stat().st_size)})" in out
    assert "1x8x8 images" in out
    assert "float64 in [0, 16]" in out
    assert "conv, latent 16, widths [32], unconditional, bernoulli likelihood" in out
    assert f"{sum(p.numel() for p in model.parameters()):,} parameters" in out
    assert "classes     10: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in out
    assert f"3 epochs, best val loss {best['val_loss']:.2f} nats/sample at epoch {best['epoch']}" in out


def test_info_json(cli: dict[str, Result]) -> None:
    d, proc = cli["info_json"]
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    path = d / "X.vae"
    model = vaeaug.load(path)
    best = min(model.history, key=lambda h: h["val_loss"])
    assert info["file"] == "X.vae"
    assert info["file_size"] == path.stat().st_size
    assert info["config"] == model.config.to_dict()
    assert info["config"]["input_shape"] == [1, 8, 8]
    assert info["value_range"] == {"low": 0.0, "high": 16.0, "dtype": "float64"}
    assert info["class_names"] == [str(i) for i in range(10)]
    assert info["best_val_loss"] == best["val_loss"]
    assert info["best_epoch"] == best["epoch"]
    assert info["epochs"] == 3
    assert info["parameters"] == sum(p.numel() for p in model.parameters())


def test_info_model_without_validation(cli: dict[str, Result]) -> None:
    _, proc = cli["info_no_validation"]
    assert proc.returncode == 0, proc.stderr
    assert "5 vectors" in proc.stdout and "mlp" in proc.stdout
    assert "no validation loss recorded" in proc.stdout and "classes     none recorded" in proc.stdout


# --------------------------------------------------------------------------- failures


def test_info_missing_file(cli: dict[str, Result]) -> None:
    assert_usage_error(cli["info_missing"][1], "missing.vae", "no such model file")


def test_info_pickle_file(cli: dict[str, Result]) -> None:
    d, proc = cli["info_pickle"]
    assert_usage_error(proc, "evil.vae", "pickle", "never unpickles")
    assert not (d / "PWNED").exists()
    with open(d / "evil.vae", "rb") as f:  # control: unpickling the file does create the marker
        pickle.load(f)
    assert (d / "PWNED").exists()


def test_fit_unknown_dataset(cli: dict[str, Result]) -> None:
    d, proc = cli["fit_unknown_dataset"]
    line = assert_usage_error(proc, "unknown dataset", "mnist-but-not-really")
    assert line.startswith("vaeaug fit: error:")
    assert not (d / "o.vae").exists()


@pytest.mark.parametrize("case", list(BAD_ARGS))
def test_bad_arguments(case: str, cli: dict[str, Result]) -> None:
    d, proc = cli[f"bad:{case}"]
    assert_usage_error(proc, *BAD_ARGS[case][1])
    assert list(d.iterdir()) == []  # nothing written


def test_fit_refuses_existing_out_without_force(cli: dict[str, Result]) -> None:
    d, proc = cli["fit_existing_out"]
    assert_usage_error(proc, "keep.vae", "exists", "--force")
    out = d / "keep.vae"
    assert out.read_bytes() == b"precious bytes"
    assert out.stat().st_mtime == 1_000_000_000
    assert sorted(p.name for p in d.iterdir()) == ["keep.vae"]


def test_fit_divergence_is_a_one_line_error(cli: dict[str, Result]) -> None:
    """A diverging fit says what to change (lower lr) as one line, not as a traceback."""
    d, proc = cli["fit_diverges"]
    assert_usage_error(proc, "diverged", "lower lr")
    assert not (d / "o.vae").exists()


def test_fit_out_below_a_regular_file(cli: dict[str, Result]) -> None:
    """--out under a path component that is a file cannot be written: one line, exit 2."""
    d, proc = cli["fit_out_under_a_file"]
    assert_usage_error(proc, "notadir")
    assert (d / "notadir").read_text() == "a file"
