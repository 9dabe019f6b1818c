"""Pre-generation throughput, bytes on disk and peak memory, beside the raw ONNX generation speed.

Fashion-MNIST train (60,000 uint8 28x28 images) x 4 variants plus the real images (300,000 samples),
the default 28x28 model (fit for one epoch on 5,000 images: speed does not depend on the weights),
exported to ONNX. Each arm runs ``vaeaug generate`` in a fresh subprocess (so its peak RSS is its
own): 1 worker and 2 workers, and a quarter of the data (15,000 images) to see how peak memory
scales. The reference is the raw speed of the same ONNX generator in this process, one thread, on
the same fixed-size chunks (``OnnxBackend.variants(..., invariant=True)``) without any writing:
the writer's target is >= 80% of it per worker.

With ``--before TREE`` it compares two source trees instead (e.g. a ``git worktree`` of an
earlier commit): every row runs its ``pregenerate`` child for both trees at the same moment (two
processes side by side, so both see the same machine), ``--repeats`` times, and reports the best
variants/s of each and their ratio; ``--variants`` sets ``k``.

Usage:
    python benchmarks/pregenerate.py             # prints a markdown block
    python benchmarks/pregenerate.py --record    # also appends it to BENCHMARKS.md
    OMP_NUM_THREADS=1 python benchmarks/pregenerate.py --before /tmp/wt-before --repeats 3 --variants 4
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
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

import vaeaug
from vaeaug.core.rng import Noise, derive_keys
from vaeaug.data.builtin import find_fashion_mnist, read_idx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, record  # noqa: E402

_CHILD = """
import json, resource, sys, time
import vaeaug
t = time.perf_counter()
r = vaeaug.pregenerate(sys.argv[1], sys.argv[2], sys.argv[3], variants_per_sample=int(sys.argv[5]),
                       workers=int(sys.argv[4]), progress=False)
seconds = time.perf_counter() - t
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"vaeaug": vaeaug.__file__, "seconds": seconds, "gen_seconds": r["seconds"], "samples": r["samples"],
                  "synthetic": r["manifest"]["counts"]["synthetic"], "rss_kb": own, "worker_rss_kb": kids}))
