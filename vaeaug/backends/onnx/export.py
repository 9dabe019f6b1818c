"""``export_onnx``: a fitted VAE as three ONNX graphs with its description in their metadata.

The files and their inputs are described in :mod:`vaeaug.backends.onnx_backend`, which runs them. The
graphs trace the same code the torch backend runs (the model's ``encode_onehot`` /
``decode_logits_onehot`` and :func:`vaeaug.core.functional.gaussian_move` / ``delta_output``); noise is
an input, never a random op inside a graph. With ``verify=True`` the exported files are run with
onnxruntime against the torch backend on random inputs before they are moved into place, and the
export fails (leaving no file behind) if any output differs by more than ``1e-4``.

Every file is self-contained (weights inline, never ONNX external data, which torch writes for
models over 1.5 GiB: it is read back inline, and a graph over the 2 GiB protobuf limit fails
clearly) and sealed with a whole-file SHA-256 (:func:`.onnx_metadata.seal`), then read back by the
same verifying reader that loads it. The export is all or nothing: the three files are written
under temporary names beside the destination, verified, and renamed into place at the end; on any
failure the temporaries are removed and files that were there before are put back.
"""

from __future__ import annotations

import copy
import io as _io
import json
import os
import tempfile
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vaeaug._version import __version__
from vaeaug.backends.onnx.metadata import (
    CHECKSUM_KEY,
    DAMAGED,
    MAX_ONNX_BYTES,
    ONNX_FORMAT_VERSION,
    check_metadata,
    check_onnx_bytes,
    onnx_paths,
    seal,
)
from vaeaug.backends.onnx_backend import OnnxBackend
from vaeaug.backends.torch_backend import TorchBackend
from vaeaug.core.functional import delta_output, gaussian_move
from vaeaug.core.rng import Noise, derive_keys
from vaeaug.core.settings import PARTNER_MODES
from vaeaug.core.values import check_int
from vaeaug.files import check_name, read_bounded, sha256_bytes, write_atomic
from vaeaug.model.vae import VAE, load
from vaeaug.model.vaefile import model_bytes

__all__ = ["export_onnx", "VERIFY_ATOL"]

VERIFY_ATOL = 1e-4
_EXAMPLE_BATCH = 3  # traced at 3 rows, so that no size is specialised as 1; the batch stays dynamic


class _Graph(nn.Module):
    def __init__(self, vae: VAE) -> None:
        super().__init__()
        self.vae = vae
        k = vae.config.num_classes or 0
        self.register_buffer("eye", torch.eye(k), persistent=False)

    def onehot(self, y: torch.Tensor | None) -> torch.Tensor | None:
        eye: torch.Tensor = self.eye  # type: ignore[assignment]
        return None if y is None else eye[y]


class _Augmenter(_Graph):
    """``(x, eps, strength, sigma_weight[, y]) -> clip(x + D(z') - D(mu))``."""

    def forward(self, x: torch.Tensor, eps: torch.Tensor, strength: torch.Tensor, sigma_weight: torch.Tensor,
                y: torch.Tensor | None = None) -> torch.Tensor:
        oh = self.onehot(y)
        mu, logvar = self.vae.encode_onehot(x, oh)
        z = gaussian_move(mu, logvar, eps, strength, sigma_weight)
        n = x.shape[0]
        oh2 = None if oh is None else torch.cat([oh, oh])
        both = torch.sigmoid(self.vae.decode_logits_onehot(torch.cat([z, mu]), oh2))  # D(z') and D(mu): one call
        return delta_output(x, both[:n], both[n:])


class _Encoder(_Graph):
    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vae.encode_onehot(x, self.onehot(y))


class _Sampler(_Graph):
    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.vae.decode_logits_onehot(z, self.onehot(y)))


