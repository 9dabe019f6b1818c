"""The protocol's classifier: a small CNN trained for a fixed number of steps under one arm.

Shared by :func:`vaeaug.evaluate` (test accuracy per arm) and :func:`vaeaug.tune` (validation
accuracy per setting): the same network, batches, augmentation keys and dropout seeds for every arm
of a seed, so that paired differences measure the augmentation and nothing else.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import Augmenter
from .classic import classic_augment
from .rng import derive_keys

__all__ = ["SmallCNN", "classic_augment", "train_classifier"]


class SmallCNN(nn.Module):
    """Two conv+pool blocks (32, 64), dropout 0.3, dense 128: the protocol's classifier."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        c, h, w = shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(64 * (h // 4) * (w // 4), 128), nn.ReLU(),
                                  nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_classifier(
    x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *, num_classes: int,
    steps: int, batch_size: int, seed: int, classic: bool, flip: bool, aug: Augmenter | None = None,
    lr: float = 1e-3,
) -> float:
    """Train :class:`SmallCNN` for ``steps`` steps under one arm (``aug``: VAE variants in every batch,
    keyed by the seed and the step); return test accuracy in %."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallCNN(tuple(x.shape[1:]), num_classes)  # type: ignore[arg-type]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed + 10_000)
    g_aug = torch.Generator().manual_seed(seed + 20_000)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=g)
        xb, yb = x[idx], y[idx]
        if aug is not None:
            xb = aug(xb, yb, key=int(derive_keys(seed, step)[0] >> np.uint64(1)), codec=aug.codec("model"))
        if classic:
            xb = classic_augment(xb, g_aug, flip)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 100_003 + step)  # dropout
            loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for lo in range(0, len(x_test), 2000):
            correct += int((model(x_test[lo:lo + 2000]).argmax(1) == y_test[lo:lo + 2000]).sum())
    return 100.0 * correct / len(x_test)
