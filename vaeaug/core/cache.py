"""``EncodingCache``: each source's encodings, computed once, kept by index (torch-free).

For a real image ``x``, ``mu(x)``, ``logvar(x)`` and ``D(mu(x))`` are the same for all its variants,
in every epoch; only ``D(z')`` is new. A consumer that knows each variant's source index (the
dataset, pre-generation, the protocol's classifier) looks its sources up here and makes each
variant with one decoder pass (:meth:`~vaeaug.core.backend.Backend.generate_encoded`).

Sources are always encoded on fixed-size zero-padded chunks (``invariant=True``), so an encoding
is the same bit for bit whichever call computed it: a cached source gives exactly the variant an
uncached one would, and the bound (least recently used sources dropped first) changes the speed,
never the result.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from vaeaug.core.backend import Backend
from vaeaug.core.functional import Encodings

__all__ = ["EncodingCache", "bytes_per_source"]

_ENTRY_OVERHEAD = 100  # bytes of Python bookkeeping per kept source (its OrderedDict entry), measured roughly


def bytes_per_source(input_shape: tuple[int, ...], latent_dim: int, *, delta: bool) -> int:
    """Memory one cached source takes: float32 ``mu`` and ``logvar``, ``D(mu)`` for the delta form, bookkeeping.

    Example:
        >>> bytes_per_source((1, 28, 28), 16, delta=True)  # 4 * (784 + 2 * 16) + 100
        3364
    """
    return 4 * (2 * latent_dim + (math.prod(input_shape) if delta else 0)) + _ENTRY_OVERHEAD


class EncodingCache:
    """The encodings of a collection's sources, by index, each computed once; at most ``capacity`` kept.

    Args:
        backend: runs the encoder (and the decoder, for ``D(mu)``); one that :attr:`~Backend.amortizes`.
        labels: the label of every index, for a class-conditional model (it encodes with them); else ``None``.
        delta: keep ``D(mu)`` too (what the delta form subtracts); partners need only ``mu``.
        capacity: the most sources kept, the least recently used dropped first; ``None``: no bound;
            ``0``: none kept (each call still encodes each of its distinct sources once).

    Example:
        >>> import vaeaug
        >>> gen = vaeaug.TorchBackend(vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 8, 8))))
        >>> x = np.random.default_rng(0).random((10, 1, 8, 8), dtype=np.float32)
        >>> cache = EncodingCache(gen, delta=True, capacity=4)
        >>> enc = cache.get(np.array([3, 3, 7]), lambda idx: x[idx])
        >>> len(enc), cache.encoded, len(cache)
        (3, 2, 2)
    """

    def __init__(self, backend: Backend, *, labels: np.ndarray | None = None, delta: bool,
                 capacity: int | None = None) -> None:
        if not backend.amortizes:
            raise TypeError(f"{type(backend).__name__} runs no separate encoding stage; an EncodingCache needs a "
                            "backend that does (TorchBackend, OnnxBackend)")
        if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0):
            raise ValueError(f"capacity must be None (no bound) or an int >= 0; got {capacity!r}")
        self.backend = backend
        self.labels = labels
        self.delta = bool(delta)
        self.capacity = capacity
        self.encoded = 0  # sources encoded so far (a cache hit adds nothing)
        self._latent = backend.latent_dim
        self._shape = tuple(backend.config.input_shape)
        self._slots: OrderedDict[int, int] = OrderedDict()  # index -> row of the arrays, least recent first
        self._mu = self._logvar = np.empty((0, self._latent), np.float32)
        self._d_mu: np.ndarray | None = None
        self.clear()

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays held now (they grow, doubling, up to ``capacity`` sources)."""
        return self._mu.nbytes + self._logvar.nbytes + (0 if self._d_mu is None else self._d_mu.nbytes)

    def clear(self) -> None:
        """Drop every kept source (and the arrays)."""
        self._slots.clear()
        self._mu = np.empty((0, self._latent), np.float32)
        self._logvar = np.empty((0, self._latent), np.float32)
        self._d_mu = np.empty((0, *self._shape), np.float32) if self.delta else None

    def get(self, indices: np.ndarray, load: Callable[[np.ndarray], Any]) -> Encodings:
        """The encodings of ``indices`` (repeats allowed), row for row; the missing ones encoded first.

        Args:
            indices: source indices into the collection.
            load: ``load(missing) -> (M, *input_shape)`` model-space batch of those sources (numpy or
                torch), called once per call with the distinct indices not kept.

        Returns:
            :class:`~vaeaug.core.functional.Encodings` as float32 numpy arrays.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        uniq, inverse = np.unique(idx, return_inverse=True)
        if not self._slots:  # nothing kept (a new cache, or capacity 0): every source is encoded, once
            enc = self._encode(uniq, load)
            self._keep(uniq, enc)
            return enc if len(uniq) == len(idx) and np.array_equal(uniq, idx) else enc.take(inverse)
        slots = np.array([self._touch(i) for i in uniq.tolist()], dtype=np.int64)
        miss = slots < 0
        if not miss.any():  # every source kept: one gather
            return self._rows(slots[inverse])
        m = len(uniq)
        mu = np.empty((m, self._latent), np.float32)
        logvar = np.empty((m, self._latent), np.float32)
        d_mu = None if self._d_mu is None else np.empty((m, *self._shape), np.float32)
        hit = ~miss
        if hit.any():
            kept = self._rows(slots[hit])
            mu[hit], logvar[hit] = kept.mu, kept.logvar
            if d_mu is not None:
                d_mu[hit] = kept.d_mu
        new = uniq[miss]
        enc = self._encode(new, load)
        mu[miss], logvar[miss] = enc.mu, enc.logvar
        if d_mu is not None:
            d_mu[miss] = enc.d_mu
        self._keep(new, enc)
        return Encodings(mu[inverse], logvar[inverse], None if d_mu is None else d_mu[inverse])

    def _encode(self, new: np.ndarray, load: Callable[[np.ndarray], Any]) -> Encodings:
        enc = self.backend.encode_sources(load(new), None if self.labels is None else self.labels[new],
                                          delta=self.delta, invariant=True)
        self.encoded += len(new)
        return enc

    def _touch(self, i: int) -> int:
        """The row of source ``i`` (now the most recently used), or -1 if it is not kept."""
        slot = self._slots.get(i)
        if slot is None:
            return -1
        self._slots.move_to_end(i)
        return slot

    def _rows(self, slots: np.ndarray) -> Encodings:
        return Encodings(self._mu[slots], self._logvar[slots], None if self._d_mu is None else self._d_mu[slots])

    def _keep(self, new: np.ndarray, enc: Encodings) -> None:
        """Keep the newly encoded sources, dropping the least recently used beyond ``capacity``."""
        cap = self.capacity
        if cap == 0:
            return
        rows = np.arange(len(new)) if cap is None else np.arange(max(0, len(new) - cap), len(new))
        slots = np.empty(len(rows), np.int64)
        for j, r in enumerate(rows.tolist()):
            if cap is None or len(self._slots) < cap:
                slot = len(self._slots)
            else:
                _, slot = self._slots.popitem(last=False)
            self._slots[int(new[r])] = slot
            slots[j] = slot
        self._grow(int(slots.max()) + 1)
        self._mu[slots], self._logvar[slots] = enc.mu[rows], enc.logvar[rows]
        if self._d_mu is not None:
            self._d_mu[slots] = enc.d_mu[rows]

    def _grow(self, need: int) -> None:
        have = len(self._mu)
        if need <= have:
            return
        size = max(need, 2 * have, 64)
        if self.capacity is not None:
            size = min(size, self.capacity)

        def grown(a: np.ndarray) -> np.ndarray:
            b = np.empty((size, *a.shape[1:]), a.dtype)
            b[:have] = a
            return b

        self._mu, self._logvar = grown(self._mu), grown(self._logvar)
        if self._d_mu is not None:
            self._d_mu = grown(self._d_mu)

    def __repr__(self) -> str:
        bound = "no bound" if self.capacity is None else f"at most {self.capacity}"
        return f"EncodingCache({len(self)} sources kept, {bound}, delta={self.delta}, {self.nbytes / 2**20:.1f} MiB)"
