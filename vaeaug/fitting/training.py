"""Fitting a VAE: validation split, KL warm-up, early stopping, best-model keeping, history.

Data that fits in memory is batched straight from one tensor (one gather per epoch, then
slices), so the per-batch Python work is the forward pass, the loss, one optimizer step and a
progress-bar tick. Every random choice (initialisation, split, shuffling, noise) comes from
generators seeded by ``seed``: same seed, data and thread count give bit-identical weights.
"""

from __future__ import annotations

import functools
import math
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vaeaug.core.values import MAX_SEED, check_int
from vaeaug.data import Layout, TensorData, as_tensor_data, check_labels
from vaeaug.fitting.classic import CLASSIC_AUGMENTS, classic_augment
from vaeaug.model.devices import PRECISIONS, resolve_device, resolve_precision
from vaeaug.model.vae import VAE, Likelihood, VAEConfig

__all__ = ["fit", "resolve_augment", "resolve_device", "resolve_precision", "PRECISIONS", "FitAugment"]

FitAugment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]



def resolve_augment(augment: str | FitAugment | None) -> tuple[FitAugment, str] | None:
    """Check ``fit``'s ``augment`` argument; return the function to apply and the name recorded.

    Args:
        augment: ``None``, ``"classic"`` (random affine: rotation up to 10 degrees, scale 0.9-1.1,
            shift up to 10%; no flips), ``"classic+flip"`` (the same, plus a horizontal flip with
            probability 1/2), or a callable ``(x, generator) -> x`` on model-space batches.

    Returns:
        ``(function, name)``, or ``None`` for ``None``; the name is what the history records
        (``"classic"``, ``"classic+flip"``, or ``"callable:<module.qualname>"``; a callable is
        recorded by name only, never as code).

    Example:
        >>> fn, name = resolve_augment("classic")
        >>> name, fn(torch.rand(2, 1, 8, 8), torch.Generator().manual_seed(0)).shape
        ('classic', torch.Size([2, 1, 8, 8]))
    """
    if augment is None:
        return None
    names = ", ".join(repr(k) for k in CLASSIC_AUGMENTS)
    if isinstance(augment, str):
        if augment not in CLASSIC_AUGMENTS:
            hint = " ('classic' has no flips already)" if "flip" in augment and "+" not in augment else ""
            raise ValueError(f"augment must be None, {names} or a callable (x, generator) -> x; "
                             f"got {augment!r}{hint}")
        return functools.partial(classic_augment, flip=CLASSIC_AUGMENTS[augment]), augment
    if not callable(augment):
        raise TypeError(f"augment must be None, {names} or a callable (x, generator) -> x; "
                        f"got {type(augment).__name__} {augment!r:.80}")
    return augment, f"callable:{_callable_name(augment)}"


def _callable_name(fn: Any) -> str:
    """``module.qualname`` of a function or class, else its ``repr`` without memory addresses (so the
    same code gives the same name in every run), at most 200 characters."""
    qual = getattr(fn, "__qualname__", None)
    if isinstance(qual, str):
        mod = getattr(fn, "__module__", None)
        name = f"{mod}.{qual}" if isinstance(mod, str) and mod else qual
    else:
        name = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(fn))
    return name if len(name) <= 200 else name[:197] + "..."


