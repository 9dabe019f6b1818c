"""Choose the augmentation setting on the user's own data, never worse than no augmentation.

A stratified validation split is carved out of the training data (never the test split). The
same small CNN is trained for the same steps on the rest under ``none`` and under each setting of
a small grid, ``repeats`` times with different seeds, with variants from a VAE of the model's
configuration refit on the training part only (no variant comes from a model that saw the
validation images). The setting with the best mean validation accuracy wins only if its paired
gain over ``none`` is larger than the noise between repeats (twice the standard error of the
paired gains or the spread of ``none``, and at least ``min_gain`` points); otherwise the choice
is ``p = 0``, and the result says so plainly. The choice is stored in the model
(``model.augment``) and saved in its file; ``VAEAugment(model)`` and ``VAEAugmentedDataset`` use
it when no explicit setting is given.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import training
from .augment import Augmenter
from .backends.torch_generator import TorchGenerator
from .classifier import train_classifier
from .data import as_tensor_data
from .model import VAE
from .settings import AugmentSetting

__all__ = ["DEFAULT_GRID", "tune"]

DEFAULT_GRID: tuple[AugmentSetting, ...] = (
    AugmentSetting("isotropic", 0.5, "delta", 0.5),
    AugmentSetting("isotropic", 1.0, "delta", 0.5),
    AugmentSetting("isotropic", 1.0, "delta", 0.25),
    AugmentSetting("posterior", 2.0, "delta", 0.5),
    AugmentSetting("posterior", 1.0, "decode", 0.5),
)


def _stratified_split(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tr, va = [], []
    for c in torch.unique(y).tolist():
        m = torch.nonzero(y == c).flatten()
        m = m[torch.randperm(len(m), generator=g)]
        k = max(1, int(round(len(m) * fraction))) if len(m) > 1 else 0
        va.append(m[:k])
        tr.append(m[k:])
    return torch.cat(tr).sort().values, torch.cat(va).sort().values


def tune(
    model: VAE,
    data: Any,
    y: Any = None,
    *,
    grid: Sequence[AugmentSetting] = DEFAULT_GRID,
    val_fraction: float = 0.3,
    steps: int = 400,
    batch_size: int = 64,
    repeats: int = 2,
    min_gain: float = 0.25,
    refit: bool = True,
    refit_epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Pick the best augmentation setting on a validation split of ``data``; store it in ``model``.

    Args:
        model: the fitted VAE (conditional or not).
        data: the training data with labels (any form :func:`vaeaug.data.as_tensor_data` takes).
        y: labels for array data.
        grid: the settings to try (``none`` is always tried).
        val_fraction: share of every class held out for validation.
        steps: optimizer steps per classifier.
        batch_size: classifier batch size.
        repeats: classifiers per setting (seeds ``seed``, ``seed + 1``, ...).
        min_gain: the smallest mean gain, in accuracy points, that counts.
        refit: fit a fresh VAE of the same configuration on the training part only, so that no
            variant is made by a model that has seen the validation images (the verdict is then
            unbiased); ``False`` uses ``model`` itself (faster, optimistic if it saw ``data``).
        refit_epochs: epochs of that fit; default: as many as ``model`` was fit for (at least 1).
        seed: seeds the split and the classifiers.
        progress: progress bar and a one-line verdict.

    Returns:
        ``{"chosen": {...} | None, "reason": str, "scores": [...], ...}``; also stored as
        ``model.tuning``, with the chosen setting (or ``p = 0``) as ``model.augment``.

    """
    if repeats < 2:
        raise ValueError(f"repeats must be >= 2 to measure the noise between repeats; got {repeats}")
    vr = model.value_range  # arrays are read in the model's recorded range (e.g. 0..16 digits floats)
    arrays = isinstance(data, (np.ndarray, torch.Tensor))
    td = as_tensor_data(data, y, value_range=(vr.low, vr.high) if arrays else None)
    if td.y is None:
        raise ValueError("tune trains classifiers and needs labels: pass y=... or a labelled dataset")
    if tuple(td.sample_shape) != tuple(model.config.input_shape):
        raise ValueError(f"the data's samples are {td.sample_shape} but the model takes {model.config.input_shape}")
    tr, va = _stratified_split(td.y, val_fraction, seed)
    x_tr, y_tr, x_va, y_va = td.x[tr], td.y[tr], td.x[va], td.y[va]
    num_classes = int(td.y.max()) + 1
    if refit:
        cfg = model.config
        epochs = refit_epochs or max(1, len(model.history))
        judge = training.fit(x_tr, y_tr, epochs=epochs, latent_dim=cfg.latent_dim,
                             conditional=cfg.num_classes is not None, widths=cfg.widths, likelihood=cfg.likelihood,
                             gaussian_std=cfg.gaussian_std, learn_std=cfg.learn_std, beta=cfg.beta,
                             kl_warmup=min(cfg.kl_warmup, epochs), patience=None, seed=seed, progress=False,
                             device=model.device, precision="fp32", distributed=False)
    else:
        judge = model
    gen = TorchGenerator(judge)
    seeds = [seed + r for r in range(repeats)]
    arms: list[tuple[str, AugmentSetting | None]] = [("none", None)] + [(s.label(), s) for s in grid]
    acc: dict[str, list[float]] = {}
    bar = tqdm(total=len(arms) * repeats, desc="tune", unit="run", disable=not progress)
    for name, setting in arms:
        acc[name] = []
        for s in seeds:
            bar.set_postfix_str(name)
            acc[name].append(train_classifier(x_tr, y_tr, x_va, y_va, num_classes=num_classes, steps=steps,
                                              batch_size=batch_size, seed=s, classic=False, flip=False,
                                              aug=Augmenter(gen, setting) if setting else None))
            bar.update()
    bar.close()
    scores: list[dict[str, Any]] = []
    for name, setting in arms:
        gains = [a - b for a, b in zip(acc[name], acc["none"], strict=True)]
        se = statistics.stdev(gains) / math.sqrt(len(gains)) if name != "none" else 0.0
        scores.append({"setting": dataclasses.asdict(setting) if setting else None, "label": name,
                       "val_accuracy": acc[name], "mean": statistics.fmean(acc[name]),
                       "gain": statistics.fmean(gains), "gain_se": se})
    best: dict[str, Any] | None = max(scores[1:], key=lambda r: float(r["mean"]), default=None)
    chosen: dict[str, Any] | None = None
    # the noise between repeats: twice the standard error of the paired gains, or the spread of
    # `none` itself, whichever is larger
    noise = 0.0 if best is None else max(2 * best["gain_se"], statistics.stdev(acc["none"]))
    if best is not None and best["gain"] > max(min_gain, noise):
        chosen = best["setting"]
        reason = (f"{best['label']} gains {best['gain']:+.2f} points over none on validation "
                  f"(noise {noise:.2f})")
    else:
        reason = ("no setting beat none beyond the noise on validation "
                  f"(best {best['label'] if best else '-'}: {best['gain'] if best else 0.0:+.2f} points, "
                  f"noise {noise:.2f}); augmentation is off (p = 0)")
    result: dict[str, Any] = {"chosen": chosen, "reason": reason, "noise": noise, "scores": scores,
                              "val_fraction": val_fraction, "steps": steps, "repeats": repeats,
                              "n_train": len(tr), "n_val": len(va), "refit": refit}
    model.tuning = result
    fallback = dataclasses.asdict(grid[0] if grid else AugmentSetting())
    model.augment = dict(chosen) if chosen else {**fallback, "p": 0.0}
    if progress:
        print(f"tune: {reason}", flush=True)
    return result
