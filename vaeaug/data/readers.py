"""Readers of data held in files and Datasets: ``.npz`` files, image folders, map-style Datasets.

Each returns a :class:`~vaeaug.data.arrays.TensorData` in model space, or an error that says what
was expected, what came and how to fix it.
"""

from __future__ import annotations

import math
import os
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaeaug.core.values import check_values
from vaeaug.data.arrays import Layout, TensorData, from_arrays
from vaeaug.files import GiB, MiB, open_regular
from vaeaug.model.config import MAX_INPUT_ELEMENTS

__all__ = ["from_dataset", "from_npz", "from_image_folder", "read_image", "item_to_array", "pil_to_array",
           "worker_error", "MAX_NPZ_BYTES", "MAX_IMAGE_PIXELS", "MAX_IMAGE_FILE"]

# .npz: the arrays' declared size once decompressed, in all (the float32 model-space copy is 4x a
# uint8 array's size); np.savez writes x, y and class_names, so a handful of members
MAX_NPZ_BYTES = 16 * GiB
MAX_NPZ_MEMBERS = 64
# deflate cannot exceed ~1030-fold; real image data compresses 2-10-fold: beyond 500-fold a large
# member is (near) constant bytes, i.e. a decompression bomb rather than data
MAX_COMPRESSION_RATIO = 500
_BOMB_MIN_BYTES = 64 * MiB
# images: pixels declared by the header, checked before decoding (PIL's own limit is 89M and
# warns only); a sample of a VAE has at most MAX_INPUT_ELEMENTS values anyway
MAX_IMAGE_PIXELS = MAX_INPUT_ELEMENTS
MAX_IMAGE_FILE = 256 * MiB
# the formats of torchvision's IMG_EXTENSIONS; never EPS & co. (PIL runs Ghostscript for those)
_IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "PPM", "TIFF", "WEBP", "GIF")
# torchvision.datasets.folder.IMG_EXTENSIONS (importing torchvision for them takes seconds)
_IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_KIND_NAMES = {"uifb": "integers or floats", "US": "strings"}


def item_to_array(x: Any, index: int) -> tuple[np.ndarray, str | None]:
    """One dataset item as a numpy array and its per-sample layout hint."""
    from PIL import Image

    if isinstance(x, Image.Image):
        return pil_to_array(x, f"sample {index}"), "HWC"
    if isinstance(x, torch.Tensor):
        check_values(x, f"dataset sample {index}")
        x = x.detach().cpu()
        arr = (x.float() if x.dtype == torch.bfloat16 else x).numpy()  # numpy has no bfloat16
        # torchvision convention: tensors are (C, H, W)
        return arr, ("CHW" if arr.ndim == 3 else None)
    if isinstance(x, np.ndarray):
        check_values(x, f"dataset sample {index}")
        return x, None
    raise TypeError(
        f"dataset sample {index} is a {type(x).__name__}; expected a PIL image, tensor or "
        "numpy array (or a tuple (x, y) of those)"
    )


def pil_to_array(img: Any, what: str) -> np.ndarray:
    """A PIL image as a ``(H, W)`` or ``(H, W, C)`` array in ``L``, ``RGB`` or ``RGBA`` (palettes expanded)."""
    if img.mode == "1":
        img = img.convert("L")
    elif img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode not in ("L", "RGB", "RGBA"):
        raise ValueError(
            f"{what} has PIL mode {img.mode!r}; expected L, RGB or RGBA (8-bit) - convert the "
            "images first, e.g. img.convert('RGB')"
        )
    return np.asarray(img)


