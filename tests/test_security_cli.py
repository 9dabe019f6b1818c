"""The command line never prints a traceback for a user error, and checks where it writes first.

Every subcommand is called on every kind of bad path (missing, a folder, a FIFO, a symlink to
``/dev/zero``, an empty file, garbage): exit code 2 and one line on stderr, within seconds (a
FIFO must not hang a reader). The guard's other branches (a genuine bug, ``--debug``,
``VAEAUG_DEBUG``, Ctrl-C) and the early writability checks run as real processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _helpers import digits_conditional_model, make_special, time_limit

from vaeaug import cli

BAD_KINDS = ("missing", "folder", "fifo", "devzero", "empty", "garbage")


def _bad(tmp: Path, kind: str, name: str) -> Path:
    return make_special(tmp / f"{kind}-{name}", {"folder": "dir"}.get(kind, kind))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sec_cli") / "m.vae"
    digits_conditional_model().save(path)
    return path


@pytest.fixture()
def alarm() -> Iterator[None]:
    """Fail a call that blocks (a FIFO read) instead of hanging the suite."""
    with time_limit(60):
        yield


def _calls(bad: Path, model: Path, out: Path) -> dict[str, list[str]]:
    """Each subcommand with ``bad`` in the place of each path it reads."""
    return {
        "info": ["info", str(bad)],
        "info-onnx": ["info", str(bad.with_name(bad.name + ".onnx"))],
        "export": ["export", str(bad), "--out", str(out / "x.onnx"), "--no-verify"],
        "generate-model": ["generate", "--model", str(bad), "--data", "digits", "--out", str(out / "g")],
        "generate-data": ["generate", "--model", str(model), "--data", str(bad), "--out", str(out / "g")],
        "verify": ["verify", str(bad)],
        "score": ["score", "--model", str(bad), "--data", "digits", "--out", str(out / "s.csv")],
        "preview": ["preview", "--model", str(bad), "--data", "digits", "--out", str(out / "p.png")],
        "fit-npz": ["fit", "--data", str(bad.with_name(bad.name + ".npz")), "--out", str(out / "m.vae"),
                    "--epochs", "1"],
        "fit-folder": ["fit", "--data", str(bad), "--out", str(out / "m.vae"), "--epochs", "1"],
        "evaluate": ["evaluate", "--data", str(bad.with_name(bad.name + ".npz")), "--test", "digits",
                     "--out", str(out / "e"), "--seeds", "1", "--steps", "1"],
    }


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_every_subcommand_on_every_bad_path_is_one_line_exit_2(
        kind: str, tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str], alarm: None) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for name, args in _calls(tmp_path / f"{kind}-x", model_file, out).items():
        for p in {Path(a) for a in args if a.startswith(str(tmp_path / kind))}:
            _bad(p.parent, kind, p.name[len(kind) + 1:])
        t = time.monotonic()
        rc = cli.main(args)
        took = time.monotonic() - t
        err = capsys.readouterr().err
        assert rc == 2, (name, kind, rc, err)
        assert err.count("\n") == 1 and err.startswith("vaeaug "), (name, kind, err)
        assert "Traceback" not in err and "internal error" not in err, (name, kind, err)
        assert took < 30, (name, kind, took)
        for p in tmp_path.glob(f"{kind}-*"):
            if p.is_dir() and not p.is_symlink():
                p.rmdir()
            else:
                p.unlink()


def _run(args: list[str], env: dict[str, str] | None = None, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vaeaug", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, **kw)


def test_a_bug_is_one_line_with_the_way_to_its_traceback(model_file: Path) -> None:
    """A genuine bug (here: info's printer raises) says 'internal error' in one line, exit 1."""
    code = ("import sys, vaeaug.cli as c\n"
            "def bug(args): raise RuntimeError('planted bug')\n"
            "c._COMMANDS['info'] = bug\n"
            "sys.exit(c.main(sys.argv[1:]))\n")
    plain = subprocess.run([sys.executable, "-c", code, "info", str(model_file)], capture_output=True, text=True,
                           timeout=120, env={k: v for k, v in os.environ.items() if k != "VAEAUG_DEBUG"})
    assert plain.returncode == 1
    assert plain.stderr.count("\n") == 1 and "internal error: RuntimeError: planted bug" in plain.stderr
    assert "--debug" in plain.stderr and "Traceback" not in plain.stderr
    for extra, env in (([], {"VAEAUG_DEBUG": "1"}), (["--debug"], {})):
        shown = subprocess.run([sys.executable, "-c", code, *extra, "info", str(model_file)], capture_output=True,
                               text=True, timeout=120, env={**os.environ, **env})
        assert shown.returncode == 1 and "Traceback" in shown.stderr and "planted bug" in shown.stderr


def test_debug_shows_the_traceback_of_a_user_error_too(tmp_path: Path) -> None:
    r = _run(["--debug", "info", str(tmp_path / "none.vae")])
    assert r.returncode == 1 and "Traceback" in r.stderr and "FileNotFoundError" in r.stderr
    r = _run(["info", str(tmp_path / "none.vae")])
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_ctrl_c_exits_130_in_one_line(tmp_path: Path) -> None:
    """SIGINT during a long evaluate: exit 130, 'interrupted', no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "vaeaug", "evaluate", "--data", "digits", "--out",
                             str(tmp_path / "e"), "--seeds", "3", "--steps", "100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # even in a background job
    time.sleep(8)  # past the imports, into the work
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    # 130, or killed by the SIGINT itself when it lands during interpreter shutdown: the shell shows 130 for both
    assert proc.returncode in (130, -signal.SIGINT), (proc.returncode, err)
    assert "vaeaug evaluate: interrupted" in err.splitlines()
    assert "Traceback" not in err


@pytest.mark.parametrize("flag", ["--out", "--curves"])
def test_fit_refuses_an_unwritable_place_before_training(flag: str, tmp_path: Path) -> None:
    """``--out``/``--curves`` under an existing file fail in seconds, before any epoch (not 'File exists')."""
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    target = {"--out": blocker / "m.vae", "--curves": blocker / "c.png"}[flag]
    args = ["fit", "--data", "digits", "--epochs", "500", "--out", str(tmp_path / "ok.vae")]
    args = [*args, "--curves", str(target)] if flag == "--curves" else [*args[:-2], "--out", str(target)]
    t = time.monotonic()
    r = _run(args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "'afile' is a file, not a folder" in r.stderr.replace(str(tmp_path) + "/", "")
    assert "File exists" not in r.stderr
    assert "epoch" not in r.stdout + r.stderr and not (tmp_path / "ok.vae").exists()
    assert time.monotonic() - t < 60


def test_writability_is_checked_for_every_writer(tmp_path: Path, model_file: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    under = blocker / "sub"
    for args in (["evaluate", "--data", "digits", "--out", str(under), "--seeds", "1", "--steps", "1"],
                 ["generate", "--model", str(model_file), "--data", "digits", "--out", str(under)],
                 ["preview", "--model", str(model_file), "--data", "digits", "--out", str(under / "p.png")],
                 ["score", "--model", str(model_file), "--data", "digits", "--out", str(under / "s.csv")],
                 ["export", str(model_file), "--out", str(under / "m.onnx")]):
        assert cli.main(args) == 2, args
        err = capsys.readouterr().err
        assert "is a file, not a folder" in err and err.count("\n") == 1, (args, err)
    assert blocker.read_text() == "x"


def test_preview_says_when_n_is_more_than_it_can_show(tmp_path: Path, model_file: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``--n 100000`` on the 360 test digits was capped to 360 rows without a word."""
    rc = cli.main(["preview", "--model", str(model_file), "--data", "digits", "--split", "test", "--n", "100000",
                   "--out", str(tmp_path / "p.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "n must be an int from 1 to 200" in err and "got 100000" in err
    assert not (tmp_path / "p.png").exists()


def test_a_folder_given_as_the_model_is_named_as_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``vaeaug export <folder>`` said 'model file not found'."""
    for args in (["export", str(tmp_path), "--out", str(tmp_path / "m.onnx")],
                 ["generate", "--model", str(tmp_path), "--data", "digits", "--out", str(tmp_path / "g")]):
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert "is a directory, not a model file" in err and "not found" not in err, err


# ------------------------------------------------ crafted contents (issue 14, finding 4): one line, exit 2


def _one_line_exit_2(args: list[str], capsys: pytest.CaptureFixture[str], match: str) -> None:
    rc = cli.main(args)
    err = capsys.readouterr().err
    assert rc == 2, (args, err)
    assert err.count("\n") == 1 and "Traceback" not in err and match in err, (args, err)


def test_crafted_model_files_are_one_line_in_info(tmp_path: Path, model_file: Path,
                                                  capsys: pytest.CaptureFixture[str], alarm: None) -> None:
    """Deeply nested JSON (was RecursionError) and absurd widths (was torch's RuntimeError), checksum recomputed."""
    from test_security_files import edit_model, set_config, set_meta

    blob = model_file.read_bytes()
    deep = tmp_path / "deep.vae"
    deep.write_bytes(edit_model(blob, set_meta("history", "[" * 100_000 + "]" * 100_000)))
    _one_line_exit_2(["info", str(deep)], capsys, "levels deep")
    wide = tmp_path / "wide.vae"
    wide.write_bytes(edit_model(blob, set_config(widths=[10**9])))
    _one_line_exit_2(["info", str(wide)], capsys, "widths")
    for sub in (["export", str(wide), "--out", str(tmp_path / "w.onnx")],
                ["preview", "--model", str(deep), "--data", "digits", "--out", str(tmp_path / "p.png")]):
        _one_line_exit_2(sub, capsys, "")


def test_an_export_whose_metadata_disagrees_with_its_graph_is_one_line_in_generate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Was 45 lines from onnxruntime: the latent size in the metadata differs from the graph's."""
    import json

    import onnx

    import vaeaug
    from vaeaug.backends.onnx.metadata import onnx_paths, seal

    model = vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 8, 8), num_classes=10))
    paths = vaeaug.export_onnx(model, tmp_path / "m.onnx", verify=False)
    proto = onnx.load_from_string(paths["augmenter"].read_bytes())
    for e in proto.metadata_props:
        if e.key == "vaeaug.config":
            e.value = json.dumps({**json.loads(e.value), "latent_dim": 8})
    paths["augmenter"].write_bytes(seal(proto.SerializeToString()))
    assert onnx_paths(tmp_path / "m.onnx")["augmenter"] == paths["augmenter"]
    _one_line_exit_2(["generate", "--model", str(paths["augmenter"]), "--data", "digits", "--out",
                      str(tmp_path / "g"), "--no-progress"], capsys, "metadata")
    _one_line_exit_2(["info", str(paths["augmenter"])], capsys, "metadata")
    assert not (tmp_path / "g" / "manifest.json").exists()


@pytest.mark.parametrize(("extra", "needle"), [
    (["--variants", "1048577"], "variants_per_sample must be an integer in [0, 1048576]"),
    (["--shard-size", str(2**41)], "shard_size must be None or an integer in [1, 1099511627776]"),
    (["--strength", "1e39"], "strength must be at most 100"),
    (["--seed", str(2**64)], "seed must be an integer in [0, 18446744073709551615]"),
], ids=["variants", "shard-size", "strength", "seed"])
def test_generate_refuses_out_of_format_sizes_before_writing(extra: list[str], needle: str, tmp_path: Path,
                                                             model_file: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 22, 2 and 6: each of these wrote shards (or NaN images) before failing, or ran until killed."""
    out = tmp_path / "g"
    _one_line_exit_2(["generate", "--model", str(model_file), "--data", "digits", "--out", str(out), *extra],
                     capsys, needle)
    assert not out.exists()


def test_a_long_but_valid_out_name_is_written_and_a_too_long_one_refused_before_the_work(
        tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 22, 8: fit --out with a 249-character name trained for the whole fit, then failed on its temporary
    file's longer name (Errno 36). Temporary names are shortened to fit; a name the file system cannot hold is
    refused before any work, with the names the command will write (an export's m.encoder.onnx is 8 longer)."""
    from vaeaug.files import write_atomic

    ok = tmp_path / ("m" * 245 + ".vae")  # 249 characters: fits, its temporary name would not
    assert cli.main(["fit", "--data", "digits", "--epochs", "1", "--no-progress", "--out", str(ok)]) == 0, \
        capsys.readouterr().err
    assert ok.is_file() and [p.name for p in tmp_path.iterdir()] == [ok.name]
    write_atomic(ok, b"x", tmp_tag="job0of1", exclusive=False)  # a tagged temporary name fits too
    assert ok.read_bytes() == b"x"
    capsys.readouterr()
    for args, size in ((["fit", "--data", "digits", "--epochs", "500", "--out", str(tmp_path / ("m" * 252 + ".vae"))],
                        256),
                       (["export", str(model_file), "--out", str(tmp_path / ("m" * 245 + ".onnx"))], 258),
                       (["generate", "--model", str(model_file), "--data", "digits", "--out",
                         str(tmp_path / "g" / ("d" * 256))], 256)):
        t = time.monotonic()
        _one_line_exit_2(args, capsys, f"has a name of {size} bytes, more than the 255 a file name can have here; "
                                       "choose a shorter name")
        assert time.monotonic() - t < 20  # before the work
    assert [p.name for p in tmp_path.iterdir()] == [ok.name]


def test_a_graph_that_fails_at_its_first_run_is_one_line_and_leaves_no_run_json(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Issue 22, 10: a resealed export whose metadata claims 12 classes (its graph holds 10: invisible in its inputs,
    seen when the session first runs) printed onnxruntime's coloured error line before vaeaug's, and left run.json
    in --out. capfd, not capsys: onnxruntime writes to the file descriptor itself."""
    import json

    import onnx

    import vaeaug
    from vaeaug.backends.onnx.metadata import seal

    paths = vaeaug.export_onnx(vaeaug.VAE(vaeaug.VAEConfig(input_shape=(1, 8, 8), num_classes=10)),
                               tmp_path / "m.onnx", verify=False)
    for p in paths.values():
        proto = onnx.load_from_string(p.read_bytes())
        for e in proto.metadata_props:
            if e.key == "vaeaug.config":
                e.value = json.dumps({**json.loads(e.value), "num_classes": 12})
        p.write_bytes(seal(proto.SerializeToString()))
    for out_exists in (False, True):
        out = tmp_path / f"g-{out_exists}"
        if out_exists:
            out.mkdir()
        capfd.readouterr()
        rc = cli.main(["generate", "--model", str(paths["augmenter"]), "--data", "digits", "--out", str(out),
                       "--no-progress"])
        err = capfd.readouterr().err
        assert rc == 2, err
        assert err.count("\n") == 1 and err.startswith("vaeaug generate: error: "), err
        assert "\x1b" not in err and "[E:onnxruntime" not in err and "num_classes 12" in err
        assert (list(out.iterdir()) == []) if out_exists else not out.exists()  # nothing to resume: no run.json


def test_a_folder_with_a_decompression_bomb_is_one_line_in_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               alarm: None) -> None:
    from test_security_files import _png_header

    (tmp_path / "imgs" / "a").mkdir(parents=True)
    (tmp_path / "imgs" / "b").mkdir()
    from PIL import Image

    for c in ("a", "b"):
        for i in range(3):
            Image.new("L", (8, 8), 40 * i).save(tmp_path / "imgs" / c / f"{i}.png")
    _png_header(tmp_path / "imgs" / "b" / "bomb.png", 20_000, 20_000)
    _one_line_exit_2(["fit", "--data", str(tmp_path / "imgs"), "--out", str(tmp_path / "m.vae"), "--epochs", "1"],
                     capsys, "decompression bomb")
    assert not (tmp_path / "m.vae").exists()