def _graph_spec(vae: VAE, graph: str) -> tuple[nn.Module, dict[str, torch.Tensor], list[str]]:
    """The module, named example inputs and output names of one graph."""
    n, cfg = _EXAMPLE_BATCH, vae.config
    g = torch.Generator().manual_seed(0)
    x = torch.rand((n, *cfg.input_shape), generator=g)
    y = {"y": torch.arange(n) % cfg.num_classes} if cfg.num_classes else {}
    if graph == "augmenter":
        eps = torch.randn((n, cfg.latent_dim), generator=g)
        return _Augmenter(vae), {"x": x, "eps": eps, "strength": torch.ones(n), "sigma_weight": torch.ones(n), **y}, \
            ["variants"]
    if graph == "encoder":
        return _Encoder(vae), {"x": x, **y}, ["mu", "logvar"]
    return _Sampler(vae), {"z": torch.randn((n, cfg.latent_dim), generator=g), **y}, ["x"]


def _export_graph(vae: VAE, graph: str, meta: dict[str, str], opset: int | None) -> bytes:
    """One graph as ONNX bytes, batch dimension dynamic, metadata set."""
    import onnx

    module, inputs, outputs = _graph_spec(vae, graph)
    batch = torch.export.Dim("batch", min=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{graph}.onnx"
        try:
            with warnings.catch_warnings(), redirect_stdout(_io.StringIO()):
                warnings.simplefilter("ignore")  # the exporter's notes on axis names and training mode
                torch.onnx.export(
                    module.eval(), (), str(path), kwargs=inputs, input_names=list(inputs), output_names=outputs,
                    dynamic_shapes={k: {0: batch} for k in inputs}, opset_version=opset, dynamo=True,
                    external_data=False, verbose=False,
                )
        except Exception as e:  # the exporter raises many types; say which graph and why
            raise RuntimeError(
                f"could not export the {graph} graph of {vae.extra_repr() or 'this model'} to ONNX: "
                f"{type(e).__name__}: {str(e)[:2000]}"
            ) from e
        proto = onnx.load(str(path), load_external_data=True)  # weights torch put beside it come inline
    del proto.metadata_props[:]
    proto.doc_string = f"vaeaug {__version__}: the {graph} graph of a VAE (see vaeaug.backends.onnx_backend)"
    for k, v in {**meta, "vaeaug.graph": graph}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    size = proto.ByteSize()
    if size > MAX_ONNX_BYTES - 4096:  # the checksum entry and a margin
        raise ValueError(
            f"the {graph} graph of this model is {size:,} bytes, more than one self-contained ONNX file can hold "
            f"({MAX_ONNX_BYTES:,} bytes, protobuf's limit); vaeaug exports never use external data - export a "
            "smaller model (fewer widths or a smaller latent_dim) or use the torch backend"
        )
    blob = seal(bytes(proto.SerializeToString()))
    try:  # read back by the reader that will load it: self-contained, sealed, metadata matching the graph
        check_onnx_bytes(blob, f"the exported {graph} graph")
    except ValueError as e:
        raise RuntimeError(f"the exported {graph} graph does not read back: {e}") from None
    return blob


def _verify(vae: VAE, paths: dict[str, Path]) -> float:
    """Max abs difference between onnxruntime and the torch backend over every exported path."""
    onnx_gen = OnnxBackend(paths["augmenter"])
    torch_gen = TorchBackend(vae)
    cfg = vae.config
    rng = np.random.default_rng(0)
    worst = 0.0
    for n in (1, 7):
        x = rng.random((n, *cfg.input_shape), dtype=np.float32)
        partner = rng.random((n, *cfg.input_shape), dtype=np.float32)  # never x itself: a move at batch 1 too
        y = (np.arange(n) % cfg.num_classes).astype(np.int64) if cfg.num_classes else None
        noise = Noise.from_keys(derive_keys(12345, n, np.arange(n)), cfg.latent_dim)
        cases = [("isotropic", "delta"), ("posterior", "delta"), ("posterior", "decode"),
                 *((mode, "delta") for mode in PARTNER_MODES)]
        if cfg.num_classes:
            cases.append(("prior", "decode"))
        for mode, form in cases:
            kw: dict[str, Any] = {"mode": mode, "strength": 1.0, "form": form, "noise": noise}
            if mode in PARTNER_MODES:
                kw["partner"] = partner
            a = onnx_gen.variants(x, y, **kw)
            b = torch_gen.variants(x, y, **kw)
            diff = float(np.max(np.abs(a - b)))
            if not diff <= VERIFY_ATOL:  # also catches NaN
                raise RuntimeError(
                    f"ONNX export verification failed: mode {mode!r}, form {form!r}, batch {n}: onnxruntime and "
                    f"torch differ by {diff:.3g} (allowed {VERIFY_ATOL:g}); nothing was written. Report this "
                    "with the model's 'vaeaug info' output; export with verify=False to inspect the files"
                )
            worst = max(worst, diff)
    return worst


def _refuse_directories(paths: dict[str, Path]) -> None:
    """A destination that is a directory (or under a file) is a user error: say so before the long work."""
    for graph, p in paths.items():
        if p.is_dir():
            raise ValueError(f"{str(p)!r} is a directory; the export needs a file name there for its {graph} graph - "
                             "remove the directory or choose another out_path")
    parent = paths["augmenter"].parent
    existing = next((d for d in [parent, *parent.parents] if d.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"cannot write {str(paths['augmenter'])!r}: {str(existing)!r} is a file, not a directory; "
                         "choose another out_path")


def _make_dirs(d: Path) -> list[Path]:
    """Create ``d`` and its missing parents; the ones created, deepest first (to remove on failure)."""
    missing = [p for p in [d, *d.parents] if not p.exists()]
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create the directory {str(d)!r} for the export: {e.strerror or e}") from None
    return missing


def _publish(staged: dict[str, Path], paths: dict[str, Path], backups: Path, overwrite: bool) -> None:
    """Move the staged files into place, the augmenter last; on any failure undo every step, then raise.

    A file already at a destination is first linked into ``backups`` (renamed, where the filesystem
    has no hard links) so that it can be put back.
    """
    undo: list[tuple[Path, Path | None, bool, bool]] = []  # (destination, its backup, moved away, published)
    try:
        for graph in ("encoder", "sampler", "augmenter"):
            src, dst = staged[graph], paths[graph]
            backup, moved = None, False
            if dst.is_dir():
                raise ValueError(f"{str(dst)!r} is a directory; the export needs a file name there for its {graph} "
                                 "graph - remove the directory or choose another out_path")
            if os.path.lexists(dst):
                if not overwrite:
                    raise ValueError(f"{str(dst)!r} exists; pass overwrite=True (vaeaug export --force) to replace it "
                                     "or choose another out_path")
                backup = backups / f"previous.{graph}"
                try:
                    os.link(dst, backup, follow_symlinks=False)  # dst stays in place until it is replaced
                except OSError:
                    os.rename(dst, backup)
                    moved = True
            undo.append((dst, backup, moved, False))
            if overwrite:
                os.replace(src, dst)
            else:
                try:
                    os.link(src, dst)  # fails if a file appeared meanwhile: never replaces one
                except FileExistsError:
                    raise ValueError(f"{str(dst)!r} appeared while exporting; nothing was written - pass "
                                     "overwrite=True to replace it") from None
                except OSError:  # no hard links on this filesystem
                    if os.path.lexists(dst):
                        raise ValueError(f"{str(dst)!r} appeared while exporting; nothing was written") from None
                    os.rename(src, dst)
            undo[-1] = (dst, backup, moved, True)
    except BaseException as e:
        for dst, backup, moved, published in reversed(undo):
            try:
                if backup is not None and (published or moved):
                    os.replace(backup, dst)  # the previous file, back in place
                elif published:
                    dst.unlink(missing_ok=True)
            except OSError:
                pass  # best effort: the error below is what the user needs
        if isinstance(e, OSError):
            raise ValueError(f"could not write the export {str(paths['augmenter'])!r}: {e.strerror or e}; "
                             "nothing was changed") from None
        raise


def export_onnx(
    model_or_path: VAE | str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    opset: int | None = None,
    verify: bool = True,
    overwrite: bool = True,
) -> dict[str, Path]:
    """Export a VAE to ONNX: ``out_path`` (the augmenter) and its encoder and sampler beside it.

    All or nothing: the files are written under temporary names beside ``out_path``, verified, and
    renamed into place at the end; if anything fails, no new file is left behind and files that
    were there before are put back.

    Args:
        model_or_path: a fitted ``VAE`` or the path of a ``.vae`` file.
        out_path: the augmenter's path, ending in ``.onnx``; ``<stem>.encoder.onnx`` and
            ``<stem>.sampler.onnx`` are written beside it.
        opset: ONNX opset version (default: the exporter's).
        verify: run the files with onnxruntime against the torch backend (batch 1 and 7, every
            mode the files serve) and raise ``RuntimeError`` if any output differs by more than
            ``1e-4``; nothing is written then.
        overwrite: replace existing files (the default); ``False`` refuses with ``ValueError`` if
            any of the three exists, checked when the files are moved into place.

    Returns:
        ``{"augmenter": path, "encoder": path, "sampler": path}``.

    Raises:
        ValueError: a destination is a directory (or exists, with ``overwrite=False``), the model's
            description is out of the range an export can hold, or the files cannot be written.
        RuntimeError: the model cannot be traced, or verification failed.

    Example:
        >>> import os, tempfile, vaeaug
        >>> out = os.path.join(tempfile.mkdtemp(), "m.onnx")
        >>> sorted(p.name for p in export_onnx(vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 8, 8))), out).values())
        ['m.encoder.onnx', 'm.onnx', 'm.sampler.onnx']
    """
    paths = onnx_paths(out_path)
    if isinstance(model_or_path, (str, os.PathLike)):
        before = sha256_bytes(read_bounded(model_or_path, "model file", max_bytes=MAX_ONNX_BYTES))
        vae = load(model_or_path)
        if sha256_bytes(read_bounded(model_or_path, "model file", max_bytes=MAX_ONNX_BYTES)) != before:
            raise ValueError(f"{str(model_or_path)!r} changed while it was loaded; export it again when nothing is "
                             "writing to it")
        sha = before  # the file's own bytes, whatever version wrote it
    elif isinstance(model_or_path, VAE):
        vae = model_or_path
        sha = ""
    else:
        raise TypeError(f"model_or_path must be a vaeaug VAE or a .vae path; got {type(model_or_path).__name__}")
    check_int("opset", opset, 1, optional=True)
    for p in paths.values():  # m.encoder.onnx is 8 bytes longer than m.onnx: said now, not after tracing
        check_name(p, "out_path")
    _refuse_directories(paths)
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError(f"ONNX export needs onnx and onnxscript: pip install 'vaeaug[onnx]' ({e})") from e
    if not sha:
        sha = sha256_bytes(model_bytes(vae))  # the bytes vae.save() would write
    vae = copy.deepcopy(vae).to(device="cpu", dtype=torch.float32)
    vae = vae.to(memory_format=torch.contiguous_format).eval()
    meta = {
        "vaeaug.format_version": str(ONNX_FORMAT_VERSION),
        "vaeaug.version": __version__,
        "vaeaug.model_sha256": sha,
        "vaeaug.config": json.dumps(vae.config.to_dict(), sort_keys=True),
        "vaeaug.value_range": json.dumps(vae.value_range.to_dict(), sort_keys=True),
        "vaeaug.class_names": json.dumps(vae.class_names),
        "vaeaug.augment": json.dumps(vae.augment, sort_keys=True),
        "vaeaug.files": json.dumps({g: p.name for g, p in paths.items()}, sort_keys=True),
    }
    # the description must be one the reader accepts: say so now, not after tracing
    try:
        check_metadata({**meta, "vaeaug.graph": "augmenter", CHECKSUM_KEY: ""}, "this model")
    except ValueError as e:
        raise ValueError(f"cannot export to ONNX: {str(e).removesuffix(DAMAGED)}; set the model's config, value_range, "
                         "class_names or augment within these bounds, then export") from None
    blobs = {g: _export_graph(vae, g, meta, opset) for g in paths}
    created = _make_dirs(paths["augmenter"].parent)
    try:
        with tempfile.TemporaryDirectory(dir=paths["augmenter"].parent, prefix=".vaeaug-export-") as tmp:
            staged = onnx_paths(Path(tmp) / paths["augmenter"].name)
            for g, blob in blobs.items():
                write_atomic(staged[g], blob)
            if verify:
                _verify(vae, staged)
            _publish(staged, paths, Path(tmp), overwrite)
    except BaseException:
        for d in created:  # deepest first; only directories this export created, and only if empty
            try:
                d.rmdir()
            except OSError:
                break
        raise
    return paths
