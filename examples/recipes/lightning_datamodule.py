"""Lightning: a ``LightningDataModule`` whose training data goes through ``VAEAugment``.

    python examples/recipes/lightning_datamodule.py

Two places for the transform, one flag apart:

* ``on_device=False`` (default): in the training ``Dataset``, so it runs per sample in the
  DataLoader worker processes, on the CPU, beside the other per-sample transforms;
* ``on_device=True``: in ``on_after_batch_transfer``, on the whole batch after Lightning has moved
  it to the accelerator: one batched VAE call per step, on the GPU when there is one.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, get_worker_info

import vaeaug
from vaeaug import VAEAugment


class DigitsSamples(Dataset):
    """Digits as ``{"image": float (1, 8, 8) in 0..16, "label": int, "worker": int}`` dicts.

    Args:
        x: images ``(N, 1, 8, 8)``, float in the digits' own range 0..16.
        y: labels ``(N,)``.
        transform: applied to the ``{"image", "label"}`` dict (e.g. ``VAEAugment``).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: Any = None) -> None:
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample: dict[str, Any] = {"image": self.x[i], "label": int(self.y[i])}
        if self.transform is not None:
            sample = self.transform(sample)  # the image is replaced, the label read and kept
        info = get_worker_info()
        sample["worker"] = -1 if info is None else info.id  # which process made the sample
        return sample


def digits_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images (N, 1, 8, 8) float in 0..16, labels (N,))`` of the digits' ``split``."""
    d = vaeaug.load_builtin("digits", split=split)
    assert d.y is not None  # the digits come with labels
    return d.value_range.from_model(d.x).float(), d.y


class DigitsDataModule(L.LightningDataModule):
    """The digits, with ``VAEAugment`` on the training data (in the workers or on the device).

    Args:
        vae: the fitted VAE (class-conditional or not).
        batch_size: samples per training batch.
        num_workers: DataLoader worker processes.
        p: share of training images replaced by a variant.
        on_device: augment whole batches in ``on_after_batch_transfer`` instead of in the workers.
    """

    def __init__(self, vae: vaeaug.VAE, batch_size: int = 64, num_workers: int = 2, p: float = 0.5,
                 on_device: bool = False) -> None:
        super().__init__()
        self.vae, self.batch_size, self.num_workers, self.p, self.on_device = vae, batch_size, num_workers, p, on_device
        self.device_aug: VAEAugment | None = None

    def setup(self, stage: str) -> None:
        x, y = digits_split("train")
        aug = VAEAugment(self.vae, p=self.p)
        self.train = DigitsSamples(x, y, None if self.on_device else aug)
        self.device_aug = aug if self.on_device else None

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        if self.device_aug is not None and self.trainer is not None and self.trainer.training:
            # the batch path: (N, 1, 8, 8) and (N,) labels, one model call, on the batch's device
            batch["image"], _ = self.device_aug(batch["image"], batch["label"])
        return batch


class DigitsClassifier(L.LightningModule):
    """A small MLP on 8x8 digits; keeps its training losses and the workers its batches came from."""

    def __init__(self, lr: float = 1e-2) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        self.lr = lr
        self.losses: list[float] = []
        self.workers: set[int] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x / 16.0)  # 0..16 -> 0..1

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = nn.functional.cross_entropy(self(batch["image"]), batch["label"])
        self.losses.append(float(loss.detach()))
        self.workers.update(batch["worker"].tolist())
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def main(model: vaeaug.VAE | None = None, steps: int = 60, on_device: bool = False,
         num_workers: int = 2) -> dict[str, Any]:
    """Fit the classifier for ``steps`` steps with augmented training data; test it on the test split.

    Args:
        model: a VAE fit on the digits (fit here, 2 epochs, class-conditional, if ``None``).
        steps: training steps.
        on_device: augment on the device (``on_after_batch_transfer``) instead of in the workers.
        num_workers: DataLoader worker processes.

    Returns:
        ``first_loss`` and ``last_loss`` (means of the first and last 5 steps), ``accuracy`` on
        the test split, ``steps`` run and ``workers`` (ids the batches came from).
    """
    if model is None:
        model = vaeaug.fit("digits", epochs=2, conditional=True, progress=False)
    L.seed_everything(0, workers=True, verbose=False)  # reproducible, and distinct draws per worker and rank
    dm = DigitsDataModule(model, on_device=on_device, num_workers=num_workers)
    clf = DigitsClassifier()
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(clf, datamodule=dm)
    x, y = digits_split("test")
    with torch.no_grad():
        accuracy = float((clf(x).argmax(1) == y).float().mean())
    return {"first_loss": sum(clf.losses[:5]) / 5, "last_loss": sum(clf.losses[-5:]) / 5, "accuracy": accuracy,
            "steps": len(clf.losses), "workers": sorted(clf.workers)}


if __name__ == "__main__":
    print(main())
    print(main(on_device=True))
