"""The protocol's classifier: a small CNN trained under one arm, to convergence or for a fixed budget.

Shared by :func:`vaeaug.evaluate` (test accuracy per arm) and :func:`vaeaug.tune` (held-out fold
accuracy per setting): the same network, batches, augmentation keys and dropout seeds for every arm
of a seed, so that paired differences measure the augmentation and nothing else. A
:class:`Budget` says how long: until the validation accuracy stops improving (the best
checkpoint is tested), or a fixed number of steps.

The VAE variants of a run are made from its training images' encodings, each image encoded once
(:class:`~vaeaug.core.cache.EncodingCache`, filled as the batches first draw it): every variant
then costs one decoder pass, where a run of 1,500 steps would otherwise encode the same few hundred
images thousands of times.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vaeaug.core.augment import Augmenter, SourceEncodings
from vaeaug.core.cache import EncodingCache
from vaeaug.core.rng import derive_keys
from vaeaug.core.values import check_int
from vaeaug.fitting.classic import classic_augment
from vaeaug.model.devices import resolve_precision

Transform = Callable[[torch.Tensor], torch.Tensor]

ClassifierFactory = Callable[[tuple[int, int, int], int], nn.Module]
"""``factory(shape, num_classes)`` -> a fresh network whose forward maps ``(N, *shape)`` images to
``(N, num_classes)`` logits (:class:`SmallCNN` is one)."""

__all__ = ["Budget", "ClassifierFactory", "ClassifierRun", "SmallCNN", "Transform", "check_classifier",
           "classic_augment", "describe_classifier", "fast_precision", "image_scores", "train_classifier"]


class SmallCNN(nn.Module):
    """Two conv+pool blocks (32, 64), dropout 0.3, dense 128: the protocol's classifier."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        c, h, w = shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(64 * (h // 4) * (w // 4), 128), nn.ReLU(),
                                  nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class Budget:
    """How long a classifier trains: to convergence on a validation split, or a fixed number of steps.

    Converged (the default): check validation accuracy every ``eval_every`` steps, stop after
    ``patience`` checks without improvement (not before ``min_steps``: an augmented arm's early
    checks are noisy, and a small validation split can peak by chance in them) or at
    ``max_steps``, and test the best checkpoint. Fixed (``Budget.fixed(n)``): train ``n`` steps
    and test the last weights.

    Example:
        >>> Budget().max_steps, Budget.fixed(500).converged
        (4000, False)
    """

    max_steps: int = 4000
    eval_every: int = 100
    patience: int = 6
    min_steps: int = 1000
    converged: bool = True

    def __post_init__(self) -> None:
        for name in ("max_steps", "eval_every", "patience"):
            v = getattr(self, name)
            check_int(name, v, 1)
        check_int("min_steps", self.min_steps, 0)

    @classmethod
    def fixed(cls, steps: int) -> Budget:
        """A fixed budget of ``steps`` optimizer steps (the protocol's earlier mode)."""
        return cls(max_steps=steps, eval_every=steps, patience=1, min_steps=0, converged=False)

    def describe(self) -> str:
        """A short description for reports."""
        if not self.converged:
            return f"{self.max_steps} steps"
        return (f"to convergence (validation every {self.eval_every} steps, patience {self.patience}, "
                f"at least {self.min_steps} and at most {self.max_steps} steps)")


