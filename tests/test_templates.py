"""Issue 21, boards that come and go: a ``[[devices]]`` template makes a device
of every port it matches while the runtime runs, and removes one whose port
has been gone for ``[serial] remove_after``.

The first tests run on real ptys behind symlinks in a temp dir, found by the
template's ``path`` glob through the real port listing (``SystemPorts``);
the USB id tests present ptys through a ``PortLister`` of their own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from firmware_host.config import ConfigError, config_from_dict
from firmware_host.testing import assert_accounting
from firmware_host.transport.ports import PortInfo, SystemPorts
from tests.conftest import cli

pytestmark = pytest.mark.timeout(20)


def template_config(glob: str, jsonl: Path, *, name: str = "dev-{n}", remove_after: float = 0.3) -> dict[str, Any]:
    return {
        "buffer": {"flush_interval": 0.05},
        "serial": {"scan_interval": 0.05, "remove_after": remove_after, "hotplug": "scan"},
        "devices": [
            {
                "name": name,
                "match": {"path": glob},
                "codec": "fh1",
                "backoff_initial": 0.02,
                "backoff_max": 0.1,
            }
        ],
        "sinks": [{"type": "jsonl", "path": str(jsonl)}],
    }


def by_port(status: dict[str, Any]) -> dict[str, str]:
    """port path -> device name, for the devices not removed."""
    return {d["port"]: name for name, d in status["devices"].items() if not d["removed"]}


async def test_three_boards_plugged_after_start_and_one_let_go(fh_ports, fh_board, fh_runtime, fh_jsonl):
    glob = str(fh_ports.directory / "board-*")
    async with fh_runtime(template_config(glob, fh_jsonl), ports=SystemPorts()) as rt:
        assert rt.hotplug is not None
        status = await rt.status()
        assert status["devices"] == {}  # nothing plugged yet: no device
        boards = [fh_board("fh1", name=f"board-{i}") for i in (1, 2, 3)]
        status = await rt.wait_until(
            lambda s: len(s["devices"]) == 3 and all(d["state"] == "connected" for d in s["devices"].values()), 5
        )
        assert sorted(status["devices"]) == ["dev-1", "dev-2", "dev-3"]
        assert {d["template"] for d in status["devices"].values()} == {"dev-{n}"}
        names = by_port(status)
        assert set(names) == {b.path for b in boards}
        for board in boards:
            await board.send_frames(20)
        for board in boards:
            await rt.wait_frames(names[board.path], 20)

        gone = boards[1]
        gone_name = names[gone.path]
        gone.unplug()  # the symlink goes and the pty closes, as a USB board's would
        await rt.wait_state(gone_name, "backoff", 5)
        status = await rt.wait_until(lambda s: s["devices"][gone_name]["removed"], 5)
        assert status["devices"][gone_name]["frames"] == 20  # its frames stay counted and flushed
        assert_accounting(status)
        for board in (boards[0], boards[2]):  # the others go on
            await board.send_frames(5)
            await rt.wait_frames(names[board.path], 25)
        summary = await rt.shutdown()
    final = summary.status["devices"]
    assert final[gone_name]["removed"] and final[gone_name]["flushed"] == 20
    assert [final[names[b.path]]["flushed"] for b in (boards[0], boards[2])] == [25, 25]


async def test_a_port_back_before_remove_after_is_the_same_device(fh_ports, fh_board, fh_runtime, fh_jsonl):
    glob = str(fh_ports.directory / "gps-*")
    config = template_config(glob, fh_jsonl, name="{basename}", remove_after=30)
    async with fh_runtime(config, ports=SystemPorts()) as rt:
        board = fh_board("fh1", name="gps-a")
        await rt.wait_state("gps-a", "connected", 5)
        await board.send_frames(10)
        await rt.wait_frames("gps-a", 10)
        board.unplug()
        await rt.wait_state("gps-a", "backoff", 5)
        claims = rt.hotplug.claims
        await rt.wait_until(lambda s: [c.missing_since is not None for c in claims.values()] == [True], 5)
        board.replug()
        status = await rt.wait_state("gps-a", "connected", 5)
        assert status["devices"]["gps-a"]["reconnects"] == 1 and not status["devices"]["gps-a"]["removed"]
        await board.send_frames(10)
        await rt.wait_frames("gps-a", 20)
        await rt.wait_until(lambda s: [c.missing_since is None for c in claims.values()] == [True], 5)
        assert list((await rt.status())["devices"]) == ["gps-a"]


async def test_no_template_no_watcher(fh_ports, fh_runtime):
    port = fh_ports.new("plain")
    config = {"devices": [{"name": "plain", "port": port.path, "codec": "lines"}]}
    async with fh_runtime(config) as rt:
        assert rt.hotplug is None
        status = await rt.status()
        assert "template" not in status["devices"]["plain"]  # status shapes unchanged


class Ports:
    """A port listing the test sets: ptys presented with chosen USB ids."""

    def __init__(self) -> None:
        self.ports: list[PortInfo] = []
        self.calls: list[tuple[tuple[str, ...], bool]] = []

    def list_ports(self, globs: Sequence[str], usb: bool) -> list[PortInfo]:
        self.calls.append((tuple(globs), usb))
        return list(self.ports)


FASTER = {"backoff_initial": 0.02, "backoff_max": 0.05}


def usb_port(
    path: str, serial: str | None, vid: int = 0x1546, pid: int = 0x01A8, interface: str | None = None
) -> PortInfo:
    return PortInfo(path, os.path.realpath(path), vid, pid, serial, interface=interface)


async def test_usb_ids_name_devices_and_a_moved_board_follows(fh_ports, fh_runtime, fh_jsonl):
    listing = Ports()
    config = {
        "serial": {"scan_interval": 0.05, "remove_after": 30, "hotplug": "scan"},
        "devices": [
            {"name": "gps-{serial}", "match": {"vid": 0x1546}, "codec": "lines", "backoff_initial": 0.02},
        ],
        "sinks": [{"type": "jsonl", "path": str(fh_jsonl)}],
    }
    a, b, other = fh_ports.new("acm0"), fh_ports.new("acm1"), fh_ports.new("acm2")
    listing.ports = [
        usb_port(a.path, "A1"),
        usb_port(b.path, "B/2"),  # "/" cannot be in a name: it becomes "_"
        usb_port(other.path, "X", vid=0x0483),  # another vendor: left alone
        usb_port(str(fh_ports.directory / "nothing"), None),  # no serial for {serial}: left alone
    ]
    async with fh_runtime(config, ports=listing) as rt:
        status = await rt.wait_until(lambda s: len(s["devices"]) == 2, 5)  # made at start, no wait for a scan
        assert by_port(status) == {a.path: "gps-A1", b.path: "gps-B_2"}
        assert listing.calls[0] == ((), True)
        await rt.wait_state("gps-A1", "connected", 5)
        await a.write(b"one\n")
        await rt.wait_frames("gps-A1", 1)
        # board A re-enumerates: same serial number, another path
        moved = fh_ports.new("acm3")
        listing.ports[0] = usb_port(moved.path, "A1")
        status = await rt.wait_until(lambda s: s["devices"]["gps-A1"]["port"] == moved.path, 5)
        await rt.wait_state("gps-A1", "connected", 5)
        await moved.write(b"two\n")
        status = await rt.wait_frames("gps-A1", 2)
        assert status["devices"]["gps-A1"]["template"] == "gps-{serial}"


async def test_a_plain_device_keeps_its_port_and_its_name(fh_ports, fh_runtime, fh_jsonl):
    listing = Ports()
    mine, free = fh_ports.new("mine"), fh_ports.new("free")
    listing.ports = [usb_port(mine.path, "S1"), usb_port(free.path, "S2")]
    config = {
        "serial": {"hotplug": "scan"},
        "devices": [
            {"name": "dev-1", "port": mine.path, "codec": "lines"},
            {"name": "dev-{n}", "match": {"pid": 0x01A8}, "codec": "lines"},
        ],
        "sinks": [{"type": "jsonl", "path": str(fh_jsonl)}],
    }
    async with fh_runtime(config, ports=listing) as rt:
        status = await rt.status()
        # the plain device's port is its own; the template's first free number is 2
        assert by_port(status) == {mine.path: "dev-1", free.path: "dev-2"}
        assert "template" not in status["devices"]["dev-1"]


# -- config ----------------------------------------------------------------------------


def load(device: dict[str, Any], **serial: Any) -> Any:
    return config_from_dict({"serial": serial, "devices": [{"codec": "lines", **device}]})


def test_a_template_loads_apart_from_the_devices() -> None:
    cfg = load({"name": "gps-{serial}", "match": {"path": "/dev/serial/by-id/usb-u-blox*", "vid": "0x1546"}})
    assert cfg.devices == []
    (template,) = cfg.templates
    assert template.name == template.template == "gps-{serial}"
    assert template.match == {"path": "/dev/serial/by-id/usb-u-blox*", "vid": 0x1546}
    assert (cfg.serial.scan_interval, cfg.serial.remove_after, cfg.serial.hotplug) == (1.0, 60.0, "auto")


@pytest.mark.parametrize(
    ("device", "serial", "expected"),
    [
        ({"name": "gps-{id}", "match": {"vid": 1}}, {}, "devices[0].name: unknown placeholder {id}"),
        ({"name": "gps {n}", "match": {"vid": 1}}, {}, "devices[0].name: the pattern 'gps {n}' cannot yield"),
        ({"name": "gps-{n", "match": {"vid": 1}}, {}, "unbalanced braces"),
        ({"name": "gps-{n:03}", "match": {"vid": 1}}, {}, "takes no format"),
        ({"name": "x" * 64 + "{n}", "match": {"vid": 1}}, {}, "cannot yield a valid device name"),
        ({"name": "gps-{n}"}, {}, "devices[0]: the device template 'gps-{n}' needs 'match'"),
        ({"name": "gps-{n}", "port": "/dev/ttyACM0"}, {}, "not 'port'"),
        ({"name": "gps", "match": {"path": "/dev/tty*"}}, {}, "devices[0].match.path: a path glob is for a device"),
        ({"name": "gps-{n}", "match": {"path": "ttyACM*"}}, {}, "devices[0].match.path: expected an absolute path"),
        ({"name": "gps-{n}", "match": {"path": 3}}, {}, "devices[0].match.path: expected an absolute path"),
        ({"name": "gps-{n}", "match": {}}, {}, "expected at least one of vid, pid, serial, path"),
        ({"name": "p", "port": "/dev/null"}, {"scan_interval": 0.01}, "serial.scan_interval: expected a number"),
        ({"name": "p", "port": "/dev/null"}, {"remove_after": -1}, "serial.remove_after: expected a number"),
        ({"name": "p", "port": "/dev/null"}, {"hotplug": "poll"}, "serial.hotplug: expected one of auto, udev, scan"),
    ],
)
def test_template_mistakes_are_one_line(device: dict[str, Any], serial: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(device, **serial)
    text = str(caught.value)
    assert expected in text and "\n" not in text


def test_two_templates_with_one_pattern_are_refused() -> None:
    t = {"name": "gps-{n}", "match": {"vid": 1}, "codec": "lines"}
    with pytest.raises(ConfigError, match=r"devices\[1\].name: duplicate device name 'gps-\{n\}'"):
        config_from_dict({"devices": [t, t]})


# -- the command line ------------------------------------------------------------------


def test_config_check_and_run_take_a_config_of_templates_only(tmp_path: Path) -> None:
    (tmp_path / "ports").mkdir()
    config = tmp_path / "gw.toml"
    config.write_text(
        '[serial]\nhotplug = "scan"\n\n'
        f'[[devices]]\nname = "gps-{{n}}"\ncodec = "lines"\nmatch = {{ path = "{tmp_path}/ports/*" }}\n\n'
        f'[[sinks]]\ntype = "jsonl"\npath = "{tmp_path}/frames.jsonl"\n'
    )
    checked = cli("config", "check", "-c", str(config), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "OK (0 devices, 1 device templates, 1 sinks" in checked.stdout
    # no device yet is not "no device to read": the template waits for boards
    ran = cli("run", "-q", "-c", str(config), "--control", str(tmp_path / "s.sock"), "--duration", "0.3", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr


async def test_a_gone_boards_device_lets_go_of_its_path_when_another_board_gets_it(fh_ports, fh_runtime, fh_jsonl):
    """The kernel gives the next board the lowest free ttyACMn: the device of the
    board that left must not go on reading it beside the new board's device."""
    listing = Ports()
    config = {
        "serial": {"scan_interval": 0.05, "remove_after": 30, "hotplug": "scan"},
        "devices": [{"name": "gps-{serial}", "match": {"vid": 0x1546}, "codec": "lines", **FASTER}],
        "sinks": [{"type": "jsonl", "path": str(fh_jsonl)}],
    }
    acm0 = fh_ports.new("ttyACM0")
    listing.ports = [usb_port(acm0.path, "SA")]
    async with fh_runtime(config, ports=listing) as rt:
        await rt.wait_state("gps-SA", "connected")
        acm0.unplug()
        listing.ports = []
        await rt.wait_state("gps-SA", "backoff")
        acm0.plug()
        listing.ports = [usb_port(acm0.path, "SB")]  # another board, the same path
        await rt.wait_until(lambda s: s["devices"]["gps-SA"]["removed"], 5)  # at once, not after remove_after
        await rt.wait_state("gps-SB", "connected")
        await acm0.write(b"".join(b"B line %d\n" % i for i in range(20)))
        status = await rt.wait_frames("gps-SB", 20)
        assert status["devices"]["gps-SA"]["frames"] == 0


