"""The documentation: the site builds in strict mode, every public name has a docstring, the CLI page
lists every option, every Python example of the README and the docs pages runs, and the tutorial
runs (quick mode).

Python examples run page by page, top to bottom, each page in a fresh namespace and its own working
folder, which holds what the pages' examples read: ``digits.vae`` (a class-conditional model fit on
the built-in digits), its ONNX export ``digits.onnx``, and ``report/report.json`` and ``report.md`` (a
tiny ``vaeaug evaluate`` run). All pages run in one subprocess (one torch
import); each page is its own test. A block is skipped only when the line right before its fence is
a ``<!-- not-run: why -->`` comment (for what needs a GPU, a cluster or the internet), or when it
includes a file with ``--8<--`` (the tutorial: run by :func:`test_tutorial_runs`).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*$")
_NOT_RUN = re.compile(r"^\s*<!--\s*not-run\b.*-->\s*$")
_DIRECTIVE = re.compile(r"^:::\s+([\w.]+)\s*$", re.MULTILINE)


def _pages() -> list[Path]:
    """README.md and every Markdown page of the site."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line, code)`` of every fenced ``python`` block to run, in order (line: 1-based, of the fence).

    Example:
        >>> python_blocks("x\\n```python\\nprint(1)\\n```\\n<!-- not-run: GPU -->\\n```python\\nboom\\n```\\n")
        [(2, 'print(1)\\n')]
    """
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m or not m["lang"]:
            i += 1
            continue
        start = i
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        body = textwrap.dedent("\n".join(lines[i + 1:j])) + "\n"
        prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        if m["lang"] == "python" and not _NOT_RUN.match(prev) and "--8<--" not in body:
            out.append((start + 1, body))
        i = j + 1
    return out


# --------------------------------------------------------------------------------------------- the site


def _have_mkdocs() -> None:
    for mod in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        pytest.importorskip(mod, reason="the docs extra: pip install -e '.[docs]'")


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict``: a broken link or reference, a missing page or snippet fails it."""
    _have_mkdocs()
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site),
                           "--config-file", str(ROOT / "mkdocs.yml")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    took = time.perf_counter() - t0
    assert proc.returncode == 0, f"mkdocs build --strict failed after {took:.1f} s:\n{proc.stdout}\n{proc.stderr}"
    print(f"mkdocs build --strict: {took:.1f} s")
    api = (site / "api" / "models" / "index.html").read_text()
    assert 'id="vaeaug.fit"' in api and 'id="vaeaug.VAE.encode"' in api  # mkdocstrings rendered the API
    for page in (site / "api").rglob("*.html"):  # the griffe extension rewrote the Sphinx roles
        assert not re.search(r":(func|class|meth|mod|data):`", page.read_text()), page
    assert "Issue 13: a converged protocol" in (site / "benchmarks" / "index.html").read_text()  # snippets
    assert "What a crafted file cannot do" in (site / "security" / "index.html").read_text()
    assert "VAEAUG_TUTORIAL_QUICK" in (site / "tutorial" / "index.html").read_text()  # the script, included


