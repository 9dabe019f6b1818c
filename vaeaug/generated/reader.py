"""Reading a generated set: :class:`GeneratedDataset` (formats ``"shards"`` and ``"webdataset"``) and
:func:`verify_generated`, the full read that checks every byte (``vaeaug verify``); the format is
:mod:`vaeaug.generated.format`, the tars of a webdataset set :mod:`vaeaug.generated.tars`.

Never edit a set in use: its image shards are memory-mapped, and a shard truncated or rewritten in place
while a process reads it can end that process with ``SIGBUS`` (the operating system's, not vaeaug's).
Write a new set to a new folder and switch to it instead.
"""

from __future__ import annotations

import bisect
import functools
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaeaug.core.values import ValueRange, short_repr
from vaeaug.files import FileId, MiB, open_regular, read_json, sha256_file
from vaeaug.generated.format import MAX_COUNT, PNG_NAME, Schema, class_key, read_manifest
from vaeaug.generated.shards import MAX_NPY_HEADER, META_DTYPE, check_npy, map_images, read_meta
from vaeaug.generated.tars import Payload, TarImages, TarIndex, index_tar, png_payload

__all__ = ["GeneratedDataset", "verify_generated", "check_meta", "check_file", "marker_images", "payload_of",
           "tar_meta"]


