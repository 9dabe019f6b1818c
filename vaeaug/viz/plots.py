"""Drawing from numbers and images alone: training curves, the evaluation's gains chart, labelled
image grids, and the overview Jupyter shows for a model (``VAE._repr_png_``).

Nothing here imports the model or the generators, so the model itself can draw its overview
(this module sits in the layer of :mod:`vaeaug.model.vae`); :mod:`vaeaug.viz.previews` adds the preview, which
runs the model on data, and re-exports everything public here.

Charts with axes (curves, gains) draw with matplotlib when it is installed (the ``plot`` extra:
``pip install 'vaeaug[plot]'``), through ``matplotlib.figure.Figure`` and the Agg canvas directly:
pyplot is never imported, so a user's backend and open figures are left alone, and it works
headless and in DataLoader workers. Without matplotlib, :func:`curves` draws its plain PIL
picture and the gains chart is not available. Every function here returns a ``PIL.Image``
(which Jupyter displays inline and ``.save(path)`` writes) or, for the ``*_figure`` variants, the
matplotlib ``Figure`` to restyle.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from vaeaug.files import MiB, read_bounded

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["curves", "curves_figure", "gains_chart", "gains_figure", "overview", "has_matplotlib", "grid", "stack_rows",
           "PLOT_EXTRA", "OVERVIEW_CLASSES"]

OVERVIEW_CLASSES = 10  # an overview shows prior samples of at most this many classes
MAX_REPORT_BYTES = 64 * MiB  # a report.json is a few kB; a larger file is not one
PLOT_EXTRA = "pip install 'vaeaug[plot]'"

_BG = (255, 255, 255)
_FG = (20, 20, 20)


def _font() -> Any:
    return ImageFont.load_default()


def _tile(x: torch.Tensor, size: int) -> Image.Image:
    """One model-space image (C, H, W) as an RGB tile of at least ``size`` pixels a side."""
    arr = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    c = arr.shape[2]
    if c == 1:
        img = Image.fromarray(arr[:, :, 0]).convert("RGB")
    elif c == 3:
        img = Image.fromarray(arr)
    else:
        rgba = Image.fromarray(arr)
        img = Image.new("RGB", rgba.size, _BG)
        img.paste(rgba, mask=rgba.split()[3])
    factor = max(1, -(-size // max(img.size)))
    return img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)


def grid(rows: list[list[torch.Tensor]], col_titles: Sequence[str], row_titles: Sequence[str], title: str,
         size: int) -> Image.Image:
    """A titled grid of image tiles: one row per list of ``(C, H, W)`` tensors in ``[0, 1]``, columns titled."""
    font = _font()
    t0 = _tile(rows[0][0], size)
    tw, th, pad = t0.width, t0.height, 4
    left = max([60] + [int(ImageDraw.Draw(t0).textlength(r, font=font)) + 8 for r in row_titles])
    top = 34
    ncol = max(len(r) for r in rows)
    col_w = max([tw] + [int(ImageDraw.Draw(t0).textlength(c, font=font)) + 4 for c in col_titles])
    img = Image.new("RGB", (left + ncol * (col_w + pad) + pad, top + len(rows) * (th + pad) + pad), _BG)
    d = ImageDraw.Draw(img)
    d.text((4, 2), title, fill=_FG, font=font)
    for j, ct in enumerate(col_titles):
        d.text((left + j * (col_w + pad) + pad, top - 14), ct, fill=_FG, font=font)
    for i, (row, rt) in enumerate(zip(rows, row_titles, strict=True)):
        y = top + i * (th + pad) + pad
        d.text((4, y + th // 2 - 6), rt, fill=_FG, font=font)
        for j, x in enumerate(row):
            img.paste(_tile(x, size), (left + j * (col_w + pad) + pad, y))
    return img


def stack_rows(parts: list[Image.Image], center: bool = False) -> Image.Image:
    """Pictures stacked top to bottom on the page background (centred or left-aligned)."""
    w = max(p.width for p in parts)
    out = Image.new("RGB", (w, sum(p.height for p in parts) + 8 * (len(parts) - 1)), _BG)
    y = 0
    for p in parts:
        out.paste(p, ((w - p.width) // 2 if center else 0, y))
        y += p.height + 8
    return out


# ----------------------------------------------------------------------------------- matplotlib


def has_matplotlib() -> bool:
    """Whether matplotlib can be imported (the ``plot`` extra), so the charts have axes and values.

    Returns:
        ``True`` when :func:`curves` draws with matplotlib and :func:`gains_chart` is available.

    Example:
        >>> isinstance(has_matplotlib(), bool)
        True
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _require_matplotlib(what: str) -> None:
    if not has_matplotlib():
        raise ImportError(f"{what} draws with matplotlib, which is not installed; install it with {PLOT_EXTRA}")


