"""The downstream-accuracy protocol on a tiny configuration, and its command line."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import vaeaug
from vaeaug.protocol import evaluation as ev
from vaeaug.protocol.classifier import classic_augment
from vaeaug.protocol.evaluation import AugmentSetting, evaluate, reduce_per_class, report_markdown
from vaeaug.protocol.tuning import stratified_split

TINY = vaeaug.Budget(max_steps=60, eval_every=10, patience=2, min_steps=0)


@pytest.fixture(scope="module")
def tiny_report(monkeypatch_module: pytest.MonkeyPatch) -> tuple[dict, list, list]:
    """A 2-seed converged run on digits that records what the VAE was fit on and each arm's budget."""
    fitted_on: list[torch.Tensor] = []
    budgets: list[tuple[Any, bool, bool, Any]] = []
    real_fit, real_train = ev.fit, ev.train_classifier

    def spy_fit(x, y=None, **kw):
        fitted_on.append(x.clone())
        return real_fit(x, y, **kw)

    def spy_train(x, y, xt, yt, **kw):
        budgets.append((kw["budget"], kw["classic"], kw.get("aug") is not None, kw["val"]))
        return real_train(x, y, xt, yt, **kw)

    monkeypatch_module.setattr(ev, "fit", spy_fit)
    monkeypatch_module.setattr(ev, "train_classifier", spy_train)
    report = evaluate("digits", per_class=12, seeds=2, budget=TINY, vae_epochs=3, progress=False,
                      extra_arms={"decode": AugmentSetting("posterior", 1.0, "decode", 0.5)})
    return report, fitted_on, budgets


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_reduce_per_class_is_stratified_and_seeded() -> None:
    y = vaeaug.load_builtin("digits").y
    a, b, c = reduce_per_class(y, 7, 0), reduce_per_class(y, 7, 0), reduce_per_class(y, 7, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.bincount(y[a]).tolist() == [7] * 10
    with pytest.raises(ValueError, match="fewer than per_class"):
        reduce_per_class(y, 1000, 0)


def test_vae_is_fit_only_on_the_training_part(tiny_report) -> None:
    report, fitted_on, budgets = tiny_report
    train = vaeaug.load_builtin("digits")
    assert len(fitted_on) == 2
    for seed, x in enumerate(fitted_on):
        idx = reduce_per_class(train.y, 12, seed)
        tr, va = stratified_split(train.y[idx], 0.2, seed)
        assert x.shape[0] == 12 * 10 - len(va) == report["config"]["n_train"]
        assert torch.equal(x, train.x[idx[tr]])  # never the validation split that stops the classifiers
        val = budgets[seed * len(report["arms"])][3]
        assert torch.equal(val[0], train.x[idx[va]]) and torch.bincount(val[1]).tolist() == [2] * 10
    assert not torch.equal(fitted_on[0], fitted_on[1])


def test_every_arm_gets_the_same_budget_and_reports_its_steps(tiny_report) -> None:
    report, _, budgets = tiny_report
    arms = report["arms"]
    assert list(arms) == ["none", "classic", "vae", "vae+classic", "decode", "decode+classic"]
    assert len(budgets) == 2 * len(arms)
    assert {b for b, _, _, _ in budgets} == {TINY}
    # classic and VAE flags per arm, in order, for each seed
    flags = [(c, g) for _, c, g, _ in budgets[: len(arms)]]
    assert flags == [(False, False), (True, False), (False, True), (True, True), (False, True), (True, True)]
    for st in arms.values():
        assert len(st["steps"]) == 2 and all(10 <= s <= 60 and s % 10 == 0 for s in st["steps"])
        assert all(b <= s for b, s in zip(st["best_step"], st["steps"], strict=True))
    assert "steps used" in report_markdown(report)


def test_report_fields_and_paired_gains(tiny_report) -> None:
    report, _, _ = tiny_report
    json.dumps(report)  # JSON-ready
    for name, st in report["arms"].items():
        assert {"mean", "std", "per_seed", "steps", "best_step", "val_accuracy"} <= set(st)
        assert len(st["per_seed"]) == 2
        assert all(0.0 <= a <= 100.0 for a in st["per_seed"])
        assert st["mean"] == pytest.approx(np.mean(st["per_seed"]))
        if name != "none":
            gain = report["gains"][name]
            expected = [a - b for a, b in zip(st["per_seed"], report["arms"]["none"]["per_seed"], strict=True)]
            assert gain["per_seed"] == pytest.approx(expected)
            assert gain["std"] == pytest.approx(np.std(expected, ddof=1))
    assert "none" not in report["gains"] and "classic" not in report["gains_over_classic"]
    over_classic = [a - b for a, b in zip(report["arms"]["vae"]["per_seed"], report["arms"]["classic"]["per_seed"],
                                          strict=True)]
    assert report["gains_over_classic"]["vae"]["per_seed"] == pytest.approx(over_classic)
    assert len(report["vae"]["fit_seconds"]) == 2 and all(np.isfinite(report["vae"]["best_val_loss"]))
    assert report["config"]["settings"]["vae"] == vars(ev.DEFAULT_AUGMENT)
    md = report_markdown(report)
    assert "| vae | delta isotropic s=1 p=0.5 |" in md and "paired gain over classic" in md


def test_the_protocol_is_deterministic() -> None:
    kw = dict(per_class=10, seeds=[3], budget=TINY, vae_epochs=2, progress=False, arms=("none", "vae"))
    a, b = evaluate("digits", **kw), evaluate("digits", **kw)
    for r in (a, b):  # wall times differ; everything else is a function of the seed
        for st in r["arms"].values():
            del st["seconds"]
    assert a["arms"] == b["arms"]


def test_classic_augment_moves_pixels_per_sample() -> None:
    x = vaeaug.load_builtin("digits").x[:1].repeat(16, 1, 1, 1)
    out = classic_augment(x, torch.Generator().manual_seed(0), flip=False)
    assert out.shape == x.shape and not torch.equal(out, x)
    assert len({o.numpy().tobytes() for o in out}) == 16  # each sample its own transform


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown arms"):
        evaluate("digits", arms=("none", "mixup"), progress=False)
    with pytest.raises(ValueError, match="test data"):
        evaluate(np.zeros((20, 8, 8), np.uint8), progress=False)
    with pytest.raises(ValueError, match="pass base="):
        evaluate("digits", arms=("none", "base"), progress=False)
    with pytest.raises(ValueError, match="not both"):
        evaluate("digits", steps=10, budget=TINY, progress=False)
    with pytest.raises(ValueError, match="imbalance must be"):
        evaluate("digits", imbalance=0.5, progress=False)


def test_cli_evaluate(tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "vaeaug", "evaluate", "--data", "digits", "--per-class", "10",
                           "--seeds", "2", "--max-steps", "40", "--eval-every", "10", "--patience", "1",
                           "--vae-epochs", "2", "--arms", "none,vae",
                           "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert set(report["arms"]) == {"none", "vae"} and "vae" in report["gains"]
    assert (out / "report.md").read_text().strip() in proc.stdout
    st = report["gains"]["vae"]
    line = next(t for t in proc.stdout.splitlines() if t.startswith("Reading: "))
    assert f"vae vs none {st['mean']:+.2f} ± {st['std']:.2f} over 2 seeds" in line and "at least 5 seeds" in line
    assert ("a gain beyond the seed-to-seed noise" in line) == (st["mean"] > st["std"] and min(st["per_seed"]) > 0)
    assert ("a loss beyond" in line) == (st["mean"] < -st["std"] and max(st["per_seed"]) < 0)
    bad = subprocess.run([sys.executable, "-m", "vaeaug", "evaluate", "--data", "digits", "--arms", "none,foo",
                          "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown arms" in bad.stderr and "Traceback" not in bad.stderr


def test_the_converged_run_stops_early_and_tests_the_best_checkpoint() -> None:
    from vaeaug.protocol.classifier import Budget, train_classifier

    d = vaeaug.load_builtin("digits")
    te = vaeaug.load_builtin("digits", split="test")
    idx = reduce_per_class(d.y, 15, 0)
    tr, va = stratified_split(d.y[idx], 0.2, 0)
    x, y, val = d.x[idx[tr]], d.y[idx[tr]], (d.x[idx[va]], d.y[idx[va]])
    run = train_classifier(x, y, te.x, te.y, num_classes=10, seed=0, val=val,
                           budget=Budget(max_steps=3000, eval_every=20, patience=3, min_steps=200))
    assert run.steps < 3000  # early stopping fired
    assert run.steps == max(run.best_step + 3 * 20, 200)  # `patience` checks after the best, not before min_steps
    assert run.val_accuracy is not None and run.predictions is not None and len(run.predictions) == len(te.y)
    # the tested weights are those of the best step: a fixed run of best_step steps is the same model
    again = train_classifier(x, y, te.x, te.y, num_classes=10, seed=0, steps=run.best_step)
    assert again.accuracy == run.accuracy and torch.equal(again.predictions, run.predictions)
    assert again.steps == again.best_step == run.best_step and again.val_accuracy is None
    with pytest.raises(ValueError, match="needs a validation split"):
        train_classifier(x, y, te.x, te.y, num_classes=10, seed=0, budget=Budget())


def test_average_scores_by_the_mean_predictions_of_the_plateau() -> None:
    """average=True: the same training run, each test image scored by the mean probabilities of the best check
    and every later one; fixed runs of each check's step count reproduce those checks exactly."""
    from vaeaug.protocol.classifier import Budget, train_classifier

    d = vaeaug.load_builtin("digits")
    idx = reduce_per_class(d.y, 15, 1)
    tr, va = stratified_split(d.y[idx], 0.2, 1)
    x, y, val = d.x[idx[tr]], d.y[idx[tr]], (d.x[idx[va]], d.y[idx[va]])
    te_x, te_y = d.x[-200:], d.y[-200:]
    budget = Budget(max_steps=400, eval_every=20, patience=3, min_steps=100)
    best = train_classifier(x, y, te_x, te_y, num_classes=10, seed=0, val=val, budget=budget)
    avg = train_classifier(x, y, te_x, te_y, num_classes=10, seed=0, val=val, budget=budget, average=True)
    assert (avg.steps, avg.best_step, avg.val_accuracy) == (best.steps, best.best_step, best.val_accuracy)
    checks = range(avg.best_step, avg.steps + 1, 20)
    assert len(checks) >= 2  # a plateau of several checks, so the mean is not the best check itself
    probs = torch.stack([train_classifier(x, y, te_x, te_y, num_classes=10, seed=0, steps=s).true_logprob.exp()
                         for s in checks]).mean(0)
    assert avg.true_logprob is not None and best.true_logprob is not None and avg.brier is not None
    assert torch.allclose(avg.true_logprob.exp(), probs, atol=1e-5)
    assert not torch.allclose(avg.true_logprob, best.true_logprob)
    assert avg.predictions is not None and avg.accuracy == 100.0 * int((avg.predictions == te_y).sum()) / len(te_y)
    assert bool(torch.isfinite(avg.true_logprob).all()) and bool(((avg.brier >= 0) & (avg.brier <= 2)).all())
    with pytest.raises(ValueError, match="fixed budget has none"):
        train_classifier(x, y, te_x, te_y, num_classes=10, seed=0, steps=20, average=True)


def test_imbalanced_protocol_counts_and_balanced_accuracy() -> None:
    from vaeaug.protocol.evaluation import balanced_accuracy

    y = vaeaug.load_builtin("digits").y
    idx = reduce_per_class(y, 20, 3, imbalance=10)
    counts = torch.bincount(y[idx]).tolist()
    assert sorted(counts) == [2] * 5 + [20] * 5  # half of the classes at per_class / R
    assert torch.equal(idx, reduce_per_class(y, 20, 3, imbalance=10))
    assert sorted(torch.bincount(y[reduce_per_class(y, 20, 4, imbalance=10)]).tolist()) == sorted(counts)
    pred, truth = torch.tensor([0, 0, 0, 1, 1, 2]), torch.tensor([0, 0, 1, 1, 1, 2])
    bacc, rec = balanced_accuracy(pred, truth, 3)
    assert rec == pytest.approx([100.0, 200 / 3, 100.0]) and bacc == pytest.approx((100 + 200 / 3 + 100) / 3)
    report = evaluate("digits", per_class=20, imbalance=10, seeds=1, budget=TINY, vae_epochs=2, progress=False)
    assert list(report["arms"]) == ["none", "oversample", "oversample+classic", "classic", "balance", "balance+vae",
                                    "vae"]
    assert report["config"]["metric"] == "balanced accuracy"
    for st in report["arms"].values():
        assert len(st["recall"][0]) == 10 and st["balanced"]["mean"] == pytest.approx(np.mean(st["recall"][0]))
    over = [a - b for a, b in zip(report["arms"]["balance+vae"]["balanced"]["per_seed"],
                                  report["arms"]["oversample"]["balanced"]["per_seed"], strict=True)]
    assert report["gains_over_oversample"]["balance+vae"]["per_seed"] == pytest.approx(over)
    over_classic = [a - b for a, b in zip(report["arms"]["balance+vae"]["balanced"]["per_seed"],
                                          report["arms"]["oversample+classic"]["balanced"]["per_seed"], strict=True)]
    assert report["gains_over_oversample_classic"]["balance+vae"]["per_seed"] == pytest.approx(over_classic)
    assert report["config"]["threads"] == torch.get_num_threads()
    md = report_markdown(report)
    assert "Per-class recall" in md and "balanced accuracy" in md and "paired gain over oversample+classic" in md


def test_base_arms_run_a_user_transform() -> None:
    calls = []

    def flip(img: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(img.shape))
        return img.flip(-1)

    built = []

    def net(shape: tuple[int, int, int], num_classes: int) -> torch.nn.Module:  # your own network, in every run
        built.append((shape, num_classes))
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(shape[0] * shape[1] * shape[2], num_classes))

    quick = {"grid": [AugmentSetting()], "folds": 2, "repeats": 1, "budget": TINY, "alpha": 1e-12}  # says no
    report = evaluate("digits", per_class=10, seeds=1, budget=TINY, vae_epochs=2, progress=False,
                      arms=("none", "base", "base+vae", "tuned"), base=flip, classifier=net, tune_kwargs=quick)
    assert set(report["arms"]) == {"none", "base", "base+vae", "tuned"} and calls and set(calls) == {(1, 8, 8)}
    assert report["config"]["base"] == repr(flip) and report["config"]["classifier"] == net.__qualname__
    # tune's own options are in the config, as JSON holds them (a setting as its fields, a budget as its fields)
    assert report["config"]["tune_kwargs"] == {"grid": [dataclasses.asdict(AugmentSetting())], "folds": 2,
                                               "repeats": 1, "budget": dataclasses.asdict(TINY), "alpha": 1e-12}
    json.dumps(report["config"])
    tune_runs = sum(len(c["runs"]) for c in report["tuned"]["per_seed"][0]["scores"])
    assert tune_runs == 4 and len(built) == 3 + tune_runs and set(built) == {((1, 8, 8), 10)}


def test_tuned_arms_run_tune_on_the_training_part_and_reuse_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from vaeaug.fitting.classic import ClassicTransform

    calls: list[tuple[int, Any, Any]] = []
    real_tune = ev.tune

    def spy(model, x, y, **kw):
        calls.append((len(x), kw.get("base"), kw.get("transforms")))
        return real_tune(model, x, y, **kw)

    monkeypatch.setattr(ev, "tune", spy)
    # alpha near 0: tune says no, so each tuned arm must be its reference arm's own run
    quick = {"grid": [AugmentSetting()], "folds": 2, "repeats": 1, "budget": TINY, "alpha": 1e-12}
    report = evaluate("digits", per_class=12, seeds=1, budget=TINY, vae_epochs=2, progress=False,
                      arms=("none", "classic", "tuned", "tuned+classic", "pipeline"), tune_kwargs=quick)
    n_train = report["config"]["n_train"]
    assert [c[0] for c in calls] == [n_train] * 3  # tuned on the training part, never the validation split
    assert calls[0][1] is None and isinstance(calls[1][1], ClassicTransform)
    assert calls[2][1] is None and list(calls[2][2]) == ["classic"]  # the pipeline: classic is the reference
    for arm, same_as in (("tuned", "none"), ("tuned+classic", "classic"), ("pipeline", "classic")):
        choice = report[arm]["per_seed"][0]
        assert choice["chosen"] is None and ("augmentation is off" in choice["reason"] or arm == "pipeline")
        assert report["arms"][arm]["per_seed"] == report["arms"][same_as]["per_seed"]
        assert report["arms"][arm]["steps"] == report["arms"][same_as]["steps"]
    assert report["pipeline"]["per_seed"][0]["pipeline"] == "classic" and "keep classic" in \
        report["pipeline"]["per_seed"][0]["reason"]
    # the evidence is kept: every candidate's units, so that the choice can be replayed from the report
    piped = report["pipeline"]["per_seed"][0]
    assert piped["score"] == "logloss" and piped["p_value"] >= 1e-12 and piped["finalist"] != "classic"
    labels = [c["label"] for c in piped["scores"]]
    assert labels[:2] == ["classic", "none"] and piped["finalist"] in labels
    fin = next(c for c in piped["scores"] if c["label"] == piped["finalist"])
    assert fin["runs"] == [[0, 0], [1, 0]] and len(fin["losses"]) == len(fin["val_accuracy"]) == 2
    assert fin["gain"] == pytest.approx(piped["gain"])
    assert "tuned+classic: tune" in report_markdown(report) and "pipeline: tune" in report_markdown(report)
    best = max(("none", "classic"), key=lambda a: report["arms"][a]["mean"])
    assert report["best_fixed"] == best and "Best fixed arm (by mean)" in report_markdown(report)
    gain = report["gains_over_best_fixed"]["pipeline"]
    assert gain["per_seed"] == [p - b for p, b in zip(report["arms"]["pipeline"]["per_seed"],
                                                      report["arms"][best]["per_seed"], strict=True)]


def test_a_data_file_without_test_data_is_refused_not_tested_on_itself(tmp_path: Path) -> None:
    """A .npz path is a str but not a built-in: it has no test split, so test= is required (it was re-read as
    its own test set, which made every accuracy meaningless)."""
    d = vaeaug.load_builtin("digits")
    path = tmp_path / "mine.npz"
    np.savez(path, x=(d.x[:, 0].numpy() * 255).round().astype(np.uint8), y=d.y.numpy())
    with pytest.raises(ValueError, match="test data is needed"):
        evaluate(str(path), per_class=5, seeds=1, steps=5, arms=["none"], vae_epochs=1, progress=False)
    r = evaluate(str(path), "digits", per_class=5, seeds=1, steps=5, arms=["none"], vae_epochs=1, progress=False)
    assert r["config"]["data"].endswith("mine.npz")


def test_transform_first_makes_variants_of_the_transformed_images() -> None:
    """classic+vae: the VAE move sees classic-augmented images; vae+classic (the default order): the raw ones."""
    from vaeaug.protocol.classifier import train_classifier

    d = vaeaug.load_builtin("digits")
    x, y = d.x[:200].float() / 16, d.y[:200]
    raw = {xi.numpy().tobytes() for xi in x}

    class Spy:
        def __init__(self) -> None:
            self.seen: list[torch.Tensor] = []

        def __call__(self, xb: torch.Tensor, yb: torch.Tensor, *, key: int, codec: Any) -> torch.Tensor:
            self.seen.append(xb.clone())
            return xb

        def codec(self, kind: str) -> Any:
            return None

    for first in (False, True):
        spy = Spy()
        train_classifier(x, y, x[:20], y[:20], num_classes=10, seed=0, steps=3, classic=True, aug=spy,  # type: ignore[arg-type]
                         transform_first=first)
        fresh = sum(xi.numpy().tobytes() not in raw for xb in spy.seen for xi in xb)
        assert len(spy.seen) == 3 and (fresh > 0) == first  # only after classic are the images new ones
    report = evaluate("digits", per_class=10, seeds=1, budget=TINY, vae_epochs=2, progress=False,
                      arms=("classic", "vae+classic", "classic+vae"))
    assert set(report["arms"]) == {"classic", "vae+classic", "classic+vae"}


@pytest.mark.parametrize("mode", ["isotropic", "interpolate"])
def test_the_classifier_encodes_each_training_image_once(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An Augmenter's variants come from the training images' encodings, each image encoded at most once a run;
    they are the one-call path's within float rounding (partners from the batch, as before)."""
    from vaeaug.core.augment import Augmenter
    from vaeaug.protocol.classifier import train_classifier

    sys.path.insert(0, str(Path(__file__).parent))
    from _helpers import digits_model

    d = vaeaug.load_builtin("digits")
    x, y = d.x[:100].float() / 16, d.y[:100]
    gen = vaeaug.TorchBackend(digits_model())
    aug = Augmenter(gen, AugmentSetting(mode, 2.0, "delta", 0.5))
    encoded: list[int] = []
    made: list[int] = []
    encode, generate_encoded = gen.encode_sources, gen.generate_encoded

    def spy_encode(xs: Any, ys: Any, **kw: Any) -> Any:
        encoded.append(len(xs))
        return encode(xs, ys, **kw)

    def spy_generate(setting: Any, xs: Any, *args: Any) -> Any:
        made.append(len(xs))
        return generate_encoded(setting, xs, *args)

    monkeypatch.setattr(gen, "encode_sources", spy_encode)
    monkeypatch.setattr(gen, "generate_encoded", spy_generate)
    monkeypatch.setattr(gen, "generate", lambda *a: pytest.fail("the one-call path ran"))
    train_classifier(x, y, x[:20], y[:20], num_classes=10, seed=0, steps=12, batch_size=32, aug=aug)
    assert len(made) == 12 and 0 < sum(encoded) <= 100  # 12 steps x ~16 variants, from at most 100 encodings
    monkeypatch.undo()
    xb, yb = x[:64], y[:64]
    cache = vaeaug.core.cache.EncodingCache(gen, delta=True)
    staged = aug(xb, yb, key=5, codec=aug.codec("model"), encodings=lambda rows: cache.get(rows, lambda m: xb[m]))
    one_call = aug(xb, yb, key=5, codec=aug.codec("model"))
    assert (staged - xb).abs().max() > 1e-3 and (staged - one_call).abs().max() <= 1e-6
