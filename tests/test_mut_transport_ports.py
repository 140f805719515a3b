"""The port listing device templates use (``firmware_host/transport/ports.py``):
every field of every entry, worked out by hand (tests written from mutation
testing, docs/testing-internals.md). ``comports()`` is replaced (a pty has no
USB ids); the globs run over real files and symlinks in tmp_path."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from firmware_host.transport.ports import PortInfo, SystemPorts

pytestmark = pytest.mark.timeout(10)

COMPORTS = "firmware_host.transport.ports.comports"


@dataclass
class Info:
    """The part of pyserial's ListPortInfo the listing reads (untyped there)."""

    device: Any
    vid: Any = None
    pid: Any = None
    serial_number: Any = None
    location: Any = None


@pytest.fixture
def dev(tmp_path: Path) -> Path:
    """Two "ttys" (plain files) and a by-id directory of symlinks to them, the
    way udev names a board."""
    (tmp_path / "dev").mkdir()
    (tmp_path / "by-id").mkdir()
    for name in ("ttyACM0", "ttyUSB1"):
        (tmp_path / "dev" / name).touch()
    (tmp_path / "by-id" / "usb-Acme_GPS_S1-if00").symlink_to(tmp_path / "dev" / "ttyACM0")
    (tmp_path / "by-id" / "usb-Acme_Dual_D7-if01").symlink_to(tmp_path / "dev" / "ttyUSB1")
    return tmp_path


def test_a_system_port_carries_its_node_its_real_path_and_its_ids(dev: Path, mocker: MockerFixture) -> None:
    # the node pyserial names is itself a symlink here: ``real`` is where it leads
    link = dev / "ttyGPS"
    link.symlink_to(dev / "dev" / "ttyACM0")
    mocker.patch(COMPORTS, return_value=[Info(str(link), 0x1546, 0x01A8, "S1", "1-1.2:1.0")])
    assert SystemPorts().list_ports([], usb=True) == [
        PortInfo(str(link), str(dev / "dev" / "ttyACM0"), 0x1546, 0x01A8, "S1", glob=None, interface="1.0")
    ]


def test_a_system_port_keeps_only_well_typed_ids(dev: Path, mocker: MockerFixture) -> None:
    node = str(dev / "dev" / "ttyUSB1")
    mocker.patch(
        COMPORTS,
        return_value=[
            # ids of the wrong type (a string vid, a float pid, a numeric serial): absent
            Info(Path(node), "0x0403", 24592.0, 1234, "1-3:1.1"),
        ],
    )
    # the device is str()-ed: a Path-like device still gives the path as text
    assert SystemPorts().list_ports([], usb=True) == [PortInfo(node, node, None, None, None, interface="1.1")]


def test_an_empty_serial_is_no_serial(dev: Path, mocker: MockerFixture) -> None:
    node = str(dev / "dev" / "ttyUSB1")
    mocker.patch(COMPORTS, return_value=[Info(node, 0x0403, 0x6010, "", None)])
    assert SystemPorts().list_ports([], usb=True) == [PortInfo(node, node, 0x0403, 0x6010, None)]


@pytest.mark.parametrize(
    ("location", "interface"),
    [
        ("1-1.2:1.0", "1.0"),
        # the interface is what follows the last colon
        ("usb:1-4:2.3", "2.3"),
        ("1-1.2:", None),  # nothing after the colon
        ("1-1.2", None),  # no colon: a bus path only
        (None, None),
        (7, None),  # not text
    ],
)
def test_the_interface_is_the_text_after_the_last_colon_of_the_location(
    dev: Path, mocker: MockerFixture, location: Any, interface: str | None
) -> None:
    node = str(dev / "dev" / "ttyACM0")
    mocker.patch(COMPORTS, return_value=[Info(node, 1, 2, "S", location)])
    [port] = SystemPorts().list_ports([], usb=True)
    assert port.interface == interface


