"""``vaeaug.ray.VAEVariants`` in Ray Data, on a local Ray cluster started here, and the Ray Data recipe.

The key rule: a row's variant is a pure function of ``(seed, row id, variant id)``, so what Ray's
workers make is byte for byte what ``vaeaug.pregenerate`` writes for the same arguments, however
Ray splits the rows into blocks and batches. The cluster (2 CPUs) is started by the module's
fixture and shut down after; the tests that need no cluster call the class in this process.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import vaeaug
from vaeaug.ray import VAEVariants

ray = pytest.importorskip("ray")
pytest.importorskip("onnxruntime")
pq = pytest.importorskip("pyarrow.parquet")

RECIPES = Path(__file__).resolve().parent.parent / "examples" / "recipes"
if str(RECIPES) not in sys.path:
    sys.path.insert(0, str(RECIPES))
import ray_data  # noqa: E402  (the recipe, as a module)

N = 96  # source images in the Ray runs
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")  # Ray's own, about its settings


@pytest.fixture(scope="module")
def cluster() -> Any:
    """A local Ray cluster of 2 CPUs for this module; this module's classes travel to it by value."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=256 * 2**20)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield ray
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        ray.shutdown()


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A Fashion-MNIST model (256 images, 1 epoch) exported to ONNX, and the recipe's 256 images and labels."""
    images, labels = ray_data.fashion_mnist(256)
    path = tmp_path_factory.mktemp("ray") / "fmnist.onnx"
    vaeaug.export_onnx(vaeaug.fit(images, y=labels, epochs=1, progress=False), path)
    return path, images, labels


def _pregenerated(tmp: Path, data: Any, y: Any, model: Any, **kw: Any) -> tuple[np.ndarray, np.ndarray]:
    """The images ``(N, C, H, W)`` and meta of ``pregenerate(..., format="shards")``, read with GeneratedDataset."""
    out = tmp / f"gen{len(list(tmp.glob('gen*')))}"
    vaeaug.pregenerate(data, model, out, y=y, progress=False, shard_size=50, **kw)
    ds = vaeaug.GeneratedDataset(out)
    return np.stack([ds[i][0].numpy() for i in range(len(ds))]), ds.meta


