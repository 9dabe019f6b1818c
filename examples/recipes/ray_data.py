"""Ray Data: variants made by the ONNX export in Ray's workers, written as Parquet and WebDataset tar shards.

    pip install "vaeaug[ray,onnx]"
    python examples/recipes/ray_data.py                     # starts a local Ray cluster on this machine
    RAY_ADDRESS=auto python examples/recipes/ray_data.py    # the same code on a running cluster

Each input row is ``{"id", "image", "label"}``; ``VAEVariants`` turns it into the real row and
``k`` variants (``variant`` -1, 0..k-1; ``synthetic``), each a pure function of
``(seed, id, variant)``: byte for byte what ``vaeaug.pregenerate`` writes for the same arguments,
however Ray splits the rows between its workers.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray

import vaeaug
from vaeaug.ray import VAEVariants


def fashion_mnist(n: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` images of Fashion-MNIST's test split: uint8 ``(n, 28, 28)`` and int64 labels ``(n,)``.

    Args:
        n: number of images.

    Returns:
        ``(images, labels)``.
    """
    d = vaeaug.load_builtin("fashion-mnist", split="test")  # model space: float32 in [0, 1]
    assert d.y is not None  # Fashion-MNIST comes with labels
    images = (d.x[:n, 0].numpy() * 255).round().astype(np.uint8)
    return images, d.y[:n].numpy()


def main(model: str | os.PathLike[str] | None = None, n: int = 512, k: int = 2, workers: int = 2,
         out: str | os.PathLike[str] | None = None, batch_size: int = 64, webdataset: bool = True) -> dict[str, Any]:
    """Augment ``n`` Fashion-MNIST images in ``workers`` Ray workers; write Parquet (and WebDataset).

    Args:
        model: an ONNX export fit on Fashion-MNIST (28x28 grayscale); fit on the ``n`` images (1 epoch)
            and exported here if ``None``.
        n: number of source images.
        k: variants per image.
        workers: Ray actors, each with its own onnxruntime session (one thread).
        out: output folder (a new temporary folder if ``None``).
        batch_size: rows per ``map_batches`` call.
        webdataset: also write WebDataset tar shards.

    Returns:
        ``rows`` (real and variants), ``variants``, ``seconds`` (making them), ``variants_per_s``, ``parquet`` (folder),
        ``parquet_files``, ``webdataset`` (folder or ``None``), ``tar_files`` and ``model``.
    """
    images, labels = fashion_mnist(n)
    root = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="vaeaug-ray-"))
    root.mkdir(parents=True, exist_ok=True)
    if model is None:
        vae = vaeaug.fit(images, y=labels, epochs=1, progress=False)
        model = root / "fashion-mnist.onnx"
        vaeaug.export_onnx(vae, model)
    if not ray.is_initialized():
        ray.init()  # local, or the cluster named by RAY_ADDRESS: the same code either way
    ds = ray.data.from_items([{"id": i, "image": images[i], "label": int(labels[i])} for i in range(n)])
    t0 = time.perf_counter()
    variants = ds.map_batches(
        VAEVariants,
        fn_constructor_kwargs={"model": os.fspath(model), "variants_per_sample": k, "seed": 0},
        compute=ray.data.ActorPoolStrategy(size=workers),  # concurrency=workers before Ray 2.51
        batch_size=batch_size,
        batch_format="numpy",
    ).materialize()  # made once, written twice
    seconds = time.perf_counter() - t0
    variants.write_parquet(os.fspath(root / "parquet"))
    tar_dir = None
    if webdataset:

        def samples(batch: dict[str, np.ndarray]) -> dict[str, Any]:  # defined here: Ray ships it by value
            """Rows as WebDataset samples: a key, a PNG, the class, and a JSON record."""
            return {
                "__key__": np.array([f"{i:08d}_{v + 1:03d}" for i, v in zip(batch["id"], batch["variant"],
                                                                             strict=True)]),
                "png": batch["image"],  # Ray encodes each column by its name: uint8 (H, W) -> a PNG file
                "cls": batch["label"],
                "json": [{"id": int(i), "variant": int(v), "synthetic": bool(s)}
                         for i, v, s in zip(batch["id"], batch["variant"], batch["synthetic"], strict=True)],
            }

        tar_dir = root / "webdataset"
        variants.map_batches(samples, batch_format="numpy").write_webdataset(os.fspath(tar_dir))
    return {"rows": variants.count(), "variants": n * k, "seconds": seconds, "variants_per_s": n * k / seconds,
            "parquet": root / "parquet",
            "parquet_files": len(list((root / "parquet").glob("*.parquet"))), "webdataset": tar_dir,
            "tar_files": 0 if tar_dir is None else len(list(tar_dir.glob("*.tar"))), "model": Path(model)}


if __name__ == "__main__":
    print(main())
