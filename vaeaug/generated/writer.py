"""``pregenerate``: write an augmented dataset to disk, resumable and split across jobs or workers.

The format, its reader and its verifier are in :mod:`vaeaug.generated.format`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaeaug._version import __version__
from vaeaug.backends.factory import as_backend
from vaeaug.backends.onnx_backend import OnnxBackend
from vaeaug.core.augment import Augmenter, class_members, same_class_partners
from vaeaug.core.backend import Backend
from vaeaug.core.cache import EncodingCache
from vaeaug.core.rng import Stream, derive_keys, uniform
from vaeaug.core.settings import resolve_setting
from vaeaug.core.values import MAX_SEED, check_int
from vaeaug.data import as_tensor_data
from vaeaug.data.readers import worker_error
from vaeaug.files import check_name, parse_json, read_bounded, read_json, sha256_bytes, sha256_file, write_atomic
from vaeaug.generated.format import (
    FORMAT,
    FORMAT_VERSION,
    FORMATS,
    MAX_COUNT,
    MAX_JSON_BYTES,
    MAX_SHARDS,
    MAX_VARIANTS,
    class_key,
    manifest_sha256,
    marker_path,
    payload_for,
    shard_files,
    shard_keys,
    validate_manifest,
)
from vaeaug.generated.shards import META_DTYPE, npy_bytes
from vaeaug.generated.tars import png_bytes, sample_members, tar_bytes
from vaeaug.model.vaefile import model_bytes

__all__ = ["pregenerate", "MAX_SHARD_BYTES"]


_STAGES = "encode once"  # how variants are made: each source encoded once, then one decoder pass per variant


def _model_identity(gen: Backend) -> dict[str, Any]:
    """What decides the bytes besides the arguments: the model (the SHA-256 of its ``.vae`` file; an
    export records the same), the backend, its device and chunk size, how variants are computed
    (``generation``: a set begun by the one-call code of earlier versions differs in the last float
    bit, so it is not resumed by this one), and the software versions."""
    chunk = int(getattr(gen, "chunk_size", 0))
    how = _STAGES if gen.amortizes else "one call"
    if isinstance(gen, OnnxBackend):
        import onnxruntime

        return {"sha256": gen.model_sha256, "backend": "onnx", "device": "cpu", "chunk_size": chunk,
                "generation": how, "software": {"onnxruntime": onnxruntime.__version__, "numpy": np.__version__},
                "config": gen.config.to_dict()}
    source = getattr(gen, "source", None)
    if source is not None:
        sha = sha256_file(Path(source))
    else:
        sha = sha256_bytes(model_bytes(gen.model))  # type: ignore[attr-defined]
    return {"sha256": sha, "backend": "torch", "device": str(getattr(gen, "device", "cpu")), "chunk_size": chunk,
            "generation": how, "software": {"torch": torch.__version__, "numpy": np.__version__},
            "config": gen.config.to_dict()}


class _Plan:
    """Which sample is which: sources, slots, labels, partners; everything a shard needs (numpy)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None, k: int, include_real: bool, seed: int,
                 shard_size: int) -> None:
        self.x = x.numpy()  # model space, float32 (N, C, H, W); shares memory with the tensor
        self.labels = None if y is None else y.numpy().astype(np.int64)
        self.n, self.k, self.r, self.seed = int(self.x.shape[0]), k, int(include_real), seed
        self.per_source = k + self.r
        self.total = self.n * self.per_source
        self.shard_size = shard_size
        self.num_shards_total = max(1, -(-self.total // shard_size))
        self.members = None if self.labels is None else class_members(self.labels)

    def shard_range(self, m: int) -> tuple[int, int]:
        return m * self.shard_size, min((m + 1) * self.shard_size, self.total)


def _to_user(out: np.ndarray, value_range: Any) -> np.ndarray:
    """Model space back to the user's dtype and range; uint8 0..255 in float32 with round-half-even,
    as the transforms do (:func:`vaeaug.convert.from_model`), anything else through ``ValueRange``."""
    if value_range.dtype == "uint8" and (value_range.low, value_range.high) == (0.0, 255.0):
        return np.rint(out * np.float32(255.0)).astype(np.uint8)
    return value_range.from_model(torch.from_numpy(out)).numpy()  # type: ignore[no-any-return]


def _make_shard(plan: _Plan, aug: Augmenter, m: int, value_range: Any) -> tuple[np.ndarray, np.ndarray]:
    """The images and meta of shard ``m`` (pure function of the plan, the model and ``m``).

    Each source of the shard is encoded once (``mu``, ``logvar``, ``D(mu)``), each partner once, and
    every variant is then one decoder pass; every stage runs on fixed-size zero-padded chunks, so a
    row's bytes do not depend on the shard, job or worker that made it.
    """
    lo, hi = plan.shard_range(m)
    s = np.arange(lo, hi, dtype=np.int64)
    src = s // plan.per_source
    variant = (s % plan.per_source - plan.r).astype(np.int32)
    synthetic = variant >= 0
    out = plan.x[src]  # a copy: the real samples stay, the variants' rows are replaced
    chosen = np.nonzero(synthetic)[0]
    if len(chosen):
        sources = src[chosen]
        stages = aug.amortizes and aug.setting.mode != "prior"
        labels = plan.labels if aug.conditional else None
        # each looked up once per shard: nothing to keep (capacity 0), each distinct source still encoded once
        own = EncodingCache(aug.backend, labels=labels, delta=aug.setting.form == "delta", capacity=0) \
            if stages else None
        mates = EncodingCache(aug.backend, labels=labels, delta=False, capacity=0) if stages else None

        def load(idx: np.ndarray) -> np.ndarray:
            return plan.x[idx]

        def partners(rows: np.ndarray, keys: np.ndarray) -> Any:  # from the whole set, by key
            assert plan.labels is not None and plan.members is not None
            u = uniform(keys, Stream.PARTNER)[:, 0]
            picked = same_class_partners(sources[rows], plan.labels, plan.members, u)
            return plan.x[picked] if mates is None else mates.get(picked, load)

        out[chosen] = aug(out[chosen], None if plan.labels is None else plan.labels[sources],
                          keys=derive_keys(plan.seed, sources, variant[chosen].astype(np.int64)),
                          codec=aug.codec("model"), partners=partners,
                          encodings=None if own is None else (lambda rows: own.get(sources[rows], load)))
    meta = np.zeros(hi - lo, dtype=META_DTYPE)
    meta["y"] = -1 if plan.labels is None else plan.labels[src]
    meta["source"], meta["variant"], meta["synthetic"] = src, variant, synthetic
    return _to_user(out, value_range), meta


def _file_entry(name: str, blob: bytes) -> dict[str, Any]:
    return {"name": name, "bytes": len(blob), "sha256": sha256_bytes(blob)}


def _class_counts(meta: np.ndarray) -> dict[str, int]:
    return {str(int(c)): int(n) for c, n in zip(*np.unique(meta["y"], return_counts=True), strict=True)}


def _class_dir(meta_row: Any, class_names: list[str] | None) -> str:
    y = int(meta_row["y"])
    if y < 0:
        return "unlabelled"
    return class_names[y] if class_names is not None and y < len(class_names) else str(y)


def _write_shard(out: Path, fmt: str, m: int, images: np.ndarray, meta: np.ndarray, class_names: list[str] | None,
                 lo: int, payload: str | None = None) -> None:
    try:
        _write_shard_files(out, fmt, m, images, meta, class_names, lo, payload)
    except OSError as e:
        raise OSError(
            e.errno, f"cannot write shard {m} to {out}: {e.strerror or e}; no partial file was kept - free space or "
            "fix the folder's permissions, then run the same command again to resume"
        ) from None


def _write_shard_files(out: Path, fmt: str, m: int, images: np.ndarray, meta: np.ndarray,
                       class_names: list[str] | None, lo: int, payload: str | None) -> None:
    marker: dict[str, Any] = {"shard": m, "first": lo, "count": len(meta), "real": int((~meta["synthetic"]).sum()),
                              "synthetic": int(meta["synthetic"].sum()), "per_class": _class_counts(meta)}
    if fmt == "shards":
        files = shard_files(out, m)
        blobs = {"x": npy_bytes(images), "meta": npy_bytes(meta)}
        for key in ("meta", "x"):
            write_atomic(files[key], blobs[key])
        marker["files"] = {key: _file_entry(files[key].name, blobs[key]) for key in ("x", "meta")}
    elif fmt == "webdataset":  # one tar: per sample its image, .cls and .json (vaeaug.generated.tars)
        assert payload is not None
        path = shard_files(out, m, fmt)["tar"]
        encode = png_bytes if payload == "png" else npy_bytes
        blob = tar_bytes(member for j, (img, row) in enumerate(zip(images, meta, strict=True))
                         for member in sample_members(lo + j, encode(img), payload, row, class_names))
        write_atomic(path, blob)
        marker["files"] = {"tar": _file_entry(path.name, blob)}
    else:
        entries = []
        for j, (img, row) in enumerate(zip(images, meta, strict=True)):
            rel = f"{_class_dir(row, class_names)}/{lo + j:08d}.png"
            blob = png_bytes(img)
            write_atomic(out / rel, blob)
            entries.append({**_file_entry(rel, blob), "y": int(row["y"]), "source": int(row["source"]),
                            "variant": int(row["variant"])})
        marker["images"] = entries
    write_atomic(marker_path(out, m), _json_bytes(marker))  # written last: the shard is done


def _shard_done(out: Path, m: int) -> bool:
    return marker_path(out, m).is_file()


class _ShardTasks(torch.utils.data.Dataset):
    """One item per shard to write: the worker generates and writes it, returns its sample count."""

    def __init__(self, shards: list[int], plan: _Plan, aug: Augmenter, value_range: Any, out: Path,
                 fmt: str, class_names: list[str] | None, payload: str | None = None) -> None:
        self.shards, self.plan, self.aug = shards, plan, aug
        self.value_range, self.out, self.fmt, self.class_names = value_range, out, fmt, class_names
        self.payload = payload

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, i: int) -> int:
        m = self.shards[i]
        images, meta = _make_shard(self.plan, self.aug, m, self.value_range)
        _write_shard(self.out, self.fmt, m, images, meta, self.class_names, self.plan.shard_range(m)[0],
                     self.payload)
        return len(meta)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


def _data_identity(td: Any) -> dict[str, Any]:
    h = hashlib.sha256(np.ascontiguousarray(td.x.numpy()).tobytes())
    if td.y is not None:
        h.update(np.ascontiguousarray(td.y.numpy()).tobytes())
    return {"source": td.source, "count": len(td), "shape": list(td.x.shape[1:]), "labelled": td.y is not None,
            "value_range": td.value_range.to_dict(), "class_names": td.class_names, "sha256": h.hexdigest()}


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


MAX_SHARD_BYTES = 256 * 1024 * 1024
"""Model-space (float32) images of one shard, made in memory before it is written (the writer holds a few
copies of them): a shard_size that would take more is refused, whatever the other arguments."""
DEFAULT_SHARD_SIZE = 8192


def _check_sizes(n: int, k: int, include_real: bool, shard_size: int | None, shape: tuple[int, ...]) -> int:
    """The shard size, once the set's size is known to fit the format's limits (what its reader accepts) and one
    shard's memory to fit :data:`MAX_SHARD_BYTES`; a ``ValueError`` that says what to change otherwise."""
    total = n * (k + int(include_real))
    if total > MAX_COUNT:
        raise ValueError(f"{n:,} samples x {k + int(include_real)} ({k} variants{' and the real one' * include_real}) "
                         f"make {total:,} samples, more than the {MAX_COUNT:,} a generated set can hold; pass a "
                         "smaller variants_per_sample (--variants) or less data")
    sample = 4 * math.prod(shape)
    most = max(1, MAX_SHARD_BYTES // sample)  # samples of one shard in memory
    if shard_size is None:
        shard_size = min(DEFAULT_SHARD_SIZE, most)
    elif shard_size > most and total > most:
        raise ValueError(f"shard_size {shard_size:,} of {'x'.join(map(str, shape))} images would make "
                         f"{min(shard_size, total) * sample / 2**20:,.0f} MiB of images in memory for one shard, more "
                         f"than the {MAX_SHARD_BYTES // 2**20} MiB vaeaug allows; pass a shard_size (--shard-size) of "
                         f"at most {most:,}, or leave it unset")
    shards = -(-total // shard_size)
    if shards > MAX_SHARDS:
        need = -(-total // MAX_SHARDS)
        fix = (f"pass a shard_size (--shard-size) of at least {need:,}" if need <= most else
               "generate the data in parts, into several sets")
        raise ValueError(f"{total:,} samples in shards of {shard_size:,} make {shards:,} shards, more than the "
                         f"{MAX_SHARDS:,} a generated set can have (its manifest lists each); {fix}")
    return shard_size


def pregenerate(
    data: Any,
    model_or_path: Any,
    out_dir: str | os.PathLike[str],
    *,
    variants_per_sample: int = 4,
    mode: str | None = None, strength: float | None = None, form: str | None = None,
    seed: int = 0,
    include_real: bool = True,
    format: str = "shards",
    payload: str | None = None,
    shard_size: int | None = None,
    num_shards: int = 1,
    shard_index: int | None = None,
    workers: int = 1,
    resume: bool = True,
    progress: bool = True,
    y: Any = None,
    root: Any = None,
    split: str = "train",
) -> dict[str, Any]:
    """Generate an augmented dataset to ``out_dir``: real samples and ``k`` variants of each.

    Args:
        data: anything :func:`vaeaug.as_tensor_data` accepts (arrays, a Dataset, a folder, ``.npz``,
            ``"digits"``, ``"fashion-mnist"``); labels are kept with every variant.
        model_or_path: a ``VAE``, a ``.vae`` path, an ``.onnx`` export or a ``Backend``.
        out_dir: the output folder (created; may already hold this same run, to resume).
        variants_per_sample: ``k`` variants per source sample.
        mode: latent move; ``mode``, ``strength`` and ``form`` left as ``None`` come from the
            model's tuned setting, else the library default (delta, isotropic, 1).
        strength: size of the move.
        form: ``"decode"`` or ``"delta"``.
        seed: root of every variant's noise.
        include_real: also store each real sample (slot 0 of its group).
        format: ``"shards"`` (``.npy`` shards, read with :class:`vaeaug.GeneratedDataset`),
            ``"imagefolder"`` (PNGs in class folders, for tools outside PyTorch; uint8 data only) or
            ``"webdataset"`` (tar shards ``shard-00000.tar`` in the WebDataset layout: per sample
            ``KEY.png`` or ``KEY.npy``, ``KEY.cls``, ``KEY.json``; for ``webdataset``, ``datasets`` and
            other streaming readers, and read by :class:`vaeaug.GeneratedDataset` too).
        payload: the image member of a ``webdataset`` sample: ``"png"`` (uint8 data of 1 or 3
            channels), ``"npy"`` (any dtype, the ``(C, H, W)`` sample), or ``None``: ``"png"`` where it
            is exact, else ``"npy"`` (:func:`vaeaug.generated.format.payload_for`).
        shard_size: samples per shard (the unit of atomic writing and of resuming; one shard is made in
            memory, so at most :data:`MAX_SHARD_BYTES` of model-space images). ``None``: 8192, or fewer for
            images of more than 8192 values (5461 for 3x64x64, 1365 for 3x128x128, 445 for 3x224x224).
        num_shards: number of independent jobs the shards are split between.
        shard_index: this job's index in ``0..num_shards-1`` (``None`` with ``num_shards=1``).
        workers: processes generating shards in parallel (a ``DataLoader`` with worker processes).
        resume: continue a run found in ``out_dir``, skipping its complete shards.
        progress: progress bar with samples/s, and a summary line.
        y: labels for array input.
        root: folder for built-in datasets.
        split: split of a built-in dataset.

    Returns:
        ``{"out_dir", "written", "skipped", "samples", "seconds", "complete", "manifest"}``;
        ``manifest`` is the manifest dict once the whole set is complete (``None`` before).

    Example:
        >>> import os, tempfile, vaeaug
        >>> model = vaeaug.fit("digits", epochs=1, progress=False)
        >>> out = os.path.join(tempfile.mkdtemp(), "gen")
        >>> r = pregenerate("digits", model, out, variants_per_sample=2, progress=False)
        >>> r["manifest"]["counts"]["total"], len(vaeaug.GeneratedDataset(out))
        (4311, 4311)
    """
    for name, value, least, most in (("variants_per_sample", variants_per_sample, 0, MAX_VARIANTS),
                                     ("seed", seed, 0, MAX_SEED), ("num_shards", num_shards, 1, MAX_SHARDS),
                                     ("workers", workers, 1, None)):
        check_int(name, value, least, most)
    check_int("shard_size", shard_size, 1, MAX_COUNT, optional=True)
    check_name(Path(out_dir) / "manifest.json", "out_dir")  # the set's own names are short
    k = variants_per_sample
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {format!r}")
    if payload is not None and format != "webdataset":
        raise ValueError(f"payload={payload!r} chooses the image member of format 'webdataset'; this is format "
                         f"{format!r} - leave payload unset (--payload), or pass format='webdataset'")
    if shard_index is None:
        if num_shards != 1:
            raise ValueError(f"with num_shards={num_shards}, pass this job's shard_index (0..{num_shards - 1})")
        shard_index = 0
    else:
        check_int("shard_index", shard_index, 0, num_shards - 1)
    if not include_real and k == 0:
        raise ValueError("nothing to generate: variants_per_sample=0 and include_real=False")
    gen = as_backend(model_or_path)
    device = getattr(gen, "device", None)
    if workers > 1 and device is not None and getattr(device, "type", "cpu") != "cpu":
        raise ValueError(f"workers > 1 runs the model in forked CPU processes; this model is on {device} - use "
                         "workers=1 (the GPU is the parallelism), or an .onnx export for CPU workers")
    setting = resolve_setting(gen.augment, mode=mode, strength=strength, form=form, p=1.0)  # every variant made
    aug = Augmenter(gen, setting, invariant=True)
    td = as_tensor_data(data, y, root=root, split=split)
    shape = tuple(gen.config.input_shape)
    if tuple(td.x.shape[1:]) != shape:
        raise ValueError(f"the data's samples are {tuple(td.x.shape[1:])} but the model makes {shape}; "
                         "resize the data to the model's size, or fit a model on this data")
    if len(shape) != 3:
        raise ValueError("pre-generation works on images (N, C, H, W); this model was fit on vectors")
    shard_size = _check_sizes(len(td), k, include_real, shard_size, shape)  # before anything is written
    if aug.needs_labels and td.y is None:
        raise ValueError("this model is class-conditional or the mode needs classes: the data must have labels")
    aug.labels(None if td.y is None else td.y.numpy(), len(td))  # every label checked before any shard is made
    if format == "imagefolder":
        _check_class_folders(td.class_names, None if td.y is None else td.y.numpy())
    if format == "imagefolder" and td.value_range.dtype != "uint8":
        raise ValueError(
            f"format 'imagefolder' writes 8-bit PNGs, but this data is {td.value_range.dtype} in "
            f"[{td.value_range.low:g}, {td.value_range.high:g}]; use format='shards' (any dtype) or convert the "
            "data to uint8 first"
        )
    if format == "webdataset":
        payload = payload_for(td.value_range.dtype, shape[0], payload)
    identity = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "vaeaug_version": __version__,
        "model": _model_identity(gen), "data": _data_identity(td),
        "arguments": {"variants_per_sample": k, "mode": setting.mode, "strength": float(setting.strength),
                      "form": setting.form, "seed": seed, "include_real": bool(include_real), "format": format,
                      "shard_size": shard_size, "layout": "NCHW", **({"payload": payload} if payload else {})},
    }
    out = Path(out_dir)
    tag = f"job{shard_index}of{num_shards}"  # this job's own temporary names: only it removes them
    new_folder = not os.path.lexists(out)
    claimed = _claim(out, identity, resume, tag)
    try:
        plan = _Plan(td.x, td.y, k, include_real, seed, shard_size)
        mine = [m for m in range(plan.num_shards_total) if m % num_shards == shard_index]
        _remove_leftovers(out, set(mine), shard_size, tag)
        todo = [m for m in mine if not _shard_done(out, m)]
        skipped = len(mine) - len(todo)
        tasks = _ShardTasks(todo, plan, aug, td.value_range, out, format, td.class_names, payload)
        samples = sum(plan.shard_range(m)[1] - plan.shard_range(m)[0] for m in todo)
        t0 = time.perf_counter()
        from tqdm.auto import tqdm

        bar = tqdm(total=samples, unit="sample", desc="generate", disable=not progress, dynamic_ncols=True)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # every process computes on one thread: the same kernels, the same bytes
        try:
            if workers == 1 or len(todo) <= 1:
                for i in range(len(tasks)):
                    bar.update(tasks[i])
            else:
                _run_workers(tasks, min(workers, len(todo)), bar)
        finally:
            torch.set_num_threads(threads)
            bar.close()
        seconds = time.perf_counter() - t0
        manifest = _finish(out, identity, plan, format, tag)
    except BaseException:
        if claimed:
            _unclaim(out, new_folder)
        raise
    if progress:
        rate = samples / seconds if seconds > 0 else float("inf")
        state = "complete" if manifest is not None else "waiting for the other shard jobs"
        print(f"vaeaug generate: wrote {len(todo)} shard(s), {samples:,} samples in {seconds:.1f} s "
              f"({rate:,.0f} samples/s), skipped {skipped} complete shard(s); set {state}: {out}")
    return {"out_dir": out, "written": len(todo), "skipped": skipped, "samples": samples, "seconds": seconds,
            "complete": manifest is not None, "manifest": manifest}


def _run_workers(tasks: _ShardTasks, workers: int, bar: Any) -> None:
    """Write the shards in DataLoader worker processes; a worker's error keeps its own message."""
    loader = torch.utils.data.DataLoader(tasks, batch_size=None, num_workers=workers, worker_init_fn=_one_thread)
    it = iter(loader)
    try:
        for n in it:
            bar.update(int(n))
    except (OSError, ValueError, RuntimeError) as e:  # DataLoader wraps it in a traceback text
        raise worker_error(e) from None
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:  # stop the other workers now, not when the iterator is collected
            shutdown()


_RESERVED = {"run.json", "manifest.json", "unlabelled"}


def _check_class_folders(class_names: list[str] | None, labels: np.ndarray | None) -> None:
    """Class names become folder names of an image folder: they must be safe, distinct and complete."""
    if class_names is None:
        return
    for name in class_names:
        if (not isinstance(name, str) or not name or name.startswith(".") or name in _RESERVED
                or re.match(r"^shard-\d+\.json$", name) or any(c in name for c in '/\\\0:')
                or len(name.encode()) > 200):
            raise ValueError(
                f"class name {name!r} cannot be a folder name of an image folder (empty, starting with '.', "
                "reserved, too long, or holding '/', '\\', ':' or NUL); rename the class or use format='shards'"
            )
    folded = [n.casefold() for n in class_names]
    if len(set(folded)) != len(folded):
        raise ValueError(f"class names must be distinct (ignoring case) to be folder names; got {class_names}")
    if labels is not None and len(labels) and int(labels.max()) >= len(class_names):
        raise ValueError(f"labels go up to {int(labels.max())} but only {len(class_names)} class names are given")


def _claim(out: Path, identity: dict[str, Any], resume: bool, tag: str) -> bool:
    """Create ``out`` with ``run.json``, or check that what is there is this same run; whether this call wrote it.

    Jobs that start together race safely: ``run.json`` is published with a hard link (exactly one
    wins, the others compare with it), and each job writes only temporary files named by its tag.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create the output folder {out}: {e.strerror or e}") from None
    run = out / "run.json"
    blob = _json_bytes(identity)
    for tmp in (out / f".run.json.{tag}.tmp", out / f".manifest.json.{tag}.tmp"):  # ours, from a killed run
        tmp.unlink(missing_ok=True)
    existed = os.path.lexists(run)
    if not existed:
        if any(not (p.name.startswith(".") and p.name.endswith(".tmp")) for p in out.iterdir()):
            raise ValueError(f"{out} is not empty and holds no vaeaug run; choose an empty or new folder")
        try:
            write_atomic(run, blob, tmp_tag=tag, exclusive=True)
            return True
        except FileExistsError:
            pass  # another job published it first: compare with it below
        except OSError as e:
            raise OSError(f"cannot write to {out}: {e.strerror or e}") from None
    if os.path.lexists(run):
        try:  # a regular file of bounded size: a FIFO or /dev/zero planted as run.json is refused, not read
            theirs = read_json(run, "run identity (run.json)", max_bytes=MAX_JSON_BYTES)
        except (OSError, ValueError) as e:
            raise ValueError(f"{run} is unreadable ({e}); choose an empty folder") from None
        if json.dumps(theirs, sort_keys=True) != json.dumps(identity, sort_keys=True):  # 1 == 1.0 == true
            theirs = theirs if isinstance(theirs, dict) else {}
            diff = [f"{section}.{key}" for section in ("model", "data", "arguments") for key in
                    sorted(set(identity.get(section, {})) | set(_section(theirs, section)))
                    if identity.get(section, {}).get(key) != _section(theirs, section).get(key)]
            what = ", ".join(diff) or "format or vaeaug version"
            raise ValueError(
                f"{out} holds a set generated with other settings ({what} differ); refusing to mix them - choose "
                "another output folder, or delete this one to start again"
            )
        if existed and not resume:
            raise ValueError(f"{out} already holds this run; leave out --no-resume (resume=False) to continue it")
    return False


def _unclaim(out: Path, new_folder: bool) -> None:
    """After a failure, remove the ``run.json`` this call wrote when nothing else is in ``out`` (no shard, no other
    job's temporary file: nothing to resume), and ``out`` itself if this call created it."""
    try:
        if any(p.name != "run.json" for p in out.iterdir()):
            return
        (out / "run.json").unlink(missing_ok=True)
        if new_folder:
            out.rmdir()
    except OSError:  # the original error matters, not this clean-up's
        pass


def _section(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


_SHARD_TMP = re.compile(r"^\.shard-(\d+)[-.]")
_PNG_TMP = re.compile(r"^\.(\d+)\.png\.")


def _remove_leftovers(out: Path, mine: set[int], shard_size: int, tag: str) -> None:
    """Delete temporary files a killed run left for this job's shards (never another job's)."""
    for tmp in out.glob(".shard-*.tmp"):
        found = _SHARD_TMP.match(tmp.name)
        if found and int(found.group(1)) in mine:
            tmp.unlink(missing_ok=True)
    for tmp in out.glob("*/.*.png.*.tmp"):  # imagefolder: .<sample id>.png.<random>.tmp
        found = _PNG_TMP.match(tmp.name)
        if found and int(found.group(1)) // shard_size in mine:
            tmp.unlink(missing_ok=True)


def _read_marker(out: Path, m: int, lo: int, hi: int, fmt: str) -> tuple[dict[str, Any], bytes]:
    """Shard ``m``'s record and its bytes, checked for what :func:`_finish` takes from it (bounded read,
    regular file)."""
    path = marker_path(out, m)
    fix = f"delete shard {m}'s files ({out / f'shard-{m:05d}'}*) and run the same command again"
    try:
        blob = read_bounded(path, "shard record", max_bytes=MAX_JSON_BYTES)
        marker = parse_json(blob, path, "shard record", fix=fix)
        ok = (isinstance(marker, dict) and marker.get("first") == lo and marker.get("count") == hi - lo
              and all(type(marker.get(key)) is int for key in ("real", "synthetic"))
              and isinstance(marker.get("per_class"), dict)
              and all(type(n) is int and re.fullmatch(r"-?\d{1,19}", c) for c, n in marker["per_class"].items())
              and (not shard_keys(fmt) or isinstance(marker.get("files"), dict)))
    except FileNotFoundError:
        raise ValueError(f"shard record {path} vanished while the set was being completed; {fix}") from None
    if not ok:
        raise ValueError(f"shard record {path} does not match this run (its first sample, count or per-class counts "
                         f"are not what shard {m} holds); {fix}")
    return marker, blob


def _finish(out: Path, identity: dict[str, Any], plan: _Plan, fmt: str, tag: str) -> dict[str, Any] | None:
    """Write ``manifest.json`` if every shard of the set is done (any job may be the last).

    The manifest is assembled from the shards' markers, which hold the SHA-256 of each file as it
    was written: a file damaged later stays damaged in the eyes of :func:`verify_generated`, even
    after another run of the same command rewrites the manifest. It is checked with the reader's
    :func:`validate_manifest` before it is written, and records its own SHA-256.
    """
    if not all(_shard_done(out, m) for m in range(plan.num_shards_total)):
        return None
    shards = []
    per_class: dict[str, int] = {}
    real = synthetic = 0
    class_names = identity["data"]["class_names"]
    for m in range(plan.num_shards_total):
        lo, hi = plan.shard_range(m)
        marker, blob = _read_marker(out, m, lo, hi, fmt)
        real += marker["real"]
        synthetic += marker["synthetic"]
        for c, n in marker["per_class"].items():
            name = class_key(int(c), class_names)
            per_class[name] = per_class.get(name, 0) + n
        entry: dict[str, Any] = {"index": m, "first": lo, "count": hi - lo,
                                 "marker": _file_entry(marker_path(out, m).name, blob)}
        if shard_keys(fmt):
            entry["files"] = marker["files"]
        shards.append(entry)
    manifest = {**identity, "counts": {"total": plan.total, "real": real, "synthetic": synthetic,
                                       "per_class": per_class}, "shards": shards}
    manifest["manifest_sha256"] = manifest_sha256(manifest)
    blob = _json_bytes(manifest)
    validate_manifest(json.loads(blob), f"the manifest assembled from the shard records in {out}",  # as read back
                      "delete the shards named (or the whole folder) and run the same command again")
    write_atomic(out / "manifest.json", blob, tmp_tag=tag)
    return manifest
