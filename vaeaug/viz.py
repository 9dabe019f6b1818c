"""Pictures: a labelled preview grid of variants, and training curves (PIL only, no matplotlib).

Preview layout: one row per real sample (the original, its reconstruction, then variants at
increasing strength in the model's default mode and form); for conditional models a block of
prior samples per class; and a latent interpolation strip between two samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .backends.torch_generator import TorchGenerator
from .data import TensorData, as_tensor_data
from .model import VAE
from .rng import Noise, derive_keys
from .settings import resolve_setting

__all__ = ["preview", "curves"]

MAX_PREVIEW_ROWS = 200  # a taller picture is no longer something a person reads

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


def _grid(rows: list[list[torch.Tensor]], col_titles: Sequence[str], row_titles: Sequence[str], title: str,
          size: int) -> Image.Image:
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


def _stack(parts: list[Image.Image]) -> Image.Image:
    w = max(p.width for p in parts)
    out = Image.new("RGB", (w, sum(p.height for p in parts) + 8 * (len(parts) - 1)), _BG)
    y = 0
    for p in parts:
        out.paste(p, (0, y))
        y += p.height + 8
    return out


@torch.no_grad()
def preview(
    model: VAE,
    data: Any,
    *,
    n: int = 6,
    strengths: Sequence[float] = (0.5, 1.0, 2.0, 3.0),
    per_class: int = 8,
    steps: int = 8,
    seed: int = 0,
    tile: int = 40,
) -> Image.Image:
    """A labelled preview of what the model makes from ``data``.

    Args:
        model: the fitted VAE (images only).
        data: samples to show (anything :func:`vaeaug.data.as_tensor_data` takes); labels are
            needed for conditional models.
        n: real samples (rows), drawn with ``seed``.
        strengths: strengths of the variant columns, in the model's default mode and form.
        per_class: prior samples per class (conditional models).
        steps: images in the interpolation strip.
        seed: seeds the choice of samples and the noise.
        tile: minimum tile side in pixels (small images are enlarged, nearest neighbour).

    Returns:
        An RGB ``PIL.Image``.

    Example:
        >>> import vaeaug
        >>> m = vaeaug.fit("digits", epochs=1, progress=False)
        >>> preview(m, vaeaug.load_builtin("digits", split="test"), n=2).mode
        'RGB'
    """
    if not model.config.is_image:
        raise ValueError("preview shows images; this model was fit on vectors")
    td: TensorData = as_tensor_data(data)
    if td.sample_shape != tuple(model.config.input_shape):
        raise ValueError(f"the data's samples are {td.sample_shape} but the model takes {model.config.input_shape}")
    if model.conditional and td.y is None:
        raise ValueError("the model is class-conditional: the data needs labels for a preview")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= min(len(td), MAX_PREVIEW_ROWS):
        why = (f"the data has {len(td)} samples" if len(td) < MAX_PREVIEW_ROWS else
               f"a preview shows at most {MAX_PREVIEW_ROWS} rows")
        raise ValueError(f"n must be an int from 1 to {min(len(td), MAX_PREVIEW_ROWS)} ({why}); got {n!r}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(td), generator=g)[:n]
    x = td.x[idx].to(model.device)
    y = td.y[idx] if (td.y is not None and model.conditional) else None
    gen = TorchGenerator(model)
    setting = resolve_setting(model.augment)
    # the strength columns show a Gaussian move: the tuned one, else isotropic (prior, reconstruct and the
    # partner modes have no size to show on a source alone)
    mode = setting.mode if setting.mode in ("posterior", "isotropic") else "isotropic"
    keys = derive_keys(seed, np.arange(len(idx)))
    noise = Noise.from_keys(keys, gen.latent_dim)
    recon = model.reconstruct(x, y)
    cols = [gen.variants(x, y, mode=mode, strength=s, form=setting.form, noise=noise) for s in strengths]
    names = model.class_names

    def label(k: int) -> str:
        return names[k] if names and k < len(names) else str(k)

    row_titles = [label(int(td.y[i])) if td.y is not None else f"#{int(i)}" for i in idx]
    parts = [_grid([[x[i], recon[i], *(c[i] for c in cols)] for i in range(len(idx))],
                   ["original", "recon", *(f"s={s:g}" for s in strengths)], row_titles,
                   f"variants: {setting.form} form, {mode} move", tile)]
    if model.conditional:
        k = model.config.num_classes or 0
        rows = [list(model.sample(per_class, y=c, generator=g)) for c in range(k)]
        parts.append(_grid(rows, [""] * per_class, [label(c) for c in range(k)], "prior samples per class", tile))
    if len(idx) >= 2:
        mu, _ = model.encode(x[:2], y[:2] if y is not None else None)
        t = torch.linspace(0, 1, steps, device=mu.device)[:, None]
        z = (1 - t) * mu[0] + t * mu[1]
        yy = None if y is None else y[:1].repeat(steps)
        strip = list(model.decode(z, yy))
        parts.append(_grid([strip], [f"t={v:.2f}" for v in t[:, 0].tolist()], [f"{row_titles[0]}->{row_titles[1]}"],
                           "latent interpolation", tile))
    return _stack(parts)


def curves(history: Sequence[dict[str, Any]], size: tuple[int, int] = (900, 300)) -> Image.Image:
    """Training curves from ``model.history``: loss, reconstruction and KL per epoch (train and val).

    Example:
        >>> curves([{"epoch": 1, "train_loss": 3.0, "train_recon": 2.0, "train_kl": 1.0},
        ...         {"epoch": 2, "train_loss": 2.0, "train_recon": 1.5, "train_kl": 0.5}]).size
        (900, 300)
    """
    if not history:
        raise ValueError("the model has no training history to plot")
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
