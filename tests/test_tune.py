"""tune: a validation-split choice that falls back to p = 0, stored in the model file and reused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vaeaug
from vaeaug import AugmentSetting, VAEAugment, VAEAugmentedDataset
from vaeaug.core.settings import DEFAULT_AUGMENT, resolve_setting

GRID = (AugmentSetting("isotropic", 1.0, "delta", 0.5), AugmentSetting("posterior", 1.0, "decode", 0.5))
QUICK = vaeaug.Budget(max_steps=150, eval_every=25, patience=2, min_steps=0)
TINY = vaeaug.Budget(max_steps=50, eval_every=25, patience=1, min_steps=0)


@pytest.fixture(scope="module")
def digits() -> vaeaug.TensorData:
    return vaeaug.load_builtin("digits")


@pytest.fixture(scope="module")
def shuffled_tuned(digits):
    """A model tuned on digits whose labels are shuffled: no augmentation can help there."""
    y = digits.y[torch.randperm(len(digits.y), generator=torch.Generator().manual_seed(0))]
    model = vaeaug.fit(digits.x, y, epochs=3, progress=False)
    result = vaeaug.tune(model, digits.x, y, grid=GRID, budget=QUICK, folds=3, repeats=2, progress=False)
    return model, result


def test_shuffled_labels_fall_back_to_p0(shuffled_tuned) -> None:
    model, result = shuffled_tuned
    assert result["chosen"] is None
    assert "augmentation is off (p = 0)" in result["reason"]
    assert result["p_value"] >= result["alpha"] or result["gain"] <= 0
    assert model.augment["p"] == 0.0
    labels = [r["label"] for r in result["scores"]]
    assert labels == ["none", *(s.label() for s in GRID)]
    for r in result["scores"]:
        assert all(0 <= a <= 100 for a in r["val_accuracy"]) and len(r["val_accuracy"]) == len(r["steps"])
    assert result["n"] == 1437 and result["folds"] == 3


def test_tuned_pipeline_of_a_tune_without_transforms(shuffled_tuned, digits) -> None:
    """Tuned with neither transforms= nor base=: the pipeline is the VAE setting or nothing; records of
    the older tune (a setting, no pipeline) still build."""
    model, result = shuffled_tuned
    pipeline = vaeaug.tuned_pipeline(model)
    assert result["chosen"] is None and pipeline.vae is None and pipeline.transform is None
    img = digits.x[0] / 16.0
    assert pipeline(img) is img and pipeline([img, 3]) == [img, 3]
    with pytest.raises(ValueError, match="tuned without transforms="):
        vaeaug.tuned_pipeline(model, {"shift": shift})
    saved = model.tuning
    try:
        model.tuning = {k: v for k, v in saved.items() if k != "pipeline"} | {"chosen": vars(GRID[0])}
        older = vaeaug.tuned_pipeline(model, seed=0)
        assert older.vae is not None and older.vae.strength == GRID[0].strength and older.transform is None
    finally:
        model.tuning = saved


def test_successive_halving_and_the_paired_test(shuffled_tuned) -> None:
    _, result = shuffled_tuned
    by = {r["label"]: r for r in result["scores"]}
    # none runs on every fold and repeat; every candidate on fold 0; the finalist on every fold and repeat
    assert sorted(map(tuple, by["none"]["runs"])) == [(f, r) for f in range(3) for r in range(2)]
    assert all([0, 0] in r["runs"] for r in result["scores"])
    fin = by[result["finalist"]]
    assert sorted(map(tuple, fin["runs"])) == [(f, r) for f in range(3) for r in range(2)]
    others = [r for r in result["scores"] if r["label"] not in ("none", result["finalist"])]
    assert all(len(r["runs"]) == 1 for r in others)  # the grid of two halves to one after fold 0
    assert result["runs"] == 6 + 6 + 1
    # the verdict's gain is the mean paired difference over the finalist's runs
    gains = [a - b for a, b in zip(fin["val_accuracy"], by["none"]["val_accuracy"], strict=True)]
    assert result["gain"] == pytest.approx(sum(gains) / len(gains))


def test_t_test_p_values() -> None:
    from vaeaug.protocol.tuning import t_sf

    # reference values of Student's t (one-sided upper tail)
    for t, df, p in [(2.015, 5, 0.05), (1.476, 5, 0.10), (6.965, 2, 0.01), (0.0, 7, 0.5), (-1.533, 4, 0.90)]:
        assert t_sf(t, df) == pytest.approx(p, abs=2e-4)


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


def test_tune_refuses_bad_arguments(digits) -> None:
    model = vaeaug.fit(digits.x[:100], epochs=1, progress=False)
    with pytest.raises(ValueError, match="needs labels"):
        vaeaug.tune(model, digits.x[:100], progress=False)
    for kw, msg in [({"folds": 1}, "folds must be an integer >= 2"), ({"repeats": 0}, "repeats must be"),
                    ({"alpha": 1.5}, "alpha must be"), ({"grid": []}, "grid is empty"),
                    ({"budget": vaeaug.Budget.fixed(10)}, "converged"), ({"folds": 40}, "at least folds=40"),
                    ({"seed": 2**64}, "seed must be an integer in"), ({"score": "accuracy"}, "score must be one of"),
                    ({"score": ["brier"]}, "score must be one of")]:
        with pytest.raises(ValueError, match=msg):
            vaeaug.tune(model, digits.x[:100], digits.y[:100], progress=False, **kw)
    with pytest.raises(TypeError, match="average must be True or False"):
        vaeaug.tune(model, digits.x[:100], digits.y[:100], average=1, progress=False)
    with pytest.raises(TypeError, match="calibrate must be True or False"):
        vaeaug.tune(model, digits.x[:100], digits.y[:100], calibrate="yes", progress=False)
    with pytest.raises(TypeError, match="base must be a callable"):
        vaeaug.tune(model, digits.x[:100], digits.y[:100], base="flip", progress=False)
    with pytest.raises(ValueError, match="seed must be an integer in"):  # was torch's "Overflow when unpacking"
        vaeaug.evaluate("digits", seeds=[2**64], progress=False)


def test_cli_fit_with_tune(tmp_path: Path) -> None:
    out = tmp_path / "d.vae"
    proc = subprocess.run([sys.executable, "-m", "vaeaug", "fit", "--data", "digits", "--epochs", "2", "--tune",
                           "--tune-pipeline", "--tune-steps", "30", "--tune-folds", "2",
                           "--tune-repeats", "1", "--tune-calibrate", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "tune: " in proc.stdout
    model = vaeaug.load(out)
    assert model.tuning is not None and model.augment is not None
    assert model.tuning["calibrate"] is True and all(len(r["temperatures"]) == len(r["runs"])
                                                     for r in model.tuning["scores"])
    assert model.tuning["reference"] == "classic" and model.tuning["pipeline"]["label"] in \
        [r["label"] for r in model.tuning["scores"]]
    info = subprocess.run([sys.executable, "-m", "vaeaug", "info", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert f"pipeline    {model.tuning['recommendation']}" in info.stdout
    bad = subprocess.run([sys.executable, "-m", "vaeaug", "fit", "--data", "digits", "--tune-pipeline", "--out",
                          str(tmp_path / "x.vae")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "add --tune" in bad.stderr and not (tmp_path / "x.vae").exists()


def test_the_judging_vaes_never_see_their_fold(digits, monkeypatch: pytest.MonkeyPatch) -> None:
    import vaeaug.fitting.training as training
    from vaeaug.protocol.tuning import stratified_folds

    seen: list[torch.Tensor] = []
    real_fit = training.fit

    def spy(x, y=None, **kw):
        seen.append(x.clone())
        return real_fit(x, y, **kw)

    monkeypatch.setattr(training, "fit", spy)
    x, y = digits.x[:300], digits.y[:300]
    model = vaeaug.fit(x, y, epochs=2, progress=False)
    seen.clear()
    result = vaeaug.tune(model, x, y, grid=GRID[:1], budget=QUICK, folds=3, repeats=1, progress=False)
    assert result["refit"] is True and len(seen) == 3  # one VAE per fold
    folds = stratified_folds(y, 3, 0)
    assert sorted(torch.cat(folds).tolist()) == list(range(300))
    for f, fitted in zip(folds, seen, strict=True):
        held = {x[i].numpy().tobytes() for i in f.tolist()}
        assert not any(v.numpy().tobytes() in held for v in fitted)  # no image of its own fold
        assert len(fitted) < 200  # the other folds minus the inner stopping slice
    seen.clear()
    vaeaug.tune(model, x, y, grid=GRID[:1], budget=QUICK, folds=2, repeats=1, refit=False, progress=False)
    assert seen == []


def test_tune_with_a_base_transform_stores_it(digits) -> None:
    calls = []

    def shift(img: torch.Tensor) -> torch.Tensor:
        calls.append(img.shape)
        return torch.roll(img, 1, dims=-1)

    x, y = digits.x[:200], digits.y[:200]
    model = vaeaug.fit(x, y, epochs=1, conditional=True, progress=False)
    result = vaeaug.tune(model, x, y, grid=GRID[:1], base=shift, budget=QUICK, folds=2, repeats=1, balanced=True,
                         progress=False)
    assert calls and set(calls) == {torch.Size([1, 8, 8])}  # per image, in every run (none included)
    assert result["balanced"] is True and "class-balanced" in result["metric"] and "balanced-accuracy" in \
        result["reason"]
    assert result["base"] == repr(shift) and model.tuning["base"] == repr(shift)
    assert "on top of your base transform" in result["reason"]
    pipeline = vaeaug.tuned_pipeline(model, shift)  # the choice made on top of base=, as one transform
    assert pipeline.transform is shift and (pipeline.vae is None) == (result["chosen"] is None)
    with pytest.raises(TypeError, match="tuned on top of base="):
        vaeaug.tuned_pipeline(model, {"shift": shift})


def test_tune_says_yes_where_variants_obviously_help(digits) -> None:
    """A planted nuisance the VAE learns from every class: each image's contrast is scaled by a random
    factor in [0.2, 1]. With 30 images per class the classifier sees each class at few contrasts; the
    class-conditional VAE learns contrast from all 300, and its variants vary it within a class."""
    from vaeaug.protocol.evaluation import reduce_per_class

    idx = reduce_per_class(digits.y, 30, 0)
    g = torch.Generator().manual_seed(1)
    x = digits.x[idx] * (0.2 + 0.8 * torch.rand(len(idx), 1, 1, 1, generator=g))
    y = digits.y[idx]
    model = vaeaug.fit(x, y, epochs=60, conditional=True, patience=None, progress=False)
    result = vaeaug.tune(model, x, y, grid=GRID[:1], folds=3, repeats=2, progress=False)
    assert result["chosen"] == vars(GRID[0]) and model.augment == vars(GRID[0])
    assert result["p_value"] < result["alpha"] and result["gain"] > 1.0
    assert "paired one-sided t-test" in result["reason"]


def shift(img: torch.Tensor) -> torch.Tensor:
    return torch.roll(img, 1, dims=-1)


@pytest.fixture(scope="module")
def pipeline_tuned(digits):
    """A conditional model tuned with transforms= (two names for one transform), and its result."""
    x, y = digits.x[:150], digits.y[:150]
    model = vaeaug.fit(x, y, epochs=1, conditional=True, progress=False)
    result = vaeaug.tune(model, x, y, grid=GRID[:1], transforms={"shift": shift, "same": shift}, budget=QUICK,
                         folds=2, repeats=1, refit=False, progress=False)
    return model, result


def test_tune_chooses_the_pipeline_and_pairs_image_by_image(digits, pipeline_tuned) -> None:
    """transforms=: the candidates are none, each transform, each setting, and each setting then each
    transform; the first transform is the reference. A candidate that trains exactly what the reference
    trains (the same transform under a second name) differs from it by exactly 0 on every image."""
    model, result = pipeline_tuned
    x, y = digits.x[:150], digits.y[:150]
    vae = f"vaeaug {GRID[0].label()}"
    labels = [r["label"] for r in result["scores"]]
    assert labels == ["shift", "none", "same", vae, f"{vae}, then shift", f"{vae}, then same"]
    assert result["reference"] == "shift" and result["balanced"] is False  # digits' classes are near-equal
    by = {r["label"]: r for r in result["scores"]}
    assert by["same"]["loss_gain"] == 0.0 and by["same"]["gain"] == 0.0  # paired: bit-identical runs
    assert by[f"{vae}, then same"]["val_accuracy"][0] == by[f"{vae}, then shift"]["val_accuracy"][0]
    chosen = result["pipeline"]
    assert chosen["label"] in labels and result["recommendation"].startswith(("use ", "keep shift"))
    assert (chosen["transform"], chosen["setting"]) == {
        "shift": ("shift", None), "none": (None, None), "same": ("same", None), vae: (None, vars(GRID[0])),
        f"{vae}, then shift": ("shift", vars(GRID[0])), f"{vae}, then same": ("same", vars(GRID[0]))}[chosen["label"]]
    assert result["chosen"] == chosen["setting"]
    with pytest.raises(ValueError, match="not both"):
        vaeaug.tune(model, x, y, grid=GRID[:1], base=shift, transforms=[shift], progress=False)


def test_the_finalist_is_the_best_log_loss_gain_among_candidates_without_accuracy_loss(shuffled_tuned) -> None:
    _, result = shuffled_tuned
    by = {r["label"]: r for r in result["scores"]}
    ref = by[result["reference"]]

    def repeat0(r: dict) -> dict:
        rows = zip(r["runs"], r["val_accuracy"], r["losses"], strict=True)
        return {tuple(k): (acc, loss) for k, acc, loss in rows if k[1] == 0}

    ref0 = repeat0(ref)
    on_every_fold = [r for r in result["scores"] if r["label"] != result["reference"]
                     and sorted(repeat0(r)) == [(f, 0) for f in range(result["folds"])]]
    assert on_every_fold and result["finalist"] in {r["label"] for r in on_every_fold}

    def rank(r: dict) -> tuple[bool, float]:
        mine = repeat0(r)
        acc = sum(mine[k][0] - ref0[k][0] for k in mine) / len(mine)
        loss = sum(ref0[k][1] - mine[k][1] for k in mine) / len(mine)
        return acc >= result["min_gain"], loss

    best = max(on_every_fold, key=rank)
    assert rank(by[result["finalist"]]) == rank(best)


def test_the_brier_score_is_bounded_pairs_the_same_runs_and_names_itself(digits) -> None:
    """score="brier": the same runs (same accuracies) as the log-loss, scored per image by the multi-class
    Brier score, which lies between (1 - p_true)^2 and 2 (1 - p_true)^2 image by image."""
    from vaeaug.protocol.classifier import train_classifier

    x, y = digits.x[:150], digits.y[:150]
    model = vaeaug.fit(x, y, epochs=1, conditional=True, progress=False)
    kw = {"grid": GRID[:1], "budget": QUICK, "folds": 2, "repeats": 1, "refit": False, "progress": False}
    brier = vaeaug.tune(model, x, y, score="brier", **kw)
    logloss = vaeaug.tune(model, x, y, **kw)
    assert brier["score"] == "brier" and brier["metric"] == "paired Brier score per image"
    assert logloss["score"] == "logloss" and "log-loss" in logloss["metric"]
    assert "Brier score per image" in brier["reason"]
    best_check = vaeaug.tune(model, x, y, average=False, **kw)  # the same classifiers, scored at their best check
    assert logloss["average"] is True and best_check["average"] is False
    assert best_check["scores"][0]["steps"] == logloss["scores"][0]["steps"]
    assert best_check["scores"][0]["losses"] != logloss["scores"][0]["losses"]
    calibrated = vaeaug.tune(model, x, y, calibrate=True, **kw)
    assert calibrated["calibrate"] is True and logloss["calibrate"] is False
    assert "temperature-scaled true-class log-loss" in calibrated["reason"]
    for b, ll, c in zip(brier["scores"], logloss["scores"], calibrated["scores"], strict=True):
        assert b["val_accuracy"] == ll["val_accuracy"] == c["val_accuracy"]  # the same classifiers, scored differently
        assert all(0.0 <= v <= 2.0 for v in b["losses"]) and b["losses"] != ll["losses"]
        # the temperature that minimises each run's log-loss: never worse than the raw predictions (T = 1)
        assert len(c["temperatures"]) == len(c["runs"]) and ll["temperatures"] == []
        assert all(cv <= lv + 1e-6 for cv, lv in zip(c["losses"], ll["losses"], strict=True))
        assert c["losses"] != ll["losses"]
    run = train_classifier(x[:100], y[:100], x[100:], y[100:], num_classes=10, seed=0, steps=30)
    assert run.brier is not None and run.true_logprob is not None
    miss = 1.0 - run.true_logprob.exp()
    assert bool((run.brier >= miss**2 - 1e-6).all()) and bool((run.brier <= 2 * miss**2 + 1e-6).all())
    assert float(miss.max()) > 0.1  # a short run: the bounds are not met trivially at p_true = 1
    from vaeaug.protocol.tuning import SCORES

    help_text = subprocess.run([sys.executable, "-m", "vaeaug", "fit", "--help"], capture_output=True, text=True,
                               check=True).stdout
    assert "--tune-score {" + ",".join(SCORES) + "}" in help_text  # the CLI offers exactly tune's scores


def test_tuned_pipeline_builds_each_choice_as_one_transform(digits, pipeline_tuned, tmp_path: Path) -> None:
    """tuned_pipeline turns the stored choice into a transform: nothing, the transform, the VAE move with
    the chosen setting, or the VAE move then the transform; from the model or its file."""
    import copy

    model, result = pipeline_tuned
    augment = dict(model.augment)  # the fixture's model is shared: put back what this test changes
    mine = {"shift": shift, "same": shift}
    img, label = digits.x[7] / 16.0, int(digits.y[7])
    vae = f"vaeaug {GRID[0].label()}"
    setting = vars(AugmentSetting("isotropic", 1.0, "delta", 1.0))  # p = 1: the move always happens
    tuning = copy.deepcopy(result)
    expected_vae = VAEAugment(model, p=1.0, strength=1.0, mode="isotropic", form="delta", seed=3)(img, label)[0]
    assert not torch.equal(expected_vae, img)
    for label_, transform, s, want in [("none", None, None, img), ("same", "same", None, shift(img)),
                                       (vae, None, setting, expected_vae),
                                       (f"{vae}, then shift", "shift", setting, shift(expected_vae))]:
        model.tuning = {**tuning, "pipeline": {"label": label_, "transform": transform, "setting": s}}
        model.augment = {**setting, "strength": 0.25}  # the chosen setting wins over the model's current one
        pipeline = vaeaug.tuned_pipeline(model, mine, seed=3)
        out_img, out_label = pipeline(img, label)
        assert out_label == label and torch.allclose(out_img, want), label_
        assert (pipeline.label, pipeline.transform is not None, pipeline.vae is not None) == \
            (label_, transform is not None, s is not None)
        again = vaeaug.tuned_pipeline(model, mine, seed=3)  # a fresh stream: the same draw
        assert torch.allclose(again((img, label))[0], want)
        if s is None:
            assert torch.allclose(again(img), want)  # an image alone
        else:
            with pytest.raises(ValueError, match="class-conditional .* needs the label"):
                again(img)
    path = tmp_path / "tuned.vae"
    model.tuning = {**tuning, "pipeline": {"label": "same", "transform": "same", "setting": None}}
    model.save(path)
    assert vaeaug.tuned_pipeline(str(path), mine).transform is shift  # from the file
    model.tuning = tuning
    with pytest.raises(ValueError, match=r"tune chose among the transforms \['shift', 'same'\]; got \['shift'\]"):
        vaeaug.tuned_pipeline(model, {"shift": shift})
    with pytest.raises(TypeError, match="chose among your transforms .*; got NoneType"):
        vaeaug.tuned_pipeline(model)
    for bad, match in [({"label": "x", "transform": "other", "setting": None}, "chose the transform 'other'"),
                       ({"label": "x", "transform": None, "setting": {**setting, "strength": float("inf")}},
                        "invalid setting"),
                       ({"label": "x", "transform": None, "setting": {"p": 1.0}}, "invalid setting")]:
        model.tuning = {**tuning, "pipeline": bad}  # as a crafted file could hold: a clear error, never a KeyError
        with pytest.raises(ValueError, match=match):
            vaeaug.tuned_pipeline(model, mine)
    model.tuning = tuning
    with pytest.raises(TypeError, match="dict name -> transform or a list"):
        vaeaug.tuned_pipeline(model, "shift")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tuned vaeaug.VAE or the path"):
        vaeaug.tuned_pipeline(42)  # type: ignore[arg-type]
    model.tuning = {**tuning, "pipeline": {"label": "x", "transform": "shift", "setting": setting}}
    listed = vaeaug.tuned_pipeline(model, mine, seed=3)([img, label])  # a list sample stays a list
    assert isinstance(listed, list) and listed[1] == label and torch.allclose(listed[0], shift(expected_vae))
    with pytest.raises(TypeError, match="got a dict"):
        vaeaug.tuned_pipeline(model, mine)({"image": img, "label": label})
    with pytest.raises(TypeError, match=r"chose among your transforms \['shift', 'same'\]: pass them"):
        vaeaug.tuned_pipeline(model, shift)
    with pytest.raises(ValueError, match="ONNX export, which does not carry tune's choice"):
        vaeaug.tuned_pipeline(tmp_path / "m.onnx", mine)
    with pytest.raises(ValueError, match="the transform name 'none' is tune's own"):
        vaeaug.tune(model, digits.x[:60], digits.y[:60], transforms={"none": shift}, progress=False)
    # in DataLoader workers (forked): each worker draws its own variants
    from torch.utils.data import DataLoader

    pipeline = vaeaug.tuned_pipeline(model, mine)
    loader = DataLoader([(img, label)] * 4, batch_size=1, num_workers=2, collate_fn=lambda b: pipeline(b[0]))
    outs = [o[0] for o in loader]
    assert len(outs) == 4 and all(torch.isfinite(o).all() for o in outs)
    assert not torch.equal(outs[0], outs[1])  # the two workers' first samples
    model.tuning, model.augment = tuning, augment
    untuned = vaeaug.fit(digits.x[:50], digits.y[:50], epochs=1, progress=False)
    with pytest.raises(ValueError, match="holds no choice of tune's: run vaeaug.tune"):
        vaeaug.tuned_pipeline(untuned)
    untuned.tuning = {**tuning, "base": repr(shift), "pipeline": {"label": "none", "transform": "base",
                                                                    "setting": None}}
    assert vaeaug.tuned_pipeline(untuned, shift).transform is shift  # tuned with base=: the base transform
    with pytest.raises(TypeError, match="tuned on top of base="):
        vaeaug.tuned_pipeline(untuned, mine)


def test_tune_judges_with_your_own_classifier(digits) -> None:
    """classifier=: every run builds a fresh network from the factory under the run's seed (your own net
    judges the candidates); a factory that gives no module, or the wrong logits, is refused clearly."""
    from torch import nn

    shapes, inits = [], []

    def bn_net(shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        shapes.append((shape, num_classes))
        net = nn.Sequential(nn.Conv2d(shape[0], 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                            nn.Linear(8 * shape[1] * shape[2], num_classes))
        inits.append(net[0].weight.detach().clone())
        return net

    x, y = digits.x[:120], digits.y[:120]
    model = vaeaug.fit(x, y, epochs=1, progress=False)
    result = vaeaug.tune(model, x, y, grid=GRID[:1], classifier=bn_net, budget=TINY, folds=2, repeats=1,
                         refit=False, progress=False)
    assert len(shapes) == result["runs"] == 4 and set(shapes) == {((1, 8, 8), 10)}
    assert result["classifier"] == bn_net.__qualname__  # a stable name, no memory address
    assert torch.equal(inits[0], inits[1]) and torch.equal(inits[2], inits[3])  # paired: one start per fold
    assert not torch.equal(inits[0], inits[2])
    with pytest.raises(TypeError, match="classifier must be a callable factory"):
        vaeaug.tune(model, x, y, classifier="resnet", progress=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got a Sequential network: every run needs a fresh one"):
        vaeaug.tune(model, x, y, classifier=bn_net((1, 8, 8), 10), progress=False)  # type: ignore[arg-type]
    shared = bn_net((1, 8, 8), 10)
    with pytest.raises(ValueError, match="already trained: every run needs a fresh one"):
        vaeaug.tune(model, x, y, grid=GRID[:1], classifier=lambda s, k: shared, budget=TINY, folds=2, repeats=1,
                    refit=False, progress=False)
    with pytest.raises(TypeError, match="must return a torch.nn.Module"):
        vaeaug.tune(model, x, y, grid=GRID[:1], classifier=lambda s, k: None, budget=QUICK, folds=2, repeats=1,
                    refit=False, progress=False)
    with pytest.raises(ValueError, match=r"to logits \(64, 10\) \(one per class\); got \(64, 3\)"):
        vaeaug.tune(model, x, y, grid=GRID[:1], classifier=lambda s, k: bn_net(s, 3), budget=QUICK, folds=2,
                    repeats=1, refit=False, progress=False)


def test_temperature_scaling_scores_the_ranking_not_the_confidence() -> None:
    """The same predictions made 3x more or less confident score the same after scaling; the scaled
    log-loss is the minimum over temperatures (never above the raw one); a zero probability stays finite."""
    from vaeaug.protocol.tuning import temperature_scale

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 5, (200,), generator=g)
    logits = torch.randn(200, 5, generator=g) + 2.0 * torch.nn.functional.one_hot(y, 5)
    w = torch.rand(200, generator=g) + 0.5

    def nll(lp: torch.Tensor) -> float:
        return float(-(lp.gather(1, y.view(-1, 1)).view(-1) * w).sum() / w.sum())

    base, t = temperature_scale(logits.log_softmax(1), y, w)
    for factor in (1 / 3, 3.0):
        scaled, t_f = temperature_scale((logits * factor).log_softmax(1), y, w)
        assert torch.allclose(scaled, base, atol=1e-4) and t_f == pytest.approx(t * factor, rel=1e-4)
        assert bool((scaled.argmax(1) == logits.argmax(1)).all())
    raw = nll((logits * 8).log_softmax(1))
    assert nll(base) < raw - 0.05  # over-confident: scaling helps
    for t_try in (0.5, 0.9, 1.1, 2.0):  # and no temperature does better
        assert nll(base) <= nll((logits / (t * t_try)).log_softmax(1)) + 1e-6
    hard = torch.tensor([[0.0, float("-inf")], [float("-inf"), 0.0]])  # a plateau of one-hot probabilities
    out, _ = temperature_scale(hard, torch.tensor([0, 0]))
    assert bool(torch.isfinite(out).all()) and out[1].argmax() == 1
