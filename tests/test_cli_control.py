"""The control plane end to end: a real ``firmware-host run`` subprocess on pty
devices, driven only through the real CLI (``buffers``, ``flush``, ``status``,
``stop``, ``devices add/remove``) as subprocesses.

There is no event to await across processes, so readiness is polled with
``status --json`` in a bounded loop (each poll is a whole CLI process, which
paces the loop) under an overall deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from firmware_host import VirtualPort, encode_packet
from tests.conftest import CLI_ENV, cli_async

pytestmark = pytest.mark.timeout(60)

ENV = CLI_ENV
DEADLINE = 20.0


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.rc == 0, self.err
        return json.loads(self.out)


async def cli(*args: str, control: str | None = None, cwd: Path | None = None) -> Result:
    extra = ["--control", control] if control else []
    return Result(*await cli_async(*args, *extra, timeout=30, cwd=cwd))


@pytest.fixture
def workdir() -> Iterator[Path]:
    # short: the socket path must fit the 107-byte Unix socket limit
    d = tempfile.mkdtemp(prefix="fhcli")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def write_config(workdir: Path, devices: list[str], capacity: int = 100) -> Path:
    lines = [
        f"[buffer]\ncapacity = {capacity}\nflush_interval = 0\n",
        "[shutdown]\ngrace = 10\n",
        f'[[sinks]]\ntype = "jsonl"\npath = "{workdir / "frames.jsonl"}"\n',
    ]
    for name in devices:
        lines.append(f'[[devices]]\nname = "{name}"\nport = "{workdir / name}"\ncodec = "fh1"\n')
    cfg = workdir / "fh.toml"
    cfg.write_text("\n".join(lines))
    return cfg


class Run:
    """A ``firmware-host run`` subprocess and its control socket."""

    def __init__(self, proc: asyncio.subprocess.Process, sock: str, workdir: Path) -> None:
        self.proc, self.sock, self.workdir = proc, sock, workdir

    async def status_until(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        end = time.monotonic() + DEADLINE
        last: Result | None = None
        while time.monotonic() < end:
            if self.proc.returncode is not None:
                pytest.fail(f"run exited {self.proc.returncode}: {self.stderr()}")
            last = await cli("status", "--json", control=self.sock)
            if last.rc == 0:
                status: dict[str, Any] = json.loads(last.out)
                if predicate(status):
                    return status
        pytest.fail(f"condition not reached in {DEADLINE}s; last status: {last}")

    async def wait(self) -> int:
        return await asyncio.wait_for(self.proc.wait(), 30)

    def stderr(self) -> str:
        return (self.workdir / "run.err").read_text()

    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.workdir / "summary.json").read_text())
        return data


@contextlib.asynccontextmanager
async def run_runtime(workdir: Path, cfg: Path, sock: str | None = None) -> AsyncIterator[Run]:
    sock = sock or str(workdir / "ctl.sock")
    with open(workdir / "run.out", "wb") as out, open(workdir / "run.err", "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "firmware_host",
            "run",
            "-c",
            str(cfg),
            "--allow-empty",  # some start empty and add devices over the socket
            "--control",
            sock,
            "--summary",
            str(workdir / "summary.json"),
            "-q",
            env=ENV,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    run = Run(proc, sock, workdir)
    try:
        yield run
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def sink_seqs(workdir: Path, device: str) -> list[int]:
    path = workdir / "frames.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted(r["seq"] for r in records if r["device"] == device)


def packets(seqs: range) -> bytes:
    return b"".join(encode_packet(1, s, s.to_bytes(4, "little") * 2) for s in seqs)


def assert_law(status: dict[str, Any]) -> None:
    for name, d in status["devices"].items():
        assert d["frames"] == d["flushed"] + d["dropped"] + d["buffered"], (name, d)


def one_line_error(res: Result) -> str:
    """The CLI's own errors: exactly one line on stderr, nothing on stdout, no traceback."""
    lines = res.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("firmware-host: "), res.err
    assert "Traceback" not in res.err and res.out == ""
    return lines[0]


