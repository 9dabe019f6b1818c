"""Fitting from data that does not fit in memory: a Dataset read through DataLoader workers.

``vaeaug.fit(data, stream=True, num_workers=N)`` keeps ``data`` where it is (an image folder, a
:class:`~vaeaug.GeneratedDataset`, any map-style Dataset) and reads each batch through a
``DataLoader`` whose workers decode and convert the samples to model space. Only the first sample
is read up front, for the shape and the value range; labels come from ``targets`` / ``classes``
where the dataset has them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaeaug.core.values import ValueRange
from vaeaug.data.readers import item_to_array, read_image, worker_error
from vaeaug.generated.reader import GeneratedDataset

__all__ = ["StreamData", "open_stream", "StreamBatches"]


def _as_chw(x: Any, index: int) -> np.ndarray:
    """One item's image as a ``(C, H, W)`` numpy array (PIL and HWC arrays transposed)."""
    arr, hint = item_to_array(x, index)
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3 and hint != "CHW" and arr.shape[-1] in (1, 3, 4) and arr.shape[0] not in (1, 3, 4):
        return arr.transpose(2, 0, 1)
    if arr.ndim == 3 and hint == "HWC":
        return arr.transpose(2, 0, 1)
    if arr.ndim != 3:
        raise ValueError(f"dataset sample {index} has shape {arr.shape}; expected an image (H, W), (C, H, W) "
                         "or (H, W, C)")
    return arr


@dataclass
class StreamData:
    """A dataset read lazily, with what the model needs to know about it."""

    dataset: Any
    shape: tuple[int, int, int]
    value_range: ValueRange
    labels: np.ndarray | None
    class_names: list[str] | None
    source: str

    def __len__(self) -> int:
        return len(self.dataset)


def open_stream(data: Any, value_range: tuple[float, float] | None = None) -> StreamData:
    """Wrap ``data`` for streaming: a Dataset, an image folder path, or a generated-set folder.

    Args:
        data: a map-style Dataset yielding ``x`` or ``(x, y)``; a folder in ``ImageFolder`` layout;
            or a folder written by :func:`vaeaug.pregenerate`.
        value_range: ``(low, high)`` of float images (uint8 is read as 0..255; a generated set
            knows its own range).

    Returns:
        The wrapped data.
    """
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if (path / "manifest.json").is_file():
            data = GeneratedDataset(path)
        elif path.is_dir():
            from torchvision.datasets import ImageFolder

            data = ImageFolder(str(path), loader=read_image)  # modes kept: L stays 1 channel, as in memory
        else:
            raise ValueError(f"stream=True reads a Dataset, an image folder or a generated set; {path} is neither")
    if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise TypeError("stream=True needs a map-style Dataset (with __len__ and __getitem__); got "
                        f"{type(data).__name__}")
    if len(data) == 0:
        raise ValueError("the dataset is empty; expected at least one sample")
    item = data[0]
    x0 = item[0] if isinstance(item, (tuple, list)) else item
    arr = _as_chw(x0, 0)
    shape = tuple(int(s) for s in arr.shape)
    if arr.dtype == np.uint8:
        vr = ValueRange(0.0, 255.0, "uint8")
    elif getattr(data, "value_range", None) is not None:
        vr = data.value_range
    elif value_range is not None:
        vr = ValueRange(float(value_range[0]), float(value_range[1]), str(arr.dtype))
    elif arr.dtype.kind == "f":
        vr = ValueRange(0.0, 1.0, str(arr.dtype))  # checked batch by batch: values outside are an error
    else:
        raise ValueError(f"dataset images are {arr.dtype}; pass value_range=(low, high) to read them")
    labels = getattr(data, "targets", None)
    labels = None if labels is None else np.asarray(labels, dtype=np.int64)
    names = getattr(data, "classes", None) or getattr(data, "class_names", None)
    return StreamData(data, (shape[0], shape[1], shape[2]), vr, labels, list(names) if names else None,
                      type(data).__name__)


