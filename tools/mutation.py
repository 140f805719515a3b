"""Mutation testing of one module against the tests that cover it, with mutmut.

    python tools/mutation.py firmware_host/cancel.py [--recollect | --measure TESTS...]
                             [--budget SECONDS] [--no-table] [--rescore]

Needs the ``[mutation]`` extra (``pip install -e '.[test,mqtt,mutation]'``).

1. The tests: every test whose coverage context (``dynamic_context = test_function``,
   setup.cfg) ran a line of MODULE, read from ``build/coverage/.coverage``. That data
   comes from ``tools/coverage_report.py`` (the whole suite under coverage, a few
   minutes); it is made when missing or with ``--recollect``; ``--measure TESTS`` adds
   what new tests run without measuring the whole suite again. Tests are picked by what
   they execute, never by file name.
2. The run: a scratch copy of the repository in ``build/mutation/<module>/`` whose
   ``[mutmut]`` section (setup.cfg) gains ``only_mutate = MODULE`` and those tests as
   ``pytest_add_cli_args_test_selection``; ``mutmut run`` there. Each mutant is bounded
   by mutmut's per-mutant timeout (setup.cfg) and the whole run by ``--budget``.
3. The verdict: mutmut's results, less the mutants listed as equivalent (with a reason)
   in ``tools/mutation_equivalent.toml``. Score = killed / (all - equivalent - not run);
   a timeout counts as killed, "no tests" as survived, and mutants the budget left
   unchecked are counted apart ("not run"). The module's row in the table in
   ``docs/testing-internals.md`` is rewritten (its "before" cell is kept once set), and
   the survivors' diffs are written to ``build/mutation/<module>/survivors.diff``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from coverage import CoverageData

ROOT = Path(__file__).resolve().parent.parent
COVERAGE_DATA = ROOT / "build" / "coverage" / ".coverage"
EQUIVALENT = ROOT / "tools" / "mutation_equivalent.toml"
DOC = ROOT / "docs" / "testing-internals.md"
TABLE_START = "<!-- mutation-table:start -->"
TABLE_END = "<!-- mutation-table:end -->"
TABLE_HEAD = (
    "| module | mutants | killed | survived | equivalent | not run | score before | score now |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|\n"
)
# what the scratch copy needs: the package, its tests, and what they load
COPY = (
    "firmware_host",
    "plugins",
    "boards",
    "tests",
    "tools",
    "docs",
    ".ci",
    ".pre-commit-config.yaml",
    "setup.cfg",
    "pyproject.toml",
    "README.md",
)
TRAMPOLINE_SHIM = """\
# stand-in for mutmut's trampoline in child processes (tools/mutation.py): the original code
from typing import Any

MutantDict = dict


def wrap_in_trampoline(mutants_dict: Any, is_classmethod: bool = False) -> Any:
    return lambda func: func
