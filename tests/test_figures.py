"""Figures people can read (issue 15): training curves with axes (matplotlib, and the plain PIL drawing
without it), the evaluation's gains chart, ``vaeaug evaluate``'s gains.png and Jupyter's inline PNGs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import vaeaug
from vaeaug import viz
from vaeaug.cli import main
from vaeaug.model.vae import VAE, VAEConfig
from vaeaug.viz import plots

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _helpers import digits_conditional_model  # noqa: E402

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _history(n: int = 12, *, start: float = 400.0, warmup: int = 4, val: bool = True) -> list[dict[str, Any]]:
    """A fit's history: the loss falls from ``start`` to about 20 (over a decade), the KL weight rises
    over ``warmup`` epochs, the validation loss is lowest at epoch ``n - 2``."""
    rows = []
    for e in range(1, n + 1):
        loss = 20.0 + (start - 20.0) * 0.5 ** (e - 1)
        row: dict[str, Any] = {"epoch": e, "beta": min(1.0, e / warmup), "train_loss": loss,
                               "train_recon": 0.8 * loss, "train_kl": 0.2 * loss}
        if val:
            v = loss + 2.0 + (3.0 if e > n - 2 else 0.0)  # rises again after epoch n - 2
            row.update(val_loss=v, val_recon=0.8 * v, val_kl=0.2 * v)
        rows.append(row)
    return rows


def _png(data: bytes) -> Image.Image:
    assert data[:8] == PNG_SIGNATURE
    img = Image.open(io.BytesIO(data))
    img.load()
    assert img.format == "PNG"
    return img


def _report(seeds: int = 3, imbalance: float | None = None) -> dict[str, Any]:
    """A report shaped as vaeaug.evaluate returns it, with distinct gains and spreads per arm."""
    rng = np.random.default_rng(0)
    arms = ["none", "classic", "vae", "vae+classic"] + (["oversample"] if imbalance else [])
    acc = {a: (80 + rng.normal(0, 2, seeds)).tolist() for a in arms}

    def stats(v: list[float]) -> dict[str, Any]:
        return {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "per_seed": v}

    rep: dict[str, Any] = {"arms": {a: stats(acc[a]) for a in arms}}
    refs = [("gains", "none"), ("gains_over_classic", "classic")] + \
        ([("gains_over_oversample", "oversample")] if imbalance else [])
    for key, ref in refs:
        rep[key] = {a: stats([x - y for x, y in zip(acc[a], acc[ref], strict=True)]) for a in arms if a != ref}
    rep["config"] = {"data": "digits", "per_class": 20, "imbalance": imbalance, "seeds": list(range(seeds)),
                     "metric": "balanced accuracy" if imbalance else "accuracy"}
    return rep


# ------------------------------------------------------------------------------- training curves


def test_curves_figure_has_axes_with_values_a_legend_and_the_best_epoch() -> None:
    hist = _history()
    fig = viz.curves_figure(hist)
    fig.canvas.draw()  # an Agg canvas is attached: drawing works without pyplot
    assert [ax.get_title() for ax in fig.axes] == ["loss (nats/sample)", "reconstruction", "KL"]
    for ax in fig.axes:
        assert ax.get_xlabel() == "epoch"
        assert [t.get_text() for t in ax.get_xticklabels() if t.get_text()], "x ticks have no values"
        labels = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True) if t.get_text()]
        assert labels, f"{ax.get_title()}: y ticks have no values"
        assert ax.get_yscale() == "log"  # 420 -> 20 nats: more than a decade
    assert fig.axes[0].get_ylabel() == "nats per sample"
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[:2] == ["train", "validation"]
    assert "best epoch 10" in legend and "KL warm-up" in legend  # lowest val_loss; beta < 1 before epoch 4
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    assert list(lines["train"].get_xdata()) == list(range(1, 13))
    assert list(lines["validation"].get_ydata()) == [h["val_loss"] for h in hist]
    star = [ln for ln in fig.axes[0].get_lines() if ln.get_marker() == "*"]
    assert len(star) == 1 and list(star[0].get_xdata()) == [10.0]
    assert list(lines["best epoch 10"].get_xdata()) == [10.0, 10.0]


def test_curves_scale_auto_log_or_linear_and_panels_follow_the_history() -> None:
    flat = _history(start=30.0)  # 30 -> 20: under a decade
    assert [ax.get_yscale() for ax in viz.curves_figure(flat).axes] == ["linear"] * 3
    assert [ax.get_yscale() for ax in viz.curves_figure(flat, log=True).axes] == ["log"] * 3
    assert [ax.get_yscale() for ax in viz.curves_figure(_history(), log=False).axes] == ["linear"] * 3
    gaussian = [dict(h, train_recon=-h["train_recon"], val_recon=-h["val_recon"]) for h in flat]
    assert viz.curves_figure(gaussian, log=True).axes[1].get_yscale() == "symlog"  # not all positive
    only_loss = [{"epoch": e, "train_loss": 10.0 / e} for e in (1, 2, 3)]  # no val, no terms
    fig = viz.curves_figure(only_loss)
    assert len(fig.axes) == 1
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["train"]


def test_curves_png_of_a_fitted_model() -> None:
    model = digits_conditional_model()
    img = viz.curves(model.history)
    assert img.mode == "RGB" and img.size == (900, 300)
    assert viz.curves(model.history, (600, 240), log=True).size == (600, 240)
    arr = np.asarray(img)
    blue = ((arr[..., 2] > 150) & (arr[..., 0] < 80)).sum()
    red = ((arr[..., 0] > 180) & (arr[..., 1] < 80)).sum()
    assert blue > 50 and red > 50


def test_curves_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="no training history"):
        viz.curves([])
    with pytest.raises(TypeError, match="list of per-epoch dicts"):
        viz.curves("history")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'epoch' or 'train_loss'"):
        viz.curves([{"loss": 1.0}])
    with pytest.raises(TypeError, match="log must be True"):
        viz.curves(_history(), log="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size must be from"):
        viz.curves(_history(), (50, 50))


def test_without_matplotlib_curves_are_the_plain_pil_drawing(monkeypatch: pytest.MonkeyPatch) -> None:
    hist = digits_conditional_model().history
    plain = plots._curves_plain(hist, (900, 300))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    assert not viz.has_matplotlib()
    img = viz.curves(hist)
    assert img.size == (900, 300)
    assert np.array_equal(np.asarray(img), np.asarray(plain))
    arr = np.asarray(img)
    assert ((arr[..., 2] > 150) & (arr[..., 0] < 80)).sum() > 50  # the train line, blue
    assert ((arr[..., 0] > 180) & (arr[..., 1] < 80)).sum() > 50  # the validation line, red
    with pytest.raises(ImportError, match=r"vaeaug\[plot\]"):
        viz.curves_figure(hist)
    with pytest.raises(ImportError, match=r"vaeaug\[plot\]"):
        viz.gains_chart(_report())


def test_the_charts_leave_pyplot_and_the_backend_alone(tmp_path: Path) -> None:
    code = ("import sys, matplotlib\n"
            "matplotlib.use('pdf')\n"
            "from vaeaug import viz\n"
            "viz.curves([{'epoch': 1, 'train_loss': 3.0}, {'epoch': 2, 'train_loss': 2.0}])\n"
            f"viz.gains_chart({_report()!r})\n"
            "assert 'matplotlib.pyplot' not in sys.modules\n"
            "assert matplotlib.get_backend() == 'pdf', matplotlib.get_backend()\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, timeout=120)


# --------------------------------------------------------------------------------- gains chart


def _bars(ax: Any) -> Any:
    from matplotlib.container import BarContainer

    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    return bars


def test_gains_figure_one_bar_per_arm_and_error_bars_are_the_stds() -> None:
    rep = _report(seeds=3)
    fig = viz.gains_figure(rep)
    fig.canvas.draw()
    assert [ax.get_title() for ax in fig.axes] == ["vs none", "vs classic"]
    for ax, key in zip(fig.axes, ("gains", "gains_over_classic"), strict=True):
        gains = rep[key]
        assert [t.get_text() for t in ax.get_xticklabels()] == list(gains)  # one bar per arm, report order
        bars = _bars(ax)
        assert len(bars.patches) == len(gains)
        assert [p.get_height() for p in bars.patches] == pytest.approx([g["mean"] for g in gains.values()])
        segments = bars.errorbar.lines[2][0].get_segments()
        assert len(segments) == len(gains)
        for seg, g in zip(segments, gains.values(), strict=True):
            (_, lo), (_, hi) = seg
            assert (lo, hi) == pytest.approx((g["mean"] - g["std"], g["mean"] + g["std"]))
        dots = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
        assert [list(d.get_ydata()) for d in dots] == [pytest.approx(g["per_seed"]) for g in gains.values()]
    assert "accuracy" in fig.axes[0].get_ylabel()
    title = fig.get_suptitle()
    assert "test accuracy" in title and "3 seeds" in title and "digits" in title


def test_gains_chart_reads_report_json_and_imbalanced_reports(tmp_path: Path) -> None:
    rep = _report(seeds=2, imbalance=10.0)
    (tmp_path / "report.json").write_text(json.dumps(rep))
    for source in (tmp_path / "report.json", str(tmp_path)):  # the file, or the folder holding it
        fig = viz.gains_figure(source)
        assert [ax.get_title() for ax in fig.axes] == ["vs none", "vs classic", "vs oversample"]
        assert "balanced accuracy" in fig.get_suptitle() and "2 seeds" in fig.get_suptitle()
    img = viz.gains_chart(tmp_path / "report.json")
    assert img.mode == "RGB" and img.width > img.height
    assert viz.gains_chart(rep, size=(700, 300)).size == (700, 300)
    one = _report(seeds=1)
    assert "1 seed" in viz.gains_figure(one).get_suptitle()
    assert [s[1][1] - s[0][1] for s in _bars(viz.gains_figure(one).axes[0]).errorbar.lines[2][0].get_segments()] \
        == [0.0, 0.0, 0.0]


def test_gains_chart_rejects_what_is_not_a_report(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="report dict"):
        viz.gains_chart(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'gains' and 'config'"):
        viz.gains_chart({"arms": {}})
    with pytest.raises(ValueError, match="no list of seeds"):
        viz.gains_chart({"gains": {}, "config": {}})
    with pytest.raises(ValueError, match="only one arm"):
        viz.gains_chart({"arms": {"none": {}}, "gains": {}, "gains_over_classic": {}, "config": {"seeds": [0]}})
    bad = _report()
    bad["gains"]["vae"] = {"mean": "big"}
    with pytest.raises(ValueError, match=r"gains\['vae'\]"):
        viz.gains_chart(bad)
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON report"):
        viz.gains_chart(tmp_path / "report.json")
    with pytest.raises(FileNotFoundError):
        viz.gains_chart(tmp_path / "missing.json")


def test_cli_evaluate_writes_gains_png(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "report"
    args = ["evaluate", "--data", "digits", "--per-class", "5", "--seeds", "2", "--steps", "20", "--vae-epochs", "2",
            "--out", str(out), "--no-progress"]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    with Image.open(out / "gains.png") as im:
        assert im.format == "PNG" and im.width > 400 and im.height > 200
    md = (out / "report.md").read_text()
    assert "![Paired gains in test accuracy" in md and "(gains.png)" in md
    assert md.strip() in stdout and "gains.png" in stdout.splitlines()[-1]
    # the chart draws the written report
    fig = viz.gains_figure(out)
    report = json.loads((out / "report.json").read_text())
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list(report["gains"]) == \
        ["classic", "vae", "vae+classic"]
    # without matplotlib: the report without the chart, and no stale chart of the earlier run
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert not (out / "gains.png").exists() and "gains.png" not in (out / "report.md").read_text()
    assert "no gains.png" in stdout and "vaeaug[plot]" in stdout


def test_cli_fit_curves_scale_and_plain_note(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    png = tmp_path / "curves.png"
    base = ["fit", "--data", "digits", "--epochs", "2", "--out", str(tmp_path / "m.vae"), "--force", "--curves",
            str(png)]
    assert main([*base, "--curves-scale", "log"]) == 0
    assert f"wrote {png}\n" in capsys.readouterr().out
    with Image.open(png) as im:
        assert im.size == (900, 300)
    with pytest.raises(SystemExit) as exit_code:
        main([*base, "--curves-scale", "sideways"])
    assert exit_code.value.code == 2
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(base) == 0
    assert "plain drawing" in capsys.readouterr().out


# ------------------------------------------------------------------------------------- Jupyter


def test_a_model_displays_in_jupyter_as_curves_and_prior_samples() -> None:
    model = digits_conditional_model()
    img = _png(model._repr_png_())
    curves_only = viz.curves(model.history, size=(720, 240))
    assert img.width == 720 and img.height > curves_only.height + 10 * 24  # a row of samples per class
    assert np.array_equal(np.asarray(img.convert("RGB"))[:240], np.asarray(curves_only))
    assert model._repr_png_() == model._repr_png_()  # the same picture every time
    assert not model.training  # displaying leaves the model as it was


def test_display_of_unfit_and_vector_models() -> None:
    image = VAE(VAEConfig(input_shape=(1, 8, 8), latent_dim=4, num_classes=3))
    img = _png(image._repr_png_())  # never fit: prior samples only
    assert img.height < 200
    vectors = VAE(VAEConfig(input_shape=(5,), latent_dim=2))
    assert vectors._repr_png_() is None  # never fit and nothing to sample as a picture: the text repr
    vectors.history = _history(3)
    assert _png(vectors._repr_png_()).size == (720, 240)  # the curves
    big = VAE(VAEConfig(input_shape=(3, 64, 64), latent_dim=4))
    assert _png(big._repr_png_()).width < 800  # large images are shrunk to small tiles
    with pytest.raises(TypeError, match="vaeaug VAE"):
        viz.overview(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="per_class"):
        viz.overview(image, per_class=0)


def test_preview_displays_in_jupyter() -> None:
    model = digits_conditional_model()
    img = viz.preview(model, vaeaug.load_builtin("digits", split="test"), n=2, strengths=(1.0,), per_class=2,
                      steps=3)
    shown = _png(img._repr_png_())  # what Jupyter calls for a PIL image
    assert shown.size == img.size
