"""Auto-detection: listing ports with their boards, and a USB-matched device
found again after it re-enumerates under another path."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from pytest_mock import MockerFixture

from firmware_host.codecs import encode_packet
from firmware_host.config.boards import BOARDS_ENV_VAR, load_boards
from firmware_host.config.schema import config_from_dict
from firmware_host.emulation.virtualport import VirtualPort
from firmware_host.runtime import Runtime
from firmware_host.transport.detect import list_devices, match_resolver

pytestmark = pytest.mark.timeout(30)

ST_LINK = (0x0483, 0x374B)


@dataclass
class PortInfo:
    """What serial.tools.list_ports.comports() yields (the attributes we read)."""

    device: str
    vid: int | None = None
    pid: int | None = None
    serial_number: str | None = None
    description: str = "n/a"


@pytest.fixture(autouse=True)
def _no_user_boards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BOARDS_ENV_VAR, raising=False)


def test_list_devices_names_boards(mocker: MockerFixture) -> None:
    mocker.patch(
        "firmware_host.transport.detect.comports",
        return_value=[
            PortInfo("/dev/ttyS0"),
            PortInfo("/dev/ttyACM1", *ST_LINK, "0671FF", "STM32 STLink"),
            PortInfo("/dev/ttyACM0", 0x1546, 0x01A8, None, "u-blox GNSS receiver"),
            PortInfo("/dev/ttyUSB0", 0x0403, 0x6001, "A50285BI", "FT232R USB UART"),
        ],
    )
    found = list_devices(load_boards())
    assert found == [
        {
            "port": "/dev/ttyACM0",
            "description": "u-blox GNSS receiver",
            "vid_pid": "1546:01a8",
            "serial": None,
            "board": "gnss-ubx",
        },
        {
            "port": "/dev/ttyACM1",
            "description": "STM32 STLink",
            "vid_pid": "0483:374b",
            "serial": "0671FF",
            "board": "nucleo-imu",
        },
        {"port": "/dev/ttyS0", "description": None, "vid_pid": None, "serial": None, "board": None},
        {
            "port": "/dev/ttyUSB0",
            "description": "FT232R USB UART",
            "vid_pid": "0403:6001",
            "serial": "A50285BI",
            "board": None,
        },
    ]


def test_match_resolver(mocker: MockerFixture) -> None:
    ports = [PortInfo("/dev/ttyACM0", *ST_LINK, "AAA"), PortInfo("/dev/ttyACM1", *ST_LINK, "BBB")]
    mocker.patch("firmware_host.transport.detect.comports", side_effect=lambda: list(ports))

    async def main() -> None:
        assert await match_resolver({"vid": ST_LINK[0], "pid": ST_LINK[1]})() == "/dev/ttyACM0"
        assert await match_resolver({"serial": "BBB"})() == "/dev/ttyACM1"
        with pytest.raises(LookupError, match=r"^no port matches vid=0x0483 pid=0x374b serial='CCC'$"):
            await match_resolver({"vid": ST_LINK[0], "pid": ST_LINK[1], "serial": "CCC"})()
        ports.pop(0)  # looked up again on every call
        assert await match_resolver({"vid": ST_LINK[0]})() == "/dev/ttyACM1"

    asyncio.run(main())


def test_reader_finds_a_board_again_after_re_enumeration(mocker: MockerFixture) -> None:
    """The board disappears from one pty and comes back on another; the device
    is configured by USB ids only, so the reader must find the new path."""
    listed: list[PortInfo] = []
    comports = mocker.patch("firmware_host.transport.detect.comports", side_effect=lambda: list(listed))

    async def main() -> dict[str, Any]:
        first, second = VirtualPort(), VirtualPort()
        cfg = config_from_dict(
            {
                "devices": [
                    {
                        "name": "imu",
                        "board": "nucleo-imu",
                        "match": {"vid": ST_LINK[0], "pid": ST_LINK[1]},
                        "backoff_initial": 0.02,
                        "backoff_max": 0.1,
                    }
                ]
            },
            source="<test>",
            boards=load_boards(),
        )
        rt = Runtime(cfg)
        await rt.start()
        try:
            # not plugged in yet: the reader backs off and keeps looking
            status = await rt.wait_until(lambda s: s["devices"]["imu"]["state"] == "backoff", 5)
            assert "no port matches vid=0x0483 pid=0x374b" in status["devices"]["imu"]["last_error"]
            listed[:] = [PortInfo(first.path, *ST_LINK, "0671FF")]
            await rt.wait_until(
                lambda s: s["devices"]["imu"]["state"] == "connected" and s["devices"]["imu"]["port"] == first.path, 5
            )
            await first.write(b"".join(encode_packet(1, seq, b"x" * 48) for seq in range(5)))
            await rt.wait_until(lambda s: s["devices"]["imu"]["frames"] == 5, 5)

            # re-enumeration: the old node dies, the board shows up under a new one
            listed[:] = [PortInfo(second.path, *ST_LINK, "0671FF")]
            first.unplug()
            await rt.wait_until(
                lambda s: s["devices"]["imu"]["state"] == "connected" and s["devices"]["imu"]["port"] == second.path, 5
            )
            await second.write(b"".join(encode_packet(1, seq, b"y" * 48) for seq in range(5, 10)))
            status = await rt.wait_until(lambda s: s["devices"]["imu"]["frames"] == 10, 5)
        finally:
            summary = await rt.shutdown()
            first.close()
            second.close()
        d = status["devices"]["imu"]
        assert (d["rejected"], d["gaps"], d["reconnects"]) == (0, 0, 1)
        return summary.status

    final = asyncio.run(main())
    d = final["devices"]["imu"]
    assert d["frames"] == d["flushed"] + d["dropped"] + d["buffered"] == 10
    assert comports.call_count >= 3  # resolved at every (re)connect