def _new_figure(size: tuple[int, int], dpi: int) -> Figure:
    """A figure of ``size`` pixels on its own Agg canvas: no pyplot, no global backend, no figure manager."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas, so fig.canvas.draw() and fig.savefig() work
    return fig


def _to_image(fig: Figure) -> Image.Image:
    """Render ``fig`` with Agg into an RGB ``PIL.Image``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")


def _check_size(size: Any, what: str = "size", minimum: tuple[int, int] = (200, 100)) -> tuple[int, int]:
    ok = (isinstance(size, (tuple, list)) and len(size) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in size))
    if not ok:
        raise TypeError(f"{what} must be (width, height) in pixels, two ints; got {size!r}")
    w, h = int(size[0]), int(size[1])
    if not (minimum[0] <= w <= 10000 and minimum[1] <= h <= 10000):
        raise ValueError(f"{what} must be from {minimum[0]}x{minimum[1]} to 10000x10000 pixels so the labels fit; "
                         f"got {w}x{h}")
    return w, h


def _check_log(log: Any) -> bool | None:
    if log is not None and not isinstance(log, bool):
        raise TypeError(f"log must be True (log scale), False (linear) or None (log where the values span more "
                        f"than a decade); got {log!r}")
    return log


# ------------------------------------------------------------------------------ training curves

_TRAIN_COLOR, _VAL_COLOR = "tab:blue", "tab:red"  # the plain drawing's colours too
_PANELS = (("loss (nats/sample)", "loss"), ("reconstruction", "recon"), ("KL", "kl"))


def _check_history(history: Any) -> list[Mapping[str, Any]]:
    if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
        raise TypeError(f"history must be a list of per-epoch dicts (model.history); got {type(history).__name__}")
    if not history:
        raise ValueError("the model has no training history to plot")
    for i, h in enumerate(history):
        if not isinstance(h, Mapping):
            raise TypeError(f"history[{i}] must be a dict of one epoch's numbers (model.history); "
                            f"got {type(h).__name__}")
        if "epoch" not in h or "train_loss" not in h:
            raise ValueError(f"history[{i}] has no 'epoch' or 'train_loss'; expected the rows of model.history "
                             f"(keys epoch, train_loss, ...), got keys {sorted(h)[:8]}")
    return list(history)


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """Epochs and values of ``key``, where it is recorded and finite."""
    pts = [(float(h["epoch"]), float(h[key])) for h in history
           if isinstance(h.get(key), (int, float)) and math.isfinite(h[key])]
    return [e for e, _ in pts], [v for _, v in pts]


def _best_epoch(history: Sequence[Mapping[str, Any]]) -> tuple[float, float] | None:
    """The epoch :func:`vaeaug.fit` keeps: the first with the lowest validation loss (``None`` without one)."""
    epochs, vals = _series(history, "val_loss")
    if not vals:
        return None
    i = min(range(len(vals)), key=vals.__getitem__)
    return epochs[i], vals[i]


def _warmup_end(history: Sequence[Mapping[str, Any]]) -> float | None:
    """The first epoch at the full KL weight, when earlier epochs had less (the KL warm-up)."""
    epochs, betas = _series(history, "beta")
    if len(betas) < 2 or max(betas) <= 0:
        return None
    top = max(betas)
    end = next(e for e, b in zip(epochs, betas, strict=True) if b >= top * (1 - 1e-9))
    return end if end > epochs[0] else None


