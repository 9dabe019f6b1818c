"""Your classic transforms by name: how :func:`vaeaug.tune` and :func:`vaeaug.tuned_pipeline` name them.

Torch-free: a transform is any callable; only its name and its place in the order matter here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["AnyTransform", "named_transforms"]

AnyTransform = Callable[[Any], Any]
"""A transform of one image (or of a sample): any callable."""


def named_transforms(transforms: Mapping[str, AnyTransform] | Sequence[AnyTransform]) -> dict[str, AnyTransform]:
    """Your transforms by the names ``tune`` gives them: a dict's own keys, a list's by each callable's class.

    Args:
        transforms: a dict name -> transform, or a list of transforms (named ``__name__`` or class name).

    Returns:
        name -> transform, in the given order (the first is the reference of :func:`vaeaug.tune`).

    Example:
        >>> class RandomAffine:
        ...     def __call__(self, img): return img
        >>> def flip(img): return img[::-1]
        >>> list(named_transforms([RandomAffine(), flip])), list(named_transforms({"mine": flip}))
        (['RandomAffine', 'flip'], ['mine'])
    """
    if isinstance(transforms, (str, bytes)) or not isinstance(transforms, (Mapping, Sequence)):
        raise TypeError(f"transforms must be a dict name -> transform or a list of transforms; "
                        f"got {type(transforms).__name__}")
    named = dict(transforms) if isinstance(transforms, Mapping) else \
        {getattr(t, "__name__", type(t).__name__): t for t in transforms}
    if not named or len(named) != len(transforms):
        raise ValueError("transforms must name each transform once: pass a dict name -> transform")
    for k, t in named.items():
        if not isinstance(k, str) or not callable(t):
            raise TypeError(f"transforms maps names to callables; got {k!r} -> {type(t).__name__}")
        if k == "none" or k.startswith("vaeaug "):
            raise ValueError(f"the transform name {k!r} is tune's own (the candidate without augmentation, or a "
                             "VAE setting's label): give your transform another name in a dict")
    return named
