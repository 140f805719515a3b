"""``firmware-host tail`` as a user runs it: a subprocess against a runtime
on emulated boards (ptys), in shell pipelines, stopped with Ctrl-C, and with
nothing to connect to."""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, cli, cli_popen, cli_runtime

pytestmark = pytest.mark.timeout(60)

FH = f"{shlex.quote(sys.executable)} -m firmware_host"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def runtime() -> Iterator[tuple[Path, Path]]:
    """A ``firmware-host run`` on three emulated env sensors (10 frames/s each)."""
    with cli_runtime("env-sensor:3", "fh-tail-") as running:
        yield running


def pipeline(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``firmware-host COMMAND`` in bash with pipefail: the status is the command's."""
    return subprocess.run(
        ["bash", "-c", f"set -o pipefail; {FH} {command}"],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_tail_json_into_head_ends_quietly_after_three_records(runtime: tuple[Path, Path]) -> None:
    work, sock = runtime
    res = pipeline(f"tail --json --control {shlex.quote(str(sock))} | head -3", work)
    assert (res.returncode, res.stderr) == (0, "")
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(records) == 3
    for r in records:
        assert r["device"].startswith("env-sensor-") and r["type"] == 2
        assert set(r["fields"]) == {"temperature", "humidity", "pressure"}


@pytest.mark.parametrize("args", ["--json", "", "--hex env-sensor-2"])
def test_tail_into_a_reader_that_already_left_ends_quietly(runtime: tuple[Path, Path], args: str) -> None:
    work, sock = runtime
    started = time.monotonic()
    res = pipeline(f"tail {args} --control {shlex.quote(str(sock))} | true", work)
    assert (res.returncode, res.stderr) == (0, "")
    assert time.monotonic() - started < 15


def test_tail_prints_a_human_line_per_frame_of_the_devices_named(runtime: tuple[Path, Path]) -> None:
    work, sock = runtime
    res = pipeline(f"tail env-sensor-1 --control {shlex.quote(str(sock))} | head -4", work)
    assert (res.returncode, res.stderr) == (0, "")
    lines = res.stdout.splitlines()
    assert len(lines) == 4
    for line in lines:
        assert re.fullmatch(
            r"\d\d:\d\d:\d\d\.\d{3}  env-sensor-1  seq \d+  type 2  "
            r"temperature=[-\d.e+]+ humidity=[-\d.e+]+ pressure=[-\d.e+]+",
            line,
        ), line
    hexed = pipeline(f"tail env-sensor-0 --hex --control {shlex.quote(str(sock))} | head -1", work)
    assert hexed.returncode == 0
    assert re.search(r" pressure=[-\d.e+]+  ([0-9a-f]{2} ){11}[0-9a-f]{2}$", hexed.stdout.strip()), hexed.stdout


def test_ctrl_c_ends_tail_quietly(runtime: tuple[Path, Path]) -> None:
    work, sock = runtime
    proc = cli_popen("tail", "--control", str(sock), cwd=work)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready and proc.stdout.readline()  # it is streaming
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (proc.returncode, err) == (0, "")


def test_tail_errors_are_one_line_with_the_design_exit_status(runtime: tuple[Path, Path], tmp_path: Path) -> None:
    _, sock = runtime
    res = cli("tail", "nope", "--control", str(sock))
    assert res.returncode == 2
    assert res.stderr.startswith("firmware-host: unknown device 'nope' (known: env-sensor-0, env-sensor-1")
    assert res.stderr.count("\n") == 1
    missing = str(tmp_path / "none.sock")
    res = cli("tail", "--control", missing)
    status = cli("status", "--control", missing)
    assert res.returncode == status.returncode == 3
    assert res.stderr == status.stderr  # the same line as every control command
    assert res.stderr.count("\n") == 1 and "no runtime is listening on" in res.stderr


async def test_tail_of_a_silent_device_notices_that_its_reader_left(fh_board, fh_runtime, short_tmp: Path) -> None:
    """No frame to write, so no broken pipe to hit: it looks at stdout while idle."""
    board = fh_board("fh1")
    sock = str(short_tmp / "ctl.sock")
    async with fh_runtime({"devices": [board.config("quiet")]}, control_path=sock) as rt:
        await rt.wait_state("quiet", "connected")
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            f"set -o pipefail; {FH} tail quiet --control {shlex.quote(sock)} | true",
            env=ENV,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 20)
        assert (proc.returncode, err) == (0, b"")
        assert time.monotonic() - started < 15


async def test_tail_says_when_the_runtime_stopped_and_exits_0(fh_board, fh_runtime, short_tmp: Path) -> None:
    board = fh_board("fh1")
    sock = str(short_tmp / "ctl.sock")
    async with fh_runtime({"devices": [board.config("b")]}, control_path=sock) as rt:
        await rt.wait_state("b", "connected")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "firmware_host",
            "tail",
            "--json",
            "--control",
            sock,
            env=ENV,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        async with board.streaming(rate=50):  # until it shows it is connected
            first = await asyncio.wait_for(proc.stdout.readline(), 20)
        await rt.wait_frames("b", board.sent)
        await rt.shutdown()
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    lines = [json.loads(x) for x in (first + out).splitlines()]
    assert lines[-1] == {"end": "stopped"}
    seqs = [x["seq"] for x in lines[:-1]]
    assert seqs == list(range(seqs[0], board.sent))  # every frame from the first it saw
    assert proc.returncode == 0
    assert err.decode() == "firmware-host: tail: the runtime stopped\n"


def test_human_lines_show_fields_text_or_a_payload_summary_and_never_a_control_character() -> None:
    from firmware_host.cli.tail import render_record

    def rec(**kw: object) -> bytes:
        return json.dumps({"device": "d", "seq": 7, "type": 1, "ts": 0.25, **kw}).encode()

    clock = time.strftime("%H:%M:%S", time.localtime(0.25)) + ".250"
    assert render_record(rec(payload="AAECAwQFBgcICQoLDA0ODxAR")) == (
        f"{clock}  d  seq 7  type 1  18 bytes 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f…"
    )
    assert render_record(rec(payload="AAE=", fields={"v": [0.1, 2], "s": "ok", "n": None}), as_hex=True) == (
        f"{clock}  d  seq 7  type 1  v=[0.1,2] s=ok n=null  00 01"
    )
    # a device's text cannot drive the terminal: escapes are shown, not sent
    text = render_record(
        json.dumps({"device": "g\x1b[2J", "seq": 1, "type": None, "ts": 0.25, "text": "a\x1b]0;x\x07b"}).encode()
    )
    assert text == f"{clock}  g\\x1b[2J  seq 1  a\\x1b]0;x\\x07b"
    assert render_record(b"not json \x1b") == "not json \\x1b"
