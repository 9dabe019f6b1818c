"""Fitting speed and quality on Fashion-MNIST, side by side with a plain hand-written loop.

Measures, in one run on the same threads:
  * a plain PyTorch loop over a comparable small conv VAE (tensors sliced from memory, Adam,
    no validation, no bookkeeping): the reference for "library overhead";
  * ``vaeaug.fit`` with the default architecture on the 60k training images (10% held out for
    validation, as by default): training samples/s, seconds per epoch (validation included);
  * the test-set negative ELBO in nats per image after the stated number of epochs;
  * the fp32 matmul ceiling (1024x1024) and the fraction of it a training step reaches;
  * the same fit in bf16 autocast (precision="bf16") beside fp32: speed and test-set loss;
  * the same fit as 2-process DistributedDataParallel (torchrun, gloo, one thread per process)
    beside the single process on all threads;
  * with --stream: the fit streamed from disk (the training images written as a generated set,
    read through 2 DataLoader workers) beside the same fit from memory.

Usage:
    python benchmarks/fit.py --epochs 10            # prints a markdown block
    python benchmarks/fit.py --epochs 10 --record   # also appends it to BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import cpu_name, record  # a sibling script: benchmarks/ is on sys.path when run
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import vaeaug


def matmul_gflops(n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


class PlainVAE(nn.Module):
    """What a user would write by hand: two stride-2 convs (32, 64), latent 16, mirror decoder."""

    def __init__(self, latent: int = 16) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1),
                                 nn.ReLU(), nn.Flatten(), nn.Linear(64 * 7 * 7, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(latent, 64 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)),
                                 nn.ConvTranspose2d(64, 32, 3, 2, 1, 1), nn.ReLU(),
                                 nn.ConvTranspose2d(32, 1, 3, 2, 1, 1))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.enc(x).chunk(2, 1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        rec = F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="sum")
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum()
        return (rec + kl) / x.shape[0]


def plain_epoch(x: torch.Tensor, batch_size: int, channels_last: bool) -> float:
    """One epoch of the plain loop; returns samples/s."""
    torch.manual_seed(0)
    model = PlainVAE()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    perm = torch.randperm(len(x))
    t = time.perf_counter()
    xe = x[perm]
    for i in range(0, len(x), batch_size):
        xb = xe[i:i + batch_size]
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        loss = model.loss(xb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return len(x) / (time.perf_counter() - t)


def train_step_flops(model: vaeaug.VAE, batch: torch.Tensor) -> float:
    """FLOPs of one forward+backward pass per sample, counted by torch's FlopCounterMode."""
    model.train()
    with FlopCounterMode(display=False) as counter:
        rec, kl = model.elbo_terms(batch, generator=torch.Generator().manual_seed(0))
        (rec + kl).mean().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(batch)


@torch.no_grad()
def test_nelbo(model: vaeaug.VAE, x: torch.Tensor) -> tuple[float, float, float]:
    g = torch.Generator().manual_seed(0)
    rec_sum = kl_sum = 0.0
    for i in range(0, len(x), 1000):
        rec, kl = model.elbo_terms(x[i:i + 1000], generator=g)
        rec_sum += float(rec.sum())
        kl_sum += float(kl.sum())
    return (rec_sum + kl_sum) / len(x), rec_sum / len(x), kl_sum / len(x)


