"""Run the whole suite under coverage and print the combined line and branch figures.

    python tools/coverage_report.py [--html] [PYTEST ARGS...]
    python tools/coverage_report.py --append tests/test_new.py   # measure these, add to the data

Needs the ``[dev]`` extra (``pip install -e '.[test,mqtt,dev]'``). The configuration is
``[coverage:run]`` in setup.cfg: ``coverage run -m pytest`` starts measuring before pytest
loads our pytest11 plugin (which imports the package), and ``patch = subprocess`` follows
the CLI tests into their child processes. The data lands in ``build/coverage/`` (absolute
path through ``COVERAGE_FILE``, so children started in a tmp dir write there too); each
line carries the tests that ran it (``dynamic_context = test_function``), which is what
``tools/mutation.py`` selects its tests from. ``--append`` keeps the data there and adds
what the given tests run (new tests, without measuring the whole suite again).
Exit status: pytest's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "build" / "coverage"
DATA_FILE = DATA_DIR / ".coverage"
JSON_REPORT = DATA_DIR / "coverage.json"


def run_suite(pytest_args: list[str], *, append: bool = False) -> int:
    """Measure one pytest run (fresh data, or ``append``: added to the data
    already there), combine the parallel files; pytest's exit status."""
    if not append:
        shutil.rmtree(DATA_DIR, ignore_errors=True)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, COVERAGE_FILE=str(DATA_FILE))
    cmd = [sys.executable, "-m", "coverage", "run", "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args]
    status = subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode
    combine = [sys.executable, "-m", "coverage", "combine", "-q", *(["--append"] if append else [])]
    subprocess.run(combine, cwd=ROOT, env=env, check=True)
    return status


def totals() -> dict[str, int]:
    """The combined figures from coverage's JSON report (lines and branches separately)."""
    env = dict(os.environ, COVERAGE_FILE=str(DATA_FILE))
    subprocess.run(
        [sys.executable, "-m", "coverage", "json", "-q", "-o", str(JSON_REPORT)], cwd=ROOT, env=env, check=True
    )
    report = json.loads(JSON_REPORT.read_text())
    t: dict[str, int] = report["totals"]
    return t


def summary(t: dict[str, int]) -> str:
    def pct(part: int, whole: int) -> str:
        return f"{100.0 * part / whole:.1f}%" if whole else "n/a"

    lines = f"lines {t['covered_lines']}/{t['num_statements']} = {pct(t['covered_lines'], t['num_statements'])}"
    branches = f"branches {t['covered_branches']}/{t['num_branches']} = {pct(t['covered_branches'], t['num_branches'])}"
    both = t["covered_lines"] + t["covered_branches"]
    combined = f"combined {pct(both, t['num_statements'] + t['num_branches'])}"
    return f"{lines}, {branches}, {combined}"


def main(argv: list[str]) -> int:
    html = "--html" in argv
    append = "--append" in argv
    status = run_suite([a for a in argv if a not in ("--html", "--append")], append=append)
    if html:
        env = dict(os.environ, COVERAGE_FILE=str(DATA_FILE))
        subprocess.run(
            [sys.executable, "-m", "coverage", "html", "-q", "-d", str(DATA_DIR / "html")],
            cwd=ROOT,
            env=env,
            check=True,
        )
        print(f"html report: {DATA_DIR / 'html' / 'index.html'}")
    print(f"coverage (firmware_host, whole suite and its subprocesses): {summary(totals())}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
