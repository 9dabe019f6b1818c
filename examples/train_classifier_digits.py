"""Train a small CNN on scikit-learn's digits with ``VAEAugment`` inside the DataLoader.

    python examples/train_classifier_digits.py                  # fits a VAE, then trains
    python examples/train_classifier_digits.py --model artifacts/digits.vae
    python examples/train_classifier_digits.py --model artifacts/digits.vae --onnx artifacts/digits.onnx
    python examples/train_classifier_digits.py --quick          # a few seconds (CI runs this)

The dataset yields ``(float tensor (1, 8, 8) in 0..16, label)``: the digits' own value range,
which the model recorded when it was fit, so ``VAEAugment`` returns variants in that range too.
The script reports how many variants per second the augmentation made (measured on its own,
in this process) and the classifier's test accuracy with and without the augmentation. With
``--onnx`` (an export of the same model, ``vaeaug export``) the DataLoader workers run the ONNX
backend (numpy + onnxruntime, one thread each), and the one-image rate is reported for both.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import vaeaug


class Digits(Dataset):
    """(image (1, 8, 8) float in 0..16, label) with an optional transform on the pair."""

    def __init__(self, split: str, transform: nn.Module | None = None) -> None:
        d = vaeaug.load_builtin("digits", split=split)
        self.x = d.value_range.from_model(d.x).float()  # back to 0..16
        self.y = d.y
        self.transform = transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        sample = (self.x[i], int(self.y[i]))
        return self.transform(sample) if self.transform is not None else sample


def make_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def train_and_test(transform: nn.Module | None, steps: int, workers: int, seed: int) -> float:
    torch.manual_seed(seed)
    loader = DataLoader(Digits("train", transform), batch_size=64, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(seed), persistent_workers=workers > 0)
    model = make_cnn()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    done = 0
    while done < steps:
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x / 16.0), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    test = Digits("test")
    model.eval()
    with torch.no_grad():
        pred = model(test.x / 16.0).argmax(1)
    return float((pred == test.y).float().mean()) * 100


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a .vae file fit on digits (default: fit one now)")
    ap.add_argument("--onnx", default=None, help="its ONNX export: the workers use the onnxruntime backend")
    ap.add_argument("--steps", type=int, default=600, help="optimizer steps per classifier")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny run for CI")
    args = ap.parse_args()
    steps = 30 if args.quick else args.steps

    if args.model:
        model = vaeaug.load(args.model)
    else:
        model = vaeaug.fit("digits", epochs=3 if args.quick else 50, conditional=True, progress=not args.quick)
    # the model's tuned setting, else the measured default; in the workers, the ONNX export if given
    aug = vaeaug.VAEAugment(args.onnx if args.onnx else model)
    print(aug)

    # how fast it makes variants: one batched call on a collated batch, and one image at a time
    train = Digits("train")
    batch, labels = train.x[:256], train.y[:256]  # labels: a class-conditional model needs them
    torch.manual_seed(0)
    always = vaeaug.VAEAugment(model, p=1.0)
    t = time.perf_counter()
    for _ in range(5):
        always(batch, labels)
    batch_rate = 5 * len(batch) / (time.perf_counter() - t)
    always(batch[0], int(labels[0]))  # warm-up: the first call allocates
    t = time.perf_counter()
    for img, label in zip(batch[:200], labels[:200].tolist(), strict=True):
        always(img, label)
    single_rate = 200 / (time.perf_counter() - t)
    print(f"variants/s: {batch_rate:,.0f} batched (256 per call), {single_rate:,.0f} one image at a time")
    if args.onnx:
        fast = vaeaug.VAEAugment(args.onnx, p=1.0)
        fast(batch[0], int(labels[0]))  # warm-up: the first call opens the onnxruntime session
        t = time.perf_counter()
        for img, label in zip(batch[:200], labels[:200].tolist(), strict=True):
            fast(img, label)
        onnx_rate = 200 / (time.perf_counter() - t)
        print(f"variants/s one image at a time with the ONNX backend: {onnx_rate:,.0f} "
              f"({onnx_rate / single_rate:.1f}x torch)")

    plain = train_and_test(None, steps, args.workers, seed=0)
    augmented = train_and_test(aug, steps, args.workers, seed=0)
    print(f"test accuracy after {steps} steps: none {plain:.2f}%, VAEAugment(p={aug.p:g}) {augmented:.2f}% "
          f"({augmented - plain:+.2f} points from one seed: a first look, not a verdict; `vaeaug evaluate` runs "
          "the multi-seed protocol with paired gains, docs/evaluate.md)")


if __name__ == "__main__":
    main()
