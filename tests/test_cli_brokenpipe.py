"""Issue 19: a reader of stdout that leaves (``| head -1``) ends any command
quietly: exit 0, nothing on stderr. Real shell pipelines, a real runtime."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import REPO, cli_runtime

pytestmark = pytest.mark.timeout(90)

#: a reader that leaves at once, long before Python has started to write:
#: the command's first flush meets a pipe with no reader
CLOSED_READER = "true"


def pipeline(command: str, reader: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``firmware-host COMMAND | READER`` in bash; the status is the command's."""
    fh = f"{shlex.quote(sys.executable)} -m firmware_host"
    return subprocess.run(
        ["bash", "-c", f"set -o pipefail; {fh} {command} | {reader}"],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture(scope="module")
def runtime() -> Iterator[tuple[Path, Path]]:
    """A running runtime on emulated boards: (its working directory, its socket)."""
    with cli_runtime("env-sensor:3", "fh-pipe-") as running:
        yield running


COMMANDS = [
    "status",
    "status --json",
    "buffers",
    "flush",
    "devices",
    "boards",
    "boards --json",
    "plugins",
    "config sample",
    "emulate env-sensor -n 2 --duration 20",
]


def readers(command: str) -> tuple[str, ...]:
    """A reader that left at once; and ``head -1``, except for emulate, which writes
    its paths once, then runs: after ``head -1`` took them, nothing tells it to stop."""
    return (CLOSED_READER,) if command.startswith("emulate") else (CLOSED_READER, "head -1")


Piped = tuple[subprocess.CompletedProcess[str], float]


@pytest.fixture(scope="module")
def pipelines(runtime: tuple[Path, Path]) -> Iterator[dict[tuple[str, str], Future[Piped]]]:
    """Every (command, reader) pipeline, all started at once: they are independent,
    so the module waits for the slowest, not for their sum. Each gives its result
    and its wall time."""
    work, sock = runtime

    def timed(command: str, reader: str) -> Piped:
        if command.split()[0] in ("status", "buffers", "flush"):
            command += f" --control {shlex.quote(str(sock))}"
        started = time.monotonic()
        res = pipeline(command, reader, work)
        return res, time.monotonic() - started

    with ThreadPoolExecutor(max_workers=len(COMMANDS) * 2) as pool:
        yield {(c, r): pool.submit(timed, c, r) for c in COMMANDS for r in readers(c)}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_reader_that_left_ends_the_command_quietly(
    pipelines: dict[tuple[str, str], Future[Piped]], command: str
) -> None:
    res, took = pipelines[(command, CLOSED_READER)].result(timeout=60)
    assert (res.returncode, res.stderr) == (0, ""), command
    # emulate stops at its first write, not at --duration
    assert took < 15
    if command.startswith("emulate"):
        return
    # and `| head -1`, whether or not the write comes after head left: quiet either way
    res, _ = pipelines[(command, "head -1")].result(timeout=60)
    assert (res.returncode, res.stderr) == (0, ""), command
    assert res.stdout.count("\n") == 1


def test_only_a_stdout_without_reader_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler re-raises a broken pipe that is not stdout's (a socket to
    the runtime): it asks stdout itself whether its reader left."""
    from firmware_host.cli.brokenpipe import stdout_reader_gone

    read, write = os.pipe()
    with os.fdopen(write, "w") as out:
        monkeypatch.setattr(sys, "stdout", out)
        assert not stdout_reader_gone()  # a reader is there
        os.close(read)
        assert stdout_reader_gone()
