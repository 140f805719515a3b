"""Fleet boards (``run --emulate``, ``emulate``) answer commands while they
stream: requests succeed through dropped and delayed acks, and the host's
counters still match the emulator's exact account (acks are frames too)."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from firmware_host.config.boards import load_boards
from firmware_host.emulation.acks import AckPolicy
from firmware_host.emulation.fleet import Fleet
from firmware_host.errors import RequestTimeout
from firmware_host.request import ack_reply, acked_seq
from firmware_host.testing import running_runtime
from tests.conftest import CLI_ENV, cli_async

pytestmark = pytest.mark.timeout(60)

ENV = CLI_ENV


def host_view(status: dict[str, Any], name: str) -> dict[str, int]:
    d = status["devices"][name]
    return {"frames": d["frames"], "rejected": d["rejected"], "gaps": d["gaps"]}


async def test_fleet_boards_ack_while_streaming_and_the_counts_stay_exact(tmp_path: Path) -> None:
    boards = load_boards()
    plan = [(boards["nucleo-imu"], 1), (boards["env-sensor"], 1), (boards["gnss-nmea"], 1)]
    fleet = Fleet(plan, tmp_path / "ports", rate=50.0, seed=7, acks=AckPolicy(drop_first=1, delay=0.1))
    await fleet.start()
    try:
        devices = [dataclasses.replace(d, backoff_initial=0.02) for d in fleet.device_configs()]
        async with running_runtime({"buffer": {"flush_interval": 0.05}}, sinks=[]) as rt:
            for d in devices:
                await rt.add_device(d)
            await rt.wait_frames("nucleo-imu-0", 5)
            ack = await rt.request("nucleo-imu-0", body=b"\x07", timeout=0.5, retries=2, backoff=0.01)
            assert (acked_seq(ack), ack_reply(ack)) == (0, b"\x07")  # the first copy's ack was dropped
            # the echo of a 64-byte body cut to fit the board's max_payload (64) after the seq
            ack = await rt.request("env-sensor-0", body=b"\x08" * 64, timeout=1.0)
            assert ack_reply(ack) == b"\x08" * 60
            imu = fleet.device("nucleo-imu-0")
            assert (imu.commands, imu.acks_dropped) == (2, 1)
            await fleet.stop_sending()
            expected = {d.name: d.expected() for d in fleet.devices}
            status = await rt.wait_until(lambda s: all(host_view(s, n) == e for n, e in expected.items()), 10.0)
            assert status["devices"]["nucleo-imu-0"]["gaps"] == 0
            assert imu.acks == 1 and fleet.device("env-sensor-0").acks == 1
    finally:
        await fleet.stop()


async def test_a_slow_board_acks_at_once_not_at_its_next_frame(tmp_path: Path) -> None:
    boards = load_boards()
    fleet = Fleet([(boards["env-sensor"], 1)], tmp_path / "ports", rate=0.2)  # a frame every 5 s
    await fleet.start()
    try:
        async with running_runtime({}) as rt:
            await rt.add_device(fleet.device_configs()[0])
            await rt.wait_frames("env-sensor-0", 1)
            ack = await rt.request("env-sensor-0", body=b"now", timeout=1.0, retries=0)
            assert ack_reply(ack) == b"now"
    finally:
        await fleet.stop()


async def test_a_fleet_without_acks_leaves_requests_unanswered(tmp_path: Path) -> None:
    boards = load_boards()
    fleet = Fleet([(boards["nucleo-imu"], 1)], tmp_path / "ports", rate=20.0, acks=None)
    await fleet.start()
    try:
        async with running_runtime({}) as rt:
            await rt.add_device(fleet.device_configs()[0])
            await rt.wait_frames("nucleo-imu-0", 1)
            with pytest.raises(RequestTimeout):
                await rt.request("nucleo-imu-0", timeout=0.2, retries=0)
            assert fleet.device("nucleo-imu-0").commands == 0
    finally:
        await fleet.stop()


cli = cli_async


async def test_run_emulate_answers_the_request_cli() -> None:
    """``run --emulate`` and ``request`` as two processes: the emulated board acks."""
    d = tempfile.mkdtemp(prefix="fhfl")
    sock = str(Path(d) / "ctl.sock")
    run = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "firmware_host",
        "run",
        "--emulate",
        "nucleo-imu",
        "--control",
        sock,
        "-qq",
        env=ENV,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(30):
            while True:  # no event crosses processes: poll status, each poll a whole CLI run
                rc, out, _ = await cli("status", "--json", "--control", sock)
                if rc == 0 and '"state": "connected"' in out:
                    break
        rc, out, err = await cli("request", "nucleo-imu-0", "--hex", "c0ffee", "--timeout", "3", "--control", sock)
        assert (rc, out) == (0, "c0ffee\n"), err
        rc, _, err = await cli("stop", "--wait", "--control", sock)
        assert rc == 0, err
        assert await asyncio.wait_for(run.wait(), 30) == 0
    finally:
        if run.returncode is None:
            run.kill()
            await run.wait()
        shutil.rmtree(d, ignore_errors=True)


async def test_emulate_ack_options_are_checked() -> None:
    rc, _, err = await cli("emulate", "nucleo-imu", "--ack-drop", "2", "--duration", "0")
    assert rc == 2 and "--ack-drop" in err and len(err.strip().splitlines()) == 1
    rc, _, err = await cli("emulate", "nucleo-imu", "--ack-delay", "-1", "--duration", "0")
    assert rc == 2 and "--ack-delay" in err