def connected(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda s: (
        name in s["devices"] and s["devices"][name]["state"] == "connected" and not s["devices"][name]["removed"]
    )


# -- 1. the drop-oldest scenario through the real CLI ---------------------------------------


def test_drop_oldest_flush_status_and_stop(workdir: Path) -> None:
    async def main() -> None:
        vp = VirtualPort(str(workdir / "dev0"))
        cfg = write_config(workdir, ["dev0"], capacity=100)
        async with run_runtime(workdir, cfg) as run:
            await run.status_until(connected("dev0"))
            data = packets(range(1000))
            await vp.write(data)
            await run.status_until(lambda s: s["devices"]["dev0"]["frames"] == 1000)

            buffers, status = await asyncio.gather(
                cli("buffers", "--json", control=run.sock), cli("status", "--json", control=run.sock)
            )
            b = buffers.json()
            assert (b["capacity"], b["depth"], b["dropped"]) == (100, 100, 900)
            assert (b["devices"]["dev0"]["depth"], b["devices"]["dev0"]["dropped"]) == (100, 900)
            assert b["devices"]["dev0"]["oldest_age"] >= 0
            dev = status.json()["devices"]["dev0"]
            assert dev["bytes"] == len(data)
            assert {k: dev[k] for k in ("frames", "rejected", "gaps", "flushed", "dropped", "buffered")} == {
                "frames": 1000,
                "rejected": 0,
                "gaps": 0,
                "flushed": 0,
                "dropped": 900,
                "buffered": 100,
            }

            # the human tables: a header line, then aligned columns
            human = await cli("buffers", control=run.sock)
            assert human.rc == 0
            head, columns, row = human.out.splitlines()
            assert head == "buffer 100/100 frames, 800 bytes, 900 dropped"
            assert columns.split() == ["device", "depth", "dropped", "oldest"]
            assert row.split()[:3] == ["dev0", "100", "900"]
            assert columns.index("dropped") + len("dropped") == row.index("900") + 3  # numbers right-aligned

            flushed = await cli("flush", "--json", control=run.sock)
            assert flushed.json() == {
                "flushed": 100,
                "devices": {"dev0": 100},
                "sinks": [{"name": "jsonl", "sent": 100, "done": True}],
                "incomplete": False,
            }
            assert sink_seqs(workdir, "dev0") == list(range(900, 1000))

            await vp.write(packets(range(1000, 1050)))
            await run.status_until(lambda s: s["devices"]["dev0"]["frames"] == 1050)
            stop = await cli("stop", control=run.sock)
            assert stop.rc == 0 and "stopping" in stop.out
            assert await run.wait() == 0, run.stderr()
        final = run.summary()
        assert_law(final)
        dev = final["devices"]["dev0"]
        assert (dev["frames"], dev["flushed"], dev["dropped"], dev["buffered"], dev["lost"]) == (1050, 150, 900, 0, 0)
        assert sink_seqs(workdir, "dev0") == list(range(900, 1050))
        assert not os.path.exists(run.sock)  # removed on exit
        vp.close()

    asyncio.run(main())


# -- 2. garbage on the socket ------------------------------------------------------------------


async def raw_exchange(path: str, data: bytes, *, half_close: bool = False) -> bytes:
    """Send ``data`` (while reading: the server may answer and close mid-send); the first reply line."""
    reader, writer = await asyncio.open_unix_connection(path, limit=1 << 20)

    async def send() -> None:
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(data)
            await writer.drain()
            if half_close:
                writer.write_eof()

    sender = asyncio.create_task(send())
    try:
        return await asyncio.wait_for(reader.readline(), 10)
    except ConnectionError:
        return b""
    finally:
        writer.transport.abort()
        await sender


def test_garbage_on_the_socket_leaves_the_runtime_serving(workdir: Path) -> None:
    async def main() -> None:
        vp = VirtualPort(str(workdir / "dev0"))
        cfg = write_config(workdir, ["dev0"], capacity=10000)
        async with run_runtime(workdir, cfg) as run:
            await run.status_until(connected("dev0"))
            await vp.write(packets(range(200)))

            await raw_exchange(run.sock, os.urandom(300_000))
            too_long = await raw_exchange(run.sock, b"x" * (10 * 1024 * 1024) + b"\n")
            assert json.loads(too_long) == {"ok": False, "error": "request too long (max 65536 bytes)", "code": 2}
            # half a request, then a disconnect: nothing is answered or acted on
            assert await raw_exchange(run.sock, b'{"cmd": "stop"', half_close=True) == b""
            replies = await asyncio.gather(*(raw_exchange(run.sock, b'{"cmd": "status"}\n') for _ in range(100)))
            parsed = [json.loads(r) for r in replies]
            assert sum(r["ok"] for r in parsed) >= 64
            assert all(r["ok"] or "too many control connections" in r["error"] for r in parsed)

            await vp.write(packets(range(200, 400)))
            status = await run.status_until(lambda s: s["devices"]["dev0"]["frames"] == 400)
            assert status["devices"]["dev0"]["rejected"] == 0
            assert (await cli("stop", control=run.sock)).rc == 0
            assert await run.wait() == 0, run.stderr()
        final = run.summary()
        assert_law(final)
        assert final["devices"]["dev0"]["flushed"] == 400
        assert sink_seqs(workdir, "dev0") == list(range(400))
        vp.close()

    asyncio.run(main())


# -- 3. errors: one clear line, the right exit status ------------------------------------------


def test_no_runtime_exits_3_with_a_hint(workdir: Path) -> None:
    async def main() -> None:
        sock = str(workdir / "none.sock")
        results = await asyncio.gather(
            cli("status", control=sock),
            cli("buffers", "--json", control=sock),
            cli("flush", control=sock),
            cli("stop", control=sock),
            cli("devices", "add", "d1", "/dev/null", "--codec", "fh1", control=sock),
            cli("devices", "remove", "d1", control=sock),
        )
        for res in results:
            assert res.rc == 3, res
            line = one_line_error(res)
            assert f"no runtime is listening on {sock}" in line
            assert f"firmware-host run --control {sock}" in line

    asyncio.run(main())


def test_cli_errors_against_a_running_runtime(workdir: Path) -> None:
    async def main() -> None:
        cfg = write_config(workdir, [])
        async with run_runtime(workdir, cfg) as run:
            await run.status_until(lambda s: True)
            sock = run.sock
            ours = await asyncio.gather(
                cli("flush", "--device", "nope", control=sock),
                cli("devices", "remove", "nope", control=sock),
                cli("devices", "add", "d1", "/dev/null", "--codec", "bogus", control=sock),
                cli("devices", "add", "bad/name", "/dev/null", "--codec", "fh1", control=sock),
                cli("devices", "add", "d1", "/dev/null", control=sock),
            )
            lines = [one_line_error(r) for r in ours]
            assert all(r.rc == 2 for r in ours), ours
            assert lines[0] == "firmware-host: unknown device 'nope' (no devices)"
            assert lines[1] == "firmware-host: unknown device 'nope' (no devices)"
            assert lines[2] == "firmware-host: devices add: codec: unknown codec 'bogus' (known: fh1, lines, nmea, ubx)"
            assert lines[3].startswith("firmware-host: devices add: name: expected a device name")
            assert lines[4].startswith("firmware-host: devices add: codec: required when no 'board' is given")
            # click's own usage errors: exit 2, an "Error:" line, no traceback
            usage = await asyncio.gather(
                cli("flush", "--timeout", "-1", control=sock),
                cli("devices", "add", "d1", control=sock),
                cli("devices", "add", "d1", "/dev/null", "--baudrate", "fast", control=sock),
                cli("status", "--bogus", control=sock),
            )
            for res in usage:
                assert res.rc == 2 and "Traceback" not in res.err, res
                lines = res.err.strip().splitlines()  # one clear line, like every other error
                assert len(lines) == 1 and lines[0].startswith("firmware-host: "), res.err
            # a board file named relative to the caller's directory, not the runtime's
            text = (
                (Path(__file__).resolve().parents[1] / "boards" / "env-sensor.toml")
                .read_text()
                .replace('name = "env-sensor"', 'name = "mine"')
            )
            (workdir / "mine.toml").write_text(text)
            added, gone = await asyncio.gather(
                cli("devices", "add", "d2", "/dev/null", "--board", "mine.toml", control=sock, cwd=workdir),
                cli("devices", "add", "d3", "/dev/null", "--board", "gone.toml", control=sock, cwd=workdir),
            )
            assert added.rc == 0 and "added d2" in added.out, added
            assert gone.rc == 2 and str(workdir / "gone.toml") in one_line_error(gone), gone
            assert (await cli("stop", control=sock)).rc == 0
            assert await run.wait() == 0, run.stderr()

    asyncio.run(main())


# -- 4. devices add / remove on a running runtime --------------------------------------------------


def test_devices_add_remove_and_readd(workdir: Path) -> None:
    async def main() -> None:
        vp = VirtualPort(str(workdir / "dev1"))
        cfg = write_config(workdir, [], capacity=1000)
        async with run_runtime(workdir, cfg) as run:
            await run.status_until(lambda s: True)
            add = await cli("devices", "add", "dev1", vp.path, "--codec", "fh1", control=run.sock)
            assert add.rc == 0 and add.out.strip() == f"added dev1 on {vp.path}", add
            await run.status_until(connected("dev1"))
            await vp.write(packets(range(10)))
            await run.status_until(lambda s: s["devices"]["dev1"]["frames"] == 10)

            remove = await cli("devices", "remove", "dev1", control=run.sock)
            assert remove.rc == 0 and remove.out.strip() == "removed dev1", remove
            dev = (await cli("status", "--json", control=run.sock)).json()["devices"]["dev1"]
            assert (dev["removed"], dev["state"], dev["buffered"]) == (True, "closed", 10)
            again = await cli("devices", "remove", "dev1", control=run.sock)
            assert again.rc == 2 and one_line_error(again).startswith("firmware-host: unknown device 'dev1'")

            readd = await cli(
                "devices",
                "add",
                "dev1",
                vp.path,
                "--codec",
                "fh1",
                "--baudrate",
                "9600",
                "--no-decode",
                control=run.sock,
            )
            assert readd.rc == 0, readd
            await run.status_until(connected("dev1"))
            await vp.write(packets(range(10, 20)))
            await run.status_until(lambda s: s["devices"]["dev1"]["frames"] == 20)
            assert (await cli("stop", control=run.sock)).rc == 0
            assert await run.wait() == 0, run.stderr()
        final = run.summary()
        assert_law(final)
        assert (final["devices"]["dev1"]["flushed"], final["devices"]["dev1"]["lost"]) == (20, 0)
        assert sink_seqs(workdir, "dev1") == list(range(20))
        vp.close()

    asyncio.run(main())


# -- 5. the socket: stale replaced, live refused, 0600, symlinks refused ----------------------------


def test_stale_socket_replaced_live_refused_mode_0600(workdir: Path) -> None:
    async def main() -> None:
        cfg = write_config(workdir, [])
        sock = str(workdir / "ctl.sock")
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(sock)
        stale.close()
        assert (await cli("status", control=sock)).rc == 3  # stale: nobody listens

        async with run_runtime(workdir, cfg, sock) as run:
            await run.status_until(lambda s: True)
            assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o600
            second = await cli("run", "-c", str(cfg), "--allow-empty", "-q", control=sock)
            assert second.rc == 1
            errors = [line for line in second.err.splitlines() if line.startswith("firmware-host: ")]
            assert errors == [f"firmware-host: another runtime is already listening on {sock}"], second.err
            assert "Traceback" not in second.err
            assert (await cli("status", control=sock)).rc == 0  # the first one is untouched
            assert (await cli("stop", control=sock)).rc == 0
            assert await run.wait() == 0, run.stderr()
        assert not os.path.lexists(sock)

    asyncio.run(main())


def test_symlink_at_the_socket_path_is_refused(workdir: Path) -> None:
    async def main() -> None:
        cfg = write_config(workdir, [])
        sock = str(workdir / "ctl.sock")
        os.symlink(workdir / "elsewhere", sock)
        res = await cli("run", "-c", str(cfg), "--allow-empty", "-q", control=sock)
        assert res.rc == 1 and "Traceback" not in res.err
        errors = [line for line in res.err.splitlines() if line.startswith("firmware-host: ")]
        assert errors == [f"firmware-host: refusing the control socket {sock}: it is a symlink"], res.err
        assert os.path.islink(sock) and not os.path.exists(workdir / "elsewhere")

    asyncio.run(main())