async def test_two_ports_of_one_usb_chip_are_two_devices(fh_ports, fh_runtime, fh_jsonl):
    """An FT2232, a CP2105 or a two-port CDC board gives both ttys one serial
    number; the interface (or, without one, the path) tells them apart."""
    listing = Ports()
    config = {
        "serial": {"scan_interval": 0.05, "remove_after": 30, "hotplug": "scan"},
        "devices": [{"name": "ft-{n}", "match": {"vid": 0x0403}, "codec": "lines", **FASTER}],
        "sinks": [{"type": "jsonl", "path": str(fh_jsonl)}],
    }
    a, b, c, d = (fh_ports.new(f"usb{i}") for i in range(4))
    listing.ports = [
        usb_port(a.path, "FT1", vid=0x0403, pid=0x6010, interface="1.0"),
        usb_port(b.path, "FT1", vid=0x0403, pid=0x6010, interface="1.1"),
        usb_port(c.path, "FT2", vid=0x0403, pid=0x6010),  # a lister that gives no interface
        usb_port(d.path, "FT2", vid=0x0403, pid=0x6010),
    ]
    async with fh_runtime(config, ports=listing) as rt:
        for name in ("ft-1", "ft-2", "ft-3", "ft-4"):
            await rt.wait_state(name, "connected")
        for _ in range(5):  # and stays so, scan after scan
            await rt.hotplug.scan()
        status = await rt.status()
        assert {n: (dev["port"], dev["removed"], dev["reconnects"]) for n, dev in status["devices"].items()} == {
            "ft-1": (a.path, False, 0),
            "ft-2": (b.path, False, 0),
            "ft-3": (c.path, False, 0),
            "ft-4": (d.path, False, 0),
        }
        # the first chip re-enumerates on other paths: each device follows its interface
        e, f = fh_ports.new("usb4"), fh_ports.new("usb5")
        listing.ports[:2] = [
            usb_port(f.path, "FT1", vid=0x0403, pid=0x6010, interface="1.1"),
            usb_port(e.path, "FT1", vid=0x0403, pid=0x6010, interface="1.0"),
        ]
        await rt.hotplug.scan()
        status = await rt.status()
        live = {n: dev["port"] for n, dev in status["devices"].items() if not dev["removed"]}
        assert live == {"ft-1": e.path, "ft-2": f.path, "ft-3": c.path, "ft-4": d.path}


def test_the_interface_is_read_from_pyserials_location():
    from types import SimpleNamespace

    from firmware_host.transport.ports import _from_comport

    def info(location):
        return SimpleNamespace(device="/dev/ttyUSB0", vid=0x0403, pid=0x6010, serial_number="FT1", location=location)

    assert _from_comport(info("1-1.2:1.0")).interface == "1.0"
    assert _from_comport(info("1-1.2:1.1")).interface == "1.1"
    assert _from_comport(info("1-1.2")).interface is None  # no interface part
    assert _from_comport(info(None)).interface is None
