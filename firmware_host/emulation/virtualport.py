"""A virtual serial device on a pty pair, for the emulator and for tests.

The host opens ``path`` like any serial port. ``path`` is a stable symlink
to the pty's slave, so ``unplug()`` + ``replug()`` behaves like a USB board
re-enumerating behind a udev symlink: the old device node dies (the host's
reads fail with EIO) and a new one appears behind the same path.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import struct
import termios
import tty


def wake(fut: asyncio.Future[None]) -> None:
    """A reader/writer callback: complete ``fut`` once (later calls are no-ops)."""
    if not fut.done():
        fut.set_result(None)


class VirtualPort:
    def __init__(self, link: str | None = None) -> None:
        self.link = link
        self.master: int | None = None
        self._slave: int | None = None
        self.slave_name: str | None = None
        self.plugged = False
        self._waiters: set[asyncio.Future[None]] = set()
        self._plug_waiters: set[asyncio.Future[None]] = set()
        #: plug() calls so far: which pty this is (a new one may reuse the old fd numbers)
        self.generation = 0
        self.plug()

    @property
    def path(self) -> str:
        """What the host opens: the stable link, else the pty slave itself."""
        assert self.slave_name is not None
        return self.link or self.slave_name

    def plug(self) -> None:
        master, slave = os.openpty()
        # raw before the host opens it: a cooked pty would echo everything we
        # write back to us and translate CR/LF, corrupting binary frames
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.master, self._slave = master, slave
        self.slave_name = os.ttyname(slave)
        self.generation += 1
        if self.link:
            tmp = f"{self.link}.{os.getpid()}.tmp"
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            os.symlink(self.slave_name, tmp)
            os.replace(tmp, self.link)  # atomic: the host never sees the link missing
        self.plugged = True
        for waiter in self._plug_waiters:
            wake(waiter)
        self._plug_waiters.clear()

    def when_plugged(self) -> asyncio.Future[None]:
        """A future done once the port is plugged (at once if it is): a paused
        board wakes on the replug instead of polling for it."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.plugged:
            fut.set_result(None)
        else:
            self._plug_waiters.add(fut)
            fut.add_done_callback(self._plug_waiters.discard)
        return fut

    def unplug(self) -> None:
        """Remove the device: the host's next read fails."""
        if self.master is not None:
            # unregister before closing: a closed fd left in the selector
            # would clash with the next fd that reuses its number
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                loop.remove_writer(self.master)
                loop.remove_reader(self.master)
        for waiter in self._waiters:  # wake writers/readers parked on the old fd
            if not waiter.done():
                waiter.set_result(None)
        for fd in (self.master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.master = self._slave = None
        self.plugged = False
        if self.link:
            # as udev does: a link left pointing at the dead /dev/pts/N could
            # reach another process's pty once the kernel reuses the number
            try:
                os.unlink(self.link)
            except FileNotFoundError:
                pass

    def replug(self) -> None:
        if self.plugged:
            self.unplug()
        self.plug()

    def close(self) -> None:
        self.unplug()

    def write_nowait(self, data: bytes | memoryview) -> int:
        """Write what fits now; returns the bytes written (0 when full or unplugged)."""
        if self.master is None:
            return 0
        try:
            return os.write(self.master, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EBADF):
                return 0
            raise

    async def write(self, data: bytes) -> int:
        """Write all of ``data``, awaiting room in the pty buffer (never blocks the loop).

        Returns the bytes written: fewer if the port is unplugged meanwhile.
        The rest is lost on the wire, as with a real cable pulled mid-frame;
        never written to the pty of a replug, which would start with half a frame.
        """
        fd, generation = self.master, self.generation
        view = memoryview(data)
        written = 0
        while written < len(view):
            if fd is None or not self.owns(fd, generation):
                break
            n = self.write_nowait(view[written:])
            if n:
                written += n
                continue
            await self._until_ready(fd, writable=True)
        return written

    def unread(self) -> int | None:
        """Bytes written to the device that the host has not read yet; None
        when unplugged or when the tty cannot tell."""
        if self._slave is None:
            return None
        try:
            return int(struct.unpack("i", fcntl.ioctl(self._slave, termios.FIONREAD, b"\0\0\0\0"))[0])
        except OSError:
            return None

    def read_nowait(self, limit: int = 65536) -> bytes:
        """Bytes the host wrote to the device (downlink), b"" if none."""
        if self.master is None:
            return b""
        try:
            return os.read(self.master, limit)
        except (BlockingIOError, OSError):
            return b""

    async def read(self, limit: int = 65536) -> bytes:
        """Await downlink bytes from the host."""
        while True:
            data = self.read_nowait(limit)
            if data:
                return data
            fd = self.master
            if fd is None:
                raise ConnectionError("virtual port unplugged")
            await self._until_ready(fd, writable=False)

    async def _until_ready(self, fd: int, *, writable: bool) -> None:
        """Await readiness of the master (an unplug wakes it too)."""
        loop = asyncio.get_running_loop()
        add, remove = (loop.add_writer, loop.remove_writer) if writable else (loop.add_reader, loop.remove_reader)
        ready: asyncio.Future[None] = loop.create_future()
        add(fd, wake, ready)
        self._waiters.add(ready)
        generation = self.generation
        try:
            await ready
        finally:
            self._waiters.discard(ready)
            if self.owns(fd, generation):  # after an unplug the fd is closed and already unregistered
                remove(fd)

    def owns(self, fd: int, generation: int) -> bool:
        """True while ``fd`` of plug ``generation`` is still this port's master
        (a replug may hand out the same fd number for a new pty)."""
        return self.plugged and self.generation == generation and self.master == fd

    def __repr__(self) -> str:
        return f"<VirtualPort {self.path} plugged={self.plugged}>"
