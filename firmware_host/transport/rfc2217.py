"""``rfc2217://host:port`` devices: a serial port on a device server, by RFC 2217.

A small client of our own on asyncio, not pyserial's ``rfc2217.Serial``:
that one reads with a thread per port and waits with ``select()`` (which
cannot take a descriptor >= 1024), blocks its caller for up to 3 s per
option waiting for acknowledgements (ser2net never acknowledges
SET-CONTROL: "timeout while waiting for option 'control'"), and refuses the
write timeout pyserial-asyncio sets. Here the connection is one socket in
the event loop's own selector, like ``socket://`` (``tcp.py``), with the
telnet layer (``telnet.py``) in between:

- at connect we offer COM-PORT-OPTION (and BINARY and SGA both ways, so the
  data passes untranslated); once the server agrees (``DO
  COM-PORT-OPTION``) we send the line settings: the device's baudrate, 8
  data bits, no parity, 1 stop bit, no flow control;
- the open waits until the server acknowledged baudrate, data size, parity
  and stop size (not SET-CONTROL, which servers answer in their own ways),
  at most ``timeout`` seconds (``NEGOTIATION_TIMEOUT``, or ``?timeout=S``).
  A server that does not acknowledge some of them is not waited for again
  at later opens of the same URL (``ServerQuirks``, said once at debug
  level): the port works, as with pyserial's ``?ign_set_control``;
- a server that refuses COM-PORT-OPTION is not an RFC 2217 server: the open
  fails in words (the device backs off and retries like any failed open);
- data bytes 255 are doubled on the way out and undoubled on the way in.

A closed connection is ``PortClosed``, so a server restart or a network drop
reconnects with backoff like a USB unplug.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import struct
from collections.abc import Mapping
from typing import Any

from firmware_host.errors import PortClosed
from firmware_host.transport.limits import NEGOTIATION_TIMEOUT
from firmware_host.transport.stream import ChunkProtocol, StreamPort
from firmware_host.transport.tcp import connect, split_host_url
from firmware_host.transport.telnet import (
    BINARY,
    COM_PORT_OPTION,
    DO,
    DONT,
    SGA,
    WILL,
    WONT,
    TelnetParser,
    escape,
    negotiation,
    subnegotiation,
)

__all__ = ["Rfc2217Protocol", "ServerQuirks", "is_rfc2217_url", "line_settings", "open_rfc2217", "parse_rfc2217_url"]

log = logging.getLogger("firmware_host.transport.rfc2217")

_SCHEME = "rfc2217://"
#: RFC 2217 client commands (the server answers each with the code + 100)
SET_BAUDRATE, SET_DATASIZE, SET_PARITY, SET_STOPSIZE, SET_CONTROL = 1, 2, 3, 4, 5
_SERVER = 100
_PARITY_NONE, _STOPSIZE_1, _CONTROL_NO_FLOW = 1, 1, 1
NAMES: Mapping[int, str] = {
    SET_BAUDRATE: "SET-BAUDRATE",
    SET_DATASIZE: "SET-DATASIZE",
    SET_PARITY: "SET-PARITY",
    SET_STOPSIZE: "SET-STOPSIZE",
    SET_CONTROL: "SET-CONTROL",
    COM_PORT_OPTION: "COM-PORT-OPTION",
}
#: what the open waits to see acknowledged (SET-CONTROL is answered by servers
#: in their own ways, or not at all: sent, never waited for)
_AWAITED = frozenset({SET_BAUDRATE, SET_DATASIZE, SET_PARITY, SET_STOPSIZE})
#: options we take on either side; every other one is refused
_OURS = frozenset({BINARY, SGA, COM_PORT_OPTION})
_THEIRS = frozenset({BINARY, SGA, COM_PORT_OPTION})
_MAX_TIMEOUT = 60.0


def is_rfc2217_url(url: str) -> bool:
    return url[: len(_SCHEME)].lower() == _SCHEME


def parse_rfc2217_url(url: str) -> tuple[str, int, float]:
    """``(host, port, timeout)`` of ``rfc2217://HOST:PORT[?OPTIONS]``.

    Options: ``timeout=SECONDS`` (how long an open waits for the server's
    acknowledgements), ``ign_set_control`` (pyserial's; accepted and moot:
    SET-CONTROL is never waited for). ValueError says what is wrong.
    """
    host, port, query = split_host_url(url, "rfc2217")
    timeout = NEGOTIATION_TIMEOUT
    for item in query.split("&") if query else ():
        key, has_value, value = item.partition("=")
        if key == "ign_set_control" and not has_value:
            continue
        if key == "timeout" and has_value:
            try:
                timeout = float(value)
            except ValueError:
                timeout = math.nan
            if not 0 < timeout <= _MAX_TIMEOUT:  # also nan
                raise ValueError(f"expected timeout=SECONDS from 0 to {_MAX_TIMEOUT:g}, got {value!r}")
            continue
        raise ValueError(f"option {item!r} is not supported (rfc2217:// takes timeout=SECONDS and ign_set_control)")
    return host, port, timeout


def line_settings(baudrate: int) -> dict[int, bytes]:
    """What the far end's UART is set to: ``baudrate`` 8N1, no flow control."""
    return {
        SET_BAUDRATE: struct.pack("!I", baudrate),
        SET_DATASIZE: bytes([8]),
        SET_PARITY: bytes([_PARITY_NONE]),
        SET_STOPSIZE: bytes([_STOPSIZE_1]),
        SET_CONTROL: bytes([_CONTROL_NO_FLOW]),
    }


