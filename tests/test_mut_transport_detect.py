"""USB detection (``firmware_host/transport/detect.py``): the words and ids it
derives from ``comports()`` entries, worked out by hand (tests written from
mutation testing, docs/testing-internals.md). ``comports()`` is replaced: a
pty has no USB ids."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from pytest_mock import MockerFixture

from firmware_host.config.boards import BOARDS_ENV_VAR
from firmware_host.transport.detect import describe_match, list_devices, match_resolver, port_matches

pytestmark = pytest.mark.timeout(10)


@dataclass
class Info:
    device: str
    vid: int | None = None
    pid: int | None = None
    serial_number: str | None = None
    description: str | None = "n/a"


@pytest.fixture(autouse=True)
def _no_user_boards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BOARDS_ENV_VAR, raising=False)


def test_ids_need_both_halves_and_are_four_hex_digits(mocker: MockerFixture) -> None:
    mocker.patch(
        "firmware_host.transport.detect.comports",
        return_value=[
            Info("/dev/c", 0x1, 0xABC, description=None),
            Info("/dev/a", 0x1234, None, description="only vid"),
            Info("/dev/b", None, 0x1234, "S1", description=""),
        ],
    )
    assert list_devices({}) == [
        {"port": "/dev/a", "description": "only vid", "vid_pid": None, "serial": None, "board": None},
        {"port": "/dev/b", "description": "", "vid_pid": None, "serial": "S1", "board": None},
        {"port": "/dev/c", "description": None, "vid_pid": "0001:0abc", "serial": None, "board": None},
    ]


def test_list_devices_loads_the_board_files_when_given_none(mocker: MockerFixture) -> None:
    mocker.patch("firmware_host.transport.detect.comports", return_value=[Info("/dev/x", 0x0483, 0x374B)])
    assert list_devices()[0]["board"] == "nucleo-imu"
    assert list_devices({})[0]["board"] is None


def test_port_matches_every_named_id_and_only_those() -> None:
    info = Info("/dev/x", 0x10, 0x20, "SN")
    assert port_matches(info, {})
    assert port_matches(info, {"vid": 0x10})
    assert port_matches(info, {"pid": 0x20})
    assert port_matches(info, {"serial": "SN"})
    assert port_matches(info, {"vid": 0x10, "pid": 0x20, "serial": "SN"})
    assert not port_matches(info, {"vid": 0x11})
    assert not port_matches(info, {"pid": 0x21})
    assert not port_matches(info, {"serial": "sn"})
    assert not port_matches(info, {"vid": 0x10, "pid": 0x20, "serial": "X"})
    assert not port_matches(Info("/dev/y"), {"serial": "SN"})


def test_describe_match_in_words() -> None:
    assert describe_match({}) == "(nothing)"
    assert describe_match({"vid": 0x483}) == "vid=0x0483"
    assert describe_match({"pid": 0x1}) == "pid=0x0001"
    assert describe_match({"serial": "A B"}) == "serial='A B'"
    assert describe_match({"serial": "Z", "pid": 2, "vid": 1}) == "vid=0x0001 pid=0x0002 serial='Z'"
    assert describe_match({"vid": "x"}) == "(nothing)"


def test_the_resolver_takes_the_first_match_by_path_and_says_what_it_wanted(mocker: MockerFixture) -> None:
    ports = [Info("/dev/ttyACM3", 1, 2, "B"), Info("/dev/ttyACM1", 1, 2, "A"), Info("/dev/ttyACM2", 1, 3)]
    mocker.patch("firmware_host.transport.detect.comports", side_effect=lambda: list(ports))
    wanted = {"vid": 1, "pid": 2}
    resolve = match_resolver(wanted)
    wanted["pid"] = 3  # the resolver keeps its own copy

    async def main() -> None:
        assert await resolve() == "/dev/ttyACM1"
        with pytest.raises(LookupError) as info:
            await match_resolver({"vid": 9})()
        assert str(info.value) == "no port matches vid=0x0009"

    asyncio.run(main())


def test_an_entry_without_usb_attributes_is_a_port_without_ids(mocker: MockerFixture) -> None:
    """Entries are read by what they have: one with no vid, pid or serial_number
    attribute at all (not a USB device) lists with none and matches nothing."""
    bare = SimpleNamespace(device="/dev/ttyS9", description="16550A")
    mocker.patch("firmware_host.transport.detect.comports", return_value=[bare])
    assert list_devices({}) == [
        {"port": "/dev/ttyS9", "description": "16550A", "vid_pid": None, "serial": None, "board": None}
    ]
    assert not port_matches(bare, {"serial": "X"})
    assert not port_matches(bare, {"vid": 1})
    assert port_matches(bare, {})
