"""``VAEAugment``: a torchvision v2 transform that replaces an image by a VAE variant of it; and
:func:`tuned_pipeline`, the pipeline :func:`vaeaug.tune` chose (the move, your transform, both, or neither).

A thin adapter over the augmentation core (:class:`vaeaug.core.augment.Augmenter`). Two paths:

* the fast path, for an image alone or ``(image, label)`` (one image or a batch): straight to the
  core, without flattening the sample (like torchvision's own ``_RandomApplyTransform.forward``,
  which overrides ``forward`` to decide before dispatching);
* a dict of lists (a batch as Hugging Face ``datasets`` passes it to ``with_transform`` and to
  ``map(batched=True)``: ``{"image": [img, ...], "label": [3, ...]}``): the image column is read as
  one batch (each item in its own type, :class:`_ImageList`) and goes to the core in one call, with
  the label column as its labels;
* every other sample (dicts, masks, boxes, nested structures) goes through torchvision's
  ``forward``: ``check_inputs`` finds the image leaves and the label, ``make_params`` draws one key
  per call, ``transform`` runs the core on each image leaf; other leaves pass through.

Randomness: the per-call key comes from torch's global generator, so it follows
``torch.manual_seed`` and the per-worker, per-epoch seeding of ``DataLoader``; with an explicit
``seed`` the key comes from ``(seed, worker seed, call count)`` instead. Every sample of a batch
gets its own key, hence its own noise and its own coin flip for ``p``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch.utils._pytree import tree_flatten
from torchvision import tv_tensors
from torchvision.transforms import v2

from vaeaug.backends.factory import as_backend
from vaeaug.core.augment import Augmenter
from vaeaug.core.backend import Backend
from vaeaug.core.codecs import Codec, not_an_image
from vaeaug.core.labels import as_labels
from vaeaug.core.pipelines import AnyTransform, named_transforms
from vaeaug.core.rng import derive_keys, worker_component
from vaeaug.core.settings import AugmentSetting, resolve_setting
from vaeaug.core.values import MAX_SEED, check_int
from vaeaug.model.vae import VAE, load

__all__ = ["TunedPipeline", "VAEAugment", "tuned_pipeline"]

_MAX_KEY = 2**63 - 1


def _is_image(v: Any) -> bool:
    """What the fast path takes as the image: PIL, ``tv_tensors.Image``, 2-4-D tensors and arrays."""
    if isinstance(v, PIL.Image.Image) or type(v) is tv_tensors.Image:
        return True
    return type(v) in (torch.Tensor, np.ndarray) and 2 <= v.ndim <= 4


def _is_label(v: Any, integer: bool) -> bool:
    """A label candidate: a scalar or a vector of integers; with ``integer=False`` also floats, bools,
    strings and ``(N, 1)`` arrays, so that a label of the wrong kind gets its own error."""
    if isinstance(v, (torch.Tensor, np.ndarray)) and v.ndim > 1:  # (N, 1): labels of the wrong shape
        return not integer and v.ndim == 2 and v.shape[-1] == 1 and not isinstance(v, tv_tensors.TVTensor)
    if isinstance(v, torch.Tensor):
        if isinstance(v, tv_tensors.TVTensor):
            return False
        return not integer or not (v.dtype.is_floating_point or v.dtype.is_complex or v.dtype == torch.bool)
    if isinstance(v, np.ndarray):
        return not integer or v.dtype.kind in "iu"
    if isinstance(v, (bool, np.bool_)):
        return not integer
    if isinstance(v, (int, np.integer)):
        return True
    return not integer and isinstance(v, (float, np.floating, str))


def _find_labels(flat: list[Any], images: list[int]) -> Any:
    """The sample's label(s): one integer leaf, several scalar ones (a list of labels), or, failing
    that, the one non-integer scalar (so that a float label gets its own error where one is needed)."""
    rest = [v for i, v in enumerate(flat) if i not in images]
    found = [v for v in rest if _is_label(v, True)]
    if not found:
        loose = [v for v in rest if _is_label(v, False)]
        return loose[0] if len(loose) == 1 else None
    if len(found) == 1:
        return found[0]
    if all(np.ndim(v) == 0 for v in found):
        return np.array([int(v) for v in found], dtype=np.int64)  # e.g. aug(batch, [0, 1, 2, 3])
    shapes = ", ".join(str(tuple(np.shape(v))) for v in found)
    raise ValueError(f"found several label candidates in the sample (shapes {shapes}); pass the labels as one int "
                     "per image or one (N,) tensor for a batch")


def _image_leaves(flat: list[Any]) -> list[int]:
    """Every PIL image and ``tv_tensors.Image``; else the first plain tensor, else numpy array, >= 2-D."""
    strong = [i for i, v in enumerate(flat) if isinstance(v, (PIL.Image.Image, tv_tensors.Image))]
    if strong:
        return strong
    for kind in (torch.Tensor, np.ndarray):
        first = next((i for i, v in enumerate(flat) if type(v) is kind and v.ndim >= 2), None)
        if first is not None:
            return [first]
    return []


# --------------------------------------------------------------------------- dicts of lists (batches)

_NESTED_FIX = ("store the images as images - ds = ds.cast_column({key!r}, datasets.Image()) - or convert them in "
               "your transform: batch[{key!r}] = [np.asarray(x, dtype=np.uint8) for x in batch[{key!r}]]")


def _image_tier(v: Any) -> int:
    """How surely ``v`` is one image: 2 for PIL and ``tv_tensors.Image``, 1 for a plain 2-3-D tensor or
    numpy array, 0 for anything else (a batch, a mask, a label, a nested list)."""
    if isinstance(v, PIL.Image.Image):
        return 2
    if type(v) is tv_tensors.Image:
        return 2 if v.ndim in (2, 3) else 0
    return 1 if type(v) in (torch.Tensor, np.ndarray) and v.ndim in (2, 3) else 0


def _int_scalar(v: Any) -> bool:
    """An integer class index: an int, a numpy integer, a 0-d integer array or (plain) tensor; not a bool."""
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, (int, np.integer)):
        return True
    if isinstance(v, np.ndarray):
        return v.ndim == 0 and v.dtype.kind in "iu"
    if type(v) is torch.Tensor:
        return v.ndim == 0 and not (v.dtype.is_floating_point or v.dtype.is_complex or v.dtype == torch.bool)
    return False


def _nested_numbers(v: Any) -> bool:
    """A list of 2-D nested lists of numbers: how ``datasets`` hands an array column to ``with_transform``."""
    try:
        first = v[0]
        return isinstance(first, list) and isinstance(first[0], list) and not isinstance(first[0][0], (list, str))
    except (IndexError, KeyError, TypeError):
        return False


def _describe_column(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        inner = sorted({type(e).__name__ for e in v})
        return f"{type(v).__name__} of {len(v)} {'/'.join(inner) or 'items'}"
    return type(v).__name__ + (str(tuple(v.shape)) if hasattr(v, "shape") else "")


def _describe_columns(sample: Mapping[Any, Any]) -> str:
    return ", ".join(f"{k!r}: {_describe_column(v)}" for k, v in sample.items()) or "none"


def _names(keys: list[Any]) -> str:
    return ", ".join(repr(k) for k in keys[:-1]) + f" and {keys[-1]!r}"


class _ImageList(Codec):
    """A list (or tuple) of single images read as one batch: each item by the core's codec for its
    type, and written back in that type; the container keeps its type and length.

    Args:
        core: the augmentation core (its codecs read the items).
        column: the key the list came under (named in errors).
    """

    def __init__(self, core: Augmenter, column: Any) -> None:
        super().__init__(tuple(core.backend.config.input_shape), core.backend.value_range)
        self._core, self._column = core, column
        self._codecs: list[Codec] = []

    def size(self, inpt: Any) -> int:
        codecs = []
        for i, item in enumerate(inpt):
            where = f"column {self._column!r}, item {i}"
            if isinstance(item, list):
                raise TypeError(f"{where} is a nested list, not an image (Hugging Face datasets hands array "
                                f"columns to with_transform as Python lists); {_NESTED_FIX.format(key=self._column)}")
            if not _image_tier(item):
                raise TypeError(f"{where}: expected one image (a PIL image, a tensor (C, H, W) or a numpy "
                                f"(H, W[, C]) array); got {_describe_column(item)}")
            try:
                codec = self._core.codec_for(item)
                codec.size(item)
            except (TypeError, ValueError) as e:
                raise type(e)(f"{where}: {e}") from None
            codecs.append(codec)
        self._codecs = codecs
        return len(codecs)

    def to_model(self, inpt: Any, rows: np.ndarray | None) -> Any:
        idx = range(len(inpt)) if rows is None else rows.tolist()
        parts = [self._codecs[i].to_model(inpt[i], None) for i in idx]
        if all(isinstance(p, np.ndarray) for p in parts):
            return np.concatenate(parts)
        device = next(p.device for p in parts if isinstance(p, torch.Tensor))
        return torch.cat([torch.as_tensor(p).to(device) for p in parts])

    def put_back(self, inpt: Any, rows: np.ndarray | None, out: Any) -> Any:
        result = list(inpt)
        for j, i in enumerate(range(len(inpt)) if rows is None else rows.tolist()):
            result[i] = self._codecs[i].put_back(inpt[i], None, out[j:j + 1])
        return result if type(inpt) is list else type(inpt)(result)


class VAEAugment(v2.Transform):
    """Replace an image by a VAE variant of it, with probability ``p``: a torchvision v2 transform.

    Works on PIL images, uint8/float tensors ``(C, H, W)`` and batches ``(N, C, H, W)``,
    ``tv_tensors.Image`` and numpy HWC arrays; returns the input's type, dtype, layout, device and
    value range. In a sample such as ``(img, label)`` or a dict with masks and boxes, only the
    image changes; class-conditional models read the label from the sample (an int, or ``(N,)``
    labels for a batch). On a batch each sample gets its own noise and coin flip, in one batched
    model call on the model's device. A call with nothing that can be an image is a ``TypeError``.

    **Dicts of lists** (batches from Hugging Face ``datasets``: ``ds.with_transform(aug)``,
    ``ds.map(aug, batched=True)``): ``{"image": [img, ...], "label": [3, ...], ...}`` is one batch.
    The image column is the list whose every item is one image (PIL or ``tv_tensors.Image`` before
    plain tensors and numpy arrays, as for dicts); the label column, read only when the model or
    the mode needs labels, is the list of one integer per image. The result is a new dict with the
    same keys: the image column a new list of the same length, each item in its own type, dtype and
    range (a PIL subclass such as ``PngImageFile`` comes back as a plain ``PIL.Image.Image``), and
    every other value the input's own object. Each image gets its own coin and noise, in one
    batched model call. When two columns could be the images or the labels, ``image_key`` and
    ``label_key`` say which (an error says so). Other mappings (``datasets``' ``LazyBatch``) are
    read as dicts and give a dict.

    Args:
        model_or_path: a fitted ``VAE``, the path of a ``.vae`` file or an ``.onnx`` export, or a
            ``Backend``.
        p: probability that an image is replaced by a variant.
        strength: size of the latent move (``s``; see :mod:`vaeaug.core.functional`).
        mode: ``"posterior"``, ``"isotropic"``, ``"interpolate"`` or ``"extrapolate"`` (batches with
            labels: partners of the same class from the batch), ``"prior"`` (conditional models) or
            ``"reconstruct"``.
        form: ``"decode"`` (``D(z')``) or ``"delta"`` (``x + D(z') - D(mu)``).
            ``p``, ``strength``, ``mode`` and ``form`` left as ``None`` come from the model's
            tuned setting (:func:`vaeaug.tune`), else from :data:`vaeaug.core.settings.DEFAULT_AUGMENT`
            (``delta``, ``isotropic``, ``strength=1``, ``p=0.5``: the measured default).
        seed: ``None`` draws from torch's generator (follows ``torch.manual_seed`` and DataLoader
            worker seeding); an int gives a fixed stream in the main process, combined with the
            worker seed inside DataLoader workers (and the process id in other child processes).
        device: where the model runs (default: where it is; CPU for a path).
        image_key: in dict samples and dict batches, the key of the image (or the list of images);
            default: found as above.
        label_key: in dict samples and dict batches, the key of the label (or the list of labels);
            default: found as above.

    Example:
        >>> import torch, vaeaug
        >>> model = vaeaug.fit("digits", epochs=1, progress=False)
        >>> aug = VAEAugment(model, p=1.0)
        >>> img = torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8)
        >>> out = aug(img)
        >>> out.shape, out.dtype
        (torch.Size([1, 8, 8]), torch.uint8)
    """

    _transformed_types = (torch.Tensor, PIL.Image.Image, np.ndarray)

    def __init__(
        self,
        model_or_path: Any,
        p: float | None = None, strength: float | None = None, mode: str | None = None, form: str | None = None,
        seed: int | None = None,
        device: Any = None,
        image_key: str | None = None,
        label_key: str | None = None,
    ) -> None:
        super().__init__()
        check_int("seed", seed, 0, MAX_SEED, optional=True)
        for name, k in (("image_key", image_key), ("label_key", label_key)):
            if k is not None and not isinstance(k, str):
                raise TypeError(f"{name} must be None or the str key of a dict sample, e.g. {name}='image'; "
                                f"got {type(k).__name__} {k!r}")
        if image_key is not None and image_key == label_key:
            raise ValueError(f"image_key and label_key are both {image_key!r}; name two different keys")
        gen = as_backend(model_or_path, device=device)
        if len(gen.config.input_shape) != 3:
            raise ValueError("VAEAugment works on images; this model was fit on vectors (N, D)")
        setting = resolve_setting(gen.augment, mode=mode, strength=strength, form=form, p=p)
        self._core = Augmenter(gen, setting)
        self.model = getattr(gen, "source", None) or gen.describe()
        self.p, self.strength, self.mode, self.form = setting.p, setting.strength, setting.mode, setting.form
        self.seed = seed
        self.image_key, self.label_key = image_key, label_key
        self._calls = 0
        self._images: list[int] = []
        self._labels: Any = None
        self._given_labels: tuple[Any] | None = None  # the label_key's value, for torchvision's path

    @property
    def backend(self) -> Backend:
        """The generator that makes the variants."""
        return self._core.backend

    def _key(self) -> int:
        if self.seed is None:
            return int(torch.randint(0, _MAX_KEY, (1,)).item())
        self._calls += 1
        return int(derive_keys(self.seed, worker_component(), self._calls - 1)[0] % np.uint64(_MAX_KEY))

    def forward(self, *inputs: Any) -> Any:
        sample = inputs if len(inputs) > 1 else inputs[0]
        if _is_image(sample):
            return self._core(sample, None, key=self._key())
        if type(sample) is tuple and len(sample) == 2 and _is_image(sample[0]) and _is_label(sample[1], False):
            return self._core(sample[0], sample[1], key=self._key()), sample[1]
        if isinstance(sample, Mapping):
            if not isinstance(sample, dict):
                sample = dict(sample)  # e.g. datasets' LazyBatch: torchvision flattens only dicts
                inputs = (sample,)
            done = self._mapping(sample)
            if done is not None:
                return done[0]
            if self.label_key is not None and self._core.needs_labels:
                self._given_labels = (self._key_of(sample, self.label_key, "label_key"),)
        try:
            return super().forward(*inputs)
        finally:
            self._given_labels = None

    def _key_of(self, sample: Mapping[Any, Any], key: str, name: str) -> Any:
        if key not in sample:
            raise ValueError(f"{name}={key!r} is not a key of the sample; its keys are {list(sample)} - pass "
                             f"{name}= one of them")
        return sample[key]

    def _mapping(self, sample: dict[Any, Any]) -> tuple[Any] | None:
        """``(result,)`` for a dict batch (a list of images under one key) or a dict with ``image_key``;
        ``None`` for a dict that torchvision's path handles."""
        if self.image_key is not None:
            value = self._key_of(sample, self.image_key, "image_key")
            if type(value) in (list, tuple):
                return (self._batch(sample, self.image_key),)
            labels = None
            if self._core.needs_labels:
                if self.label_key is not None:
                    labels = self._key_of(sample, self.label_key, "label_key")
                else:
                    labels = _find_labels(tree_flatten([v for k, v in sample.items() if k != self.image_key])[0], [])
            out = copy.copy(sample)
            out[self.image_key] = self._core(value, labels, key=self._key())
            return (out,)
        lists = {k: v for k, v in sample.items() if type(v) in (list, tuple)}
        if not lists and not (self._core.needs_labels and self.label_key is None):
            return None  # a plain sample that needs no label: torchvision's path, with nothing to check here
        tiers = {k: min((_image_tier(e) for e in v), default=0) for k, v in lists.items()}
        best = max(tiers.values(), default=0)
        found = [k for k, t in tiers.items() if t == best] if best else []
        if len(found) > 1:
            raise ValueError(f"columns {_names(found)} both hold images ({_describe_columns(sample)}); say which "
                             f"one to augment: VAEAugment(model, image_key={found[0]!r})")
        if found:
            return (self._batch(sample, found[0]),)
        flat = tree_flatten(sample)[0]
        images = _image_leaves(flat)
        if images:  # images outside the lists, e.g. {"image": img, "boxes": [[...]]}: a sample
            mixed = [k for k, v in lists.items() if sum(_image_tier(e) > 0 for e in v) > 1]
            if mixed:  # a list of several images with something else in it: say which item
                _ImageList(self._core, mixed[0]).size(lists[mixed[0]])
            ints = [k for k, v in sample.items() if _int_scalar(v)]
            if (len(ints) > 1 and self._core.needs_labels and self.label_key is None
                    and all(_image_tier(flat[i]) for i in images)):
                raise ValueError(f"keys {_names(ints)} both hold an integer and the model needs one label for the "
                                 f"image; say which is the label: VAEAugment(model, label_key={ints[0]!r})")
            return None
        nested = [k for k, v in lists.items() if _nested_numbers(v)]
        if nested:
            raise TypeError(f"expected images, and column {nested[0]!r} holds nested lists of numbers (Hugging Face "
                            f"datasets hands array columns to with_transform as Python lists); "
                            + _NESTED_FIX.format(key=nested[0]))
        if lists and all(len(v) == 0 for v in lists.values()):
            return (copy.copy(sample),)  # an empty batch: nothing to augment
        return None

    def _batch(self, sample: dict[Any, Any], key: Any) -> Any:
        """``sample`` with its list of images under ``key`` augmented as one batch."""
        images = sample[key]
        n = len(images)
        codec = _ImageList(self._core, key)
        labels = self._batch_labels(sample, key, n) if self._core.needs_labels and n else None
        out = copy.copy(sample)
        out[key] = self._core(images, labels, key=self._key(), codec=codec)
        return out

    def _batch_labels(self, sample: dict[Any, Any], image_key: Any, n: int) -> np.ndarray:
        """The ``(n,)`` labels of a dict batch: the ``label_key`` column, else the one column of ``n`` integers
        (else one integer shared by the batch)."""
        if self.label_key is not None:
            key = self.label_key
            value = self._key_of(sample, key, "label_key")
        else:
            rest = [(k, v) for k, v in sample.items() if k != image_key]
            cols = [k for k, v in rest if (type(v) in (list, tuple) and len(v) == n and all(map(_int_scalar, v)))
                    or (type(v) in (np.ndarray, torch.Tensor) and v.shape == (n,) and _is_label(v, True))]
            if not cols:
                cols = [k for k, v in rest if _int_scalar(v)]
            if len(cols) > 1:
                raise ValueError(f"columns {_names(cols)} both hold one integer per image; say which is the label: "
                                 f"VAEAugment(model, label_key={cols[0]!r})")
            if not cols:
                c = self._core
                why = (f"this model is class-conditional ({c.num_classes} classes)" if c.conditional else
                       f"mode {self.mode!r} pairs each image with a partner of the same class")
                raise ValueError(f"{why} and needs one integer label per image, and no column of the batch holds "
                                 f"{n} integers ({_describe_columns(sample)}); add one, or name it: "
                                 "VAEAugment(model, label_key='label')")
            key, value = cols[0], sample[cols[0]]
        if type(value) in (list, tuple):
            value = np.asarray([v.item() if isinstance(v, (np.ndarray, np.generic, torch.Tensor)) and v.ndim == 0
                                else v for v in value])
        try:
            return as_labels(value, n, self._core.num_classes if self._core.conditional else None)
        except (TypeError, ValueError) as e:
            raise type(e)(f"label column {key!r}: {e}") from None

    def check_inputs(self, flat_inputs: list[Any]) -> None:
        # the one public hook that sees the whole sample: find the image leaves and the label
        self._images = _image_leaves(flat_inputs)
        if not self._images:
            leaves = {type(v).__name__ + (str(tuple(v.shape)) if hasattr(v, "shape") else "") for v in flat_inputs}
            raise not_an_image(", ".join(sorted(leaves)) or "nothing")
        given = self._given_labels
        self._labels = given[0] if given is not None else _find_labels(flat_inputs, self._images)

    def _needs_transform_list(self, flat_inputs: list[Any]) -> list[bool]:
        # the image leaves found in check_inputs (this hook is torchvision's, not public API)
        return [i in self._images for i in range(len(flat_inputs))]

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        labels, self._labels = self._labels, None
        return {"key": self._key(), "labels": labels}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._core(inpt, params["labels"], key=params["key"])

    def extra_repr(self) -> str:
        keys = "".join(f", {n}={k!r}" for n, k in (("image_key", self.image_key), ("label_key", self.label_key))
                       if k is not None)
        return (f"model={self.model!r}, p={self.p}, strength={self.strength}, mode={self.mode!r}, "
                f"form={self.form!r}, seed={self.seed}{keys}")