class ServerQuirks:
    """What each server (by URL) did not acknowledge, so that later opens do
    not wait for it again; each is said once, at debug level. One per
    backend; bounded by ``limit`` URLs (the oldest is forgotten)."""

    def __init__(self, limit: int = 1024) -> None:
        self._limit = limit
        self._ignored: collections.OrderedDict[str, frozenset[int]] = collections.OrderedDict()

    def ignored(self, url: str) -> frozenset[int]:
        return self._ignored.get(url, frozenset())

    def ignore(self, url: str, options: frozenset[int], waited: float) -> None:
        new = options - self.ignored(url)
        if not new:
            return
        names = ", ".join(NAMES.get(o, str(o)) for o in sorted(new))
        if COM_PORT_OPTION in new:
            log.warning("%s: the server did not agree to RFC 2217 within %g s: its serial line is not set", url, waited)
        else:
            log.debug("%s: the server did not acknowledge %s within %g s; not waiting for it again", url, names, waited)
        self._ignored[url] = self.ignored(url) | new
        self._ignored.move_to_end(url)
        while len(self._ignored) > self._limit:
            self._ignored.popitem(last=False)


class Rfc2217Protocol(asyncio.Protocol):
    """The telnet side of one connection; its data goes to ``chunks``.

    ``wait_settled`` returns once the server acknowledged every awaited
    setting (those in ``skip`` are not awaited), and raises PortClosed if it
    refused RFC 2217 or the connection ended first.
    """

    def __init__(self, settings: Mapping[int, bytes], chunks: ChunkProtocol, skip: frozenset[int] = frozenset()):
        self.chunks = chunks
        self._settings = dict(settings)
        self._parser = TelnetParser(self)
        self._transport: asyncio.Transport | None = None
        self._we: set[int] = set()  # options we perform, agreed
        self._they: set[int] = set()  # options the server performs, agreed
        self._asked_will: set[int] = set()
        self._asked_do: set[int] = set()
        self._pending: set[int] = set(_AWAITED & self._settings.keys()) - skip
        self._sent = False
        self._wait_agreement = COM_PORT_OPTION not in skip
        self._refused: str | None = None
        self._settled = asyncio.Event()
        self.acknowledged: dict[int, bytes] = {}

    # -- the transport's side ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self.chunks.connection_made(transport)
        self._ask(WILL, COM_PORT_OPTION)
        for option in (BINARY, SGA):
            self._ask(WILL, option)
            self._ask(DO, option)
        self._check_settled()

    def data_received(self, data: bytes) -> None:
        payload = self._parser.feed(data)
        if payload:
            self.chunks.data_received(payload)

    def eof_received(self) -> bool | None:
        return self.chunks.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.chunks.connection_lost(exc)
        self._settled.set()

    # -- telnet (TelnetHandler) ----------------------------------------------------

    def negotiation(self, command: int, option: int) -> None:
        if command == DO:
            if option not in _OURS:
                self._send(negotiation(WONT, option))
            elif option not in self._we:
                self._we.add(option)
                if option not in self._asked_will:  # else this DO is the answer to our WILL
                    self._send(negotiation(WILL, option))
                if option == COM_PORT_OPTION:
                    self._send_settings()
        elif command == DONT:
            if option == COM_PORT_OPTION and not self._sent:
                self._refused = "the server refused RFC 2217 (DONT COM-PORT-OPTION): is it a telnet(rfc2217) port?"
                self._settled.set()
            if option in self._we:
                self._we.discard(option)
                self._send(negotiation(WONT, option))
            self._asked_will.discard(option)
        elif command == WILL:
            if option not in _THEIRS:
                self._send(negotiation(DONT, option))
            elif option not in self._they:
                self._they.add(option)
                if option not in self._asked_do:
                    self._send(negotiation(DO, option))
        elif command == WONT:
            if option in self._they:
                self._they.discard(option)
                self._send(negotiation(DONT, option))
            self._asked_do.discard(option)

    def subnegotiation(self, option: int, payload: bytes) -> None:
        if option != COM_PORT_OPTION or not payload:
            return
        code = payload[0] - _SERVER  # the server's answer to our command ``code``
        if code in self._settings:
            self.acknowledged[code] = payload[1:]
            self._pending.discard(code)
            self._check_settled()
        # anything else (NOTIFY-LINESTATE, NOTIFY-MODEMSTATE, ...) is not needed

    # -- the open's side -----------------------------------------------------------

    async def wait_settled(self) -> None:
        await self._settled.wait()
        if self._refused is not None:
            raise PortClosed(self._refused)
        lost = self.chunks.lost()
        if lost is not None:
            raise lost

    def unsettled(self) -> frozenset[int]:
        """What the open is still waiting for."""
        agreement = {COM_PORT_OPTION} if self._wait_agreement and not self._sent else set()
        return frozenset(self._pending | agreement)

    def _send_settings(self) -> None:
        if self._sent:
            return
        self._sent = True
        self._send(
            b"".join(subnegotiation(COM_PORT_OPTION, bytes([code]) + value) for code, value in self._settings.items())
        )
        self._check_settled()

    def _check_settled(self) -> None:
        if not self.unsettled():
            self._settled.set()

    def _ask(self, command: int, option: int) -> None:
        (self._asked_will if command == WILL else self._asked_do).add(option)
        self._send(negotiation(command, option))

    def _send(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)


