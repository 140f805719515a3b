"""Descriptors: a ``socket://`` device whose socket is descriptor >= 1024
delivers every frame (pyserial's socket handler used ``select()``, which
cannot take it), and a runtime whose devices would take every descriptor
keeps enough free for its control socket to answer ``status``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware_host import PortClosed, encode_packet
from firmware_host.control.client import request_sync
from firmware_host.errors import ControlError
from firmware_host.testing import assert_accounting
from firmware_host.transport.serial import SerialBackend
from tests.conftest import read_jsonl

REPO = Path(__file__).resolve().parents[1]
HIGH = 1024  # select()'s FD_SETSIZE: the first descriptor it cannot take

needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")


@contextlib.contextmanager
def soft_nofile_at_least(wanted: int) -> Iterator[None]:
    """The soft RLIMIT_NOFILE raised to ``wanted`` (within the hard limit), restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard limit on open files ({hard}) is below {wanted}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def descriptors_below_taken(high: int) -> Iterator[None]:
    """Every descriptor below ``high`` in use, so the next one opened is >= ``high``."""
    base = os.open(os.devnull, os.O_RDONLY)
    held = [base]
    try:
        while held[-1] < high - 1:
            held.append(os.dup(base))
        yield
    finally:
        for fd in held:
            os.close(fd)


def socket_fd_bound_to(address: tuple[str, int]) -> int | None:
    """The descriptor of this process's socket whose local address is ``address``."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            if sock.family == socket.AF_INET and sock.getsockname() == address:
                return fd
        except OSError:
            pass
        finally:
            sock.detach()  # the descriptor stays its owner's
    return None


@needs_proc
@pytest.mark.timeout(30)
async def test_socket_device_on_a_descriptor_above_1024_delivers_every_frame(fh_runtime, fh_jsonl):
    n = 500
    packets = [encode_packet(1, seq, seq.to_bytes(4, "little") * 8) for seq in range(n)]
    peer: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()

    async def device(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer.set_result(writer.get_extra_info("peername"))
        for i in range(0, n, 50):  # in bursts, as a device streams
            writer.write(b"".join(packets[i : i + 50]))
            await writer.drain()
        await reader.read()  # until the host closes
        writer.close()

    with soft_nofile_at_least(4096), descriptors_below_taken(HIGH):
        server = await asyncio.start_server(device, "127.0.0.1", 0)
        port_no = server.sockets[0].getsockname()[1]
        config = {
            "buffer": {"flush_interval": 0.02},
            "devices": [{"name": "tcp", "port": f"socket://127.0.0.1:{port_no}", "codec": "fh1"}],
            "sinks": [{"type": "jsonl", "path": str(fh_jsonl)}],
        }
        try:
            async with fh_runtime(config) as rt:
                fd = socket_fd_bound_to(await asyncio.wait_for(peer, 10))
                assert fd is not None and fd >= HIGH  # the case select() cannot serve
                status = await rt.wait_flushed("tcp", n, timeout=20)
                assert status["devices"]["tcp"]["reconnects"] == 0
                summary = await rt.shutdown()
        finally:
            server.close()
            await server.wait_closed()
    assert_accounting(summary.status)
    assert [r["seq"] for r in read_jsonl(fh_jsonl)] == list(range(n))


@needs_proc
async def test_an_open_that_would_leave_too_few_descriptors_is_refused(fh_ports):
    """With a reserve as large as the limit nothing opens, a tty or a socket,
    and the error says which limit to raise; the default reserve opens."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        pytest.skip("no limit on open files")
    greedy = SerialBackend(fd_reserve=soft)
    vp = fh_ports.new()
    refused = r"too many open files \(\d+ of \d+ descriptors in use, \d+ kept free .*\); raise the limit: ulimit -n"
    with pytest.raises(PortClosed, match=f"^cannot open {vp.path}: {refused}"):
        await greedy(vp.path, 9600)
    with pytest.raises(PortClosed, match=f"^cannot open socket://127.0.0.1:9: {refused}"):
        await greedy("socket://127.0.0.1:9", 9600)
    port = await SerialBackend()(vp.path, 9600)
    await port.close()


# -- the control socket while the devices hold every other descriptor -------------------------

#: the child's soft and hard RLIMIT_NOFILE: five limits in a row, because a
#: tty costs five descriptors, so whatever the process's other descriptors
#: number, under one of them the ttys that fit leave none free at all (that
#: is the run whose control socket stopped answering before the reserve)
LIMITS = range(250, 255)
DEVICES = 300  # more ttys than fit in any of LIMITS
DEADLINE = 30.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FIRMWARE_HOST_CONTROL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return env


def _low_limit(limit: int) -> Callable[[], None]:
    def set_limit() -> None:  # runs in the child, before it starts Python
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return set_limit


def _status(sock: str, timeout: float) -> dict[str, Any] | None:
    """``status`` over the control socket; None while the runtime is not listening yet."""
    try:
        return request_sync(sock, {"cmd": "status"}, timeout=timeout)
    except ControlError:
        return None


