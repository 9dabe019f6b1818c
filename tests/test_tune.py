"""tune: a validation-split choice that falls back to p = 0, stored in the model file and reused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vaeaug
from vaeaug import AugmentSetting, VAEAugment, VAEAugmentedDataset
from vaeaug.settings import DEFAULT_AUGMENT, resolve_setting

GRID = (AugmentSetting("isotropic", 1.0, "delta", 0.5), AugmentSetting("posterior", 1.0, "decode", 0.5))


@pytest.fixture(scope="module")
def digits() -> vaeaug.TensorData:
    return vaeaug.load_builtin("digits")


@pytest.fixture(scope="module")
def shuffled_tuned(digits):
    """A model tuned on digits whose labels are shuffled: no augmentation can help there."""
    y = digits.y[torch.randperm(len(digits.y), generator=torch.Generator().manual_seed(0))]
    model = vaeaug.fit(digits.x, y, epochs=3, progress=False)
    result = vaeaug.tune(model, digits.x, y, grid=GRID, steps=40, repeats=2, progress=False)
    return model, result


def test_shuffled_labels_fall_back_to_p0(shuffled_tuned) -> None:
    model, result = shuffled_tuned
    assert result["chosen"] is None
    assert "augmentation is off (p = 0)" in result["reason"]
    assert model.augment["p"] == 0.0
    labels = [r["label"] for r in result["scores"]]
    assert labels == ["none", *(s.label() for s in GRID)]
    for r in result["scores"]:
        assert len(r["val_accuracy"]) == 2 and all(0 <= a <= 100 for a in r["val_accuracy"])
    # validation is a stratified 30% of the training data, never the test split
    assert result["n_val"] + result["n_train"] == 1437 and 0.28 < result["n_val"] / 1437 < 0.32


def test_the_choice_is_stored_and_reused_after_save_and_load(shuffled_tuned, tmp_path: Path) -> None:
    model, result = shuffled_tuned
    path = tmp_path / "tuned.vae"
    model.save(path)
    loaded = vaeaug.load(path)
    assert loaded.augment == model.augment and loaded.tuning == result
    aug = VAEAugment(loaded)
    assert aug.p == 0.0  # tuned off: the transform leaves images alone
    img = torch.rand(1, 8, 8)  # the model was fit on floats in [0, 1]
    assert torch.equal(aug(img), img)
    assert VAEAugment(loaded, p=1.0).p == 1.0  # an explicit argument wins
    info = subprocess.run([sys.executable, "-m", "vaeaug", "info", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert info.returncode == 0 and "no setting beat none" in info.stdout and "(tuned)" in info.stdout


def test_a_stored_setting_is_the_default_of_transform_and_dataset(digits, tmp_path: Path) -> None:
    model = vaeaug.fit(digits.x[:300], digits.y[:300], epochs=1, progress=False)
    model.augment = {"mode": "posterior", "strength": 2.0, "form": "delta", "p": 0.75}
    path = tmp_path / "m.vae"
    model.save(path)
    aug = VAEAugment(str(path))
    assert (aug.mode, aug.strength, aug.form, aug.p) == ("posterior", 2.0, "delta", 0.75)
    base = torch.utils.data.TensorDataset(digits.x[:5], digits.y[:5])
    ds = VAEAugmentedDataset(base, str(path))
    assert (ds.mode, ds.strength, ds.form) == ("posterior", 2.0, "delta")
    plain = VAEAugment(vaeaug.fit(digits.x[:100], epochs=1, progress=False))
    assert (plain.mode, plain.strength, plain.form, plain.p) == tuple(vars(DEFAULT_AUGMENT).values())


def test_resolve_setting_precedence() -> None:
    stored = {"mode": "posterior", "strength": 2.0, "form": "delta", "p": 0.5}
    assert resolve_setting(stored, p=0.1) == AugmentSetting("posterior", 2.0, "delta", 0.1)
    assert resolve_setting(None) == DEFAULT_AUGMENT
    assert resolve_setting(None, mode="prior").form == "decode"  # prior has no source
    with pytest.raises(ValueError, match="keys mode, strength, form, p"):
        resolve_setting({"mode": "posterior", "speed": 1})


def test_tampered_augment_entry_is_refused(digits, tmp_path: Path) -> None:
    model = vaeaug.fit(digits.x[:100], epochs=1, progress=False)
    model.augment = {"mode": "prior", "strength": 1.0, "form": "decode", "p": 0.5}  # prior needs a conditional model
    path = tmp_path / "bad.vae"
    model.save(path)
    with pytest.raises(ValueError, match="conditional"):
        vaeaug.load(path)


def test_tune_needs_labels_and_repeats(digits) -> None:
    model = vaeaug.fit(digits.x[:100], epochs=1, progress=False)
    with pytest.raises(ValueError, match="needs labels"):
        vaeaug.tune(model, digits.x[:100], progress=False)
    with pytest.raises(ValueError, match="repeats"):
        vaeaug.tune(model, digits.x[:100], digits.y[:100], repeats=1, progress=False)


def test_cli_fit_with_tune(tmp_path: Path) -> None:
    out = tmp_path / "d.vae"
    proc = subprocess.run([sys.executable, "-m", "vaeaug", "fit", "--data", "digits", "--epochs", "2", "--tune",
                           "--tune-steps", "30", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "tune: " in proc.stdout
    model = vaeaug.load(out)
    assert model.tuning is not None and model.augment is not None


def test_the_judging_vae_never_sees_the_validation_split(digits, monkeypatch: pytest.MonkeyPatch) -> None:
    import vaeaug.training as training

    seen: list[torch.Tensor] = []
    real_fit = training.fit

    def spy(x, y=None, **kw):
        seen.append(x.clone())
        return real_fit(x, y, **kw)

    monkeypatch.setattr(training, "fit", spy)
    model = vaeaug.fit(digits.x[:300], digits.y[:300], epochs=2, progress=False)
    seen.clear()
    result = vaeaug.tune(model, digits.x[:300], digits.y[:300], grid=GRID[:1], steps=10, repeats=2, progress=False)
    assert result["refit"] is True and len(seen) == 1
    assert len(seen[0]) == result["n_train"] < 300
    # the refit saw exactly the training part of tune's split, and no validation image
    from vaeaug.tuning import _stratified_split

    tr, va = _stratified_split(digits.y[:300], 0.3, 0)
    assert torch.equal(seen[0], digits.x[:300][tr])
    fitted = {v.numpy().tobytes() for v in seen[0]}
    assert not any(digits.x[:300][i].numpy().tobytes() in fitted for i in va.tolist())
    seen.clear()
    vaeaug.tune(model, digits.x[:300], digits.y[:300], grid=GRID[:1], steps=10, repeats=2, refit=False,
                progress=False)
    assert seen == []
