"""The tooling that keeps the house in order, run by the suite (so by CI):
ruff (lint and format), mypy --strict (configured in setup.cfg) and
import-linter's contracts (the layering, in setup.cfg). Each must find nothing.
The same checks run as pre-commit hooks (.pre-commit-config.yaml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def run(*args: str, timeout: float = 50) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=REPO, capture_output=True, text=True, timeout=timeout)


def tool(name: str) -> str:
    """The tool installed beside this interpreter (the [test] extra brings
    them), else the one on PATH; a missing tool fails, it does not skip."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def test_ruff_lint_is_clean() -> None:
    proc = run(tool("ruff"), "check", "--no-cache", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_is_clean() -> None:
    proc = run(tool("ruff"), "format", "--check", "--no-cache", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_finds_no_errors() -> None:
    # the cache stays in the checkout (.mypy_cache, ignored by git): a cold
    # run takes a few seconds, a warm one under one
    proc = run(sys.executable, "-m", "mypy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "strict = True" in (REPO / "setup.cfg").read_text(), "mypy must run in strict mode"


def test_import_contracts_are_kept() -> None:
    proc = run(tool("lint-imports"), "--no-cache")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout, proc.stdout


def test_every_subpackage_is_installed() -> None:
    """A subpackage missing from setup.cfg's ``packages`` works in an editable
    install and is gone from a wheel."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "firmware_host").rglob("__init__.py")}
    assert found - listed == set()
