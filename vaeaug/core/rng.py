"""Counter-based randomness: every random number is a pure function of integer keys.

A variant's noise depends only on ``(seed, ..., index)``, never on how many numbers were drawn
before it, so it is the same whatever the worker, the order, the batch size or the backend
(torch or onnxruntime). The mixer is SplitMix64 in numpy (vectorised, no torch needed);
normals come from Box-Muller on 53-bit uniforms, computed in float64 and rounded to float32.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

__all__ = ["Stream", "derive_keys", "uniform", "normal", "randint_key", "Noise", "worker_seed", "worker_component"]

_U64 = np.uint64
_GAMMA = _U64(0x9E3779B97F4A7C15)
_M1 = _U64(0xBF58476D1CE4E5B9)
_M2 = _U64(0x94D049BB133111EB)
_MASK63 = (1 << 63) - 1


class Stream(IntEnum):
    """Independent purposes a per-sample key is split into."""

    APPLY = 1  # the coin flip for p
    EPS = 2  # latent noise
    T = 3  # interpolation weight
    PARTNER = 4  # interpolation partner
    CLASS = 5  # class of a balancing sample


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic, which numpy does silently on
    arrays; ``z`` itself is not changed)."""
    z = z + _GAMMA
    z ^= z >> _U64(30)
    z *= _M1
    z ^= z >> _U64(27)
    z *= _M2
    z ^= z >> _U64(31)
    return z


_M64 = (1 << 64) - 1


def _mix_int(z: int) -> int:
    """:func:`_mix` on one Python int (the same bits, without numpy's per-call overhead)."""
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _as_u64(v: int | np.ndarray) -> np.ndarray:
    if isinstance(v, int) and 0 <= v < 2**64:
        return np.array([v], dtype=np.uint64)
    if isinstance(v, int) and not isinstance(v, bool):
        raise ValueError(f"random keys (seeds) must be integers >= 0 and < 2**64; got {v}")
    a = np.asarray(v)
    if a.dtype.kind not in "iu":
        raise TypeError(f"random keys (seeds) must be integers >= 0 and < 2**64; got dtype {a.dtype}")
    if a.dtype.kind == "i" and a.size and int(a.min()) < 0:
        raise ValueError(f"random keys must be >= 0; got {int(a.min())}")
    return np.atleast_1d(a.astype(np.uint64))


def derive_keys(seed: int | np.ndarray, *parts: int | np.ndarray) -> np.ndarray:
    """Hash ``seed`` and ``parts`` (ints or arrays, broadcast together) into uint64 keys.

    Args:
        seed: the root seed (>= 0).
        *parts: further integers, e.g. epoch and sample index.

    Returns:
        A 1-D uint64 array (length 1 when everything is scalar).

    Example:
        >>> k = derive_keys(0, 1, np.arange(3))
        >>> k.shape, bool(k[0] != k[1])
        ((3,), True)
    """
    if len(parts) == 1 and type(seed) is int and type(parts[0]) is int and 0 <= seed <= _M64 and 0 <= parts[0] <= _M64:
        return np.array([_mix_int(_mix_int(seed) ^ _mix_int(parts[0]))], dtype=np.uint64)  # (key, i): per sample
    if isinstance(seed, int) and 0 <= seed <= _M64:
        hi = _mix_int(seed)
        rest = list(parts)
        while rest and isinstance(rest[0], int) and 0 <= rest[0] <= _M64:
            part = rest.pop(0)
            assert isinstance(part, int)
            hi = _mix_int(hi ^ _mix_int(part))
        h = np.array([hi], dtype=np.uint64)
    else:
        h, rest = _mix(_as_u64(seed)), list(parts)
    for p in rest:
        h = _mix(h ^ _mix(_as_u64(p)))
    return np.ascontiguousarray(h.reshape(-1))


_STREAM = {s: _mix(np.array([int(s)], dtype=np.uint64)) for s in Stream}
_STREAM_INT = {s: int(v[0]) for s, v in _STREAM.items()}
_COUNTERS = [np.arange(n, dtype=np.uint64)[None, :] for n in range(65)]


