"""Anomaly scores: held-out images of the fit class score lower than other classes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vaeaug


def _auroc(inliers: torch.Tensor, outliers: torch.Tensor) -> float:
    """P(an outlier scores higher than an inlier)."""
    a, b = inliers.numpy(), outliers.numpy()
    return float((b[:, None] > a[None, :]).mean())


@pytest.fixture(scope="module")
def zeros_model() -> tuple[vaeaug.VAE, torch.Tensor, torch.Tensor]:
    d = vaeaug.load_builtin("digits", split="all")
    zeros, others = d.x[d.y == 0], d.x[d.y != 0]
    model = vaeaug.fit(zeros[:140], epochs=60, progress=False, seed=0)
    return model, zeros[140:], others[:300]


def test_one_class_model_scores_its_class_lower(zeros_model) -> None:
    model, held_out, others = zeros_model
    g = torch.Generator().manual_seed(0)
    auroc = _auroc(model.score(held_out, generator=g), model.score(others, generator=g))
    assert auroc > 0.95, auroc


def test_a_planted_outlier_scores_highest(zeros_model) -> None:
    model, held_out, _ = zeros_model
    noise = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    x = torch.cat([held_out[:20], noise, held_out[20:30]])
    scores = model.score(x, generator=torch.Generator().manual_seed(0))
    assert int(scores.argmax()) == 20


def test_importance_weighting_tightens_the_bound(zeros_model) -> None:
    model, held_out, _ = zeros_model
    s1 = torch.stack([model.score(held_out, generator=torch.Generator().manual_seed(i)) for i in range(8)]).mean(0)
    s32 = model.score(held_out, k=32, generator=torch.Generator().manual_seed(0))
    assert float(s32.mean()) < float(s1.mean())  # E[IWAE bound] >= E[ELBO], i.e. lower score
    assert torch.equal(model.score(held_out, k=4, generator=torch.Generator().manual_seed(1)),
                       model.score(held_out, k=4, generator=torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="k must be"):
        model.score(held_out, k=0)


def test_cli_score(tmp_path: Path, zeros_model) -> None:
    model, _, _ = zeros_model
    path = tmp_path / "zeros.vae"
    model.save(path)
    out = tmp_path / "scores.csv"
    cmd = [sys.executable, "-m", "vaeaug", "score", "--model", str(path), "--data", "digits", "--split", "test",
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = np.genfromtxt(out, delimiter=",", names=True)
    assert len(rows) == 360 and set(rows.dtype.names) == {"index", "label", "score"}
    assert rows["score"][rows["label"] == 0].mean() < rows["score"][rows["label"] != 0].mean()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "exists" in again.stderr
