"""``firmware-host record``: a port's raw bytes with their receive times, to a file.

Two sources, one file format (docs/recording.md):

* a device of a running runtime, through its control socket (``record``
  command): the runtime streams the recording and this client writes it.
  The client writes, not the runtime, so the file is the caller's (their user,
  their disk, any path they may write), and a runtime never opens a path a
  socket client named; a client that falls behind only costs its own
  recording reads (counted, marked), never the runtime.
* a port no runtime holds: opened here with the transport's opener (in an
  executor), read on an event loop, written by a thread of its own
  (``FileRecorder``).

Both stop on Ctrl-C (SIGINT), SIGTERM or ``--duration``, end the file with
an END record, and print one summary line on stderr.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from firmware_host.control.client import parse_reply
from firmware_host.errors import EXIT_FAILURE, EXIT_USAGE, ControlError, NoRuntime
from firmware_host.recorder import FileRecorder, RawSubscription
from firmware_host.recordfile import (
    DATA,
    END,
    LOSS,
    Header,
    RecordingError,
    RecordParser,
    encode_end,
    encode_header,
    encode_record,
    loss_counts,
)
from firmware_host.transport.base import Port

__all__ = ["PortSource", "is_port", "record_device_main", "record_port_main"]

EXIT_NO_RUNTIME = 3


def is_port(target: str) -> bool:
    """A path or URL (a device name never holds '/' or ':')."""
    return "/" in target or ":" in target


#: seconds a standalone recording waits, once stopped, for its file to take what is held
WRITE_GRACE = 10.0


def _say(text: str) -> None:
    print(f"firmware-host: record: {text}", file=sys.stderr)


def _bad_output(output: str) -> bool:
    """``-o`` names no file this can make: a usage mistake, said at once in both modes
    (a file that then cannot be written, for want of permission or room, is exit 1)."""
    if os.path.isdir(output):
        _say(f"cannot write {output}: it is a directory")
        return True
    if not os.path.isdir(os.path.dirname(os.path.abspath(output))):
        _say(f"cannot write {output}: no such directory")
        return True
    return False


# -- a runtime's device ----------------------------------------------------------------------


def record_device_main(control: str, device: str, output: str, duration: float | None, buffer: int) -> int:
    """Record ``device`` of the runtime on ``control`` into ``output``."""
    if _bad_output(output):
        return EXIT_USAGE
    try:
        # the request first: a refused one leaves no empty file behind
        sock = _connect(control, {"cmd": "record", "device": device, "buffer": buffer})
    except NoRuntime as exc:
        _say(f"{exc} (start one with: firmware-host run --control {control} ...)")
        return EXIT_NO_RUNTIME
    except ControlError as exc:
        _say(str(exc))
        return exc.exit_code
    with sock:
        try:
            out = open(output, "wb", buffering=0)  # noqa: SIM115  (its with follows: the error must be ours)
        except OSError as exc:
            _say(f"cannot write {output}: {exc.strerror or exc}")
            return EXIT_FAILURE
        with out:
            _say(f"recording {device} to {output} (Ctrl-C to stop)")
            got = _Received(out)
            reason = got.copy(sock, duration)
            if not got.ended:
                got.end(reason)
    if got.error:
        _say(got.error)
        return EXIT_FAILURE
    _say(f"{device}: {got.summary(output)}" + (f"; {got.reason}" if got.reason else ""))
    return 0


def _connect(path: str, req: dict[str, object]) -> socket.socket:
    """A control connection whose ``record`` request was accepted, past its reply.

    The reply is checked by the client's own rules (``request_sync`` on the
    first line); what follows is the recording."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise NoRuntime(f"no runtime is listening on {path} (it is not a socket)")
    except OSError:
        raise NoRuntime(f"no runtime is listening on {path}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(30.0)
        try:
            sock.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            raise NoRuntime(f"no runtime is listening on {path}") from None
        except OSError as exc:
            raise ControlError(f"cannot reach the control socket {path}: {exc.strerror or exc}") from None
        try:
            sock.sendall(json.dumps(req).encode() + b"\n")
            line = b""
            while not line.endswith(b"\n"):
                byte = sock.recv(1)  # one byte at a time: what follows the reply is the recording's
                if not byte:
                    raise ControlError("the runtime closed the connection without replying")
                line += byte
                if len(line) > 65536:
                    raise ControlError("the runtime's reply is too long")
        except TimeoutError:
            raise ControlError(f"no reply from the runtime on {path} within 30s") from None
        except OSError as exc:  # a reset or a broken pipe: the runtime went away
            raise ControlError(f"the control connection failed: {exc.strerror or exc}") from None
        parse_reply(line)  # an error reply raises ControlError with its code
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class _Received:
    """What the client got of a streamed recording, written as it comes."""

    out: BinaryIO
    parser: RecordParser = field(default_factory=RecordParser)
    header: Header | None = None
    chunks: int = 0
    nbytes: int = 0
    lost_chunks: int = 0
    lost_bytes: int = 0
    ended: bool = False
    reason: str | None = None
    error: str | None = None
    last_t: int = 0

    def write(self, data: bytes) -> None:
        self.out.write(data)

    def copy(self, sock: socket.socket, duration: float | None) -> str:
        """Copy records until the runtime ends the recording, ``duration``
        elapses or Ctrl-C; the reason it stopped."""
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while not self.ended:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return "--duration elapsed"
                sock.settimeout(left)
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    return "--duration elapsed"
                except OSError as exc:
                    return f"the connection failed: {exc.strerror or exc}"
                if not data:
                    return "the runtime closed the connection"
                self.take(data)
        except KeyboardInterrupt:
            return "stopped (Ctrl-C)"
        except RecordingError as exc:
            self.error = f"the runtime sent a damaged recording: {exc}"
        except OSError as exc:
            self.error = f"cannot write the recording: {exc.strerror or exc}"
        return self.reason or "ended"

    def take(self, data: bytes) -> None:
        records = list(self.parser.feed(data))
        if self.header is None and self.parser.header is not None:
            self.header = self.parser.header
            self.write(encode_header(self.header))
        for rec in records:
            self.last_t = max(self.last_t, rec.t_us)
            if rec.kind == DATA:
                self.chunks += 1
                self.nbytes += len(rec.body)
            elif rec.kind == LOSS:
                n, b = loss_counts(rec.body)
                self.lost_chunks += n
                self.lost_bytes += b
            elif rec.kind == END:
                self.ended = True
                try:
                    info = json.loads(rec.body)
                except ValueError:
                    info = None
                self.reason = str(info.get("reason")) if isinstance(info, dict) else None
            self.write(encode_record(rec))

    def end(self, reason: str) -> None:
        """The client's own END record (the runtime's never came)."""
        self.reason = reason
        if self.header is None or self.error:
            return
        t_us = max(self.last_t, round((time.time() - self.header.started) * 1e6))
        info: Mapping[str, object] = {
            "reason": reason,
            "chunks": self.chunks,
            "bytes": self.nbytes,
            "lost_chunks": self.lost_chunks,
            "lost_bytes": self.lost_bytes,
        }
        try:
            self.write(encode_end(t_us, info))
        except OSError as exc:
            self.error = f"cannot write the recording: {exc.strerror or exc}"

    def summary(self, output: str) -> str:
        lost = f", lost {self.lost_chunks} reads ({self.lost_bytes} bytes)" if self.lost_chunks else ""
        return f"recorded {self.chunks} reads ({self.nbytes} bytes) to {output}{lost}"


# -- a port ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortSource:
    url: str
    baudrate: int
    codec: str | None = None
    codec_options: Mapping[str, int] = field(default_factory=dict)
    board: str | None = None


def record_port_main(source: PortSource, output: str, duration: float | None, buffer: int) -> int:
    """Record the port ``source.url`` (no runtime holds it) into ``output``."""
    if _bad_output(output):
        return EXIT_USAGE
    return asyncio.run(_record_port(source, output, duration, buffer))


async def _record_port(source: PortSource, output: str, duration: float | None, buffer: int) -> int:
    from firmware_host.transport.serial import open_serial

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    stuck = False
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            port = await open_serial(source.url, source.baudrate)  # pyserial's open runs in an executor
        except OSError as exc:  # PortClosed is one: the transport's words
            _say(str(exc))
            return EXIT_FAILURE
        header = Header(
            device=None,
            port=source.url,
            baudrate=source.baudrate,
            codec=source.codec,
            codec_options=dict(source.codec_options),
            board=source.board,
            started=time.time(),
            source="port",
        )
        sub = RawSubscription(None, header, buffer)
        writer = FileRecorder(output, sub)
        writing = asyncio.ensure_future(writer.run())
        reading = asyncio.ensure_future(_read(port, sub))
        _say(f"recording {source.url} to {output} (Ctrl-C to stop)")
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((reading, stopping, writing), timeout=duration, return_when=asyncio.FIRST_COMPLETED)
            if reading.done():
                sub.close(reading.result())
            elif stopping.done():
                sub.close("stopped (signal)")
            elif not writing.done():
                sub.close("--duration elapsed")
        finally:
            for task in (reading, stopping):
                task.cancel()
            await asyncio.gather(reading, stopping, return_exceptions=True)
            sub.close("stopped")
            try:
                # bounded: a file that takes nothing (a stalled disk, a pipe nobody reads)
                # must not keep the recorder from ending, signal or not
                await asyncio.wait_for(asyncio.shield(writing), WRITE_GRACE)
            except TimeoutError:
                writer.error = f"cannot write {output}: nothing went through for {WRITE_GRACE:g} s; giving up"
                stuck = True
            await port.close()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if writer.error:
        _say(writer.error)
        if stuck:
            # the writer thread is still blocked in write(): the interpreter would join it
            # at exit and hang there; nothing else is left to flush
            sys.stderr.flush()
            os._exit(EXIT_FAILURE)
        return EXIT_FAILURE
    lost = f", lost {sub.lost_chunks} reads ({sub.lost_bytes} bytes)" if sub.lost_chunks else ""
    _say(f"{source.url}: recorded {sub.chunks} reads ({sub.nbytes} bytes) to {output}{lost}; {sub.reason}")
    return 0


async def _read(port: Port, sub: RawSubscription) -> str:
    """Read until the port fails; why it stopped."""
    read = port.read
    try:
        while True:
            data = await read()
            sub.put(data, time.monotonic())
    except OSError as exc:  # PortClosed (a ConnectionError) and the rest
        return f"the port closed: {exc}"
