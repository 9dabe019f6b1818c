"""Classic geometric augmentation on model-space image batches: a random affine per sample.

One transform, used in two places: by the protocol's classifier (the ``classic`` arms of
:func:`vaeaug.evaluate` and :func:`vaeaug.tune`) and as a fit-time augmentation of the VAE
(``vaeaug.fit(..., augment="classic")``). Each sample gets its own rotation (up to 10 degrees
either way), scale (0.9 to 1.1) and shift (up to 10% of the side either way), drawn from the
generator it is given, and optionally a horizontal flip with probability 1/2. Pixels are
resampled bilinearly, with zeros outside the image, so model-space values stay in ``[0, 1]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["classic_augment", "ClassicTransform", "CLASSIC_AUGMENTS"]

# The fit-time names: whether each includes horizontal flips. "classic" has none, because a flip
# changes what many images mean (a mirrored 2, 3, 4, 5, 7 or 9 is not that digit, mirrored text
# is not text); "classic+flip" adds them for data whose classes are mirror-symmetric (clothes,
# animals, natural scenes).
CLASSIC_AUGMENTS: dict[str, bool] = {"classic": False, "classic+flip": True}


def classic_augment(x: torch.Tensor, g: torch.Generator, flip: bool = False) -> torch.Tensor:
    """Per-sample random affine (+ optional horizontal flip) on a model-space batch.

    Draws ``4 N`` uniforms from ``g`` (``5 N`` with ``flip``), always in the same order, so the
    same generator state gives the same batch; ``g`` is a CPU generator whatever ``x``'s device.

    Args:
        x: images ``(N, C, H, W)``, float, in model space ``[0, 1]``.
        g: a CPU generator, the only source of randomness.
        flip: also mirror each image left-right with probability 1/2.

    Returns:
        A new batch of the same shape, dtype and device (``x`` is not modified).

    Example:
        >>> x = torch.rand(4, 1, 8, 8)
        >>> out = classic_augment(x, torch.Generator().manual_seed(0))
        >>> out.shape, bool(out.min() >= 0), bool(out.max() <= 1)
        (torch.Size([4, 1, 8, 8]), True, True)
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"classic_augment takes a float image batch (N, C, H, W); got {got}")
    n = x.shape[0]
    ang = (torch.rand(n, generator=g) * 2 - 1) * math.radians(10)
    scale = 0.9 + torch.rand(n, generator=g) * 0.2
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * 0.2  # 10% of the side = 0.2 in [-1, 1] coordinates
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    if flip:
        sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
        theta[:, :, 0] *= sign[:, None]
    grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


class ClassicTransform:
    """:func:`classic_augment` as a per-image transform, drawing from torch's global generator.

    The form a user's torchvision pipeline has (one ``(C, H, W)`` image in, one out), so that the
    classic transform can be the ``base`` of :func:`vaeaug.tune` and :func:`vaeaug.evaluate`.

    Args:
        flip: add random horizontal flips.

    Example:
        >>> t = ClassicTransform()
        >>> _ = torch.manual_seed(0)
        >>> t(torch.rand(1, 8, 8)).shape
        torch.Size([1, 8, 8])
    """

    def __init__(self, flip: bool = False) -> None:
        self.flip = bool(flip)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return classic_augment(img[None], torch.default_generator, self.flip)[0]

    def __repr__(self) -> str:
        return f"ClassicTransform(flip={self.flip})"
