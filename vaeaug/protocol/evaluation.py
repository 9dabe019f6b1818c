"""Does it help? The downstream-accuracy protocol, with paired gains over seeds.

For each seed: draw ``per_class`` images per class from the training split (with ``imbalance=R``,
half of the classes keep ``per_class`` and the other half ``per_class / R``); carve a stratified
validation split from that reduced set (the same for every arm of the seed); fit a
class-conditional VAE on the rest only; train the same small CNN under each arm, each until its
own validation accuracy stops improving (or for a fixed number of steps, ``steps=``); test the
best checkpoint on the full test split. Arms:

* ``none``: the reduced set as is;
* ``classic``: per-sample random affine (rotation 10 deg, translation 10%, scale 0.9-1.1), plus
  horizontal flips where the data allows them;
* ``vae``: a share ``p`` of each batch replaced by VAE variants (vaeaug's defaults, or ``setting``);
* ``vae+classic``: the VAE move first (a VAE should see images like those it was fit on), then
  the classic transforms;
* ``classic+vae``: the other order: fresh variants of the classic-augmented images;
* ``tuned``: what :func:`vaeaug.tune` chooses on the training part (the validation split unseen);
* ``tuned+classic``: what ``tune(..., base=ClassicTransform())`` chooses (vaeaug on top of the
  classic transforms), trained as ``vae+classic`` with that choice (``classic`` if it says no);
* ``pipeline``: the pipeline ``tune(..., transforms={"classic": ClassicTransform()})`` chooses among
  ``classic`` (the reference), ``none``, the VAE settings alone and each followed by ``classic``;
* ``base`` and ``base+vae``: a user's own per-image transform, without and with VAE variants first;
* for imbalanced data: ``oversample`` (class-balanced draws), ``oversample+classic`` (the same with the
  classic transforms: the practitioner's reference), ``balance`` (class-balanced draws,
  the extra draws of the small classes replaced by ``prior`` samples of their class, as
  ``VAEAugmentedDataset(balance_classes=True, balance_with="prior")`` does) and ``balance+vae``
  (the extra draws replaced by variants of the drawn image: in expectation the same mix as the
  dataset's default ``balance_with="variants"``), and ``balance+vae+classic`` (that, then the classic
  transforms on real and synthetic samples alike). With ``imbalance``, the ``pipeline`` arm tunes and
  trains with class-balanced draws (its reference is ``oversample+classic``).

Every arm of a seed uses the same subset, validation split, VAE and classifier initialisation;
gains are paired differences per seed, reported as mean and standard deviation. Arms that
would train the same thing (``tuned`` choosing ``p = 0`` or an arm already run) reuse its run.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vaeaug.backends.torch_backend import TorchBackend
from vaeaug.core.augment import Augmenter
from vaeaug.core.settings import DEFAULT_AUGMENT, AugmentSetting
from vaeaug.core.values import MAX_SEED, check_int
from vaeaug.data import as_tensor_data
from vaeaug.data.builtin import is_builtin
from vaeaug.fitting.classic import ClassicTransform
from vaeaug.fitting.training import fit
from vaeaug.protocol.classifier import (
    Budget,
    ClassifierFactory,
    ClassifierRun,
    Transform,
    check_classifier,
    describe_classifier,
    train_classifier,
)
from vaeaug.protocol.tuning import stratified_split, tune

__all__ = ["AugmentSetting", "DEFAULT_AUGMENT", "ARMS", "DEFAULT_ARMS", "IMBALANCE_ARMS", "Budget", "evaluate",
           "report_markdown", "reduce_per_class", "reading"]

ARMS = ("none", "classic", "vae", "vae+classic", "classic+vae", "tuned", "tuned+classic", "pipeline", "base",
        "base+vae",
        "oversample", "oversample+classic", "balance", "balance+vae", "balance+vae+classic")
DEFAULT_ARMS = ("none", "classic", "vae", "vae+classic")
IMBALANCE_ARMS = ("none", "oversample", "oversample+classic", "classic", "balance", "balance+vae", "vae")
PRIOR = AugmentSetting("prior", 1.0, "decode", 1.0)


def reduce_per_class(y: torch.Tensor, per_class: int, seed: int, imbalance: float | None = None) -> torch.Tensor:
    """Indices of ``per_class`` samples of every class, drawn with ``seed`` (sorted).

    With ``imbalance=R``, a seeded half of the classes (rounded down) keeps only
    ``max(1, round(per_class / R))`` samples.

    Example:
        >>> reduce_per_class(torch.tensor([0, 0, 1, 1, 1]), 1, seed=0).shape
        torch.Size([2])
        >>> torch.bincount(torch.tensor([0] * 9 + [1] * 9)[reduce_per_class(
        ...     torch.tensor([0] * 9 + [1] * 9), 8, seed=0, imbalance=4)]).tolist() in ([8, 2], [2, 8])
        True
    """
    if imbalance is not None and not (isinstance(imbalance, (int, float)) and math.isfinite(imbalance)
                                      and imbalance >= 1):
        raise ValueError(f"imbalance must be a number >= 1 (the ratio of large to small classes); got {imbalance!r}")
    g = torch.Generator().manual_seed(seed)
    classes = torch.unique(y).tolist()
    small: set[int] = set()
    if imbalance is not None:
        order = torch.randperm(len(classes), generator=torch.Generator().manual_seed(seed + 7919)).tolist()
        small = {classes[i] for i in order[: len(classes) // 2]}
    out = []
    for c in classes:
        k = max(1, round(per_class / imbalance)) if c in small and imbalance is not None else per_class
        members = torch.nonzero(y == c).flatten()
        if len(members) < k:
            raise ValueError(f"class {c} has {len(members)} training samples, fewer than per_class={per_class}")
        out.append(members[torch.randperm(len(members), generator=g)[:k]])
    return torch.cat(out).sort().values


def balanced_accuracy(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[float, list[float]]:
    """Mean per-class recall (%) over the classes present in ``y``, and the recalls.

    Example:
        >>> balanced_accuracy(torch.tensor([0, 0, 1, 0]), torch.tensor([0, 0, 1, 1]), 2)[0]
        75.0
    """
    recalls = []
    for c in range(num_classes):
        m = y == c
        if bool(m.any()):
            recalls.append(100.0 * float((pred[m] == c).float().mean()))
    return statistics.fmean(recalls), recalls


def _stats(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "per_seed": values}


@dataclass(frozen=True)
class _Arm:
    """What one arm trains with; two arms with equal fields train the same thing."""

    classic: bool = False
    base: bool = False
    setting: AugmentSetting | None = None
    transform_first: bool = False  # classic (or base) before the VAE move
    oversample: bool = False
    extra: AugmentSetting | None = None  # replaces the extra (oversampled) draws of small classes
    factory: Any = None  # an experimental augmenter: (generator, x, y) -> callable like Augmenter


def _plan(arms: Sequence[str], setting: AugmentSetting, extra_arms: dict[str, Any]) -> dict[str, _Arm]:
    plan: dict[str, _Arm] = {}
    fixed = {"none": _Arm(), "classic": _Arm(classic=True), "base": _Arm(base=True),
             "oversample": _Arm(oversample=True), "oversample+classic": _Arm(oversample=True, classic=True),
             "balance": _Arm(oversample=True, extra=PRIOR),
             "balance+vae": _Arm(oversample=True, extra=dataclasses.replace(setting, p=1.0)),
             "balance+vae+classic": _Arm(oversample=True, extra=dataclasses.replace(setting, p=1.0), classic=True)}
    for a in arms:
        if a in fixed:
            plan[a] = fixed[a]
        elif a == "vae":
            plan[a] = _Arm(setting=setting)
        elif a == "vae+classic":
            plan[a] = _Arm(classic=True, setting=setting)
        elif a == "classic+vae":
            plan[a] = _Arm(classic=True, setting=setting, transform_first=True)
        elif a == "base+vae":
            plan[a] = _Arm(base=True, setting=setting)
        elif a in ("tuned", "tuned+classic", "pipeline"):
            plan[a] = _Arm()  # decided per seed
    for n, s in extra_arms.items():
        kw: dict[str, Any] = {"setting": s} if isinstance(s, AugmentSetting) else \
            {"factory": s, "oversample": bool(getattr(s, "oversample", False))}
        plan[n] = _Arm(**kw)
        if "vae+classic" in arms:
            plan[f"{n}+classic"] = _Arm(classic=True, **kw)
        if "classic+vae" in arms:
            plan[f"classic+{n}"] = _Arm(classic=True, transform_first=True, **kw)
        if "base+vae" in arms:
            plan[f"{n}+base"] = _Arm(base=True, **kw)
    return plan


def protocol_fit_kwargs(vae_epochs: int = 300, vae_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keyword arguments of :func:`vaeaug.fit` with which :func:`evaluate` fits each seed's VAE.

    Args:
        vae_epochs: epochs of the fit.
        vae_kwargs: more :func:`vaeaug.fit` options, which override the protocol's (not ``interruptible``).

    Returns:
        A dict for ``fit(x, y, seed=seed, progress=False, device="cpu", **kwargs)``.

    Example:
        >>> kw = protocol_fit_kwargs(300)
        >>> kw["epochs"], kw["kl_warmup"], kw["conditional"], kw["interruptible"]
        (300, 50, True, False)
    """
    return {"epochs": vae_epochs, "batch_size": 64, "kl_warmup": min(50, vae_epochs // 4), "conditional": True,
            "patience": None, "precision": "auto", "distributed": False, **(vae_kwargs or {}),
            "interruptible": False}  # Ctrl-C stops the protocol, never a VAE mid-fit that it then uses


class ExtraDraws:
    """The balance arms' augmenter: replaces the extra draws of small classes (beyond their natural share) by variants.

    Under class-balanced draws, a class with ``n_c`` of the largest class's ``n_max`` images is drawn
    ``n_max / n_c`` times as often as it would be; a share ``1 - n_c / n_max`` of its draws is replaced by
    ``aug``'s output, so that the class's real images are seen as often as without balancing.

    Args:
        aug: makes the variants (an :class:`~vaeaug.core.augment.Augmenter` or an object with its call and ``codec``).
        counts: images per class, ``(num_classes,)``.

    Example:
        >>> import torch, vaeaug
        >>> from vaeaug.backends.torch_backend import TorchBackend
        >>> from vaeaug.core.augment import Augmenter
        >>> m = vaeaug.fit(torch.rand(8, 1, 8, 8), torch.tensor([0] * 6 + [1] * 2), epochs=1, conditional=True,
        ...                progress=False)
        >>> extra = ExtraDraws(Augmenter(TorchBackend(m), vaeaug.AugmentSetting(p=1.0)), torch.tensor([6, 2]))
        >>> [round(v, 3) for v in extra.replace_share.tolist()]  # class 0 is never replaced, class 1 in 2 of 3
        [0.0, 0.667]
    """

    def __init__(self, aug: Augmenter, counts: torch.Tensor) -> None:
        self.aug = aug
        self.replace_share = 1.0 - counts.float() / counts.max().float()  # per class

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, *, key: int, codec: Any) -> torch.Tensor:
        g = torch.Generator().manual_seed(key)
        rows = torch.nonzero(torch.rand(len(yb), generator=g) < self.replace_share[yb]).flatten()
        if len(rows) == 0:
            return xb
        out = xb.clone()
        out[rows] = self.aug(xb[rows], yb[rows], key=key, codec=codec)
        return out

    def codec(self, kind: str) -> Any:
        return self.aug.codec(kind)


