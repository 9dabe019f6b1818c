"""Choose the augmentation setting on the user's own data: cross-validated, paired, and cheap.

The reduced training set is split into ``folds`` stratified folds (never the test split). For
each fold a VAE of the model's configuration is refit on the other folds only, so no variant is
made by a model that has seen the images it is judged on; the protocol's classifier trains on
the other folds (to convergence on a small inner validation slice) and is scored on the fold.
Every candidate of a fold and repeat shares the data, the VAE, the initialisation and the
batches, so its gain over ``none`` is a paired difference.

The score is per image, not 0/1 accuracy: each held-out image's true-class log-loss (capped at
:data:`MAX_LOSS`) or, with ``score="brier"``, its multi-class Brier score, paired image by image
with the reference's classifier of the same fold and repeat; the mean over the fold's images is one
unit. Accuracy over a hundred images moves in steps of a point and flips with the classifier's seed;
a paired continuous score sees a one-point gain. The Brier score is bounded, so a few confidently
wrong images cannot dominate a unit: more power on a hundred images, and more false positives on
candidates too weak to matter (BENCHMARKS.md, issue 21), hence not the default. With ``calibrate=True``
each run's predictions are first temperature-scaled on its fold (:func:`temperature_scale`), so that the
score measures how well the true class is ranked, not how confident the classifier is: an over-confident
reference (no augmentation) is no longer charged for its confidence (an option: not better on average
over five measured tables, BENCHMARKS.md, issue 21).

Each classifier stops on a small inner slice, and which check that slice happens to pick is a
large part of the noise between units (on 13 of 20 measured seeds a fold's units varied between
classifier seeds at least as much as the fold means varied). So a held-out image is scored by the
mean predictions of the checks from the best one to the stop, the plateau (``average=True``): on
the same runs this halved the spread of the accuracy units, and of the log-loss and Brier units on
most rows (BENCHMARKS.md, issue 21).

Successive halving keeps it cheap: every candidate runs on the first fold; the better half goes on
to the other folds; the best of those is the finalist, which runs again with ``repeats - 1`` fresh
classifier seeds on every fold. "Best" ranks the candidates the verdict could accept first (no mean
accuracy loss so far), then by the paired log-loss gain: a candidate that lowers the log-loss while
losing accuracy (a regulariser that only makes the classifier less confident) would fail the verdict
and must not take the finalist's place from one that could pass it. The finalist is chosen only if
a one-sided t-test over its (fold, repeat) units of paired log-loss rejects "no gain" at level
``alpha`` and its mean accuracy gain is at least ``min_gain`` (0: no accuracy loss); otherwise the
reference stays, and the result says so plainly. The selection before the test makes the overall
false-positive rate somewhat higher than ``alpha``; ``benchmarks/tune_calibration.py`` measures it
on shuffled labels and on candidates that cannot differ from the reference.

The reference is ``none`` (no augmentation), or with ``transforms=`` your own pipeline (the first
transform): the candidates are ``none``, each transform, each VAE setting, and each setting
followed by each transform, and the result (``"pipeline"``, ``"recommendation"``) names the
pipeline to use.

With ``base=`` (the user's own per-image transform) every candidate, ``none`` included, trains
with that transform after the VAE move: the question becomes "does vaeaug help on top of my
pipeline". The choice is stored in the model (``model.augment``, with ``model.tuning`` holding
the scores and the base it was chosen for) and saved in its file; ``VAEAugment(model)`` and
``VAEAugmentedDataset`` use it when no explicit setting is given.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vaeaug.backends.torch_backend import TorchBackend
from vaeaug.core.augment import Augmenter
from vaeaug.core.pipelines import named_transforms
from vaeaug.core.settings import AugmentSetting
from vaeaug.core.values import MAX_SEED, check_int
from vaeaug.data import as_tensor_data
from vaeaug.fitting import training
from vaeaug.model.vae import VAE
from vaeaug.protocol.classifier import (
    Budget,
    ClassifierFactory,
    Transform,
    check_classifier,
    describe_classifier,
    image_scores,
    train_classifier,
)

__all__ = ["DEFAULT_GRID", "TUNE_BUDGET", "paired_t_test", "stratified_split", "stratified_folds", "t_sf",
           "temperature_scale", "tune"]

DEFAULT_GRID: tuple[AugmentSetting, ...] = (
    AugmentSetting("isotropic", 1.0, "delta", 0.5),
    AugmentSetting("isotropic", 0.5, "delta", 0.5),
    AugmentSetting("posterior", 2.0, "delta", 0.5),
    AugmentSetting("extrapolate", 1.0, "delta", 0.5),
)

TUNE_BUDGET = Budget(max_steps=2000, eval_every=50, patience=4, min_steps=400)
"""The classifier budget of every tuning run: converged on the inner slice, checked often."""


def stratified_split(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(rest, held)``: a seeded ``fraction`` of every class (at least one where a class has two).

    Example:
        >>> rest, held = stratified_split(torch.tensor([0, 0, 0, 0, 1, 1]), 0.5, seed=0)
        >>> len(rest), len(held)
        (3, 3)
    """
    g = torch.Generator().manual_seed(seed)
    tr, va = [], []
    for c in torch.unique(y).tolist():
        m = torch.nonzero(y == c).flatten()
        m = m[torch.randperm(len(m), generator=g)]
        k = max(1, int(round(len(m) * fraction))) if len(m) > 1 else 0
        va.append(m[:k])
        tr.append(m[k:])
    return torch.cat(tr).sort().values, torch.cat(va).sort().values