"""
#: how many times a run is retried without the tests that failed with no mutant
RETRIES = 3
KILLED = {"killed", "timeout", "caught by type check", "segfault"}


@dataclass(frozen=True)
class Verdict:
    module: str
    total: int
    killed: int
    survivors: tuple[str, ...]
    equivalent: tuple[str, ...]
    #: left unchecked when the run's budget ran out: in no column but this one
    not_run: tuple[str, ...]

    @property
    def score(self) -> float:
        real = self.total - len(self.equivalent) - len(self.not_run)
        return 100.0 * self.killed / real if real else 100.0


def node_id(context: str) -> str:
    """``test_cancel.TestX.test_y`` (coverage's test_function context) → ``tests/test_cancel.py::TestX::test_y``."""
    module, *names = context.split(".")
    return f"tests/{module}.py::" + "::".join(names)


def covering_tests(module_path: Path) -> list[str]:
    data = CoverageData(basename=str(COVERAGE_DATA))
    data.read()
    target = str((ROOT / module_path).resolve())
    if target not in data.measured_files():
        raise SystemExit(f"{module_path}: not in the coverage data; run with --recollect")
    contexts: set[str] = set()
    for names in data.contexts_by_lineno(target).values():
        contexts.update(c for c in names if c)
    tests = sorted({node_id(c) for c in contexts})
    # a context from a helper (not a collected test file) cannot be selected
    return [t for t in tests if (ROOT / t.split("::")[0]).is_file()]


def work_dir(module_path: Path) -> Path:
    return ROOT / "build" / "mutation" / module_path.with_suffix("").as_posix().replace("/", ".")


def scratch_copy(module_path: Path, tests: list[str]) -> Path:
    work = work_dir(module_path)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".hypothesis", "mutants")
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, work / name)
    # Tests that start the package in a child process (the CLI tests) import the mutated
    # copy there, whose trampolines import mutmut, which then looks for its configuration
    # in the child's working directory and fails. This stand-in (copied into mutants/,
    # first on the child's PYTHONPATH) runs the original code in children: those tests
    # pass and never kill a mutant. mutmut's own process has the real mutmut imported.
    shim = work / "mutmut" / "mutation"
    shim.mkdir(parents=True)
    (work / "mutmut" / "__init__.py").write_text("")
    (shim / "__init__.py").write_text("")
    (shim / "trampoline.py").write_text(TRAMPOLINE_SHIM)
    cfg = work / "setup.cfg"
    selection = "".join(f"\n    {t}" for t in tests)
    text = cfg.read_text().replace(
        "[mutmut]\n",
        f"[mutmut]\nonly_mutate = {module_path.as_posix()}\npytest_add_cli_args_test_selection ={selection}\n",
        1,
    )
    text = text.replace("also_copy =\n", "also_copy =\n    mutmut\n", 1)
    cfg.write_text(text)
    return work


def run_mutmut(work: Path, budget: float) -> dict[str, str]:
    log = work / "mutmut.log"
    with log.open("w") as sink:
        # its own process group, so a spent budget stops mutmut's forked workers too
        proc = subprocess.Popen(
            ["mutmut", "run", "--max-children", "2"],
            cwd=work,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
            print(f"budget of {budget:.0f} s spent: the mutants not yet run are reported as such", file=sys.stderr)
    return results(work)


def results(work: Path) -> dict[str, str]:
    """mutmut's verdict on every mutant of the run in ``work``."""
    out = subprocess.run(
        ["mutmut", "results", "--all", "true"], cwd=work, check=True, capture_output=True, text=True
    ).stdout
    status: dict[str, str] = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\S+__mutmut_\d+): (.+)$", line)
        if m:
            status[m.group(1)] = m.group(2).strip()
    return status


def failing_tests(log: Path, tests: list[str]) -> list[str]:
    """The selected tests named in the failure headers (``____ test_x ____``) of a mutmut log."""
    text = log.read_text(errors="replace").replace("\r", "\n")
    names = set(re.findall(r"^_{3,} (\S+?)(?:\[[^\]]*\])? _{3,}$", text, flags=re.MULTILINE))
    return [t for t in tests if t.rsplit("::", 1)[-1] in names]


def equivalents(names: set[str]) -> tuple[str, ...]:
    listed: dict[str, str] = tomllib.loads(EQUIVALENT.read_text()) if EQUIVALENT.exists() else {}
    return tuple(sorted(n for n in names if n in listed))


def write_survivors(work: Path, survivors: tuple[str, ...]) -> Path:
    path = work / "survivors.diff"
    chunks = []
    for name in survivors:
        diff = subprocess.run(["mutmut", "show", name], cwd=work, check=False, capture_output=True, text=True).stdout
        chunks.append(f"# {name}\n{diff}\n")
    path.write_text("".join(chunks))
    return path


