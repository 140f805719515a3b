"""Exit codes that follow the contract (0 ok, 1 failure, 2 usage or config
error): a ``--summary`` that could not be written and a control socket path
too long for bind() are refused at start-up, before anything runs (exit 2,
one line); a ``flush --timeout`` that gives up exits 1."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import time
from pathlib import Path

import pytest

from firmware_host import VirtualPort
from tests.conftest import cli, cli_popen
from tests.test_cli_control import cli as acli
from tests.test_cli_control import connected, packets, run_runtime, workdir

pytestmark = pytest.mark.timeout(60)
__all__ = ["workdir"]  # the fixture, used by name


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("firmware-host: ") and "Traceback" not in stderr, stderr
    return lines[0]


def test_summary_into_a_missing_directory_fails_at_start(tmp_path: Path) -> None:
    started = time.monotonic()
    result = cli(
        "run",
        "--emulate",
        "--duration",
        "20",
        "--summary",
        str(tmp_path / "missing" / "s.json"),
        "--control",
        str(tmp_path / "s"),
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "directory" in one_line(result.stderr) and "does not exist" in result.stderr
    assert time.monotonic() - started < 15  # not after the 20 s run
    assert not (tmp_path / "frames.jsonl").exists()  # nothing ran


def test_a_control_path_too_long_fails_before_the_emulator_starts(tmp_path: Path) -> None:
    long = str(tmp_path / ("x" * 120))
    result = cli("run", "--emulate", "--duration", "5", "--control", long, cwd=tmp_path)
    assert result.returncode == 2
    assert "longer than 107 bytes" in one_line(result.stderr)
    assert not (tmp_path / "frames.jsonl").exists()


def test_summary_written_when_the_directory_exists(tmp_path: Path) -> None:
    result = cli(
        "run",
        "--emulate",
        "--duration",
        "0.3",
        "-q",
        "--summary",
        "s.json",
        "--control",
        str(tmp_path / "s"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "s.json").exists()


@pytest.mark.skipif(importlib.util.find_spec("aiomqtt") is None, reason="needs the [mqtt] extra (aiomqtt)")
def test_flush_that_gives_up_exits_1(workdir: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on: every write fails
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = workdir / "fh.toml"
    cfg.write_text(
        "[buffer]\nflush_interval = 0\n[shutdown]\ngrace = 0.5\n"
        f'[[devices]]\nname = "dev0"\nport = "{workdir / "dev0"}"\ncodec = "fh1"\n'
        f'[plugins.mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
    )

    async def main() -> None:
        vp = VirtualPort(str(workdir / "dev0"))
        async with run_runtime(workdir, cfg) as run:
            await run.status_until(connected("dev0"))
            await vp.write(packets(range(10)))
            await run.status_until(lambda s: s["devices"]["dev0"]["frames"] == 10)
            text = await acli("flush", "--timeout", "0.2", control=run.sock)
            assert text.rc == 1, text.err
            assert "flush incomplete" in text.out
            as_json = await acli("flush", "--timeout", "0.2", "--json", control=run.sock)
            assert as_json.rc == 1 and '"incomplete": true' in as_json.out, as_json
        vp.close()

    asyncio.run(main())


def test_emulate_dir_on_an_existing_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    result = cli("emulate", "nucleo-imu", "--dir", str(tmp_path / "afile"), "--duration", "0.1", cwd=tmp_path)
    assert result.returncode == 2
    assert "exists and is not a directory" in one_line(result.stderr)


@pytest.mark.skipif(importlib.util.find_spec("aiomqtt") is None, reason="needs the [mqtt] extra (aiomqtt)")
def test_spool_export_into_a_reader_that_leaves_ends_quietly(tmp_path: Path) -> None:
    # a spool left with frames: the only sink (MQTT on a port nobody serves) never takes them
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "c.toml").write_text(
        '[buffer]\nspool = "s.db"\nspool_interval = 0.05\n[shutdown]\ngrace = 0.3\n'
        f'[plugins.mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
    )
    made = cli(
        "run", "-c", "c.toml", "--emulate", "nucleo-imu:8", "--duration", "1", "-q", "--control", "s", cwd=tmp_path
    )
    assert "stay in the spool" in made.stderr, made.stderr
    # more frames than one export chunk (5000): a write after the reader left fails
    assert int(made.stderr.split(" frames stay in the spool")[0].split()[-1]) > 5000, made.stderr
    assert (tmp_path / "s.db").exists()
    proc = cli_popen("spool", "export", "s.db", cwd=tmp_path)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        first = proc.stdout.readline()  # more than a pipe holds is on its way: the writer blocks
        # (which of the eight boards' frames is oldest depends on timing)
        assert first.startswith('{"device": "nucleo-imu-'), first
    finally:
        proc.stdout.close()  # the reader leaves, like `| head -1`
        code = proc.wait(timeout=30)
    with proc.stderr:
        assert (code, proc.stderr.read()) == (0, "")


@pytest.mark.parametrize(
    "args",
    [
        ("run", "--emulate", "--duration", "nan"),
        ("request", "imu0", "--timeout", "nan"),
        ("flush", "--timeout", "inf"),
        ("stop", "--wait", "--timeout", "nan"),
        ("emulate", "nucleo-imu", "--ack-delay", "nan"),
    ],
)
def test_a_number_that_is_not_finite_is_a_usage_error(args: tuple[str, ...]) -> None:
    # in-process (click's runner): refused while the options are read, before anything starts
    from click.testing import CliRunner

    from firmware_host.cli.commands import main

    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 2, (result.output, result.exception)
    assert "is not a finite number" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("closed", [1, 0])
def test_a_run_started_with_a_standard_descriptor_closed_runs_and_summarises(tmp_path: Path, closed: int) -> None:
    """`firmware-host run ... >&-` (or `<&-`): the closed descriptor is /dev/null
    for the run. It used to be the first file the run opened (uvloop then
    aborted on it, exit 134), or sys.stdout was None (an AttributeError)."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    summary = tmp_path / "summary.json"
    args = ["run", "--emulate", "env-sensor:1", "--duration", "0.5", "--control", str(tmp_path / "c.sock")]
    result = subprocess.run(
        [sys.executable, "-m", "firmware_host", *args, "--summary", str(summary)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=30,
        preexec_fn=lambda: os.close(closed),
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Assertion" not in result.stderr
    assert json.loads(summary.read_text())["devices"]["env-sensor-0"]["frames"] > 0
