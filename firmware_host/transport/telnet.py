"""The telnet layer of RFC 2217: commands out of the byte stream, data escaped.

A telnet stream carries data with commands inlined after IAC (255): option
negotiation (``IAC WILL|WONT|DO|DONT OPTION``), subnegotiation (``IAC SB
OPTION ... IAC SE``) and a data byte 255 doubled (``IAC IAC``).
``TelnetParser.feed`` returns the data of a chunk and hands the commands to
its ``TelnetHandler``; commands may be split across chunks anywhere. A chunk
without IAC (the common case once negotiation is over) is returned as is.

Bounded: a subnegotiation longer than ``MAX_SUBNEGOTIATION`` is dropped (the
RFC 2217 ones are at most 5 bytes), so a peer cannot grow memory.
"""

from __future__ import annotations

from typing import Protocol

__all__ = [
    "BINARY",
    "COM_PORT_OPTION",
    "DO",
    "DONT",
    "ECHO",
    "IAC",
    "MAX_SUBNEGOTIATION",
    "SB",
    "SE",
    "SGA",
    "WILL",
    "WONT",
    "TelnetHandler",
    "TelnetParser",
    "escape",
    "negotiation",
    "subnegotiation",
]

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
BINARY, ECHO, SGA, COM_PORT_OPTION = 0, 1, 3, 44
MAX_SUBNEGOTIATION = 64

_IAC = bytes([IAC])
_DATA, _COMMAND, _OPTION, _SUB, _SUB_IAC = range(5)


class TelnetHandler(Protocol):
    def negotiation(self, command: int, option: int) -> None:
        """``command`` is WILL, WONT, DO or DONT."""
        ...

    def subnegotiation(self, option: int, payload: bytes) -> None: ...


def escape(data: bytes) -> bytes:
    """Data as it goes on a telnet connection: each 255 doubled."""
    return data.replace(_IAC, _IAC + _IAC) if IAC in data else data


def negotiation(command: int, option: int) -> bytes:
    return bytes((IAC, command, option))


def subnegotiation(option: int, payload: bytes) -> bytes:
    return bytes((IAC, SB, option)) + escape(payload) + bytes((IAC, SE))


class TelnetParser:
    """Splits a telnet byte stream into data and commands (see the module doc)."""

    def __init__(self, handler: TelnetHandler) -> None:
        self._handler = handler
        self._state = _DATA
        self._command = 0
        self._sub = bytearray()
        self._sub_overflow = False

    def feed(self, chunk: bytes) -> bytes:
        """The data in ``chunk``; its commands go to the handler."""
        if self._state == _DATA and IAC not in chunk:
            return chunk
        data = bytearray()
        i, end = 0, len(chunk)
        while i < end:
            if self._state == _DATA:
                j = chunk.find(IAC, i)
                if j < 0:
                    data += chunk[i:]
                    break
                data += chunk[i:j]
                self._state = _COMMAND
                i = j + 1
                continue
            byte = chunk[i]
            i += 1
            if self._state == _COMMAND:
                self._on_command(byte, data)
            elif self._state == _OPTION:
                self._state = _DATA
                self._handler.negotiation(self._command, byte)
            elif self._state == _SUB:
                if byte == IAC:
                    self._state = _SUB_IAC
                else:
                    self._sub_append(byte)
            else:  # _SUB_IAC
                self._on_sub_iac(byte)
        return bytes(data)

    def _on_command(self, byte: int, data: bytearray) -> None:
        if byte == IAC:  # an escaped data byte 255
            data.append(IAC)
            self._state = _DATA
        elif byte in (WILL, WONT, DO, DONT):
            self._command = byte
            self._state = _OPTION
        elif byte == SB:
            self._sub.clear()
            self._sub_overflow = False
            self._state = _SUB
        else:  # NOP, GA, BREAK, ...: nothing a serial link needs
            self._state = _DATA

    def _on_sub_iac(self, byte: int) -> None:
        if byte == IAC:
            self._sub_append(IAC)
            self._state = _SUB
            return
        self._state = _DATA
        # SE ends it; anything else is malformed, and the subnegotiation is dropped
        if byte == SE and self._sub and not self._sub_overflow:
            self._handler.subnegotiation(self._sub[0], bytes(self._sub[1:]))

    def _sub_append(self, byte: int) -> None:
        if len(self._sub) < MAX_SUBNEGOTIATION:
            self._sub.append(byte)
        else:
            self._sub_overflow = True
