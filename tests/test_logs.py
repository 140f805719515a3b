"""``run`` logs as asked: ``--log-level``, ``-v``/``-q``, ``--log-format
text|json`` and the ``[log]`` table, one line per event (a JSON object per
line in json), and a logged traceback never carries the chained "No module
named 'uvloop'" of a machine without the ``[fast]`` extra.

Real ``firmware-host run`` processes. The traceback comes from a real
installed plugin whose ``setup()`` raises (a dist-info on PYTHONPATH, as pip
would leave it), and uvloop is made missing by a module on PYTHONPATH that
raises ImportError on import, exactly as an absent one does.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_host.cli.logs import JsonFormatter, choose_level, run_logging
from tests.conftest import REPO, cli

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a plugin ``boom`` whose setup raises, and no uvloop."""
    root = tmp_path_factory.mktemp("site")
    (root / "uvloop.py").write_text("raise ImportError(\"No module named 'uvloop'\")\n")
    (root / "boomplug.py").write_text('def setup(ctx):\n    raise RuntimeError("boom in setup")\n')
    info = root / "boomplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: boomplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[firmware_host.plugins]\nboom = boomplug\n")
    return root


#: every run the tests read, by name: (its options, the config's [log] table)
RUNS: dict[str, tuple[tuple[str, ...], str]] = {
    "default": ((), ""),
    "-v": (("-v",), ""),
    "-q": (("-q",), ""),
    "-qq": (("-qq",), ""),
    "--log-level error": (("--log-level", "error"), ""),
    "config warning": ((), '[log]\nlevel = "warning"\n'),
    "config warning, --log-level debug": (("--log-level", "debug"), '[log]\nlevel = "warning"\n'),
    "--log-format json": (("--log-format", "json"), ""),
    "config json": ((), '[log]\nformat = "json"\n'),
}


class Runs:
    """The ``run`` processes of RUNS, all started at once (each in its own directory,
    its output to files, so none waits for a reader): the module waits for the
    slowest of them, not for their sum."""

    def __init__(self, root: Path, site: Path) -> None:
        self.procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        env = {**os.environ, "PYTHONPATH": f"{site}:{REPO}"}
        for i, (name, (args, config)) in enumerate(RUNS.items()):
            work = root / f"run{i}"
            work.mkdir()
            path = work / "gw.toml"
            path.write_text(config + '[plugins.boom]\n[[sinks]]\ntype = "jsonl"\npath = "frames.jsonl"\n')
            command = ["run", "-c", str(path), "--emulate", "nucleo-imu:1", "--duration", "0.3"]
            with open(work / "out", "wb") as out, open(work / "err", "wb") as err:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "firmware_host", *command, "--control", str(work / "s"), *args],
                    cwd=work,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                )
            self.procs[name] = (proc, work)

    def stderr_lines(self, name: str) -> list[str]:
        """The run's stderr, once it exited 0."""
        proc, work = self.procs[name]
        proc.wait(timeout=30)
        stderr = (work / "err").read_text()
        assert proc.returncode == 0, stderr
        return stderr.splitlines()

    def close(self) -> None:
        for proc, _ in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, site: Path) -> Iterator[Runs]:
    started = Runs(tmp_path_factory.mktemp("runs"), site)
    try:
        yield started
    finally:
        started.close()


def events(lines: list[str]) -> list[str]:
    """The text lines that start an event (not a traceback's lines)."""
    return [line for line in lines if line[:2].isdigit() and line[2:3] == ":"]


def levels(lines: list[str]) -> set[str]:
    return {line.split()[1] for line in events(lines)}


def test_the_default_is_info_in_text(runs: Runs) -> None:
    lines = runs.stderr_lines("default")
    assert {"INFO", "ERROR"} <= levels(lines) and "DEBUG" not in levels(lines), lines
    assert any("control socket listening" in line for line in lines)


def test_v_adds_debug(runs: Runs) -> None:
    lines = runs.stderr_lines("-v")
    assert "DEBUG" in levels(lines), lines


def test_q_drops_info(runs: Runs) -> None:
    lines = runs.stderr_lines("-q")
    assert "ERROR" in levels(lines) and levels(lines) <= {"WARNING", "ERROR"}, lines


def test_qq_leaves_errors_only_and_log_level_error_too(runs: Runs) -> None:
    for name in ("-qq", "--log-level error"):
        lines = runs.stderr_lines(name)
        assert levels(lines) <= {"ERROR"} and any("boom in setup" in line for line in lines), lines


def test_the_config_sets_the_level_and_the_option_beats_it(runs: Runs) -> None:
    lines = runs.stderr_lines("config warning")
    assert "ERROR" in levels(lines) and levels(lines) <= {"WARNING", "ERROR"}, lines
    lines = runs.stderr_lines("config warning, --log-level debug")
    assert {"DEBUG", "INFO"} <= levels(lines), lines


def test_a_traceback_does_not_chain_the_missing_uvloop(runs: Runs) -> None:
    lines = runs.stderr_lines("default")
    text = "\n".join(lines)
    assert "Traceback" in text and "RuntimeError: boom in setup" in text
    assert "uvloop" not in text and "During handling" not in text, text


@pytest.mark.parametrize("how", ["option", "config"])
def test_json_is_one_object_per_line(runs: Runs, how: str) -> None:
    lines = runs.stderr_lines("--log-format json" if how == "option" else "config json")
    records = [json.loads(line) for line in lines]  # every line is one object
    assert records
    for record in records:
        assert {"ts", "level", "logger", "message"} <= set(record) <= {"ts", "level", "logger", "message", "exc"}
        assert record["ts"].endswith("+00:00")
    assert {"info", "error"} <= {r["level"] for r in records} <= {"info", "warning", "error"}
    (boom,) = [r for r in records if "boom in setup" in r["message"]]
    assert boom["logger"] == "firmware_host.plugins" and "RuntimeError: boom in setup" in boom["exc"]
    assert "uvloop" not in boom["exc"]


def test_a_bad_log_option_is_one_line(tmp_path: Path) -> None:
    result = cli("run", "--log-format", "xml", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--log-format" in result.stderr


@pytest.mark.parametrize(
    ("level", "verbose", "quiet", "expected"),
    [
        ("info", 0, 0, logging.INFO),
        ("info", 1, 0, logging.DEBUG),
        ("info", 5, 0, logging.DEBUG),
        ("info", 0, 1, logging.WARNING),
        ("info", 0, 2, logging.ERROR),
        ("info", 0, 9, logging.ERROR),
        ("warning", 1, 0, logging.INFO),
        ("info", 2, 1, logging.DEBUG),
    ],
)
def test_choose_level(level: str, verbose: int, quiet: int, expected: int) -> None:
    assert choose_level(level, verbose, quiet) == expected


def test_run_logging_restores_the_root_logger() -> None:
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    out = io.StringIO()
    with run_logging(logging.DEBUG, "text", out):
        logging.getLogger("firmware_host.x").info("two\nlines")
    assert (root.level, list(root.handlers)) == before
    assert out.getvalue().count("\n") == 1 and "INFO firmware_host.x: two\\nlines" in out.getvalue()


def test_json_formatter_keeps_a_message_with_a_newline_on_one_line() -> None:
    record = logging.LogRecord("l", logging.WARNING, __file__, 1, "a\nb %s", ("c",), None)
    line = JsonFormatter().format(record)
    assert "\n" not in line and json.loads(line)["message"] == "a\nb c"