def evaluate(
    data: Any = "fashion-mnist",
    test: Any = None,
    *,
    per_class: int = 50,
    seeds: int | Sequence[int] = 3,
    steps: int | None = None,
    budget: Budget | None = None,
    val_fraction: float = 0.2,
    batch_size: int = 64,
    arms: Sequence[str] | None = None,
    setting: AugmentSetting = DEFAULT_AUGMENT,
    extra_arms: dict[str, Any] | None = None,
    base: Transform | None = None,
    imbalance: float | None = None,
    tune_kwargs: dict[str, Any] | None = None,
    vae_epochs: int = 300,
    vae_kwargs: dict[str, Any] | None = None,
    flip: bool | None = None,
    classifier: ClassifierFactory | None = None,
    root: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the protocol; return a JSON-ready report.

    Args:
        data: training data (a built-in name, ``.npz``, arrays...) with labels.
        test: test data; ``None`` takes the built-in's test split.
        per_class: images per class drawn from the training split for each seed.
        seeds: number of seeds (0, 1, ...) or the seeds themselves.
        steps: a fixed budget of optimizer steps for every arm instead of training to convergence.
        budget: the classifier's :class:`~vaeaug.protocol.classifier.Budget` (default: converged,
            ``Budget()``); ``steps=n`` is ``Budget.fixed(n)``.
        val_fraction: share of each class of the reduced set held out to decide when to stop.
        batch_size: classifier batch size.
        arms: names from :data:`ARMS` (default: :data:`DEFAULT_ARMS`, or :data:`IMBALANCE_ARMS`
            with ``imbalance``); ``base`` arms need ``base``.
        setting: the VAE arms' augmentation (vaeaug's defaults unless given).
        extra_arms: more VAE arms, name -> setting (each also gets a ``+classic`` twin if
            ``"vae+classic"`` is in ``arms``, and a ``+base`` twin if ``"base+vae"`` is); a value
            may also be a function ``(generator, x, y) -> augmenter`` of the seed's training part
            (the augmenter is called like :class:`Augmenter` and has a ``codec(kind)`` method)
            for experimental levers (``benchmarks/levers.py``); a function with an attribute
            ``oversample = True`` trains with the small classes oversampled.
        base: the user's per-image transform for ``base`` and ``base+vae``: a ``(C, H, W)`` float
            tensor in ``[0, 1]`` in, the same out (e.g. a ``torchvision.transforms.v2`` pipeline).
        imbalance: ``R``: half of the classes keep ``per_class / R`` images; the report adds
            balanced accuracy and per-class recall.
        tune_kwargs: keyword arguments for :func:`vaeaug.tune` in the ``tuned``, ``tuned+classic`` and
            ``pipeline`` arms.
        vae_epochs: epochs of the VAE fit on the reduced set.
        vae_kwargs: more keyword arguments for :func:`vaeaug.fit`.
        flip: allow horizontal flips in ``classic``; default: only for Fashion-MNIST.
        classifier: your network, ``factory(shape, num_classes) -> nn.Module`` of logits, in every arm
            and in tune's runs; default: the protocol's :class:`~vaeaug.protocol.classifier.SmallCNN`.
        root: folder for built-in datasets.
        progress: progress bar per arm and seed.

    Returns:
        ``{"arms": {name: {"mean", "std", "per_seed", "steps", ...}}, "gains": {...},
        "gains_over_classic": {...}, "vae": {...}, "config": {...}}``; with a tuned or pipeline arm,
        also ``"best_fixed"`` (the fixed arm with the best mean) and ``"gains_over_best_fixed"``.
    """
    arms = tuple(arms if arms is not None else (IMBALANCE_ARMS if imbalance else DEFAULT_ARMS))
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise ValueError(f"unknown arms {sorted(unknown)}; expected a subset of {ARMS}")
    if not arms:
        raise ValueError(f"arms is empty; choose from {ARMS}")
    if {"base", "base+vae"} & set(arms) and base is None:
        raise ValueError("arms 'base' and 'base+vae' train with your own transform: pass base=<callable>")
    if base is not None and not callable(base):
        raise TypeError(f"base must be a callable transform of one (C, H, W) image; got {type(base).__name__}")
    check_classifier(classifier)
    if steps is not None and budget is not None:
        raise ValueError("pass steps= (a fixed budget) or budget=, not both")
    if not (isinstance(val_fraction, float) and 0.0 < val_fraction < 1.0):
        raise ValueError(f"val_fraction must be a float in (0, 1); got {val_fraction!r}")
    budget = Budget.fixed(steps) if steps is not None else (budget or Budget())
    for s in [setting, *(v for v in (extra_arms or {}).values() if not callable(v))]:  # fail before fitting
        if not isinstance(s, AugmentSetting):
            raise TypeError(f"VAE arms take AugmentSetting values; got {type(s).__name__}")
        if s.mode == "prior":
            raise ValueError("the protocol's VAE arms move a source sample; mode 'prior' is not one of them")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    for s_ in seed_list:  # every seed of a run offsets by at most a few thousand (folds, classifiers)
        check_int("seed", s_, 0, MAX_SEED - 10**6)
    if not seed_list:
        raise ValueError("seeds must be >= 1 or a non-empty list")
    name = data if isinstance(data, str) and is_builtin(data) else None  # a path has no test split of its own
    train = as_tensor_data(data, root=root, split="train") if name else as_tensor_data(data)
    if test is None:
        if name is None:
            raise ValueError("test data is needed for data that is not a built-in name (pass test=...)")
        test_d = as_tensor_data(name, root=root, split="test")
    else:
        test_d = as_tensor_data(test)
    for d, what in ((train, "training"), (test_d, "test")):
        if d.y is None:
            raise ValueError(f"the {what} data has no labels; the protocol needs (x, y)")
        if not d.is_image:
            raise ValueError(f"the protocol trains a CNN on images; the {what} data is vectors {d.sample_shape}")
    if train.sample_shape != test_d.sample_shape:
        raise ValueError(f"training images are {train.sample_shape} but test images are {test_d.sample_shape}")
    assert train.y is not None and test_d.y is not None
    num_classes = int(max(int(train.y.max()), int(test_d.y.max())) + 1)
    if flip is None:
        flip = bool(name and name.lower().replace("_", "-") in ("fashion-mnist", "fashionmnist"))
    plan = _plan(arms, setting, dict(extra_arms or {}))

    runs: dict[str, list[ClassifierRun]] = {a: [] for a in plan}
    balanced: dict[str, list[float]] = {a: [] for a in plan}
    recalls: dict[str, list[list[float]]] = {a: [] for a in plan}
    tuned_choice: dict[str, list[Any]] = {}
    tune_seconds: dict[str, list[float]] = {}
    fit_seconds, val_losses = [], []
    fit_kw = protocol_fit_kwargs(vae_epochs, vae_kwargs)
    t_start = time.perf_counter()
    bar = tqdm(total=len(seed_list) * (len(plan) + 1), desc="evaluate", disable=not progress, unit="run")
    for seed in seed_list:
        idx = reduce_per_class(train.y, per_class, seed, imbalance)
        tr, va = stratified_split(train.y[idx], val_fraction, seed)
        xr, yr = train.x[idx[tr]], train.y[idx[tr]]
        val = (train.x[idx[va]], train.y[idx[va]])
        counts = torch.bincount(yr, minlength=num_classes)
        weights = (1.0 / counts.clamp(min=1).float())[yr]
        bar.set_postfix_str(f"seed {seed}: fitting the VAE on {len(xr)} images")
        t0 = time.perf_counter()
        vae = fit(xr, yr, seed=seed, progress=False, device="cpu", **fit_kw)
        fit_seconds.append(time.perf_counter() - t0)
        val_losses.append(min((h["val_loss"] for h in vae.history if "val_loss" in h), default=math.nan))
        gen = TorchBackend(vae)
        bar.update()
        done: dict[_Arm, tuple[ClassifierRun, float, list[float]]] = {}
        for arm_name, arm in plan.items():
            if arm_name in ("tuned", "tuned+classic", "pipeline"):
                bar.set_postfix_str(f"seed {seed}: {arm_name}: tuning")
                on_classic = arm_name == "tuned+classic"
                t1 = time.perf_counter()
                choice = {"transforms": {"classic": ClassicTransform(flip)}, "oversample": imbalance is not None} \
                    if arm_name == "pipeline" else {"base": ClassicTransform(flip) if on_classic else None}
                res = tune(vae, xr, yr, seed=seed, progress=False, **choice,
                           **({"classifier": classifier} | (tune_kwargs or {})))
                tune_seconds.setdefault(arm_name, []).append(time.perf_counter() - t1)
                chosen = res["chosen"]
                evidence = {k: res[k] for k in ("finalist", "p_value", "gain", "loss_gain", "gain_sd", "score",
                                                    "calibrate", "average")}
                scores = [{k: r[k] for k in ("label", "runs", "val_accuracy", "losses", "gain", "loss_gain",
                                                  "temperatures")}
                          for r in res["scores"]]  # every candidate's units: enough to replay the choice
                tuned_choice.setdefault(arm_name, []).append({"chosen": chosen, "reason": res["reason"],
                                                              "pipeline": res["pipeline"]["label"], **evidence,
                                                              "scores": scores})
                if arm_name == "pipeline":
                    on_classic = res["pipeline"]["transform"] == "classic"
                arm = _Arm(classic=on_classic, setting=AugmentSetting.from_dict(chosen) if chosen else None,
                           oversample=arm_name == "pipeline" and imbalance is not None)
            bar.set_postfix_str(f"seed {seed}: {arm_name}")
            if arm not in done:
                aug: Any = None
                if arm.setting is not None:
                    aug = Augmenter(gen, arm.setting)
                elif arm.factory is not None:
                    aug = arm.factory(gen, xr, yr)
                elif arm.extra is not None:
                    aug = ExtraDraws(Augmenter(gen, arm.extra), counts)
                run = train_classifier(xr, yr, test_d.x, test_d.y, num_classes=num_classes, budget=budget,
                                       batch_size=batch_size, seed=seed, classic=arm.classic, flip=flip, aug=aug,
                                       base=base if arm.base else None, val=val,
                                       weights=weights if arm.oversample else None,
                                       transform_first=arm.transform_first, classifier=classifier)
                bacc, rec = math.nan, list[float]()
                if imbalance is not None:
                    assert run.predictions is not None
                    bacc, rec = balanced_accuracy(run.predictions, test_d.y, num_classes)
                done[arm] = (run, bacc, rec)
            run, bacc, rec = done[arm]
            runs[arm_name].append(run)
            balanced[arm_name].append(bacc)
            recalls[arm_name].append(rec)
            bar.update()
    bar.close()
    acc = {a: [r.accuracy for r in rs] for a, rs in runs.items()}
    report: dict[str, Any] = {"arms": {}, "gains": {}, "gains_over_classic": {}}
    if imbalance is not None:
        report["gains_over_oversample"] = {}
        report["gains_over_oversample_classic"] = {}
    for a, rs in runs.items():
        st = _stats(acc[a])
        st.update(steps=[r.steps for r in rs], best_step=[r.best_step for r in rs],
                  val_accuracy=[r.val_accuracy for r in rs], seconds=[r.seconds for r in rs])
        if imbalance is not None:
            st["balanced"] = _stats(balanced[a])
            st["recall"] = recalls[a]
        report["arms"][a] = st
    metric = balanced if imbalance is not None else acc
    for ref, key in (("none", "gains"), ("classic", "gains_over_classic"), ("oversample", "gains_over_oversample"),
                     ("oversample+classic", "gains_over_oversample_classic")):
        if key not in report:
            continue
        if ref in metric:
            for a, v in metric.items():
                if a != ref:
                    report[key][a] = _stats([vi - bi for vi, bi in zip(v, metric[ref], strict=True)])
    fixed = [a for a in metric if a not in ("tuned", "tuned+classic", "pipeline")]
    if fixed and len(fixed) < len(metric):  # how the chosen arms compare with the best arm fixed in advance
        best = max(fixed, key=lambda a: statistics.fmean(metric[a]))
        report["best_fixed"] = best
        report["gains_over_best_fixed"] = {
            a: _stats([vi - bi for vi, bi in zip(metric[a], metric[best], strict=True)])
            for a in metric if a not in fixed}
    report["vae"] = {"fit_seconds": fit_seconds, "best_val_loss": val_losses}
    for a, choices in tuned_choice.items():
        report[a] = {"per_seed": choices, "seconds": tune_seconds[a]}
    report["config"] = {
        "data": name or train.source, "per_class": per_class, "imbalance": imbalance, "seeds": seed_list,
        "budget": dataclasses.asdict(budget), "budget_text": budget.describe(), "val_fraction": val_fraction,
        "n_train": len(xr), "n_val": len(val[1]), "batch_size": batch_size, "flip": flip, "vae_epochs": vae_epochs,
        "base": None if base is None else repr(base), "metric": "balanced accuracy" if imbalance else "accuracy",
        "classifier": describe_classifier(classifier),
        "tune_kwargs": {k: describe_classifier(v) if k == "classifier" else _plain(v)
                        for k, v in (tune_kwargs or {}).items()},  # what tune ran with beyond evaluate's own
        "settings": {a: (dataclasses.asdict(arm.setting) if arm.setting else None) for a, arm in plan.items()},
        "seconds": time.perf_counter() - t_start,
        "threads": torch.get_num_threads(),  # float rounding, so results, depend on it
    }
    return report


def _plain(v: Any) -> Any:
    """``v`` as JSON can hold it: numbers, strings, lists and dicts of them, dataclasses as dicts, the rest as repr."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _plain(dataclasses.asdict(v))
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return repr(v)


