"""Fit a class-conditional VAE on a built-in dataset, save it, reload it, and write a preview grid.

    python examples/fit_and_sample.py                       # digits, a few seconds
    python examples/fit_and_sample.py --data fashion-mnist --epochs 10

The grid has one row per class: real images, their reconstructions, then posterior variants
``D(mu + sigma * eps)`` and new prior samples of that class.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torchvision.utils import save_image

import vaeaug


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="digits")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--out", default="artifacts")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    data = vaeaug.load_builtin(args.data)
    model = vaeaug.fit(data, epochs=args.epochs, conditional=True, seed=0)
    path = out / f"{args.data}-conditional.vae"
    model.save(path)
    model = vaeaug.load(path)

    g = torch.Generator().manual_seed(0)
    rows = []
    for k in range(model.config.num_classes or 0):
        real = data.x[data.y == k][:4]
        y = torch.full((len(real),), k)
        mu, logvar = model.encode(real, y)
        with torch.no_grad():
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=g)
            rows.append(torch.cat([real, model.reconstruct(real, y), model.decode(z, y),
                                   model.sample(4, y=k, generator=g)]))
    grid = out / f"{args.data}-preview.png"
    save_image(torch.cat(rows), grid, nrow=16, pad_value=1.0)
    print(f"saved {path} and {grid}")


if __name__ == "__main__":
    main()
