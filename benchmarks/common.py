"""What the benchmark scripts share: the machine's description, BENCHMARKS.md blocks and JSON summaries.

A sibling module: ``benchmarks/`` is on ``sys.path`` when a script in it runs (``python benchmarks/x.py``).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

import torch


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """``torch <version>, <n> threads, <cpu>``: the end of every summary line (float rounding depends on it)."""
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu_name()}"


def record(text: str) -> None:
    """Append a markdown block to BENCHMARKS.md (``--record``)."""
    path = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
    with path.open("a") as f:
        f.write("\n" + text)
    print(f"appended to {path}")


def write_summary(path: Path | None, summary: str, args: argparse.Namespace, **rows: Any) -> None:
    """Write ``{"summary", "args", **rows}`` as JSON to ``path`` (``--json``); nothing when ``path`` is None."""
    if path is None:
        return
    path.write_text(json.dumps({"summary": summary, "args": {k: str(v) if isinstance(v, Path) else v
                                                             for k, v in vars(args).items()}, **rows},
                               indent=2) + "\n")