def fit(
    data: Any,
    y: Any = None,
    *,
    epochs: int = 50,
    batch_size: int = 128,
    lr: float = 2e-3,
    latent_dim: int = 16,
    conditional: bool = False,
    num_classes: int | None = None,
    widths: tuple[int, ...] | None = None,
    likelihood: Likelihood = "bernoulli",
    gaussian_std: float = 0.1,
    learn_std: bool = False,
    beta: float = 1.0,
    kl_warmup: int = 10,
    val_fraction: float = 0.1,
    patience: int | None = 10,
    seed: int = 0,
    device: str | torch.device = "auto",
    precision: str = "auto",
    distributed: bool | None = None,
    stream: bool = False,
    num_workers: int = 2,
    progress: bool = True,
    layout: Layout | None = None,
    value_range: tuple[float, float] | None = None,
    augment: str | FitAugment | None = None,
    interruptible: bool = True,
) -> VAE:
    """Fit a VAE to ``data`` and return the model with the best validation loss.

    Args:
        data: anything :func:`vaeaug.data.as_tensor_data` accepts (arrays, tensors, a Dataset,
            an ``.npz`` path, an image folder, ``"digits"``, ``"fashion-mnist"``).
        y: labels for array/tensor data (needed when ``conditional=True``).
        epochs: maximum number of passes over the training split.
        batch_size: samples per optimizer step.
        lr: Adam learning rate.
        latent_dim: size of the latent code.
        conditional: fit a class-conditional VAE (labels enter encoder and decoder).
        num_classes: the number of classes of a conditional model when some have no sample in
            ``data`` (e.g. a cross-validation fold); default: from the data's class names or labels,
            which must then be ``0..C-1`` with every class present.
        widths: conv channels per stage / MLP hidden sizes; ``None`` sizes them automatically.
        likelihood: ``"bernoulli"`` or ``"gaussian"``.
        gaussian_std: std of the Gaussian likelihood (initial value if ``learn_std``).
        learn_std: learn the Gaussian likelihood's std.
        beta: KL weight.
        kl_warmup: epochs over which the KL weight rises linearly from 0 to ``beta``.
        val_fraction: share of the data held out for validation, early stopping and model
            selection; 0 disables validation (the last model is returned).
        patience: stop after this many epochs after the warm-up without a better validation
            loss; ``None`` never stops early.
        seed: seeds initialisation, split, shuffling and noise.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda[:N]"``.
        precision: ``"auto"`` (bf16 autocast where the hardware has native bf16, fp16 with a
            gradient scaler on older GPUs, else fp32), ``"fp32"``, ``"bf16"`` or ``"fp16"`` (CUDA).
            Parameters, optimizer state and the loss stay fp32; validation runs in fp32.
        distributed: ``None`` trains with DistributedDataParallel when launched by ``torchrun``
            with several processes (every rank must call ``fit``); ``False`` never does (a fit on
            one rank only, e.g. inside :func:`vaeaug.tune`); ``True`` requires a distributed launch.
        stream: read ``data`` (a Dataset, an image folder or a generated set) batch by batch through
            a DataLoader with ``num_workers`` worker processes instead of loading it into memory:
            for data that does not fit (:mod:`vaeaug.fitting.streaming`).
        num_workers: DataLoader workers when ``stream=True``.
        progress: show a progress bar and print a one-line summary at the end.
        layout: explicit input layout for ambiguous array shapes.
        value_range: ``(low, high)`` of the input values when it cannot be inferred.
        augment: augment every *training* batch on the fly before the VAE sees it (validation
            batches never are: they measure the fit). ``"classic"``: a random affine per image
            (rotation up to 10 degrees, scale 0.9-1.1, shift up to 10% of the side) and no flips,
            because a mirrored image is often another class or none (digits, letters, text);
            ``"classic+flip"``: the same plus a left-right flip with probability 1/2, for data whose
            classes are mirror-symmetric (clothes, animals, scenes). Or a callable
            ``f(x, generator) -> x`` taking a model-space batch ``(N, C, H, W)`` in ``[0, 1]`` on the
            fit's device and a CPU ``torch.Generator`` (its only source of randomness, seeded from
            ``seed``), returning a batch of the same shape in ``[0, 1]``. Images only. The choice is
            recorded in every history row as ``fit_augment`` (a callable by its name, never as code).
        interruptible: Ctrl-C (``KeyboardInterrupt``) stops training and returns the best model so
            far (``True``, for a fit you run yourself); ``False`` lets it propagate, as
            :func:`vaeaug.evaluate` and :func:`vaeaug.tune` do, so that an interrupted run stops
            instead of carrying on with a half-trained VAE.

    Returns:
        The fitted :class:`~vaeaug.model.vae.VAE` in eval mode, with ``history`` (one dict per
        epoch: train/val loss, reconstruction, KL in nats per sample, seconds, samples/s,
        precision, processes, fit_augment).

    Example:
        >>> import vaeaug
        >>> model = vaeaug.fit("digits", epochs=1, progress=False)
        >>> model.config.input_shape
        (1, 8, 8)
        >>> vaeaug.fit("digits", epochs=1, augment="classic", progress=False).history[-1]["fit_augment"]
        'classic'
    """
    _check_args(epochs, batch_size, lr, val_fraction, patience, seed)
    aug = resolve_augment(augment)
    td: Any
    if stream:
        from vaeaug.fitting.streaming import open_stream

        if y is not None or layout is not None:
            raise ValueError("stream=True reads labels and layout from the dataset; leave y and layout unset")
        check_int("num_workers", num_workers, 0)
        td = open_stream(data, value_range)
        shape: tuple[int, ...] = td.shape
        num_classes = _stream_classes(td, num_classes) if conditional else None
    else:
        td = as_tensor_data(data, y, layout=layout, value_range=value_range)
        shape = td.sample_shape
        num_classes = check_labels(td, num_classes) if conditional else None
    if aug is not None and len(shape) != 3:
        raise ValueError(f"augment={aug[1]!r} transforms images, and this data is vectors of shape {tuple(shape)}; "
                         "leave augment=None for vector data")
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    config = VAEConfig(
        input_shape=shape, latent_dim=latent_dim, widths=widths, num_classes=num_classes,
        likelihood=likelihood, gaussian_std=gaussian_std, learn_std=learn_std, beta=beta,
        kl_warmup=kl_warmup,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VAE(config, td.value_range, td.class_names)
    from vaeaug.fitting.distributed import setup

    ctx = None if distributed is False else setup(dev)  # under torchrun: DistributedDataParallel
    if distributed is True and ctx is None:
        raise ValueError("distributed=True but this process was not launched with several processes; "
                         "use torchrun --nproc-per-node N")
    try:
        fitted = _train(model, td, epochs=epochs, batch_size=batch_size, lr=lr,
                        val_fraction=val_fraction, patience=patience, seed=seed,
                        device=ctx.device if ctx else dev, progress=progress and (ctx is None or ctx.is_main),
                        ctx=ctx, precision=prec,
                        stream={"batch_size": batch_size, "num_workers": num_workers} if stream else None,
                        augment=aug, interruptible=interruptible)
    except BaseException:
        if ctx is not None:
            ctx.close(ok=False)  # no barrier: the other ranks may never reach it; let torchrun stop them
        raise
    if ctx is not None:
        ctx.close(ok=True)
    return fitted


def _stream_classes(td: Any, num_classes: int | None = None) -> int:
    """The class count of a streamed dataset: ``num_classes``, its ``classes``, else from its ``targets``.

    Without ``num_classes`` or class names the targets must be ``0..C-1`` with every class present
    (as :func:`vaeaug.data.check_labels` asks of data in memory).
    """
    if num_classes is not None:
        check_int("num_classes", num_classes, 1)
        if td.labels is not None and len(td.labels) and not 0 <= int(td.labels.min()) <= int(td.labels.max()) < \
                num_classes:
            raise ValueError(f"labels must be in 0..{num_classes - 1} for num_classes={num_classes}; the dataset's "
                             f"go from {int(td.labels.min())} to {int(td.labels.max())}")
        return num_classes
    if td.labels is None and not td.class_names:
        raise ValueError("conditional=True with stream=True needs a dataset that lists its labels (a `targets` "
                         "attribute, as ImageFolder and GeneratedDataset have) or its `classes`")
    if td.labels is not None and len(td.labels) and int(td.labels.min()) < 0:
        raise ValueError(f"labels must be >= 0 for a conditional model; found {int(td.labels.min())}")
    if not td.class_names and len(td.labels):
        present = np.unique(np.asarray(td.labels))
        if len(present) < int(present[-1]) + 1:
            raise ValueError(f"labels must be 0..C-1 with every class present; the dataset's targets have classes "
                             f"{present[:20].tolist()}, which would make a {int(present[-1]) + 1}-class model with "
                             f"{int(present[-1]) + 1 - len(present)} classes never seen - remap them, list the "
                             "dataset's `classes`, or pass num_classes=")
    k = len(td.class_names) if td.class_names else int(td.labels.max()) + 1
    if td.labels is not None and len(td.labels) and int(td.labels.max()) >= k:
        raise ValueError(f"labels go up to {int(td.labels.max())} but the dataset lists {k} classes")
    return k


def _check_args(epochs: int, batch_size: int, lr: float, val_fraction: float,
                patience: int | None, seed: int) -> None:
    for name, v, lo, hi in (("epochs", epochs, 1, None), ("batch_size", batch_size, 1, None),
                            ("seed", seed, 0, MAX_SEED)):
        check_int(name, v, lo, hi)
    if patience is not None and (not isinstance(patience, int) or isinstance(patience, bool) or patience < 1):
        raise ValueError(f"patience must be an integer >= 1 or None; got {patience!r}")
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive number; got {lr!r}")
    if not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction!r}")


