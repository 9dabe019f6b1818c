"""``VAEAugmentedDataset``: the real samples followed by VAE variants of them.

Index layout for ``N`` real samples and ``k`` variants per sample: ``0..N-1`` are the real
samples, unchanged; ``N + i * k + j`` is variant ``j`` of real sample ``i`` (with ``i``'s
label); with ``balance_classes=True`` the indices after that fill the smaller classes up to the
largest: variants of their own real samples (``balance_with="variants"``, the default: +2.9
points of balanced accuracy over plain oversampling on Fashion-MNIST with a 10:1 imbalance,
against +0.7 for new samples from the prior; BENCHMARKS.md, issue 13) or ``prior`` samples of the
class (``balance_with="prior"``, class-conditional models). Each variant is a pure function of
``(seed, index)`` (and the epoch, with ``resample_each_epoch=True``), so it is the same whatever
the worker, order or batch size; ``__getitems__`` makes a whole batch of variants in one model call.

Every real sample is encoded once (``mu``, ``logvar`` and, for the delta form, ``D(mu)``), kept in a
bounded cache by index (:class:`~vaeaug.core.cache.EncodingCache`, ``cache_sources``), and each
variant then costs one decoder pass. A source's encodings are the same bit for bit whichever batch
computed them, so the cache and its size change the speed, never the variants.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vaeaug.backends.factory import as_backend
from vaeaug.core.augment import Augmenter, class_members, same_class_partners
from vaeaug.core.backend import Backend
from vaeaug.core.cache import EncodingCache, bytes_per_source
from vaeaug.core.functional import Encodings
from vaeaug.core.labels import as_labels
from vaeaug.core.rng import Stream, derive_keys, uniform
from vaeaug.core.settings import PARTNER_MODES, AugmentSetting, resolve_setting
from vaeaug.core.values import MAX_SEED, check_int

__all__ = ["VAEAugmentedDataset", "CACHE_BYTES"]

CACHE_BYTES = 256 * 2**20
"""The default bound of the encodings cache (``cache_sources=None``): as many sources as fit in 256 MiB per
process (each DataLoader worker keeps its own), all of them for any set up to ~80,000 28x28 images."""


def _split_item(item: Any) -> tuple[Any, Any, bool]:
    """``(x, y, has_label)`` of a base item ``x``, ``(x,)`` or ``(x, y, ...)``."""
    if isinstance(item, (tuple, list)):
        if len(item) == 0:
            raise ValueError("dataset items must be x, (x,) or (x, y, ...); got an empty sequence")
        if len(item) == 1:
            return item[0], None, False  # e.g. TensorDataset(x)
        return item[0], item[1], True
    return item, None, False


def _same_plain_tensors(xs: list[Any], shape: tuple[int, ...]) -> bool:
    """True if every ``x`` is a plain tensor ``(C, H, W)`` of the model's shape, of one dtype and device: what
    converts as one batch (the conversions are elementwise, so the values are those of one by one)."""
    first = xs[0]
    return type(first) is torch.Tensor and tuple(first.shape) == shape and all(
        type(x) is torch.Tensor and x.shape == first.shape and x.dtype == first.dtype and x.device == first.device
        for x in xs)


def _replace_x(item: Any, xv: Any) -> Any:
    """``item`` with its image replaced, keeping the container type (x, tuple or list)."""
    if isinstance(item, (tuple, list)):
        return type(item)([xv, *item[1:]])
    return xv


class VAEAugmentedDataset(torch.utils.data.Dataset):
    """Real samples plus ``variants_per_sample`` VAE variants of each.

    Args:
        base: a map-style dataset yielding ``x`` or ``(x, y)``; ``x`` a PIL image, a tensor
            ``(C, H, W)`` or a numpy ``(H, W[, C])`` array of the model's size.
        model_or_path: a fitted ``VAE``, a ``.vae`` path or a ``Backend``.
        variants_per_sample: ``k``, variants per real sample.
        mode: latent move (see :mod:`vaeaug.core.functional`); ``interpolate`` and ``extrapolate`` pick
            partners of the same class from ``base``.
        strength: size of the move.
        form: ``"decode"`` or ``"delta"``. ``mode``, ``strength`` and ``form`` left as ``None``
            come from the model's tuned setting, else from the library default.
        seed: root of every variant's noise.
        return_is_synthetic: append a bool to each item: ``False`` for real, ``True`` for made.
        resample_each_epoch: variants also depend on the epoch set by :meth:`set_epoch`.
        balance_classes: add samples of the smaller classes until every class has as many
            samples as the largest.
        balance_with: what the added samples are: ``"variants"`` of the class's own real samples
            (in turn, with this dataset's setting; any model) or ``"prior"`` samples of the class
            (new samples decoded from ``N(0, I)``; class-conditional models only).
        device: where the model runs.
        cache_sources: how many real samples' encodings to keep (``mu``, ``logvar`` and, for the delta
            form, ``D(mu)``; the least recently used dropped first): ``None`` (default) as many as fit
            in :data:`CACHE_BYTES` (256 MiB), ``0`` none (each batch still encodes each of its sources
            once). Per source, ``4 * (C*H*W + 2 * latent_dim) + ~100`` bytes for the delta form,
            ``8 * latent_dim + ~100`` for decode; in every DataLoader worker (docs/dataset.md).

    Example:
        >>> import vaeaug, torch
        >>> d = vaeaug.load_builtin("digits")
        >>> base = torch.utils.data.TensorDataset(d.x[:10], d.y[:10])
        >>> model = vaeaug.fit(d.x, d.y, epochs=1, progress=False)
        >>> ds = VAEAugmentedDataset(base, model, variants_per_sample=2)
        >>> len(ds), ds[12][0].shape
        (30, torch.Size([1, 8, 8]))
    """

    def __init__(
        self,
        base: Any,
        model_or_path: Any,
        variants_per_sample: int = 1,
        mode: str | None = None, strength: float | None = None, form: str | None = None,
        seed: int = 0,
        return_is_synthetic: bool = False,
        resample_each_epoch: bool = False,
        balance_classes: bool = False,
        balance_with: str = "variants",
        device: Any = None,
        cache_sources: int | None = None,
    ) -> None:
        k = variants_per_sample
        check_int("variants_per_sample", k, 0)
        check_int("seed", seed, 0, MAX_SEED)
        check_int("cache_sources", cache_sources, 0, optional=True)
        if not (hasattr(base, "__getitem__") and hasattr(base, "__len__")):
            raise TypeError(
                f"base must be a map-style dataset (with __len__ and __getitem__); got {type(base).__name__}"
            )
        self.base = base
        self.n_real = len(base)
        if self.n_real == 0:
            raise ValueError("the base dataset is empty")
        gen = as_backend(model_or_path, device=device)
        if len(gen.config.input_shape) != 3:
            raise ValueError("VAEAugmentedDataset works on images; this model was fit on vectors (N, D)")
        if gen.augment is not None and gen.augment.get("p") == 0.0:
            warnings.warn("vaeaug.tune found no setting that helps this model's data (stored p = 0); "
                          "the dataset makes the variants you asked for all the same", stacklevel=2)
        setting = resolve_setting(gen.augment, mode=mode, strength=strength, form=form, p=1.0)  # every variant made
        self._core = Augmenter(gen, setting, invariant=True)
        mode, strength, form = setting.mode, setting.strength, setting.form
        if balance_with not in ("variants", "prior"):
            raise ValueError(f"balance_with must be 'variants' or 'prior'; got {balance_with!r}")
        prior = balance_classes and balance_with == "prior"
        if prior and not gen.conditional:
            raise ValueError("balance_classes=True with balance_with='prior' adds prior samples of a class and needs "
                             "a class-conditional model; balance with variants of the real samples instead "
                             "(balance_with='variants', the default)")
        if prior and isinstance(base[0], (tuple, list)) and len(base[0]) > 2:
            raise ValueError(
                f"balance_classes=True with balance_with='prior' makes new (x, y) samples, but base items have "
                f"{len(base[0])} fields; balance with variants (balance_with='variants', which keep every field of "
                "their source), or wrap the base so it yields (x, y)"
            )
        self.backend: Backend = gen
        self.balance_with = balance_with
        self._prior = Augmenter(gen, AugmentSetting("prior", 1.0, "decode", 1.0), invariant=True) if prior \
            else None
        self.variants_per_sample = k
        self.mode, self.strength, self.form, self.seed = mode, float(strength), form, seed
        self.return_is_synthetic = return_is_synthetic
        self.resample_each_epoch = resample_each_epoch
        self.epoch = 0
        # check the base now, not deep inside a worker
        item0 = base[0]
        x0, y0, has_label = _split_item(item0)
        self._model_space([x0])  # its type, shape and values, now, not deep in a worker
        self._x_like = x0
        self._item_like = item0
        self._label_like = y0
        needs_labels = gen.conditional or mode in PARTNER_MODES or balance_classes
        if needs_labels and not has_label:
            why = ("the model is class-conditional" if gen.conditional else
                   f"mode {mode!r} needs classes" if mode in PARTNER_MODES else "balance_classes=True needs classes")
            other = ("an unconditional model" if gen.conditional else
                     "another mode" if mode in PARTNER_MODES else "balance_classes=False")
            item = base[0]
            got = (f"a {len(item)}-tuple ({', '.join(type(v).__name__ for v in item)})"
                   if isinstance(item, (tuple, list)) else f"a {type(item).__name__}, with no label")
            raise ValueError(f"base items must be (x, y), an image and its class, because {why}; base[0] is {got} - "
                             f"give the base its labels (e.g. TensorDataset(x, y), or a Dataset returning "
                             f"(image, label)), or use {other}")
        self._labels: np.ndarray | None = self._all_labels() if needs_labels else None
        if self._labels is not None and gen.conditional:
            self._core.labels(self._labels, self.n_real)
        self._members: dict[int, np.ndarray] = class_members(self._labels) if self._labels is not None else {}
        self.cache: EncodingCache | None = None  # the sources' encodings (backends that encode separately)
        if self._core.amortizes and mode != "prior":
            per = bytes_per_source(tuple(gen.config.input_shape), gen.latent_dim, delta=form == "delta")
            capacity = min(self.n_real, CACHE_BYTES // per) if cache_sources is None else cache_sources
            self.cache = EncodingCache(gen, labels=self._labels if gen.conditional else None, delta=form == "delta",
                                       capacity=capacity)
        self._extra = np.zeros(0, dtype=np.int64)  # the class of each added sample
        self._extra_src = np.zeros(0, dtype=np.int64)  # its source real sample (balance_with="variants")
        if balance_classes:
            assert self._labels is not None
            largest = max(len(m) for m in self._members.values())
            classes, sources = [], []
            for c in sorted(self._members):
                members = self._members[c]
                need = (largest - len(members)) * (1 + k)
                classes.append(np.full(need, c, dtype=np.int64))
                sources.append(members[np.arange(need) % len(members)])  # the class's samples in turn
            if classes:
                self._extra, self._extra_src = np.concatenate(classes), np.concatenate(sources)

    def _all_labels(self) -> np.ndarray:
        targets = getattr(self.base, "targets", None)
        if targets is not None and len(targets) == self.n_real:
            arr = np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets)
            if arr.ndim == 1 and arr.dtype.kind in "iu":
                return arr.astype(np.int64)
        labels = []
        for i in range(self.n_real):
            try:
                labels.append(as_labels(_split_item(self.base[i])[1], 1)[0])
            except (TypeError, ValueError) as e:
                raise type(e)(f"base sample {i}: {e}") from None
        return np.array(labels, dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that ``resample_each_epoch=True`` mixes into every variant's noise.

        Call it before creating the epoch's DataLoader iterator (as with ``DistributedSampler``);
        persistent workers keep the value they started with.
        """
        check_int("epoch", epoch, 0)
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_real * (1 + self.variants_per_sample) + len(self._extra)

    @property
    def class_counts(self) -> dict[int, int] | None:
        """Samples per class over the whole dataset (real, variants and balancing), if labelled."""
        if self._labels is None:
            return None
        k = self.variants_per_sample
        counts = {c: len(m) * (1 + k) for c, m in self._members.items()}
        for c in self._extra:
            counts[int(c)] = counts.get(int(c), 0) + 1
        return counts

    def _wrap(self, item: Any, synthetic: bool) -> Any:
        if not self.return_is_synthetic:
            return item
        if isinstance(item, list):
            return [*item, synthetic]
        return (*item, synthetic) if isinstance(item, tuple) else (item, synthetic)

    def __getitem__(self, index: int) -> Any:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """Items for ``indices``; all variants among them are made in one batched model call."""
        n, k, total = self.n_real, self.variants_per_sample, len(self)
        out: list[Any] = [None] * len(indices)
        var_pos, var_idx, var_src, pri_pos, pri_idx = [], [], [], [], []
        for pos, raw in enumerate(indices):
            idx = operator.index(raw)
            if idx < 0:
                idx += total
            if not 0 <= idx < total:
                raise IndexError(f"index {raw} is out of range for a dataset of {total} samples")
            if idx < n:
                out[pos] = self._wrap(self.base[idx], False)
            elif idx < n * (1 + k):
                var_pos.append(pos)
                var_idx.append(idx)
                var_src.append((idx - n) // k)
            elif self._prior is None:  # balancing with variants of the class's own samples
                var_pos.append(pos)
                var_idx.append(idx)
                var_src.append(int(self._extra_src[idx - n * (1 + k)]))
            else:
                pri_pos.append(pos)
                pri_idx.append(idx)
        if var_pos:
            self._make_variants(out, var_pos, np.array(var_idx, dtype=np.int64), var_src)
        if pri_pos:
            self._make_prior(out, pri_pos, np.array(pri_idx, dtype=np.int64))
        return out

    def _keys(self, idx: np.ndarray) -> np.ndarray:
        return derive_keys(self.seed, self.epoch if self.resample_each_epoch else 0, idx)

    def _model_space(self, xs: list[Any]) -> torch.Tensor:
        """Base images (any type the core reads, each checked) as one model-space batch."""
        if _same_plain_tensors(xs, tuple(self.backend.config.input_shape)):  # (C, H, W) each: one batch, checked
            batch = torch.stack(xs)
            codec = self._core.codec_for(batch)
            codec.size(batch)
            return torch.as_tensor(codec.to_model(batch, None))
        rows = []
        for x in xs:
            codec = self._core.codec_for(x)
            if codec.size(x) != 1:
                raise ValueError(f"dataset items must hold one image; got a batch of shape {tuple(x.shape)}")
            rows.append(torch.as_tensor(codec.to_model(x, None)))
        return torch.cat(rows)

    def _make_variants(self, out: list[Any], pos: list[int], idx: np.ndarray, src: list[int]) -> None:
        items = {i: self.base[i] for i in dict.fromkeys(src)}
        xs = {i: _split_item(item)[0] for i, item in items.items()}
        labels = None if self._labels is None else self._labels[np.array(src)]
        row = {i: r for r, i in enumerate(items)}  # each source converted once, however many variants it has
        converted = self._model_space(list(xs.values()))
        sources = converted[torch.tensor([row[i] for i in src])]
        src_arr = np.array(src, dtype=np.int64)
        cache = self.cache

        def load(indices: np.ndarray) -> torch.Tensor:  # model-space images of sources, converted once
            if all(int(i) in row for i in indices):
                return converted[torch.tensor([row[int(i)] for i in indices])]
            return self._model_space([xs[int(i)] if int(i) in xs else _split_item(self.base[int(i)])[0]
                                      for i in indices])

        def partners(rows: np.ndarray, keys: np.ndarray) -> torch.Tensor | Encodings:  # from the whole dataset
            assert self._labels is not None
            u = uniform(keys, Stream.PARTNER)[:, 0]
            picked = same_class_partners(src_arr[rows], self._labels, self._members, u)
            return load(picked) if cache is None else cache.get(picked, load)

        encodings = None if cache is None else (lambda rows: cache.get(src_arr[rows], load))
        made = self._core(sources, labels, keys=self._keys(idx), codec=self._core.codec("model"), partners=partners,
                          encodings=encodings)
        for p, i, v in zip(pos, src, self._put_back([xs[i] for i in src], made), strict=True):
            out[p] = self._wrap(_replace_x(items[i], v), True)

    def _put_back(self, like: list[Any], made: torch.Tensor) -> list[Any]:
        """Each model-space row of ``made`` in the type, dtype, layout and range of its source image ``like[r]``.

        Plain tensors of one shape, dtype and device (the common base) are converted as one batch, then
        split; anything else one by one. The values are the same either way (the conversion is elementwise).
        """
        if _same_plain_tensors(like, tuple(self.backend.config.input_shape)):
            batch = self._core.codec_for(like[0]).put_back(torch.stack(like), None, made)
            return list(batch.unbind())
        return [self._core.codec_for(x).put_back(x, None, made[r:r + 1]) for r, x in enumerate(like)]

    def _make_prior(self, out: list[Any], pos: list[int], idx: np.ndarray) -> None:
        gen = self.backend
        classes = self._extra[idx - self.n_real * (1 + self.variants_per_sample)]
        prior = self._prior
        assert prior is not None
        made = prior(torch.zeros((len(idx), *gen.config.input_shape)), classes, keys=self._keys(idx),
                     codec=prior.codec("model"))
        like = self._core.codec_for(self._x_like)
        for r, p in enumerate(pos):
            new = (like.put_back(self._x_like, None, made[r:r + 1]), self._make_label(int(classes[r])))
            out[p] = self._wrap(list(new) if isinstance(self._item_like, list) else new, True)

    def _make_label(self, c: int) -> Any:
        like = self._label_like
        if isinstance(like, torch.Tensor):
            return torch.full_like(like, c)
        if isinstance(like, np.integer):
            return type(like)(c)
        return c

    def __repr__(self) -> str:
        extra = f"{len(self._extra)}" + (f" ({self.balance_with})" if len(self._extra) else "")
        return (f"VAEAugmentedDataset(n_real={self.n_real}, variants_per_sample={self.variants_per_sample}, "
                f"extra={extra}, mode={self.mode!r}, strength={self.strength}, form={self.form!r}, "
                f"seed={self.seed}, model={getattr(self.backend, 'source', None) or self.backend.describe()!r})")