def test_nav_lists_every_page() -> None:
    """Every page in ``docs/`` is in the nav (mkdocs only says so at INFO level)."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = [line.rstrip() for line in text[text.index("\nnav:"):].splitlines()]
    for page in DOCS.rglob("*.md"):
        rel = str(page.relative_to(DOCS))
        assert any(re.search(rf"[\s:-]{re.escape(rel)}$", line) for line in nav), f"{rel} is not in mkdocs.yml's nav"


# ------------------------------------------------------------------------------------------ the API pages


def _documented() -> list[str]:
    """The identifiers the API pages render (``::: vaeaug.fit``)."""
    return [m for p in sorted((DOCS / "api").glob("*.md")) for m in _DIRECTIVE.findall(p.read_text())]


def _resolve(ident: str) -> Any:
    parts = ident.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    raise ImportError(ident)


def test_api_pages_cover_the_public_api() -> None:
    """Every name of ``vaeaug.__all__`` has its ``::: vaeaug.NAME`` on an API page, once."""
    import vaeaug

    documented = _documented()
    assert len(documented) == len(set(documented)), "an object is rendered twice"
    missing = [n for n in vaeaug.__all__ if n != "__version__" and f"vaeaug.{n}" not in documented]
    assert not missing, f"not on any API page (docs/api/*.md): {missing}"
    for ident in documented:
        _resolve(ident)  # each one exists


def _own_public_members(cls: type) -> dict[str, Any]:
    """Methods and properties a vaeaug class defines itself, except overrides of a third-party base
    class's hooks (torchvision's ``transform``, ``nn.Module.forward``...), documented upstream."""
    foreign = {n for base in cls.__mro__[1:] if not base.__module__.startswith("vaeaug") for n in vars(base)}
    out = {}
    for name, v in vars(cls).items():
        if name.startswith("_") or name in foreign:
            continue
        if isinstance(v, (staticmethod, classmethod)):
            v = v.__func__
        if inspect.isfunction(v) or isinstance(v, property):
            out[name] = v
    return out


def test_public_names_have_docstrings() -> None:
    """``vaeaug.__all__`` and every public function and class (and their own methods) of the modules
    the API pages document have a docstring, so the reference has no empty entry."""
    import vaeaug

    modules = {"vaeaug"}
    objects: dict[str, Any] = {f"vaeaug.{n}": getattr(vaeaug, n) for n in vaeaug.__all__ if n != "__version__"}
    for ident in _documented():
        obj = _resolve(ident)
        objects[ident] = obj
        modules.add(obj.__module__)
    for name in sorted(modules):
        mod = importlib.import_module(name)
        assert (mod.__doc__ or "").strip(), f"module {name} has no docstring"
        public = getattr(mod, "__all__", None) or [n for n in vars(mod) if not n.startswith("_")]
        for n in public:
            obj = getattr(mod, n)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == name:
                objects.setdefault(f"{name}.{n}", obj)
    missing = []
    for path, obj in sorted(objects.items()):
        if not (obj.__doc__ or "").strip():
            missing.append(path)
        if inspect.isclass(obj):
            # an override of a documented vaeaug method (Backend.generate) is documented by it
            missing += [f"{path}.{m}" for m in _own_public_members(obj) if not inspect.getdoc(getattr(obj, m))]
    assert not missing, f"public names without a docstring: {sorted(set(missing))}"
    assert len(objects) > 40, objects.keys()  # the walk found the modules


# -------------------------------------------------------------------------------------------- the CLI page


def test_cli_page_lists_every_subcommand_and_option() -> None:
    """docs/cli.md has a section per subcommand listing every option it has, and no option it lacks."""
    from vaeaug.cli import _build_parser

    text = (DOCS / "cli.md").read_text()
    parser = _build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sp in sub.choices.items():
        head = f"## `vaeaug {name}`"
        assert head in text, f"docs/cli.md has no section {head!r}"
        section = text.split(head, 1)[1].split("\n## ", 1)[0]
        have = {o for a in sp._actions for o in a.option_strings if o not in ("-h", "--help")}
        rows = set(re.findall(r"^\| `(--[\w-]+)", section, re.MULTILINE))
        assert have - rows == set(), f"vaeaug {name}: options missing from docs/cli.md: {sorted(have - rows)}"
        assert rows - have == set(), f"vaeaug {name}: docs/cli.md lists options it lacks: {sorted(rows - have)}"
    for flag in ("--debug", "VAEAUG_DEBUG=1", "| 130 |", "| 2 |", "| 1 |", "| 0 |"):
        assert flag in text


# ------------------------------------------------------------------------------------------- the README


def test_readme_is_a_landing_page() -> None:
    """Under 150 lines, the two set-up commands (CI greps ``make test``), and links that resolve."""
    text = README.read_text()
    assert len(text.splitlines()) < 150
    assert "make demo" in text and "make test" in text
    links = re.findall(r"\]\((?!https?://|#)([^)#\s]+)", text)
    assert any(link.startswith("docs/") for link in links) and "SECURITY.md" in links
    for link in links:
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"


# ---------------------------------------------------------------------------------------- the examples


def _fixture_files(folder: Path) -> None:
    """What the pages' examples read: a conditional digits model, its ONNX export, and the reports of a
    (tiny) ``vaeaug evaluate --out report/``."""
    import vaeaug
    from vaeaug.protocol.evaluation import report_markdown

    folder.mkdir(parents=True, exist_ok=True)
    model = vaeaug.fit("digits", epochs=5, conditional=True, progress=False)
    model.save(folder / "digits.vae")
    vaeaug.export_onnx(model, folder / "digits.onnx", verify=False)  # the onnx page's own export verifies
    report = vaeaug.evaluate("digits", per_class=5, seeds=2, arms=["none", "classic", "vae"], steps=20,
                             vae_epochs=2, progress=False)
    (folder / "report").mkdir()
    (folder / "report" / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / "report" / "report.md").write_text(report_markdown(report) + "\n")


def run_pages(spec_file: str, result_file: str) -> None:
    """Run every page's blocks (called in the subprocess): results as JSON, written after each page."""
    spec = json.loads(Path(spec_file).read_text())
    work = Path(spec["workdir"])
    t0 = time.perf_counter()
    _fixture_files(work / "_files")
    results: dict[str, Any] = {"_fixture_seconds": time.perf_counter() - t0}
    for page, blocks in spec["pages"].items():
        folder = work / re.sub(r"\W+", "_", page)
        shutil.copytree(work / "_files", folder)
        os.chdir(folder)
        namespace: dict[str, Any] = {"__name__": "__main__"}
        t0 = time.perf_counter()
        results[page] = {"ok": True}
        for line, code in blocks:
            try:
                exec(compile(code, f"{page}, the block at line {line}", "exec"), namespace)  # noqa: S102
            except BaseException:  # noqa: BLE001 (reported as the page's failure)
                results[page] = {"ok": False, "error": traceback.format_exc(limit=-6)}
                break
        results[page]["seconds"] = time.perf_counter() - t0
        Path(result_file).write_text(json.dumps(results))


