"""Issue 21: what wakes the template watcher. ``[serial] hotplug`` picks udev
events or the interval; udev's monitor is stood in for by a pipe (this machine
has no udevd): a byte written is an event, read by the loop like pyudev's
netlink socket."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from firmware_host.config import ConfigError
from firmware_host.runtime import Runtime
from firmware_host.testing import assert_accounting
from firmware_host.testing.harness import make_config
from firmware_host.transport import hotplug
from firmware_host.transport.hotplug import IntervalTrigger, UdevTrigger, make_trigger
from tests.test_templates import Ports, usb_port

pytestmark = pytest.mark.timeout(15)


class PipeMonitor:
    """pyudev.Monitor's part the trigger uses, on a pipe."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self.subsystems: list[str] = []
        self.started = False
        self.taken = 0

    def filter_by(self, subsystem: str) -> None:
        self.subsystems.append(subsystem)

    def start(self) -> None:
        self.started = True

    def fileno(self) -> int:
        return self.read_fd

    def poll(self, timeout: float) -> bytes | None:
        assert timeout == 0  # never blocks the loop
        try:
            got = os.read(self.read_fd, 1)
        except BlockingIOError:
            return None
        self.taken += 1
        return got

    def event(self, count: int = 1) -> None:
        os.write(self.write_fd, b"e" * count)

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


@pytest.fixture
def monitor() -> Iterator[PipeMonitor]:
    m = PipeMonitor()
    yield m
    m.close()


def fake_pyudev(monitor: PipeMonitor) -> Any:
    return SimpleNamespace(Context=lambda: "context", Monitor=SimpleNamespace(from_netlink=lambda ctx: monitor))


@pytest.fixture
def udev(monkeypatch: pytest.MonkeyPatch, monitor: PipeMonitor, tmp_path: Path) -> PipeMonitor:
    """pyudev "installed" and udevd "running"."""
    control = tmp_path / "control"
    control.touch()
    monkeypatch.setitem(sys.modules, "pyudev", fake_pyudev(monitor))
    monkeypatch.setattr(hotplug, "UDEV_CONTROL", str(control))
    return monitor


def test_scan_is_the_interval() -> None:
    trigger = make_trigger("scan", 0.5)
    assert isinstance(trigger, IntervalTrigger) and trigger.interval == 0.5


def test_without_pyudev_auto_scans_and_udev_is_one_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyudev", None)  # as when the [udev] extra is not installed
    assert isinstance(make_trigger("auto", 1.0), IntervalTrigger)
    with pytest.raises(ConfigError) as caught:
        make_trigger("udev", 1.0, source="gw.toml")
    assert str(caught.value).startswith('gw.toml: serial.hotplug: [serial] hotplug = "udev" needs pyudev')
    assert "pip install 'firmware-host[udev]'" in str(caught.value) and "\n" not in str(caught.value)


def test_without_udevd_auto_scans(monkeypatch: pytest.MonkeyPatch, monitor: PipeMonitor, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pyudev", fake_pyudev(monitor))
    monkeypatch.setattr(hotplug, "UDEV_CONTROL", str(tmp_path / "absent"))
    assert isinstance(make_trigger("auto", 1.0), IntervalTrigger)
    with pytest.raises(ConfigError, match="needs udevd running"):
        make_trigger("udev", 1.0)


async def test_udev_events_wake_the_trigger_once_per_batch(udev: PipeMonitor) -> None:
    trigger = make_trigger("auto", 3600)  # the interval would never fire within the test
    assert isinstance(trigger, UdevTrigger)
    assert udev.subsystems == ["tty"] and udev.started
    waiting = asyncio.ensure_future(trigger.wait())
    await asyncio.sleep(0)  # (lets the first wait register the reader)
    assert not waiting.done()
    udev.event(3)
    await asyncio.wait_for(waiting, 5)
    assert udev.taken == 3  # the events were taken off the socket
    trigger.close()
    udev.event()
    await asyncio.sleep(0.05)  # closed: nobody reads the pipe any more (a short, bounded look)
    assert udev.taken == 3


async def test_a_runtime_on_udev_scans_on_events_and_removes_on_time(udev: PipeMonitor, fh_ports, tmp_path) -> None:
    listing = Ports()
    config = make_config(
        {
            # scan_interval is long: only events (and the removal deadline) may wake the watcher
            "serial": {"hotplug": "udev", "scan_interval": 3600, "remove_after": 0.2},
            "devices": [{"name": "gps-{serial}", "match": {"vid": 0x1546}, "codec": "lines"}],
            "sinks": [{"type": "jsonl", "path": str(tmp_path / "f.jsonl")}],
        }
    )
    rt = Runtime(config, ports=listing)
    await rt.start()
    try:
        assert rt.hotplug is not None and len(listing.calls) == 1  # the listing at start
        port = fh_ports.new("acm0")
        listing.ports = [usb_port(port.path, "S1")]
        udev.event()
        await rt.wait_until(lambda s: "gps-S1" in s["devices"], 5)
        await rt.wait_until(lambda s: s["devices"]["gps-S1"]["state"] == "connected", 5)
        port.unplug()
        listing.ports = []
        udev.event()
        # no event after this one: the removal deadline itself wakes the watcher
        status = await rt.wait_until(lambda s: s["devices"]["gps-S1"]["removed"], 5)
        assert status["devices"]["gps-S1"]["template"] == "gps-{serial}"
        assert len(listing.calls) == 4  # start, two events, the deadline: nothing else
    finally:
        summary = await rt.shutdown()
    assert_accounting(summary.status)


async def test_hotplug_udev_without_pyudev_stops_start_with_one_line(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "pyudev", None)
    config = make_config(
        {
            "serial": {"hotplug": "udev"},
            "devices": [{"name": "gps-{n}", "match": {"vid": 1}, "codec": "lines"}],
            "sinks": [{"type": "jsonl", "path": str(tmp_path / "f.jsonl")}],
        }
    )
    rt = Runtime(config, ports=Ports())
    with pytest.raises(ConfigError, match=r"serial.hotplug: .*needs pyudev"):
        await rt.start()
    assert rt.hotplug is None and not rt.supervisor.report()  # nothing was started
