"""Generation speed on one thread: torch eager vs onnxruntime fp32, side by side in one run.

The default 28x28 model (latent 16, widths 32, 64), fit briefly on Fashion-MNIST, the default
form (delta, isotropic: encoder + two decoder passes per sample) and the decode form (posterior:
encoder + one decoder pass). Batches 1, 32 and 256. Reports samples/s, the ratio ONNX/torch, and
the fraction of the roofline: samples/s x FLOPs per sample / the fp32 matmul FLOP/s measured in
the same run on one thread (torch, 1024x1024).

Usage:
    python benchmarks/generate.py             # prints a markdown block
    python benchmarks/generate.py --record    # also appends it to BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch
from torch.utils.flop_counter import FlopCounterMode

import vaeaug
from vaeaug.benchmarking import time_generator
from vaeaug.datasets import find_fashion_mnist, read_idx
from vaeaug.functional import perturb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fit import cpu_name  # noqa: E402


def matmul_ceiling(seconds: float = 1.0) -> float:
    """fp32 FLOP/s of a 1024x1024 matmul on the current torch thread count (best of 3)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    best = 0.0
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while (el := time.perf_counter() - t0) < seconds:
            a @ b
            n += 1
        best = max(best, n * 2 * 1024**3 / el)
    return best


def flops_per_sample(model: vaeaug.VAE, mode: str, form: str, batch: int = 64) -> float:
    """Floating-point operations per generated sample (FlopCounterMode: convs and matmuls)."""
    x = torch.rand(batch, *model.config.input_shape)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        perturb(model, x, mode=mode, strength=1.0, eps=torch.randn(batch, model.config.latent_dim), form=form)
    return fc.get_total_flops() / batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.0, help="time per round (3 rounds, best kept)")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    folder = find_fashion_mnist()
    if folder is None:
        raise SystemExit("Fashion-MNIST not found: apt-get install dataset-fashion-mnist")
    x = read_idx(next(folder.glob("train-images-idx3-ubyte*")))[:5000]
    model = vaeaug.fit(x, epochs=1, progress=False, device="cpu")
    tmp = Path(tempfile.mkdtemp())
    path = vaeaug.export_onnx(model, tmp / "m.onnx")["augmenter"]
    tgen, ogen = vaeaug.TorchGenerator(model), vaeaug.OnnxGenerator(path)
    ceiling = matmul_ceiling()
    rows = []
    for mode, form in (("isotropic", "delta"), ("posterior", "decode")):
        flops = flops_per_sample(model, mode, form)
        for batch in (1, 32, 256):
            t = time_generator(tgen, batch, mode=mode, form=form, seconds=args.seconds)
            o = time_generator(ogen, batch, mode=mode, form=form, seconds=args.seconds)
            rows.append((form, mode, batch, flops, t, o))
            print(f"{form} {mode} batch {batch}: torch {t:,.0f}/s, onnx {o:,.0f}/s", flush=True)
    ceiling2 = matmul_ceiling()
    when = datetime.date.today().isoformat()
    cmd = "python benchmarks/generate.py " + " ".join(sys.argv[1:])
    lines = [
        f"### generate: 28x28 default model, one thread ({when})",
        "",
        f"Machine: {cpu_name()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"Python {platform.python_version()}. Command: `{cmd}`. fp32 matmul ceiling on one thread, "
        f"measured before and after the rows: {ceiling / 1e9:.1f} and {ceiling2 / 1e9:.1f} GFLOP/s "
        f"(the larger is the roofline).",
        "",
        "| form, mode | batch | MFLOP/sample | torch eager samples/s | onnxruntime fp32 samples/s | onnx / torch "
        "| torch % of roofline | onnx % of roofline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    roof = max(ceiling, ceiling2)
    for form, mode, batch, flops, t, o in rows:
        lines.append(f"| {form}, {mode} | {batch} | {flops / 1e6:.2f} | {t:,.0f} | {o:,.0f} | {o / t:.2f} "
                     f"| {100 * t * flops / roof:.0f}% | {100 * o * flops / roof:.0f}% |")
    lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.record:
        out = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
        with out.open("a") as f:
            f.write("\n" + text)
        print(f"appended to {out}")


if __name__ == "__main__":
    main()
