"""ONNX export and the onnxruntime backend: sizes, dynamic batch, agreement with torch, metadata,
torch-free use, pickling, real DataLoader workers, and bad files."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import vaeaug
from vaeaug import OnnxBackend, VAEAugment, VAEAugmentedDataset, export_onnx, read_onnx_metadata
from vaeaug.backends.onnx.metadata import onnx_paths
from vaeaug.backends.torch_backend import TorchBackend
from vaeaug.core.rng import Noise, derive_keys
from vaeaug.core.settings import PARTNER_MODES

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from _helpers import ConstantImages, digits_conditional_model, digits_model, digits_uint8  # noqa: E402

ATOL = 1e-4


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def model() -> vaeaug.VAE:
    return digits_model()


@pytest.fixture(scope="module")
def cmodel() -> vaeaug.VAE:
    m = digits_conditional_model()
    return m


@pytest.fixture(scope="module")
def onnx_path(model: vaeaug.VAE, out_dir: Path) -> Path:
    return export_onnx(model, out_dir / "digits.onnx")["augmenter"]


@pytest.fixture(scope="module")
def c_onnx_path(cmodel: vaeaug.VAE, out_dir: Path) -> Path:
    return export_onnx(cmodel, out_dir / "cdigits.onnx")["augmenter"]


@pytest.fixture(scope="module")
def u8() -> np.ndarray:
    return digits_uint8()[0][:256]


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return digits_uint8()[1][:256]


def _noise(n: int, latent: int, seed: int = 0) -> Noise:
    return Noise.from_keys(derive_keys(seed, np.arange(n)), latent)


def _both(gen_a: Any, gen_b: Any, x: np.ndarray, y: Any, **kw: Any) -> float:
    a = gen_a.variants(x, y, **kw)
    b = gen_b.variants(x, y, **kw)
    assert a.shape == b.shape == x.shape
    return float(np.max(np.abs(a - b)))


# --------------------------------------------------------------------------- export at many sizes


@pytest.mark.parametrize("shape", [(1, 20, 20), (3, 28, 28), (1, 32, 32), (3, 25, 25), (12,)])
def test_export_any_size_dynamic_batch_and_agreement(shape: tuple[int, ...], tmp_path: Path) -> None:
    """Untrained models of every supported kind export; batch 1, 7 and 256 all run and match torch."""
    vae = vaeaug.VAE(vaeaug.VAEConfig(input_shape=shape, latent_dim=8))
    paths = export_onnx(vae, tmp_path / "m.onnx")
    assert sorted(p.name for p in paths.values()) == ["m.encoder.onnx", "m.onnx", "m.sampler.onnx"]
    sess = ort.InferenceSession(str(paths["augmenter"]), providers=["CPUExecutionProvider"])
    inputs = {i.name: i.shape for i in sess.get_inputs()}
    assert list(inputs) == ["x", "eps", "strength", "sigma_weight"]
    assert isinstance(inputs["x"][0], str) and inputs["x"][1:] == list(shape), "the batch must be dynamic"
    gen, ref = OnnxBackend(paths["augmenter"]), TorchBackend(vae)
    rng = np.random.default_rng(1)
    for n in (1, 7, 256):
        x = rng.random((n, *shape), dtype=np.float32)
        for mode, form in [("isotropic", "delta"), ("posterior", "decode"), ("reconstruct", "delta")]:
            assert _both(gen, ref, x, None, mode=mode, form=form, strength=1.5, noise=_noise(n, 8)) <= ATOL


def test_conditional_export_serves_every_mode(cmodel: vaeaug.VAE, c_onnx_path: Path, labels: np.ndarray) -> None:
    gen, ref = OnnxBackend(c_onnx_path), TorchBackend(cmodel)
    assert [i.name for i in ort.InferenceSession(str(c_onnx_path)).get_inputs()][-1] == "y"
    x = digits_uint8()[0][:7, None].astype(np.float32) / 255.0
    y = labels[:7].astype(np.int64)
    noise = _noise(7, cmodel.config.latent_dim)
    for mode in ("posterior", "isotropic", "reconstruct", *PARTNER_MODES):
        for form in ("delta", "decode"):
            kw: dict[str, Any] = {"mode": mode, "form": form, "noise": noise, "strength": 1.0}
            if mode in PARTNER_MODES:
                kw["partner"] = x[::-1].copy()
            assert _both(gen, ref, x, y, **kw) <= ATOL, (mode, form)
    assert _both(gen, ref, x, y, mode="prior", form="decode", noise=noise) <= ATOL
    other = gen.variants(x, (y + 1) % 10, mode="prior", noise=noise)
    assert np.abs(other - gen.variants(x, y, mode="prior", noise=noise)).max() > 0.05, "the label must matter"


def test_noise_is_an_input_and_the_graph_is_deterministic(onnx_path: Path, u8: np.ndarray) -> None:
    for p in onnx_paths(onnx_path).values():
        ops = {node.op_type for node in onnx.load(str(p)).graph.node}
        assert not any(op.startswith("Random") for op in ops), ops
    gen = OnnxBackend(onnx_path)
    x = u8[:5, None].astype(np.float32) / 255.0
    a = gen.variants(x, noise=_noise(5, 16))
    assert np.array_equal(a, gen.variants(x, noise=_noise(5, 16)))
    assert not np.array_equal(a, gen.variants(x, noise=_noise(5, 16, seed=1)))


def test_invariant_outputs_do_not_depend_on_the_batch(onnx_path: Path, u8: np.ndarray) -> None:
    gen = OnnxBackend(onnx_path, chunk_size=16)
    x = u8[:40, None].astype(np.float32) / 255.0
    whole = gen.variants(x, noise=_noise(40, 16), invariant=True)
    noise = _noise(40, 16)
    part = gen.variants(x[13:29], noise=Noise(noise.eps[13:29], noise.t[13:29]), invariant=True)
    assert np.array_equal(whole[13:29], part)


# --------------------------------------------------------------------------- metadata


def test_metadata_round_trip(tmp_path: Path) -> None:
    vae = vaeaug.fit("digits", epochs=1, progress=False, conditional=True)
    vae.augment = {"mode": "posterior", "strength": 2.0, "form": "delta", "p": 0.25}
    vae.save(tmp_path / "m.vae")
    paths = export_onnx(tmp_path / "m.vae", tmp_path / "m.onnx")
    file_sha = hashlib.sha256((tmp_path / "m.vae").read_bytes()).hexdigest()
    for graph, p in paths.items():
        meta = read_onnx_metadata(p)
        assert meta["graph"] == graph
        assert meta["config"] == vae.config
        assert meta["value_range"] == vae.value_range
        assert meta["class_names"] == vae.class_names == [str(i) for i in range(10)]
        assert meta["augment"] == vae.augment
        assert meta["model_sha256"] == file_sha, "the export names the exact model file it came from"
        props = {e.key: e.value for e in onnx.load(str(p)).metadata_props}  # readable by any ONNX tool
        assert json.loads(props["vaeaug.config"]) == vae.config.to_dict()
    gen = OnnxBackend(paths["augmenter"])
    assert gen.augment == vae.augment and gen.conditional and gen.latent_dim == vae.config.latent_dim
    aug = VAEAugment(paths["augmenter"])  # the tuned setting travels with the export
    assert (aug.mode, aug.strength, aug.form, aug.p) == ("posterior", 2.0, "delta", 0.25)


# --------------------------------------------------------------------------- torch-free use


# a process where torch cannot be imported: None in sys.modules makes "import torch" raise
# ImportError and importlib.util.find_spec("torch") answer None, as if it were not installed
_NO_TORCH = """
import json, sys
sys.modules["torch"] = sys.modules["torchvision"] = None
import numpy as np
"""


def test_generation_and_albumentations_without_torch(onnx_path: Path, model: vaeaug.VAE, u8: np.ndarray,
                                                     tmp_path: Path) -> None:
    np.save(tmp_path / "img.npy", u8[:4])
    code = _NO_TORCH + textwrap.dedent(f"""
        import vaeaug
        from vaeaug import OnnxBackend
        from vaeaug.core.rng import Noise
        from vaeaug.core.rng import derive_keys
        x = np.load({str(tmp_path / "img.npy")!r})
        gen = OnnxBackend({str(onnx_path)!r})
        noise = Noise.from_keys(derive_keys(0, np.arange(4)), 16)
        out = gen.variants(x[:, None].astype(np.float32) / 255.0, noise=noise)
        np.save({str(tmp_path / "gen.npy")!r}, out)
        import albumentations as A
        from vaeaug.albumentations import VAEAugment
        pipe = A.Compose([VAEAugment({str(onnx_path)!r}, p=1.0, seed=5)])
        np.save({str(tmp_path / "alb.npy")!r}, np.stack([pipe(image=img)["image"] for img in x]))
        d = A.to_dict(pipe)
        assert A.from_dict(d).transforms[0].model == {str(onnx_path)!r}
        loaded = [m for m, v in sys.modules.items() if m.split(".")[0] in ("torch", "torchvision") and v is not None]
        print(json.dumps(loaded))
    """)
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [], "torch was imported"
    ref = TorchBackend(model).variants(u8[:4, None].astype(np.float32) / 255.0, noise=_noise(4, 16))
    assert np.abs(np.load(tmp_path / "gen.npy") - ref).max() <= ATOL
    # the same adapter with the torch backend gives the same images (uint8 rounding aside)
    import albumentations as A

    from vaeaug.albumentations import VAEAugment as AlbAugment

    pipe = A.Compose([AlbAugment(model, p=1.0, seed=5)])
    ref_alb = np.stack([pipe(image=img)["image"] for img in u8[:4]])
    alb = np.load(tmp_path / "alb.npy")
    assert alb.dtype == np.uint8 and alb.shape == (4, 8, 8)
    assert np.abs(alb.astype(int) - ref_alb.astype(int)).max() <= 1
    assert (alb != ref_alb).mean() < 0.01


# --------------------------------------------------------------------------- the transform and the dataset


def test_transform_with_onnx_matches_torch(onnx_path: Path, model: vaeaug.VAE, u8: np.ndarray) -> None:
    batch = torch.from_numpy(u8[:, None].copy())
    a = VAEAugment(str(onnx_path), p=1.0, seed=3)(batch)
    b = VAEAugment(model, p=1.0, seed=3)(batch)
    assert a.dtype == torch.uint8 and a.shape == batch.shape
    diff = (a.int() - b.int()).abs()
    assert int(diff.max()) <= 1
    assert float((diff > 0).float().mean()) < 0.01, "more than 1% of pixels differ after uint8 rounding"
    single = VAEAugment(OnnxBackend(onnx_path), p=1.0, seed=3)(batch[0])
    assert single.shape == (1, 8, 8) and single.dtype == torch.uint8
    with pytest.raises(ValueError, match="CPU"):
        VAEAugment(str(onnx_path), device="meta")


def test_dataset_with_onnx_matches_torch_and_is_worker_invariant(onnx_path: Path, model: vaeaug.VAE,
                                                                 u8: np.ndarray, labels: np.ndarray) -> None:
    base = TensorDataset(torch.from_numpy(u8[:40, None].copy()), torch.from_numpy(labels[:40]))
    ds_onnx = VAEAugmentedDataset(base, str(onnx_path), variants_per_sample=2, seed=1)
    ds_torch = VAEAugmentedDataset(base, model, variants_per_sample=2, seed=1)
    one_by_one = torch.stack([ds_onnx[i][0] for i in range(len(ds_onnx))])
    loaded = torch.cat([x for x, _ in DataLoader(ds_onnx, batch_size=16, num_workers=2,
                                                  multiprocessing_context="fork")])
    assert torch.equal(one_by_one, loaded), "ONNX variants must not depend on workers or batches"
    ref = torch.stack([ds_torch[i][0] for i in range(len(ds_torch))])
    assert torch.equal(one_by_one[:40], ref[:40])  # the real samples, untouched by either backend
    variants, ref_variants = one_by_one[40:].int(), ref[40:].int()
    assert (variants != one_by_one[:40].int().repeat_interleave(2, 0)).any(dim=(1, 2, 3)).all(), "not variants"
    assert int((variants - ref_variants).abs().max()) <= 1
    assert float((variants != ref_variants).float().mean()) < 0.01


def _epochs(ds: ConstantImages, ctx: str, seed: int) -> list[torch.Tensor]:
    loader = DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context=ctx,
                        generator=torch.Generator().manual_seed(seed))
    return [img for batch in loader for img in batch]


@pytest.mark.parametrize("ctx", ["fork", "spawn"])
def test_dataloader_workers_with_onnx(ctx: str, onnx_path: Path, u8: np.ndarray) -> None:
    aug = VAEAugment(str(onnx_path), p=1.0)
    img = torch.from_numpy(u8[0])[None].clone()
    aug(img)  # a session now exists in the parent: fork workers must not use it
    assert aug.backend._sessions  # type: ignore[attr-defined]
    ds = ConstantImages(img, aug, n=8)
    run = _epochs(ds, ctx, 0)
    assert len(run) == 8 and all(t.dtype == torch.uint8 and t.shape == (1, 8, 8) for t in run)
    assert len({t.numpy().tobytes() for t in run}) == 8, "workers repeat each other's draws"
    again = _epochs(ds, "fork", 0)
    assert all(torch.equal(a, b) for a, b in zip(run, again, strict=True)), "a seeded DataLoader must reproduce"


def test_pickle_drops_sessions_and_keeps_outputs(onnx_path: Path, u8: np.ndarray) -> None:
    gen = OnnxBackend(onnx_path)
    x = u8[:3, None].astype(np.float32) / 255.0
    a = gen.variants(x, noise=_noise(3, 16))
    assert gen._sessions
    blob = pickle.dumps(gen)
    assert b"InferenceSession" not in blob
    clone = pickle.loads(blob)
    assert clone._sessions == {} and np.array_equal(clone.variants(x, noise=_noise(3, 16)), a)
    opts = gen._session("augmenter").get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert OnnxBackend(onnx_path, threads=2)._session("augmenter").get_session_options().intra_op_num_threads == 2


def test_torch_tensors_in_and_out(onnx_path: Path, u8: np.ndarray) -> None:
    gen = OnnxBackend(onnx_path)
    x = torch.from_numpy(u8[:3, None].astype(np.float32) / 255.0)
    out = gen.variants(x, noise=_noise(3, 16))
    assert isinstance(out, torch.Tensor) and out.shape == x.shape and out.dtype == torch.float32


# --------------------------------------------------------------------------- bad files and bad input


def test_corrupt_foreign_and_mismatched_files(onnx_path: Path, c_onnx_path: Path, tmp_path: Path) -> None:
    blob = onnx_path.read_bytes()
    (tmp_path / "trunc.onnx").write_bytes(blob[: len(blob) // 3])
    with pytest.raises(ValueError, match="not a valid ONNX file"):
        OnnxBackend(tmp_path / "trunc.onnx")
    (tmp_path / "noise.onnx").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(ValueError, match="not a valid ONNX file"):
        OnnxBackend(tmp_path / "noise.onnx")
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x10  # inside the weights: still a well-formed file
    (tmp_path / "flipped.onnx").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="SHA-256 differs"):
        OnnxBackend(tmp_path / "flipped.onnx")
    (tmp_path / "model.vae.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match="not a valid ONNX file"):
        OnnxBackend(tmp_path / "model.vae.onnx")
    foreign = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["a"], ["b"])], "g",
        [onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [1])]))
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    with pytest.raises(ValueError, match="not one exported by vaeaug"):
        OnnxBackend(tmp_path / "foreign.onnx")
    with pytest.raises(ValueError, match="sampler graph"):
        OnnxBackend(onnx_paths(onnx_path)["sampler"])
    with pytest.raises(FileNotFoundError):
        OnnxBackend(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="must end in .onnx"):
        OnnxBackend(tmp_path / "m.vae")
    # a newer format version, and edited metadata
    proto = onnx.load(str(onnx_path))
    for e in proto.metadata_props:
        if e.key == "vaeaug.format_version":
            e.value = "99"
    onnx.save(proto, str(tmp_path / "newer.onnx"))
    with pytest.raises(ValueError, match="newer than this vaeaug"):
        OnnxBackend(tmp_path / "newer.onnx")
    # a sampler from another export beside this augmenter: refused when first needed
    (tmp_path / "mix.onnx").write_bytes(blob)
    (tmp_path / "mix.encoder.onnx").write_bytes(onnx_paths(onnx_path)["encoder"].read_bytes())
    (tmp_path / "mix.sampler.onnx").write_bytes(onnx_paths(c_onnx_path)["sampler"].read_bytes())
    gen = OnnxBackend(tmp_path / "mix.onnx")
    x = np.zeros((2, 1, 8, 8), np.float32)
    gen.variants(x, noise=_noise(2, 16))  # the augmenter alone is fine
    with pytest.raises(ValueError, match="does not belong to the export"):
        gen.variants(x, mode="posterior", form="decode", noise=_noise(2, 16))


def test_bad_input_to_the_onnx_generator(onnx_path: Path, c_onnx_path: Path) -> None:
    gen, cgen = OnnxBackend(onnx_path), OnnxBackend(c_onnx_path)
    x = np.zeros((2, 1, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"expected x of shape \(N, 1, 8, 8\)"):
        gen.variants(np.zeros((2, 1, 9, 9), np.float32), noise=_noise(2, 16))
    with pytest.raises(ValueError, match="noise is for 3 samples"):
        gen.variants(x, noise=_noise(3, 16))
    with pytest.raises(ValueError, match="class-conditional"):
        cgen.variants(x, noise=_noise(2, 16))
    with pytest.raises(ValueError, match="labels must be in 0..9"):
        cgen.variants(x, np.array([0, 10]), noise=_noise(2, 16))
    with pytest.raises(ValueError, match="unconditional"):
        gen.variants(x, np.array([0, 1]), noise=_noise(2, 16))
    with pytest.raises(ValueError, match="conditional"):
        gen.variants(x, mode="prior", noise=_noise(2, 16))
    for mode in PARTNER_MODES:
        with pytest.raises(ValueError, match=f"mode '{mode}' needs partner samples"):
            gen.variants(x, mode=mode, noise=_noise(2, 16))
    with pytest.raises(ValueError, match="threads"):
        OnnxBackend(onnx_path, threads=0)


def test_export_errors_leave_no_file(model: vaeaug.VAE, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="must end in .onnx"):
        export_onnx(model, tmp_path / "m.vae")
    with pytest.raises(TypeError, match="VAE or a .vae path"):
        export_onnx(object(), tmp_path / "m.onnx")  # type: ignore[arg-type]
    import vaeaug.backends.onnx.export

    monkeypatch.setattr(vaeaug.backends.onnx.export, "VERIFY_ATOL", -1.0)  # any difference now fails verification
    with pytest.raises(RuntimeError, match="verification failed"):
        export_onnx(model, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == [], "a failed verification must leave nothing behind"


@pytest.mark.parametrize("mode", PARTNER_MODES)
def test_export_verification_covers_the_partner_modes(mode: str, model: vaeaug.VAE, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """An onnxruntime path that gets one partner mode wrong (here: makes the other one's move) fails the
    export's verification, which names the mode, at batch 1 already, and leaves no file behind."""
    import vaeaug.backends.onnx_backend as onnx_generator

    right = onnx_generator.perturb
    other = {"interpolate": "extrapolate", "extrapolate": "interpolate"}[mode]

    def wrong(gen: Any, x: Any, y: Any = None, **kw: Any) -> Any:
        return right(gen, x, y, **{**kw, "mode": other if kw["mode"] == mode else kw["mode"]})

    monkeypatch.setattr(onnx_generator, "perturb", wrong)
    with pytest.raises(RuntimeError, match=f"verification failed: mode '{mode}', form 'delta', batch 1"):
        export_onnx(model, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == [], "a failed verification must leave nothing behind"
    monkeypatch.setattr(onnx_generator, "perturb", right)
    assert export_onnx(model, tmp_path / "m.onnx")["augmenter"].exists()  # the real path passes


class _DataDependent(nn.Module):
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.sum() > 0:  # control flow on data: torch.export cannot trace this
            return h
        return -h


def test_an_architecture_that_cannot_be_exported_gets_a_clear_error(tmp_path: Path) -> None:
    vae = vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 8, 8)))
    vae.decoder = nn.Sequential(vae.decoder, _DataDependent())
    with pytest.raises(RuntimeError, match="could not export the augmenter graph"):
        export_onnx(vae, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


# --------------------------------------------------------------------------- command line


def test_cli_export(model: vaeaug.VAE, tmp_path: Path) -> None:
    model.save(tmp_path / "d.vae")
    cmd = [sys.executable, "-m", "vaeaug", "export", str(tmp_path / "d.vae"), "--out", str(tmp_path / "d.onnx")]
    r = subprocess.run(cmd + ["--speed"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "verified" in r.stdout and "samples/s" in r.stdout and "d.sampler.onnx" in r.stdout
    assert read_onnx_metadata(tmp_path / "d.onnx")["model_sha256"] == \
        hashlib.sha256((tmp_path / "d.vae").read_bytes()).hexdigest()
    info = subprocess.run([sys.executable, "-m", "vaeaug", "info", str(tmp_path / "d.onnx"), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["config"] == model.config.to_dict() and described["graph"] == "augmenter"
    assert all(f["size"] > 0 for f in described["files"].values())
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--force" in again.stderr and again.stderr.count("\n") == 1
    bad = subprocess.run(cmd[:-1] + [str(tmp_path / "x.bin")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "must end in .onnx" in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "vaeaug", "export", str(tmp_path / "no.vae"), "--out",
                              str(tmp_path / "n.onnx")], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "not found" in missing.stderr
