"""Distributed fitting: a real 2-process gloo DistributedDataParallel run under torchrun, on CPU."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

import vaeaug


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_process_ddp_fit_trains_and_rank_0_alone_writes(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "-m", "vaeaug", "fit", "--data", "digits", "--conditional",
           "--epochs", "4", "--kl-warmup", "0", "--out", str(out_dir / "ddp.vae")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("fit: 1x8x8") == 1 and p.stdout.count("saved") == 1, "only rank 0 reports and saves"
    assert sorted(f.name for f in out_dir.iterdir()) == ["ddp.vae"], "only one file is written"
    model = vaeaug.load(out_dir / "ddp.vae")
    assert model.conditional and len(model.history) == 4
    assert [r["processes"] for r in model.history] == [2, 2, 2, 2], "both ranks trained every epoch"
    assert "1,293 samples" in p.stdout  # the whole training split (1,437 digits less 10% validation)
    d = vaeaug.load_builtin("digits", split="test")
    untrained = vaeaug.VAE(model.config, model.value_range)
    # one process with the same global batch (2 x 128) takes the same number of optimizer steps
    single = vaeaug.fit("digits", conditional=True, epochs=4, kl_warmup=0, batch_size=256, progress=False)
    with torch.no_grad():
        fitted_score = float(model.score(d.x, d.y).mean())
        initial_score = float(untrained.score(d.x, d.y).mean())
        single_score = float(single.score(d.x, d.y).mean())
    # it learned, about as well as one process with the same global batch and steps
    assert fitted_score < 0.9 * initial_score, (fitted_score, initial_score)
    assert fitted_score < 1.15 * single_score, (fitted_score, single_score)
    losses = [r["train_loss"] for r in model.history]
    assert losses[-1] < losses[0], losses
