"""Listing the ports a device template may take: the seam and the real one.

A listing is blocking (it walks sysfs and the file system): the watcher
(firmware_host.templates) calls it in an executor, once per scan. Tests put
their own ``PortLister`` in its place to present ptys with chosen USB ids.
"""

from __future__ import annotations

import glob as _glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from serial.tools.list_ports import comports

__all__ = ["PortInfo", "PortLister", "SystemPorts"]

#: the most paths one glob may yield per scan: a glob over a huge directory is
#: a mistake, and its listing must not grow without bound
MAX_GLOB_MATCHES = 1024


@dataclass(frozen=True)
class PortInfo:
    """One port as a template sees it."""

    #: what the device opens: a node of the system's listing, or a path a glob found
    path: str
    #: ``path`` with its symlinks resolved: one board, however many names lead to it
    real: str
    vid: int | None = None
    pid: int | None = None
    serial: str | None = None
    #: the ``match.path`` glob that found it; None: the system's serial port listing
    glob: str | None = None
    #: the USB interface (``"1.0"``, from ``location``): a dual-port chip (FT2232, CP2105) or a
    #: two-port CDC board gives both ttys one serial number and tells them apart by this
    interface: str | None = None


class PortLister(Protocol):
    def list_ports(self, globs: Sequence[str], usb: bool) -> list[PortInfo]:
        """The ports now present: the system's serial ports when ``usb`` (with
        their USB ids), and every path each of ``globs`` matches (with the USB
        ids of the port it leads to, when ``usb``). Blocking."""
        ...


class SystemPorts:
    """This host's ports: pyserial's ``comports()`` and ``glob`` over paths."""

    def list_ports(self, globs: Sequence[str], usb: bool) -> list[PortInfo]:
        system = [_from_comport(info) for info in comports()] if usb else []
        by_real = {p.real: p for p in system}
        found = sorted(system, key=lambda p: p.path)
        for pattern in globs:
            for path in sorted(_glob.glob(pattern))[:MAX_GLOB_MATCHES]:
                real = os.path.realpath(path)
                ids = by_real.get(real)
                found.append(
                    PortInfo(
                        path,
                        real,
                        ids.vid if ids else None,
                        ids.pid if ids else None,
                        ids.serial if ids else None,
                        glob=pattern,
                        interface=ids.interface if ids else None,
                    )
                )
        return found


def _from_comport(info: Any) -> PortInfo:
    # a pyserial ListPortInfo (untyped): each field checked for what it must be
    path = str(info.device)
    vid, pid, serial, location = info.vid, info.pid, info.serial_number, info.location
    # "1-1.2:1.0": the bus path, then the configuration and interface after the colon
    interface = (location.rpartition(":")[2] or None) if isinstance(location, str) and ":" in location else None
    return PortInfo(
        path,
        os.path.realpath(path),
        vid if isinstance(vid, int) else None,
        pid if isinstance(pid, int) else None,
        serial if isinstance(serial, str) and serial else None,
        interface=interface,
    )
