"""Auto-detection: serial ports on this host, the board each one is, and
finding a device again by its USB ids after it re-enumerates.

A board unplugged and plugged back often comes back as another
``/dev/ttyACMn``; a device configured with ``match`` (vid, pid, serial) is
therefore looked up again at every (re)connect, not once at start-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from serial.tools.list_ports import comports

from firmware_host.config.boards import Board, load_boards, match_board

if TYPE_CHECKING:  # `devices` should not import the asyncio serial stack
    from firmware_host.transport.base import UrlResolver

__all__ = ["describe_match", "list_devices", "match_resolver", "port_matches"]


def _vid_pid(info: Any) -> str | None:
    vid, pid = getattr(info, "vid", None), getattr(info, "pid", None)
    if vid is None or pid is None:
        return None
    return f"{vid:04x}:{pid:04x}"


def list_devices(boards: Mapping[str, Board] | None = None) -> list[dict[str, Any]]:
    """Serial ports on this host (``pyserial`` ``comports()``) with the board each matches.

    Blocking (it scans sysfs); the CLI calls it directly, async code should
    run it in an executor. Raises BoardError if ``boards`` is None and a
    board file is invalid.
    """
    if boards is None:
        boards = load_boards()
    found = []
    for info in sorted(comports(), key=lambda p: p.device):
        board = match_board(getattr(info, "vid", None), getattr(info, "pid", None), boards)
        found.append(
            {
                "port": info.device,
                "description": info.description if info.description not in (None, "n/a") else None,
                "vid_pid": _vid_pid(info),
                "serial": getattr(info, "serial_number", None),
                "board": board.name if board is not None else None,
            }
        )
    return found


def port_matches(info: Any, match: Mapping[str, object]) -> bool:
    """True if a ``comports()`` entry has every id ``match`` names (vid, pid, serial)."""
    for key, attr in (("vid", "vid"), ("pid", "pid"), ("serial", "serial_number")):
        if key in match and getattr(info, attr, None) != match[key]:
            return False
    return True


def describe_match(match: Mapping[str, object]) -> str:
    parts = []
    for key in ("vid", "pid"):
        value = match.get(key)
        if isinstance(value, int):
            parts.append(f"{key}=0x{value:04x}")
    if "serial" in match:
        parts.append(f"serial={match['serial']!r}")
    return " ".join(parts) or "(nothing)"


def match_resolver(match: Mapping[str, object]) -> UrlResolver:
    """An async ``resolve() -> path`` for the first port whose USB ids match.

    Raises LookupError when none does; the reader counts that as a failed
    connect and backs off, so a board plugged in later is picked up.
    """
    wanted = dict(match)
    text = describe_match(wanted)

    async def resolve() -> str:
        loop = asyncio.get_running_loop()
        # comports() walks sysfs: off the event loop
        ports = await loop.run_in_executor(None, lambda: sorted(comports(), key=lambda p: p.device))
        for info in ports:
            if port_matches(info, wanted):
                return str(info.device)
        raise LookupError(f"no port matches {text}")

    return resolve