def update_table(v: Verdict) -> None:
    text = DOC.read_text()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    rows = [r for r in text[start:end].strip().splitlines()[2:] if r.startswith("|")]
    key = f"| `{v.module}` |"
    before = f"{v.score:.1f}%"
    for r in rows:
        if r.startswith(key):
            cells = [c.strip() for c in r.strip("|").split("|")]
            if cells[6] not in ("", "—"):
                before = cells[6]
    row = (
        f"{key} {v.total} | {v.killed} | {len(v.survivors)} | {len(v.equivalent)} | {len(v.not_run)} "
        f"| {before} | {v.score:.1f}% |"
    )
    rows = sorted([r for r in rows if not r.startswith(key)] + [row])
    DOC.write_text(text[:start] + "\n" + TABLE_HEAD + "\n".join(rows) + "\n" + text[end:])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("module", help="a file under firmware_host/, e.g. firmware_host/cancel.py")
    parser.add_argument("--recollect", action="store_true", help="rerun the suite under coverage first")
    parser.add_argument(
        "--measure",
        nargs="+",
        default=[],
        metavar="TESTS",
        help="measure these tests (new ones) under coverage and add them to the data first",
    )
    parser.add_argument("--budget", type=float, default=1800.0, help="seconds for the whole mutmut run")
    parser.add_argument("--no-table", action="store_true", help="leave docs/testing-internals.md alone")
    parser.add_argument(
        "--rescore", action="store_true", help="no new run: score the last run again (after editing the equivalents)"
    )
    args = parser.parse_args(argv)
    module_path = Path(args.module)
    if module_path.is_absolute():
        module_path = module_path.relative_to(ROOT)
    if not (ROOT / module_path).is_file() or module_path.parts[0] != "firmware_host":
        parser.error(f"{args.module}: not a module file under firmware_host/")
    if args.rescore:
        return report(module_path, work_dir(module_path), results(work_dir(module_path)), [], args.no_table)
    if args.recollect or not COVERAGE_DATA.exists():
        subprocess.run([sys.executable, str(ROOT / "tools" / "coverage_report.py")], cwd=ROOT, check=False)
    if args.measure:
        measure = [sys.executable, str(ROOT / "tools" / "coverage_report.py"), "--append", *args.measure]
        subprocess.run(measure, cwd=ROOT, check=False)
    tests = covering_tests(module_path)
    print(f"{module_path}: {len(tests)} tests cover it")
    left_out: list[str] = []
    for _attempt in range(RETRIES + 1):
        work = scratch_copy(module_path, tests)
        status = run_mutmut(work, args.budget)
        if status and any(s != "not checked" for s in status.values()):
            break
        # mutmut runs the tests in its own (forked) processes first, with no mutant; a
        # test that fails there (a pty test whose descriptors a sibling worker holds)
        # would stop the run: leave it out, say so, and try again
        failed = failing_tests(work / "mutmut.log", tests)
        if not failed:
            print(f"{module_path}: mutmut ran no mutant (see {work / 'mutmut.log'})", file=sys.stderr)
            return 1
        left_out += failed
        tests = [t for t in tests if t not in failed]
        print(f"{module_path}: left out (fail under mutmut with no mutant): {', '.join(failed)}", file=sys.stderr)
    else:
        print(f"{module_path}: mutmut ran no mutant (see {work / 'mutmut.log'})", file=sys.stderr)
        return 1
    return report(module_path, work, status, left_out, args.no_table)


def report(module_path: Path, work: Path, status: dict[str, str], left_out: list[str], no_table: bool) -> int:
    """Score a run's results, print the verdict and (unless no_table) rewrite its table row."""
    eq = equivalents(set(status))
    not_run = tuple(sorted(n for n, s in status.items() if s == "not checked" and n not in eq))
    killed = sum(1 for n, s in status.items() if s in KILLED and n not in eq)
    survivors = tuple(sorted(n for n, s in status.items() if s not in KILLED and n not in eq and n not in not_run))
    verdict = Verdict(module_path.as_posix(), len(status), killed, survivors, eq, not_run)
    diff = write_survivors(work, survivors)
    if left_out:
        print(f"{verdict.module}: run without {', '.join(left_out)}")
    print(
        f"{verdict.module}: {verdict.total} mutants, {killed} killed, {len(survivors)} survived, "
        f"{len(eq)} equivalent, {len(not_run)} not run: score {verdict.score:.1f}% (survivors: {diff})"
    )
    if not no_table:
        update_table(verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
