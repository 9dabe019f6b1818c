"""Probe (issue 23): would a decoder without ``ConvTranspose`` run faster in onnxruntime?

A variant whose source is cached costs one decoder pass, about 70% of it in the decoder's
stride-2 ``ConvTranspose(k=3, s=2, p=1)`` layers (BENCHMARKS.md, issue 4). Such a layer can be
written exactly with ordinary convolutions, which onnxruntime's CPU kernels are tuned for:

- **sub-pixel**: one 2x2 convolution to ``4 * cout`` channels (the four output phases; zero taps
  where a phase uses fewer than four), ``DepthToSpace`` (pixel shuffle), then a crop;
- **phases**: four convolutions of exactly the taps each phase uses (1x1, 1x2, 2x1, 2x2: the same
  multiply-adds as the transposed convolution), stacked and shuffled into place.

Each form is checked against the transposed convolution (max abs difference, float rounding only)
and the three decoders are timed side by side, interleaved, on one thread at batch 1, 64 and 256.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/decoder_graph.py [--shape 1,28,28] [--rounds 30]
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from vaeaug.model.config import VAEConfig, conv_sizes
from vaeaug.model.vae import VAE

TAPS = {0: [(0, 1)], 1: [(0, 2), (1, 0)]}
"""Output phase (even 0, odd 1) -> [(input offset, kernel index)] of a ConvTranspose(k=3, s=2, p=1)."""


def _phase_weight(w: torch.Tensor, a: int, b: int, full: bool) -> torch.Tensor:
    """The (cout, cin, kh, kw) kernel of output phase (a, b); ``full``: padded to 2x2 with zero taps."""
    kh, kw = (2, 2) if full else (len(TAPS[a]), len(TAPS[b]))
    k = torch.zeros(w.shape[1], w.shape[0], kh, kw)
    for di, ki in TAPS[a]:
        for dj, kj in TAPS[b]:
            k[:, :, di, dj] = w[:, :, ki, kj].t()
    return k


class SubPixel(nn.Module):
    """ConvTranspose(k=3, s=2, p=1) as one 2x2 conv to 4 phases, pixel shuffle, crop."""

    def __init__(self, ct: nn.ConvTranspose2d, out_hw: tuple[int, int]) -> None:
        super().__init__()
        w = ct.weight.detach()
        cout = w.shape[1]
        self.conv = nn.Conv2d(w.shape[0], 4 * cout, 2)
        k = torch.stack([_phase_weight(w, a, b, True) for a in (0, 1) for b in (0, 1)], 1)  # cout, 4, cin, 2, 2
        self.conv.weight.data = k.reshape(4 * cout, w.shape[0], 2, 2)
        assert ct.bias is not None
        self.conv.bias.data = ct.bias.detach().repeat_interleave(4)
        self.out_hw = out_hw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.pixel_shuffle(self.conv(F.pad(x, (0, 1, 0, 1))), 2)
        return y[:, :, : self.out_hw[0], : self.out_hw[1]]


class Phases(nn.Module):
    """ConvTranspose(k=3, s=2, p=1) as four convs of exactly each phase's taps, interleaved."""

    def __init__(self, ct: nn.ConvTranspose2d, out_hw: tuple[int, int]) -> None:
        super().__init__()
        w = ct.weight.detach()
        assert ct.bias is not None
        self.convs = nn.ModuleList()
        for a in (0, 1):
            for b in (0, 1):
                k = _phase_weight(w, a, b, False)
                c = nn.Conv2d(w.shape[0], w.shape[1], tuple(k.shape[-2:]))
                c.weight.data, c.bias.data = k, ct.bias.detach().clone()
                self.convs.append(c)
        self.out_hw = out_hw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        xp = F.pad(x, (0, 1, 0, 1))
        parts = [self.convs[0](x), self.convs[1](xp[:, :, :h, :]), self.convs[2](xp[:, :, :, :w]), self.convs[3](xp)]
        y = torch.stack(parts, 2)
        y = F.pixel_shuffle(y.reshape(y.shape[0], -1, h, w), 2)
        return y[:, :, : self.out_hw[0], : self.out_hw[1]]


def rewrite(decoder: nn.Sequential, x: torch.Tensor, form: type[nn.Module]) -> nn.Sequential:
    """The decoder with every ConvTranspose2d replaced by ``form`` (same function up to float rounding)."""
    layers: list[nn.Module] = []
    for m in decoder:
        y = m(x)
        layers.append(form(m, tuple(y.shape[-2:])) if isinstance(m, nn.ConvTranspose2d) else m)
        x = y
    return nn.Sequential(*layers)


def session(module: nn.Module, x: torch.Tensor) -> ort.InferenceSession:
    f = io.BytesIO()
    torch.onnx.export(module, (x,), f, input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}},
                      dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(f.getvalue(), so, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="1,28,28", help="C,H,W of the default model")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    torch.manual_seed(0)
    shape = tuple(int(v) for v in args.shape.split(","))
    vae = VAE(VAEConfig(input_shape=shape)).eval()
    assert vae.config.widths is not None
    bottom = (vae.config.widths[-1], *conv_sizes(*shape[1:])[-1])  # the decoder's input
    x = torch.randn(64, *bottom)
    forms = {"ConvTranspose": vae.decoder, "sub-pixel": rewrite(vae.decoder, x, SubPixel),
             "phases": rewrite(vae.decoder, x, Phases)}
    with torch.no_grad():
        ref = vae.decoder(x)
        for name, m in forms.items():
            print(f"{name}: max |difference| to ConvTranspose in torch {float((m(x) - ref).abs().max()):.2e}")
    sessions = {name: session(m, x) for name, m in forms.items()}
    print(f"default model {shape}, widths {vae.config.widths}, decoder input {bottom}; onnxruntime "
          f"{ort.__version__}, one thread; us per row, best of {args.rounds} interleaved rounds")
    print("| batch | " + " | ".join(forms) + " | sub-pixel / ConvT | phases / ConvT |")
    print("|---|" + "---|" * (len(forms) + 2))
    rng = np.random.default_rng(0)
    for n in (1, 64, 256):
        xi = rng.standard_normal((n, *bottom)).astype(np.float32)
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for _ in range(args.rounds):
            for k, s in sessions.items():
                t = time.perf_counter()
                s.run(None, {"x": xi})
                times[k].append((time.perf_counter() - t) / n * 1e6)
        best = {k: min(v) for k, v in times.items()}
        ratios = [best["ConvTranspose"] / best[k] for k in ("sub-pixel", "phases")]
        print(f"| {n} | " + " | ".join(f"{v:.1f}" for v in best.values()) + " | "
              + " | ".join(f"{r:.2f}x" for r in ratios) + " |")


if __name__ == "__main__":
    main()