def _sorted(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Output rows in pregenerate's order: source by source, the real row first."""
    order = np.lexsort((rows["variant"], rows["id"]))
    return {k: v[order] for k, v in rows.items()}


def _in_batches(fn: VAEVariants, batch: dict[str, np.ndarray], sizes: list[int], seed: int = 0) -> dict[str, Any]:
    """``fn`` over the rows of ``batch`` shuffled, in batches of uneven ``sizes``: the rows, sorted back."""
    perm = np.random.default_rng(seed).permutation(len(batch["id"]))
    outs, lo = [], 0
    for size in sizes + [len(perm)]:
        part = perm[lo:lo + size]
        lo += len(part)
        if len(part):
            outs.append(fn({k: v[part] for k, v in batch.items()}))
    return _sorted({k: np.concatenate([o[k] for o in outs]) for k in outs[0]})


class Traced(VAEVariants):
    """VAEVariants that tags each row with the process that made it (and where its session was made)."""

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        out = super().__call__(batch)
        backend: Any = self.backend
        made_here = backend._pid == os.getpid() and len(backend._sessions) > 0
        out["pid"] = np.full(len(out["variant"]), os.getpid())
        out["session_here"] = np.full(len(out["variant"]), made_here)
        return out

    def __getstate__(self) -> dict[str, Any]:
        raise AssertionError("Ray pickled a VAEVariants instance: it must build it in the worker")


# --------------------------------------------------------------------------- in Ray's workers


def test_ray_workers_make_pregenerates_bytes_however_the_blocks_split(cluster, fmnist, tmp_path) -> None:
    """Two actors, 12 blocks, batches of 8, rows out of order: the bytes of pregenerate's shards (of 50)."""
    path, images, labels = fmnist
    x, y = images[:N], labels[:N]
    kw = {"variants_per_sample": 3, "mode": "interpolate", "strength": 0.5, "seed": 11}
    ref, meta = _pregenerated(tmp_path, x, y, path, **kw)
    order = np.random.default_rng(1).permutation(N)
    ds = ray.data.from_items([{"id": int(i), "image": x[i], "label": int(y[i])} for i in order],
                             override_num_blocks=12)
    rows = ds.map_batches(Traced, fn_constructor_kwargs={"model": str(path), "partners_from": (x, y), **kw},
                          compute=ray.data.ActorPoolStrategy(size=2), batch_size=8, batch_format="numpy").take_all()
    got = _sorted({k: np.stack([r[k] for r in rows]) for k in rows[0]})
    assert len(rows) == N * 4 == len(ref)
    assert got["image"].dtype == np.uint8 and got["image"].shape == (N * 4, 28, 28)
    assert got["image"][:, None].tobytes() == ref.tobytes(), "Ray's variants differ from pregenerate's bytes"
    assert (got["id"] == meta["source"]).all() and (got["variant"] == meta["variant"]).all()
    assert (got["synthetic"] == meta["synthetic"]).all() and (got["label"] == meta["y"]).all()
    assert np.array_equal(got["image"][got["variant"] == -1], x), "the real rows are the input's images"
    pids = set(got["pid"].tolist())
    assert len(pids) == 2 and os.getpid() not in pids, f"rows came from processes {pids}"
    assert got["session_here"].all(), "a worker used an onnxruntime session made in another process"


def test_a_workers_error_reaches_the_driver_with_its_message(cluster, fmnist) -> None:
    path, images, _ = fmnist
    ds = ray.data.from_items([{"id": i, "image": images[i]} for i in range(4)])
    with pytest.raises(Exception) as info:  # Ray wraps it: the message is what counts
        ds.map_batches(VAEVariants, fn_constructor_kwargs={"model": str(path)},
                       compute=ray.data.ActorPoolStrategy(size=1), batch_format="numpy").take_all()
    assert "has no label column 'label'" in str(info.value) and "label_column=None" in str(info.value)


def test_recipe_ray_data(cluster, fmnist, tmp_path) -> None:
    """The recipe with the module's model: Parquet rows byte for byte pregenerate's, and WebDataset shards."""
    path, images, labels = fmnist
    r = ray_data.main(model=path, n=64, k=2, out=tmp_path / "out", batch_size=16)
    assert r["rows"] == 64 * 3 and r["variants"] == 128 and r["variants_per_s"] > 0
    assert r["parquet_files"] >= 1 and r["tar_files"] >= 1
    table = pq.read_table(r["parquet"]).to_pydict()
    got = _sorted({k: np.array([np.asarray(v) for v in table[k]]) for k in ("id", "variant", "image", "label",
                                                                          "synthetic")})
    ref, meta = _pregenerated(tmp_path, images[:64], labels[:64], path, variants_per_sample=2, seed=0)
    assert got["image"].dtype == np.uint8 and got["image"][:, None].tobytes() == ref.tobytes()
    assert (got["label"] == meta["y"]).all() and (got["synthetic"] == meta["synthetic"]).all()
    samples: dict[str, dict[str, bytes]] = {}
    for tar in Path(r["webdataset"]).glob("*.tar"):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                key, ext = m.name.split(".", 1)
                f = t.extractfile(m)
                assert f is not None
                samples.setdefault(key, {})[ext] = f.read()
    assert len(samples) == 64 * 3 and all(set(s) == {"png", "cls", "json"} for s in samples.values())
    from PIL import Image

    s = samples["00000007_002"]  # source 7, variant 1
    rec = json.loads(s["json"])
    assert rec == {"id": 7, "variant": 1, "synthetic": True} and int(s["cls"]) == int(labels[7])
    row = int(np.nonzero((got["id"] == 7) & (got["variant"] == 1))[0][0])
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(s["png"]))), got["image"][row])


# --------------------------------------------------------------------------- in this process


