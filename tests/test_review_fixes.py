"""Regression tests for problems found in review: each would fail on the code before its fix."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import vaeaug
from vaeaug.core.functional import perturb
from vaeaug.core.settings import DEFAULT_AUGMENT, AugmentSetting, resolve_setting
from vaeaug.data import as_tensor_data
from vaeaug.model.vaefile import _content_sha256


@pytest.fixture(scope="module")
def digits_model() -> vaeaug.VAE:
    return vaeaug.fit("digits", epochs=1, progress=False, conditional=True)


def test_a_huge_declared_model_is_refused_before_allocation(tmp_path: Path) -> None:
    """A few hundred bytes declaring a gigantic input must not make load() allocate it."""
    small = vaeaug.VAE(vaeaug.VAEConfig((1, 8, 8), latent_dim=2))
    path = tmp_path / "bomb.vae"
    vaeaug.save(small, path)
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header, data = json.loads(blob[8:8 + n]), blob[8 + n:]
    cfg = json.loads(header["__metadata__"]["config"])
    cfg["input_shape"] = [1, 8, 2**26]
    cfg["widths"] = [32]
    header["__metadata__"]["config"] = json.dumps(cfg)
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    header["__metadata__"]["sha256"] = _content_sha256(header["__metadata__"], entries, data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    with pytest.raises(ValueError, match="values per sample, more than the 16777216 vaeaug supports"):
        vaeaug.load(path)  # refused from the config's own numbers, before its tensors are even compared


def test_interpolate_without_labels_is_refused() -> None:
    model = vaeaug.fit("digits", epochs=1, progress=False)
    aug = vaeaug.VAEAugment(model, mode="interpolate", p=1.0)
    with pytest.raises(ValueError, match="needs the labels"):
        aug(torch.rand(4, 1, 8, 8) * 16)


def test_delta_form_with_a_scalar_label(digits_model) -> None:
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        scalar = perturb(digits_model, x, 4, mode="isotropic", strength=1.0, eps=eps, form="delta")
        full = perturb(digits_model, x, torch.full((3,), 4), mode="isotropic", strength=1.0, eps=eps, form="delta")
    assert torch.equal(scalar, full)


@pytest.mark.parametrize("bad", [{"mode": "isotropic", "strength": 1.0, "form": "delta", "p": "0.5"},
                                 {"mode": "isotropic", "strength": 1.0, "form": "delta"},
                                 {"mode": 3, "strength": 1.0, "form": "delta", "p": 0.5},
                                 {"mode": "isotropic", "strength": 1.0, "form": "delta", "p": 1.5}])
def test_setting_entries_are_type_checked(bad: dict) -> None:
    with pytest.raises(ValueError):
        AugmentSetting.from_dict(bad)


def test_a_tuned_off_model_still_augments_when_a_move_is_asked_for() -> None:
    off = {"mode": "isotropic", "strength": 1.0, "form": "delta", "p": 0.0}
    assert resolve_setting(off).p == 0.0
    assert resolve_setting(off, mode="posterior").p == DEFAULT_AUGMENT.p
    assert resolve_setting(off, mode="posterior", p=0.0).p == 0.0


def test_corrupt_npz_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((4, 8, 8), np.uint8))
    blob = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.infolist()[0]
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size - 3
    blob[start] ^= 0xFF  # corrupt the stored bytes: CRC check fails
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="cannot read"):
        as_tensor_data(path)


def test_chunk_size_is_validated(digits_model) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        vaeaug.TorchBackend(digits_model, chunk_size=0)


def test_score_k1_is_the_elbo_of_elbo_terms(digits_model) -> None:
    x = vaeaug.load_builtin("digits", split="test")
    xs, ys = x.x[:20], x.y[:20]
    rec, kl = digits_model.elbo_terms(xs, ys, generator=torch.Generator().manual_seed(5))
    score = digits_model.score(xs, ys, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(score, (rec + kl).detach())


def test_evaluate_refuses_a_bad_setting_before_fitting() -> None:
    with pytest.raises(ValueError, match="p must be"):
        vaeaug.evaluate("digits", setting=AugmentSetting(p=1.5), progress=False)
    with pytest.raises(ValueError, match="prior"):
        vaeaug.evaluate("digits", setting=AugmentSetting(mode="prior", form="decode"), progress=False)