def _seed(seed: int, offset: int) -> int:
    """``seed + offset`` within 64 bits (what ``torch.Generator.manual_seed`` takes): a seed near 2**64 wraps."""
    return (seed + offset) & MAX_SEED


def _split(n: int, val_fraction: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n_val == 0 and n >= 2:
        n_val = 1
    if n - n_val < 1:
        raise ValueError(f"{n} samples leave none for training with val_fraction={val_fraction}; lower it")
    perm = torch.randperm(n, generator=g)
    return perm[n_val:].sort().values, perm[:n_val].sort().values


class _MemoryBatches:
    """Batches sliced from tensors in memory: one gather per epoch, then slices (the fast path)."""

    def __init__(self, td: TensorData, tr_idx: torch.Tensor, va_idx: torch.Tensor, device: torch.device,
                 conditional: bool, mem: torch.memory_format, g_cpu: torch.Generator, sampler: Any) -> None:
        x_all = td.x.to(device)
        y_all = td.y.to(device) if (td.y is not None and conditional) else None
        self.x_tr, self.x_va = x_all[tr_idx.to(device)], x_all[va_idx.to(device)]
        self.y_tr = y_all[tr_idx.to(device)] if y_all is not None else None
        self.y_va = y_all[va_idx.to(device)] if y_all is not None else None
        self.device, self.mem, self.g_cpu, self.sampler = device, mem, g_cpu, sampler
        self.n_train, self.n_val = len(tr_idx), len(va_idx)
        self.n_local = self.n_train if sampler is None else len(sampler)  # this process's samples per epoch

    def train(self, epoch: int, batch_size: int) -> Any:
        if self.sampler is None:
            perm = torch.randperm(self.n_train, generator=self.g_cpu).to(self.device)
        else:
            self.sampler.set_epoch(epoch)
            perm = torch.tensor(list(self.sampler), dtype=torch.long, device=self.device)
        xe = self.x_tr[perm].contiguous(memory_format=self.mem)
        ye = self.y_tr[perm] if self.y_tr is not None else None
        for lo in range(0, self.n_local, batch_size):
            yield xe[lo:lo + batch_size], (ye[lo:lo + batch_size] if ye is not None else None)

    def val(self, batch_size: int) -> Any:
        for lo in range(0, self.n_val, batch_size):
            xb = self.x_va[lo:lo + batch_size].contiguous(memory_format=self.mem)
            yield xb, (self.y_va[lo:lo + batch_size] if self.y_va is not None else None)


def _train(
    model: VAE, td: Any, *, epochs: int, batch_size: int, lr: float, val_fraction: float,
    patience: int | None, seed: int, device: torch.device, progress: bool, ctx: Any = None,
    precision: str = "fp32", stream: Any = None, augment: tuple[FitAugment, str] | None = None,
    interruptible: bool = True,
) -> VAE:
    cfg = model.config
    g_cpu = torch.Generator().manual_seed(seed)
    tr_idx, va_idx = _split(len(td), val_fraction, g_cpu)
    g_noise = torch.Generator(device=device).manual_seed(_seed(seed, 1))
    # channels_last on CPU (+12% at batch 256, BENCHMARKS.md); DDP's gradient buckets want plain layout
    mem = torch.channels_last if cfg.is_image and ctx is None else torch.contiguous_format
    model.to(device).to(memory_format=mem).train()
    step_fn: Any = model.elbo_terms
    sampler: Any = None
    if ctx is not None:  # every rank: the same split and initial weights; its own part of each epoch
        from torch.nn.parallel import DistributedDataParallel
        from torch.utils.data.distributed import DistributedSampler

        ddp = DistributedDataParallel(_ELBO(model), device_ids=[device.index] if device.type == "cuda" else None)
        step_fn = ddp
        sampler = DistributedSampler(range(len(tr_idx)), num_replicas=ctx.world_size, rank=ctx.rank,  # type: ignore[arg-type]
                                     shuffle=True, seed=seed)
        g_noise.manual_seed(_seed(seed, 1 + 1000 * ctx.rank))  # each rank its own reparameterisation noise
    # fit-time augmentation: its own CPU stream (the same transforms on any device), one per rank
    aug_fn, aug_name = augment if augment is not None else (None, None)
    g_aug = torch.Generator().manual_seed(_seed(seed, 3 + 1000 * (ctx.rank if ctx is not None else 0)))
    check_aug = aug_name is not None and aug_name.startswith("callable:")  # a user's: check what it returns
    if stream is None:
        source: Any = _MemoryBatches(td, tr_idx, va_idx, device, model.conditional, mem, g_cpu, sampler)
    else:
        from vaeaug.fitting.streaming import StreamBatches

        source = StreamBatches(td, tr_idx, va_idx, device, model.conditional, mem, g_cpu, sampler, **stream)
    n_tr, n_local = source.n_train, source.n_local
    n_batches = math.ceil(n_local / batch_size)
    warm_steps = cfg.kl_warmup * n_batches
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    bar = tqdm(total=epochs * n_tr, unit="sample", unit_scale=True, desc="fit", disable=not progress,
               dynamic_ncols=True, file=sys.stderr)
    best_loss, best_epoch, best_state = math.inf, 0, None
    since_best, step, interrupted, stopped_early = 0, 0, False, False
    t_start = time.perf_counter()
    train_seconds = 0.0
    try:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            model.train()
            sum_rec = torch.zeros((), device=device)
            sum_kl = torch.zeros((), device=device)
            sum_loss = torch.zeros((), device=device)
            for xb, yb in source.train(epoch, batch_size):
                if aug_fn is not None:  # training batches only; validation below measures the real data
                    xa = aug_fn(xb, g_aug)
                    if check_aug:
                        _check_augmented(xa, xb, aug_name)
                    xb = xa.contiguous(memory_format=mem)
                nb = len(xb)
                bt = cfg.beta * (min(1.0, step / warm_steps) if warm_steps else 1.0)
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    rec, kl = step_fn(xb, yb, g_noise)
                rec, kl = rec.float(), kl.float()
                loss_sum = rec.sum() + bt * kl.sum()
                opt.zero_grad(set_to_none=True)
                if scaler is None:
                    (loss_sum / nb).backward()
                    opt.step()
                else:
                    scaler.scale(loss_sum / nb).backward()
                    scaler.step(opt)
                    scaler.update()
                step += 1
                with torch.no_grad():
                    sum_rec += rec.sum()
                    sum_kl += kl.sum()
                    sum_loss += loss_sum
                bar.update(nb * (ctx.world_size if ctx else 1))
            seen = float(n_local)
            if ctx is not None:  # the epoch's sums over every rank
                import torch.distributed as dist

                sums = torch.stack([sum_rec, sum_kl, sum_loss, torch.tensor(seen, device=device)])
                dist.all_reduce(sums)
                sum_rec, sum_kl, sum_loss, seen = sums[0], sums[1], sums[2], float(sums[3])
            train_loss = float(sum_loss) / seen
            if not math.isfinite(train_loss):
                raise FloatingPointError(
                    f"fitting diverged in epoch {epoch} (training loss is {train_loss}); "
                    f"lower lr (now {lr}) or beta (now {cfg.beta})"
                )
            epoch_train_s = time.perf_counter() - t0
            train_seconds += epoch_train_s
            row: dict[str, Any] = {
                "epoch": epoch, "beta": bt, "train_loss": train_loss, "precision": precision,
                "processes": ctx.world_size if ctx else 1, "fit_augment": aug_name,
                "train_recon": float(sum_rec) / seen, "train_kl": float(sum_kl) / seen,
            }
            if len(va_idx):
                v_rec, v_kl = _evaluate(model, source.val(1024), len(va_idx), seed=_seed(seed, 2), device=device)
                if ctx is not None:  # every rank takes rank 0's figure, so all make the same decisions
                    import torch.distributed as dist

                    v = torch.tensor([v_rec, v_kl], dtype=torch.float64, device=device)
                    dist.broadcast(v, src=0)
                    v_rec, v_kl = float(v[0]), float(v[1])
                row.update(val_loss=v_rec + cfg.beta * v_kl, val_recon=v_rec, val_kl=v_kl)
                monitored = row["val_loss"]
            else:
                monitored = math.nan
            row["seconds"] = time.perf_counter() - t0
            row["samples_per_s"] = n_tr / epoch_train_s
            model.history.append(row)
            if len(va_idx) and monitored < best_loss:
                best_loss, best_epoch, since_best = monitored, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif epoch > cfg.kl_warmup:
                since_best += 1
            bar.set_postfix_str(
                f"epoch {epoch}/{epochs} loss {train_loss:.2f}"
                + (f" val {monitored:.2f}" if len(va_idx) else ""), refresh=False)
            if patience is not None and len(va_idx) and since_best >= patience:
                stopped_early = True
                break
    except KeyboardInterrupt:
        if not interruptible:
            raise
        interrupted = True
    finally:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.to(memory_format=torch.contiguous_format).eval()
    if progress:
        print(_summary(model, n_tr, len(va_idx), best_loss, best_epoch, train_seconds,
                       time.perf_counter() - t_start, stopped_early, interrupted), flush=True)
    return model


def _check_augmented(xa: Any, xb: torch.Tensor, name: str | None) -> None:
    """A user's augmentation must return a float batch like its input, in model space ``[0, 1]``."""
    if not isinstance(xa, torch.Tensor) or xa.shape != xb.shape or not xa.is_floating_point() \
            or xa.device != xb.device:
        got = f"{tuple(xa.shape)} {xa.dtype} on {xa.device}" if isinstance(xa, torch.Tensor) else type(xa).__name__
        raise ValueError(f"augment {name} must return a float tensor like its input, {tuple(xb.shape)} "
                         f"{xb.dtype} on {xb.device}; it returned {got}")
    lo, hi = torch.aminmax(xa)
    if not (float(lo) >= 0.0 and float(hi) <= 1.0):  # also catches NaN
        raise ValueError(f"augment {name} returned values in [{float(lo):g}, {float(hi):g}]; model-space images "
                         "are in [0, 1]: clamp them (e.g. x.clamp(0, 1)) before returning")


class _ELBO(torch.nn.Module):
    """``elbo_terms`` as ``forward``, so that DistributedDataParallel can wrap it."""

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, y: Any, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vae.elbo_terms(x, y, g)  # type: ignore[no-any-return]


@torch.no_grad()
def _evaluate(model: VAE, batches: Any, n: int, *, seed: int, device: torch.device) -> tuple[float, float]:
    """Mean reconstruction NLL and KL per sample over ``batches``, with fixed noise so epochs compare fairly."""
    model.eval()
    g = torch.Generator(device=device).manual_seed(seed)
    rec_sum = torch.zeros((), device=device)
    kl_sum = torch.zeros((), device=device)
    for xb, yb in batches:
        rec, kl = model.elbo_terms(xb, yb, g)
        rec_sum += rec.sum()
        kl_sum += kl.sum()
    model.train()
    return float(rec_sum) / n, float(kl_sum) / n


def _summary(model: VAE, n_tr: int, n_va: int, best_loss: float, best_epoch: int,
             train_seconds: float, total_seconds: float, stopped_early: bool, interrupted: bool) -> str:
    h = model.history
    epochs_done = len(h)
    rate = n_tr * epochs_done / train_seconds if train_seconds > 0 else float("nan")
    shape = "x".join(map(str, model.config.input_shape))
    how = " (interrupted)" if interrupted else " (stopped early)" if stopped_early else ""
    prec = h[-1].get("precision", "fp32") if h else "fp32"
    aug = h[-1].get("fit_augment") if h else None
    head = (f"fit: {shape} -> latent {model.config.latent_dim} on {n_tr:,} samples, "
            f"{epochs_done} epochs{how} in {total_seconds:.1f} s, {rate:,.0f} samples/s ({prec}"
            f"{f', augment {aug}' if aug else ''})")
    if n_va and best_epoch:
        b = h[best_epoch - 1]
        return (f"{head}; best val loss {best_loss:.2f} nats/sample at epoch {best_epoch} "
                f"(recon {b['val_recon']:.2f} + KL {b['val_kl']:.2f})")
    if h:
        return f"{head}; final train loss {h[-1]['train_loss']:.2f} nats/sample (no validation split)"
    return f"{head}; no epoch completed, the model is the initial one"

