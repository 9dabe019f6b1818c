"""``VAEAugment`` for albumentations: replace an image by a VAE variant of it, inside ``A.Compose``.

An ``albumentations.ImageOnlyTransform`` over the same :class:`~vaeaug.core.backend.Backend`, the
same per-sample keys and the same perturbation math as the torchvision transform
(:class:`vaeaug.transforms.VAEAugment`): for the same key both give the same variant. It is reached
as ``import vaeaug.albumentations``; ``import vaeaug`` never imports albumentations.

Why the randomness is not albumentations' own: in albumentations 2.0.8, ``A.Compose`` (and every
transform in it) draws from numpy/python generators created once, in the process that builds the
pipeline (``np.random.default_rng(seed)`` in ``set_random_seed``). DataLoader workers receive
copies of that state (by fork or by pickling), and albumentations never reseeds them, so every
worker, and every epoch of non-persistent workers, repeats the same random choices. This adapter
mixes albumentations' per-call draw with a per-process component (``torch.initial_seed()``,
which DataLoader sets per worker and per epoch), so its coin flips and its noise differ across
workers and epochs and stay reproducible under ``torch.manual_seed`` and ``Compose(seed=...)``.

**Both albumentations lines.** albumentations 2.0.8 (MIT, the last release of the original
project) and AlbumentationsX 2.5 (its maintained continuation, AGPL-3.0 or commercial; the same
``import albumentations``) are detected at import (:data:`ALBUMENTATIONS_LINE`). Everything but two
hooks is one code path: where 2.0.8 asks a transform for ``should_apply`` / ``get_params`` /
``get_params_dependent_on_data``, AlbumentationsX asks for ``sample_parameters`` and flips its
coin in ``_should_apply_in_invocation``; both routes draw the same key, flip the same coin and
read the same label, so the same key gives the same variant on both lines.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

try:
    from albumentations.core.transforms_interface import BasicTransform, ImageOnlyTransform
except ImportError as e:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "vaeaug.albumentations needs albumentations: pip install 'vaeaug[albumentations]' (2.0.8, the last MIT "
        f"release) or AlbumentationsX (pip install albumentationsx; AGPL-3.0) (import failed: {e})"
    ) from e

from vaeaug.backends.factory import as_backend
from vaeaug.core.augment import Augmenter, sample_keys
from vaeaug.core.backend import Backend
from vaeaug.core.codecs import NumpyImages
from vaeaug.core.rng import Stream, derive_keys, uniform, worker_component, worker_seed
from vaeaug.core.settings import PARTNER_MODES, AugmentSetting, resolve_setting
from vaeaug.core.values import MAX_SEED, check_int, check_values

__all__ = ["ALBUMENTATIONS_LINE", "VAEAugment"]

ALBUMENTATIONS_LINE: str = "albumentationsx" if hasattr(BasicTransform, "sample_parameters") else "albumentations"
"""Which albumentations is installed: ``"albumentations"`` (2.0.x, the original project) or
``"albumentationsx"`` (its maintained continuation, which samples through ``sample_parameters``)."""
_MAINTAINED = ALBUMENTATIONS_LINE == "albumentationsx"

_MAX_KEY = 2**63 - 1
_MASK63 = np.uint64(_MAX_KEY)
_LABEL_KEY = "label"


def _process_entropy() -> int:
    """The per-process part of a ``seed=None`` key.

    ``torch.initial_seed()`` in DataLoader workers (it differs per worker and per epoch) and in
    the main process (where it follows ``torch.manual_seed``); in other child processes, which
    inherit their parent's torch seed, the process id is mixed in; 0 in a main process without
    torch loaded.
    """
    worker = worker_seed()
    if worker is not None:
        return worker
    torch = sys.modules.get("torch")
    base = 0 if torch is None else int(torch.initial_seed()) & _MAX_KEY
    if multiprocessing.parent_process() is None:
        return base
    return int(derive_keys(base, os.getpid())[0] & _MASK63)


def _describe_model(model: Any, device: Any) -> tuple[str | None, Backend | None, Any, Any]:
    """``(path, generator, config, tuned setting)``: a path is only read for its metadata."""
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not isinstance(path, str):
            raise TypeError(f"model path must be a str or a PathLike of str; got {model!r}")
        if path.endswith(".onnx"):  # torch-free: the ONNX backend needs only numpy and onnxruntime
            if device not in (None, "cpu"):
                raise ValueError(f"an ONNX model runs on the CPU through onnxruntime; got device={device!r}")
            from vaeaug.backends.onnx.metadata import read_onnx_metadata

            meta = read_onnx_metadata(path)
            if meta["graph"] != "augmenter":
                raise ValueError(f"{path} is the {meta['graph']} graph of an export; pass the export's main .onnx file")
        else:
            from vaeaug.model.vaefile import read_metadata

            meta = read_metadata(path)
        return path, None, meta["config"], meta.get("augment")
    gen = as_backend(model, device=device)  # TypeError for anything else
    return None, gen, gen.config, gen.augment


def _check_one_shape(images: list[Any] | tuple[Any, ...]) -> None:
    """``images=`` as a list: numpy arrays of one shape (they are stacked into one batch)."""
    first = getattr(images[0], "shape", None)
    for i, img in enumerate(images):
        check_values(img, f"images[{i}]")
        shape = getattr(img, "shape", None)
        if not isinstance(img, np.ndarray) or shape != first:
            got = f"a {type(img).__name__}" if not isinstance(img, np.ndarray) else f"shape {shape}"
            raise ValueError(f"images= must be numpy images of one shape (they are stacked into one batch); images[0] "
                             f"has shape {first}, images[{i}] is {got} - resize them to one size first (e.g. "
                             "A.Resize before this transform), or pass each with image=")


class VAEAugment(ImageOnlyTransform):
    """Replace an image by a VAE variant of it, with probability ``p``: an albumentations transform.

    Targets ``image`` (``(H, W)`` or ``(H, W, C)``) and ``images`` (a stack or list of them);
    numpy ``uint8`` (read as 0..255) or float (read in the model's recorded float range, e.g.
    0..16 for a model fit on scikit-learn's digits, or 0..1 for a model fit on uint8 images).
    The output has the input's shape, dtype and value range; nothing is clipped or resized.

    **Labels.** A class-conditional model needs the image's label: pass it as the extra key
    ``label`` (an int, or one per image for ``images=``), e.g. ``aug(image=img, label=3)``.
    Extra keys pass through ``A.Compose`` unchanged (it is also a declared key of this transform,
    so ``A.Compose(..., strict=True)`` accepts it). Unconditional models ignore it.

    **Randomness.** ``p`` is not albumentations' coin: the base class is told to always apply,
    and this transform flips its own coin from the per-call key, per image (as the torchvision
    transform does), so the coin varies per worker too. ``force_apply=True`` applies it regardless of
    ``p``. The per-call key is:

    * ``seed=None`` (default): a hash of albumentations' own per-call draw (from this
      transform's ``random_generator``, so it follows ``A.Compose(seed=...)``) and a per-process
      component, ``torch.initial_seed()``. DataLoader seeds torch differently in every worker
      and every epoch, so the variants differ across workers and epochs even where
      albumentations 2.0.8's ``Compose`` repeats its own choices; in the main process the key
      follows ``A.Compose(seed=...)`` and ``torch.manual_seed``. Without torch (an ONNX model),
      the component is 0 in the main process and the process id in child processes. Note that
      ``A.Compose(seed=s)`` gives every transform the same seed, so two ``VAEAugment`` in one
      such pipeline draw the same keys; give them different ``seed=`` ints if that matters.
    * ``seed=int``: a fixed stream, the hash of ``(seed, worker component, call count)``, where
      the worker component is 0 in the main process and the DataLoader worker seed in a worker
      (so ``torch.manual_seed`` makes worker streams reproducible). albumentations' random
      state is not used.

    On ``images=`` every image gets its own key ``derive_keys(key, i)``: its own noise and its own coin.

    **Serialization and workers.** With a path, the transform stores the path: ``A.to_dict`` /
    ``A.from_dict`` and ``A.save`` / ``A.load`` round-trip (import ``vaeaug.albumentations``
    before loading, so albumentations finds the class in its registry; note that albumentations
    does not serialize ``Compose(seed=...)``). The model is loaded lazily, on first use in each
    process, and dropped when the transform is pickled, so DataLoader workers started by spawn
    reload it from the path. A ``VAE`` or ``Backend`` object works, but cannot be serialized.

    Args:
        model: the path of a ``.vae`` file or of an ``.onnx`` export (str or PathLike; needed for
            serialization; an ``.onnx`` model runs with numpy and onnxruntime only, torch need not
            be installed), a fitted ``VAE``, or a ``Backend``.
        p: probability that an image is replaced by a variant.
        strength: size of the latent move (``s``; see :mod:`vaeaug.core.functional`).
        mode: ``"posterior"``, ``"isotropic"``, ``"prior"`` (conditional models) or
            ``"reconstruct"``. ``"interpolate"`` and ``"extrapolate"`` need a partner image of the
            same class, which a one-sample transform does not have: use ``VAEAugmentedDataset`` or
            the torchvision transform on a batch.
        form: ``"decode"`` (``D(z')``) or ``"delta"`` (``x + D(z') - D(mu)``). ``p``,
            ``strength``, ``mode`` and ``form`` left as ``None`` come from the model's tuned
            setting (:func:`vaeaug.tune`), else from the library default (delta, isotropic, 1, 0.5).
        seed: ``None`` or an int >= 0; see *Randomness*. Stored as ``vae_seed``, because
            albumentations uses ``self.seed`` for ``Compose(seed=...)``.
        device: where the model runs (``"cpu"``, ``"cuda"``, ...); default: CPU for a path,
            the model's device for a ``VAE``.

    Returns:
        Called as ``aug(image=img, label=...)``, the input dict with ``image`` replaced.

    Example:
        >>> import os, tempfile
        >>> import numpy as np, albumentations as A, vaeaug
        >>> from vaeaug.albumentations import VAEAugment
        >>> path = os.path.join(tempfile.mkdtemp(), "digits.vae")
        >>> vaeaug.fit("digits", epochs=1, progress=False).save(path)
        >>> pipeline = A.Compose([A.HorizontalFlip(p=0.5), VAEAugment(path, p=1.0)], seed=0)
        >>> img = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
        >>> out = pipeline(image=img)["image"]
        >>> out.shape, out.dtype
        ((8, 8), dtype('uint8'))
        >>> A.from_dict(A.to_dict(pipeline))[1].model == path
        True
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Any,
        p: float | None = None, strength: float | None = None, mode: str | None = None, form: str | None = None,
        seed: int | None = None,
        device: Any = None,
    ) -> None:
        check_int("seed", seed, 0, MAX_SEED, optional=True)
        if device is not None:
            torch = sys.modules.get("torch")
            if not isinstance(device, str) and not (torch is not None and isinstance(device, torch.device)):
                raise ValueError(f"device must be None, a str or a torch.device; got {device!r}")
            device = str(device)
        super().__init__(p=1.0)  # the base class never skips; the core flips the coin per image
        path, gen, config, stored = _describe_model(model, device)
        setting = resolve_setting(stored, mode=mode, strength=strength, form=form, p=p)
        if len(config.input_shape) != 3:
            raise ValueError("VAEAugment works on images; this model was fit on vectors (N, D)")
        self._setting: AugmentSetting = setting.check_for(conditional=config.num_classes is not None)
        if setting.mode in PARTNER_MODES:
            raise ValueError(
                f"mode {setting.mode!r} needs a partner image of the same class, which an albumentations "
                "transform (one sample per call) does not have; use vaeaug.VAEAugmentedDataset, or "
                "vaeaug.VAEAugment on a batch"
            )
        self._path = path
        self._generator = gen
        self._core: tuple[Augmenter, NumpyImages, NumpyImages] | None = None
        self.p, self.strength, self.mode, self.form = setting.p, setting.strength, setting.mode, setting.form
        self.vae_seed = seed
        self.device = device
        self._calls = 0
        self._local = threading.local()  # this call's force_apply, from the coin hook to the parameter hook

    # --- the model ---------------------------------------------------------------------------

    @property
    def model(self) -> str:
        """The model file's path, or a description when built from an object."""
        if self._path is not None:
            return self._path
        assert self._generator is not None
        return self._generator.describe()

    @property
    def backend(self) -> Backend:
        """The generator that makes the variants (loaded from the path on first use here)."""
        if self._generator is None:
            assert self._path is not None
            self._generator = as_backend(self._path, device=self.device)
        return self._generator

    def _augmenter(self) -> tuple[Augmenter, NumpyImages, NumpyImages]:
        """The core and its two codecs (one image; a stack), built on first use in each process."""
        if self._core is None:
            gen = self.backend
            shape, vr = tuple(gen.config.input_shape), gen.value_range
            hint = f"pass the label with the image, e.g. transform(image=img, {_LABEL_KEY}=3) - extra keys pass " \
                "through A.Compose unchanged"
            self._core = (Augmenter(gen, self._setting, label_hint=hint), NumpyImages(shape, vr, albumentations=True),
                          NumpyImages(shape, vr, stack=True, albumentations=True))
        return self._core

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # AlbumentationsX leaves out its own runtime state
        state["_core"] = None
        state.pop("_local", None)
        if self._path is not None:
            state["_generator"] = None  # reloaded from the path in the process that unpickles
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        restore = getattr(super(), "__setstate__", None)  # AlbumentationsX rebuilds its runtime state
        if restore is not None:
            restore(state)
        else:
            self.__dict__.update(state)
        self._local = threading.local()

    # --- albumentations hooks ----------------------------------------------------------------

    @property
    def targets(self) -> dict[str, Callable[..., Any]]:
        return {"image": self.apply, "images": self.apply_to_images}

    def _set_keys(self) -> None:
        super()._set_keys()
        self._available_keys.add(_LABEL_KEY)  # read, never changed: not in _key2func

    def _next_key(self, rng: np.random.Generator) -> int:
        """This call's key: albumentations' draw mixed with the process, or the ``seed=`` stream."""
        if self.vae_seed is None:
            key = derive_keys(int(rng.integers(0, _MAX_KEY)), _process_entropy())
        else:
            key = derive_keys(self.vae_seed, worker_component(), self._calls)
            self._calls += 1
        return int(key[0] & _MASK63)

    def _begin(self, kwargs: dict[str, Any]) -> bool:
        """Note whether this call is a stack (one coin per image, later) and check it; ``True``: empty, skip."""
        self._local.stack = stack = "images" in kwargs and "image" not in kwargs
        if stack and len(kwargs["images"]) == 0:
            return True  # an empty batch comes back as it is (albumentations' own shape checks index [0])
        if stack and isinstance(kwargs["images"], (list, tuple)):
            _check_one_shape(kwargs["images"])  # stacked below (and by albumentations): numpy's message otherwise
        return False

    def _will_apply(self, rng: np.random.Generator, force_apply: bool) -> bool:
        """Draw this call's key and, for one image, flip its coin for ``p`` from it (stacks: per image, later)."""
        if self.p <= 0.0 and not force_apply:
            return False
        self._local.key, self._local.force = self._next_key(rng), force_apply
        if force_apply or self.p >= 1.0 or getattr(self._local, "stack", False):
            return True
        return bool(uniform(sample_keys(self._local.key, 1), Stream.APPLY)[0, 0] < self.p)  # the core's coin, image 0

    def _params(self, data: dict[str, Any]) -> dict[str, Any]:
        """What ``apply`` receives: the key drawn with the coin, the label, and whether ``force_apply`` was given."""
        return {"key": self._local.key, _LABEL_KEY: data.get(_LABEL_KEY), "force": self._local.force}

    if _MAINTAINED:  # AlbumentationsX: sampling goes through sample_parameters, the coin through the invocation
        def apply_in_invocation(self, invocation: Any, /, *args: Any, force_apply: bool = False, **kwargs: Any) -> Any:
            if self._begin(kwargs):
                return kwargs
            return super().apply_in_invocation(invocation, *args, force_apply=force_apply, **kwargs)

        def _should_apply_in_invocation(self, invocation: Any, *, force_apply: bool) -> bool:
            return self._will_apply(invocation.random_generator, force_apply)

        def sample_parameters(self, params: dict[str, Any], data: dict[str, Any], targets: Any,
                              sampling: Any) -> Any:
            """This call's key, label and ``force_apply`` (AlbumentationsX's sampling hook).

            Args:
                params: albumentations' execution parameters (unused).
                data: the call's data (``label`` is read from it).
                targets: the active targets (unused).
                sampling: the call's random streams (unused: the key was drawn with the coin).

            Returns:
                ``SampledParams`` with ``key``, ``label`` and ``force``.
            """
            from albumentations.core.transform_params import SampledParams

            return SampledParams(params=self._params(data))
    else:  # albumentations 2.0.x
        def __call__(self, *args: Any, force_apply: bool = False, **kwargs: Any) -> Any:
            if self._begin(kwargs):
                return kwargs
            return super().__call__(*args, force_apply=force_apply, **kwargs)

        def should_apply(self, force_apply: bool = False) -> bool:
            """Draw this call's key and, for one image, flip its coin for ``p`` from it.

            Args:
                force_apply: apply regardless of ``p``.

            Returns:
                Whether the transform runs in this call (albumentations records it as applied).
            """
            return self._will_apply(self.random_generator, force_apply)

        def get_params(self) -> dict[str, Any]:
            return {}

        def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
            return self._params(data)

    def apply(self, img: np.ndarray, key: int = 0, label: Any = None, force: bool = False,
              **params: Any) -> np.ndarray:
        """A variant of one image ``(H, W)`` or ``(H, W, C)``, same shape, dtype and range.

        Args:
            img: the image.
            key: the call's random key (the image uses ``derive_keys(key, 0)``).
            label: the class (conditional models).
            force: ``force_apply=True`` was given (the coin was skipped before this call).
            **params: albumentations' other parameters (unused).

        Returns:
            The variant.
        """
        core, one, _ = self._augmenter()
        return core(img, label, key=key, codec=one, p=1.0)  # type: ignore[no-any-return]  # its coin said yes

    def apply_to_images(self, images: np.ndarray, key: int = 0, label: Any = None, force: bool = False,
                        **params: Any) -> np.ndarray:
        """Variants of a stack ``(N, H, W[, C])``, each with its own noise and coin, in one model call.

        Args:
            images: the images: a stack, or a list of one shape (made in one batch, returned as a list).
            key: the call's random key (image ``i`` uses ``derive_keys(key, i)``).
            label: one class, or one per image (conditional models).
            force: replace every image regardless of ``p``.
            **params: albumentations' other parameters (unused).

        Returns:
            The images, the chosen ones replaced: a stack for a stack, a list for a list.
        """
        core, _, stack = self._augmenter()
        if isinstance(images, (list, tuple)):  # AlbumentationsX hands a list over as it came; 2.0.8 stacks it first
            if not images:
                return images
            return list(core(np.stack(images), label, key=key, codec=stack, p=1.0 if force else None))
        return core(images, label, key=key, codec=stack, p=1.0 if force else None)  # type: ignore[no-any-return]

    # --- serialization -----------------------------------------------------------------------

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("model", "strength", "mode", "form", "seed", "device")

    def get_transform_init_args(self) -> dict[str, Any]:
        return {"model": self.model, "strength": self.strength, "mode": self.mode, "form": self.form,
                "seed": self.vae_seed, "device": self.device}

    def to_dict_private(self) -> dict[str, Any]:
        if self._path is None:
            raise NotImplementedError(
                "VAEAugment was built from a model object, which cannot be written to a pipeline file: "
                "save the model (model.save('model.vae')) and pass its path, VAEAugment('model.vae', ...)"
            )
        return super().to_dict_private()
