"""The albumentations adapter's tests, run again against AlbumentationsX, the maintained albumentations.

The main environment keeps albumentations 2.0.8 (the last MIT release, vaeaug's extra);
``make albumentationsx`` installs AlbumentationsX 2.5 into ``.albumentationsx/`` beside it. This test
runs the adapter's own tests (tests/test_albumentations.py), the cross-consumer conformance suite and
the adapter's docstring example in a subprocess whose ``PYTHONPATH`` puts that folder first, and
requires every one of them to pass there, none skipped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALBX = ROOT / ".albumentationsx"


def test_the_adapter_passes_its_tests_on_albumentationsx() -> None:
    if not (ALBX / "albumentations").is_dir():
        pytest.skip("AlbumentationsX is not installed beside the environment: run `make albumentationsx` "
                    "(make test does)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ALBX), os.environ.get("PYTHONPATH")) if p),
           "VAEAUG_EXPECT_ALBUMENTATIONS": "albumentationsx", "OMP_NUM_THREADS": "1",
           "NO_ALBUMENTATIONS_UPDATE": "1"}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                          "tests/test_albumentations.py", "tests/test_conformance.py", "vaeaug/albumentations.py"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    summary = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else res.stderr[-2000:]
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 60, summary  # every test of the three ran
    assert not re.search(r"skipped|xfail|deselected|error", summary), summary
    # the run really loaded AlbumentationsX: test_the_expected_albumentations_line_is_loaded checked it, and so here
    probe = subprocess.run([sys.executable, "-c", "import albumentations, vaeaug.albumentations as m; "
                            "print(m.ALBUMENTATIONS_LINE, albumentations.__version__, albumentations.__file__)"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    line, version, where = probe.stdout.split()
    assert line == "albumentationsx" and not version.startswith("2.0.") and where.startswith(str(ALBX)), probe.stdout
