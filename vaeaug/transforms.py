"""``VAEAugment``: a torchvision v2 transform that replaces an image by a VAE variant of it.

Only torchvision's public hooks are used: ``check_inputs`` (to find the label in the sample),
``make_params`` (one random key per call) and ``transform`` (per image leaf). Randomness: the
per-call key comes from torch's global generator, so it follows ``torch.manual_seed`` and the
per-worker, per-epoch seeding of ``DataLoader``; with an explicit ``seed`` the key comes from
``(seed, worker seed, call count)`` instead. Every sample of a batch gets its own key, hence its
own noise and its own coin flip for ``p``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from .convert import from_model, to_model
from .functional import check_mode
from .generator import Generator, Noise, as_generator, class_members, same_class_partners
from .rng import Stream, derive_keys, uniform
from .settings import resolve_setting

__all__ = ["VAEAugment", "apply_variants"]

_MAX_KEY = 2**63 - 1


def _is_label(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, np.integer)):
        return True
    if isinstance(v, torch.Tensor) and v.dim() <= 1:
        return not v.dtype.is_floating_point and not v.dtype.is_complex and v.dtype != torch.bool
    if isinstance(v, np.ndarray) and v.ndim <= 1:
        return v.dtype.kind in "iu"
    return False


class _Ambiguous:
    """Marks a sample holding several label-like values that do not form one label per image."""

    def __init__(self, what: str) -> None:
        self.what = what


def _find_labels(flat_inputs: list[Any]) -> Any:
    """The sample's label(s): one label-like leaf, or several scalar leaves (a list of labels)."""
    found = [v for v in flat_inputs if _is_label(v)]
    if len(found) <= 1:
        return found[0] if found else None
    if all(np.ndim(v) == 0 for v in found):
        return np.array([int(v) for v in found], dtype=np.int64)  # e.g. aug(batch, [0, 1, 2, 3])
    return _Ambiguous(", ".join(f"shape {tuple(np.shape(v))}" for v in found))


def _worker_seed() -> int:
    info = torch.utils.data.get_worker_info()
    return 0 if info is None else int(info.seed) % _MAX_KEY + 1


def apply_variants(
    gen: Generator,
    inpt: Any,
    labels: Any,
    key: int,
    *,
    p: float,
    mode: str,
    strength: float,
    form: str,
) -> Any:
    """Replace each image of ``inpt`` by a variant with probability ``p``; same type out.

    Args:
        gen: the generator.
        inpt: one image or a batch (PIL, tensor, ``tv_tensors.Image``, numpy HWC).
        labels: an int or ``(N,)`` labels, or ``None``.
        key: the call's random key; sample ``i`` uses ``derive_keys(key, i)``.
        p: probability that a sample is replaced.
        mode: latent move (see :mod:`vaeaug.functional`).
        strength: size of the move.
        form: ``"decode"`` or ``"delta"``.

    Returns:
        ``inpt`` with the chosen samples replaced (``inpt`` itself when none is chosen).
    """
    x, spec = to_model(inpt, gen.value_range, tuple(gen.config.input_shape))
    n = x.shape[0]
    keys = derive_keys(key, 0) if n == 1 else derive_keys(key, np.arange(n))
    # usage errors do not depend on the coin flip: check before it
    if mode == "interpolate" and n < 2:
        raise ValueError(
            "mode 'interpolate' needs a partner image of the same class: call the transform on a "
            "batch (N, C, H, W), or use VAEAugmentedDataset, which picks partners from the dataset"
        )
    y = _labels_for(labels, n, gen, mode)
    chosen = np.nonzero(uniform(keys, Stream.APPLY)[:, 0] < p)[0]
    if len(chosen) == 0:
        return inpt
    everything = len(chosen) == n
    idx = torch.from_numpy(chosen).to(x.device)
    partner = None
    if mode == "interpolate":
        assert y is not None  # _labels_for requires them for interpolate
        partner = x[torch.from_numpy(_partners(chosen, keys, y)).to(x.device)]
    xs = x if everything else x[idx]
    ys = None if y is None or not gen.conditional else y if everything else y[idx.cpu()]  # y picks partners
    noise = Noise.from_keys(keys if everything else keys[chosen], gen.latent_dim, with_t=mode == "interpolate")
    out = gen.variants(xs, ys, mode=mode, strength=strength, form=form, noise=noise, partner=partner)
    if not spec.batched:
        result = from_model(out, spec)
    elif isinstance(inpt, np.ndarray):
        result = inpt.copy()
        result[chosen] = from_model(out, spec)
    else:
        result = inpt.as_subclass(torch.Tensor).clone()
        result[idx] = from_model(out, spec)
    if isinstance(inpt, tv_tensors.TVTensor):
        result = tv_tensors.wrap(result, like=inpt)
    return result


