"""Device templates: a device for each port a template matches while the
runtime runs (docs/config.md, "Device templates").

A ``[[devices]]`` entry whose name holds a placeholder (``gps-{serial}``,
``gps-{n}``) is a template. The watcher lists the ports at start and after
each trigger (udev events, or every ``[serial] scan_interval``), in an
executor; a port a template matches becomes a device (``Runtime.add_device``).
A port that goes away leaves its device in ``backoff`` (its reader retries by
itself) and, ``[serial] remove_after`` later, removed (``remove_device``); one
that comes back sooner is the same device again. Nothing here runs per frame.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from firmware_host._sync import Changes
from firmware_host.cancel import CancellationToken
from firmware_host.config import Config, DeviceConfig
from firmware_host.config.schema import NAME_EXPECTED, NAME_PATTERN, template_placeholders
from firmware_host.errors import DeviceExists, ShuttingDown
from firmware_host.transport.hotplug import ScanTrigger, make_trigger
from firmware_host.transport.ports import PortInfo, PortLister, SystemPorts

__all__ = ["Claim", "DeviceHost", "TemplateWatcher", "render_name", "watcher_for"]

log = logging.getLogger("firmware_host.templates")

#: characters a placeholder's value may not bring into a name (a USB serial
#: number may hold anything): each becomes "_"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
#: the most ``{n}`` numbers tried for one port: past them every name is taken
MAX_NUMBERS = 10_000
#: placeholders that need the USB ids of a port (the system's listing)
_USB_PLACEHOLDERS = frozenset({"serial", "vid", "pid"})

#: what tells two ports apart across scans: the USB serial number when the port
#: has one (the same board on another /dev/ttyACMn is the same device), else the path
Identity = tuple[object, ...]


class DeviceHost(Protocol):
    """What the watcher needs of the runtime."""

    async def add_device(self, dc: DeviceConfig) -> None: ...

    async def remove_device(self, name: str) -> None: ...


@dataclass
class Claim:
    """A device a template made, and whether its port is there."""

    config: DeviceConfig
    #: loop time the port was first missed; None while it is listed
    missing_since: float | None = None

    @property
    def name(self) -> str:
        return self.config.name


def identity(info: PortInfo) -> Identity:
    # a board by its serial number (and interface: two ports of one chip share the number),
    # wherever it enumerates; a board without one by its path
    return ("usb", info.vid, info.pid, info.serial, info.interface) if info.serial else ("path", info.path)


def fits(template: DeviceConfig, info: PortInfo) -> bool:
    """``info`` is one of ``template``'s ports: found by its glob (or by the
    system's listing when it has none) and with every USB id it names."""
    match = template.match or {}
    if info.glob != match.get("path"):
        return False
    have = {"vid": info.vid, "pid": info.pid, "serial": info.serial}
    return all(have[key] == match[key] for key in ("vid", "pid", "serial") if key in match)


def _needs_usb(template: DeviceConfig) -> bool:
    match = template.match or {}
    return "path" not in match or len(match) > 1 or bool(template_placeholders(template.name) & _USB_PLACEHOLDERS)


def render_name(pattern: str, info: PortInfo, n: int) -> str:
    """The device name ``pattern`` gives ``info`` (``n`` for ``{n}``);
    ValueError says why there is none."""
    values = {
        "serial": info.serial,
        "vid": None if info.vid is None else f"{info.vid:04x}",
        "pid": None if info.pid is None else f"{info.pid:04x}",
        "basename": os.path.basename(info.path) or None,
        "n": str(n),
    }
    missing = sorted(p for p in template_placeholders(pattern) if values[p] is None)
    if missing:
        raise ValueError(f"the port has no {', '.join(missing)} for {pattern!r}")
    name = pattern.format(**{key: _UNSAFE.sub("_", value) for key, value in values.items() if value is not None})
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"{pattern!r} gives {name!r}, not a device name ({NAME_EXPECTED})")
    return name


