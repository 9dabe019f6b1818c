# %% [markdown]
# # From a folder of images to "does it help, and by how much?"
#
# A tutorial in cells (jupytext "percent" format: `jupytext --to notebook examples/tutorial.py`
# makes a notebook of it, and VS Code or Spyder run the cells as they are). Or run it whole:
#
# ```bash
# python examples/tutorial.py                        # a few minutes on a laptop CPU
# VAEAUG_TUTORIAL_QUICK=1 python examples/tutorial.py   # under a minute: tiny budgets, noisy numbers
# ```
#
# It writes its pictures and reports to `tutorial-output/` (or `$VAEAUG_TUTORIAL_OUT`).
#
# The steps: a folder of labelled images (one sub-folder per class, as torchvision's `ImageFolder`
# reads it) -> fit a VAE on it -> look at what it makes -> put it into a `DataLoader` -> measure
# whether a classifier trained with it does better on held-out images, and by how much.

# %%
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2
from torchvision.utils import save_image

import vaeaug
import vaeaug.viz
from vaeaug.protocol.evaluation import report_markdown

QUICK = os.environ.get("VAEAUG_TUTORIAL_QUICK", "") not in ("", "0")
OUT = Path(os.environ.get("VAEAUG_TUTORIAL_OUT", "tutorial-output"))
OUT.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
print(f"vaeaug {vaeaug.__version__}; {'quick' if QUICK else 'full'} mode; writing to {OUT}/")

# %% [markdown]
# ## 1. Your folder of images
#
# Here we make one, so that the tutorial runs anywhere: scikit-learn's 1,797 digits (8x8 pixels)
# as grayscale PNGs, the first 1,437 in `train/`, the other 360 in `test/`, one sub-folder per
# class. With your own data, point `train_dir` and `test_dir` at your folders and skip this cell.
# Keep the test images apart from the start: they are what "does it help" is measured on.

# %%
root = Path(tempfile.mkdtemp(prefix="vaeaug-tutorial-"))
digits = load_digits()
images = (digits.images * (255 / 16)).round().astype(np.uint8)  # 0..16 -> 0..255
for i, (img, label) in enumerate(zip(images, digits.target, strict=True)):
    split = "train" if i < 1437 else "test"
    folder = root / split / f"digit-{label}"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img, mode="L").save(folder / f"{i:05d}.png")
train_dir, test_dir = root / "train", root / "test"
print(f"wrote {len(images)} PNGs under {root}")

# %% [markdown]
# ## 2. What vaeaug sees
#
# `as_tensor_data` reads the folder the way `fit` will: the class names from the sub-folders, the
# images as float32 in `[0, 1]`, and the value range (uint8, 0..255) to give variants back in.

# %%
data = vaeaug.as_tensor_data(train_dir)
print(data.summary())

# %% [markdown]
# ## 3. Fit a VAE
#
# Class-conditional, so that a variant is made for its own class. `fit` keeps the best model on a
# 10% validation split and stops early when it stops improving. The training curves are the first
# picture: the validation loss should fall and flatten, not rise.

# %%
model = vaeaug.fit(train_dir, conditional=True, epochs=20 if QUICK else 100, seed=0)
model.save(OUT / "digits.vae")
vaeaug.viz.curves(model.history).save(OUT / "curves.png")
print(f"saved {OUT / 'digits.vae'} and {OUT / 'curves.png'}")

# %% [markdown]
# ## 4. Look at what it makes
#
# One row per test image: the original, its reconstruction, then variants at increasing strength;
# below, new samples of each class, and a walk through latent space between two images. If the
# variants at strength 1 no longer look like their class, the augmentation will not help.

# %%
preview = vaeaug.viz.preview(model, test_dir)
preview.save(OUT / "preview.png")
print(f"wrote {OUT / 'preview.png'} ({preview.width}x{preview.height})")
preview  # noqa: B018 (the last expression of a cell: shown inline in a notebook)