def from_dataset(ds: Any, *, layout: Layout | None, value_range: Any) -> TensorData:
    """Every item of a map-style ``Dataset`` (image or ``(image, label)``) read into one :class:`TensorData`."""
    n = len(ds)
    if n == 0:
        raise ValueError("the dataset is empty; expected at least one sample")
    xs: list[np.ndarray] = []
    ys: list[int] = []
    has_labels: bool | None = None
    hint: str | None = None
    for i in range(n):
        item = ds[i]
        if isinstance(item, (tuple, list)) and len(item) == 1:
            item = item[0]  # e.g. TensorDataset(x) yields (x,)
        labelled = isinstance(item, (tuple, list)) and len(item) == 2
        if has_labels is None:
            has_labels = labelled
        elif labelled != has_labels:
            raise ValueError(
                f"dataset sample {i} is {'(x, y)' if labelled else 'x'} but sample 0 was "
                f"{'(x, y)' if has_labels else 'x'}; every sample must have the same form"
            )
        x = item[0] if labelled else item
        arr, h = item_to_array(x, i)
        if i == 0:
            hint = h
        elif arr.shape != xs[0].shape or arr.dtype != xs[0].dtype:
            raise ValueError(
                f"dataset sample {i} has shape {arr.shape} and dtype {arr.dtype} but sample 0 "
                f"has {xs[0].shape} and {xs[0].dtype}; all samples must match - resize them "
                "first (e.g. v2.Resize) or convert them to one dtype"
            )
        xs.append(arr)
        if labelled:
            ys.append(_label_to_int(item[1], i))
    batch = np.stack(xs)
    if layout is None and batch.ndim == 4:
        layout = {"HWC": "NHWC", "CHW": "NCHW"}.get(hint or "")  # type: ignore[assignment]
    return from_arrays(batch, ys if has_labels else None, layout=layout,
                       value_range=value_range, class_names=getattr(ds, "classes", None),
                       source=type(ds).__name__)


def _label_to_int(label: Any, index: int) -> int:
    check_values(label, f"the label of dataset sample {index}")
    if isinstance(label, torch.Tensor):
        if label.numel() != 1:
            raise ValueError(f"label of dataset sample {index} must be a scalar; got {tuple(label.shape)}")
        label = label.item()
    if isinstance(label, (np.integer, np.floating)):
        label = label.item()
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    if not isinstance(label, int) or isinstance(label, bool):
        raise ValueError(f"label of dataset sample {index} must be an integer; got {label!r}")
    return label


def from_npz(path: Path, *, layout: Layout | None, value_range: Any) -> TensorData:
    """Read arrays ``x`` (and ``y``, ``class_names``) from a ``.npz`` file, bounded and without unpickling."""
    where = repr(str(path))
    with open_regular(path, ".npz file", max_bytes=MAX_NPZ_BYTES) as f:
        try:
            zf = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise ValueError(f"cannot read {where} as a .npz file: it is not a zip archive (np.savez writes one): "
                             f"{e}") from None
        with zf:
            members = _npz_members(zf, where)
            keys = list(members)
            if "x" not in members:
                raise ValueError(
                    f"{where} holds arrays {keys[:20]}; expected an array named 'x' (and "
                    "optionally 'y') - save with np.savez(path, x=images, y=labels)"
                )
            x = _npz_array(zf, members["x"], where, "x", "uifb")
            y = _npz_array(zf, members["y"], where, "y", "uifb") if "y" in members else None
            names = None
            if "class_names" in members:
                arr = _npz_array(zf, members["class_names"], where, "class_names", "US")
                names = [s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s) for s in arr.reshape(-1)]
    return from_arrays(x, y, layout=layout, value_range=value_range,
                       class_names=names, source=path.name)