def _bits(keys: np.ndarray, stream: Stream, n: int) -> np.ndarray:
    counter = _COUNTERS[n] if n < len(_COUNTERS) else np.arange(n, dtype=np.uint64)[None, :]
    if len(keys) == 1:  # one key: its stream key mixed as a Python int, without numpy's per-call overhead
        return _mix(counter ^ _U64(_mix_int(int(keys[0]) ^ _STREAM_INT[stream])))
    keys = np.asarray(keys, dtype=np.uint64).reshape(-1)
    return _mix(_mix(keys ^ _STREAM[stream])[:, None] ^ counter)


def uniform(keys: np.ndarray, stream: Stream, n: int = 1) -> np.ndarray:
    """``(len(keys), n)`` float64 uniforms in ``(0, 1)``, one row per key."""
    if n == 1 and len(keys) == 1:  # the coin of one sample: exact in Python floats, no array arithmetic
        k = _mix_int(int(keys[0]) ^ _STREAM_INT[stream])
        return np.array([[((_mix_int(k) >> 11) + 0.5) * 2.0**-53]])
    u = (_bits(keys, stream, n) >> _U64(11)).astype(np.float64)
    u += 0.5
    u *= 2.0**-53
    return u


def normal(keys: np.ndarray, stream: Stream, n: int) -> np.ndarray:
    """``(len(keys), n)`` float32 standard normals, one row per key (Box-Muller)."""
    m = (n + 1) // 2
    u = uniform(keys, stream, 2 * m)
    r = np.log(u[:, :m])
    r *= -2.0
    np.sqrt(r, out=r)
    theta = u[:, m:] * (2.0 * np.pi)
    z = np.empty_like(u)
    np.multiply(r, np.cos(theta), out=z[:, :m])
    np.multiply(r, np.sin(theta), out=z[:, m:])
    return z[:, :n].astype(np.float32)


def worker_seed() -> int | None:
    """The DataLoader worker's seed (``torch.initial_seed()`` there; it differs per worker and per epoch)
    inside a worker, else ``None``. torch is not imported here: a worker has it loaded already."""
    torch = sys.modules.get("torch")
    info = None if torch is None else torch.utils.data.get_worker_info()
    return None if info is None else int(info.seed) & _MASK63


def worker_component() -> int:
    """The per-process part of a fixed-seed stream: 0 in the main process, the worker seed + 1 in a
    DataLoader worker, the process id + 1 in any other child process (which inherit their parent's seeds)."""
    worker = worker_seed()
    if worker is not None:
        return worker + 1
    return 0 if multiprocessing.parent_process() is None else os.getpid() + 1


def randint_key(rng: np.random.Generator) -> int:
    """A fresh 63-bit key from a numpy generator."""
    return int(rng.integers(0, _MASK63, dtype=np.int64))


@dataclass(frozen=True)
class Noise:
    """The random inputs of one batch of variants.

    Attributes:
        eps: ``(N, latent_dim)`` float32 standard normals.
        t: ``(N,)`` float32 uniforms in ``(0, 1)`` (interpolation weights before scaling).
    """

    eps: np.ndarray
    t: np.ndarray

    @classmethod
    def from_keys(cls, keys: np.ndarray, latent_dim: int, *, with_t: bool = True) -> Noise:
        """Noise for per-sample ``keys`` (see :func:`derive_keys`).

        ``with_t=False`` skips the interpolation uniforms (zeros instead), for modes without them.

        Example:
            >>> Noise.from_keys(derive_keys(0, np.arange(4)), 16).eps.shape
            (4, 16)
        """
        if with_t:  # 23 random bits: exactly representable in float32 and strictly inside (0, 1)
            t = ((np.floor(uniform(keys, Stream.T, 1)[:, 0] * 2.0**23) + 0.5) * 2.0**-23).astype(np.float32)
        else:
            t = np.zeros(len(keys), np.float32)
        return cls(normal(keys, Stream.EPS, latent_dim), t)

    def __len__(self) -> int:
        return int(self.eps.shape[0])
