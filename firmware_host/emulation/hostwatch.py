"""Notice a host opening an emulated board's pty, and count what it sends.

Like USB CDC firmware that waits for the terminal to connect, a fleet device
starts streaming only once the host has opened its port: bytes written before
that would be flushed by the open unseen, and the counts would be inexact. The
open shows as the input flush pyserial does (the master runs in packet mode,
so the flush arrives as a control packet), or as the host configuring the line
away from a sentinel speed a fresh pty is given.
"""

from __future__ import annotations

import fcntl
import struct
import termios
from collections.abc import Callable

from firmware_host.emulation.virtualport import VirtualPort

__all__ = ["TERMIOS_SETTLE", "HostWatch"]

#: a host that configured the line but sent no flush is taken as listening after this
TERMIOS_SETTLE = 0.05
#: the line speed a fresh pty gets; a host opening it always sets another
_SENTINEL_SPEED = termios.B50


class HostWatch:
    """Whether a host has the port open (``listening``), how often it opened
    it, and how many bytes it wrote (downlink). ``wait=False``: listening from
    the start, as firmware that streams whether or not anyone listens."""

    def __init__(
        self, port: VirtualPort, *, wait: bool = True, downlink: Callable[[bytes], None] | None = None
    ) -> None:
        self.port = port
        self.wait = wait
        #: handed every downlink byte as it is read (a board that answers commands)
        self.downlink = downlink
        self.listening = not wait
        #: opens seen (flushes; a configure without one counts once)
        self.opens = 0
        #: bytes the host wrote to the device
        self.downlink_bytes = 0
        self._packet = False  # packet mode on: reads carry a header byte
        self._configured_at: float | None = None
        self.reset()

    def reset(self) -> None:
        """A new pty, or none (unplugged): forget the host, and prepare the
        pty so that the next open can be seen."""
        self.listening = not self.wait
        self._configured_at = None
        self._packet = False
        fd = self.port.master
        if fd is None:
            return
        try:
            # packet mode: the host's tcflush (pyserial does one on open) shows up on our side
            fcntl.ioctl(fd, termios.TIOCPKT, struct.pack("i", 1))
            self._packet = True
            if self.wait:
                attrs = termios.tcgetattr(fd)  # a pty master's termios are its slave's
                attrs[4] = attrs[5] = _SENTINEL_SPEED
                termios.tcsetattr(fd, termios.TCSANOW, attrs)
        except (OSError, termios.error, AttributeError):
            self.listening = True  # no way to tell: stream at once

    def poll(self, now: float) -> None:
        """Read what the host sent and notice it opening the port (``now``: the loop's time)."""
        port = self.port
        while True:
            data = port.read_nowait()
            if not data:
                break
            if self._packet and data[0] != termios.TIOCPKT_DATA:
                if data[0] & termios.TIOCPKT_FLUSHREAD:
                    self.opens += 1
                    self.listening = True
                continue
            payload = data[1:] if self._packet else data
            self.downlink_bytes += len(payload)
            if self.downlink is not None:
                self.downlink(payload)
        if self.listening or port.master is None:
            return
        try:
            speeds = termios.tcgetattr(port.master)[4:6]
        except termios.error:
            return
        if speeds != [_SENTINEL_SPEED, _SENTINEL_SPEED]:
            # configured but no flush (yet): a reader that does not flush; give a
            # flushing one (pyserial flushes right after configuring) time to do so first
            if self._configured_at is None:
                self._configured_at = now
            elif now - self._configured_at >= TERMIOS_SETTLE:
                self.opens += 1
                self.listening = True