# %% [markdown]
# ## 5. In a DataLoader
#
# Read the folder with torchvision as usual (`ImageFolder` opens images as RGB, and the model was
# fit on grayscale, hence `v2.Grayscale()`). A class-conditional model needs each image's label,
# and `ImageFolder`'s `transform` sees the image alone, so the variants are made where the labels
# are: on the collated batch (the *batch path*, one model call per batch), or by
# `VAEAugmentedDataset`, which serves every real image followed by `k` variants of it. (An
# unconditional model also works as a per-image transform: `v2.Compose([v2.Grayscale(),
# vaeaug.VAEAugment(path), ...])`.)

# %%
to_tensor = v2.Compose([v2.Grayscale(), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
train = ImageFolder(str(train_dir), transform=to_tensor)
loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True)
aug = vaeaug.VAEAugment(OUT / "digits.vae")  # the default setting: half of each batch replaced
for images, labels in loader:
    images, labels = aug(images, labels)  # floats in [0, 1] in, the same out
    break  # ... your training step here
print(f"a batch: {tuple(images.shape)} {images.dtype}")

k = 4
mixed = vaeaug.VAEAugmentedDataset(train, OUT / "digits.vae", variants_per_sample=k)
n = len(train)
pick = [i * (n // 8) for i in range(8)]  # 8 training images across the classes
originals = torch.stack([mixed[i][0] for i in pick])
variants = torch.stack([mixed[n + i * k + j][0] for j in range(k) for i in pick])  # variant j of image i
grid = torch.nn.functional.interpolate(torch.cat([originals, variants]), scale_factor=4)  # 8x8 is tiny
save_image(grid, OUT / "variants.png", nrow=8, padding=2, pad_value=1.0)
print(f"{len(mixed)} samples ({n} real + {n * k} variants); wrote {OUT / 'variants.png'} "
      f"(top row: 8 training images; below: {k} variants of each)")

# %% [markdown]
# ## 6. Does it help, and by how much?
#
# `vaeaug.evaluate` runs the protocol: per seed it draws a few images per class (a small training
# set, where augmentation matters), holds out a validation split, fits a VAE on the rest, trains
# the same small CNN with each arm (`none`, `classic` affine transforms, `vae`, `vae+classic`), and
# tests it on the test folder. The gains are *paired*: each arm minus `none` on the same seed, so
# the swing between seeds that all arms share cancels out.
#
# The quick mode trains for a fixed 100 steps on 2 seeds: its numbers are noise. The full mode
# trains every arm to convergence on 3 seeds; for a decision, use 5 seeds or more.

# %%
if QUICK:
    report = vaeaug.evaluate(str(train_dir), str(test_dir), per_class=10, seeds=2, steps=100, vae_epochs=10)
else:
    report = vaeaug.evaluate(str(train_dir), str(test_dir), per_class=20, seeds=3, vae_epochs=100)
(OUT / "report.md").write_text(report_markdown(report) + "\n")
print(report_markdown(report))
if vaeaug.viz.has_matplotlib():  # the paired gains per arm, with error bars and a dot per seed
    vaeaug.viz.gains_chart(report).save(OUT / "gains.png")

# %% [markdown]
# ## 7. The answer
#
# Read the paired gain and its spread together: a mean gain smaller than its standard deviation
# over seeds is not established ("Results" in the docs, docs/results.md, says more on reading
# these numbers). `vaeaug.tune(model, train_dir)` makes the choice (or says "off") by
# cross-validation on the training data alone, and stores it in the model.

# %%
for arm, g in report["gains"].items():
    per_seed = ", ".join(f"{v:+.2f}" for v in g["per_seed"])
    clear = abs(g["mean"]) > g["std"] and all(np.sign(v) == np.sign(g["mean"]) for v in g["per_seed"])
    verdict = ("helps" if g["mean"] > 0 else "hurts") if clear else "within the noise of these seeds"
    print(f"{arm:>12} vs none: {g['mean']:+.2f} ± {g['std']:.2f} points (per seed {per_seed}): {verdict}")
print(f"pictures and reports in {OUT}/: curves.png, preview.png, variants.png, report.md, gains.png")
