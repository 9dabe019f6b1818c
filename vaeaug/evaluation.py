"""Does it help? The downstream-accuracy protocol, with paired gains over seeds.

For each seed: draw ``per_class`` images per class from the training split; fit a
class-conditional VAE on that reduced set only; train the same small CNN with the same number
of optimizer steps under each arm; measure accuracy on the full test split. Arms:

* ``none``: the reduced set as is;
* ``classic``: per-sample random affine (rotation 10 deg, translation 10%, scale 0.9-1.1), plus
  horizontal flips where the data allows them;
* ``vae``: a share ``p`` of each batch replaced by VAE variants (vaeaug's defaults, or ``aug``);
* ``vae+classic``: the VAE move first (a VAE should see images like those it was fit on), then
  the classic transforms.

Every arm of a seed uses the same subset, the same VAE and the same classifier initialisation;
gains are paired differences to ``none`` per seed, reported as mean and standard deviation.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from .augment import Augmenter
from .backends.torch_generator import TorchGenerator
from .classifier import train_classifier
from .data import as_tensor_data
from .settings import DEFAULT_AUGMENT, AugmentSetting
from .training import fit

__all__ = ["AugmentSetting", "DEFAULT_AUGMENT", "ARMS", "evaluate", "report_markdown", "reduce_per_class"]

ARMS = ("none", "classic", "vae", "vae+classic")


def reduce_per_class(y: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of ``per_class`` samples of every class, drawn with ``seed`` (sorted).

    Example:
        >>> reduce_per_class(torch.tensor([0, 0, 1, 1, 1]), 1, seed=0).shape
        torch.Size([2])
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    for c in torch.unique(y).tolist():
        members = torch.nonzero(y == c).flatten()
        if len(members) < per_class:
            raise ValueError(f"class {c} has {len(members)} training samples, fewer than per_class={per_class}")
        out.append(members[torch.randperm(len(members), generator=g)[:per_class]])
    return torch.cat(out).sort().values


def _stats(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "per_seed": values}


def evaluate(
    data: Any = "fashion-mnist",
    test: Any = None,
    *,
    per_class: int = 50,
    seeds: int | Sequence[int] = 3,
    steps: int = 1500,
    batch_size: int = 64,
    arms: Sequence[str] = ARMS,
    setting: AugmentSetting = DEFAULT_AUGMENT,
    extra_arms: dict[str, AugmentSetting] | None = None,
    vae_epochs: int = 300,
    vae_kwargs: dict[str, Any] | None = None,
    flip: bool | None = None,
    root: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the protocol; return a JSON-ready report.

    Args:
        data: training data (a built-in name, ``.npz``, arrays...) with labels.
        test: test data; ``None`` takes the built-in's test split.
        per_class: images per class drawn from the training split for each seed.
        seeds: number of seeds (0, 1, ...) or the seeds themselves.
        steps: optimizer steps per classifier, the same for every arm.
        batch_size: classifier batch size.
        arms: a subset of :data:`ARMS`.
        setting: the VAE arms' augmentation (vaeaug's defaults unless given).
        extra_arms: more VAE arms, name -> setting (each also gets a ``+classic`` twin if
            ``"vae+classic"`` is in ``arms``).
        vae_epochs: epochs of the VAE fit on the reduced set.
        vae_kwargs: more keyword arguments for :func:`vaeaug.fit`.
        flip: allow horizontal flips in ``classic``; default: only for Fashion-MNIST.
        root: folder for built-in datasets.
        progress: progress bar per arm and seed.

    Returns:
        ``{"arms": {name: {"mean", "std", "per_seed"}}, "gains": {...}, "vae": {...}, "config": {...}}``.
    """
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise ValueError(f"unknown arms {sorted(unknown)}; expected a subset of {ARMS}")
    for s in [setting, *(extra_arms or {}).values()]:  # fail before minutes of fitting, not after
        if not isinstance(s, AugmentSetting):
            raise TypeError(f"VAE arms take AugmentSetting values; got {type(s).__name__}")
        if s.mode == "prior":
            raise ValueError("the protocol's VAE arms move a source sample; mode 'prior' is not one of them")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise ValueError("seeds must be >= 1 or a non-empty list")
    name = data if isinstance(data, str) else None
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
    vae_arms: dict[str, AugmentSetting] = {}
    if "vae" in arms or "vae+classic" in arms:
        vae_arms["vae"] = setting
    vae_arms.update(extra_arms or {})
    plan: list[tuple[str, bool, AugmentSetting | None]] = []
    if "none" in arms:
        plan.append(("none", False, None))
    if "classic" in arms:
        plan.append(("classic", True, None))
    for arm_name, vs in vae_arms.items():
        if "vae" in arms or arm_name != "vae":
            plan.append((arm_name, False, vs))
        if "vae+classic" in arms:
            plan.append((f"{arm_name}+classic", True, vs))

    results: dict[str, list[float]] = {a: [] for a, _, _ in plan}
    fit_seconds, val_losses = [], []
    # fp32 and one process: a measuring instrument, comparable across machines and with recorded results
    fit_kw = {"epochs": vae_epochs, "batch_size": 64, "kl_warmup": min(50, vae_epochs // 4), "conditional": True,
              "patience": None, "precision": "fp32", "distributed": False, **(vae_kwargs or {})}
    bar = tqdm(total=len(seed_list) * (len(plan) + 1), desc="evaluate", disable=not progress, unit="run")
    for seed in seed_list:
        idx = reduce_per_class(train.y, per_class, seed)
        xr, yr = train.x[idx], train.y[idx]
        bar.set_postfix_str(f"seed {seed}: fitting the VAE on {len(idx)} images")
        t0 = time.perf_counter()
        vae = fit(xr, yr, seed=seed, progress=False, device="cpu", **fit_kw)
        fit_seconds.append(time.perf_counter() - t0)
        val_losses.append(min((h["val_loss"] for h in vae.history if "val_loss" in h), default=math.nan))
        gen = TorchGenerator(vae)
        bar.update()
        for arm_name, classic, arm_setting in plan:
            bar.set_postfix_str(f"seed {seed}: {arm_name}")
            acc = train_classifier(xr, yr, test_d.x, test_d.y, num_classes=num_classes, steps=steps,
                                   batch_size=batch_size, seed=seed, classic=classic, flip=flip,
                                   aug=None if arm_setting is None else Augmenter(gen, arm_setting))
            results[arm_name].append(acc)
            bar.update()
    bar.close()
    report: dict[str, Any] = {
        "arms": {a: _stats(v) for a, v in results.items()},
        "gains": {},
        "vae": {"fit_seconds": fit_seconds, "best_val_loss": val_losses},
        "config": {"data": name or train.source, "per_class": per_class, "seeds": seed_list, "steps": steps,
                   "batch_size": batch_size, "flip": flip, "vae_epochs": vae_epochs,
                   "settings": {a: (s.__dict__ if s else None) for a, _, s in plan}},
    }
    if "none" in results:
        base = results["none"]
        for a, v in results.items():
            if a != "none":
                report["gains"][a] = _stats([vi - bi for vi, bi in zip(v, base, strict=True)])
    return report


def report_markdown(report: dict[str, Any]) -> str:
    """The report as a markdown table: accuracy per arm and paired gain over ``none``."""
    cfg = report["config"]
    lines = [
        f"Data {cfg['data']}, {cfg['per_class']} per class, seeds {cfg['seeds']}, {cfg['steps']} steps of "
        f"batch {cfg['batch_size']} per arm, flips {'on' if cfg['flip'] else 'off'}.",
        "",
        "| arm | setting | accuracy (mean ± std) | per seed | paired gain over none |",
        "|---|---|---|---|---|",
    ]
    for a, st in report["arms"].items():
        s = cfg["settings"].get(a)
        setting = AugmentSetting(**s).label() if s else ""
        gain = report["gains"].get(a)
        g = f"{gain['mean']:+.2f} ± {gain['std']:.2f}" if gain else ""
        per = ", ".join(f"{v:.2f}" for v in st["per_seed"])
        lines.append(f"| {a} | {setting} | {st['mean']:.2f} ± {st['std']:.2f} | {per} | {g} |")
    v = report["vae"]
    lines += ["", f"VAE fit: {statistics.fmean(v['fit_seconds']):.1f} s per seed, best val loss "
                  f"{', '.join(f'{x:.2f}' for x in v['best_val_loss'])} nats/image."]
    return "\n".join(lines)