def check_meta(meta: np.ndarray, manifest: dict[str, Any], root: Path, chunk: int = 1 << 20) -> None:
    """Every sample's source, variant, flag and label as the layout and the manifest's counts say
    (in chunks: the temporaries stay small whatever the set's size)."""
    args, data = manifest["arguments"], manifest["data"]
    r = int(args["include_real"])
    per = args["variants_per_sample"] + r
    names, labelled = data["class_names"], data["labelled"]
    fix = f"run vaeaug verify {root}, and regenerate the set"
    counts: dict[str, int] = {}
    for lo in range(0, len(meta), chunk):
        part = meta[lo:lo + chunk]
        s = np.arange(lo, lo + len(part), dtype=np.int64)
        variant = s % per - r
        if not (np.array_equal(part["source"], s // per) and np.array_equal(part["variant"], variant)
                and np.array_equal(part["synthetic"], variant >= 0)):
            raise ValueError(f"the label files of {root} do not follow the set's layout (source, variant and "
                             f"synthetic flag of each sample); {fix}")
        y = part["y"]
        if labelled:  # in range, and the same for every sample of a source
            bad = bool((y < 0).any()) or (names is not None and int(y.max()) >= len(names))
            bad = bad or not np.array_equal(y, meta["y"][s - s % per])
        else:
            bad = bool((y != -1).any())
        if bad:
            raise ValueError(f"the labels in {root} do not match its manifest (out of range, or not the same for "
                             f"every variant of a source); {fix}")
        labels, n = np.unique(y, return_counts=True)
        for label, c in zip(labels.tolist(), n.tolist(), strict=True):
            key = class_key(label, names)
            counts[key] = counts.get(key, 0) + c
    if counts != manifest["counts"]["per_class"]:
        raise ValueError(f"the labels in {root} do not match its manifest: per-class counts {short_repr(counts)}, the "
                         f"manifest says {short_repr(manifest['counts']['per_class'])}; {fix}")


def check_file(out: Path, entry: dict[str, Any], shard: int) -> list[str]:
    """A file's size and SHA-256 against its manifest entry: [] or one problem."""
    name = entry["name"]
    try:
        with open_regular(out / name, "generated-set file") as f:
            size = os.fstat(f.fileno()).st_size
        if size != entry["bytes"]:
            return [f"shard {shard}: {name} is corrupt ({size} bytes, the manifest says {entry['bytes']})"]
        digest = sha256_file(out / name, "generated-set file")
    except FileNotFoundError:
        return [f"shard {shard}: {name} is missing"]
    except ValueError as e:
        return [f"shard {shard}: {e}"]
    if digest != entry["sha256"]:
        return [f"shard {shard}: {name} is corrupt (SHA-256 differs from the manifest)"]
    return []


def marker_images(out: Path, shard: dict[str, Any], manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The PNG entries of an image-folder shard's record (already checked against its SHA-256)."""
    first, count = shard["first"], shard["count"]
    s = Schema(f"{out / shard['marker']['name']}", "regenerate the set")
    record = s.obj(read_json(out / shard["marker"]["name"], "shard record", max_bytes=shard["marker"]["bytes"]),
                   "the record")
    images = record.get("images")
    if not isinstance(images, list) or len(images) != count:
        s.fail("images", f"a list of {count} entries", images)
    args, data = manifest["arguments"], manifest["data"]
    r = int(args["include_real"])
    per = args["variants_per_sample"] + r
    for j, image in enumerate(images):
        field, sample = f"images[{j}]", first + j
        also = ("y", "source", "variant")
        entry = s.obj(image, field, frozenset(("name", "bytes", "sha256", *also)))
        y = s.integer(entry["y"], f"{field}.y", 0 if data["labelled"] else -1, MAX_COUNT if data["labelled"] else -1)
        s.equal(entry["source"], f"{field}.source", sample // per)
        s.equal(entry["variant"], f"{field}.variant", sample % per - r)
        name = f"{class_key(y, data['class_names'])}/{sample:08d}.png"
        if not PNG_NAME.fullmatch(name):
            s.fail(f"{field}.name", "a safe relative name class/00000000.png", name)
        s.file(entry, field, name, also=also)
    return images


def verify_generated(out_dir: str | os.PathLike[str]) -> list[str]:
    """Check a generated set: its manifest (schema, own SHA-256, ``run.json``), every file's size and
    SHA-256 as recorded when it was written, every ``.npy`` header, the labels against the layout, and
    that every value of a float set is finite.

    Returns:
        The problems found (empty when the set is complete and intact).

    Example:
        >>> verify_generated("/no/such/folder")[0].startswith("no generated set")
        True
    """
    out = Path(out_dir)
    try:
        manifest = read_manifest(out)
    except (OSError, ValueError) as e:
        return [str(e)]
    problems: list[str] = []
    if manifest["arguments"]["format"] == "webdataset":
        return _verify_tars(out, manifest)
    if manifest["arguments"]["format"] != "shards":
        for shard in manifest["shards"]:
            i = shard["index"]
            found = check_file(out, shard["marker"], i)
            if not found:
                try:
                    for image in marker_images(out, shard, manifest):
                        found += check_file(out, image, i)
                except (OSError, ValueError) as e:
                    found.append(f"shard {i}: {e}")
            problems += found
        return problems
    dtype, sample_shape = np.dtype(manifest["data"]["value_range"]["dtype"]), tuple(manifest["data"]["shape"])
    metas: list[np.ndarray] = []
    for shard in manifest["shards"]:
        i = shard["index"]
        problems += check_file(out, shard["marker"], i)
        for key in ("x", "meta"):
            found = check_file(out, shard["files"][key], i)
            if not found:  # the bytes are as written: now their header, and the labels' content
                try:
                    if key == "x":  # its header and size, and (float) every value finite; the map is dropped
                        found += _nonfinite(map_images(out, shard, dtype, sample_shape)[0], shard)
                    else:
                        metas.append(read_meta(out, shard))
                except ValueError as e:
                    found.append(f"shard {i}: {e}")
            problems += found
    return problems + _set_labels(metas, manifest, out)


def _set_labels(metas: list[np.ndarray], manifest: dict[str, Any], out: Path) -> list[str]:
    """The whole set's labels against the manifest's counts, once every shard's were read; the problem, if any."""
    if len(metas) != len(manifest["shards"]):
        return []
    try:
        check_meta(np.concatenate(metas), manifest, out)
    except ValueError as e:
        return [str(e)]
    return []


def payload_of(manifest: dict[str, Any]) -> Payload:
    """How the image members of a webdataset set are checked and read: PNG (:mod:`vaeaug.generated.tars`), or
    ``.npy`` by the same header checks as a ``shards`` set's files (:func:`~vaeaug.generated.shards.check_npy`)."""
    dtype, shape = np.dtype(manifest["data"]["value_range"]["dtype"]), tuple(manifest["data"]["shape"])
    if manifest["arguments"]["payload"] == "png":
        return png_payload(shape)
    values = math.prod(shape)
    return Payload("npy", 12 + MAX_NPY_HEADER + values * dtype.itemsize, 12 + MAX_NPY_HEADER,
                   functools.partial(_check_npy_member, dtype, shape), functools.partial(_decode_npy, dtype, shape))


def _check_npy_member(dtype: np.dtype[Any], shape: tuple[int, ...], head: bytes, size: int, where: str,
                      fix: str) -> None:
    check_npy(io.BytesIO(head), size, dtype, shape, where, fix)


def _decode_npy(dtype: np.dtype[Any], shape: tuple[int, ...], blob: bytes, where: str, fix: str) -> np.ndarray:
    start = check_npy(io.BytesIO(blob), len(blob), dtype, shape, where, fix)
    return np.frombuffer(blob, dtype, count=math.prod(shape), offset=start).reshape(shape).copy()


def tar_meta(shard: dict[str, Any], manifest: dict[str, Any], index: TarIndex) -> np.ndarray:
    """A tar shard's labels and flags, as a ``shards`` set's label file holds them: its labels, and the source,
    variant and synthetic flag the layout gives each sample (the tar's records were checked against it)."""
    r = int(manifest["arguments"]["include_real"])
    per = manifest["arguments"]["variants_per_sample"] + r
    s = np.arange(shard["first"], shard["first"] + shard["count"], dtype=np.int64)
    meta = np.zeros(len(s), META_DTYPE)
    meta["y"], meta["source"], meta["variant"] = index.labels, s // per, s % per - r
    meta["synthetic"] = meta["variant"] >= 0
    return meta


def _verify_tars(out: Path, manifest: dict[str, Any]) -> list[str]:
    """Each marker's and tar's SHA-256, then every tar's members (:func:`~vaeaug.generated.tars.index_tar`), then
    the labels of the whole set against the manifest's counts."""
    problems: list[str] = []
    metas: list[np.ndarray] = []
    payload = payload_of(manifest)
    for shard in manifest["shards"]:
        i = shard["index"]
        problems += check_file(out, shard["marker"], i)
        try:
            index = index_tar(out, shard, manifest, payload)
            metas.append(tar_meta(shard, manifest, index))
            images = TarImages(out, {**manifest, "shards": [shard]}, [index], payload)
            try:
                problems += _tar_nonfinite(images, 0)
            finally:
                images.close()
        except ValueError as e:
            problems.append(f"shard {i}: {e}")
    return problems + _set_labels(metas, manifest, out)


def _nonfinite(images: np.ndarray, shard: dict[str, Any]) -> list[str]:
    """[] when every value of a shard's images is finite (always, for integer dtypes), else one problem naming the
    first sample that is not; read about 1 MiB of values at a time."""
    if images.dtype.kind != "f":
        return []
    chunk = max(1, MiB // max(1, math.prod(images.shape[1:])))
    for a in range(0, len(images), chunk):
        rows = images[a:a + chunk]
        bad = np.flatnonzero(~np.isfinite(rows.reshape(len(rows), -1)).all(1))
        if len(bad):
            return [_nonfinite_problem(shard, a + int(bad[0]))]
    return []


def _tar_nonfinite(images: TarImages, m: int) -> list[str]:
    """:func:`_nonfinite` for shard ``m`` of a checked webdataset set, sample by sample."""
    shard = images.manifest["shards"][m]
    if np.dtype(images.manifest["data"]["value_range"]["dtype"]).kind != "f":
        return []
    bad = next((j for j in range(shard["count"]) if not np.isfinite(images.image(m, j)).all()), None)
    return [] if bad is None else [_nonfinite_problem(shard, bad)]


def _nonfinite_problem(shard: dict[str, Any], j: int) -> str:
    """The problem of sample ``j`` of ``shard`` holding a non-finite value."""
    return (f"shard {shard['index']}: sample {int(shard['first']) + j} holds NaN or infinite values, which vaeaug "
            "never writes (the shard was edited and its checksum recomputed); regenerate the set")


def _open_tars(root: Path, manifest: dict[str, Any]) -> TarImages:
    """Every tar of a webdataset set checked and indexed; the first problem raised, saying what to do."""
    indexes = []
    payload = payload_of(manifest)
    for shard in manifest["shards"]:
        try:
            indexes.append(index_tar(root, shard, manifest, payload))
        except ValueError as e:
            raise ValueError(f"{root} failed verification: shard {shard['index']}: {e}") from None
    return TarImages(root, manifest, indexes, payload)


class GeneratedDataset(torch.utils.data.Dataset):
    """The samples of a generated set, in order: source by source, real first, then its variants.

    Args:
        out_dir: a folder written by :func:`vaeaug.pregenerate` in format ``"shards"`` or
            ``"webdataset"`` (an image folder is read with ``torchvision.datasets.ImageFolder``).
        verify: also run the whole of :func:`verify_generated` at opening (shard records included,
            every value of a float set checked finite; one more read of the set). Without it, opening
            still checks the manifest, the label files, and every image file's header, size and
            SHA-256, through the descriptor it is then mapped from (one read of the set, in blocks of
            1 MiB), so no byte is used unchecked either way. A DataLoader worker that reopens the files
            (spawn, forkserver) refuses a file that is not the one checked, or that changed since. A
            webdataset set's tars are hashed and parsed whole at opening too: its labels are inside
            them; its images are then read from the tars by sample (for training at scale, stream the
            tars with ``webdataset`` instead).
        transform: applied to each image.
        return_is_synthetic: append ``True`` for variants, ``False`` for real samples.

    Raises:
        ValueError: the set is incomplete, damaged or edited (the message says which file and what to do).

    Example:
        >>> import os, tempfile, vaeaug
        >>> out = os.path.join(tempfile.mkdtemp(), "gen")
        >>> _ = vaeaug.pregenerate("digits", vaeaug.fit("digits", epochs=1, progress=False), out,
        ...                        variants_per_sample=1, progress=False)
        >>> ds = GeneratedDataset(out, return_is_synthetic=True)
        >>> x, y, synthetic = ds[1]
        >>> x.shape, x.dtype, synthetic
        (torch.Size([1, 8, 8]), torch.float64, True)
    """

    def __init__(self, out_dir: str | os.PathLike[str], verify: bool = False, transform: Any = None,
                 return_is_synthetic: bool = False) -> None:
        self.root = Path(out_dir)
        self.manifest = read_manifest(self.root)
        fmt = self.manifest["arguments"]["format"]
        if fmt == "imagefolder":
            raise ValueError(
                f"{self.root} was written as an image folder: read it with torchvision.datasets.ImageFolder"
            )
        self._tars = _open_tars(self.root, self.manifest) if fmt == "webdataset" else None
        if verify:  # a webdataset set's tars were checked above: its markers and values are left
            tars = self._tars
            problems = (verify_generated(self.root) if tars is None else
                        [p for m, shard in enumerate(self.manifest["shards"])
                         for p in check_file(self.root, shard["marker"], shard["index"]) + _tar_nonfinite(tars, m)])
            if problems:
                raise ValueError(f"{self.root} failed verification: {'; '.join(problems[:5])}"
                                 + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
        self.transform = transform
        self.return_is_synthetic = return_is_synthetic
        self.class_names = self.manifest["data"]["class_names"]
        self._x: list[np.ndarray] | None = None
        self._ids: list[FileId] = []  # each image shard's file as it was hashed: a reopened copy must find it again
        shards = self.manifest["shards"]
        metas = ([tar_meta(shard, self.manifest, index) for shard, index in zip(shards, self._tars.indexes,
                                                                                strict=True)]
                 if self._tars is not None else [read_meta(self.root, shard) for shard in shards])
        self.meta = np.concatenate(metas) if metas else np.zeros(0, META_DTYPE)
        check_meta(self.meta, self.manifest, self.root)
        if self._tars is None:
            self._open(hash_images=True)
        self._starts = [int(s["first"]) for s in self.manifest["shards"]]

    def _open(self, hash_images: bool = False) -> list[np.ndarray]:
        """Memory-map the image shards, headers and sizes checked. At opening (``hash_images``) each one's SHA-256
        is checked through the descriptor it is mapped from, and its file recorded; a copy reopened after
        unpickling (maps are never pickled) must find each file unchanged."""
        dtype = np.dtype(self.manifest["data"]["value_range"]["dtype"])
        sample_shape = tuple(self.manifest["data"]["shape"])
        maps, ids = [], []
        for m, shard in enumerate(self.manifest["shards"]):
            arr, fid = map_images(self.root, shard, dtype, sample_shape, sha256=hash_images,
                                  same_as=None if hash_images else self._ids[m])
            maps.append(arr)
            ids.append(fid)
        self._x, self._ids = maps, ids
        return maps

    def __getstate__(self) -> dict[str, Any]:
        # pickling a memory map copies its data: DataLoader workers started by spawn or forkserver
        # would each receive the whole set. They reopen the files instead.
        state = self.__dict__.copy()
        state["_x"] = None
        return state

    def __len__(self) -> int:
        return len(self.meta)

    @property
    def value_range(self) -> Any:
        """The stored images' value range and dtype (a :class:`vaeaug.ValueRange`)."""
        return ValueRange.from_dict(self.manifest["data"]["value_range"])

    @property
    def targets(self) -> np.ndarray:
        """Every sample's label (int64), like torchvision datasets' ``targets``."""
        return np.asarray(self.meta["y"])

    @property
    def is_synthetic(self) -> np.ndarray:
        """Every sample's synthetic flag."""
        return np.asarray(self.meta["synthetic"])

    def __getitem__(self, index: int) -> Any:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"GeneratedDataset indices must be integers; got {type(index).__name__}")
        n = len(self)
        i = int(index) + n if index < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(f"index {index} is out of range for a set of {n} samples")
        m = bisect.bisect_right(self._starts, i) - 1
        if self._tars is not None:
            arr = self._tars.image(m, i - self._starts[m])
        else:
            maps = self._x if self._x is not None else self._open()
            arr = np.array(maps[m][i - self._starts[m]])
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():  # about 1 us: a set is never NaN, even edited
            raise ValueError(f"{self.root}: sample {i} (shard {m}) holds NaN or infinite values, which vaeaug never "
                             "writes: the shard was edited after its checksum was recomputed - regenerate the set")
        x = torch.from_numpy(arr)
        if self.transform is not None:
            x = self.transform(x)
        row = self.meta[i]
        if self.return_is_synthetic:
            return x, int(row["y"]), bool(row["synthetic"])
        return x, int(row["y"])