@dataclass(frozen=True)
class ClassifierRun:
    """The outcome of one classifier run.

    Attributes:
        accuracy: test accuracy (%) of the tested weights (the best checkpoint when converged), or of
            the plateau's mean probabilities (``average=True``).
        steps: optimizer steps taken.
        best_step: the step of the tested weights.
        val_accuracy: validation accuracy (%) of the tested weights (``None`` without validation).
        seconds: wall time of the run.
        predictions: the predicted class of every test image (for per-class metrics).
        true_logprob: the log-probability the classifier gives each test image's true class (a
            continuous, per-image score: paired image by image across arms, it sees differences
            that 0/1 accuracy over a few hundred images cannot).
        brier: each test image's multi-class Brier score, ``sum_k (p_k - [k = y])^2`` in ``[0, 2]``
            (a bounded proper score: unlike the log-loss, a few confidently wrong images cannot
            dominate it).
        logprobs: every test image's log-probabilities ``(N, num_classes)``, from which the three
            above are read (for scores after recalibration, as :func:`vaeaug.tune` does with ``calibrate=True``).
    """

    accuracy: float
    steps: int
    best_step: int
    val_accuracy: float | None
    seconds: float
    predictions: torch.Tensor | None = dataclasses.field(default=None, repr=False, compare=False)
    true_logprob: torch.Tensor | None = dataclasses.field(default=None, repr=False, compare=False)
    brier: torch.Tensor | None = dataclasses.field(default=None, repr=False, compare=False)
    logprobs: torch.Tensor | None = dataclasses.field(default=None, repr=False, compare=False)


def _logprobs(model: nn.Module, x: torch.Tensor, amp: bool, mem: torch.memory_format) -> torch.Tensor:
    """Log-softmax over the classes of every image (float32), in chunks."""
    model.eval()
    out = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        for lo in range(0, len(x), 2000):
            out.append(F.log_softmax(model(x[lo:lo + 2000].contiguous(memory_format=mem)).float(), dim=1))
    model.train()
    return torch.cat(out) if out else torch.zeros(0, 1)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: bool, mem: torch.memory_format) -> float:
    return 100.0 * int((_logprobs(model, x, amp, mem).argmax(1) == y).sum()) / max(1, len(x))


