"""``VAEAugment``: a torchvision v2 transform that replaces an image by a VAE variant of it.

A thin adapter over the augmentation core (:class:`vaeaug.augment.Augmenter`). Two paths:

* the fast path, for an image alone or ``(image, label)`` (one image or a batch): straight to the
  core, without flattening the sample (like torchvision's own ``_RandomApplyTransform.forward``,
  which overrides ``forward`` to decide before dispatching);
* every other sample (dicts, masks, boxes, nested structures) goes through torchvision's
  ``forward``: ``check_inputs`` finds the image leaves and the label, ``make_params`` draws one key
  per call, ``transform`` runs the core on each image leaf; other leaves pass through.

Randomness: the per-call key comes from torch's global generator, so it follows
``torch.manual_seed`` and the per-worker, per-epoch seeding of ``DataLoader``; with an explicit
``seed`` the key comes from ``(seed, worker seed, call count)`` instead. Every sample of a batch
gets its own key, hence its own noise and its own coin flip for ``p``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from .augment import Augmenter
from .backends.base import Generator
from .backends.factory import as_generator
from .codecs import not_an_image
from .rng import derive_keys, worker_component
from .settings import resolve_setting

__all__ = ["VAEAugment"]

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


class VAEAugment(v2.Transform):
    """Replace an image by a VAE variant of it, with probability ``p``: a torchvision v2 transform.

    Works on PIL images, uint8/float tensors ``(C, H, W)`` and batches ``(N, C, H, W)``,
    ``tv_tensors.Image`` and numpy HWC arrays; returns the input's type, dtype, layout, device and
    value range. In a sample such as ``(img, label)`` or a dict with masks and boxes, only the
    image changes; class-conditional models read the label from the sample (an int, or ``(N,)``
    labels for a batch). On a batch each sample gets its own noise and coin flip, in one batched
    model call on the model's device. A call with nothing that can be an image is a ``TypeError``.

    Args:
        model_or_path: a fitted ``VAE``, the path of a ``.vae`` file or an ``.onnx`` export, or a
            ``Generator``.
        p: probability that an image is replaced by a variant.
        strength: size of the latent move (``s``; see :mod:`vaeaug.functional`).
        mode: ``"posterior"``, ``"isotropic"``, ``"interpolate"`` or ``"extrapolate"`` (batches with
            labels: partners of the same class from the batch), ``"prior"`` (conditional models) or
            ``"reconstruct"``.
        form: ``"decode"`` (``D(z')``) or ``"delta"`` (``x + D(z') - D(mu)``).
            ``p``, ``strength``, ``mode`` and ``form`` left as ``None`` come from the model's
            tuned setting (:func:`vaeaug.tune`), else from :data:`vaeaug.settings.DEFAULT_AUGMENT`
            (``delta``, ``isotropic``, ``strength=1``, ``p=0.5``: the measured default).
        seed: ``None`` draws from torch's generator (follows ``torch.manual_seed`` and DataLoader
            worker seeding); an int gives a fixed stream in the main process, combined with the
            worker seed inside DataLoader workers (and the process id in other child processes).
        device: where the model runs (default: where it is; CPU for a path).

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
        p: float | None = None,
        strength: float | None = None,
        mode: str | None = None,
        form: str | None = None,
        seed: int | None = None,
        device: Any = None,
    ) -> None:
        super().__init__()
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be None or an integer >= 0; got {seed!r}")
        gen = as_generator(model_or_path, device=device)
        if len(gen.config.input_shape) != 3:
            raise ValueError("VAEAugment works on images; this model was fit on vectors (N, D)")
        setting = resolve_setting(gen.augment, mode=mode, strength=strength, form=form, p=p)
        self._core = Augmenter(gen, setting)
        self.model = getattr(gen, "source", None) or gen.describe()
        self.p, self.strength, self.mode, self.form = setting.p, setting.strength, setting.mode, setting.form
        self.seed = seed
        self._calls = 0
        self._images: list[int] = []
        self._labels: Any = None

    @property
    def generator(self) -> Generator:
        """The generator that makes the variants."""
        return self._core.generator

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
        return super().forward(*inputs)

    def check_inputs(self, flat_inputs: list[Any]) -> None:
        # the one public hook that sees the whole sample: find the image leaves and the label
        self._images = _image_leaves(flat_inputs)
        if not self._images:
            leaves = {type(v).__name__ + (str(tuple(v.shape)) if hasattr(v, "shape") else "") for v in flat_inputs}
            raise not_an_image(", ".join(sorted(leaves)) or "nothing")
        self._labels = _find_labels(flat_inputs, self._images)

    def _needs_transform_list(self, flat_inputs: list[Any]) -> list[bool]:
        # the image leaves found in check_inputs (this hook is torchvision's, not public API)
        return [i in self._images for i in range(len(flat_inputs))]

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        labels, self._labels = self._labels, None
        return {"key": self._key(), "labels": labels}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._core(inpt, params["labels"], key=params["key"])

    def extra_repr(self) -> str:
        return (f"model={self.model!r}, p={self.p}, strength={self.strength}, mode={self.mode!r}, "
                f"form={self.form!r}, seed={self.seed}")
