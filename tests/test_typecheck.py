"""Type hints are checked, not just written: mypy over firmware_host, plugins
and tools, as configured in setup.cfg ([mypy]), must find nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

pytest.importorskip("mypy", reason="mypy comes with the [test] extra")


def test_mypy_finds_no_errors() -> None:
    # the cache stays in the checkout (.mypy_cache, ignored by git): a cold
    # run takes a few seconds, a warm one under one
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stdout + proc.stderr