def _labels_for(labels: Any, n: int, gen: Generator, mode: str) -> torch.Tensor | None:
    needed = gen.conditional
    if not needed and mode != "interpolate":
        return None  # e.g. per-box labels of a detection sample: not ours to read
    if isinstance(labels, _Ambiguous):
        raise ValueError(
            f"found several label candidates in the sample ({labels.what}); pass the labels as one int "
            "per image or one (N,) tensor for a batch"
        )
    if labels is None:
        if mode == "interpolate" and not needed:
            raise ValueError(
                "mode 'interpolate' mixes each image with a partner of the same class and needs the labels: "
                "call the transform on (images, labels)"
            )
        if needed:
            why = " and mode 'prior' makes a new sample of the label's class" if mode == "prior" else ""
            raise ValueError(
                f"this model is class-conditional{why}: it needs the label - call the transform on "
                "(image, label), or on (images, labels) for a batch"
            )
        return None
    y = torch.as_tensor(np.asarray(labels) if isinstance(labels, np.ndarray) else labels).reshape(-1).long().cpu()
    if y.numel() == 1 and n > 1:
        y = y.expand(n)
    if y.numel() != n:
        raise ValueError(f"found {y.numel()} labels for {n} images; pass one label per image")
    if needed:
        k = gen.config.num_classes
        if int(y.min()) < 0 or int(y.max()) >= k:
            raise ValueError(
                f"labels must be in 0..{k - 1} for this model; got values in [{int(y.min())}, {int(y.max())}]"
            )
        return y
    return y if mode == "interpolate" else None


def _partners(chosen: np.ndarray, keys: np.ndarray, y: torch.Tensor) -> np.ndarray:
    """For each chosen sample, another sample of the same class in the batch (itself if none)."""
    labels = y.numpy()
    return same_class_partners(chosen, labels, class_members(labels), uniform(keys[chosen], Stream.PARTNER)[:, 0])


