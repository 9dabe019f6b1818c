"""``VAEVariants`` for Ray Data: the variants of every row, made in Ray's workers, as ``pregenerate`` makes them.

A callable class for ``ds.map_batches(VAEVariants, fn_constructor_kwargs=..., compute=...,
batch_format="numpy")``. Ray builds one instance in each of its worker processes, from the
constructor's arguments (a model *path*, numbers, strings), so the model is opened in the worker,
once, and its onnxruntime session (one intra-op thread by default) is never pickled or shared.

The key rule of vaeaug holds across Ray's workers: a row's variant is a pure function of
``(seed, row id, variant id)``, the model and the setting. Each variant is keyed
``derive_keys(seed, id, variant)`` and made in fixed-size, zero-padded chunks
(``Augmenter(..., invariant=True)``), and partners of the partner modes are drawn from the whole
set by the same key, as :func:`vaeaug.pregenerate` does; so the output is byte for byte what
``pregenerate(..., format="shards")`` writes for the same model, data, seed and setting, however
Ray splits the rows into blocks and batches, and on however many nodes. Each source of a batch is
encoded once, however many variants it gets (``Augmenter(..., encodings=)``): a variant then
costs one decoder pass, and is the same bit for bit.

It is reached as ``import vaeaug.ray``; ``import vaeaug`` never imports it, and it never imports
``ray`` itself (``pip install 'vaeaug[ray]'`` installs Ray Data for the pipeline around it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from vaeaug.backends.factory import as_backend
from vaeaug.core.augment import Augmenter, class_members, same_class_partners
from vaeaug.core.backend import Backend
from vaeaug.core.codecs import NumpyImages
from vaeaug.core.rng import Stream, derive_keys, uniform
from vaeaug.core.settings import PARTNER_MODES, resolve_setting
from vaeaug.core.values import MAX_SEED, check_int

__all__ = ["VAEVariants"]

_ADDED = ("variant", "synthetic")  # the columns this class adds to every output row


def _open_backend(model: str, threads: int, device: str | None) -> Backend:
    """The backend for a model path: onnxruntime with ``threads`` intra-op threads, or torch."""
    if model.endswith(".onnx"):
        if device not in (None, "cpu"):
            raise ValueError(f"an ONNX model runs on the CPU through onnxruntime; got device={device!r} - pass a "
                             ".vae model for the torch backend on another device")
        from vaeaug.backends.onnx_backend import OnnxBackend  # torch-free

        return OnnxBackend(model, threads=threads)
    return as_backend(model, device=device)


class VAEVariants:
    """Make ``k`` variants of every row of a Ray Data batch (and keep the real row): a ``map_batches`` class.

    Input rows hold an integer id (``id_column``: the row's index in the set, stable across runs,
    e.g. from ``ray.data.range`` or a stored column), an image (``image_column``: ``(H, W)``,
    ``(H, W, C)`` as ``ray.data.read_images`` gives, or ``(C, H, W)``; uint8 read as 0..255, floats
    in the model's recorded range) and, where the data has labels, a label (``label_column``).
    Each input row becomes ``include_real + k`` output rows, source by source: the real row first
    (``variant = -1``, ``synthetic = False``), then variants ``0..k-1``. Output columns: the id
    column (the source's id), ``variant`` (int32), the image column (the input's dtype and
    shape), the label column (if any), ``synthetic`` (bool), and every other input column repeated
    onto its source's rows.

    Variant ``v`` of the row with id ``i`` is keyed ``derive_keys(seed, i, v)``: its bytes are those
    of the row ``(i, v)`` that :func:`vaeaug.pregenerate` writes (``format="shards"``) for the same
    model, data, seed, mode, strength and form, whatever the batch, block or worker it is made in
    (pinned at one thread per worker, the default).

    Args:
        model: path of an ``.onnx`` export (onnxruntime, torch not needed) or of a ``.vae`` file
            (torch); on a multi-node cluster, a path every node can read.
        variants_per_sample: ``k`` variants per row.
        mode: latent move; ``mode``, ``strength`` and ``form`` left as ``None`` come from the
            model's tuned setting, else the library default, as in :func:`vaeaug.pregenerate`.
        strength: size of the move.
        form: ``"decode"`` or ``"delta"``.
        seed: root of every variant's noise (>= 0).
        include_real: also output each real row (``synthetic = False``).
        id_column: the column of integer row ids (>= 0).
        image_column: the column of images.
        label_column: the column of integer labels, or ``None`` for unlabelled data.
        partners_from: ``(images, labels)`` of the whole set, indexed by row id, for the partner
            modes (``interpolate``, ``extrapolate``), which pick a same-class partner from the
            whole set, as ``pregenerate`` does; ``None`` otherwise.
        threads: compute threads per worker (onnxruntime intra-op threads, or torch threads).
        device: the torch backend's device (``.vae`` models only; default CPU).

    Returns:
        Called on a batch (a dict of numpy arrays), the batch of output rows, a dict of numpy arrays.

    Raises:
        ValueError: a missing column, an id below 0, a label out of range, unlabelled data for a
            model or mode that needs labels, images of the wrong size.
        TypeError: a batch that is not a dict of arrays, ids or labels that are not integers,
            images that are not uint8 or floating point.

    Example:
        >>> import os, tempfile, numpy as np, vaeaug
        >>> path = os.path.join(tempfile.mkdtemp(), "m.onnx")
        >>> _ = vaeaug.export_onnx(vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 8, 8))), path)
        >>> fn = VAEVariants(path, variants_per_sample=2, label_column=None)
        >>> out = fn({"id": np.array([5, 6]), "image": np.zeros((2, 8, 8), np.uint8)})
        >>> out["id"].tolist(), out["variant"].tolist(), out["synthetic"].tolist()
        ([5, 5, 5, 6, 6, 6], [-1, 0, 1, -1, 0, 1], [False, True, True, False, True, True])
        >>> out["image"].shape, out["image"].dtype
        ((6, 8, 8), dtype('uint8'))
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        variants_per_sample: int = 4,
        mode: str | None = None, strength: float | None = None, form: str | None = None,
        seed: int = 0, include_real: bool = True,
        id_column: str = "id",
        image_column: str = "image",
        label_column: str | None = "label",
        partners_from: tuple[Any, Any] | None = None,
        threads: int = 1,
        device: str | None = None,
    ) -> None:
        if not isinstance(model, (str, os.PathLike)) or not isinstance(os.fspath(model), str):
            raise TypeError(f"model must be the path (str or PathLike) of an .onnx export or a .vae file, which every "
                            f"Ray worker opens itself; got {type(model).__name__}")
        check_int("variants_per_sample", variants_per_sample, 0)
        check_int("seed", seed, 0, MAX_SEED)
        check_int("threads", threads, 1)
        if not include_real and variants_per_sample == 0:
            raise ValueError("nothing to output: variants_per_sample=0 and include_real=False")
        names = {"id_column": id_column, "image_column": image_column, "label_column": label_column}
        for name, value in names.items():
            if not isinstance(value, str) and not (name == "label_column" and value is None):
                raise TypeError(f"{name} must be a column name (str){' or None' if name == 'label_column' else ''}; "
                                f"got {value!r}")
        given = [v for v in names.values() if v is not None]
        if len(set(given)) != len(given) or set(given) & set(_ADDED):
            raise ValueError(f"id_column, image_column and label_column must be distinct and not {_ADDED} (columns "
                             f"this class adds); got {names}")
        if device is not None and not isinstance(device, str):
            raise TypeError(f"device must be None or a str such as 'cpu' or 'cuda:0'; got {device!r}")
        self.model = os.fspath(model)
        self.k, self.seed, self.include_real = variants_per_sample, seed, bool(include_real)
        self.id_column, self.image_column, self.label_column = id_column, image_column, label_column
        self.threads, self.device = threads, device
        self.backend = _open_backend(self.model, threads, device)  # in the worker: Ray builds the instance there
        self.setting = resolve_setting(self.backend.augment, mode=mode, strength=strength, form=form, p=1.0)
        self._open(self.backend)
        if self.augmenter.needs_labels and label_column is None:
            why = (f"mode {self.setting.mode!r} picks a partner of the same class" if self.setting.mode in PARTNER_MODES
                   else f"this model is class-conditional ({self.backend.config.num_classes} classes)")
            raise ValueError(f"{why}: the data must have labels - name their column with label_column=")
        self._with_partners = self.setting.mode in PARTNER_MODES
        self.partner_x: np.ndarray | None = None
        self.partner_y: np.ndarray | None = None
        self.members: dict[int, np.ndarray] | None = None
        if self._with_partners:
            self._set_partners(partners_from)
        elif partners_from is not None:
            raise ValueError(f"partners_from is for the partner modes {PARTNER_MODES}; mode {self.setting.mode!r} "
                             "moves each image on its own - leave it out")

    def _open(self, backend: Backend) -> None:
        """The augmenter and the codec over ``backend`` (its sessions open on first use, in this process)."""
        self.backend = backend
        self.augmenter = Augmenter(backend, self.setting, invariant=True,
                                   label_hint=f"name the label column with label_column= (got {self.label_column!r})")
        shape = tuple(backend.config.input_shape)
        if len(shape) != 3:
            raise ValueError("VAEVariants works on images; this model was fit on vectors (N, D)")
        self.shape: tuple[int, int, int] = (int(shape[0]), int(shape[1]), int(shape[2]))
        self.codec = NumpyImages(self.shape, backend.value_range, stack=True)

    def _set_partners(self, partners_from: Any) -> None:
        """The whole set, in model space, for the partner modes: its images, labels and classes."""
        if not (isinstance(partners_from, (tuple, list)) and len(partners_from) == 2):
            raise ValueError(f"mode {self.setting.mode!r} picks a same-class partner from the whole set, which one "
                             "batch does not hold: pass partners_from=(images, labels), the whole set's images and "
                             "labels indexed by row id (as pregenerate reads the set)")
        images, labels = (np.asarray(v) for v in partners_from)
        if images.ndim < 1 or labels.shape != images.shape[:1]:
            raise ValueError(f"partners_from=(images, labels) needs one label per image; got images of shape "
                             f"{images.shape} and labels of shape {labels.shape}")
        self.partner_x = self.codec.to_model(self._as_nhwc(images, "partners_from images"), None)
        self.partner_y = self.augmenter.labels(labels, len(labels))
        assert self.partner_y is not None  # the partner modes need labels
        self.members = class_members(self.partner_y)

    def _as_nhwc(self, images: np.ndarray, what: str) -> np.ndarray:
        """A column of (H, W), (H, W, C) or (C, H, W) images as (N, H, W) or (N, H, W, C), a view where it can."""
        if images.dtype == object:  # rows of several shapes, or a column Ray could not stack
            try:
                images = np.stack([np.asarray(v) for v in images]) if len(images) else images
            except ValueError:
                shapes = sorted({np.shape(v) for v in images})[:4]
                raise ValueError(f"{what}: every image must have the model's shape; got shapes {shapes}") from None
        if images.dtype != np.uint8 and images.dtype.kind != "f":
            raise TypeError(f"{what}: expected uint8 or floating-point images; got dtype {images.dtype} - convert the "
                            "column first, e.g. with astype(np.uint8)")
        c, h, w = self.shape
        row = tuple(images.shape[1:])
        if row == (h, w, c) or (c == 1 and row == (h, w)):
            return images
        if row == (c, h, w):
            return images.transpose(0, 2, 3, 1)
        allowed = [(h, w, c), (c, h, w)] + ([(h, w)] if c == 1 else [])
        raise ValueError(f"{what}: each image must be one of the model's shapes {allowed}; got {row} - resize the "
                         f"images to {h}x{w} with {c} channel(s) first, or fit a model on this data")

    def _column(self, batch: Mapping[str, Any], name: str, role: str, fix: str) -> np.ndarray:
        if name not in batch:
            raise ValueError(f"the batch has no {role} column {name!r}; its columns are {sorted(batch)} - {fix}")
        return np.asarray(batch[name])

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The output rows of ``batch``: each source's real row (``include_real``), then its ``k`` variants."""
        if not isinstance(batch, Mapping):
            raise TypeError(f"expected a batch as a dict of numpy arrays; got {type(batch).__name__} - call "
                            "map_batches(..., batch_format='numpy')")
        ids = self._column(batch, self.id_column, "id", "pass id_column=, or add one, e.g. with ray.data.range(n) or "
                           "ds.add_column (the id must be the row's index in the set, the same in every run)")
        images = self._column(batch, self.image_column, "image", "pass image_column=")
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise TypeError(f"id column {self.id_column!r} must hold one integer per row; got dtype {ids.dtype}, "
                            f"shape {ids.shape}")
        n = len(ids)
        if len(images) != n:
            raise ValueError(f"the id column has {n} rows but the image column {len(images)}")
        if n and int(ids.min()) < 0:
            raise ValueError(f"row ids must be >= 0; got {int(ids.min())} in column {self.id_column!r}")
        labels = None
        if self.label_column is not None:
            labels = self._column(batch, self.label_column, "label", "pass label_column=None for unlabelled data")
            if labels.shape != (n,) or labels.dtype.kind not in "iu":
                raise TypeError(f"label column {self.label_column!r} must hold one integer per row; got dtype "
                                f"{labels.dtype}, shape {labels.shape}")
        clash = set(batch) & set(_ADDED)
        if clash:
            raise ValueError(f"the batch already has column(s) {sorted(clash)}, which VAEVariants adds; rename them")
        nhwc = self._as_nhwc(images, f"image column {self.image_column!r}")
        self.codec.size(nhwc)  # dtype and shape, before any work
        checked = None if labels is None else self.augmenter.labels(labels, n)  # values, where they are needed
        if self._with_partners:
            self._check_partner_ids(ids, checked)
        per = self.k + int(self.include_real)
        src = np.repeat(np.arange(n), per)  # rows of the batch, source by source
        variant = np.tile(np.arange(per, dtype=np.int32) - int(self.include_real), n)
        synthetic = variant >= 0
        out_images = np.repeat(np.ascontiguousarray(nhwc), per, axis=0)
        chosen = np.nonzero(synthetic)[0]
        if len(chosen):
            out_images[chosen] = self._variants(nhwc, src[chosen], ids, variant[chosen], checked)
        if out_images.ndim == 4 and tuple(images.shape[1:]) != tuple(out_images.shape[1:]):
            out_images = np.ascontiguousarray(out_images.transpose(0, 3, 1, 2))  # back to (C, H, W)
        out: dict[str, np.ndarray] = {}
        for name, value in batch.items():
            if name == self.image_column:
                out[name] = out_images
            else:
                out[name] = np.repeat(np.asarray(value), per, axis=0)
        out["variant"], out["synthetic"] = variant, synthetic
        return out

    def _check_partner_ids(self, ids: np.ndarray, labels: np.ndarray | None) -> None:
        assert self.partner_y is not None and labels is not None
        if len(ids) and int(ids.max()) >= len(self.partner_y):
            raise ValueError(f"row id {int(ids.max())} is not in partners_from, which holds {len(self.partner_y)} "
                             "images: the ids must index the whole set passed as partners_from")
        wrong = np.nonzero(self.partner_y[ids] != labels)[0]
        if len(wrong):
            i = int(wrong[0])
            raise ValueError(f"row id {int(ids[i])} has label {int(labels[i])} in the batch but "
                             f"{int(self.partner_y[ids[i]])} in partners_from: the ids must index the same set")

    def _variants(self, nhwc: np.ndarray, rows: np.ndarray, ids: np.ndarray, variant: np.ndarray,
                  labels: np.ndarray | None) -> np.ndarray:
        """The variants of batch rows ``rows`` (ids ``ids[rows]``), numbered ``variant``, in the input's dtype.

        Each source of the batch is encoded once (``mu``, ``logvar``, ``D(mu)``), however many variants it
        has, where the backend runs the two stages; a variant is the same bit for bit either way.
        """
        sources = ids[rows]
        keys = derive_keys(self.seed, sources, variant.astype(np.int64))  # as pregenerate keys (source, variant)
        backend, staged = self.backend, self.augmenter.amortizes
        y = labels if backend.conditional else None

        def partners(picked: np.ndarray, ks: np.ndarray) -> Any:  # from the whole set, by key
            assert self.partner_x is not None and self.partner_y is not None and self.members is not None
            u = uniform(ks, Stream.PARTNER)[:, 0]
            mates = same_class_partners(sources[picked], self.partner_y, self.members, u)
            if not staged:
                return self.partner_x[mates]
            return backend.encode_sources(self.partner_x[mates], None if y is None else self.partner_y[mates],
                                          delta=False, invariant=True)

        torch = sys.modules.get("torch") if not self.model.endswith(".onnx") else None
        before = torch.get_num_threads() if torch is not None else 0
        if torch is not None:
            torch.set_num_threads(self.threads)  # the torch backend's bytes are pinned at one thread, as pregenerate
        try:
            encodings = None
            if staged and self.setting.mode != "prior":
                enc = backend.encode_sources(self.codec.to_model(nhwc, None), y, delta=self.setting.form == "delta",
                                             invariant=True)
                encodings = lambda r: enc.take(rows[r])  # noqa: E731 - the sources of the call's rows r
            made = self.augmenter(nhwc[rows], None if labels is None else labels[rows], keys=keys, codec=self.codec,
                                  partners=partners if self._with_partners else None, encodings=encodings)
        finally:
            if torch is not None:
                torch.set_num_threads(before)
        return np.asarray(made)

    def __getstate__(self) -> dict[str, Any]:
        # never pickle the model or an onnxruntime session: a copy reopens the model from its path
        state = self.__dict__.copy()
        state["backend"] = state["augmenter"] = state["codec"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open(_open_backend(self.model, self.threads, self.device))

    def __repr__(self) -> str:
        return (f"VAEVariants({self.model!r}, {self.setting.label()}, k={self.k}, seed={self.seed}, "
                f"include_real={self.include_real})")
