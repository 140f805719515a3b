"""What wakes the template watcher (``firmware_host/transport/hotplug.py``):
the trigger each ``[serial] hotplug`` mode gives, its interval, its one-line
errors, and how one wake-up takes udev's queued events (tests written from
mutation testing, docs/testing-internals.md). This machine has no udevd:
pyudev's monitor is stood in for by a socketpair, one byte an event, read by
the loop as pyudev's netlink socket would be."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from firmware_host.errors import ConfigError
from firmware_host.transport import hotplug
from firmware_host.transport.hotplug import IntervalTrigger, UdevTrigger, make_trigger

pytestmark = pytest.mark.timeout(10)

CONTEXT = object()  # the pyudev.Context() the monitor must be built from


class SocketMonitor:
    """pyudev.Monitor's part the trigger uses, on one end of a socketpair."""

    def __init__(self) -> None:
        self.ours, self.kernel = socket.socketpair()
        self.ours.setblocking(False)
        self.contexts: list[object] = []
        self.taken = 0

    def filter_by(self, subsystem: str) -> None:
        pass

    def start(self) -> None:
        pass

    def fileno(self) -> int:
        return self.ours.fileno()

    def poll(self, timeout: float) -> bytes | None:
        assert timeout == 0
        try:
            got = self.ours.recv(1)
        except BlockingIOError:
            return None
        self.taken += 1
        return got

    def event(self, count: int = 1) -> None:
        self.kernel.sendall(b"e" * count)

    def close(self) -> None:
        self.ours.close()
        self.kernel.close()


@pytest.fixture
def monitor() -> Iterator[SocketMonitor]:
    m = SocketMonitor()
    yield m
    m.close()


def fake_pyudev(monitor: SocketMonitor, fail: OSError | None = None) -> Any:
    def from_netlink(ctx: object) -> SocketMonitor:
        monitor.contexts.append(ctx)
        if fail is not None:
            raise fail
        return monitor

    return SimpleNamespace(Context=lambda: CONTEXT, Monitor=SimpleNamespace(from_netlink=from_netlink))


@pytest.fixture
def udevd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    control = tmp_path / "control"
    control.touch()
    monkeypatch.setattr(hotplug, "UDEV_CONTROL", str(control))


# -- which trigger, at which interval ------------------------------------------------------


def test_auto_without_pyudev_scans_at_the_interval_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyudev", None)
    trigger = make_trigger("auto", 2.5)
    assert isinstance(trigger, IntervalTrigger) and trigger.interval == 2.5


def test_auto_without_udevd_scans_at_the_interval_given(
    monkeypatch: pytest.MonkeyPatch, monitor: SocketMonitor, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "pyudev", fake_pyudev(monitor))
    monkeypatch.setattr(hotplug, "UDEV_CONTROL", str(tmp_path / "absent"))
    trigger = make_trigger("auto", 2.5)
    assert isinstance(trigger, IntervalTrigger) and trigger.interval == 2.5
    assert monitor.contexts == []  # no monitor was made


def test_auto_with_no_netlink_socket_scans_at_the_interval_given(
    monkeypatch: pytest.MonkeyPatch, monitor: SocketMonitor, udevd: None
) -> None:
    monkeypatch.setitem(sys.modules, "pyudev", fake_pyudev(monitor, PermissionError(1, "Operation not permitted")))
    trigger = make_trigger("auto", 2.5)
    assert isinstance(trigger, IntervalTrigger) and trigger.interval == 2.5


def test_the_udev_monitor_is_made_from_pyudevs_context(
    monkeypatch: pytest.MonkeyPatch, monitor: SocketMonitor, udevd: None
) -> None:
    monkeypatch.setitem(sys.modules, "pyudev", fake_pyudev(monitor))
    assert isinstance(make_trigger("udev", 2.5), UdevTrigger)
    assert monitor.contexts == [CONTEXT]


# -- the errors of hotplug = "udev": one line naming the source and the key ------------------


def test_the_default_source_is_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyudev", None)
    with pytest.raises(ConfigError) as caught:
        make_trigger("udev", 1.0)
    assert (caught.value.source, caught.value.key) == ("<config>", "serial.hotplug")
    assert str(caught.value).startswith('<config>: serial.hotplug: [serial] hotplug = "udev" needs pyudev (')


def test_udev_without_udevd_names_source_key_and_the_control_socket(
    monkeypatch: pytest.MonkeyPatch, monitor: SocketMonitor, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "pyudev", fake_pyudev(monitor))
    absent = str(tmp_path / "absent")
    monkeypatch.setattr(hotplug, "UDEV_CONTROL", absent)
    with pytest.raises(ConfigError) as caught:
        make_trigger("udev", 1.0, source="gw.toml")
    assert (caught.value.source, caught.value.key) == ("gw.toml", "serial.hotplug")
    assert (
        str(caught.value)
        == f'gw.toml: serial.hotplug: [serial] hotplug = "udev" needs udevd running (no {absent}); use "scan"'
    )


def test_udev_with_no_netlink_socket_is_one_line_naming_the_os_error(
    monkeypatch: pytest.MonkeyPatch, monitor: SocketMonitor, udevd: None
) -> None:
    monkeypatch.setitem(sys.modules, "pyudev", fake_pyudev(monitor, PermissionError(1, "Operation not permitted")))
    with pytest.raises(ConfigError) as caught:
        make_trigger("udev", 1.0, source="gw.toml")
    assert (caught.value.source, caught.value.key) == ("gw.toml", "serial.hotplug")
    assert str(caught.value) == (
        "gw.toml: serial.hotplug: [serial] hotplug: cannot listen to udev: [Errno 1] Operation not permitted"
    )
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# -- one wake-up per batch of events ---------------------------------------------------------


async def test_one_wake_up_takes_every_queued_event(
    monkeypatch: pytest.MonkeyPatch, monitor: SocketMonitor, udevd: None
) -> None:
    monkeypatch.setitem(sys.modules, "pyudev", fake_pyudev(monitor))
    trigger = make_trigger("udev", 3600)
    monitor.event(3)
    await trigger.wait()
    # the wake-up that returned took all three, not one of them
    assert monitor.taken == 3
    again = asyncio.ensure_future(trigger.wait())
    for _ in range(5):  # loop turns in which a leftover event would have woken it
        await asyncio.sleep(0)
    assert not again.done()
    monitor.event()
    await asyncio.wait_for(again, 5)
    assert monitor.taken == 4
    trigger.close()


async def test_a_storm_of_events_is_taken_at_most_256_per_wake_up(
    monkeypatch: pytest.MonkeyPatch, monitor: SocketMonitor, udevd: None
) -> None:
    monkeypatch.setitem(sys.modules, "pyudev", fake_pyudev(monitor))
    trigger = make_trigger("udev", 3600)
    monitor.event(300)
    await trigger.wait()
    assert monitor.taken == 256
    await asyncio.wait_for(trigger.wait(), 5)  # the other 44 wake it once more
    assert monitor.taken == 300
    trigger.close()


async def test_close_twice_is_harmless(monkeypatch: pytest.MonkeyPatch, monitor: SocketMonitor, udevd: None) -> None:
    monkeypatch.setitem(sys.modules, "pyudev", fake_pyudev(monitor))
    trigger = make_trigger("udev", 3600)
    trigger.close()  # before any wait: nothing to remove
    monitor.event()
    await asyncio.wait_for(trigger.wait(), 5)
    trigger.close()
    trigger.close()  # a teardown path may close again: a no-op, not an error
    monitor.event()
    await asyncio.sleep(0)
    assert monitor.taken == 1  # closed: nobody reads the socket
