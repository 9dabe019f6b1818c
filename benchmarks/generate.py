"""Generation speed on one thread: torch eager vs onnxruntime fp32, side by side in one run.

The default 28x28 model (latent 16, widths 32, 64), fit briefly on Fashion-MNIST, the default
form (delta, isotropic: encoder + two decoder passes per sample) and the decode form (posterior:
encoder + one decoder pass). Batches 1, 32 and 256. Reports samples/s, the ratio ONNX/torch, and
the fraction of the roofline: samples/s x FLOPs per sample / the fp32 matmul FLOP/s measured in
the same run on one thread (torch, 1024x1024).

int8: the augmenter graph quantized statically (QDQ, per-channel int8 weights, uint8
activations, calibrated on 512 Fashion-MNIST images) with onnxruntime's quantization tool, timed
in the same rounds, with its error against fp32. vaeaug ships no int8 path unless this shows it
faster (it did not: BENCHMARKS.md).

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

import numpy as np
import onnxruntime
import torch
from torch.utils.flop_counter import FlopCounterMode

import vaeaug
from vaeaug.core.functional import perturb
from vaeaug.data.builtin import find_fashion_mnist, read_idx
from vaeaug.protocol.timing import time_generator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, record  # noqa: E402


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


def quantize_int8(path: Path, x: np.ndarray, latent: int) -> Path:
    """Static QDQ int8 copy of the augmenter graph, calibrated on ``x`` (model space)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.it = iter([{"x": x[i:i + 64], "eps": rng.standard_normal((64, latent)).astype(np.float32),
                             "strength": np.ones(64, np.float32), "sigma_weight": np.zeros(64, np.float32)}
                            for i in range(0, len(x), 64)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    pre, out = path.with_name("pre.onnx"), path.with_name("int8.onnx")
    quant_pre_process(str(path), str(pre))
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv", "ConvTranspose", "Gemm"])
    return out


def ort_rate(path: Path, feeds: dict[str, np.ndarray], seconds: float) -> float:
    """Samples/s of one onnxruntime session (one thread) on ``feeds`` (best of 3 rounds)."""
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = onnxruntime.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    sess.run(None, feeds)
    n, best = len(feeds["x"]), 0.0
    for _ in range(3):
        calls, t0 = 0, time.perf_counter()
        while (el := time.perf_counter() - t0) < seconds:
            sess.run(None, feeds)
            calls += 1
        best = max(best, calls * n / el)
    return best


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
    tgen, ogen = vaeaug.TorchBackend(model), vaeaug.OnnxBackend(path)
    ceiling = matmul_ceiling()
    rows = []
    for mode, form in (("isotropic", "delta"), ("posterior", "decode")):
        flops = flops_per_sample(model, mode, form)
        for batch in (1, 32, 256):
            t = time_generator(tgen, batch, mode=mode, form=form, seconds=args.seconds)
            o = time_generator(ogen, batch, mode=mode, form=form, seconds=args.seconds)
            rows.append((form, mode, batch, flops, t, o))
            print(f"{form} {mode} batch {batch}: torch {t:,.0f}/s, onnx {o:,.0f}/s", flush=True)
    xm = (x[-512:, None] / 255.0).astype(np.float32)  # calibration: images the rows below do not use
    int8 = quantize_int8(path, xm, model.config.latent_dim)
    rng = np.random.default_rng(1)
    int8_rows = []
    for batch in (1, 32, 256):
        xb = (x[:batch, None] / 255.0).astype(np.float32)
        feeds = {"x": xb, "eps": rng.standard_normal((batch, 16)).astype(np.float32),
                 "strength": np.ones(batch, np.float32), "sigma_weight": np.zeros(batch, np.float32)}
        f32, i8 = ort_rate(path, feeds, args.seconds), ort_rate(int8, feeds, args.seconds)
        so = onnxruntime.SessionOptions()
        so.intra_op_num_threads = 1
        a = onnxruntime.InferenceSession(str(path), so).run(None, feeds)[0]
        b = onnxruntime.InferenceSession(str(int8), so).run(None, feeds)[0]
        err, u8 = float(np.abs(a - b).max()), float((np.round(a * 255) != np.round(b * 255)).mean())
        int8_rows.append((batch, f32, i8, err, u8))
        print(f"int8 batch {batch}: fp32 {f32:,.0f}/s, int8 {i8:,.0f}/s, max err {err:.3f}", flush=True)
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
    lines += ["", "int8 (static QDQ) against fp32, the augmenter graph alone (delta, isotropic), one thread:", "",
              "| batch | fp32 samples/s | int8 samples/s | int8 / fp32 | max abs error | uint8 pixels that differ |",
              "|---|---|---|---|---|---|"]
    for batch, f32, i8, err, u8 in int8_rows:
        lines.append(f"| {batch} | {f32:,.0f} | {i8:,.0f} | {i8 / f32:.2f} | {err:.3f} | {100 * u8:.1f}% |")
    lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.record:
        record(text)


if __name__ == "__main__":
    main()