def test_layouts_and_float_images_match_pregenerate(fmnist, tmp_path) -> None:
    """(H, W), (H, W, 1) and (1, H, W) rows, uint8 and float in [0, 1]: pregenerate's bytes, in the input's layout."""
    path, images, labels = fmnist
    x, y = images[:40], labels[:40]
    ref, meta = _pregenerated(tmp_path, x, y, path, variants_per_sample=2, seed=3)
    fn = VAEVariants(path, variants_per_sample=2, seed=3)
    for column, back in ((x, lambda a: a[:, None]), (x[..., None], lambda a: a.transpose(0, 3, 1, 2)),
                         (x[:, None], lambda a: a)):
        got = _in_batches(fn, {"id": np.arange(40), "image": column, "label": y}, [7, 1, 13])
        assert got["image"].shape[1:] == column.shape[1:] and back(got["image"]).tobytes() == ref.tobytes()
        assert (got["variant"] == meta["variant"]).all() and got["variant"].dtype == np.int32
    xf = (x / np.float32(255)).astype(np.float32)
    ref_f, _ = _pregenerated(tmp_path, xf, y, path, variants_per_sample=2, seed=3)
    got = _in_batches(fn, {"id": np.arange(40), "image": xf, "label": y, "path": np.arange(40).astype(str)}, [5, 11])
    assert got["image"].dtype == np.float32 and got["image"][:, None].tobytes() == ref_f.tobytes()
    assert (got["path"] == got["id"].astype(str)).all()  # other columns repeat onto their source's rows


@pytest.mark.parametrize("channels_first", [False, True])
def test_torch_backend_rgb_conditional_matches_pregenerate(channels_first: bool, tmp_path) -> None:
    """A .vae model (torch backend), 3 channels, class-conditional: pregenerate's bytes from (H, W, 3) or (3, H, W)."""
    path = tmp_path / "rgb.vae"
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    vaeaug.VAE(vaeaug.VAEConfig(input_shape=(3, 8, 8), num_classes=3)).save(path)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 3, 30)
    ref, _ = _pregenerated(tmp_path, x, y, path, variants_per_sample=2, seed=5, include_real=False)
    threads = torch.get_num_threads()
    fn = VAEVariants(path, variants_per_sample=2, seed=5, include_real=False)
    column = x.transpose(0, 3, 1, 2) if channels_first else x
    got = _in_batches(fn, {"id": np.arange(30), "image": column, "label": y}, [4, 9])
    assert not (got["variant"] < 0).any() and got["synthetic"].all()
    nchw = got["image"] if channels_first else got["image"].transpose(0, 3, 1, 2)
    assert nchw.tobytes() == ref.tobytes()
    assert torch.get_num_threads() == threads  # one thread while making variants, then restored


def test_each_source_is_encoded_once_per_batch(fmnist) -> None:
    """k variants of a source cost one encoding of it (and one decoder pass each), not k."""
    path, images, labels = fmnist
    fn = VAEVariants(path, variants_per_sample=4)
    assert fn.augmenter.amortizes
    seen: list[int] = []
    encode = fn.backend.encode_sources

    def spy(x: Any, y: Any, **kw: Any) -> Any:
        seen.append(len(x))
        return encode(x, y, **kw)

    fn.backend.encode_sources = spy  # type: ignore[method-assign]
    out = fn({"id": np.arange(6), "image": images[:6], "label": labels[:6]})
    assert seen == [6] and len(out["image"]) == 6 * 5


def test_pickled_copy_reopens_the_model_and_makes_the_same_rows(fmnist) -> None:
    path, images, labels = fmnist
    fn = VAEVariants(path, variants_per_sample=1, label_column=None)
    batch = {"id": np.arange(3), "image": images[:3]}
    first = fn(batch)
    state = fn.__getstate__()
    assert state["backend"] is None and state["augmenter"] is None  # no model, no session travels
    again = pickle.loads(pickle.dumps(fn))(batch)
    assert again["image"].tobytes() == first["image"].tobytes()
    assert "VAEVariants(" in repr(fn) and "k=1" in repr(fn)
    empty = fn({"id": np.zeros(0, np.int64), "image": images[:0]})
    assert len(empty["image"]) == 0 and empty["image"].shape[1:] == (28, 28)


def _raises(exc: type[Exception], fn: Any, *patterns: str) -> None:
    with pytest.raises(exc) as info:
        fn()
    for p in patterns:
        assert p in str(info.value), str(info.value)