def _scale(values: Sequence[float], log: bool | None) -> str:
    """``log`` where asked or (``log=None``) where positive values span more than a decade; ``symlog``
    where a log scale is asked for values that are not all positive (a Gaussian likelihood's NLL)."""
    positive = bool(values) and min(values) > 0
    if log is None:
        return "log" if positive and max(values) > 10 * min(values) else "linear"
    if not log:
        return "linear"
    return "log" if positive or not values else "symlog"


def _plain(v: float, _pos: Any = None) -> str:
    return f"{v:g}"


def _leading(v: float) -> int:
    """The leading digit of a positive number (2 for 0.2, 20 and 250)."""
    return int(round(v / 10 ** math.floor(math.log10(v)), 6)) if v > 0 else 0


def curves_figure(history: Sequence[Mapping[str, Any]], *, log: bool | None = None,
                  size: tuple[int, int] = (900, 300), dpi: int = 100) -> Figure:
    """The training curves as a matplotlib figure: one panel per term, train and validation per epoch.

    Panels: the loss (the ELBO's negative, nats per sample), and the reconstruction and KL terms
    where the history has them. The best epoch (lowest validation loss: the weights
    :func:`vaeaug.fit` keeps) is a dotted line, and a star on the validation loss; the KL warm-up
    (epochs with a smaller KL weight, so a lower training loss) is shaded.

    Args:
        history: ``model.history`` (one dict per epoch: ``epoch``, ``train_loss``, and where
            recorded ``val_loss``, ``train_recon``, ``val_recon``, ``train_kl``, ``val_kl``, ``beta``).
        log: ``True``: log scale (symlog for values that are not all positive); ``False``: linear;
            ``None``: log in each panel whose values span more than a decade.
        size: (width, height) in pixels.
        dpi: pixels per inch: the text is ``dpi / 72`` pixels per point.

    Returns:
        A ``matplotlib.figure.Figure`` on an Agg canvas (``fig.savefig(path)`` writes it).

    Example:
        >>> fig = curves_figure([{"epoch": 1, "train_loss": 30.0, "val_loss": 32.0},
        ...                      {"epoch": 2, "train_loss": 20.0, "val_loss": 25.0}])
        >>> [t.get_text() for t in fig.axes[0].get_legend().get_texts()][:2]
        ['train', 'validation']
    """
    hist = _check_history(history)
    w, h = _check_size(size)
    log = _check_log(log)
    if not (isinstance(dpi, int) and not isinstance(dpi, bool) and 30 <= dpi <= 600):
        raise ValueError(f"dpi must be an int from 30 to 600; got {dpi!r}")
    _require_matplotlib("curves_figure")
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    panels = [(t, k) for t, k in _PANELS if k == "loss" or any(f"train_{k}" in e or f"val_{k}" in e for e in hist)]
    fig = _new_figure((w, h), dpi)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    best = _best_epoch(hist)
    warm = _warmup_end(hist)
    first = float(hist[0]["epoch"])
    markers = len(hist) <= 30  # few epochs: show each one
    for ax, (title, key) in zip(axes, panels, strict=True):
        values: list[float] = []
        for prefix, label, color in (("train", "train", _TRAIN_COLOR), ("val", "validation", _VAL_COLOR)):
            ep, v = _series(hist, f"{prefix}_{key}")
            if ep:
                ax.plot(ep, v, color=color, label=label, lw=1.5, marker="o" if markers else None, ms=2.5)
                values += v
        if warm is not None:
            ax.axvspan(first, warm, color="0.92", zorder=0, label="KL warm-up")
        if best is not None:
            ax.axvline(best[0], color="0.3", ls=":", lw=1.2, label=f"best epoch {best[0]:g}")
            if key == "loss":
                ax.plot([best[0]], [best[1]], ls="none", marker="*", ms=9, color=_VAL_COLOR, mec="black", mew=0.5)
        scale = _scale(values, log)
        ax.set_yscale(scale)
        if scale == "log":  # plain numbers (2, 5, 10, 20), not powers of ten, on the few decades a loss spans
            ax.yaxis.set_major_formatter(FuncFormatter(_plain))
            shown = (1, 2, 3, 4, 5, 6, 7, 8, 9) if max(values) < 10 * min(values) else \
                (2, 5) if max(values) < 100 * min(values) else ()
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _, shown=shown: _plain(v) if _leading(v) in shown
                                                       else ""))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7, which="both")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("nats per sample", fontsize=8)
    axes[0].legend(fontsize=7, framealpha=0.8)
    return fig


