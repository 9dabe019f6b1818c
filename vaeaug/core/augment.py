"""The one augmentation core: coin, labels, partners, noise, model call, put back (torch-free).

Every consumer (the torchvision transform, the albumentations adapter, ``VAEAugmentedDataset``,
pre-generation, evaluation and tuning) builds one :class:`Augmenter` from a backend and a
setting, and calls it with a batch, its labels and its random keys. The setting is validated
once, at construction. Per call, in this order: the input's structure is checked (type, shape,
dtype: usage errors never depend on the coin), labels are checked where the model or the mode
needs them, the coin is flipped per sample from its key, and only then are the chosen rows, and
nothing else, converted to model space, moved and written back in the input's type. A call in
which no sample is chosen returns its input object itself.

Sample ``i`` of a call keyed ``key`` uses the key ``derive_keys(key, i)``, whoever makes it, so
the same keys give the same variants in every consumer and on both backends.

A consumer that knows each row's source (the dataset, pre-generation, the protocol's classifier)
passes ``encodings=``, usually an :class:`~vaeaug.core.cache.EncodingCache` lookup: the chosen rows
are then made from their sources' encodings, one decoder pass each
(:meth:`~vaeaug.core.backend.Backend.generate_encoded`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from vaeaug.core.backend import Backend
from vaeaug.core.codecs import Codec, ModelSpace, NumpyImages, PILImages, TensorImages, is_tensor, not_an_image
from vaeaug.core.functional import Encodings
from vaeaug.core.labels import as_labels
from vaeaug.core.rng import Noise, Stream, derive_keys, uniform
from vaeaug.core.settings import PARTNER_MODES, AugmentSetting

__all__ = ["Augmenter", "Partners", "SourceEncodings", "class_members", "same_class_partners", "sample_keys"]

Partners = Callable[[np.ndarray, np.ndarray], Any]
"""``partners(rows, keys) -> model-space batch``: a same-class partner for each chosen row (with
``encodings=``, the partners' :class:`~vaeaug.core.functional.Encodings` instead)."""

SourceEncodings = Callable[[np.ndarray], Encodings]
"""``encodings(rows) -> Encodings``: the encodings of the sources of these rows of the call's batch."""


def sample_keys(key: int, n: int) -> np.ndarray:
    """The per-sample keys of a call keyed ``key``: ``derive_keys(key, i)`` for ``i < n``.

    Example:
        >>> bool(sample_keys(7, 1)[0] == sample_keys(7, 3)[0])
        True
    """
    return derive_keys(key, 0) if n == 1 else derive_keys(key, np.arange(n))


def class_members(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Indices of every class: ``{class: sorted indices}``."""
    return {int(c): np.nonzero(labels == c)[0] for c in np.unique(labels)}


def same_class_partners(sources: np.ndarray, labels: np.ndarray, members: dict[int, np.ndarray],
                        u: np.ndarray) -> np.ndarray:
    """For each source index, another index of its class, picked by the uniform ``u``; itself if alone.

    Args:
        sources: indices of the samples that need a partner.
        labels: the class of every index.
        members: :func:`class_members` of ``labels``.
        u: one uniform in ``[0, 1)`` per source (from the source's key, so the choice is a pure
            function of it).

    Returns:
        Partner indices, one per source.

    Example:
        >>> y = np.array([0, 0, 1])
        >>> same_class_partners(np.array([0, 2]), y, class_members(y), np.array([0.3, 0.9])).tolist()
        [1, 2]
    """
    out = np.empty(len(sources), dtype=np.int64)
    for j, i in enumerate(sources):
        cands = members[int(labels[i])]
        cands = cands[cands != i]
        out[j] = i if len(cands) == 0 else cands[int(u[j] * len(cands))]
    return out


class Augmenter:
    """Replaces each sample of a batch by a variant with probability ``p``, in the batch's own type.

    Args:
        backend: the backend that runs the model (torch or onnxruntime).
        setting: mode, strength, form and ``p``; checked here against the model, once.
        invariant: make each variant independent of the batch it is made in, bit for bit
            (fixed-size chunks; pre-generation and the dataset use it).
        label_hint: how a caller passes labels, said when a needed label is missing.

    Example:
        >>> import os, tempfile, vaeaug
        >>> gen = vaeaug.TorchBackend(vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 8, 8))))
        >>> aug = Augmenter(gen, AugmentSetting(p=1.0))
        >>> out = aug(np.zeros((8, 8), np.uint8), key=0)
        >>> out.shape, out.dtype
        ((8, 8), dtype('uint8'))
    """

    def __init__(self, backend: Backend, setting: AugmentSetting, *, invariant: bool = False,
                 label_hint: str = "call the transform on (image, label), or on (images, labels) for a batch") -> None:
        if not isinstance(backend, Backend):
            raise TypeError(f"backend must be a vaeaug Backend; got {type(backend).__name__}")
        if not isinstance(setting, AugmentSetting):
            raise TypeError(f"setting must be an AugmentSetting; got {type(setting).__name__}")
        self.backend = backend
        self.setting = setting.check_for(conditional=backend.conditional)
        self.p = setting.p
        self.invariant = bool(invariant)
        self.label_hint = label_hint
        self.conditional = backend.conditional
        self.num_classes: int | None = backend.config.num_classes
        self.amortizes = backend.amortizes  # consumers pass encodings= only then
        self._with_t = setting.mode in PARTNER_MODES  # a partner and the uniforms t for each sample
        self.needs_labels = self.conditional or self._with_t
        self._latent = backend.latent_dim
        shape, vr = tuple(backend.config.input_shape), backend.value_range
        self._codecs: dict[str, Codec] = {}
        self._by_type: dict[type, Codec] = {}
        if len(shape) == 3:
            self._codecs = {"numpy": NumpyImages(shape, vr), "tensor": TensorImages(shape, vr),
                            "pil": PILImages(shape, vr)}
        self._codecs["model"] = ModelSpace(shape, vr)

    def codec(self, kind: str) -> Codec:
        """The codec for ``"numpy"``, ``"tensor"``, ``"pil"`` or ``"model"`` (model-space batches)."""
        return self._codecs[kind]

    def codec_for(self, inpt: Any) -> Codec:
        """The codec that reads ``inpt``; ``TypeError`` for something that is not an image."""
        found = self._by_type.get(type(inpt))
        if found is not None:
            return found
        pil = sys.modules.get("PIL.Image")
        if isinstance(inpt, np.ndarray):
            kind = "numpy"
        elif is_tensor(inpt):
            kind = "tensor"
        elif pil is not None and isinstance(inpt, pil.Image):
            kind = "pil"
        else:
            raise not_an_image(type(inpt).__name__)
        if kind not in self._codecs:
            raise ValueError("this model was fit on vectors (N, D): pass model-space batches")
        found = self._by_type[type(inpt)] = self._codecs[kind]
        return found

    def labels(self, labels: Any, n: int) -> np.ndarray | None:
        """The ``(n,)`` labels this setting needs (``None`` if it needs none); errors name the fix."""
        if not self.needs_labels:
            return None
        if labels is None:
            if not self.conditional:
                raise ValueError(f"mode {self.setting.mode!r} moves each image relative to a partner of the same "
                                 "class and needs the labels: call the transform on (images, labels)")
            why = " and mode 'prior' makes a new sample of the label's class" if self.setting.mode == "prior" else ""
            raise ValueError(f"this model is class-conditional ({self.num_classes} classes){why}: it needs the "
                             f"label - {self.label_hint}")
        return as_labels(labels, n, self.num_classes if self.conditional else None)

    def __call__(self, inpt: Any, labels: Any = None, *, key: int | None = None, keys: np.ndarray | None = None,
                 codec: Codec | None = None, partners: Partners | None = None, p: float | None = None,
                 encodings: SourceEncodings | None = None) -> Any:
        """``inpt`` with the chosen samples replaced by variants; ``inpt`` itself if none is chosen.

        Args:
            inpt: one image or a batch in a user type, or a model-space batch (with ``codec``).
            labels: an int or one per sample; read only where the model or the mode needs them.
            key: the call's key (sample ``i`` uses ``derive_keys(key, i)``), or
            keys: the per-sample keys themselves.
            codec: how to read ``inpt`` (default: chosen by its type).
            partners: where the partner modes (``interpolate``, ``extrapolate``) take partners from
                (default: the same batch).
            p: the share replaced, for this call (default: the setting's).
            encodings: the encodings of given rows' sources (only where :attr:`amortizes`): the chosen
                rows then cost one decoder pass each; ``partners`` then returns the partners' encodings.

        Returns:
            The batch, in the type, dtype, layout, device and value range of ``inpt``.
        """
        codec = codec or self.codec_for(inpt)
        n = codec.size(inpt)
        if n == 0:
            return inpt
        if keys is None:
            if key is None:
                raise ValueError("pass the call's key= or the per-sample keys=")
            keys = sample_keys(key, n)
        elif len(keys) != n:
            raise ValueError(f"got {len(keys)} keys for {n} samples; pass one key per sample")
        if self._with_t and partners is None and n < 2:
            raise ValueError(f"mode {self.setting.mode!r} needs a partner image of the same class, and got a "
                             "single image: call the transform on a batch (N, C, H, W), or use VAEAugmentedDataset, "
                             "which picks partners from the dataset")
        y = self.labels(labels, n)
        share = self.p if p is None else p
        rows: np.ndarray | None = None
        if share < 1.0:
            if share <= 0.0:
                return inpt
            rows = np.flatnonzero(uniform(keys, Stream.APPLY)[:, 0] < share)
            if len(rows) == 0:
                return inpt
            if len(rows) == n:
                rows = None
        ks = keys if rows is None else keys[rows]
        partner = None
        if self._with_t:
            assert y is not None
            picked = np.arange(n) if rows is None else rows
            if partners is None:
                u = uniform(ks, Stream.PARTNER)[:, 0]
                mates = same_class_partners(picked, y, class_members(y), u)
                partner = codec.to_model(inpt, mates) if encodings is None else encodings(mates)
            else:
                partner = partners(picked, ks)
        x = codec.to_model(inpt, rows)
        ys = None if not self.conditional or y is None else (y if rows is None else y[rows])
        noise = Noise.from_keys(ks, self._latent, with_t=self._with_t)
        if encodings is None:
            out = self.backend.generate(self.setting, x, ys, noise, partner, self.invariant)
        else:
            enc = None if self.setting.mode == "prior" else encodings(np.arange(n) if rows is None else rows)
            out = self.backend.generate_encoded(self.setting, x, enc, ys, noise,
                                                None if partner is None else partner.mu, self.invariant)
        return codec.put_back(inpt, rows, out)

    def __repr__(self) -> str:
        return f"Augmenter({self.backend.describe()}, {self.setting.label()})"