def test_errors_name_the_fix(fmnist, tmp_path) -> None:
    path, images, labels = fmnist
    fn = VAEVariants(path, variants_per_sample=1)
    good = {"id": np.arange(4), "image": images[:4], "label": labels[:4]}

    def call(**change: Any) -> Any:
        batch = {**good, **change}
        return lambda: fn({k: v for k, v in batch.items() if v is not None})

    _raises(ValueError, call(label=None), "has no label column 'label'", "label_column=None")
    _raises(ValueError, call(id=None), "has no id column 'id'", "ray.data.range")
    _raises(ValueError, call(image=None), "has no image column 'image'")
    _raises(TypeError, call(id=np.arange(4.0)), "id column 'id' must hold one integer per row", "float64")
    _raises(ValueError, call(id=np.array([0, 1, -2, 3])), "row ids must be >= 0", "-2")
    _raises(TypeError, call(label=labels[:4].astype(float)), "label column 'label'", "float64")
    _raises(TypeError, call(image=images[:4].astype(np.int32)), "uint8 or floating-point", "int32")
    _raises(ValueError, call(image=images[:4, :20]), "(20, 28)", "resize")
    _raises(ValueError, call(image=images[:3]), "4 rows but the image column 3")
    _raises(ValueError, call(variant=np.zeros(4)), "already has column(s) ['variant']")
    _raises(ValueError, call(image=images[:4] / np.float32(1)), "float image values span", "[0, 1]")
    _raises(TypeError, lambda: fn([good]), "dict of numpy arrays", "batch_format='numpy'")  # type: ignore[arg-type]
    ragged = np.empty(2, dtype=object)
    ragged[:] = [images[0], images[1, :20]]
    _raises(ValueError, lambda: fn({"id": np.arange(2), "image": ragged, "label": labels[:2]}), "got shapes")
    # arguments, before any batch
    vae: Any = vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 8, 8)))
    _raises(TypeError, lambda: VAEVariants(vae), "path")
    _raises(ValueError, lambda: VAEVariants(path, variants_per_sample=-1), "variants_per_sample")
    _raises(ValueError, lambda: VAEVariants(path, seed=2**64), "seed")
    _raises(ValueError, lambda: VAEVariants(path, variants_per_sample=0, include_real=False), "nothing to output")
    _raises(ValueError, lambda: VAEVariants(path, id_column="x", image_column="x"), "distinct")
    _raises(ValueError, lambda: VAEVariants(path, label_column="synthetic"), "distinct")
    _raises(TypeError, lambda: VAEVariants(path, image_column=3), "image_column must be a column name")  # type: ignore[arg-type]
    _raises(ValueError, lambda: VAEVariants(path, device="cuda"), "runs on the CPU")
    _raises(ValueError, lambda: VAEVariants(path, mode="interpolate"), "partners_from=(images, labels)")
    _raises(ValueError, lambda: VAEVariants(path, mode="interpolate", label_column=None), "the data must have labels",
            "label_column=")
    _raises(ValueError, lambda: VAEVariants(path, partners_from=(images, labels)), "leave it out")
    _raises(ValueError, lambda: VAEVariants(path, mode="interpolate", partners_from=(images, labels[:3])),
            "one label per image")
    # the partner modes: ids index partners_from, labels agree with it
    pf = VAEVariants(path, mode="interpolate", partners_from=(images[:10], labels[:10]))
    _raises(ValueError, lambda: pf({"id": np.array([3, 12]), "image": images[:2], "label": labels[:2]}),
            "row id 12 is not in partners_from")
    bad = labels[:2].copy()
    bad[1] = (bad[1] + 1) % 10
    _raises(ValueError, lambda: pf({"id": np.arange(2), "image": images[:2], "label": bad}), "row id 1 has label")
    # a class-conditional model needs labels, and labels in its range
    cpath = tmp_path / "c.vae"
    vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 28, 28), num_classes=10)).save(cpath)
    _raises(ValueError, lambda: VAEVariants(cpath, label_column=None), "class-conditional (10 classes)",
            "label_column=")
    cond = VAEVariants(cpath)
    _raises(ValueError, lambda: cond({**good, "label": np.array([0, 1, 2, 10])}), "0..9")