def image_scores(logp: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's true-class log-probability and multi-class Brier score, ``sum_k (p_k - [k = y])^2``.

    Args:
        logp: ``(N, C)`` log-probabilities.
        y: ``(N,)`` true classes.

    Returns:
        ``(true_logprob, brier)``, each ``(N,)``.

    Example:
        >>> lp, brier = image_scores(torch.tensor([[0.5, 0.5]]).log(), torch.tensor([0]))
        >>> round(float(lp.exp()), 2), round(float(brier), 2)
        (0.5, 0.5)
    """
    true_logprob = logp.gather(1, y.view(-1, 1).clamp(0, logp.shape[1] - 1)).view(-1)
    probs = logp.exp()
    return true_logprob, (probs * probs).sum(1) - 2.0 * true_logprob.exp() + 1.0


def fast_precision() -> bool:
    """True where the classifier runs in bf16 autocast: CPUs with native bf16 (AVX-512 BF16 or AMX).

    Measured on the 2-core machine (BENCHMARKS.md): a training step of the protocol's CNN at batch
    64 takes 38 ms in fp32, 14 ms in bf16 with channels_last.
    """
    return resolve_precision("auto", torch.device("cpu")) == "bf16"


def check_classifier(classifier: Any) -> None:
    """Refuse what cannot be a classifier factory: not callable, or a network instead of a factory.

    Example:
        >>> check_classifier(SmallCNN)  # a class is a factory (shape, num_classes) -> nn.Module
        >>> check_classifier(SmallCNN((1, 8, 8), 10))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: classifier must be a factory (shape, num_classes) -> a fresh nn.Module, ... a SmallCNN network: ...
    """
    if classifier is None:
        return
    if isinstance(classifier, nn.Module):
        raise TypeError(f"classifier must be a factory (shape, num_classes) -> a fresh nn.Module, such as the "
                        f"class; got a {type(classifier).__name__} network: every run needs a fresh one")
    if not callable(classifier):
        raise TypeError(f"classifier must be a callable factory(shape, num_classes) -> nn.Module; "
                        f"got {type(classifier).__name__}")


def describe_classifier(classifier: Any) -> str | None:
    """A stable name for reports: the factory's qualified name (no memory address), ``None`` for the default.

    Example:
        >>> describe_classifier(SmallCNN), describe_classifier(None)
        ('SmallCNN', None)
    """
    if classifier is None:
        return None
    return str(getattr(classifier, "__qualname__", None) or type(classifier).__name__)


def train_classifier(
    x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *, num_classes: int,
    seed: int, budget: Budget | None = None, steps: int | None = None, batch_size: int = 64,
    classic: bool = False, flip: bool = False, aug: Augmenter | None = None, base: Transform | None = None,
    val: tuple[torch.Tensor, torch.Tensor] | None = None, weights: torch.Tensor | None = None,
    lr: float = 1e-3, precision: str = "auto", transform_first: bool = False, average: bool = False,
    classifier: ClassifierFactory | None = None,
) -> ClassifierRun:
    """Train :class:`SmallCNN` (or your ``classifier``) under one arm; return its test accuracy and the steps it took.

    In each step: a batch is drawn (uniformly, or by ``weights``), ``aug`` replaces a share of it
    by VAE variants (keyed by the seed and the step), then ``base`` (a user's per-image transform)
    or the built-in ``classic`` transform is applied (in the other order with ``transform_first``).
    Every arm of a seed uses the same initialisation, batches, keys and dropout seeds, so that
    paired differences measure the arm.

    Args:
        x, y: training images (model space, ``(N, C, H, W)`` in ``[0, 1]``) and labels.
        x_test, y_test: where the tested accuracy is measured.
        num_classes: number of classes.
        seed: seeds the initialisation, batches, augmentation and dropout.
        budget: how long to train (default: converged when ``val`` is given, else 1,500 steps).
        steps: shorthand for ``Budget.fixed(steps)``.
        batch_size: images per step.
        classic: apply the built-in affine transform (and flips if ``flip``) to every batch.
        aug: VAE variants for a share of every batch.
        base: a user transform applied per image (after ``aug``): ``(C, H, W)`` float in ``[0, 1]``
            in, the same out; it draws from torch's global generator, which is seeded per step.
        val: the validation split that decides when a converged run stops.
        weights: per-sample draw weights (oversampling); default uniform.
        lr: Adam's learning rate.
        precision: ``"auto"`` (bf16 autocast where the CPU computes it natively), ``"bf16"`` or ``"fp32"``.
        transform_first: apply ``base`` or ``classic`` first, then ``aug`` (fresh variants of the
            transformed images); default: the VAE move first, from each training image's encodings,
            computed once per run (an :class:`Augmenter` on a backend with the two stages).
        average: score the test images by the mean predicted probabilities of the best checkpoint
            and every later check (the plateau the stopping rule saw) instead of the best checkpoint
            alone. Which check a small validation split happens to pick is a large part of a run's
            noise; the plateau's mean halved the spread of paired accuracy differences between arms
            (BENCHMARKS.md, issue 21). Costs one pass over the test images per check: for small held-out folds.
        classifier: ``factory(shape, num_classes)`` returning a fresh ``nn.Module`` of logits, built
            under the run's seed (your own network instead of :class:`SmallCNN`; Adam at ``lr``).

    Returns:
        A :class:`ClassifierRun`.
    """
    if budget is None:
        budget = Budget.fixed(steps if steps is not None else 1500) if val is None or steps is not None else Budget()
    elif steps is not None:
        raise ValueError("pass budget= or steps=, not both")
    if budget.converged and val is None:
        raise ValueError("a converged budget needs a validation split: pass val=(x_val, y_val)")
    if average and not budget.converged:
        raise ValueError("average=True averages the checks of a converged budget; a fixed budget has none")
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32'; got {precision!r}")
    amp = fast_precision() if precision == "auto" else precision == "bf16"
    t0 = time.perf_counter()
    mem = torch.channels_last
    check_classifier(classifier)
    shape: tuple[int, int, int] = tuple(x.shape[1:])  # type: ignore[assignment]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = (SmallCNN if classifier is None else classifier)(shape, num_classes)
    if not isinstance(model, nn.Module):
        raise TypeError(f"classifier(shape, num_classes) must return a torch.nn.Module; got {type(model).__name__}")
    if any(p.grad is not None for p in model.parameters()):
        raise ValueError("classifier(shape, num_classes) returned a network that was already trained: every run "
                         "needs a fresh one (build it inside the factory), or the arms would not be paired")
    model = model.to(memory_format=mem)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed + 10_000)
    g_aug = torch.Generator().manual_seed(seed + 20_000)
    model.train()
    sources = None if transform_first else _sources(aug, x, y)
    best_acc, best_step, best_state, since_best = -1.0, 0, None, 0
    plateau: list[torch.Tensor] = []  # with ``average``: the test probabilities of the best check and every later one
    step = 0
    while step < budget.max_steps:
        if weights is None:
            idx = torch.randint(0, len(x), (batch_size,), generator=g)
        else:
            idx = torch.multinomial(weights, batch_size, replacement=True, generator=g)
        xb, yb = x[idx], y[idx]
        if aug is not None and not transform_first:
            key = int(derive_keys(seed, step)[0] >> np.uint64(1))
            if sources is None:
                xb = aug(xb, yb, key=key, codec=aug.codec("model"))
            else:
                xb = aug(xb, yb, key=key, codec=aug.codec("model"), encodings=sources(idx.numpy()))
        with torch.random.fork_rng(devices=[]):
            if base is not None:
                torch.manual_seed(seed * 100_019 + step)
                xb = torch.stack([base(img) for img in xb])
            elif classic:
                xb = classic_augment(xb, g_aug, flip)
        if aug is not None and transform_first:  # fresh variants of the transformed images
            xb = aug(xb, yb, key=int(derive_keys(seed, step)[0] >> np.uint64(1)), codec=aug.codec("model"))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 100_003 + step)  # dropout
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                logits = model(xb.contiguous(memory_format=mem))
                if step == 0 and not (isinstance(logits, torch.Tensor) and logits.shape == (len(xb), num_classes)):
                    got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                    raise ValueError(f"the classifier must map a batch {tuple(xb.shape)} to logits "
                                     f"{(len(xb), num_classes)} (one per class); got {got}")
                loss = F.cross_entropy(logits, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if budget.converged and (step % budget.eval_every == 0 or step == budget.max_steps):
            assert val is not None
            acc = _accuracy(model, val[0], val[1], amp, mem)
            check_probs = _logprobs(model, x_test, amp, mem).exp() if average else None
            if acc > best_acc:
                best_acc, best_step, since_best = acc, step, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                plateau = []
            else:
                since_best += 1
            if check_probs is not None:
                plateau.append(check_probs)
            if since_best >= budget.patience and step >= budget.min_steps:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_step = step
    val_acc = best_acc if budget.converged else (None if val is None else _accuracy(model, val[0], val[1], amp, mem))
    if plateau:  # the mean of probabilities, renormalised in float64 against rounding before the log
        mean = torch.stack(plateau).double().mean(0)
        logp = (mean / mean.sum(1, keepdim=True)).clamp(min=1e-300).log().float()
    else:
        logp = _logprobs(model, x_test, amp, mem)
    pred = logp.argmax(1)
    true_logprob, brier = image_scores(logp, y_test)
    return ClassifierRun(accuracy=100.0 * int((pred == y_test).sum()) / max(1, len(y_test)), steps=step,
                         best_step=best_step, val_accuracy=val_acc, seconds=time.perf_counter() - t0,
                         predictions=pred, true_logprob=true_logprob, brier=brier, logprobs=logp)


def _sources(aug: Any, x: torch.Tensor, y: torch.Tensor) -> Callable[[np.ndarray], SourceEncodings] | None:
    """``sources(idx)``: the encodings lookup of a batch drawn at ``idx`` from ``x``, each image encoded once
    per run; ``None`` where ``aug`` is no :class:`Augmenter` on a backend with the two stages."""
    if not isinstance(aug, Augmenter) or not aug.amortizes or aug.setting.mode == "prior":
        return None
    cache = EncodingCache(aug.backend, labels=y.cpu().numpy().astype(np.int64) if aug.conditional else None,
                          delta=aug.setting.form == "delta")

    def load(m: np.ndarray) -> torch.Tensor:
        return x[torch.from_numpy(m).to(x.device)]

    def lookup(idx: np.ndarray) -> SourceEncodings:
        return lambda rows: cache.get(idx[rows], load)

    return lookup