def curves(history: Sequence[Mapping[str, Any]], size: tuple[int, int] = (900, 300), *,
           log: bool | None = None) -> Image.Image:
    """Training curves from ``model.history``: loss, reconstruction and KL per epoch (train and val).

    With matplotlib installed: :func:`curves_figure` (axes with values, a legend, the best epoch
    marked, log scale where the values span more than a decade). Without it: a plain PIL drawing
    of the same lines, the extremes written beside them (``log`` is then ignored).

    Args:
        history: ``model.history``, one dict per epoch.
        size: (width, height) of the picture in pixels.
        log: ``True`` log scale, ``False`` linear, ``None`` automatic (see :func:`curves_figure`).

    Returns:
        An RGB ``PIL.Image`` of ``size`` pixels.

    Example:
        >>> curves([{"epoch": 1, "train_loss": 3.0, "train_recon": 2.0, "train_kl": 1.0},
        ...         {"epoch": 2, "train_loss": 2.0, "train_recon": 1.5, "train_kl": 0.5}]).size
        (900, 300)
    """
    hist = _check_history(history)
    w, h = _check_size(size)
    log = _check_log(log)
    if not has_matplotlib():
        return _curves_plain(hist, (w, h))
    img = _to_image(curves_figure(hist, log=log, size=(w, h)))
    return img if img.size == (w, h) else img.resize((w, h), Image.Resampling.LANCZOS)  # float rounding of inches


# --------------------------------------------------------------------------- evaluation's gains

_REFERENCES = (("gains", "none"), ("gains_over_classic", "classic"), ("gains_over_oversample", "oversample"),
               ("gains_over_oversample_classic", "oversample+classic"))
_GAIN_COLOR, _LOSS_COLOR = "#4c9a5b", "#c8524a"


def _read_report(report: Any) -> dict[str, Any]:
    """A report dict, or one read from a ``report.json`` file or a folder holding one."""
    if isinstance(report, (str, os.PathLike)):
        path = Path(report)
        if path.is_dir():
            path = path / "report.json"
        raw = read_bounded(path, "evaluation report", max_bytes=MAX_REPORT_BYTES)
        try:
            report = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{str(path)!r} is not a JSON report ({e}); give the report.json vaeaug evaluate "
                             "wrote") from None
        where = f"{str(path)!r}"
    elif isinstance(report, Mapping):
        where = "the report"
    else:
        raise TypeError(f"report must be a report dict from vaeaug.evaluate or the path of a report.json; "
                        f"got {type(report).__name__}")
    if not isinstance(report, Mapping) or not isinstance(report.get("config"), Mapping) \
            or not isinstance(report.get("gains"), Mapping):
        keys = sorted(report)[:8] if isinstance(report, Mapping) else type(report).__name__
        raise ValueError(f"{where} is not an evaluation report: expected a dict with 'gains' and 'config' as "
                         f"vaeaug.evaluate returns; got {keys}")
    seeds = report["config"].get("seeds")
    if not isinstance(seeds, list) or not seeds:
        raise ValueError(f"{where} has no list of seeds in its config; expected config['seeds'] as vaeaug.evaluate "
                         f"writes, got {seeds!r}")
    for key, _ in _REFERENCES:
        for arm, st in (report.get(key) or {}).items():
            ok = isinstance(st, Mapping) and all(
                isinstance(st.get(f), (int, float)) and math.isfinite(st[f]) for f in ("mean", "std")) \
                and isinstance(st.get("per_seed"), list) \
                and all(isinstance(v, (int, float)) for v in st["per_seed"])
            if not ok:
                raise ValueError(f"{where}: {key}[{arm!r}] must be {{'mean': number, 'std': number, 'per_seed': "
                                 f"[numbers]}} as vaeaug.evaluate writes; got {st!r}"[:300])
    return dict(report)


