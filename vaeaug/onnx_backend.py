"""``OnnxGenerator``: the Generator interface on onnxruntime, with only numpy (no torch needed).

An export (:func:`vaeaug.export_onnx`) is three ONNX files beside each other, each with the
model's description in its ``metadata_props``:

* ``m.onnx``, the **augmenter**: ``(x, eps, strength, sigma_weight[, y]) -> variants``, the
  ``delta`` form of the Gaussian moves in one graph (``posterior`` at ``sigma_weight = 1``,
  ``isotropic`` at 0, ``reconstruct`` at ``strength = 0``), both decoder passes batched. This is
  the library default and the path that runs at batch 1 in a DataLoader worker.
* ``m.encoder.onnx``: ``(x[, y]) -> (mu, logvar)``.
* ``m.sampler.onnx``: ``(z[, y]) -> x``, the decoder: ``prior`` samples and, with the encoder,
  the ``decode`` form and ``interpolate`` (the latent move then runs in numpy, same math).

Noise is an input of every graph, drawn from the same counter-based keys (:mod:`vaeaug.rng`) as
the torch backend, so both backends give the same variants for the same seed (within 1e-4).
Sessions are created lazily, in the process that uses them, never inherited across ``fork``
and never pickled; by default one intra-op and one inter-op thread without spinning, the right
setting inside DataLoader workers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .config import VAEConfig, ValueRange
from .generator import Generator, Noise, run_chunked

__all__ = ["OnnxGenerator", "onnx_paths", "read_onnx_metadata", "graph_sha256", "GRAPHS", "ONNX_FORMAT_VERSION"]

GRAPHS = ("augmenter", "encoder", "sampler")
ONNX_FORMAT_VERSION = 1
_PREFIX = "vaeaug."


def onnx_paths(path: str | os.PathLike[str]) -> dict[str, Path]:
    """The three files of an export named ``path`` (the augmenter; the others beside it).

    Example:
        >>> {k: v.name for k, v in onnx_paths("out/m.onnx").items()}
        {'augmenter': 'm.onnx', 'encoder': 'm.encoder.onnx', 'sampler': 'm.sampler.onnx'}
    """
    p = Path(path)
    if p.suffix != ".onnx":
        raise ValueError(f"an ONNX export's path must end in .onnx; got {str(path)!r}")
    stem = p.name[: -len(".onnx")]
    return {"augmenter": p, "encoder": p.with_name(f"{stem}.encoder.onnx"),
            "sampler": p.with_name(f"{stem}.sampler.onnx")}


# --- metadata, read without onnx or torch: a few top-level fields of the ModelProto message --------


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated or malformed protobuf varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """``(field number, wire type, value)`` of one protobuf message (values of type 2 as bytes)."""
    out: list[tuple[int, int, Any]] = []
    i = 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        num, wire = tag >> 3, tag & 7
        if num == 0:
            raise ValueError("protobuf field number 0")
        v: Any
        if wire == 0:
            v, i = _varint(buf, i)
        elif wire == 1:
            v, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wire == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if i > len(buf):
            raise ValueError("truncated protobuf message")
        out.append((num, wire, v))
    return out


def graph_sha256(blob: bytes) -> str:
    """SHA-256 of the ``graph`` field (7) of a serialized ModelProto: the nodes and the weights.

    Recorded in the metadata at export (which lives outside that field), so a damaged or edited
    weight is caught when the file is opened.
    """
    import hashlib

    graphs = [v for num, wire, v in _fields(blob) if num == 7 and wire == 2]
    if len(graphs) != 1:
        raise ValueError(f"expected one graph, found {len(graphs)}")
    return hashlib.sha256(graphs[0]).hexdigest()


def _metadata_props(path: Path) -> dict[str, str]:
    """``metadata_props`` (field 14 of ModelProto) of an ONNX file; ``ValueError`` if it is not one.

    The graph's SHA-256 is returned under ``"vaeaug.actual_graph_sha256"`` to be checked."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"ONNX file not found: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a directory; expected an .onnx file written by vaeaug export") from None
    try:
        fields = _fields(blob)
        if not any(num == 1 and wire == 0 for num, wire, _ in fields):  # ir_version
            raise ValueError("no ir_version field")
        if not any(num == 7 and wire == 2 for num, wire, _ in fields):  # graph
            raise ValueError("no graph")
        props: dict[str, str] = {}
        for num, wire, v in fields:
            if num == 14 and wire == 2:
                entry = {n: val for n, w, val in _fields(v) if w == 2}
                props[entry.get(1, b"").decode("utf-8")] = entry.get(2, b"").decode("utf-8")
        props[_PREFIX + "actual_graph_sha256"] = graph_sha256(blob)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{path} is not a valid ONNX file ({e}); it may be truncated or corrupt - export it again with "
            "vaeaug export model.vae --out model.onnx"
        ) from None
    return props


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The vaeaug description stored in an exported ONNX file, validated (no torch, no onnx needed).

    Args:
        path: one of the files written by :func:`vaeaug.export_onnx`.

    Returns:
        ``{"graph", "format_version", "vaeaug_version", "model_sha256", "config" (VAEConfig),
        "value_range" (ValueRange), "class_names", "augment"}``.

    Raises:
        ValueError: not an ONNX file, an ONNX file that vaeaug did not export, a newer format
            version, or metadata that does not validate.
    """
    p = Path(path)
    props = _metadata_props(p)
    if _PREFIX + "format_version" not in props:
        raise ValueError(
            f"{p} is an ONNX model but not one exported by vaeaug (no vaeaug metadata); export a vaeaug "
            "model with vaeaug.export_onnx or 'vaeaug export model.vae --out model.onnx'"
        )
    try:
        version = int(props[_PREFIX + "format_version"])
        if version > ONNX_FORMAT_VERSION:
            raise ValueError(
                f"format version {version} is newer than this vaeaug understands ({ONNX_FORMAT_VERSION}); "
                "upgrade vaeaug"
            )
        graph = props[_PREFIX + "graph"]
        if graph not in GRAPHS:
            raise ValueError(f"unknown graph {graph!r}; expected one of {GRAPHS}")
        class_names = json.loads(props[_PREFIX + "class_names"])
        names_ok = isinstance(class_names, list) and all(isinstance(c, str) for c in class_names)
        if class_names is not None and not names_ok:
            raise ValueError(f"class_names must be null or a list of strings; got {class_names!r}")
        augment = json.loads(props[_PREFIX + "augment"])
        if augment is not None:
            from .settings import AugmentSetting

            AugmentSetting.from_dict(augment)
        if props[_PREFIX + "graph_sha256"] != props[_PREFIX + "actual_graph_sha256"]:
            raise ValueError("the graph's SHA-256 differs from the one recorded at export: the file is corrupt or "
                             "was edited - export the model again")
        sha = props[_PREFIX + "model_sha256"]
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ValueError(f"model_sha256 must be 64 hex digits; got {sha!r}")
        meta = {
            "graph": graph,
            "format_version": version,
            "vaeaug_version": props[_PREFIX + "version"],
            "model_sha256": sha,
            "config": VAEConfig.from_dict(json.loads(props[_PREFIX + "config"])),
            "value_range": ValueRange.from_dict(json.loads(props[_PREFIX + "value_range"])),
            "class_names": class_names,
            "augment": augment,
        }
    except KeyError as e:
        raise ValueError(f"{p}: vaeaug metadata lacks {e.args[0]!r}; export the model again") from None
    except (ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{p}: invalid vaeaug metadata: {e}") from None
    return meta


# --- the generator -------------------------------------------------------------------------------


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


class OnnxGenerator(Generator):
    """The onnxruntime backend of :class:`~vaeaug.generator.Generator`: numpy in, numpy out.

    Torch tensors are accepted too (moved to the CPU, returned as tensors on their device), so the
    torchvision transform and the dataset can use this backend; generating never imports torch.

    Args:
        path: the augmenter file of an export (``m.onnx``); ``m.encoder.onnx`` and
            ``m.sampler.onnx`` are expected beside it, and are opened only when a mode needs them.
        threads: onnxruntime intra-op threads per session (1 fits a DataLoader worker).
        inter_op_threads: inter-op threads per session.
        spinning: let idle threads spin (faster for a busy main process, wasteful in workers).
        providers: onnxruntime execution providers (default: CPU).
        chunk_size: rows per session call when ``invariant=True`` (zero-padded last chunk).

    Example:
        >>> import os, tempfile, numpy as np, vaeaug
        >>> from vaeaug.rng import derive_keys
        >>> path = os.path.join(tempfile.mkdtemp(), "m.onnx")
        >>> _ = vaeaug.export_onnx(vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 8, 8))), path)
        >>> gen = OnnxGenerator(path)
        >>> x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
        >>> gen.variants(x, noise=Noise.from_keys(derive_keys(0, np.arange(3)), 16)).shape
        (3, 1, 8, 8)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        threads: int = 1,
        inter_op_threads: int = 1,
        spinning: bool = False,
        providers: list[str] | None = None,
        chunk_size: int = 64,
    ) -> None:
        for name, v in (("threads", threads), ("inter_op_threads", inter_op_threads), ("chunk_size", chunk_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {v!r}")
        self.paths = onnx_paths(path)
        meta = read_onnx_metadata(self.paths["augmenter"])
        if meta["graph"] != "augmenter":
            raise ValueError(
                f"{path} is the {meta['graph']} graph of an export; pass the export's main file "
                f"(the one without .{meta['graph']} in its name)"
            )
        self.source = str(self.paths["augmenter"])
        self.model_sha256: str = meta["model_sha256"]
        self.config = meta["config"]
        self.value_range = meta["value_range"]
        self.class_names = meta["class_names"]
        self.augment = meta["augment"]
        self.threads = threads
        self.inter_op_threads = inter_op_threads
        self.spinning = bool(spinning)
        self.providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        self.chunk_size = chunk_size
        self._sessions: dict[str, Any] = {}
        self._moves: dict[tuple[int, str, float], tuple[np.ndarray, np.ndarray]] = {}
        self._pid = os.getpid()

    # --- sessions: lazy, per process, never pickled -------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_sessions"] = {}
        return state

    def _session(self, graph: str) -> Any:
        if self._pid != os.getpid():  # inherited by fork: onnxruntime sessions are not fork-safe
            self._sessions, self._pid = {}, os.getpid()
        sess = self._sessions.get(graph)
        if sess is None:
            try:
                import onnxruntime as ort
            except ImportError as e:
                raise ImportError(
                    f"the ONNX backend needs onnxruntime: pip install 'vaeaug[onnx]' (import failed: {e})"
                ) from e
            path = self.paths[graph]
            if graph != "augmenter":
                meta = read_onnx_metadata(path)
                if meta["graph"] != graph or meta["model_sha256"] != self.model_sha256:
                    raise ValueError(
                        f"{path} does not belong to the export {self.paths['augmenter']} (another model or "
                        "graph); export the model again so that the three files match"
                    )
            so = ort.SessionOptions()
            so.intra_op_num_threads = self.threads
            so.inter_op_num_threads = self.inter_op_threads
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            spin = "1" if self.spinning else "0"
            so.add_session_config_entry("session.intra_op.allow_spinning", spin)
            so.add_session_config_entry("session.inter_op.allow_spinning", spin)
            try:
                sess = ort.InferenceSession(str(path), so, providers=self.providers)
            except Exception as e:  # onnxruntime raises its own exception types
                raise ValueError(f"onnxruntime could not open {path}: {e}") from None
            self._sessions[graph] = sess
        return sess

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._session(graph).run(None, feeds)  # type: ignore[no-any-return]

    # --- the graphs ---------------------------------------------------------------------------

    def encode(self, x: np.ndarray, y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Posterior ``(mu, logvar)`` of ``x`` (model space, float32) with the encoder graph."""
        feeds = {"x": x} if y is None else {"x": x, "y": y}
        mu, logvar = self._run("encoder", feeds)
        return mu, logvar

    def decode(self, z: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """Samples in ``[0, 1]`` decoded from latent codes ``z`` with the sampler graph."""
        feeds = {"z": z} if y is None else {"z": z, "y": y}
        return self._run("sampler", feeds)[0]

    def _move_inputs(self, n: int, mode: str, strength: float) -> tuple[np.ndarray, np.ndarray]:
        """The augmenter's ``strength`` and ``sigma_weight`` rows (cached: read-only, reused per call)."""
        key = (n, mode, strength)
        found = self._moves.get(key)
        if found is None:
            s = np.full(n, 0.0 if mode == "reconstruct" else strength, np.float32)
            w = np.full(n, 1.0 if mode == "posterior" else 0.0, np.float32)
            s.flags.writeable = w.flags.writeable = False
            if len(self._moves) > 64:
                self._moves.clear()
            found = self._moves[key] = (s, w)
        return found

    def _perturb(self, mode: str, strength: float, form: str, x: np.ndarray, y: np.ndarray | None,
                 eps: np.ndarray, t: np.ndarray, xb: np.ndarray | None) -> np.ndarray:
        """The functional core's modes on numpy batches (mirrors :func:`vaeaug.functional.perturb`)."""
        n = x.shape[0]
        if mode == "prior":
            return self.decode(eps, y)
        if mode in ("posterior", "isotropic", "reconstruct") and form == "delta":
            s, w = self._move_inputs(n, mode, strength)
            feeds = {"x": x, "eps": eps, "strength": s, "sigma_weight": w}
            if y is not None:
                feeds["y"] = y
            return self._run("augmenter", feeds)[0]
        s32 = np.float32(strength)
        if mode == "interpolate":
            assert xb is not None
            mus, _ = self.encode(np.concatenate([x, xb]), None if y is None else np.concatenate([y, y]))
            mu, mu_b = mus[:n], mus[n:]
            wt = (np.float32(0.5) * s32 * t.astype(np.float32)).reshape(-1, 1)
            z = (np.float32(1.0) - wt) * mu + wt * mu_b
        else:
            mu, logvar = self.encode(x, y)
            if mode == "posterior":
                z = mu + s32 * np.exp(np.float32(0.5) * logvar) * eps
            elif mode == "isotropic":
                z = mu + s32 * eps
            else:
                z = mu
        if form == "decode":
            return self.decode(z.astype(np.float32, copy=False), y)
        both = self.decode(np.concatenate([z, mu]).astype(np.float32, copy=False),
                           None if y is None else np.concatenate([y, y]))
        return np.clip(x + (both[:n] - both[n:]), 0.0, 1.0)

    def variants(
        self,
        x: Any,
        y: Any = None,
        *,
        mode: str = "isotropic",
        strength: float = 1.0,
        form: str | None = None,
        noise: Noise,
        partner: Any = None,
        invariant: bool = False,
    ) -> Any:
        form = self.resolve_form(mode, form, strength)
        as_torch = _is_torch(x)
        xn = x.detach().cpu().numpy() if as_torch else x
        if xn.dtype != np.float32 or not xn.flags.c_contiguous:
            xn = np.ascontiguousarray(xn, dtype=np.float32)
        want = tuple(self.config.input_shape)
        if xn.ndim != len(want) + 1 or tuple(xn.shape[1:]) != want:
            raise ValueError(f"expected x of shape (N, {', '.join(map(str, want))}); got {tuple(xn.shape)}")
        n = xn.shape[0]
        if len(noise) != n:
            raise ValueError(f"noise is for {len(noise)} samples but x has {n}")
        yn = self._labels(y, n)
        xb = None
        if mode == "interpolate":
            if partner is None:
                raise ValueError("mode 'interpolate' needs partner samples of the same class")
            xb = np.ascontiguousarray(np.asarray(partner.detach().cpu() if _is_torch(partner) else partner,
                                                 dtype=np.float32))
            if xb.shape != xn.shape:
                raise ValueError(f"partner must have the shape of x {xn.shape}; got {xb.shape}")
        eps, t = noise.eps, noise.t
        if eps.dtype != np.float32 or not eps.flags.c_contiguous:
            eps = np.ascontiguousarray(eps, dtype=np.float32)
        if t.dtype != np.float32:
            t = t.astype(np.float32)
        if n == 0:
            out = np.zeros_like(xn)
        elif not invariant:
            out = self._perturb(mode, float(strength), form, xn, yn, eps, t, xb)
        else:
            s = float(strength)
            out = run_chunked(lambda xc, yc, ec, tc, bc: self._perturb(mode, s, form, xc, yc, ec, tc, bc),
                              self.chunk_size, xn, yn, eps, t, xb)
        if as_torch:
            import torch

            return torch.from_numpy(out).to(x.device)
        return out

    def _labels(self, y: Any, n: int) -> np.ndarray | None:
        if not self.conditional:
            if y is not None:
                raise ValueError("labels were given to an unconditional model; pass y=None")
            return None
        if y is None:
            raise ValueError(f"this model is class-conditional ({self.config.num_classes} classes): pass the labels y")
        yn = np.asarray(y.detach().cpu() if _is_torch(y) else y)
        if yn.dtype.kind not in "iu":
            raise ValueError(f"labels must be integers; got dtype {yn.dtype}")
        yn = yn.reshape(-1).astype(np.int64)
        if yn.size == 1 and n != 1:
            yn = np.repeat(yn, n)
        if yn.shape != (n,):
            raise ValueError(f"labels must have shape ({n},); got {yn.shape}")
        k = int(self.config.num_classes)
        if n and (int(yn.min()) < 0 or int(yn.max()) >= k):
            raise ValueError(f"labels must be in 0..{k - 1}; got values in [{int(yn.min())}, {int(yn.max())}]")
        return yn

    def describe(self) -> str:
        return f"{super().describe()} [onnx]"
