"""A reader never dies of its transport: whatever a port's open, read or
close raises is a read error (last_error, backoff, reconnect), and the
device is back once its port works again."""

from __future__ import annotations

import pytest

from firmware_host import encode_packet
from firmware_host.transport.fake import FakeOpener, FakePort

pytestmark = pytest.mark.timeout(15)

FAST = {"backoff_initial": 0.01, "backoff_max": 0.02}


class _BadClose(FakePort):
    async def close(self) -> None:
        await super().close()
        raise RuntimeError("close went wrong")


async def test_unexpected_exceptions_from_a_port_are_read_errors(fh_runtime, caplog):
    frames = [encode_packet(0, seq, b"x") for seq in range(3)]
    opener = FakeOpener(
        {
            "fake://d": [
                RuntimeError("open went wrong"),  # an open that fails unexpectedly
                FakePort([frames[0], NotImplementedError("write_timeout is currently not supported")]),
                _BadClose([frames[1], PermissionError(13, "denied")]),
                FakePort([frames[2]]),
            ]
        }
    )
    config = {"devices": [{"name": "d", "port": "fake://d", "codec": "fh1", **FAST}]}
    async with fh_runtime(config, opener=opener) as rt:
        status = await rt.wait_frames("d", 3)
        device = status["devices"]["d"]
        assert device["state"] == "connected"
        assert device["reconnects"] == 2
        assert opener.opens["fake://d"] == 4
        assert device["last_error"] == "RuntimeError: close went wrong"
        await rt.shutdown()
    # handled by the reader, not by the runtime's restart of a crashed reader task
    assert not [r for r in caplog.records if r.name == "firmware_host.runtime" and r.levelname == "ERROR"]


async def test_the_last_error_names_an_unexpected_exception(fh_runtime):
    opener = FakeOpener(
        {"fake://d": [FakePort([NotImplementedError("write_timeout is currently not supported")]), FakePort()]}
    )
    config = {"devices": [{"name": "d", "port": "fake://d", "codec": "fh1", **FAST}]}
    async with fh_runtime(config, opener=opener) as rt:
        await rt.wait_counter("d", "reconnects", 1)
        status = await rt.wait_state("d", "connected")
        assert status["devices"]["d"]["last_error"] == "NotImplementedError: write_timeout is currently not supported"
        await rt.shutdown()
