"""The batch path: ``VAEAugment`` on a whole batch, on the model's device, after the DataLoader.

    python examples/recipes/batch_on_device.py

The fastest way to augment: one batched VAE call per training step instead of one call per image
in the DataLoader workers. The loader stays trivial (no workers needed); each image of the batch
still gets its own coin flip and its own noise.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import vaeaug
from vaeaug import VAEAugment


def digits_tensors(split: str) -> TensorDataset:
    """The digits' ``split`` as ``(uint8 images (N, 1, 8, 8), int64 labels (N,))``."""
    d = vaeaug.load_builtin("digits", split=split)
    assert d.y is not None  # the digits come with labels
    return TensorDataset((d.x * 255).round().to(torch.uint8), d.y)


def main(model: vaeaug.VAE | None = None, steps: int = 150, batch_size: int = 128, p: float = 0.5,
         device: str | None = None) -> dict[str, Any]:
    """Train a small CNN with ``VAEAugment`` applied to each batch on ``device``.

    Args:
        model: a class-conditional VAE fit on the digits (fit here, 2 epochs, if ``None``).
        steps: training steps.
        batch_size: images per step.
        p: share of each batch replaced by variants.
        device: where the VAE and the classifier run (default: CUDA if available, else CPU).

    Returns:
        ``first_loss`` and ``last_loss`` (means of the first and last 10 steps), ``accuracy`` on the
        test split, ``replaced`` (share of training images the transform replaced), ``labels_kept``,
        ``device``, ``batch_shape`` and ``augment_ms`` (mean milliseconds per batch in ``VAEAugment``).
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if model is None:
        model = vaeaug.fit("digits", epochs=2, conditional=True, progress=False, device=str(dev))
    torch.manual_seed(0)
    aug = VAEAugment(model, p=p, device=dev)  # the VAE lives on dev; batches on dev stay there
    net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(32 * 4 * 4, 10)).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    loader = DataLoader(digits_tensors("train"), batch_size=batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    losses: list[float] = []
    replaced = seen = 0
    labels_kept = True
    spent = 0.0
    while len(losses) < steps:
        for x, y in loader:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            t0 = time.perf_counter()
            x_aug, y_out = aug(x, y)  # uint8 (N, 1, 8, 8) in, uint8 out, on dev; labels returned as given
            spent += time.perf_counter() - t0
            replaced += int((x_aug != x).flatten(1).any(1).sum())
            seen += len(x)
            labels_kept &= y_out is y
            loss = nn.functional.cross_entropy(net(x_aug.float() / 255.0), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if len(losses) == steps:
                break
    x_test, y_test = digits_tensors("test").tensors
    with torch.no_grad():
        accuracy = float((net(x_test.to(dev).float() / 255.0).argmax(1) == y_test.to(dev)).float().mean())
    return {"first_loss": sum(losses[:10]) / 10, "last_loss": sum(losses[-10:]) / 10, "accuracy": accuracy,
            "replaced": replaced / seen, "labels_kept": labels_kept, "device": str(dev),
            "batch_shape": tuple(x_aug.shape), "augment_ms": 1000.0 * spent / len(losses)}


if __name__ == "__main__":
    print(main())
