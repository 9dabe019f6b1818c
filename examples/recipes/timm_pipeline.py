"""timm: ``VAEAugment`` at the head of timm's training transform, a timm model, Mixup and optimizer.

    python examples/recipes/timm_pipeline.py

What comes from timm here: ``timm.data.create_transform`` (its train and eval transform chains),
``timm.create_model`` (``test_resnet``, a tiny ResNet timm ships for tests, not pretrained),
``timm.data.Mixup`` with ``timm.loss.SoftTargetCrossEntropy``, and
``timm.optim.create_optimizer_v2``. What does not: timm's ``create_loader`` and ``ImageDataset``
(they read image folders; a plain ``DataLoader`` over an in-memory dataset stands in). The VAE
works at the size it was fit at (8x8), so ``VAEAugment`` comes first, before timm resizes the
digits to 32x32, jitters and normalizes them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import timm
import timm.data
import timm.loss
import timm.optim
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info
from torchvision import transforms

import vaeaug
from vaeaug import VAEAugment

SIZE = (1, 32, 32)
MEAN, STD = (0.5,), (0.5,)


class DigitImages(Dataset):
    """The digits as 8x8 grayscale PIL images, ``(transform(image), label, worker id)``.

    Args:
        split: ``"train"`` or ``"test"``.
        transform: applied to each PIL image.
    """

    def __init__(self, split: str, transform: Any) -> None:
        d = vaeaug.load_builtin("digits", split=split)
        assert d.y is not None  # the digits come with labels
        arr = (d.x[:, 0].numpy() * 255).round().astype(np.uint8)
        self.images = [PIL.Image.fromarray(a, mode="L") for a in arr]
        self.labels = d.y.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        info = get_worker_info()
        return self.transform(self.images[i]), self.labels[i], -1 if info is None else info.id


def make_transforms(vae: vaeaug.VAE, p: float = 0.5) -> tuple[transforms.Compose, transforms.Compose]:
    """timm's train and eval transforms for 32x32 grayscale, with ``VAEAugment`` first in the train one.

    Args:
        vae: an unconditional VAE fit on the 8x8 digits (inside a per-image transform chain the
            label is not at hand; for a class-conditional model call ``VAEAugment`` on
            ``(image, label)`` in the dataset, before this chain).
        p: share of training images replaced by a variant.

    Returns:
        ``(train, eval)`` transforms: PIL 8x8 in, normalized float tensor ``(1, 32, 32)`` out.
    """
    timm_train = timm.data.create_transform(input_size=SIZE, is_training=True, scale=(0.7, 1.0), ratio=(0.9, 1.1),
                                            hflip=0.0, color_jitter=0.2, mean=MEAN, std=STD)
    train = transforms.Compose([VAEAugment(vae, p=p), *timm_train.transforms])  # VAE first: at its own 8x8
    evaluate = timm.data.create_transform(input_size=SIZE, is_training=False, crop_pct=1.0, mean=MEAN, std=STD)
    return train, evaluate


def main(model: vaeaug.VAE | None = None, steps: int = 40, batch_size: int = 64, workers: int = 2) -> dict[str, Any]:
    """Train timm's ``test_resnet`` on 32x32 digits for ``steps`` steps with VAEAugment + timm's pipeline.

    Args:
        model: an unconditional VAE fit on the digits (fit here, 2 epochs, if ``None``).
        steps: training steps.
        batch_size: images per step (even, for Mixup).
        workers: DataLoader worker processes.

    Returns:
        ``first_loss`` and ``last_loss`` (means of the first and last 5 steps), ``accuracy`` on the
        test split, ``batch_shape``, ``workers`` (ids seen) and ``train_transform`` (the class names
        of the chain, in order).
    """
    if model is None:
        model = vaeaug.fit("digits", epochs=2, progress=False)
    torch.manual_seed(0)
    train_tf, eval_tf = make_transforms(model)
    loader = DataLoader(DigitImages("train", train_tf), batch_size=batch_size, shuffle=True, drop_last=True,
                        num_workers=workers, persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(0))
    net = timm.create_model("test_resnet", pretrained=False, num_classes=10, in_chans=1)
    mixup = timm.data.Mixup(mixup_alpha=0.2, label_smoothing=0.05, num_classes=10)  # on the batch, after the loader
    criterion = timm.loss.SoftTargetCrossEntropy()
    opt = timm.optim.create_optimizer_v2(net, "adamw", lr=3e-3, weight_decay=0.01)
    losses: list[float] = []
    seen: set[int] = set()
    shape: tuple[int, ...] = ()
    net.train()
    while len(losses) < steps:
        for x, y, worker in loader:
            shape = tuple(x.shape)
            seen.update(worker.tolist())
            x, soft = mixup(x, y)
            loss = criterion(net(x), soft)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if len(losses) == steps:
                break
    net.eval()
    test = DataLoader(DigitImages("test", eval_tf), batch_size=256)
    with torch.no_grad():
        correct = sum(int((net(x).argmax(1) == y).sum()) for x, y, _ in test)
    return {"first_loss": sum(losses[:5]) / 5, "last_loss": sum(losses[-5:]) / 5,
            "accuracy": correct / len(test.dataset), "batch_shape": shape,  # type: ignore[arg-type]
            "workers": sorted(seen), "train_transform": [type(t).__name__ for t in train_tf.transforms]}


if __name__ == "__main__":
    print(main())
