"""Ray Data beside ``pregenerate``: variants/s with 2 Ray workers against ``pregenerate(..., workers=2)``, same data.

Fashion-MNIST train, the first 15,000 uint8 28x28 images (labels kept) x 4 variants plus the real
images (75,000 rows), the default 28x28 model (fit for one epoch on 5,000 images: speed does not
depend on the weights), exported to ONNX. Each arm runs in a fresh subprocess, one after the other:

* ``pregenerate``: ``vaeaug.pregenerate(npz, model.onnx, out, variants_per_sample=4, workers=2)``
  (``.npy`` shards, one onnxruntime thread per worker);
* Ray Data: a local cluster of 2 CPUs (``ray.init(num_cpus=2)``, timed apart), the rows put in the
  object store with ``ray.data.from_items``, then
  ``map_batches(VAEVariants, compute=ActorPoolStrategy(size=2), batch_size=256)`` and
  ``write_parquet``. Timed from the ``map_batches`` call to the last file written, actor start-up
  (each actor opens the model) included, as ``pregenerate``'s time includes its workers' start.

Both write the same bytes (``tests/test_ray.py`` pins that on a smaller set); the Ray arm also checks
its row count here.

Usage:
    python benchmarks/ray_data.py             # prints a markdown block
    python benchmarks/ray_data.py --record    # also appends it to BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime
import torch

import vaeaug
from vaeaug.data.builtin import find_fashion_mnist, read_idx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, record  # noqa: E402

N, K = 15000, 4

_PREGENERATE = """
import json, sys, time
import vaeaug
t = time.perf_counter()
r = vaeaug.pregenerate(sys.argv[1], sys.argv[2], sys.argv[3], variants_per_sample=4, workers=2, progress=False)
print(json.dumps({"seconds": time.perf_counter() - t, "gen_seconds": r["seconds"], "rows": r["samples"],
                  "variants": r["manifest"]["counts"]["synthetic"]}))
"""

_RAY = """
import json, sys, time
import numpy as np, ray
from vaeaug.ray import VAEVariants


class Timed(VAEVariants):  # defined in __main__: Ray ships it by value
    def __call__(self, batch):
        t = time.perf_counter()
        out = super().__call__(batch)
        out["call_s"] = np.full(len(out["variant"]), (time.perf_counter() - t) / len(out["variant"]))
        return out


data = np.load(sys.argv[1])
x, y = data["x"], data["y"]
t = time.perf_counter()
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
init = time.perf_counter() - t
ray.data.DataContext.get_current().enable_progress_bars = False
ds = ray.data.from_items([{"id": i, "image": x[i], "label": int(y[i])} for i in range(len(x))])
t = time.perf_counter()
ds.map_batches(Timed, fn_constructor_kwargs={"model": sys.argv[2], "variants_per_sample": 4},
               compute=ray.data.ActorPoolStrategy(size=2), batch_size=256, batch_format="numpy",
               ).write_parquet(sys.argv[3])
seconds = time.perf_counter() - t
written = ray.data.read_parquet(sys.argv[3], columns=["call_s"]).to_pandas()
ray.shutdown()
print(json.dumps({"seconds": seconds, "init_seconds": init, "rows": len(written), "variants": 4 * len(x),
                  "call_seconds": float(written["call_s"].sum())}))
"""


def _child(code: str, *args: str) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"arm failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    import ray

    folder = find_fashion_mnist()
    if folder is None:
        raise SystemExit("Fashion-MNIST not found: apt-get install dataset-fashion-mnist")
    x = read_idx(next(folder.glob("train-images-idx3-ubyte*")))[:N]
    y = read_idx(next(folder.glob("train-labels-idx1-ubyte*"))).astype(np.int64)[:N]
    tmp = Path(tempfile.mkdtemp(prefix="vaeaug-ray-bench-"))
    torch.set_num_threads(1)
    model = vaeaug.fit(x[:5000], epochs=1, progress=False, device="cpu")
    onnx_path = vaeaug.export_onnx(model, tmp / "m.onnx")["augmenter"]
    np.savez(tmp / "data.npz", x=x, y=y)
    load = os.getloadavg()
    pre = _child(_PREGENERATE, str(tmp / "data.npz"), str(onnx_path), str(tmp / "pregenerated"))
    print("pregenerate", pre, flush=True)
    ray_arm = _child(_RAY, str(tmp / "data.npz"), str(onnx_path), str(tmp / "parquet"))
    print("ray", ray_arm, flush=True)
    assert ray_arm["rows"] == pre["rows"] == N * (K + 1), (ray_arm, pre)
    load_after = os.getloadavg()
    when = datetime.date.today().isoformat()
    cmd = "python benchmarks/ray_data.py " + " ".join(sys.argv[1:])
    lines = [
        f"### Ray Data beside pregenerate: Fashion-MNIST 15,000 train images x 4 variants + real, 2 workers ({when})",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, Ray {ray.__version__}, Python {platform.python_version()}. Command: `{cmd}`. "
        f"Load average (1 min) before and after: {load[0]:.1f} and {load_after[0]:.1f}.",
        "",
        "| arm | workers | rows written | variants/s | wall s | start-up not in wall s | time in VAEVariants calls |",
        "|---|---|---|---|---|---|---|",
        f"| `pregenerate(..., workers=2)`, `.npy` shards | 2 DataLoader processes | {pre['rows']:,} "
        f"| {pre['variants'] / pre['gen_seconds']:,.0f} | {pre['gen_seconds']:.1f} | loading the data "
        f"({pre['seconds'] - pre['gen_seconds']:.1f} s) | |",
        f"| Ray Data `map_batches(VAEVariants)`, Parquet | 2 actors | {ray_arm['rows']:,} "
        f"| {ray_arm['variants'] / ray_arm['seconds']:,.0f} | {ray_arm['seconds']:.1f} | `ray.init` "
        f"({ray_arm['init_seconds']:.1f} s) | {ray_arm['call_seconds']:.1f} s in both actors together "
        f"({ray_arm['variants'] / (ray_arm['call_seconds'] / 2):,.0f} variants/s while in the calls) |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    shutil.rmtree(tmp)
    if args.record:
        record(text)


if __name__ == "__main__":
    main()
