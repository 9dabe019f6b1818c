"""Probe (issue 23, item 2): would vaeaug's latent noise be cheaper computed inside the ONNX graph?

vaeaug draws every variant's noise from its key with a counter-based generator (SplitMix64 bits,
Box-Muller normals; ``vaeaug.core.rng.normal``), in numpy, before the onnxruntime call. This probe
builds the same computation as ONNX operators (``BitwiseXor``/``BitShift``/``Mul``/``Add`` on
uint64, ``Log``/``Sqrt``/``Cos``/``Sin`` on float64; opset 18), checks it against the numpy stream
on many keys (bit parity of the float32 normals), and times one batch-1 call of it against the numpy
path on one thread. The in-graph version would replace the numpy noise inside the augmenter graph;
its cost there is at least the operators' own time, about this call minus an empty call.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/noise_graph.py [--latent 16] [--keys 10000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from vaeaug.core.augment import sample_keys
from vaeaug.core.rng import Noise

GAMMA, M1, M2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
EPS_STREAM = 2  # vaeaug.core.rng.Stream.EPS


def _const(name: str, value: object, dtype: int) -> object:
    vals = value if isinstance(value, list) else [value]
    dims = [len(vals)] if isinstance(value, list) else []
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name + "_v", dtype, dims, vals))


def _mix(src: str, out: str) -> list[object]:
    """SplitMix64's finaliser as ONNX nodes (uint64 arithmetic wraps)."""
    n = helper.make_node
    return [n("Add", [src, "gamma"], [out + "_a"]), n("BitShift", [out + "_a", "s30"], [out + "_b"], direction="RIGHT"),
            n("BitwiseXor", [out + "_a", out + "_b"], [out + "_c"]), n("Mul", [out + "_c", "m1"], [out + "_d"]),
            n("BitShift", [out + "_d", "s27"], [out + "_e"], direction="RIGHT"),
            n("BitwiseXor", [out + "_d", out + "_e"], [out + "_f"]), n("Mul", [out + "_f", "m2"], [out + "_g"]),
            n("BitShift", [out + "_g", "s31"], [out + "_h"], direction="RIGHT"),
            n("BitwiseXor", [out + "_g", out + "_h"], [out])]


def noise_model(latent: int) -> bytes:
    """keys ``(N,)`` uint64 -> eps ``(N, latent)`` float32, vaeaug's stream (latent even)."""
    n, u64, f64 = helper.make_node, TensorProto.UINT64, TensorProto.DOUBLE
    m = latent // 2
    nodes = [_const("gamma", GAMMA, u64), _const("m1", M1, u64), _const("m2", M2, u64), _const("s30", 30, u64),
             _const("s27", 27, u64), _const("s31", 31, u64), _const("s11", 11, u64),
             _const("stream", _mix_int_py(EPS_STREAM), u64), _const("ctr", list(range(latent)), u64),
             _const("ax", [1], TensorProto.INT64), _const("halves", [m, m], TensorProto.INT64),
             _const("half", 0.5, f64), _const("scale", 2.0**-53, f64), _const("minus2", -2.0, f64),
             _const("twopi", 2 * np.pi, f64),
             n("BitwiseXor", ["keys", "stream"], ["k0"])]
    nodes += _mix("k0", "k1") + [n("Unsqueeze", ["k1", "ax"], ["k2"]), n("BitwiseXor", ["k2", "ctr"], ["c0"])]
    nodes += _mix("c0", "bits")
    nodes += [n("BitShift", ["bits", "s11"], ["b53"], direction="RIGHT"), n("Cast", ["b53"], ["u0"], to=f64),
              n("Add", ["u0", "half"], ["u1"]), n("Mul", ["u1", "scale"], ["u"]),
              n("Split", ["u", "halves"], ["ua", "ub"], axis=1),
              n("Log", ["ua"], ["la"]), n("Mul", ["la", "minus2"], ["lb"]), n("Sqrt", ["lb"], ["r"]),
              n("Mul", ["ub", "twopi"], ["th"]), n("Cos", ["th"], ["co"]), n("Sin", ["th"], ["si"]),
              n("Mul", ["r", "co"], ["z0"]), n("Mul", ["r", "si"], ["z1"]),
              n("Concat", ["z0", "z1"], ["zz"], axis=1), n("Cast", ["zz"], ["eps"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "noise", [helper.make_tensor_value_info("keys", u64, [None])],
                              [helper.make_tensor_value_info("eps", TensorProto.FLOAT, [None, latent])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()  # type: ignore


def _mix_int_py(z: int) -> int:
    mask = (1 << 64) - 1
    z = (z + GAMMA) & mask
    z = ((z ^ (z >> 30)) * M1) & mask
    z = ((z ^ (z >> 27)) * M2) & mask
    return z ^ (z >> 31)


def best_us(f: object, calls: int, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for i in range(calls):
            f(i)  # type: ignore[operator]
        best = min(best, (time.perf_counter() - t) / calls * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latent", type=int, default=16, help="latent dimension (even)")
    ap.add_argument("--keys", type=int, default=10000, help="keys for the parity check")
    args = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(noise_model(args.latent), so, providers=["CPUExecutionProvider"])
    keys = sample_keys(12345, args.keys)
    graph = sess.run(None, {"keys": keys})[0]
    ref = Noise.from_keys(keys, args.latent, with_t=False).eps
    exact = float(np.mean(np.all(graph == ref, axis=1)))
    print(f"parity over {args.keys:,} keys: {exact:.2%} of rows bit-identical, max |diff| "
          f"{float(np.abs(graph - ref).max()):.2e}")
    one = [sample_keys(i, 1) for i in range(256)]
    g_us = best_us(lambda i: sess.run(None, {"keys": one[i % 256]}), 20000)
    np_us = best_us(lambda i: Noise.from_keys(one[i % 256], args.latent, with_t=False), 20000)
    print(f"batch 1, latent {args.latent}, one thread: the noise graph {g_us:.1f} us a call (its own "
          f"session.run included); vaeaug's numpy noise {np_us:.1f} us")


if __name__ == "__main__":
    main()