@pytest.fixture(scope="session")
def page_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("doc-examples")
    pages = {_page_id(p): python_blocks(p.read_text()) for p in _pages()}
    spec, result = work / "spec.json", work / "results.json"
    spec.write_text(json.dumps({"workdir": str(work), "pages": {k: v for k, v in pages.items() if v}}))
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "MPLBACKEND": "Agg", "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", f"import test_docs; test_docs.run_pages({str(spec)!r}, "
                           f"{str(result)!r})"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    out = json.loads(result.read_text()) if result.exists() else {}
    out["_proc"] = {"returncode": proc.returncode, "seconds": time.perf_counter() - t0,
                    "tail": (proc.stdout + proc.stderr)[-4000:]}
    out["_blocks"] = {k: len(v) for k, v in pages.items()}
    return out


@pytest.mark.parametrize("page", [_page_id(p) for p in _pages() if python_blocks(p.read_text())])
def test_python_examples_run(page: str, page_results: dict[str, Any]) -> None:
    """Every runnable ``python`` block of the page runs, in order, in seconds (pages without one: no test)."""
    r = page_results.get(page)
    assert r is not None, f"the examples' process stopped before {page}:\n{page_results['_proc']['tail']}"
    assert r["ok"], (f"{page}: an example failed (make it runnable: the working folder holds digits.vae, "
                     f"digits.onnx and report/; or, for what needs a GPU, a cluster or the internet, put "
                     f"<!-- not-run: why --> on the line before its fence):\n{r['error']}")


def test_the_examples_process_runs_to_the_end(page_results: dict[str, Any]) -> None:
    """The process that runs every page's examples exits cleanly (its times are printed, not asserted:
    speed belongs to benchmarks, and a loaded machine must not fail the suite)."""
    proc = page_results["_proc"]
    assert proc["returncode"] == 0, proc["tail"]
    times = {k: round(v["seconds"], 1) for k, v in page_results.items() if isinstance(v, dict) and "ok" in v}
    print(f"examples: {proc['seconds']:.1f} s in all (fixture {page_results['_fixture_seconds']:.1f} s); "
          f"per page: {times}")


# --------------------------------------------------------------------------------------------- tutorial


def test_tutorial_runs(tmp_path: Path) -> None:
    """examples/tutorial.py in quick mode: a notebook in cells, from a folder of images to the gains."""
    script = ROOT / "examples" / "tutorial.py"
    text = script.read_text()
    assert text.startswith("# %% [markdown]") and text.count("\n# %%\n") >= 6  # jupytext percent cells
    out = tmp_path / "out"
    env = {**os.environ, "VAEAUG_TUTORIAL_QUICK": "1", "VAEAUG_TUTORIAL_OUT": str(out), "MPLBACKEND": "Agg"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    took = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(f"tutorial (quick): {took:.1f} s")
    from vaeaug.viz import has_matplotlib

    for name in ("digits.vae", "curves.png", "preview.png", "variants.png", "report.md",
                 *(["gains.png"] if has_matplotlib() else [])):
        assert (out / name).stat().st_size > 0, name
    assert re.search(r"vae vs none: [+-]\d+\.\d\d ± \d+\.\d\d points", proc.stdout), proc.stdout[-2000:]
    assert "paired gain over none" in (out / "report.md").read_text()
