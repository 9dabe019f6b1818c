"""``OnnxBackend``: the Backend interface on onnxruntime, with only numpy (no torch needed).

An export (:func:`vaeaug.export_onnx`; files and metadata: :mod:`.onnx_metadata`) is three graphs:

* ``m.onnx``, the **augmenter**: ``(x, eps, strength, sigma_weight[, y]) -> variants``, the
  ``delta`` form of the Gaussian moves in one graph (``posterior`` at ``sigma_weight = 1``,
  ``isotropic`` at 0, ``reconstruct`` at ``strength = 0``), both decoder passes batched. This is
  the library default and the path that runs at batch 1 in a DataLoader worker.
* ``m.encoder.onnx``: ``(x[, y]) -> (mu, logvar)``.
* ``m.sampler.onnx``: ``(z[, y]) -> x``, the decoder: ``prior`` samples and, with the encoder,
  the ``decode`` form and the partner modes ``interpolate`` and ``extrapolate`` (the latent move
  then runs in numpy, same math).

The encoder and sampler graphs are also the two stages of amortized generation
(:meth:`encode_sources`: ``mu``, ``logvar`` and ``D(mu)`` once per source; :meth:`generate_encoded`:
one sampler pass per variant), which the dataset, pre-generation and ``invariant=True`` use; no
other graph is needed. Their variants equal the augmenter's within float rounding (1.2e-7 measured).

Noise is an input of every graph, drawn from the same counter-based keys (:mod:`vaeaug.core.rng`) as
the torch backend, so both backends give the same variants for the same seed (within 1e-4).
Sessions are created lazily, in the process that uses them, never inherited across ``fork``
and never pickled; by default one intra-op and one inter-op thread without spinning, the right
setting inside DataLoader workers.

Every file is verified before use (:mod:`.onnx_metadata`: a whole-file checksum, no external data,
metadata in range and matching the graph's inputs and outputs), and a session is made from the
verified bytes themselves, never from the path: the augmenter must still be the file that was
opened, and the encoder and sampler must carry the augmenter's description (same model, config,
value range, class names and setting).
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import numpy as np

from vaeaug.backends.onnx.metadata import onnx_paths, read_onnx_file, read_onnx_metadata
from vaeaug.core.backend import Backend, run_chunked
from vaeaug.core.codecs import is_tensor as _is_torch
from vaeaug.core.functional import Encodings, call_rows, encode_sources, perturb, perturb_encoded
from vaeaug.core.rng import Noise
from vaeaug.core.settings import AugmentSetting
from vaeaug.core.values import check_int

__all__ = ["OnnxBackend"]

_ORT_FATAL = 4  # onnxruntime's log severity: only fatal errors print (on stderr, in colour, beside vaeaug's own)

# what the three files of one export share: a companion file must agree with the augmenter on all of it
_SHARED = ("format_version", "model_sha256", "config", "value_range", "class_names", "augment")


class OnnxBackend(Backend):
    """The onnxruntime backend of :class:`~vaeaug.core.backend.Backend`: numpy in, numpy out.

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
        >>> path = os.path.join(tempfile.mkdtemp(), "m.onnx")
        >>> _ = vaeaug.export_onnx(vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 8, 8))), path)
        >>> gen = OnnxBackend(path)
        >>> x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
        >>> gen.variants(x, seed=0).shape
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
            check_int(name, v, 1)
        self.paths = onnx_paths(path)
        meta = read_onnx_metadata(self.paths["augmenter"])
        if meta["graph"] != "augmenter":
            raise ValueError(
                f"{path} is the {meta['graph']} graph of an export; pass the export's main file "
                f"(the one without .{meta['graph']} in its name)"
            )
        self.source = str(self.paths["augmenter"])
        self._file_sha256: str = meta["sha256"]
        self._identity = {k: meta[k] for k in _SHARED}
        self.model_sha256: str = meta["model_sha256"]
        self.config = meta["config"]
        self._call_rows = call_rows(math.prod(self.config.input_shape))  # rows per call without invariant
        self.value_range = meta["value_range"]
        self.class_names = meta["class_names"]
        self.augment = meta["augment"]
        self.threads = threads
        self.inter_op_threads = inter_op_threads
        self.spinning = bool(spinning)
        self.providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        self.chunk_size = chunk_size
        self._sessions: dict[str, Any] = {}
        self._runners: dict[str, Any] = {}
        self._moves: dict[tuple[int, str, float], tuple[np.ndarray, np.ndarray]] = {}
        self._pid = os.getpid()

    # --- sessions: lazy, per process, never pickled -------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_sessions"], state["_runners"] = {}, {}
        return state

    def _session(self, graph: str) -> Any:
        if self._pid != os.getpid():  # inherited by fork: onnxruntime sessions are not fork-safe
            self._sessions, self._runners, self._pid = {}, {}, os.getpid()
        sess = self._sessions.get(graph)
        if sess is None:
            try:
                import onnxruntime as ort
            except ImportError as e:
                raise ImportError(
                    f"the ONNX backend needs onnxruntime: pip install 'vaeaug[onnx]' (import failed: {e})"
                ) from e
            path = self.paths[graph]
            blob, meta = read_onnx_file(path)  # verified again: the file may have changed since __init__
            if graph == "augmenter" and meta["sha256"] != self._file_sha256:
                raise ValueError(
                    f"{path} changed since this generator opened it (its SHA-256 is now {meta['sha256'][:16]}...); "
                    "create the generator again to use the new file"
                )
            if meta["graph"] != graph or {k: meta[k] for k in _SHARED} != self._identity:
                raise ValueError(
                    f"{path} does not belong to the export {self.paths['augmenter']} (the {meta['graph']} graph of "
                    "another model, or another description); export the model again so that the three files match"
                )
            so = ort.SessionOptions()
            so.log_severity_level = _ORT_FATAL  # its errors reach the caller as vaeaug's ValueError, said once
            so.intra_op_num_threads = self.threads
            so.inter_op_num_threads = self.inter_op_threads
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            spin = "1" if self.spinning else "0"
            so.add_session_config_entry("session.intra_op.allow_spinning", spin)
            so.add_session_config_entry("session.inter_op.allow_spinning", spin)
            try:
                sess = ort.InferenceSession(blob, so, providers=self.providers)  # the bytes verified above
            except Exception as e:  # onnxruntime raises its own exception types
                raise ValueError(f"onnxruntime could not open {path}: {e}") from None
            runner = _runner(sess, ort, self.providers)
            self._probe(graph, runner)
            self._sessions[graph] = sess
            self._runners[graph] = runner
        return sess

    def _probe(self, graph: str, runner: Any) -> None:
        """Run a new session once on 2 rows of the inputs its metadata describes (labels 0 and the last class).

        What the graph's declared inputs and outputs cannot show (the number of classes its one-hot
        table holds, shapes inside the graph) shows here, as a ``ValueError`` when the session is
        created instead of an onnxruntime error in the middle of generating.
        """
        cfg, n = self.config, 2
        x = np.zeros((n, *cfg.input_shape), np.float32)
        z = np.zeros((n, cfg.latent_dim), np.float32)
        feeds: dict[str, np.ndarray] = {
            "augmenter": {"x": x, "eps": z, "strength": np.ones(n, np.float32), "sigma_weight": np.ones(n, np.float32)},
            "encoder": {"x": x}, "sampler": {"z": z}}[graph]
        if cfg.num_classes:
            feeds["y"] = np.array([0, cfg.num_classes - 1], np.int64)
        want = {"augmenter": [x.shape], "encoder": [z.shape, z.shape], "sampler": [x.shape]}[graph]
        try:
            out = runner(feeds)
        except Exception as e:  # onnxruntime raises its own exception types
            raise ValueError(
                f"{self.paths[graph]}: the {graph} graph does not run on the inputs its metadata describes "
                f"(input_shape {list(cfg.input_shape)}, latent_dim {cfg.latent_dim}, num_classes {cfg.num_classes}): "
                f"{str(e)[:500]} - the metadata does not describe this graph; export the model again "
                "(vaeaug export model.vae --out model.onnx)"
            ) from None
        got = [tuple(o.shape) for o in out]
        if got != want or not all(np.isfinite(o).all() for o in out):
            raise ValueError(
                f"{self.paths[graph]}: the {graph} graph gives outputs of shapes {got} (finite: "
                f"{all(np.isfinite(o).all() for o in out)}) on inputs its metadata describes; expected finite "
                f"outputs of shapes {want} - export the model again (vaeaug export model.vae --out model.onnx)"
            )

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        run = self._runners.get(graph) if self._pid == os.getpid() else None
        if run is None:
            self._session(graph)
            run = self._runners[graph]
        return run(feeds)  # type: ignore[no-any-return]

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

    def _perturb(self, setting: AugmentSetting, x: np.ndarray, y: np.ndarray | None, eps: np.ndarray,
                 t: np.ndarray, xb: np.ndarray | None) -> np.ndarray:
        """One batch: the augmenter graph for the delta form of the Gaussian moves (its own traced copy of
        :func:`vaeaug.core.functional.perturb`, chunked by the same rule), the encoder and sampler graphs
        around :func:`vaeaug.core.functional.perturb` on numpy arrays for everything else."""
        mode = setting.mode
        if setting.form != "delta" or mode not in ("posterior", "isotropic", "reconstruct"):
            return perturb(self, x, y, mode=mode, strength=setting.strength, form=setting.form, eps=eps, t=t, x_b=xb)
        rows = max(1, self._call_rows // 2)  # the graph decodes z' and mu of its rows in one call
        if x.shape[0] > rows:
            return np.concatenate([self._perturb(setting, x[lo:lo + rows], None if y is None else y[lo:lo + rows],
                                                 eps[lo:lo + rows], t[lo:lo + rows], None)
                                   for lo in range(0, x.shape[0], rows)])
        s, w = self._move_inputs(x.shape[0], mode, setting.strength)
        feeds = {"x": x, "eps": eps, "strength": s, "sigma_weight": w}
        if y is not None:
            feeds["y"] = y
        return self._run("augmenter", feeds)[0]  # type: ignore[no-any-return]

    def generate(self, setting: AugmentSetting, x: Any, y: np.ndarray | None, noise: Noise, partner: Any = None,
                 invariant: bool = False) -> Any:
        if invariant:
            return self.generate_in_stages(setting, x, y, noise, partner, invariant)
        xn = _float32(x)
        xb = None if partner is None else _float32(partner)
        eps = noise.eps if noise.eps.flags.c_contiguous else np.ascontiguousarray(noise.eps)
        return self._checked(self._perturb(setting, xn, y, eps, noise.t, xb), setting, x)

    def encode_sources(self, x: Any, y: np.ndarray | None, *, delta: bool, invariant: bool = False) -> Encodings:
        def run(xc: np.ndarray, yc: np.ndarray | None) -> tuple[Any, ...]:
            e = encode_sources(self, xc, yc, delta=delta)
            return e.mu, e.logvar, e.d_mu

        mu, logvar, d_mu = run_chunked(run, self.chunk_size if invariant else self._call_rows, _float32(x), y,
                                       pad=invariant)
        return Encodings(mu, logvar, d_mu)

    def generate_encoded(self, setting: AugmentSetting, x: Any, enc: Encodings | None, y: np.ndarray | None,
                         noise: Noise, partner_mu: np.ndarray | None = None, invariant: bool = False) -> Any:
        mode, s, form = setting.mode, setting.strength, setting.form

        def run(xc: Any, yc: Any, ec: Any, tc: Any, mc: Any, lc: Any, dc: Any, bc: Any) -> Any:
            return perturb_encoded(self, xc, Encodings(mc, lc, dc), yc, mode=mode, strength=s, eps=ec, form=form,
                                   t=tc, mu_b=bc)

        mu, logvar, d_mu = (None, None, None) if enc is None else (enc.mu, enc.logvar, enc.d_mu)
        out = run_chunked(run, self.chunk_size if invariant else self._call_rows, _float32(x), y, noise.eps, noise.t,
                          mu, logvar, d_mu, partner_mu, pad=invariant)
        return self._checked(out, setting, x)

    def _checked(self, out: np.ndarray, setting: AugmentSetting, like: Any) -> Any:
        """``out`` refused if not finite, else returned as the type of ``like`` (a tensor on its device)."""
        if not np.isfinite(out).all():  # about 1 us a call: a graph's operators are whatever its file says
            raise ValueError(
                f"{self.source}: the export's graphs gave non-finite values (NaN or inf) for {setting.label()}; "
                "vaeaug's exports never do (their log-variances are clamped, their weights bounded) - the graphs "
                "were edited: export the model again (vaeaug export model.vae --out model.onnx)"
            )
        if _is_torch(like):
            return sys.modules["torch"].from_numpy(out).to(like.device)
        return out

    def describe(self) -> str:
        return f"{super().describe()} [onnx]"


def _float32(a: Any) -> np.ndarray:
    """A numpy array or a torch tensor as C-contiguous float32 numpy (no copy where it already is)."""
    a = a.detach().cpu().numpy() if _is_torch(a) else a
    return a if a.dtype == np.float32 and a.flags.c_contiguous else np.ascontiguousarray(a, dtype=np.float32)


def _runner(sess: Any, ort: Any, providers: list[str]) -> Any:
    """``feeds -> outputs`` for a session. On the CPU provider it calls the session's C++ ``run`` directly:
    the Python wrapper's per-call input checks (done once here, by vaeaug) cost 14% of a batch-1 call of
    the default 28x28 augmenter (118 against 136 us, BENCHMARKS.md); elsewhere, the public ``run``."""
    inner: Any = getattr(sess, "_sess", None)
    names = [o.name for o in sess.get_outputs()]
    options = ort.RunOptions()
    options.log_severity_level = _ORT_FATAL
    if providers == ["CPUExecutionProvider"] and callable(getattr(inner, "run", None)):
        return lambda feeds: inner.run(names, feeds, options)
    return lambda feeds: sess.run(None, feeds, options)