"""


def raw_rate(path: Path, x: np.ndarray, n: int = 8192) -> float:
    """Variants/s of the ONNX generator alone, one thread, invariant chunks (best of 2)."""
    gen = vaeaug.OnnxBackend(path)
    xm = (x[:n, None].astype(np.float32) / np.float32(255.0))
    noise = Noise.from_keys(derive_keys(0, np.arange(n)), gen.latent_dim)
    gen.variants(xm[:64], noise=Noise(noise.eps[:64], noise.t[:64]), invariant=True)
    best = 0.0
    for _ in range(2):
        t = time.perf_counter()
        gen.variants(xm, noise=noise, invariant=True)
        best = max(best, n / (time.perf_counter() - t))
    return best


def compare(before: Path, tmp: Path, onnx_path: Path, repeats: int, k: int) -> list[str]:
    """Rows run for both trees at once, ``repeats`` times: the best variants/s of each tree and their ratio."""
    # each child runs in its own tree: `python -c` puts the working directory first on sys.path
    trees = {"before": before.resolve(), "after": Path(__file__).resolve().parents[1]}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    lines = [f"| source images | workers | k | before: variants/s (best of {repeats}) | after: variants/s "
             "| after / before | bytes on disk (before, after) | verify |", "|---|---|---|---|---|---|---|---|"]
    for data, workers in (("quarter", 1), ("full", 1), ("quarter", 2)):
        best = dict.fromkeys(trees, 0.0)
        size, ok = {}, {}
        for r in range(repeats):
            outs = {t: tmp / f"out-{t}-{data}-{workers}-{r}" for t in trees}
            procs = {t: subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp / f"{data}.npz"), str(onnx_path),
                                          str(outs[t]), str(workers), str(k)], env={**env, "PYTHONPATH": str(path)},
                                         cwd=path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for t, path in trees.items()}
            for t, proc in procs.items():
                out, err = proc.communicate()
                if proc.returncode != 0:
                    raise SystemExit(f"the {t} tree's child failed: {err[-2000:]}")
                res = json.loads(out.strip().splitlines()[-1])
                if not res["vaeaug"].startswith(str(trees[t])):
                    raise SystemExit(f"the {t} child imported vaeaug from {res['vaeaug']}, not from {trees[t]}")
                best[t] = max(best[t], res["synthetic"] / res["gen_seconds"])
                if r == 0:
                    size[t] = sum(f.stat().st_size for f in outs[t].iterdir())
                    check = [sys.executable, "-m", "vaeaug", "verify", str(outs[t])]
                    ok[t] = subprocess.run(check, capture_output=True, env={**env, "PYTHONPATH": str(trees[t])},
                                           cwd=trees[t]).returncode == 0
                shutil.rmtree(outs[t])
            print(f"{data}, {workers} worker(s), repeat {r + 1}: {best}", flush=True)
        lines.append(f"| {15000 if data == 'quarter' else 60000:,} | {workers} | {k} | {best['before']:,.0f} "
                     f"| {best['after']:,.0f} | {best['after'] / best['before']:.2f} "
                     f"| {size['before'] / 1e6:.1f} MB, {size['after'] / 1e6:.1f} MB "
                     f"| {'OK' if all(ok.values()) else 'FAILED'} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--before", type=Path, default=None, metavar="TREE",
                    help="compare with this source tree, both at once per row")
    ap.add_argument("--repeats", type=int, default=3, help="with --before: runs per row (the best is reported)")
    ap.add_argument("--variants", type=int, default=4, help="variants per source (k)")
    args = ap.parse_args()
    folder = find_fashion_mnist()
    if folder is None:
        raise SystemExit("Fashion-MNIST not found: apt-get install dataset-fashion-mnist")
    x = read_idx(next(folder.glob("train-images-idx3-ubyte*")))
    y = read_idx(next(folder.glob("train-labels-idx1-ubyte*"))).astype(np.int64)
    tmp = Path(tempfile.mkdtemp(prefix="vaeaug-pregen-"))
    torch.set_num_threads(1)
    model = vaeaug.fit(x[:5000], epochs=1, progress=False, device="cpu")
    onnx_path = vaeaug.export_onnx(model, tmp / "m.onnx")["augmenter"]
    np.savez(tmp / "full.npz", x=x, y=y)
    np.savez(tmp / "quarter.npz", x=x[:15000], y=y[:15000])
    if args.before is not None:
        when = datetime.date.today().isoformat()
        cmd = "OMP_NUM_THREADS=1 python benchmarks/pregenerate.py " + " ".join(sys.argv[1:])
        text = "\n".join([
            f"### pregenerate, before and after side by side: Fashion-MNIST train x {args.variants} variants + real, "
            f"ONNX backend ({when})", "",
            f"Machine: {cpu_name()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, Python "
            f"{platform.python_version()}. Command: `{cmd}` (before: the tree at {args.before}). Each row runs both "
            "trees' `pregenerate` at the same moment, one thread per process.", "",
            *compare(args.before, tmp, onnx_path, args.repeats, args.variants), ""])
        print(text)
        shutil.rmtree(tmp)
        if args.record:
            record(text)
        return
    raw = raw_rate(onnx_path, x)
    print(f"raw ONNX generation, one thread: {raw:,.0f} variants/s", flush=True)
    rows = []
    for data, workers in (("full", 1), ("full", 2), ("quarter", 1), ("quarter", 2)):
        out = tmp / f"out-{data}-{workers}"
        p = subprocess.run([sys.executable, "-c", _CHILD, str(tmp / f"{data}.npz"), str(onnx_path), str(out),
                            str(workers), str(args.variants)], capture_output=True, text=True, check=True)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        size = sum(f.stat().st_size for f in out.iterdir())
        ok = subprocess.run([sys.executable, "-m", "vaeaug", "verify", str(out)], capture_output=True, text=True)
        r.update(data=data, workers=workers, bytes=size, verified=ok.returncode == 0)
        rows.append(r)
        print(r, flush=True)
        shutil.rmtree(out)
    raw_after = raw_rate(onnx_path, x)
    ref = max(raw, raw_after)
    when = datetime.date.today().isoformat()
    cmd = "python benchmarks/pregenerate.py " + " ".join(sys.argv[1:])
    lines = [
        f"### pregenerate: Fashion-MNIST train x 4 variants + real, ONNX backend ({when})",
        "",
        f"Machine: {cpu_name()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, Python "
        f"{platform.python_version()}. Command: `{cmd}`. Raw ONNX generation (one thread, invariant chunks, "
        f"no writing), measured before and after the rows: {raw:,.0f} and {raw_after:,.0f} variants/s.",
        "",
        "| source images | workers | samples written | variants/s (generation phase) | per worker, % of raw "
        "| wall s (incl. loading data) | bytes on disk | peak RSS main | peak RSS worker | verify |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rate = r["synthetic"] / r["gen_seconds"]
        lines.append(
            f"| {15000 if r['data'] == 'quarter' else 60000:,} | {r['workers']} | {r['samples']:,} | {rate:,.0f} "
            f"| {100 * rate / r['workers'] / ref:.0f}% | {r['seconds']:.1f} | {r['bytes'] / 1e6:.1f} MB "
            f"| {r['rss_kb'] / 1024:.0f} MB | {r['worker_rss_kb'] / 1024:.0f} MB "
            f"| {'OK' if r['verified'] else 'FAILED'} |")
    lines.append("")
    text = "\n".join(lines)
    print(text)
    shutil.rmtree(tmp)
    if args.record:
        record(text)


if __name__ == "__main__":
    main()