def test_system_ports_come_sorted_by_path_whatever_order_pyserial_gives(dev: Path, mocker: MockerFixture) -> None:
    # the names sort in the opposite order from where they lead
    (dev / "a").symlink_to(dev / "dev" / "ttyUSB1")
    (dev / "b").symlink_to(dev / "dev" / "ttyACM0")
    (dev / "c").symlink_to(dev / "dev" / "ttyUSB1")
    mocker.patch(COMPORTS, return_value=[Info(str(dev / n), 1, i) for i, n in enumerate("bca")])
    assert [(p.path, p.pid) for p in SystemPorts().list_ports([], usb=True)] == [
        (str(dev / "a"), 2),
        (str(dev / "b"), 0),
        (str(dev / "c"), 1),
    ]


def test_a_glob_path_takes_the_ids_of_the_system_port_it_leads_to(dev: Path, mocker: MockerFixture) -> None:
    acm, usb = str(dev / "dev" / "ttyACM0"), str(dev / "dev" / "ttyUSB1")
    mocker.patch(
        COMPORTS,
        return_value=[Info(usb, 0x0403, 0x6010, "D7", "1-3:1.1"), Info(acm, 0x1546, 0x01A8, "S1", "1-1.2:1.0")],
    )
    pattern = str(dev / "by-id" / "*")
    gps, dual = str(dev / "by-id" / "usb-Acme_GPS_S1-if00"), str(dev / "by-id" / "usb-Acme_Dual_D7-if01")
    assert SystemPorts().list_ports([pattern], usb=True) == [
        PortInfo(acm, acm, 0x1546, 0x01A8, "S1", interface="1.0"),
        PortInfo(usb, usb, 0x0403, 0x6010, "D7", interface="1.1"),
        # the glob's own entries follow, in path order, each naming its glob
        PortInfo(dual, usb, 0x0403, 0x6010, "D7", glob=pattern, interface="1.1"),
        PortInfo(gps, acm, 0x1546, 0x01A8, "S1", glob=pattern, interface="1.0"),
    ]


def test_a_glob_path_no_system_port_leads_to_has_no_ids(dev: Path, mocker: MockerFixture) -> None:
    mocker.patch(COMPORTS, return_value=[Info(str(dev / "dev" / "ttyUSB1"), 0x0403, 0x6010, "D7", "1-3:1.1")])
    pattern = str(dev / "by-id" / "*GPS*")
    gps = str(dev / "by-id" / "usb-Acme_GPS_S1-if00")
    listed = SystemPorts().list_ports([pattern], usb=True)
    assert listed[1:] == [PortInfo(gps, str(dev / "dev" / "ttyACM0"), glob=pattern)]


def test_without_usb_the_system_listing_is_not_read_and_globs_carry_no_ids(dev: Path, mocker: MockerFixture) -> None:
    acm = str(dev / "dev" / "ttyACM0")
    comports = mocker.patch(COMPORTS, return_value=[Info(acm, 0x1546, 0x01A8, "S1", "1-1.2:1.0")])
    pattern = str(dev / "by-id" / "*GPS*")
    gps = str(dev / "by-id" / "usb-Acme_GPS_S1-if00")
    assert SystemPorts().list_ports([pattern], usb=False) == [PortInfo(gps, acm, glob=pattern)]
    comports.assert_not_called()


def test_globs_are_listed_in_the_order_given(dev: Path, mocker: MockerFixture) -> None:
    mocker.patch(COMPORTS, return_value=[])
    second, first = str(dev / "dev" / "ttyA*"), str(dev / "dev" / "ttyU*")
    listed = SystemPorts().list_ports([first, second], usb=True)
    assert [(p.path, p.glob) for p in listed] == [
        (str(dev / "dev" / "ttyUSB1"), first),
        (str(dev / "dev" / "ttyACM0"), second),
    ]
    assert os.path.isfile(listed[0].real)
