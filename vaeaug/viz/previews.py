"""Pictures of a model on data: a labelled preview grid of variants (the charts that need no model or
data are :mod:`vaeaug.viz.plots`'; both are reached as ``vaeaug.viz.<name>``).

Preview layout: one row per real sample (the original, its reconstruction, then variants at
increasing strength in the model's default mode and form); for conditional models a block of
prior samples per class; and a latent interpolation strip between two samples.

How the charts draw (matplotlib through ``Figure`` and the Agg canvas, never pyplot; the plain
PIL curves without it): :mod:`vaeaug.viz.plots`. Every function returns a ``PIL.Image`` (shown inline
by Jupyter, written by ``.save(path)``) or, for the ``*_figure`` variants, a matplotlib ``Figure``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from vaeaug.backends.torch_backend import TorchBackend
from vaeaug.core.rng import Noise, derive_keys
from vaeaug.core.settings import resolve_setting
from vaeaug.core.values import MAX_SEED, check_int
from vaeaug.data import TensorData, as_tensor_data
from vaeaug.model.vae import VAE
from vaeaug.viz.plots import grid, stack_rows

__all__ = ["preview"]

MAX_PREVIEW_ROWS = 200  # a taller picture is no longer something a person reads


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
    check_int("seed", seed, 0, MAX_SEED)
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
    gen = TorchBackend(model)
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
    parts = [grid([[x[i], recon[i], *(c[i] for c in cols)] for i in range(len(idx))],
                   ["original", "recon", *(f"s={s:g}" for s in strengths)], row_titles,
                   f"variants: {setting.form} form, {mode} move", tile)]
    if model.conditional:
        k = model.config.num_classes or 0
        rows = [list(model.sample(per_class, y=c, generator=g)) for c in range(k)]
        parts.append(grid(rows, [""] * per_class, [label(c) for c in range(k)], "prior samples per class", tile))
    if len(idx) >= 2:
        mu, _ = model.encode(x[:2], y[:2] if y is not None else None)
        t = torch.linspace(0, 1, steps, device=mu.device)[:, None]
        z = (1 - t) * mu[0] + t * mu[1]
        yy = None if y is None else y[:1].repeat(steps)
        strip = list(model.decode(z, yy))
        parts.append(grid([strip], [f"t={v:.2f}" for v in t[:, 0].tolist()], [f"{row_titles[0]}->{row_titles[1]}"],
                           "latent interpolation", tile))
    return stack_rows(parts)
