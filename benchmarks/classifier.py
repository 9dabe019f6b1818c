"""Per-step cost of the protocol's classifier (SmallCNN, batch 64, 28x28): fp32 vs bf16 autocast,
NCHW vs channels_last, side by side in one run (the evaluate/tune protocol uses the fastest where
the CPU computes bf16 natively).

Usage:
    python benchmarks/classifier.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from vaeaug.protocol.classifier import SmallCNN, fast_precision


def step_ms(channels_last: bool, bf16: bool, steps: int = 60, warmup: int = 10) -> float:
    torch.manual_seed(0)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    model = SmallCNN((1, 28, 28), 10)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for i in range(steps + warmup):
        if i == warmup:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps * 1000


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; native bf16: {fast_precision()}")
    rows = [(cl, bf) for cl in (False, True) for bf in (False, True)]
    best = {r: min(step_ms(*r) for _ in range(3)) for r in rows}
    ref = best[(False, False)]
    print("| layout | precision | ms per step (best of 3) | speed-up over fp32 NCHW |")
    print("|---|---|---|---|")
    for (cl, bf), ms in best.items():
        layout, precision = "channels_last" if cl else "NCHW", "bf16 autocast" if bf else "fp32"
        print(f"| {layout} | {precision} | {ms:.1f} | {ref / ms:.2f} |")


if __name__ == "__main__":
    main()