def _npz_members(zf: zipfile.ZipFile, where: str) -> dict[str, zipfile.ZipInfo]:
    """The ``.npy`` members by key, each checked before a byte is decompressed: declared sizes within
    :data:`MAX_NPZ_BYTES` in all, stored or deflated only (np.savez / np.savez_compressed), no bomb."""
    infos = zf.infolist()
    if len(infos) > MAX_NPZ_MEMBERS:
        raise ValueError(f"{where} holds {len(infos)} members, more than the {MAX_NPZ_MEMBERS} a .npz of "
                         "arrays x, y, class_names needs")
    total = sum(i.file_size for i in infos)
    if total > MAX_NPZ_BYTES:
        raise ValueError(f"{where} declares {total} bytes of arrays once decompressed, more than the "
                         f"{MAX_NPZ_BYTES} vaeaug reads from a .npz (a decompression bomb, or data to split)")
    out: dict[str, zipfile.ZipInfo] = {}
    for i in infos:
        name = i.filename[:-4] if i.filename.endswith(".npy") else i.filename
        if i.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or i.flag_bits & 0x1:
            raise ValueError(f"{where}: member {i.filename[:100]!r} is encrypted or compressed with method "
                             f"{i.compress_type}; expected a .npz from np.savez or np.savez_compressed")
        ratio = i.file_size / max(i.compress_size, 1)
        if i.file_size > _BOMB_MIN_BYTES and ratio > MAX_COMPRESSION_RATIO:
            raise ValueError(f"{where}: member {i.filename[:100]!r} expands {ratio:.0f}-fold to {i.file_size} bytes "
                             f"(more than {MAX_COMPRESSION_RATIO}-fold: a decompression bomb?); save the arrays "
                             "with np.savez")
        out[name] = i
    return out


def _npz_array(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, key: str, kinds: str) -> np.ndarray:
    """One ``.npy`` member: its header must declare exactly the bytes the member holds, of a plain dtype."""
    try:
        with zf.open(info) as m:
            version = np.lib.format.read_magic(m)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(m)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(m)
            else:
                raise ValueError(f"{where}: array {key!r} has .npy format version {version}; expected 1.0 or 2.0 "
                                 "(np.savez writes those)")
            if dtype.hasobject:
                raise ValueError(
                    f"{where} holds object arrays ({key!r}), which would need unpickling; vaeaug never "
                    "unpickles - save plain numeric arrays"
                )
            if dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
                raise ValueError(f"{where}: array {key!r} has dtype {dtype}; expected "
                                 f"{_KIND_NAMES[kinds]} - save it as such")
            need = math.prod(shape) * dtype.itemsize
            if need != info.file_size - m.tell():
                raise ValueError(f"{where}: array {key!r} declares shape {shape} of {dtype} ({need} bytes) but its "
                                 f"member holds {info.file_size - m.tell()} bytes; the file is corrupt or was edited")
        with zf.open(info) as m:  # sizes agree: reading allocates exactly what was checked
            arr = np.lib.format.read_array(m, allow_pickle=False)
    except ValueError as e:
        if str(e).startswith(where):
            raise
        raise ValueError(f"cannot read {where} as a .npz file (corrupt?): array {key!r}: {e}") from None
    except (OSError, EOFError, zipfile.BadZipFile, RuntimeError, zlib.error) as e:
        raise ValueError(f"cannot read {where} as a .npz file (corrupt?): array {key!r}: {e}") from None
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _scan_folder(top: str) -> list[str]:
    """Every file under ``top`` (symlinks followed, each folder read once: no loop), in ImageFolder's order."""
    found: list[tuple[str, list[str]]] = []
    seen: set[tuple[int, int]] = set()
    stack = [top]
    while stack:
        d = stack.pop()
        try:
            st = os.stat(d)
            if (st.st_dev, st.st_ino) in seen:  # a symlink loop, or a second link to a folder
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(d) as it:
                entries = list(it)
        except PermissionError:
            raise ValueError(f"cannot list the folder {d!r}: permission denied; check its permissions") from None
        except OSError as e:
            raise ValueError(f"cannot list the folder {d!r}: {e.strerror or e}") from None
        files = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                stack.append(entry.path)
            else:
                files.append(entry.name)
        found.append((d, files))
    return [os.path.join(d, name) for d, files in sorted(found) for name in sorted(files)]


