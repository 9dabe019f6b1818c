"""Hugging Face ``datasets``: VAEAugment on the fly (``with_transform``) and pre-generated (``map``).

    python examples/recipes/hf_datasets.py

``datasets`` hands ``with_transform`` and ``map(batched=True)`` a batch as a dict of lists,
``{"image": [PIL, ...], "label": [3, ...], "idx": [0, ...]}``; ``VAEAugment`` takes that dict
as it is and returns a dict of the same keys and lengths, with only the images replaced.
"""

from __future__ import annotations

from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader, get_worker_info
from torchvision.transforms import v2

import vaeaug
from vaeaug import VAEAugment


def digits_dataset(n: int = 256) -> datasets.Dataset:
    """The first ``n`` digits as a ``datasets.Dataset``: an ``Image`` column (8x8 grayscale), a
    ``ClassLabel`` column and an ``idx`` column.

    Args:
        n: number of rows.

    Returns:
        The dataset (in memory).
    """
    d = vaeaug.load_builtin("digits")
    assert d.y is not None  # the digits come with labels
    images = (d.x[:n, 0].numpy() * 255).round().astype(np.uint8)  # (n, 8, 8) uint8
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10),
                                  "idx": datasets.Value("int64")})
    # numpy arrays go into an Image column (stored as PNG): with_transform then gets PIL images.
    # A plain array column would reach with_transform as nested Python lists, which VAEAugment refuses.
    return datasets.Dataset.from_dict({"image": list(images), "label": d.y[:n].tolist(), "idx": list(range(n))},
                                      features=features)


def tag_worker(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Add a ``worker`` column: the DataLoader worker that made each row (-1 in the main process).

    Args:
        batch: a dict-of-lists batch.

    Returns:
        The batch with a ``worker`` column.
    """
    info = get_worker_info()
    return {**batch, "worker": [-1 if info is None else info.id] * len(batch["idx"])}


def add_variants(batch: dict[str, list[Any]], aug: VAEAugment, k: int) -> dict[str, list[Any]]:
    """``map(batched=True)`` function: the real rows, then ``k`` variants of each, with ``synthetic`` flags.

    Args:
        batch: a dict-of-lists batch (``datasets``' ``LazyBatch``).
        aug: a ``VAEAugment`` with ``p=1.0`` (every row is replaced).
        k: variants per real row.

    Returns:
        A batch of ``(k + 1) * n`` rows: every column, and ``synthetic`` (``False`` for the real rows).
    """
    n = len(batch["image"])
    out = {key: list(values) for key, values in batch.items()}
    out["synthetic"] = [False] * n
    for _ in range(k):
        made = aug(batch)  # each call: a new draw for every row
        for key in batch:
            out[key] += made[key]
        out["synthetic"] += [True] * n
    return out


def main(model: vaeaug.VAE | None = None, n: int = 256, k: int = 2, workers: int = 2) -> dict[str, Any]:
    """Iterate augmented batches through a 2-worker DataLoader, then pre-generate ``k`` variants per row.

    Args:
        model: a class-conditional VAE fit on the digits (fit here, 2 epochs, if ``None``).
        n: rows of the dataset.
        k: variants per row in the pre-generated set.
        workers: DataLoader worker processes.

    Returns:
        ``batch_shape``, ``batch_dtype``, ``workers`` (ids seen), ``changed`` (share of images that
        differ from their originals), ``labels_kept``, and the pre-generated set's ``rows``,
        ``synthetic`` and ``real`` counts, ``synthetic_changed`` and ``pregen_labels_kept``.
    """
    if model is None:
        model = vaeaug.fit("digits", epochs=2, conditional=True, progress=False)
    ds = digits_dataset(n)

    # 1. On the fly: VAEAugment first (it reads the label column; 'idx' is an integer column too,
    #    so label_key says which one is the label), then the usual conversion to float tensors.
    train = ds.with_transform(v2.Compose([
        VAEAugment(model, p=1.0, label_key="label"),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        tag_worker,
    ]))
    torch.manual_seed(0)
    loader = DataLoader(train, batch_size=32, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    originals = torch.stack([v2.functional.to_dtype(v2.functional.to_image(img), torch.float32, scale=True)
                             for img in ds["image"]])
    seen, changed, total, labels_kept, shape, dtype = set(), 0, 0, True, None, None
    for batch in loader:  # {"image": (32, 1, 8, 8) float, "label": (32,), "idx": (32,), "worker": (32,)}
        shape, dtype = tuple(batch["image"].shape), str(batch["image"].dtype)
        seen.update(batch["worker"].tolist())
        orig = originals[batch["idx"]]
        changed += int((batch["image"] != orig).flatten(1).any(1).sum())
        total += len(orig)
        labels_kept &= bool((batch["label"] == torch.tensor(ds["label"])[batch["idx"]]).all())

    # 2. Pre-generated: k variants of every row, in a new dataset with a 'synthetic' column.
    features = ds.features.copy()
    features["synthetic"] = datasets.Value("bool")
    pregen = ds.map(add_variants, batched=True, batch_size=64, features=features,
                    fn_kwargs={"aug": VAEAugment(model, p=1.0, seed=0, label_key="label"), "k": k},
                    new_fingerprint=f"vaeaug-variants-k{k}-seed0")  # skips hashing the model
    flags = np.array(pregen["synthetic"])
    pregen_images = np.stack([np.asarray(img) for img in pregen["image"]])
    real_images = np.stack([np.asarray(img) for img in ds["image"]])
    source = np.array(pregen["idx"])  # a variant keeps the idx of the row it was made from
    syn_changed = (pregen_images[flags] != real_images[source[flags]]).reshape(int(flags.sum()), -1).any(1)
    return {
        "batch_shape": shape, "batch_dtype": dtype, "workers": sorted(seen),
        "changed": changed / total, "labels_kept": labels_kept,
        "rows": len(pregen), "synthetic": int(flags.sum()), "real": int((~flags).sum()),
        "synthetic_changed": float(syn_changed.mean()),
        "pregen_labels_kept": bool((np.array(pregen["label"]) == np.array(ds["label"])[source]).all()),
    }


if __name__ == "__main__":
    print(main())