class TemplateWatcher:
    """Owned by the runtime: ``await start()`` (the first scan, then a task),
    ``await stop()`` before the readers stop."""

    def __init__(
        self,
        host: DeviceHost,
        templates: Sequence[DeviceConfig],
        *,
        lister: PortLister,
        trigger: ScanTrigger,
        remove_after: float,
        exclude: Sequence[str] = (),
        changes: Changes | None = None,
    ) -> None:
        self.host = host
        #: poked after a scan that changed a claim (``Runtime.wait_until`` sees it)
        self.changes = changes or Changes()
        self.templates = list(templates)
        self.lister = lister
        self.trigger = trigger
        self.remove_after = remove_after
        #: ports a plain device names: left to it (two readers would split its bytes)
        self.exclude = list(exclude)
        self.globs = list(dict.fromkeys(str(t.match["path"]) for t in self.templates if t.match and "path" in t.match))
        # the system's listing (comports) only when some template needs it
        self.usb = any(_needs_usb(t) for t in self.templates)
        #: (template index, port identity) -> the device made of it
        self.claims: dict[tuple[int, Identity], Claim] = {}
        #: listings done so far
        self.scans = 0
        self._warned: set[tuple[int, Identity]] = set()
        self._last_error: str | None = None
        self._token = CancellationToken()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._scan_logged()  # the ports present at start are devices once start returns
        self._task = asyncio.create_task(self._run(), name="device-templates")

    async def stop(self) -> None:
        self._token.cancel()
        if self._task is not None:
            await self._task  # finishes an add or remove in progress: never half done
        self.trigger.close()

    async def _run(self) -> None:
        try:
            while not self._token.is_cancelled:
                await self._token.run_until_cancelled(self._wait())
                if self._token.is_cancelled:
                    return
                await self._scan_logged()
        except Exception:  # a bug (or a trigger that broke): the devices made so far keep running
            log.exception("device templates: the watcher stopped; no device comes or goes any more")

    async def _wait(self) -> None:
        """Until the trigger fires, or the next removal is due."""
        due = [c.missing_since + self.remove_after for c in self.claims.values() if c.missing_since is not None]
        try:
            async with asyncio.timeout_at(min(due) if due else None):
                await self.trigger.wait()
        except TimeoutError:
            pass

    async def _scan_logged(self) -> None:
        try:
            await self.scan()
        except Exception as exc:  # a listing that failed (or a bug): say it once, try again next time
            text = f"{type(exc).__name__}: {exc}"
            if text != self._last_error:
                log.warning(
                    "device templates: listing the ports failed: %s", text, exc_info=not isinstance(exc, OSError)
                )
            self._last_error = text
        else:
            self._last_error = None

    def _list(self) -> tuple[list[PortInfo], set[str]]:
        # blocking (sysfs, the file system): runs in an executor
        excluded = {os.path.realpath(p) for p in self.exclude}
        return self.lister.list_ports(self.globs, self.usb), excluded

    async def scan(self) -> None:
        """One listing, and the devices it adds, moves and removes."""
        loop = asyncio.get_running_loop()
        listed = await self._token.run_until_cancelled(loop.run_in_executor(None, self._list))
        if listed is None:
            return
        ports, taken = listed
        self.scans += 1
        before = self._state()
        now = loop.time()
        seen: set[tuple[int, Identity]] = set()
        present: set[tuple[int, Identity]] = set()
        await self._release_reused(ports)
        for index, template in enumerate(self.templates):
            for info in ports:
                # a port is one device's: the first template (in file order) that fits takes it
                if info.real in taken or not fits(template, info):
                    continue
                key = (index, identity(info))
                if key in seen:  # a second port with the same serial and no interface to tell them apart
                    key = (index, ("path", info.path))
                present.add(key)
                claim = self.claims.get(key)
                if claim is None:
                    claim = await self._claim(key, template, info)
                    if claim is None:
                        continue
                else:
                    await self._seen_again(claim, info)
                taken.add(info.real)
                seen.add(key)
        self._warned &= present  # a port that left and comes back is warned about again
        for key, claim in list(self.claims.items()):
            if key in seen:
                continue
            if claim.missing_since is None:
                claim.missing_since = now
                log.info(
                    "device %s: its port %s is gone; removed in %gs unless it comes back",
                    claim.name,
                    claim.config.port,
                    self.remove_after,
                )
            elif now >= claim.missing_since + self.remove_after:
                del self.claims[key]
                try:
                    await self.host.remove_device(claim.name)
                except KeyError:  # removed by hand already
                    continue
                log.info("device %s removed: its port was gone for %gs", claim.name, self.remove_after)
        if self._state() != before:
            self.changes.notify()

    async def _release_reused(self, ports: list[PortInfo]) -> None:
        """A gone board's device whose path another board now has goes at once:
        its reader, still retrying that path, would read the new board's bytes
        beside the new board's own device (the kernel hands the next board the
        lowest free ``ttyACMn``, often the one just freed)."""
        listed = {info.path: identity(info) for info in ports}
        for key, claim in list(self.claims.items()):
            path = claim.config.port or ""
            now_there = listed.get(path)
            # a claim by path (no serial, or a second port sharing one) is whatever is there
            if now_there is None or now_there == key[1] or key[1] == ("path", path):
                continue
            del self.claims[key]
            try:
                await self.host.remove_device(claim.name)
            except KeyError:  # removed by hand already
                continue
            log.info("device %s removed: its port %s is now another board's", claim.name, claim.config.port)

    def _state(self) -> dict[tuple[int, Identity], tuple[str | None, bool]]:
        return {key: (c.config.port, c.missing_since is None) for key, c in self.claims.items()}

    async def _claim(self, key: tuple[int, Identity], template: DeviceConfig, info: PortInfo) -> Claim | None:
        numbered = "n" in template_placeholders(template.name)
        mine = {c.name for c in self.claims.values()}
        for n in range(1, MAX_NUMBERS + 1) if numbered else (0,):
            try:
                name = render_name(template.name, info, n)
            except ValueError as exc:
                self._warn(key, f"template {template.name!r}: port {info.path} left alone: {exc}")
                return None
            if name in mine:
                continue
            dc = dataclasses.replace(template, name=name, port=info.path, match=None)
            try:
                await self.host.add_device(dc)
            except DeviceExists:
                if numbered:
                    continue  # a device of that name exists: the next number
                self._warn(key, f"template {template.name!r}: port {info.path} left alone: device {name!r} exists")
                return None
            except ShuttingDown:
                return None
            except (ValueError, TypeError) as exc:  # its codec refused its options (a plugin codec's)
                self._warn(key, f"template {template.name!r}: port {info.path} left alone: {exc}")
                return None
            claim = Claim(dc)
            self.claims[key] = claim
            log.info("template %r: port %s is device %s", template.name, info.path, name)
            return claim
        self._warn(key, f"template {template.name!r}: port {info.path} left alone: every number is taken")
        return None

    async def _seen_again(self, claim: Claim, info: PortInfo) -> None:
        if claim.missing_since is not None:
            claim.missing_since = None
            log.info("device %s: its port %s is back", claim.name, info.path)
        if claim.config.port == info.path:
            return
        # the same board re-enumerated under another path: its reader moves there
        moved = dataclasses.replace(claim.config, port=info.path)
        try:
            await self.host.remove_device(claim.name)
        except KeyError:  # removed by hand: it stays removed while its port stays
            claim.config = moved
            return
        claim.config = moved
        try:
            await self.host.add_device(moved)
        except ShuttingDown:
            return
        log.info("device %s: its port moved to %s", claim.name, info.path)

    def _warn(self, key: tuple[int, Identity], message: str) -> None:
        if key not in self._warned:  # once while the port stays
            self._warned.add(key)
            log.warning("%s", message)


def watcher_for(
    host: DeviceHost, config: Config, lister: PortLister | None = None, changes: Changes | None = None
) -> TemplateWatcher | None:
    """The watcher ``config``'s templates need (None without templates); a
    ``[serial] hotplug`` the host cannot do is a ConfigError. On the loop."""
    if not config.templates:
        return None
    serial = config.serial
    return TemplateWatcher(
        host,
        config.templates,
        lister=lister or SystemPorts(),
        trigger=make_trigger(serial.hotplug, serial.scan_interval, source=config.source),
        remove_after=serial.remove_after,
        exclude=[d.port for d in config.devices if d.port is not None and "://" not in d.port],
        changes=changes,
    )