def gains_figure(report: Mapping[str, Any] | str | os.PathLike[str], *, size: tuple[int, int] | None = None,
                 dpi: int = 100) -> Figure:
    """The evaluation's paired gains as bars with error bars: one panel per reference arm.

    A panel per reference the report has (``none``; ``classic`` and ``oversample`` where they
    ran), one bar per other arm: the mean over seeds of the per-seed difference "arm minus
    reference" (every arm of a seed shares its data subset, validation split, VAE and classifier
    initialisation), an error bar of ± one standard deviation of those differences over the
    seeds, and a dot per seed. Green bars gain, red bars lose.

    Args:
        report: what :func:`vaeaug.evaluate` returns, or the path of the ``report.json`` that
            ``vaeaug evaluate --out DIR`` wrote (or of ``DIR``).
        size: (width, height) in pixels; default: wide enough for the bars.
        dpi: pixels per inch: the text is ``dpi / 72`` pixels per point.

    Returns:
        A ``matplotlib.figure.Figure`` on an Agg canvas (``fig.savefig(path)`` writes it).

    Example:
        >>> report = {"config": {"seeds": [0, 1], "metric": "accuracy", "data": "digits", "per_class": 20},
        ...           "arms": {"none": {}, "vae": {}},
        ...           "gains": {"vae": {"mean": 1.5, "std": 0.5, "per_seed": [1.0, 2.0]}}}
        >>> fig = gains_figure(report)
        >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
        ['vae']
    """
    rep = _read_report(report)
    if not (isinstance(dpi, int) and not isinstance(dpi, bool) and 30 <= dpi <= 600):
        raise ValueError(f"dpi must be an int from 30 to 600; got {dpi!r}")
    panels = [(key, ref, rep[key]) for key, ref in _REFERENCES if rep.get(key)]
    if not panels:
        raise ValueError("the report has no gains to draw: it ran only one arm; evaluate at least two "
                         "(e.g. arms none and vae)")
    _require_matplotlib("gains_figure")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    cfg = rep["config"]
    metric = cfg.get("metric") or ("balanced accuracy" if cfg.get("imbalance") else "accuracy")
    n_seeds = len(cfg["seeds"])
    counts = [len(g) for _, _, g in panels]
    if size is None:
        size = (int(80 + sum(110 + 85 * n for n in counts)), 440)
    w, h = _check_size(size, minimum=(200, 150))
    fig = _new_figure((w, h), dpi)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True,
                        gridspec_kw={"width_ratios": [n + 0.8 for n in counts]})[0]
    order = list(rep.get("arms") or {})
    for ax, (_, ref, gains) in zip(axes, panels, strict=True):
        names = [a for a in order if a in gains] + [a for a in gains if a not in order]
        means = [float(gains[a]["mean"]) for a in names]
        stds = [float(gains[a]["std"]) for a in names]
        x = np.arange(len(names), dtype=float)
        ax.bar(x, means, width=0.6, yerr=stds, capsize=6, color=[_GAIN_COLOR if m >= 0 else _LOSS_COLOR
                                                                 for m in means],
               alpha=0.8, edgecolor="0.2", linewidth=0.8, error_kw={"elinewidth": 1.3, "ecolor": "0.1"})
        for i, a in enumerate(names):
            pts = [float(v) for v in gains[a]["per_seed"]]
            offsets = np.linspace(-0.14, 0.14, len(pts)) if len(pts) > 1 else np.zeros(1)
            ax.plot(x[i] + offsets[: len(pts)], pts, ls="none", marker="o", ms=4, mfc="white", mec="black",
                    mew=1.0, zorder=3)
            top = means[i] + stds[i] if means[i] >= 0 else means[i] - stds[i]
            ext = max(pts + [top]) if means[i] >= 0 else min(pts + [top])
            ax.annotate(f"{means[i]:+.2f} ± {stds[i]:.2f}", (x[i], ext), xytext=(0, 4 if means[i] >= 0 else -4),
                        textcoords="offset points", ha="center", va="bottom" if means[i] >= 0 else "top",
                        fontsize=8)
        ax.axhline(0.0, color="0.2", lw=0.9)
        rotate = max(len(n) for n in names) > 9 and len(names) > 2
        ax.set_xticks(x, names, rotation=25 if rotate else 0, ha="right" if rotate else "center", fontsize=9)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.margins(y=0.18)
        ax.set_title(f"vs {ref}", fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel(f"paired gain in test {metric} (points)", fontsize=9)
    handles = [Patch(facecolor=_GAIN_COLOR, edgecolor="0.2", alpha=0.8, label=f"mean over {n_seeds} seeds"),
               Line2D([], [], color="0.1", marker="_", ms=10, mew=1.3, lw=1.3, label="± std over seeds"),
               Line2D([], [], ls="none", marker="o", ms=4, mfc="white", mec="black", label="one seed")]
    axes[0].legend(handles=handles, fontsize=7, loc="best", framealpha=0.85)
    data = Path(str(cfg.get("data", "?"))).name or str(cfg.get("data"))
    per_class = f", {cfg['per_class']} per class" if cfg.get("per_class") else ""
    imb = f" (imbalance {cfg['imbalance']:g})" if isinstance(cfg.get("imbalance"), (int, float)) else ""
    spread = "" if n_seeds > 1 else " (1 seed: no spread)"
    fig.suptitle(f"Paired gains in test {metric}, {n_seeds} seed{'s' if n_seeds != 1 else ''}{spread}: "
                 f"{data}{per_class}{imb}", fontsize=10)
    return fig


def gains_chart(report: Mapping[str, Any] | str | os.PathLike[str], *,
                size: tuple[int, int] | None = None) -> Image.Image:
    """The evaluation's paired gains per arm as a picture (:func:`gains_figure`; needs matplotlib).

    Args:
        report: a :func:`vaeaug.evaluate` report, or the path of its ``report.json`` (or folder).
        size: (width, height) in pixels; default: wide enough for the bars.

    Returns:
        An RGB ``PIL.Image``; ``.save("gains.png")`` writes it.

    Example:
        >>> report = {"config": {"seeds": [0, 1, 2], "metric": "accuracy"},
        ...           "gains": {"vae": {"mean": 1.0, "std": 0.8, "per_seed": [0.2, 1.0, 1.8]}},
        ...           "gains_over_classic": {"vae": {"mean": 0.3, "std": 0.4, "per_seed": [0.0, 0.2, 0.7]}}}
        >>> gains_chart(report).mode
        'RGB'
    """
    fig = gains_figure(report, size=size)
    img = _to_image(fig)
    if size is not None and img.size != tuple(size):
        img = img.resize((int(size[0]), int(size[1])), Image.Resampling.LANCZOS)
    return img


# ---------------------------------------------------------------------------------- a model


def _shrink(x: torch.Tensor, side: int) -> torch.Tensor:
    """Images ``(N, C, H, W)`` no larger than ``side`` pixels a side (smaller ones unchanged)."""
    big = max(x.shape[-2:])
    if big <= side:
        return x
    return torch.nn.functional.interpolate(x.float().cpu(), scale_factor=side / big, mode="bilinear",
                                           antialias=True).clamp(0, 1)


@torch.no_grad()
def overview(model: Any, *, per_class: int = 10, seed: int = 0, width: int = 720) -> Image.Image:
    """A model at a glance, from the model alone (no data): its training curves and prior samples.

    What Jupyter shows for a :class:`~vaeaug.model.vae.VAE` (its ``_repr_png_``). The curves are
    :func:`curves` of ``model.history`` (when the model was fit); the samples are decoded from
    the prior, ``per_class`` for each class of a conditional model (the first
    ``OVERVIEW_CLASSES`` classes), two rows for an unconditional one (image models only).

    Args:
        model: a :class:`~vaeaug.model.vae.VAE`.
        per_class: prior samples per row, 1 to 32.
        seed: seeds the prior samples (the same picture every time).
        width: width of the curves in pixels (their height is a third of it).

    Returns:
        An RGB ``PIL.Image``.

    Example:
        >>> import vaeaug
        >>> overview(vaeaug.fit("digits", epochs=1, progress=False), per_class=4).mode
        'RGB'
    """
    if type(model).__name__ != "VAE" or not all(hasattr(model, a) for a in ("history", "config", "sample")):
        raise TypeError(f"overview draws a vaeaug VAE; got {type(model).__name__} (load one with vaeaug.load)")
    if not (isinstance(per_class, int) and not isinstance(per_class, bool) and 1 <= per_class <= 32):
        raise ValueError(f"per_class must be an int from 1 to 32; got {per_class!r}")
    parts = []
    if model.history:
        parts.append(curves(model.history, size=_check_size((width, width // 3), "(width, width // 3)")))
    if model.config.is_image:
        g = torch.Generator().manual_seed(seed)
        k = model.config.num_classes or 0
        names = model.class_names
        if k:
            shown = min(k, OVERVIEW_CLASSES)
            rows = [list(_shrink(model.sample(per_class, y=c, generator=g), 48)) for c in range(shown)]
            titles = [names[c] if names and c < len(names) else str(c) for c in range(shown)]
            title = "prior samples per class" + (f" (the first {shown} of {k} classes)" if shown < k else "")
        else:
            flat = list(_shrink(model.sample(2 * per_class, generator=g), 48))
            rows, titles, title = [flat[:per_class], flat[per_class:]], ["", ""], "prior samples"
        parts.append(grid(rows, [""] * per_class, titles, title, 24))
    if not parts:
        raise ValueError("nothing to show: the model has no training history and models vectors (no images "
                         "to sample); fit it first")
    return stack_rows(parts, center=True)


def _curves_plain(history: Sequence[Mapping[str, Any]], size: tuple[int, int]) -> Image.Image:
    """The curves without matplotlib: PIL lines in three boxes, the extremes written beside them."""
    font = _font()
    img = Image.new("RGB", size, _BG)
    d = ImageDraw.Draw(img)
    panels = [("loss (nats/sample)", "loss"), ("reconstruction", "recon"), ("KL", "kl")]
    w = size[0] // 3
    epochs = [h["epoch"] for h in history]
    for p, (title, key) in enumerate(panels):
        x0, y0, x1, y1 = p * w + 50, 24, (p + 1) * w - 12, size[1] - 30
        d.rectangle([x0, y0, x1, y1], outline=_FG)
        d.text((x0, 6), title, fill=_FG, font=font)
        series = [(f"train_{key}", (31, 119, 180)), (f"val_{key}", (214, 39, 40))]
        vals = [h[s] for s, _ in series for h in history if s in h]
        lo, hi = min(vals), max(vals)
        hi = hi if hi > lo else lo + 1.0
        for s, color in series:
            pts = [(x0 + (x1 - x0) * (e - epochs[0]) / max(1, epochs[-1] - epochs[0]),
                    y1 - (y1 - y0) * (h[s] - lo) / (hi - lo)) for e, h in zip(epochs, history, strict=True) if s in h]
            if len(pts) > 1:
                d.line(pts, fill=color, width=2)
            elif pts:
                d.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=color)
        d.text((p * w + 4, y0), f"{hi:.1f}", fill=_FG, font=font)
        d.text((p * w + 4, y1 - 10), f"{lo:.1f}", fill=_FG, font=font)
        d.text((x0, y1 + 6), f"epoch {epochs[0]}", fill=_FG, font=font)
        d.text((x1 - 50, y1 + 6), f"epoch {epochs[-1]}", fill=_FG, font=font)
    d.text((size[0] - 150, size[1] - 14), "train", fill=(31, 119, 180), font=font)
    d.text((size[0] - 100, size[1] - 14), "val", fill=(214, 39, 40), font=font)
    return img
