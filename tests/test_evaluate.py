"""The downstream-accuracy protocol on a tiny configuration, and its command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vaeaug
from vaeaug import evaluation as ev
from vaeaug.classifier import classic_augment
from vaeaug.evaluation import AugmentSetting, evaluate, reduce_per_class, report_markdown


@pytest.fixture(scope="module")
def tiny_report(monkeypatch_module: pytest.MonkeyPatch) -> tuple[dict, list, list]:
    """A 2-seed run on digits that records what the VAE was fit on and the steps per arm."""
    fitted_on: list[torch.Tensor] = []
    steps_seen: list[tuple[int, bool, bool]] = []
    real_fit, real_train = ev.fit, ev.train_classifier

    def spy_fit(x, y=None, **kw):
        fitted_on.append(x.clone())
        return real_fit(x, y, **kw)

    def spy_train(x, y, xt, yt, **kw):
        steps_seen.append((kw["steps"], kw["classic"], kw.get("aug") is not None))
        return real_train(x, y, xt, yt, **kw)

    monkeypatch_module.setattr(ev, "fit", spy_fit)
    monkeypatch_module.setattr(ev, "train_classifier", spy_train)
    report = evaluate("digits", per_class=12, seeds=2, steps=25, vae_epochs=3, progress=False,
                      extra_arms={"decode": AugmentSetting("posterior", 1.0, "decode", 0.5)})
    return report, fitted_on, steps_seen


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_reduce_per_class_is_stratified_and_seeded() -> None:
    y = vaeaug.load_builtin("digits").y
    a, b, c = reduce_per_class(y, 7, 0), reduce_per_class(y, 7, 0), reduce_per_class(y, 7, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.bincount(y[a]).tolist() == [7] * 10
    with pytest.raises(ValueError, match="fewer than per_class"):
        reduce_per_class(y, 1000, 0)


def test_vae_is_fit_only_on_the_reduced_set(tiny_report) -> None:
    report, fitted_on, _ = tiny_report
    train = vaeaug.load_builtin("digits")
    assert len(fitted_on) == 2
    for seed, x in enumerate(fitted_on):
        assert x.shape[0] == 12 * 10
        assert torch.equal(x, train.x[reduce_per_class(train.y, 12, seed)])
    assert not torch.equal(fitted_on[0], fitted_on[1])


def test_every_arm_gets_the_same_steps(tiny_report) -> None:
    report, _, steps_seen = tiny_report
    arms = report["arms"]
    assert list(arms) == ["none", "classic", "vae", "vae+classic", "decode", "decode+classic"]
    assert len(steps_seen) == 2 * len(arms)
    assert {s for s, _, _ in steps_seen} == {25}
    # classic and VAE flags per arm, in order, for each seed
    flags = [(c, g) for _, c, g in steps_seen[: len(arms)]]
    assert flags == [(False, False), (True, False), (False, True), (True, True), (False, True), (True, True)]


def test_report_fields_and_paired_gains(tiny_report) -> None:
    report, _, _ = tiny_report
    json.dumps(report)  # JSON-ready
    for name, st in report["arms"].items():
        assert set(st) == {"mean", "std", "per_seed"} and len(st["per_seed"]) == 2
        assert all(0.0 <= a <= 100.0 for a in st["per_seed"])
        assert st["mean"] == pytest.approx(np.mean(st["per_seed"]))
        if name != "none":
            gain = report["gains"][name]
            expected = [a - b for a, b in zip(st["per_seed"], report["arms"]["none"]["per_seed"], strict=True)]
            assert gain["per_seed"] == pytest.approx(expected)
            assert gain["std"] == pytest.approx(np.std(expected, ddof=1))
    assert "none" not in report["gains"]
    assert len(report["vae"]["fit_seconds"]) == 2 and all(np.isfinite(report["vae"]["best_val_loss"]))
    assert report["config"]["settings"]["vae"] == vars(ev.DEFAULT_AUGMENT)
    md = report_markdown(report)
    assert "| vae | delta isotropic s=1 p=0.5 |" in md and "paired gain over none" in md


def test_the_protocol_is_deterministic() -> None:
    kw = dict(per_class=10, seeds=[3], steps=15, vae_epochs=2, progress=False, arms=("none", "vae"))
    a, b = evaluate("digits", **kw), evaluate("digits", **kw)
    assert a["arms"] == b["arms"]


def test_classic_augment_moves_pixels_per_sample() -> None:
    x = vaeaug.load_builtin("digits").x[:1].repeat(16, 1, 1, 1)
    out = classic_augment(x, torch.Generator().manual_seed(0), flip=False)
    assert out.shape == x.shape and not torch.equal(out, x)
    assert len({o.numpy().tobytes() for o in out}) == 16  # each sample its own transform


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown arms"):
        evaluate("digits", arms=("none", "mixup"), progress=False)
    with pytest.raises(ValueError, match="test data"):
        evaluate(np.zeros((20, 8, 8), np.uint8), progress=False)


def test_cli_evaluate(tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "vaeaug", "evaluate", "--data", "digits", "--per-class", "10",
                           "--seeds", "2", "--steps", "10", "--vae-epochs", "2", "--arms", "none,vae",
                           "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert set(report["arms"]) == {"none", "vae"} and "vae" in report["gains"]
    assert (out / "report.md").read_text().strip() in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "vaeaug", "evaluate", "--data", "digits", "--arms", "none,foo",
                          "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown arms" in bad.stderr and "Traceback" not in bad.stderr