class _Collate:
    """Items -> a model-space batch ``(x float32 (N, C, H, W), y int64 or None)``; runs in the workers."""

    def __init__(self, shape: tuple[int, ...], low: float, high: float, labelled: bool) -> None:
        self.shape, self.low, self.high, self.labelled = shape, low, high, labelled

    def __call__(self, items: list[tuple[int, Any]]) -> tuple[torch.Tensor, torch.Tensor | None]:
        xs, ys = [], []
        for index, item in items:
            x = item[0] if isinstance(item, (tuple, list)) else item
            arr = _as_chw(x, index)
            if arr.shape != self.shape:
                raise ValueError(f"dataset sample {index} has shape {arr.shape} but sample 0 has {self.shape}; "
                                 "resize the images to one size first")
            xs.append(arr)
            if self.labelled:
                ys.append(int(item[1]))
        batch = np.stack(xs).astype(np.float32)
        if not np.isfinite(batch).all():
            raise ValueError("a batch holds NaN or Inf values; expected finite numbers")
        x = (batch - np.float32(self.low)) / np.float32(self.high - self.low)
        if x.size and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
            raise ValueError(f"dataset values leave the range [{self.low:g}, {self.high:g}]; pass "
                             "value_range=(low, high) covering them (nothing is clipped)")
        return torch.from_numpy(x), (torch.tensor(ys, dtype=torch.long) if self.labelled else None)


class _Indexed(torch.utils.data.Dataset):
    """``(index, item)`` pairs of a subset, so that errors name the original index."""

    def __init__(self, dataset: Any, indices: torch.Tensor) -> None:
        self.dataset, self.indices = dataset, indices.tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        j = self.indices[i]
        return j, self.dataset[j]


class StreamBatches:
    """Training and validation batches read through DataLoader workers (the streaming path of fit)."""

    def __init__(self, data: StreamData, tr_idx: torch.Tensor, va_idx: torch.Tensor, device: torch.device,
                 conditional: bool, mem: torch.memory_format, g_cpu: torch.Generator, sampler: Any, *,
                 batch_size: int, num_workers: int) -> None:
        collate = _Collate(data.shape, data.value_range.low, data.value_range.high, conditional)
        self.device, self.mem = device, mem
        self.n_train, self.n_val = len(tr_idx), len(va_idx)
        train = _Indexed(data.dataset, tr_idx)
        if sampler is not None:  # DDP: DistributedSampler over the training positions
            self._sampler = sampler
            self.n_local = len(sampler)
            order: Any = sampler
        else:
            self._sampler = None
            self.n_local = self.n_train
            order = torch.utils.data.RandomSampler(train, generator=g_cpu)
        kw: dict[str, Any] = {"num_workers": num_workers, "collate_fn": collate,
                              "persistent_workers": num_workers > 0, "pin_memory": device.type == "cuda"}
        self._train = torch.utils.data.DataLoader(train, batch_size=batch_size, sampler=order, **kw)
        self._val = torch.utils.data.DataLoader(_Indexed(data.dataset, va_idx), batch_size=1024, shuffle=False,
                                                **kw) if self.n_val else None

    def _move(self, batch: tuple[torch.Tensor, torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, y = batch
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.mem)
        return x, (None if y is None else y.to(self.device, non_blocking=True))

    def train(self, epoch: int, batch_size: int) -> Any:
        if self._sampler is not None:
            self._sampler.set_epoch(epoch)
        yield from self._read(self._train)

    def val(self, batch_size: int) -> Any:
        if self._val is not None:
            yield from self._read(self._val)

    def _read(self, loader: Any) -> Any:
        """The batches of ``loader``, on the device; a worker's error keeps its own one-line message."""
        try:
            for batch in loader:
                yield self._move(batch)
        except (OSError, ValueError, TypeError, RuntimeError) as e:
            raise worker_error(e) from None
