"""The package's import graph, read from the source with ``ast`` (nothing is imported): no cycle, at
most 9 levels, and no module importing from a layer above its own (function-level imports included,
imports under ``if TYPE_CHECKING:`` not)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "vaeaug"

# The layers, bottom up, by folder: a module may import from its own layer and those below, never above.
# A folder's modules share its layer; a top-level module has its own.
LAYERS: dict[int, set[str]] = {
    0: {"_version", "files"},  # safe reading and writing of files, checks: used by every layer
    1: {"core"},  # torch-free: settings, keys and noise, labels, codecs, the moves, the backend interface, augment
    2: {"model"},  # config (torch-free), the VAE, devices, the .vae file
    3: {"data", "backends"},  # input forms -> TensorData; the torch and onnxruntime backends, the ONNX export
    4: {"generated", "transforms", "albumentations", "augmented_dataset", "ray"},  # sets on disk; the thin adapters
    5: {"fitting"},  # training (in memory or streamed from a generated set), torchrun, fit-time transforms
    6: {"protocol", "viz"},  # classifier, evaluate, tune, timing; plots and previews
    7: {"cli", "__main__", "__init__"},  # the command and the public face (lazy names)
}
# Modules that sit below their folder's layer, and why.
EXCEPTIONS: dict[str, int] = {
    "viz.plots": 0,  # drawing only (no model, no data): VAE._repr_png_ draws a model's curves with it
}
FOLDER = {f: n for n, fs in LAYERS.items() for f in fs}


def layer(module: str) -> int:
    """The layer of a module: its own exception, else its top-level folder's (or top-level module's) layer."""
    return EXCEPTIONS.get(module, FOLDER[module.split(".")[0]])




def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" and len(rel.parts) > 1 else rel.parts
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    if name == "__init__":
        package = []
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            mod = ".".join(base + ([node.module] if node.module else []))
            cands = [mod] + [f"{mod}.{a.name}".lstrip(".") for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vaeaug"):
            mod = node.module[len("vaeaug."):] if node.module != "vaeaug" else ""
            cands = [mod] + [f"{mod}.{a.name}".lstrip(".") for a in node.names]
        elif isinstance(node, ast.Import):
            cands = [a.name[len("vaeaug."):] for a in node.names if a.name.startswith("vaeaug.")]
        else:
            continue
        found |= {c for c in cands if c in known and c != name}
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods) | {""}
    return {m: _imports(m, p, known) - {""} for m, p in mods.items()}


def test_every_module_has_a_layer() -> None:
    missing = {m for m in _graph() if m.split(".")[0] not in FOLDER}
    assert not missing, f"place {sorted(missing)} in a folder of LAYERS (and think about where it belongs)"


def test_the_top_level_holds_the_public_face_the_adapters_and_files() -> None:
    top = sorted(p.name for p in PKG.iterdir() if p.name != "__pycache__")
    files = [t for t in top if t.endswith(".py")]
    folders = [t for t in top if (PKG / t).is_dir()]
    assert set(files) == {"__init__.py", "__main__.py", "_version.py", "cli.py", "files.py", "transforms.py",
                          "albumentations.py", "augmented_dataset.py", "ray.py"}, files
    assert len(files) <= 9 and len(folders) <= 8, top


def test_no_module_imports_from_a_layer_above() -> None:
    up = [(m, t) for m, ts in _graph().items() for t in ts if layer(t) > layer(m)]
    assert not up, f"imports from a layer above: {up}"


def test_no_cycle_and_at_most_9_levels() -> None:
    graph = _graph()
    depth: dict[str, int] = {}

    def visit(u: str, stack: tuple[str, ...]) -> int:
        assert u not in stack, f"import cycle: {' -> '.join(stack[stack.index(u):] + (u,))}"
        if u not in depth:
            depth[u] = 1 + max((visit(v, stack + (u,)) for v in graph[u] if v != "__init__"), default=0)
        return depth[u]

    levels = max(visit(m, ()) for m in graph if m != "__init__")
    # 9 since the protocol's `tuned` arm runs tune: __main__ -> cli -> evaluation -> tuning -> training -> data
    assert levels <= 9, f"{levels} levels of imports"


def test_the_core_and_the_onnx_backend_import_without_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None\n"
            "import vaeaug.core.augment, vaeaug.core.codecs, vaeaug.backends.onnx_backend, vaeaug.backends.factory\n"
            "assert 'torchvision' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PKG.parent)


def test_no_private_name_is_imported_across_modules() -> None:
    """What another module needs is public where it lives: ``from X import _name`` between package
    modules fails (relative or absolute, function-level included; ``_version`` is a module name)."""
    found = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("vaeaug")):
                found += [f"{path.relative_to(PKG.parent)}:{node.lineno} {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__") and a.name != "_version"]
    assert not found, f"private names imported from another module: {found}"


def test_benchmarks_and_examples_use_only_public_names() -> None:
    """The scripts beside the package are users of it: ``from vaeaug... import _name`` fails there too."""
    found = []
    for folder in ("benchmarks", "examples"):
        for path in (PKG.parent / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vaeaug"):
                    found += [f"{folder}/{path.name}:{node.lineno} {a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert len(list((PKG.parent / "benchmarks").glob("*.py"))) > 10  # the folder this test reads is there
    assert not found, f"private names imported by the scripts: {found}"