def _settled(status: dict[str, Any] | None) -> bool:
    """Every device has opened, or has tried and failed (it retries in backoff)."""
    if status is None or len(status["devices"]) != DEVICES:
        return False
    return all(d["state"] == "connected" or d["last_error"] for d in status["devices"].values())


@needs_proc
@pytest.mark.timeout(90)
@pytest.mark.parametrize("limit", LIMITS)
def test_control_socket_answers_while_devices_hold_every_other_descriptor(limit):
    work = Path(tempfile.mkdtemp(prefix="fh-fds-"))  # short: a Unix socket path is limited
    masters: list[int] = []
    proc: subprocess.Popen[bytes] | None = None
    try:
        with soft_nofile_at_least(DEVICES + 100):
            lines = [f'[[sinks]]\ntype = "jsonl"\npath = "{work / "frames.jsonl"}"\n']
            for i in range(DEVICES):
                master, slave = os.openpty()
                lines.append(f'[[devices]]\nname = "d{i:03d}"\nport = "{os.ttyname(slave)}"\ncodec = "fh1"\n')
                os.close(slave)  # the pty lives while its master is open; the runtime opens the slave
                masters.append(master)
            config = work / "fh.toml"
            config.write_text("\n".join(lines))
            sock = str(work / "ctl.sock")
            with open(work / "run.out", "wb") as out, open(work / "run.err", "wb") as err:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "firmware_host", "run", "-c", str(config), "--control", sock, "-q"],
                    env=_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    preexec_fn=_low_limit(limit),
                )
            # no event to await across processes: poll status, bounded, until every device settled
            end = time.monotonic() + DEADLINE
            status = _status(sock, 5)
            while not _settled(status):
                assert proc.poll() is None, (work / "run.err").read_text()
                assert time.monotonic() < end, (
                    f"no answer on the control socket in {DEADLINE}s"
                    if status is None
                    else f"devices did not settle in {DEADLINE}s: {status['devices']}"
                )
                time.sleep(0.1)  # paces the poll of another process; not a synchronisation
                status = _status(sock, 5)

            # the CLI answers, quickly, with the descriptors all but spent
            started = time.monotonic()
            res = subprocess.run(
                [sys.executable, "-m", "firmware_host", "status", "--json", "--control", sock],
                env=_env(),
                capture_output=True,
                text=True,
                timeout=30,
            )
            took = time.monotonic() - started
            assert res.returncode == 0, res.stderr
            assert took < 5.0, f"status took {took:.1f}s"
            devices = json.loads(res.stdout)["devices"]
            connected = [d for d in devices.values() if d["state"] == "connected"]
            refused = [d for d in devices.values() if d["state"] != "connected"]  # in backoff, or retrying
            assert connected and refused and len(connected) + len(refused) == DEVICES
            assert len(connected) * 5 < limit  # the rest were refused, not opened
            for d in refused:
                assert d["last_error"].startswith(f"cannot open {d['port']}: too many open files ("), d
                assert "ulimit -n" in d["last_error"] and "LimitNOFILE" in d["last_error"], d

            stop = subprocess.run(
                [sys.executable, "-m", "firmware_host", "stop", "--control", sock],
                env=_env(),
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert stop.returncode == 0, stop.stderr
            assert proc.wait(timeout=30) == 0  # no frames were sent, none lost
            errors = (work / "run.err").read_text()
            assert "Traceback" not in errors and "accept" not in errors, errors[-2000:]
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        for master in masters:
            os.close(master)
        shutil.rmtree(work, ignore_errors=True)


# -- `firmware-host run` raises its own limit --------------------------------------------------


@pytest.mark.timeout(30)
def test_run_raises_the_soft_open_files_limit_to_the_hard_one():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 300:
        pytest.skip(f"the hard limit on open files ({hard}) leaves nothing to raise")
    work = Path(tempfile.mkdtemp(prefix="fh-lim-"))  # short: a Unix socket path is limited

    def low_soft_limit() -> None:  # in the child, before it starts Python
        resource.setrlimit(resource.RLIMIT_NOFILE, (300, hard))

    try:
        sock = str(work / "ctl.sock")
        cfg = work / "run.toml"  # no devices (--allow-empty); a sink, since a run with none is refused
        cfg.write_text(f'[[sinks]]\ntype = "jsonl"\npath = "{work / "out.jsonl"}"\n')
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "firmware_host",
                "run",
                "-c",
                str(cfg),
                "--allow-empty",
                "--duration",
                "0.1",
                "-q",
                "-vv",
                "--control",
                sock,
            ],
            cwd=work,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=30,
            preexec_fn=low_soft_limit,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert res.returncode == 0, res.stderr
    assert "DEBUG firmware_host: open files limit (RLIMIT_NOFILE) raised from 300 to " in res.stderr, res.stderr