def _cell(st: dict[str, Any] | None) -> str:
    return f"{st['mean']:+.2f} ± {st['std']:.2f}" if st else ""


def report_markdown(report: dict[str, Any]) -> str:
    """The report as a markdown table: the metric per arm, steps used, paired gains over ``none`` and ``classic``."""
    cfg = report["config"]
    imb = cfg.get("imbalance")
    budget_text = cfg.get("budget_text") or f"{cfg.get('steps')} steps"
    metric = cfg.get("metric", "accuracy")
    lines = [
        f"Data {cfg['data']}, {cfg['per_class']} per class"
        + (f" (half of the classes at 1/{imb:g} of that)" if imb else "")
        + f", seeds {cfg['seeds']}; classifier trained {budget_text}, batch {cfg['batch_size']}; "
        f"flips {'on' if cfg['flip'] else 'off'}. Metric: test {metric}.",
        "",
        f"| arm | setting | {metric} (mean ± std) | per seed | steps used (per seed) | "
        "paired gain over none | paired gain over classic |"
        + (" paired gain over oversample | paired gain over oversample+classic |" if imb else ""),
        "|---|---|---|---|---|---|---|" + ("---|---|" if imb else ""),
    ]
    for a, st in report["arms"].items():
        s = cfg["settings"].get(a)
        setting = AugmentSetting(**s).label() if s else ""
        if a == "pipeline" and a in report:
            setting = "; ".join(t["pipeline"] for t in report[a]["per_seed"])
        elif a in ("tuned", "tuned+classic") and a in report:
            setting = "; ".join(AugmentSetting(**t["chosen"]).label() if t["chosen"] else "off"
                                for t in report[a]["per_seed"])
        m = st["balanced"] if imb else st
        per = ", ".join(f"{v:.2f}" for v in m["per_seed"])
        used = ", ".join(str(v) for v in st.get("steps", []))
        lines.append(f"| {a} | {setting} | {m['mean']:.2f} ± {m['std']:.2f} | {per} | {used} | "
                     f"{_cell(report['gains'].get(a))} | {_cell(report.get('gains_over_classic', {}).get(a))} |"
                     + (f" {_cell(report.get('gains_over_oversample', {}).get(a))} |"
                        f" {_cell(report.get('gains_over_oversample_classic', {}).get(a))} |" if imb else ""))
    if imb:
        lines += ["", "Per-class recall (%, mean over seeds):", "",
                  "| arm | " + " | ".join(str(c) for c in range(len(next(iter(report['arms'].values()))['recall'][0])))
                  + " |", "|---|" + "---|" * len(next(iter(report['arms'].values()))['recall'][0])]
        for a, st in report["arms"].items():
            mean_rec = np.mean(np.array(st["recall"]), axis=0)
            lines.append(f"| {a} | " + " | ".join(f"{r:.1f}" for r in mean_rec) + " |")
    if "best_fixed" in report:
        lines += ["", f"Best fixed arm (by mean): {report['best_fixed']}; paired gain over it: " + ", ".join(
            f"{a} {_cell(st)}" for a, st in report["gains_over_best_fixed"].items()) + "."]
    v = report["vae"]
    lines += ["", f"VAE fit: {statistics.fmean(v['fit_seconds']):.1f} s per seed, best val loss "
                  f"{', '.join(f'{x:.2f}' for x in v['best_val_loss'])} nats/image."]
    for a in ("tuned", "tuned+classic", "pipeline"):
        if a in report:
            lines.append(f"{a}: tune {statistics.fmean(report[a]['seconds']):.0f} s per seed; "
                         + " | ".join(t["reason"] for t in report[a]["per_seed"]))
    if "seconds" in cfg:
        threads = f", {cfg['threads']} threads" if "threads" in cfg else ""
        lines.append(f"Wall time: {cfg['seconds']:.0f} s{threads}.")
    return "\n".join(lines)