class VAEAugment(v2.Transform):
    """Replace an image by a VAE variant of it, with probability ``p``: a torchvision v2 transform.

    Works on PIL images, uint8/float tensors ``(C, H, W)`` and batches ``(N, C, H, W)``,
    ``tv_tensors.Image`` and numpy HWC arrays; returns the input's type, dtype, layout, device and
    value range. In a sample such as ``(img, label)`` or a dict with masks and boxes, only the
    image changes; class-conditional models read the label from the sample (an int, or ``(N,)``
    labels for a batch). On a batch each sample gets its own noise and coin flip, in one batched
    model call on the model's device.

    Args:
        model_or_path: a fitted ``VAE``, the path of a ``.vae`` file, or a ``Generator``.
        p: probability that an image is replaced by a variant.
        strength: size of the latent move (``s``; see :mod:`vaeaug.functional`).
        mode: ``"posterior"``, ``"isotropic"``, ``"interpolate"`` (batches), ``"prior"``
            (conditional models) or ``"reconstruct"``.
        form: ``"decode"`` (``D(z')``) or ``"delta"`` (``x + D(z') - D(mu)``).
            ``p``, ``strength``, ``mode`` and ``form`` left as ``None`` come from the model's
            tuned setting (:func:`vaeaug.tune`), else from :data:`vaeaug.settings.DEFAULT_AUGMENT`
            (``delta``, ``isotropic``, ``strength=1``, ``p=0.5``: the measured default).
        seed: ``None`` draws from torch's generator (follows ``torch.manual_seed`` and DataLoader
            worker seeding); an int gives a fixed stream in the main process, combined with the
            worker seed inside DataLoader workers.
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
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0):
            raise ValueError(f"p must be a probability in [0, 1]; got {p!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be None or an integer >= 0; got {seed!r}")
        gen = as_generator(model_or_path, device=device)
        setting = resolve_setting(gen.augment, mode=mode, strength=strength, form=form, p=p)
        mode, strength, form, p = setting.mode, setting.strength, setting.form, setting.p
        if len(gen.config.input_shape) != 3:
            raise ValueError("VAEAugment works on images; this model was fit on vectors (N, D)")
        check_mode(mode, form, strength, conditional=gen.conditional)
        self._generator = gen
        self.model = getattr(gen, "source", None) or gen.describe()
        self.p = float(p)
        self.strength = float(strength)
        self.mode = mode
        self.form = form
        self.seed = seed
        self._calls = 0
        self._labels: Any = None
        self._numpy_image: int | None = None

    @property
    def generator(self) -> Generator:
        """The generator that makes the variants."""
        return self._generator

    def check_inputs(self, flat_inputs: list[Any]) -> None:
        # the one public hook that sees the whole sample: find the label and the numpy image
        self._labels = _find_labels(flat_inputs)
        has_image = any(isinstance(v, (PIL.Image.Image, tv_tensors.Image)) or
                        (type(v) is torch.Tensor and v.dim() >= 2) for v in flat_inputs)
        first_np = next((v for v in flat_inputs if isinstance(v, np.ndarray) and v.ndim >= 2), None)
        self._numpy_image = None if has_image or first_np is None else id(first_np)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        if self.seed is None:
            key = int(torch.randint(0, _MAX_KEY, (1,)).item())
        else:
            key = int(derive_keys(self.seed, _worker_seed(), self._calls)[0] % np.uint64(_MAX_KEY))
            self._calls += 1
        labels, self._labels = self._labels, None
        return {"key": key, "labels": labels}

    def _needs_transform_list(self, flat_inputs: list[Any]) -> list[bool]:
        # torchvision treats the first plain tensor as the image; a 0-d/1-d tensor (a label) never
        # is one, so skip those when choosing (this hook is torchvision's, not public API)
        needs = super()._needs_transform_list(flat_inputs)
        plain = [i for i, v in enumerate(flat_inputs) if type(v) is torch.Tensor]
        if plain and not any(needs[i] and flat_inputs[i].dim() >= 2 for i in plain):
            first = next((i for i in plain if flat_inputs[i].dim() >= 2), None)
            has_image = any(isinstance(v, (PIL.Image.Image, tv_tensors.Image, tv_tensors.Video)) for v in flat_inputs)
            if first is not None and not has_image:
                needs = [False if i in plain else n for i, n in enumerate(needs)]
                needs[first] = True
        return needs

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.TVTensor) and not isinstance(inpt, tv_tensors.Image):
            return inpt  # masks, boxes, videos, keypoints pass through
        if isinstance(inpt, np.ndarray) and id(inpt) != self._numpy_image:
            return inpt
        if isinstance(inpt, torch.Tensor) and inpt.dim() < 2:
            return inpt  # labels and other numbers
        return apply_variants(self._generator, inpt, params["labels"], params["key"], p=self.p,
                              mode=self.mode, strength=self.strength, form=self.form)

    def extra_repr(self) -> str:
        return (f"model={self.model!r}, p={self.p}, strength={self.strength}, mode={self.mode!r}, "
                f"form={self.form!r}, seed={self.seed}")
