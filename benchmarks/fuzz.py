"""A longer fuzz run of the three readers (``.vae``, ONNX exports, generated sets) than ``make test`` does.

``make test`` runs each property-based fuzz test of ``tests/test_security_*.py`` on a fixed,
derandomized set of examples (60-80 each), so the suite stays bounded in time. This script runs
the same tests with ``VAEAUG_FUZZ_EXAMPLES`` random examples each (new ones every run), under a
wall-clock limit per test file, and prints what ran, how long it took and whether every example
held the property: a ``ValueError`` or a load equal to the original, never another exception,
never a hang. A failing example is printed by hypothesis with the exact mutation to replay.

Usage:
    python benchmarks/fuzz.py --examples 2000
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ("tests/test_security_files.py", "tests/test_security_onnx.py", "tests/test_security_generated.py")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=2000, help="random examples per fuzz test")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds allowed per test file")
    args = ap.parse_args()
    env = {**os.environ, "VAEAUG_FUZZ_EXAMPLES": str(args.examples)}
    print(f"fuzz run {date.today()}, {platform.node()} ({os.cpu_count()} cores), {args.examples} examples per test")
    print(f"{'file':<36} {'tests':>5} {'result':>8} {'seconds':>8}")
    failed = False
    for f in FILES:
        t = time.perf_counter()
        try:
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f, "-k", "fuzz"],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
            out, ok = r.stdout + r.stderr, r.returncode == 0
        except subprocess.TimeoutExpired:
            out, ok = f"timed out after {args.timeout} s (a hang is a failure)", False
        took = time.perf_counter() - t
        m = re.search(r"(\d+) passed", out)
        n = int(m.group(1)) if m else 0
        print(f"{f:<36} {n:>5} {'ok' if ok else 'FAILED':>8} {took:>8.0f}")
        if not ok:
            failed = True
            print(out[-6000:])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