def reading(report: dict[str, Any]) -> str:
    """One honest line on what a report's numbers mean: the best arm against the reference, and whether
    the paired gain is beyond the seed-to-seed noise (its mean more than one std from 0 and positive on
    every seed), with how to get a verdict one can trust on one's own data.

    Example:
        >>> reading({"config": {"seeds": [0, 1, 2], "metric": "accuracy", "imbalance": None},
        ...          "gains": {"vae": {"mean": 0.5, "std": 1.2, "per_seed": [1.0, -0.5, 1.0]}}})[:58]
        'Reading: vae vs none +0.50 ± 1.20 over 3 seeds: within the'
    """
    cfg = report["config"]
    key, ref = ("gains_over_oversample_classic", "oversample+classic") if cfg.get("imbalance") and \
        report.get("gains_over_oversample_classic") else ("gains", "none")
    gains = report.get(key) or {}
    if not gains:
        return "Reading: one arm only; add arms (--arms) to compare."
    best, st = max(gains.items(), key=lambda kv: kv[1]["mean"])
    n = len(cfg["seeds"])
    if st["mean"] > st["std"] and all(v > 0 for v in st["per_seed"]):
        what = "a gain beyond the seed-to-seed noise, positive on every seed"
    elif st["mean"] < -st["std"] and all(v < 0 for v in st["per_seed"]):
        what = f"the best arm, and still a loss beyond the seed-to-seed noise: {ref} is better here"
    else:
        what = "within the seed-to-seed noise"
    return (f"Reading: {best} vs {ref} {st['mean']:+.2f} ± {st['std']:.2f} over {n} seeds: {what}. "
            f"{'A few seeds and a small classifier budget give a first look, not a verdict; ' if n < 5 else ''}"
            "for a trustworthy verdict on your own data run the converged protocol over at least 5 seeds "
            "(vaeaug evaluate --data yours --seeds 5), or let vaeaug.tune(..., transforms=...) choose your pipeline "
            "by cross-validation (docs: evaluate.md).")