def tuned_pipeline(model_or_path: VAE | str | os.PathLike[str],
                   transforms: Mapping[str, AnyTransform] | Sequence[AnyTransform] | AnyTransform | None = None, *,
                   seed: int | None = None, device: Any = None) -> TunedPipeline:
    """The pipeline :func:`vaeaug.tune` chose, as one callable transform to put in your ``Dataset``.

    ``tune`` stores its choice in the model (``model.tuning``, saved in its file); :func:`tuned_pipeline`
    builds it from the transforms you tuned with: a ``VAEAugment`` with the chosen setting (not the
    model's current ``augment``) followed by your transform when it chose "vaeaug ..., then
    <transform>", either alone when it chose one of them, and nothing (the sample comes back as it
    came) when it chose ``none``. Class-conditional models read the label from ``(image, label)``.
    A choice made with ``oversample=True`` was judged on class-balanced draws: draw your batches the
    same way (``torch.utils.data.WeightedRandomSampler`` with weights 1 / the class's count).

    Args:
        model_or_path: the tuned ``VAE``, or the path of its ``.vae`` file (an ONNX export does not
            carry tune's choice).
        transforms: the ``transforms=`` you gave ``tune`` (the same names), or the ``base=`` transform;
            ``None`` when tune ran with neither.
        seed: passed to :class:`~vaeaug.VAEAugment` (``None``: torch's generator, per worker).
        device: where the VAE runs (passed to :class:`~vaeaug.VAEAugment`).

    Returns:
        A :class:`TunedPipeline`: a callable transform of an image or an ``(image, label)`` sample,
        usable alone or inside ``v2.Compose``.

    Example:
        >>> import torch, vaeaug
        >>> d = vaeaug.load_builtin("digits")
        >>> model = vaeaug.fit(d.x[:200], d.y[:200], epochs=1, conditional=True, progress=False)
        >>> mine = {"shift": lambda im: torch.roll(im, 1, dims=-1)}
        >>> _ = vaeaug.tune(model, d.x[:200], d.y[:200], transforms=mine, grid=[vaeaug.AugmentSetting()], folds=2,
        ...                 repeats=1, refit=False, budget=vaeaug.Budget(max_steps=20, eval_every=10, patience=1),
        ...                 progress=False)
        >>> pipeline = vaeaug.tuned_pipeline(model, mine, seed=0)
        >>> pipeline(d.x[0] / 16, int(d.y[0]))[0].shape
        torch.Size([1, 8, 8])
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        if os.fspath(model_or_path).lower().endswith(".onnx"):
            raise ValueError(f"{os.fspath(model_or_path)!r} is an ONNX export, which does not carry tune's choice: "
                             "pass the tuned .vae file (or the VAE) instead")
        model = load(model_or_path)
    elif isinstance(model_or_path, VAE):
        model = model_or_path
    else:
        raise TypeError(f"model_or_path must be a tuned vaeaug.VAE or the path of its .vae file; got "
                        f"{type(model_or_path).__name__}")
    record = model.tuning
    if not isinstance(record, Mapping) or not ("pipeline" in record or "chosen" in record):
        raise ValueError("this model holds no choice of tune's: run vaeaug.tune(model, x, y, transforms=...) "
                         "first (and save the model to keep it)")
    base = record.get("base")
    # records written before tune chose pipelines (2026-12-04) hold the setting alone, on top of base= if any
    chosen = record.get("pipeline") or {"label": "the older tune's choice", "setting": record.get("chosen"),
                                        "transform": "base" if base else None}
    scores = record.get("scores")
    if not isinstance(chosen, Mapping) or not isinstance(scores, list) or \
            not all(isinstance(r, Mapping) for r in scores):
        raise ValueError("this model's tuning record is malformed (no pipeline or no list of scores): re-run "
                         "vaeaug.tune on the model")
    tuned_names = [str(r["transform"]) for r in scores if r.get("transform") and r.get("setting") is None]
    if base:  # tune(base=...): every candidate ran with that transform
        if not callable(transforms) or isinstance(transforms, (Mapping, Sequence)):
            raise TypeError(f"this model was tuned on top of base={base}: pass that transform itself as "
                            f"transforms; got {type(transforms).__name__}")
        named: dict[str, AnyTransform] = {"base": transforms}
    elif not tuned_names:
        if transforms is not None:
            raise ValueError(f"this model was tuned without transforms= (the VAE settings alone): pass no "
                             f"transforms; got {type(transforms).__name__}")
        named = {}
    else:
        if transforms is None or (callable(transforms) and not isinstance(transforms, (Mapping, Sequence))):
            raise TypeError(f"tune chose among your transforms {tuned_names}: pass them as you gave them "
                            f"(a dict name -> transform, or the list); got {type(transforms).__name__}")
        named = named_transforms(transforms)  # type: ignore[arg-type]
        if sorted(named) != sorted(tuned_names):
            raise ValueError(f"tune chose among the transforms {tuned_names}; got {list(named)}: pass the "
                             "transforms=... you tuned with")
    name = chosen.get("transform")
    if name is not None and name not in named:
        raise ValueError(f"this model's tuning record chose the transform {name!r}, which is not among "
                         f"{list(named)}: re-run vaeaug.tune on the model")
    vae = None
    if chosen.get("setting") is not None:
        try:
            st = AugmentSetting.from_dict(chosen["setting"])
            st.check_for(conditional=model.conditional)
        except (TypeError, ValueError) as e:
            raise ValueError(f"this model's tuning record holds an invalid setting ({e}): re-run vaeaug.tune "
                             "on the model") from None
        vae = VAEAugment(model, p=st.p, strength=st.strength, mode=st.mode, form=st.form, seed=seed, device=device)
    transform = named[name] if name is not None else None
    return TunedPipeline(str(chosen.get("label") or "tune's choice"), vae, transform)


class TunedPipeline:
    """The pipeline :func:`vaeaug.tune` chose: the VAE move (if chosen), then your transform (if chosen).

    Called on an image, or on an ``(image, label)`` sample (a tuple or list, or two arguments, the
    way torchvision v2 transforms are called): the label goes to a class-conditional VAE and comes
    back unchanged; your transform sees the image alone, as in :func:`vaeaug.tune`. Build it with
    :func:`tuned_pipeline`; it pickles (DataLoader workers) when your transform does.

    Attributes:
        label: the candidate's label in tune's result (e.g. ``"vaeaug delta isotropic s=1 p=0.5, then RandomAffine"``).
        vae: the :class:`~vaeaug.VAEAugment` with the chosen setting, or ``None``.
        transform: your chosen transform, or ``None``.

    Example:
        >>> import torch
        >>> flip = TunedPipeline("flip", None, lambda im: im.flip(-1))  # as tuned_pipeline builds it
        >>> image, label = flip(torch.tensor([[[0.0, 1.0]]]), 3)
        >>> image.tolist(), label
        ([[[1.0, 0.0]]], 3)
    """

    def __init__(self, label: str, vae: VAEAugment | None, transform: AnyTransform | None) -> None:
        self.label, self.vae, self.transform = label, vae, transform

    def __call__(self, *inputs: Any) -> Any:
        """The sample with its image replaced: the same structure as the input (an image, a tuple or a list)."""
        if not inputs:
            raise TypeError("a TunedPipeline takes an image or an (image, label) sample; got nothing")
        sample = inputs[0] if len(inputs) == 1 else inputs
        if isinstance(sample, Mapping):
            raise TypeError("a TunedPipeline takes an image or an (image, label) tuple; got a dict: call it on "
                            "(sample['image'], sample['label']) or compose VAEAugment and your transform yourself")
        as_list = isinstance(sample, list)
        if as_list:
            sample = tuple(sample)
        if self.vae is not None:
            sample = self.vae(sample)
        if self.transform is not None:
            sample = (self.transform(sample[0]), *sample[1:]) if isinstance(sample, tuple) else self.transform(sample)
        return list(sample) if as_list else sample

    def __repr__(self) -> str:
        return f"TunedPipeline({self.label!r}, vae={self.vae!r}, transform={self.transform!r})"
