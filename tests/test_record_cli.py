"""``firmware-host record`` and ``emulate --replay`` as a user runs them: a
port recorded standalone and a runtime's device through its control socket,
replayed through a runtime to the same frames, a faulted replay whose printed
expectation the runtime meets exactly, and mistakes as one line, exit 2."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

from firmware_host.codecs import make_codec
from firmware_host.recordfile import Header, encode_data, encode_header, parse_recording
from firmware_host.testing import assert_accounting
from tests.conftest import REPO, cli, read_jsonl

pytestmark = pytest.mark.timeout(45)

FAST = {"backoff_initial": 0.02, "backoff_max": 0.05}
EXPECT = re.compile(r"expect: frames=(\d+) rejected=(\d+) gaps=(\d+)")


async def spawn(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "firmware_host",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def line_of(stream: asyncio.StreamReader | None, timeout: float = 20) -> str:
    assert stream is not None
    line = await asyncio.wait_for(stream.readline(), timeout)
    assert line, "the command ended without saying anything"
    return line.decode().strip()


async def finish(proc: asyncio.subprocess.Process, timeout: float = 20) -> tuple[int, str]:
    _, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


def counters(status: dict[str, Any], device: str) -> tuple[int, int, int]:
    d = status["devices"][device]
    return d["frames"], d["rejected"], d["gaps"]


def decoded(codec: str, data: bytes) -> tuple[list[tuple[int, int | None, bytes | None]], int, int]:
    probe = make_codec(codec, "probe")
    frames = probe.feed(data, 0.0)
    return [(f.seq, f.type, f.payload) for f in frames], probe.rejected, probe.gaps


async def test_record_a_port_standalone_then_replay_it_through_a_runtime(fh_board, fh_runtime, tmp_path: Path):
    board = fh_board("fh1")
    out = tmp_path / "port.fhrec"
    proc = await spawn("record", board.path, "-o", str(out), "--codec", "fh1", "--baudrate", "921600")
    assert "recording" in await line_of(proc.stderr)  # the port is open: what is written now is read
    written = b""
    for i in range(4):
        written += await board.send_frames(8)
        if i == 1:
            written += await board.noise(10)
        await asyncio.sleep(0.02)
    written += await board.send_frames(2, seq=500)
    assert await board.drain(10)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    code, err = await finish(proc)
    assert code == 0, err
    assert "recorded" in err and "stopped (signal)" in err
    rec = parse_recording(out.read_bytes())
    assert rec.header.port == board.path and rec.header.codec == "fh1" and rec.header.baudrate == 921600
    assert b"".join(d for _, d in rec.chunks) == written  # every byte, in order
    assert rec.end is not None and rec.end["reason"] == "stopped (signal)" and rec.end["lost_chunks"] == 0
    want, rejected, gaps = decoded("fh1", written)

    replay = fh_board.replay(out, speed=0)
    assert (replay.expected.frames, replay.expected.rejected, replay.expected.gaps) == (len(want), rejected, gaps)
    sink = tmp_path / "replay.jsonl"
    config = {"devices": [replay.config("r", **FAST)], "sinks": [{"type": "jsonl", "path": str(sink)}]}
    async with fh_runtime(config) as rt:
        await replay.play()
        await rt.wait_frames("r", len(want))
        summary = await rt.shutdown()
    assert counters(summary.status, "r") == (34, 1, 1)  # the noise rejected, the seq jump a gap
    got = [(r["seq"], r["type"], base64.b64decode(r["payload"])) for r in read_jsonl(sink)]
    assert got == want


async def test_record_a_port_with_a_board_file(fh_board, tmp_path: Path):
    """`record PORT --board x.toml`: a board of your own by its file; the recording names the file."""
    shipped = Path(__file__).resolve().parents[1] / "boards" / "env-sensor.toml"
    mine = tmp_path / "mine.toml"
    mine.write_text(shipped.read_text().replace('name = "env-sensor"', 'name = "mine"'))
    board = fh_board("fh1")
    out = tmp_path / "b.fhrec"
    proc = await spawn("record", board.path, "-o", str(out), "--board", str(mine))
    assert "recording" in await line_of(proc.stderr)
    written = await board.send_frames(3)
    assert await board.drain(10)
    proc.send_signal(signal.SIGINT)
    code, err = await finish(proc)
    assert code == 0, err
    rec = parse_recording(out.read_bytes())
    assert (rec.header.board, rec.header.codec) == (str(mine), "fh1")
    assert b"".join(d for _, d in rec.chunks) == written


async def test_record_a_device_through_the_control_socket_and_replay_it_with_faults_as_printed(
    fh_board, fh_runtime, short_tmp: Path, tmp_path: Path
):
    board = fh_board("fh1")
    sock = str(short_tmp / "ctl.sock")
    out = tmp_path / "dev.fhrec"
    async with fh_runtime({"devices": [board.config("b", **FAST)]}, control_path=sock) as rt:
        await rt.wait_state("b", "connected")
        proc = await spawn("record", "b", "-o", str(out), "--control", sock)
        assert "recording b" in await line_of(proc.stderr)
        for _ in range(10):
            await board.send_frames(20)
            await asyncio.sleep(0.01)
        await rt.wait_frames("b", 200)
        await rt.shutdown()  # the runtime ends the recording; the client stops by itself
        code, err = await finish(proc)
    assert code == 0, err
    assert "recorded" in err and "the runtime stopped" in err
    rec = parse_recording(out.read_bytes())
    assert rec.header.device == "b" and rec.end is not None and rec.end["reason"] == "the runtime stopped"
    assert rec.nbytes == board.bytes_written

    emu = await spawn(
        "emulate", "--replay", str(out), "--speed", "max",
        "--noise", "0.05", "--corrupt", "0.05", "--drop", "0.05", "--skip", "0.05", "--seed", "5",
        "--dir", str(short_tmp / "emu"),
    )  # fmt: skip
    try:
        name, path = (await line_of(emu.stdout)).split()
        found = EXPECT.match(await line_of(emu.stdout))
        assert name == "b" and found is not None
        frames, rejected, gaps = (int(x) for x in found.groups())
        assert 0 < frames < 200 and rejected > 0 and gaps > 0  # the faults did something
        async with fh_runtime({"devices": [{"name": "b", "port": path, "codec": "fh1", **FAST}]}) as rt:
            status = await rt.wait_until(lambda s: counters(s, "b")[:2] >= (frames, rejected), timeout=20)
            assert counters(status, "b") == (frames, rejected, gaps)
            assert_accounting(await rt.status())
    finally:
        if emu.returncode is None:
            emu.send_signal(signal.SIGTERM)
    code, err = await finish(emu)
    assert code == 0, err
    assert "replayed" in err


async def test_recording_an_unknown_device_is_one_line_exit_2(fh_board, fh_runtime, short_tmp: Path, tmp_path: Path):
    board = fh_board("fh1")
    sock = str(short_tmp / "ctl.sock")
    async with fh_runtime({"devices": [board.config("b", **FAST)]}, control_path=sock):
        proc = await spawn("record", "nope", "-o", str(tmp_path / "x"), "--control", sock)
        code, err = await finish(proc)
    assert code == 2
    assert err.strip().splitlines() == ["firmware-host: record: unknown device 'nope' (known: b)"]
    assert not (tmp_path / "x").exists()  # a refused request leaves no file


def test_a_truncated_recording_is_said_and_replayed_as_far_as_it_goes(tmp_path: Path):
    wire = make_codec("fh1", "x")
    header = Header(device="x", port="/dev/x", baudrate=115200, codec="fh1")
    data = encode_header(header) + b"".join(encode_data(i, wire.encode(0, i, b"ab")) for i in range(5))
    path = tmp_path / "cut.fhrec"
    path.write_bytes(data[:-4])
    done = cli("emulate", "--replay", str(path), "--speed", "0", "--duration", "0.3", "--dir", str(tmp_path / "e"))
    assert done.returncode == 0, done.stderr
    assert "expect: frames=4 rejected=0 gaps=0" in done.stdout
    assert "cut short" in done.stderr


#: (arguments, what the one stderr line says); {tmp} is the case's own directory
MISTAKES: list[tuple[list[str], str]] = [
    (["emulate", "--replay", "{tmp}/missing.fhrec"], "emulate --replay: cannot read {tmp}/missing.fhrec: "),
    (["emulate", "--replay", "{tmp}/junk"], "emulate --replay: not a firmware-host recording (no FHREC header)"),
    (["emulate", "--replay", "{tmp}/ok.fhrec", "--rate", "5"], "--rate does not apply to a replay"),
    (["emulate", "--replay", "{tmp}/ok.fhrec", "--speed", "fast"], "speed must be a number > 0"),
    (["emulate", "--replay", "{tmp}/ok.fhrec", "--codec", "bogus"], "unknown codec 'bogus'"),
    (["emulate", "nucleo-imu", "--replay", "{tmp}/ok.fhrec"], "--replay plays a recording, not a board"),
    (["emulate"], "give a BOARD, or --replay FILE"),
    (["emulate", "fh1", "--speed", "2"], "--speed goes with --replay FILE"),
    (["record", "{tmp}/no-such-tty", "-o", "{tmp}/nodir/x.fhrec"], "no such directory"),
    (["record", "dev0", "-o", "{tmp}/nodir/x.fhrec"], "no such directory"),
    (["record", "dev0", "-o", "{tmp}"], "is a directory"),  # the same in both modes
    (["record", "{tmp}/no-such-tty", "-o", "{tmp}"], "is a directory"),
    (["record", "dev0", "-o", "{tmp}/x", "--codec", "fh1"], "--codec is for a PORT"),
    (["record", "/dev/ttyX", "-o", "{tmp}/x", "--board", "nope"], "unknown board 'nope'"),
    (["record", "/dev/ttyX", "-o", "{tmp}/x", "--board", "{tmp}/gone.toml"], "gone.toml"),
]


@pytest.fixture(scope="module")
def mistaken_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[tuple[Path, Future[CompletedProcess[str]]]]]:
    """Every mistake's CLI, each in its own directory, all started at once: they are
    independent, so the module waits for the slowest, not for their sum."""

    def run(tmp: Path, args: list[str]) -> CompletedProcess[str]:
        return cli(*(a.format(tmp=tmp) for a in args))

    with ThreadPoolExecutor(len(MISTAKES)) as pool:
        runs = []
        for args, _ in MISTAKES:
            tmp = tmp_path_factory.mktemp("mistake")
            (tmp / "junk").write_bytes(b"hello\n")
            (tmp / "ok.fhrec").write_bytes(encode_header(Header("x", None, None, "fh1")))
            runs.append((tmp, pool.submit(run, tmp, args)))
        yield runs


@pytest.mark.parametrize(("args", "message"), MISTAKES)
def test_mistakes_are_one_line_exit_2(
    mistaken_runs: list[tuple[Path, Future[CompletedProcess[str]]]], args: list[str], message: str
) -> None:
    tmp_path, future = mistaken_runs[MISTAKES.index((args, message))]
    done = future.result(timeout=60)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message.format(tmp=tmp_path) in lines[0], done.stderr


def test_recording_without_a_runtime_exits_3(short_tmp: Path, tmp_path: Path):
    done = cli("record", "dev0", "-o", str(tmp_path / "x"), "--control", str(short_tmp / "none.sock"))
    assert done.returncode == 3
    assert "no runtime is listening" in done.stderr


def test_recording_a_port_that_cannot_open_exits_1(tmp_path: Path):
    done = cli("record", str(tmp_path / "no-such-tty"), "-o", str(tmp_path / "x"))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "cannot open" in done.stderr
    assert os.path.exists(tmp_path / "x") is False