class _TelnetWriter:
    """The connection as ``StreamPort`` writes to it: data with 255 doubled."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: Any) -> None:
        self._transport.write(escape(bytes(data)))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def close(self) -> None:
        self._transport.close()

    def abort(self) -> None:
        self._transport.abort()


async def open_rfc2217(url: str, baudrate: int, quirks: ServerQuirks) -> StreamPort:
    """Connect to ``url`` and set the far end's line; PortClosed when it cannot."""
    try:
        host, port, timeout = parse_rfc2217_url(url)
    except ValueError as exc:
        raise PortClosed(f"cannot open {url}: {exc}") from None
    chunks = ChunkProtocol()
    protocol = Rfc2217Protocol(line_settings(baudrate), chunks, skip=quirks.ignored(url))
    transport = await connect(url, host, port, protocol)
    try:
        async with asyncio.timeout(timeout):
            await protocol.wait_settled()
    except TimeoutError:
        quirks.ignore(url, protocol.unsettled(), timeout)
    except PortClosed as exc:
        transport.abort()
        raise PortClosed(f"cannot open {url}: {exc}") from None
    except BaseException:
        transport.abort()
        raise
    baud = protocol.acknowledged.get(SET_BAUDRATE)
    if baud is not None and len(baud) == 4 and baud != line_settings(baudrate)[SET_BAUDRATE]:
        log.warning("%s: the server set %d baud, not %d", url, struct.unpack("!I", baud)[0], baudrate)
    return StreamPort(url, _TelnetWriter(transport), chunks)