def _image_files(path: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Classes and ``(file, class index)`` in torchvision ImageFolder's layout and order."""
    try:
        with os.scandir(path) as it:
            classes = sorted(e.name for e in it if e.is_dir())
    except PermissionError:
        raise ValueError(f"cannot list the folder {str(path)!r}: permission denied; check its permissions") from None
    layout = "expected one sub-folder per class holding image files (torchvision ImageFolder layout)"
    if not classes:
        raise ValueError(f"{str(path)!r} is not an image folder: it has no class sub-folders - {layout}")
    samples: list[tuple[str, int]] = []
    empty = []
    for k, c in enumerate(classes):
        files = [f for f in _scan_folder(os.path.join(str(path), c)) if f.lower().endswith(_IMG_EXTENSIONS)]
        if not files:
            empty.append(c)
        samples += [(f, k) for f in files]
    if empty:
        raise ValueError(f"{str(path)!r} is not an image folder: no image file ({', '.join(_IMG_EXTENSIONS)}) in "
                         f"the class folders {empty[:10]} - {layout}")
    return classes, samples


def read_image(file: str) -> np.ndarray:
    """One image file as an array: a regular file, a known format, a bounded size checked before decoding."""
    from PIL import Image

    what = f"image {file!r}"
    with open_regular(file, "image file", max_bytes=MAX_IMAGE_FILE) as f, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(f, formats=_IMAGE_FORMATS)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise ValueError(f"{what} is too large to decode ({e}); vaeaug reads images of at most "
                             f"{MAX_IMAGE_PIXELS} pixels - a decompression bomb, or downscale it first") from None
        except Exception as e:  # PIL raises many types on hostile bytes; every one is "not an image"
            raise ValueError(f"cannot read {what}: {e} (expected one of {', '.join(_IMAGE_FORMATS)})") from None
        with img:
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ValueError(f"{what} declares {w}x{h} pixels, more than the {MAX_IMAGE_PIXELS} vaeaug reads "
                                 "(a decompression bomb, or an image far too large for a VAE) - downscale it first")
            try:
                img.load()
            except Exception as e:
                raise ValueError(f"cannot read {what}: {type(e).__name__}: {e} (is it truncated or corrupt?)") from None
            return pil_to_array(img, what)


def worker_error(e: BaseException) -> BaseException:
    """The error a DataLoader worker raised, with its own one-line message; any other error unchanged.

    A worker's error reaches the main process as ``Caught ValueError in DataLoader worker process 0.``
    followed by the worker's traceback; the reader's message (what is wrong, with which file) is the
    traceback's last line.

    Example:
        >>> str(worker_error(ValueError("Caught ValueError in DataLoader worker process 0.\\nOriginal Traceback "
        ...                             "(most recent call last):\\n  ...\\nValueError: 'a.png' is a FIFO")))
        "'a.png' is a FIFO"
    """
    text = str(e)
    if not (text.startswith("Caught ") and "\nOriginal Traceback" in text):
        return e
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    head, sep, message = last.partition(": ")
    try:
        return type(e)(message if sep and head.split(".")[-1].endswith(("Error", "Exception")) else last)
    except Exception:  # a type that takes other arguments: the message, as a RuntimeError
        return RuntimeError(message or last)


def from_image_folder(path: Path) -> TensorData:
    """An image folder (one subfolder per class), every file through :func:`read_image`."""
    classes, samples = _image_files(path)
    xs: list[np.ndarray] = []
    for file, _ in samples:
        arr = read_image(file)
        if xs and arr.shape != xs[0].shape:
            raise ValueError(
                f"image {file!r} has shape {arr.shape} but {samples[0][0]!r} has {xs[0].shape}; "
                "all images must have the same size and channels - resize or convert them first"
            )
        xs.append(arr)
    batch = np.stack(xs)
    return from_arrays(batch, [c for _, c in samples], layout="NHWC" if batch.ndim == 4 else None,
                       class_names=classes, source=path.name)
