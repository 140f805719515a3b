"""Issue 2: a bad config is one clear line naming file and key, exit 2, no traceback."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from subprocess import CompletedProcess

import pytest

from tests.conftest import cli

pytestmark = pytest.mark.timeout(60)

GOOD_DEVICE = '[[devices]]\nname = "a"\nport = "/dev/null"\ncodec = "fh1"\n'

CASES = {
    "unknown_key": ("[buffer]\ncapcity = 10\n", ["capcity"]),
    "wrong_type": ('[buffer]\ncapacity = "big"\n', ["buffer.capacity"]),
    "duplicate_device": (GOOD_DEVICE + GOOD_DEVICE, ["duplicate", "'a'"]),
    "unknown_codec": ('[[devices]]\nname = "a"\nport = "/dev/null"\ncodec = "morse"\n', ["codec", "morse"]),
    "toml_syntax": ("[buffer\ncapacity = 1\n", ["TOML"]),
    "unknown_board": ('[[devices]]\nname = "a"\nport = "/dev/null"\nboard = "nope"\n', ["board", "nope"]),
}


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[CompletedProcess[str]]]]:
    """``run -c bad.toml`` for every case, each in its own directory, all started at
    once: they are independent, so the module waits for the slowest, not the sum."""

    def run(case: str) -> CompletedProcess[str]:
        work = tmp_path_factory.mktemp(case)
        path = work / "bad.toml"
        path.write_text(CASES[case][0])
        return cli("run", "-c", str(path), "--control", str(work / "s"), cwd=work)

    with ThreadPoolExecutor(len(CASES)) as pool:
        yield {case: pool.submit(run, case) for case in CASES}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_exit_2_one_line(bad_runs: dict[str, Future[CompletedProcess[str]]], case: str) -> None:
    _, needles = CASES[case]
    result = bad_runs[case].result(timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "bad.toml" in lines[0]
    for needle in needles:
        assert needle in lines[0]


def test_missing_config_file(tmp_path):
    result = cli("run", "-c", str(tmp_path / "missing.toml"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "missing.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_sink_option_is_a_usage_error(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[[sinks]]\ntype = "jsonl"\n')  # no path
    result = cli(
        "run", "-c", str(path), "--allow-empty", "--duration", "0", "--control", str(tmp_path / "s"), cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "path" in result.stderr and "Traceback" not in result.stderr