def stratified_folds(y: torch.Tensor, k: int, seed: int) -> list[torch.Tensor]:
    """``k`` disjoint folds covering every index, each class spread evenly over them (seeded).

    Example:
        >>> [len(f) for f in stratified_folds(torch.tensor([0] * 6 + [1] * 3), 3, seed=0)]
        [3, 3, 3]
    """
    g = torch.Generator().manual_seed(seed)
    folds: list[list[torch.Tensor]] = [[] for _ in range(k)]
    offset = 0
    for c in torch.unique(y).tolist():
        m = torch.nonzero(y == c).flatten()
        m = m[torch.randperm(len(m), generator=g)]
        for j in range(k):  # a rotating start, so that small classes do not all land in fold 0
            folds[(j + offset) % k].append(m[j::k])
        offset += len(m) % k
    return [torch.cat(f).sort().values for f in folds]


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)`` (continued fraction, Lentz's method)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast below the mean; use symmetry above
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return front * h


def t_sf(t: float, df: int) -> float:
    """One-sided p-value ``P(T > t)`` of Student's t with ``df`` degrees of freedom.

    Example:
        >>> round(t_sf(2.015, 5), 3), t_sf(0.0, 3)
        (0.05, 0.5)
    """
    if math.isnan(t):
        return 1.0
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return tail if t > 0 else 1.0 - tail


def paired_t_test(gains: Sequence[float]) -> float:
    """One-sided p-value of "the mean gain is above 0" over paired units (Student's t, ``len - 1`` df).

    Units that all agree give ``t = +-inf``: p = 0 when they are all positive, 1 otherwise; one unit gives 1.

    Example:
        >>> round(paired_t_test([0.2, 0.1, 0.3, 0.15]), 4), paired_t_test([0.0, 0.0]), paired_t_test([0.5])
        (0.0109, 1.0, 1.0)
    """
    n = len(gains)
    if n < 2:
        return 1.0
    mean, sd = statistics.fmean(gains), statistics.stdev(gains)
    t = mean / (sd / math.sqrt(n)) if sd > 0 else (math.inf if mean > 0 else -math.inf)
    return t_sf(t, n - 1)


def temperature_scale(logp: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None,
                      ) -> tuple[torch.Tensor, float]:
    """Rescale log-probabilities by the temperature that minimises their (weighted) log-loss on labels ``y``.

    The log-loss of ``log_softmax(logp / T)`` is convex in ``1 / T``, so a golden-section search over
    ``T`` in ``[e^-4, e^4]`` finds it; the ranking of the classes, hence every prediction, is unchanged.
    What is left of the log-loss after this is how well a classifier ranks the true class, not how
    confident it is (Guo et al. 2017, arXiv 1706.04599).

    Args:
        logp: ``(N, C)`` log-probabilities (or logits).
        y: ``(N,)`` true classes.
        weights: per-image weights of the mean (default: all 1).

    Returns:
        ``(log_softmax(logp / T), T)``, float32.

    Example:
        >>> logp = torch.tensor([[0.0, -20.0], [-20.0, 0.0], [0.0, -20.0]]).log_softmax(1)
        >>> scaled, t = temperature_scale(logp, torch.tensor([0, 1, 1]))  # one of three confidently wrong
        >>> t > 1.0, bool((scaled.argmax(1) == logp.argmax(1)).all())
        (True, True)
    """
    z = logp.double()
    z = torch.where(torch.isfinite(z), z, torch.full_like(z, -1e4))  # a zero probability stays the least likely
    w = torch.ones(len(y), dtype=torch.float64) if weights is None else weights.double()
    idx = y.view(-1, 1).clamp(0, z.shape[1] - 1)

    def loss(log_beta: float) -> float:
        lp = (z * math.exp(log_beta)).log_softmax(1)
        return float(-(lp.gather(1, idx).view(-1) * w).sum() / w.sum())

    lo, hi = -4.0, 4.0  # log(1 / T)
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(60):  # the bracket shrinks to 0.618^60 of its width: T to 1e-12 relative
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    log_beta = (lo + hi) / 2.0
    return (z * math.exp(log_beta)).log_softmax(1).float(), math.exp(-log_beta)


def _refit(model: VAE, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> VAE:
    cfg = model.config
    fit_augment = next((h.get("fit_augment") for h in model.history if h.get("fit_augment")), None)
    return training.fit(x, y, epochs=epochs, latent_dim=cfg.latent_dim, conditional=cfg.num_classes is not None,
                        num_classes=cfg.num_classes,  # a fold may lack a class; the model keeps them all
                        widths=cfg.widths, likelihood=cfg.likelihood, gaussian_std=cfg.gaussian_std,
                        learn_std=cfg.learn_std, beta=cfg.beta, kl_warmup=min(cfg.kl_warmup, epochs), patience=None,
                        seed=seed, progress=False, device=model.device, precision="auto", distributed=False,
                        augment=fit_augment if fit_augment in ("classic", "classic+flip") else None,
                        interruptible=False)  # Ctrl-C stops tune, never one fold's VAE that it then judges with


def tune(
    model: VAE,
    data: Any,
    y: Any = None,
    *,
    grid: Sequence[AugmentSetting] = DEFAULT_GRID,
    base: Transform | None = None,
    transforms: Mapping[str, Transform] | Sequence[Transform] | None = None,
    balanced: bool | None = None,
    oversample: bool = False,
    folds: int = 3,
    repeats: int = 2,
    alpha: float = 0.1,
    min_gain: float = 0.0,
    score: str = "logloss",
    calibrate: bool = False,
    average: bool = True,
    budget: Budget = TUNE_BUDGET,
    inner_val: float = 0.15,
    batch_size: int = 64,
    refit: bool = True,
    refit_epochs: int | None = None,
    classifier: ClassifierFactory | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Choose the augmentation setting by cross-validation on ``data``; store it in ``model``.

    Args:
        model: the fitted VAE (conditional or not).
        data: the training data with labels (any form :func:`vaeaug.data.as_tensor_data` takes).
        y: labels for array data.
        grid: the settings to try (``none`` is always tried).
        base: your own per-image transform (``(C, H, W)`` float in ``[0, 1]`` in and out), applied
            in every candidate after the VAE move; the choice is then "on top of ``base``".
        transforms: your classic pipelines instead (name -> transform, or a list named by their
            class): the candidates become ``none``, each transform, each VAE setting, and each
            setting followed by each transform; the first transform is your pipeline, the
            reference that any other candidate must beat beyond the noise.
        balanced: score every class equally (each held-out image weighted by 1 / its class's count:
            balanced accuracy and class-balanced log-loss), for imbalanced data; default: when the
            largest class has at least twice the images of the smallest.
        oversample: every candidate trains on class-balanced draws (each image drawn with weight
            1 / its class's count), the practitioner's baseline on imbalanced data.
        folds: cross-validation folds (>= 2).
        repeats: classifier seeds of the finalist on every fold (>= 1; more: more power, more time).
        alpha: the false-positive rate of the one-sided paired t-test that must reject "no gain".
        min_gain: the smallest mean gain (accuracy points) that counts.
        score: the per-image score of the test and the ranking: ``"logloss"`` (true-class
            log-loss, capped at :data:`MAX_LOSS`) or ``"brier"`` (multi-class Brier score).
        calibrate: temperature-scale each run's held-out predictions (one temperature per run, the one
            that minimises its log-loss on the fold, :func:`temperature_scale`) before scoring, so that a
            candidate gains only by ranking the true class higher, not by making the classifier less
            confident (which lowers the log-loss of an over-confident reference without changing a
            single prediction); accuracy is unchanged.
        average: score each held-out image by the mean predictions of the checks from each
            classifier's best one to its stop (the plateau), not by the best check alone: the
            check that a small inner slice picks is a large part of the noise between units
            (``False``: the best check, as before 2026-12-06).
        budget: each classifier's :class:`~vaeaug.protocol.classifier.Budget` (converged on an inner slice).
        inner_val: share of each fold's training part that decides when its classifiers stop.
        batch_size: classifier batch size.
        refit: fit a fresh VAE of the model's configuration per fold on its training part, so
            that no variant is made by a model that has seen the images it is judged on;
            ``False`` uses ``model`` itself (faster, optimistic if it saw ``data``).
        refit_epochs: epochs of those fits; default: as many as ``model`` was fit for.
        classifier: the network that judges, ``factory(shape, num_classes) -> nn.Module`` of logits
            (your own, so that the choice is made for it; trained with Adam, converged on the inner
            slice); default: the protocol's :class:`~vaeaug.protocol.classifier.SmallCNN`.
        seed: seeds the folds, the fits and the classifiers.
        progress: progress bar and a one-line verdict.

    Returns:
        ``{"chosen": {...} | None, "pipeline": {"transform": name | None, "setting": {...} | None},
        "recommendation": str, "reason": str, "scores": [...], "p_value": float, ...}``; also stored
        as ``model.tuning``, with the chosen VAE setting (or ``p = 0``) as ``model.augment``.

    Example:
        >>> import vaeaug
        >>> d = vaeaug.load_builtin("digits")
        >>> m = vaeaug.fit(d.x[:200], d.y[:200], epochs=1, conditional=True, progress=False)
        >>> r = vaeaug.tune(m, d.x[:200], d.y[:200], grid=[vaeaug.AugmentSetting()], folds=2, repeats=1,
        ...                 budget=vaeaug.Budget(max_steps=20, eval_every=10, patience=1), progress=False)
        >>> r["runs"], m.augment["p"] in (0.0, 0.5)  # 2 folds x (none, the setting); chosen or off
        (4, True)
    """
    check_int("seed", seed, 0, MAX_SEED - 10**6)  # per-fold and per-repeat seeds are offsets of it
    for name, v, lo in (("folds", folds, 2), ("repeats", repeats, 1), ("batch_size", batch_size, 1)):
        check_int(name, v, lo)
    if not (isinstance(alpha, float) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be a float in (0, 1), the test's false-positive rate; got {alpha!r}")
    for flag, v in (("average", average), ("calibrate", calibrate)):
        if not isinstance(v, bool):
            raise TypeError(f"{flag} must be True or False; got {type(v).__name__}")
    if not isinstance(score, str) or score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(map(repr, SCORES))}; got {score!r}")
    if not (isinstance(inner_val, float) and 0.0 < inner_val < 1.0):
        raise ValueError(f"inner_val must be a float in (0, 1); got {inner_val!r}")
    if not isinstance(budget, Budget) or not budget.converged:
        raise ValueError("budget must be a converged vaeaug.Budget (tune stops each run on its inner slice)")
    if base is not None and not callable(base):
        raise TypeError(f"base must be a callable transform of one (C, H, W) image; got {type(base).__name__}")
    check_classifier(classifier)
    grid = list(grid)
    for s in grid:
        if not isinstance(s, AugmentSetting):
            raise TypeError(f"grid takes AugmentSetting values; got {type(s).__name__}")
        s.check_for(conditional=model.conditional)
    if not grid:
        raise ValueError("grid is empty: give at least one AugmentSetting to try")
    vr = model.value_range  # arrays are read in the model's recorded range (e.g. 0..16 digits floats)
    arrays = isinstance(data, (np.ndarray, torch.Tensor))
    td = as_tensor_data(data, y, value_range=(vr.low, vr.high) if arrays else None)
    if td.y is None:
        raise ValueError("tune trains classifiers and needs labels: pass y=... or a labelled dataset")
    if tuple(td.sample_shape) != tuple(model.config.input_shape):
        raise ValueError(f"the data's samples are {td.sample_shape} but the model takes {model.config.input_shape}")
    if len(td.sample_shape) != 3:
        raise ValueError(f"tune trains a CNN and needs images (C, H, W); this data is vectors {td.sample_shape}")
    labels: torch.Tensor = td.y
    counts = torch.bincount(labels)
    if int(counts[counts > 0].min()) < folds:
        raise ValueError(f"every class needs at least folds={folds} samples for cross-validation; the smallest "
                         f"has {int(counts[counts > 0].min())}: lower folds or add data")
    t_start = time.perf_counter()
    if balanced is None:
        balanced = bool(counts.max() >= 2 * counts[counts > 0].min())
    num_classes = int(labels.max()) + 1
    if model.conditional:
        num_classes = max(num_classes, int(model.config.num_classes or 0))
    fold_idx = stratified_folds(labels, folds, seed)
    epochs = refit_epochs or max(1, len(model.history))
    fold_cache: dict[int, tuple[Any, tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor], Any]] = {}

    def fold(f: int) -> tuple[Any, tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor], Any]:
        if f not in fold_cache:
            rest = torch.cat([fold_idx[j] for j in range(folds) if j != f]).sort().values
            tr, iv = stratified_split(labels[rest], inner_val, seed + 31 * f)
            x_tr, y_tr = td.x[rest[tr]], labels[rest[tr]]
            judge = _refit(model, x_tr, y_tr, epochs, seed + 101 * f) if refit else model
            fold_cache[f] = ((x_tr, y_tr), (td.x[rest[iv]], labels[rest[iv]]),
                             (td.x[fold_idx[f]], labels[fold_idx[f]]), TorchBackend(judge))
        return fold_cache[f]

    candidates = _candidates(grid, base, transforms)
    reference = next(iter(candidates))  # "none", or your pipeline: a switch needs evidence
    data_n: dict[str, dict[tuple[int, int], tuple[float, torch.Tensor]]] = {k: {} for k in candidates}
    steps_used: dict[str, list[int]] = {k: [] for k in candidates}
    temperatures: dict[str, list[float]] = {k: [] for k in candidates}
    others = [k for k in candidates if k != reference]
    n_planned = len(candidates) + (folds - 1) * (1 + max(1, len(others) // 2)) + 2 * folds * (repeats - 1)
    bar = tqdm(total=n_planned, desc="tune", unit="run", disable=not progress)

    def run(label: str, f: int, r: int) -> None:
        if (f, r) in data_n[label]:
            return
        bar.set_postfix_str(f"{label}, fold {f + 1}/{folds}, repeat {r + 1}")
        (x_tr, y_tr), inner, held, gen = fold(f)
        _, transform, s = candidates[label]
        weights = (1.0 / torch.bincount(y_tr).clamp(min=1).float())[y_tr] if oversample else None
        res = train_classifier(x_tr, y_tr, held[0], held[1], num_classes=num_classes, seed=seed + 1000 * r + f,
                               budget=budget, batch_size=batch_size, aug=Augmenter(gen, s) if s else None,
                               base=transform, val=inner, weights=weights, average=average, classifier=classifier)
        assert res.logprobs is not None and res.predictions is not None
        w = _image_weights(held[1], balanced)  # mean 1: the units are (class-balanced) means over the fold
        correct = (res.predictions == held[1]).float()
        true_logprob, brier = res.true_logprob, res.brier
        if calibrate:
            logp, temperature = temperature_scale(res.logprobs, held[1], w)
            temperatures[label].append(temperature)
            true_logprob, brier = image_scores(logp, held[1])
        assert true_logprob is not None and brier is not None
        loss = (-true_logprob).clamp(max=MAX_LOSS) if score == "logloss" else brier
        data_n[label][(f, r)] = (100.0 * float((correct * w).mean()), loss * w)
        steps_used[label].append(res.steps)
        bar.update()

    def units(label: str) -> list[tuple[float, float]]:
        """Per (fold, repeat): the paired mean per-image loss gain and the accuracy gain over the reference."""
        ref = data_n[reference]
        return [(float((ref[k][1] - v[1]).mean()), v[0] - ref[k][0]) for k, v in sorted(data_n[label].items())
                if k in ref]

    def rank(k: str) -> tuple[bool, float]:
        """Candidates the verdict could accept (no accuracy loss so far) first, then by the paired log-loss gain."""
        u = units(k)
        return statistics.fmean(b for _, b in u) >= min_gain, statistics.fmean(a for a, _ in u)

    # successive halving on repeat 0: every candidate on fold 0, the better half on every fold
    alive = others
    rungs = [[0], list(range(folds))]
    for i, rung in enumerate(rungs):
        for f in rung:
            for label in [reference, *alive]:
                run(label, f, 0)
        ranked = sorted(alive, key=rank, reverse=True)
        alive = ranked[: max(1, len(ranked) // 2)] if i < len(rungs) - 1 else ranked[:1]
    finalist = alive[0]
    for r in range(1, repeats):
        for f in range(folds):
            run(reference, f, r)
            run(finalist, f, r)
    bar.close()
    u = units(finalist)
    loss_gain = [a for a, _ in u]
    acc_gain = [b for _, b in u]
    mean_loss, mean_gain = statistics.fmean(loss_gain), statistics.fmean(acc_gain)
    sd_loss = statistics.stdev(loss_gain) if len(u) > 1 else math.nan
    sd = statistics.stdev(acc_gain) if len(u) > 1 else math.nan
    p_value = paired_t_test(loss_gain)
    yes = p_value < alpha and mean_gain >= min_gain and mean_loss > 0
    chosen_label = finalist if yes else reference
    chosen_name, _, chosen_setting = candidates[chosen_label]
    where = f"{folds} folds x {repeats} repeat{'s' if repeats > 1 else ''}" if repeats > 1 else f"{folds} folds"
    on_top = ("" if base is None else " on top of your base transform") + (" (class-balanced draws)" if oversample
                                                                          else "")
    acc_name = "balanced-accuracy points" if balanced else "accuracy points"
    metric = f"{'class-balanced ' if balanced else ''}{'temperature-scaled ' if calibrate else ''}{SCORES[score]}"
    evidence = (f"{mean_gain:+.2f} ± {sd:.2f} {acc_name} and {mean_loss:+.4f} ± {sd_loss:.4f} of "
                f"{metric} per image across {where}")
    if yes:
        reason = (f"{finalist} beats {reference}{on_top}: {evidence} (paired one-sided t-test on the {score} "
                  f"p = {p_value:.3g} < alpha = {alpha:g})")
    else:
        what, keep = ("setting", "augmentation is off (p = 0)") if transforms is None else \
            ("candidate", f"keep {reference}")
        reason = (f"no {what} beat {reference}{on_top} beyond the noise: the best, {finalist}, {evidence} "
                  f"(p = {p_value:.3g}, needed < {alpha:g}, with no accuracy loss); {keep}")
    recommendation = (f"use {chosen_label}: {mean_gain:+.2f} ± {sd:.2f} points over {reference}" if yes else
                      f"keep {reference}: no candidate beat it beyond the noise (best: {finalist}, "
                      f"{mean_gain:+.2f} ± {sd:.2f} points)")
    scores = [{"setting": dataclasses.asdict(s_) if s_ else None, "transform": candidates[k][0],
               "label": k, "val_accuracy": [v[0] for _, v in sorted(data_n[k].items())],
               "runs": [list(key) for key in sorted(data_n[k])],
               "mean": statistics.fmean(v[0] for v in data_n[k].values()),
               "mean_loss": statistics.fmean(float(v[1].mean()) for v in data_n[k].values()),
               "losses": [float(v[1].mean()) for _, v in sorted(data_n[k].items())],
               "gain": statistics.fmean(b for _, b in units(k)) if k != reference else 0.0,
               "loss_gain": statistics.fmean(a for a, _ in units(k)) if k != reference else 0.0,
               "steps": steps_used[k], "temperatures": temperatures[k]} for k, (_, _, s_) in candidates.items()]
    result: dict[str, Any] = {
        "chosen": dataclasses.asdict(chosen_setting) if chosen_setting is not None else None,
        "pipeline": {"label": chosen_label, "transform": chosen_name,
                     "setting": dataclasses.asdict(chosen_setting) if chosen_setting is not None else None},
        "reference": reference, "recommendation": recommendation, "reason": reason, "finalist": finalist,
        "gain": mean_gain, "gain_sd": sd, "loss_gain": mean_loss, "loss_gain_sd": sd_loss, "p_value": p_value,
        "alpha": alpha, "min_gain": min_gain, "balanced": balanced, "oversample": oversample,
        "score": score, "calibrate": calibrate, "average": average, "metric": f"paired {metric} per image",
        "scores": scores, "folds": folds, "repeats": repeats, "n": len(td), "refit": refit,
        "base": None if base is None else repr(base), "budget": dataclasses.asdict(budget),
        "classifier": describe_classifier(classifier),
        "runs": sum(len(v) for v in data_n.values()), "seconds": time.perf_counter() - t_start,
    }
    model.tuning = result
    model.augment = dict(result["chosen"]) if chosen_setting is not None else \
        {**dataclasses.asdict(grid[0]), "p": 0.0}
    if progress:
        print(f"tune: {recommendation} ({reason})", flush=True)
    return result


def _image_weights(y: torch.Tensor, balanced: bool) -> torch.Tensor:
    """Per-image weights of mean 1: all 1, or ``N / (C n_c)`` so that a weighted mean is a class-balanced one."""
    if not balanced:
        return torch.ones(len(y))
    counts = torch.bincount(y).float()
    present = int((counts > 0).sum())
    return len(y) / (present * counts[y])


SCORES = {"logloss": "true-class log-loss (nats)", "brier": "Brier score"}
"""The per-image scores ``tune`` can test on, with how its messages name them."""

MAX_LOSS = 10.0
"""A per-image loss (nats) counts at most this much (p(true class) >= 4.5e-5): one confidently wrong
image cannot outweigh a hundred, and the paired differences keep a finite variance."""


def _candidates(grid: Sequence[AugmentSetting], base: Transform | None,
                transforms: Mapping[str, Transform] | Sequence[Transform] | None,
                ) -> dict[str, tuple[str | None, Transform | None, AugmentSetting | None]]:
    """label -> (the transform's name, the per-image transform, the VAE setting); the first is the reference."""
    if transforms is None:
        name = None if base is None else "base"
        return {"none": (name, base, None), **{s.label(): (name, base, s) for s in grid}}
    if base is not None:
        raise ValueError("pass base= (vaeaug on top of one transform) or transforms= (choose the pipeline), not both")
    named = named_transforms(transforms)
    out: dict[str, tuple[str | None, Transform | None, AugmentSetting | None]] = {}
    first = next(iter(named))
    out[first] = (first, named[first], None)  # your pipeline: the reference
    out["none"] = (None, None, None)
    out.update({k: (k, t, None) for k, t in named.items() if k != first})
    out.update({f"vaeaug {s.label()}": (None, None, s) for s in grid})
    out.update({f"vaeaug {s.label()}, then {k}": (k, t, s) for s in grid for k, t in named.items()})
    return out
