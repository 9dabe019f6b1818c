"""The package's import graph, read from the source with ``ast`` (nothing is imported): no cycle, at
most 9 levels, and no module importing from a layer above its own (function-level imports included,
imports under ``if TYPE_CHECKING:`` not)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "vaeaug"

# The layers, bottom up: a module may import from its own layer and those below, never above.
LAYERS: dict[int, set[str]] = {
    0: {"_version", "files", "config", "settings", "rng", "labels", "codecs", "functional"},  # torch-free base
    1: {"devices", "plots", "model", "io", "distributed", "classic", "data", "data.arrays", "data.readers",
        "data.builtin", "data.generated"},
    2: {"backends", "backends.base", "backends.onnx_metadata", "backends.onnx_generator",
        "backends.torch_generator", "backends.export", "backends.factory", "streaming", "training"},
    3: {"augment"},  # the one augmentation core
    4: {"transforms", "albumentations", "augmented_dataset", "pregeneration", "classifier", "viz", "benchmarking"},
    5: {"evaluation", "tuning"},
    6: {"cli", "__main__", "__init__",  # and the short re-exports that moved modules left behind
        "generator", "onnx_backend", "export", "dataset", "datasets", "ondisk", "generated", "protocol"},
}
LAYER = {m: n for n, ms in LAYERS.items() for m in ms}


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
    assert set(_graph()) - {""} == set(LAYER), "place a new module in LAYERS (and think about where it belongs)"


def test_no_module_imports_from_a_layer_above() -> None:
    up = [(m, t) for m, ts in _graph().items() for t in ts if LAYER[t] > LAYER[m]]
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
            "import vaeaug.augment, vaeaug.codecs, vaeaug.backends.onnx_generator, vaeaug.backends.factory\n"
            "assert 'torchvision' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PKG.parent)
