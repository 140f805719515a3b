"""docs/testing.md's example, run the way a user's project runs it: a fresh
pytest process that loads the kit through the installed pytest11 entry point
(no conftest). The example's text comes from the docs, so they cannot drift."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)
pytest_plugins = ["pytester"]

DOCS = Path(__file__).resolve().parents[1] / "docs" / "testing.md"
EXAMPLE = re.compile(r"<!-- fh-example:start -->\s*```python\n(.*?)```\s*<!-- fh-example:end -->", re.S)
#: one subprocess run, startup included; far above the ~1 s it takes
RUN_TIMEOUT = 25.0
#: hypothesis's plugin costs ~1.5 s per session (it imports hypothesis at the
#: summary); it is not part of what these runs check
ARGS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")


def docs_example() -> str:
    found = EXAMPLE.findall(DOCS.read_text(encoding="utf-8"))
    assert len(found) == 1, "docs/testing.md must hold exactly one fh-example block"
    return found[0]


def test_the_example_is_short():
    code = [line for line in docs_example().splitlines() if line.strip()]
    assert len(code) < 20, f"the quick-start example grew to {len(code)} lines"


def test_docs_example_passes_emulated(pytester: pytest.Pytester):
    pytester.makepyfile(test_my_plugin=docs_example())
    result = pytester.runpytest_subprocess(*ARGS, timeout=RUN_TIMEOUT)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["firmware-host: fh_device = fh1 (fh1), emulated (no --fh-port)"])


async def test_docs_example_passes_on_a_port_given_with_fh_port(pytester: pytest.Pytester, fh_board):
    """--fh-port: the example opens a port it did not create. Here that
    "hardware" is a pty streamed from this process, while the user's pytest
    runs in a subprocess."""
    pytester.makepyfile(test_my_plugin=docs_example())
    board = fh_board("nucleo-imu", name="bench0")
    async with board.streaming(rate=500):
        result = await asyncio.to_thread(
            pytester.runpytest_subprocess,
            *ARGS,
            "--fh-port",
            board.path,
            "--fh-board",
            "nucleo-imu",
            timeout=RUN_TIMEOUT,
        )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"firmware-host: fh_device = nucleo-imu (fh1), hardware at {board.path}"])


def test_hardware_marker_skips_cleanly_and_options_are_checked(pytester: pytest.Pytester, tmp_path):
    # in-process runs (fast): these check options and hooks, not how the kit is loaded
    pytester.makepyfile(
        test_hil_bench="""
        import pytest

        @pytest.mark.fh_hardware
        def test_needs_the_board(fh_device):
            assert not fh_device.emulated

        def test_runs_anywhere(fh_device):
            assert fh_device.emulated
    """
    )
    result = pytester.runpytest(*ARGS, "--strict-markers", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*needs real hardware: run pytest with --fh-port PATH (and --fh-board NAME)*"])

    result = pytester.runpytest(*ARGS, "--fh-board", "no-such-board")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--fh-board: unknown board or codec 'no-such-board'*"])

    missing = tmp_path / "ttyACM9"
    result = pytester.runpytest(*ARGS, "--fh-port", str(missing), "-k", "needs_the_board")
    result.assert_outcomes(errors=1, deselected=1)
    result.stdout.fnmatch_lines([f"*--fh-port {missing}: no such device (is the board plugged in?)*"])