def ddp_fit(limit: int | None, epochs: int, batch_size: int, precision: str) -> vaeaug.VAE:
    """The same fit under ``torchrun --nproc-per-node 2`` (gloo, one thread per process)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = Path(tempfile.mkdtemp()) / "ddp.vae"
    data = "fashion-mnist"
    if limit:
        import numpy as np

        from vaeaug.data.builtin import find_fashion_mnist, read_idx

        folder = find_fashion_mnist()
        assert folder is not None
        np.savez(out.with_suffix(".npz"), x=read_idx(next(folder.glob("train-images-idx3-ubyte*")))[:limit])
        data = str(out.with_suffix(".npz"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(port), "-m", "vaeaug", "fit", "--data", data, "--epochs", str(epochs),
           "--batch-size", str(batch_size // 2), "--patience", "0", "--device", "cpu", "--precision", precision,
           "--no-progress", "--out", str(out)]
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    return vaeaug.load(out)


def mean_rate(model: vaeaug.VAE) -> float:
    h = model.history
    return sum(r["samples_per_s"] for r in h[1:]) / max(1, len(h) - 1) if len(h) > 1 else h[0]["samples_per_s"]


def stream_rows(args: argparse.Namespace) -> None:
    """Streamed from a generated set on disk (2 DataLoader workers) vs in memory, same epochs and seed."""
    import numpy as np

    from vaeaug.data.builtin import find_fashion_mnist, read_idx

    torch.set_num_threads(args.threads)
    folder = find_fashion_mnist()
    assert folder is not None, "Fashion-MNIST not found: apt-get install dataset-fashion-mnist"
    x = read_idx(next(folder.glob("train-images-idx3-ubyte*")))[: args.limit]
    out = Path(tempfile.mkdtemp()) / "set"
    untrained = vaeaug.VAE(vaeaug.VAEConfig((1, 28, 28)), value_range=vaeaug.ValueRange(0, 255, "uint8"))
    vaeaug.pregenerate(x, untrained, out, variants_per_sample=0, progress=False)  # the real images, as shards
    kw = {"epochs": args.epochs, "batch_size": args.batch_size, "progress": False, "seed": 0, "patience": None}
    mem = vaeaug.fit(np.ascontiguousarray(x), **kw)
    streamed = vaeaug.fit(out, stream=True, num_workers=2, **kw)
    when = datetime.date.today().isoformat()
    cmd = "python benchmarks/fit.py " + " ".join(sys.argv[1:])
    lines = [
        f"### fit streamed from disk: Fashion-MNIST {len(x):,} images, {args.epochs} epochs ({when})",
        "",
        f"Machine: {cpu_name()}, {args.threads} threads, torch {torch.__version__}. Command: `{cmd}`. "
        f"Precision: {mem.history[0]['precision']} (auto).",
        "",
        "| fit | training samples/s (epochs 2..) | ratio | best val loss |",
        "|---|---|---|---|",
        f"| in memory | {mean_rate(mem):,.0f} | 1.00 | {min(r['val_loss'] for r in mem.history):.2f} |",
        f"| streamed: generated set on disk, 2 DataLoader workers | {mean_rate(streamed):,.0f} "
        f"| {mean_rate(streamed) / mean_rate(mem):.2f} | {min(r['val_loss'] for r in streamed.history):.2f} |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.record:
        record(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    ap.add_argument("--record", action="store_true", help="append the results to BENCHMARKS.md")
    ap.add_argument("--stream", action="store_true", help="only the streamed vs in-memory comparison")
    args = ap.parse_args()
    if args.stream:
        return stream_rows(args)
    torch.set_num_threads(args.threads)

    train = vaeaug.load_builtin("fashion-mnist", split="train")
    test = vaeaug.load_builtin("fashion-mnist", split="test")
    x = train.x[: args.limit] if args.limit else train.x
    n_fit = len(x) - round(0.1 * len(x))

    ceiling = matmul_gflops()
    plain_before = plain_epoch(x[:n_fit], args.batch_size, channels_last=False)
    plain_cl_before = plain_epoch(x[:n_fit], args.batch_size, channels_last=True)
    t = time.perf_counter()
    model = vaeaug.fit(x, epochs=args.epochs, batch_size=args.batch_size, progress=False, seed=0,
                       device="cpu", precision="fp32", patience=None)
    wall = time.perf_counter() - t
    bf16 = vaeaug.fit(x, epochs=args.epochs, batch_size=args.batch_size, progress=False, seed=0,
                      device="cpu", precision="bf16", patience=None)
    ddp = ddp_fit(args.limit, args.epochs, args.batch_size, "fp32")
    plain_after = plain_epoch(x[:n_fit], args.batch_size, channels_last=False)
    plain_cl_after = plain_epoch(x[:n_fit], args.batch_size, channels_last=True)
    ceiling = (ceiling + matmul_gflops()) / 2

    h = model.history
    lib_rate = mean_rate(model)
    plain = (plain_before + plain_after) / 2
    plain_cl = (plain_cl_before + plain_cl_after) / 2
    sec_epoch = sum(r["seconds"] for r in h) / len(h)
    nelbo, rec, kl = test_nelbo(model, test.x)
    flops = train_step_flops(vaeaug.VAE(model.config), x[: args.batch_size].contiguous())
    frac = lib_rate * flops / (ceiling * 1e9)

    cmd = "python benchmarks/fit.py " + " ".join(sys.argv[1:])
    when = datetime.date.today().isoformat()
    machine = f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}, Python {platform.python_version()}"
    lines = [
        f"### fit: Fashion-MNIST {len(x):,} train images, {args.epochs} epochs, batch {args.batch_size} ({when})",
        "",
        f"Machine: {machine}. Command: `{cmd}`. Wall time of `vaeaug.fit`: {wall:.1f} s.",
        "",
        "| what | training samples/s | ratio to plain loop |",
        "|---|---|---|",
        f"| plain hand-written loop, NCHW (mean of one epoch before and after) "
        f"| {plain:,.0f} | 1.00 |",
        f"| plain hand-written loop, channels_last | {plain_cl:,.0f} | {plain_cl / plain:.2f} |",
        f"| `vaeaug.fit`, default architecture (mean over epochs 2..{len(h)}) "
        f"| {lib_rate:,.0f} | {lib_rate / plain:.2f} |",
        "",
        f"- seconds per epoch (validation on {len(x) - n_fit:,} images included): {sec_epoch:.2f}",
        f"- test-set negative ELBO after {len(h)} epochs: {nelbo:.2f} nats/image "
        f"(reconstruction {rec:.2f} + KL {kl:.2f}); best val loss {min(r['val_loss'] for r in h):.2f}",
        f"- training FLOPs per sample (forward + backward, FlopCounterMode): {flops / 1e6:.1f} MFLOP; "
        f"fp32 matmul ceiling in this run: {ceiling:.0f} GFLOP/s; fraction reached: {frac:.0%}",
        "",
        "Precision and processes (the same fit, same epochs and seed; test-set negative ELBO in nats/image):",
        "",
        "| fit | training samples/s | ratio to fp32, one process | test NELBO | best val loss |",
        "|---|---|---|---|---|",
    ]
    for name, m in ((f"fp32, one process, {args.threads} threads", model),
                    (f"bf16 autocast, one process, {args.threads} threads", bf16),
                    (f"fp32, 2-process DDP (gloo, 1 thread each, batch {args.batch_size // 2} per process)", ddp)):
        nel = test_nelbo(m, test.x)[0]
        lines.append(f"| {name} | {mean_rate(m):,.0f} | {mean_rate(m) / lib_rate:.2f} | {nel:.2f} "
                     f"| {min(r['val_loss'] for r in m.history):.2f} |")
    lines.append("")
    print(json.dumps({"bf16_history": bf16.history[-1], "ddp_history": ddp.history[-1]}, default=str))
    text = "\n".join(lines)
    print(text)
    if args.record:
        record(text)


if __name__ == "__main__":
    main()
