"""The control socket: a Unix-domain socket speaking JSON lines.

One request object per line, exactly one reply object per line::

    {"cmd": "status"}            -> {"ok": true, "uptime": ..., "buffer": ..., "devices": ...}
    {"cmd": "flush", "device": "imu0"} -> {"ok": true, "flushed": 3, "devices": {"imu0": 3},
                                           "sinks": [{"name": "jsonl", "sent": 3, "done": true}],
                                           "incomplete": false}
    {"cmd": "nope"}              -> {"ok": false, "error": "unknown command 'nope' ...", "code": 2}

``code`` in an error reply is the exit status the CLI should use. The server
is written for hostile input: requests are bounded (``MAX_REQUEST``), the
number of connections is capped, idle connections are closed, and every
handler error becomes an error reply, never a crash of the runtime. See
docs/control.md for the protocol, the security choices and examples.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import logging
import math
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from firmware_host.aggregator import BufferSnapshot
from firmware_host.codecs.fh1 import TYPE_COMMAND
from firmware_host.config import ConfigError, DeviceConfig, config_from_dict
from firmware_host.config.boards import Board, load_boards
from firmware_host.config.schema import group_id
from firmware_host.control.client import is_listening
from firmware_host.control.protocol import (
    FLUSH_TIMEOUT,
    IDLE_TIMEOUT,
    LINGER,
    MAX_CONNECTIONS,
    MAX_FLUSH_TIMEOUT,
    MAX_REQUEST,
    MAX_STREAMS,
    MAX_TAIL_LIMIT,
    TAIL_LIMIT,
    RequestError,
    body_arg,
    device_name,
    device_names,
    encode_reply,
    error_reply,
    int_arg,
    limit_arg,
    number_arg,
    only,
    str_arg,
)
from firmware_host.errors import (
    EXIT_FAILURE,
    ControlError,
    DeviceExists,
    NotConnected,
    RequestTimeout,
    RequestUnsupported,
    RuntimeFailure,
    ShuttingDown,
)
from firmware_host.flusher import FlushResult
from firmware_host.frames import Frame
from firmware_host.recorder import DEFAULT_BUFFER, MAX_BUFFER, MIN_BUFFER, RawSubscription, send_recording, until_eof
from firmware_host.request import DEFAULT_RETRIES, DEFAULT_TIMEOUT, MAX_RETRIES, MAX_TIMEOUT, ack_reply, acked_seq
from firmware_host.sinks.jsonl import encode_records
from firmware_host.tap import DEFAULT_LIMIT, Subscription

log = logging.getLogger("firmware_host.control")

#: seconds ``close`` waits for the connections it cancelled
CLOSE_TIMEOUT = 2.0

__all__ = ["ControlServer", "RuntimeControl"]


class DeviceState(Protocol):
    @property
    def removed(self) -> bool:
        """The device was removed (its frames may still be buffered)."""
        ...


class CommandSeqs(Protocol):
    def next_seq(self, device: str) -> int:
        """The next command seq for ``device`` (``send`` numbers its frames with it too)."""
        ...


class RuntimeControl(Protocol):
    """What the control server needs of a runtime (``Runtime`` is one)."""

    #: extra ``status`` sections; the server adds its own counters
    status_sections: dict[str, Callable[[], Any]]

    @property
    def devices(self) -> Mapping[str, DeviceState]: ...

    @property
    def codecs(self) -> Mapping[str, object]: ...

    @property
    def boards(self) -> Mapping[str, Board] | None: ...

    async def status(self) -> dict[str, Any]: ...

    async def buffers(self) -> dict[str, Any]: ...

    async def snapshot(self, oldest: bool = False) -> BufferSnapshot: ...

    async def flush(self, device: str | None = None, timeout: float | None = None) -> FlushResult: ...

    def request_stop(self, reason: str = "stop requested") -> None: ...

    async def add_device(self, dc: DeviceConfig) -> None: ...

    async def remove_device(self, name: str) -> None: ...

    def subscribe(self, devices: Iterable[str] | None = None, limit: int = DEFAULT_LIMIT) -> Subscription: ...

    @property
    def requester(self) -> CommandSeqs: ...

    def send(self, device: str, frame_type: int | None, body: bytes | str, seq: int = 0) -> bool: ...

    async def request(
        self, device: str, frame_type: int = ..., body: bytes | str = b"", *, timeout: float = ..., retries: int = ...
    ) -> Frame: ...
    def record(self, device: str, limit: int = DEFAULT_BUFFER) -> RawSubscription: ...


# -- the server --------------------------------------------------------------------------


Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
#: a stream's body: it owns the connection once the reply is sent, writes
#: lines until it is done or the client leaves, and the connection closes after it
StreamBody = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass(frozen=True)
class Stream:
    """A streaming command's continuation (a handler returns it as
    ``"_stream"``). Exactly one of the two runs, and the server decides which:
    ``run`` when the reply went out, ``abandon`` when it could not be sent,
    so what the handler set up for the stream (a subscription, a recording)
    is released either way, without a flag of the handler's own."""

    run: StreamBody
    #: the reply could not be sent: release what ``run`` would have
    abandon: Callable[[], None] = lambda: None


class ControlServer:
    """Serves the control protocol for ``runtime`` on the Unix socket ``path``."""

    def __init__(
        self,
        runtime: RuntimeControl,
        path: str,
        *,
        max_connections: int = MAX_CONNECTIONS,
        max_streams: int = MAX_STREAMS,
        idle_timeout: float = IDLE_TIMEOUT,
        max_request: int = MAX_REQUEST,
        mode: int = 0o600,
        group: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.path = path
        #: ``[control] mode`` and ``group``: who besides the owner may connect
        self.mode = mode
        self.group = group
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.max_request = max_request
        self.requests = 0
        self.errors = 0
        self.refused = 0
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None
        #: admitted connections (what the cap counts) and every handler task (what close() ends)
        self._conns: set[asyncio.Task[Any]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: set by close(): streams (``tail``) end on it, also if its cancel went astray
        self._closing = asyncio.Event()
        #: the subscriptions of open tails (``status``'s control section counts them)
        self._tails: set[Subscription] = set()
        #: connections a stream (tail, record) owns; at most ``max_streams``
        self._streams = 0
        self.max_streams = min(max_streams, max_connections)
        self._handlers: dict[str, Handler] = {
            "ping": self._ping,
            "status": self._status,
            "buffers": self._buffers,
            "flush": self._flush,
            "stop": self._stop,
            "devices.add": self._devices_add,
            "devices.remove": self._devices_remove,
            "send": self._send_frame,
            "request": self._request,
            "record": self._record,
            "tail": self._tail,
        }

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Bind the socket (see docs/control.md, "Security"); RuntimeFailure if we must not."""
        try:
            await self._prepare_path()
            sock = await asyncio.to_thread(self._bind)  # bind and chmod touch the filesystem
        except ControlError as exc:
            raise RuntimeFailure(str(exc)) from None
        try:
            self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=self.max_request)
        except BaseException:
            sock.close()
            self._unlink_if_ours()
            raise
        self.runtime.status_sections.setdefault("control", self.stats)
        log.info("control socket listening on %s", self.path)

    def stats(self) -> dict[str, Any]:
        """The ``control`` section of ``status --json``."""
        return {
            "socket": self.path,
            "connections": len(self._conns),
            "requests": self.requests,
            "errors": self.errors,
            "refused": self.refused,
            "tails": len(self._tails),
        }

    async def _prepare_path(self) -> None:
        # the filesystem checks run off the loop; only the liveness probe is async
        if not await asyncio.to_thread(self._check_path):
            return
        if await is_listening(self.path):
            raise ControlError(f"another runtime is already listening on {self.path}")
        await asyncio.to_thread(self._remove_stale)

    def _check_path(self) -> bool:
        """Secure the directory; True when a socket (live or stale) is at the path."""
        _secure_directory(os.path.dirname(os.path.abspath(self.path)), self._gid())
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ControlError(f"control socket {self.path}: {exc.strerror or exc}") from None
        # lstat, never stat: a symlink planted here could point our socket (and
        # our unlink of a "stale" one) anywhere
        if stat.S_ISLNK(st.st_mode):
            raise ControlError(f"refusing the control socket {self.path}: it is a symlink")
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(f"refusing the control socket {self.path}: a file that is not a socket is there")
        return True

    def _remove_stale(self) -> None:
        """A socket nobody listens on, left by a runtime that died: replace it."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ControlError(f"cannot remove the stale control socket {self.path}: {exc.strerror or exc}") from None
        log.info("replaced a stale control socket at %s", self.path)

    def _gid(self) -> int | None:
        """The configured group's gid (looked up again: the config was checked earlier)."""
        if self.group is None:
            return None
        gid = group_id(self.group)
        if gid is None:
            raise ControlError(f"control socket {self.path}: no group named {self.group!r} on this host")
        return gid

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # the umask closes the window between bind() and chmod() in which
            # another user could connect; it is process-wide, so keep it short
            old = os.umask(0o177)
            try:
                sock.bind(self.path)
            finally:
                os.umask(old)
            gid = self._gid()
            if gid is not None:  # before the chmod: the group gets access only once the socket is its
                os.chown(self.path, -1, gid)
            os.chmod(self.path, self.mode)
            st = os.lstat(self.path)
            self._inode = (st.st_dev, st.st_ino)
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            self._unlink_if_ours()
            if exc.errno == errno.EADDRINUSE:
                raise ControlError(f"another runtime is already listening on {self.path}") from None
            if exc.errno == errno.EPERM and self.group is not None:
                raise ControlError(
                    f"cannot give the control socket {self.path} to group {self.group}: "
                    "the runtime's user must be a member of it"
                ) from None
            raise ControlError(f"cannot create the control socket {self.path}: {exc.strerror or exc}") from None
        return sock

    async def close(self) -> None:
        """Stop listening, end open connections, remove the socket if it is still ours."""
        self._closing.set()
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self._unlink_if_ours()
        conns = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in conns:
            task.cancel()
        if conns:
            # bounded: on Python 3.11 a wait_for that finishes as it is cancelled can
            # swallow the cancel, and a stream that missed it must not hold the shutdown
            _done, stuck = await asyncio.wait(conns, timeout=CLOSE_TIMEOUT)
            if stuck:
                log.warning("control: %d connection(s) did not end within %gs of the close", len(stuck), CLOSE_TIMEOUT)
        if server is not None:
            try:  # (from 3.12 this waits for every connection: bounded like them)
                await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT)
            except TimeoutError:
                pass

    def _unlink_if_ours(self) -> None:
        # only ours: a second runtime may have replaced a socket we thought stale
        if self._inode is None:
            return
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)
        except OSError:
            pass
        self._inode = None

    # -- connections ------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if len(self._conns) >= self.max_connections:
                self.refused += 1
                if await self._send(
                    writer,
                    error_reply(f"too many control connections ({self.max_connections}); try again", EXIT_FAILURE),
                ):
                    await self._linger(reader, writer)
                return
            self._conns.add(task)
            await self._conversation(reader, writer)
        except asyncio.CancelledError:
            pass  # close() ends the connection; nothing to answer
        except Exception:  # a bug here must cost one connection, never the runtime
            log.exception("control connection failed")
        finally:
            self._conns.discard(task)
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (Exception, asyncio.CancelledError):
                pass
            self._tasks.discard(task)

    async def _conversation(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), self.idle_timeout)
            except TimeoutError:
                return
            except ValueError:
                # the StreamReader limit: it already dropped the buffered part,
                # so a 10 MB line costs at most ~2 x MAX_REQUEST of memory
                self.errors += 1
                if await self._send(writer, error_reply(f"request too long (max {self.max_request} bytes)")):
                    await self._linger(reader, writer)
                return
            except (ConnectionError, OSError):
                return
            if not line.endswith(b"\n"):
                # EOF, or half a request then a disconnect: nothing to act on
                return
            reply, after, stream = await self.handle_line(line)
            try:
                sent = await self._send(writer, reply)
            except BaseException:  # cancelled (the server closing) before the hand-off
                if stream is not None:
                    stream.abandon()  # still exactly one of run and abandon
                raise
            if after is not None:
                after()  # a stop asked for is done even if the client left before the reply
            if stream is not None:
                await self._hand_over(stream, sent, reader, writer)
                return
            if not sent:
                return

    async def _hand_over(
        self, stream: Stream, sent: bool, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """The connection to ``stream`` once its reply is out, else its release."""
        if not sent:
            stream.abandon()
            return
        self._streams += 1
        try:
            await stream.run(reader, writer)
        finally:
            self._streams -= 1

    async def _send(self, writer: asyncio.StreamWriter, reply: dict[str, Any]) -> bool:
        try:
            writer.write(encode_reply(reply))
            # bounded: a client that never reads its replies must not pin us
            await asyncio.wait_for(writer.drain(), self.idle_timeout)
        except (TimeoutError, ConnectionError, OSError):
            return False
        return True

    @staticmethod
    async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Half-close, then discard input briefly before closing.

        Closing a socket with unread input resets the connection, and the
        client may then lose the error reply it was sent; reading to EOF (for
        at most LINGER seconds, never keeping the bytes) lets it arrive.
        """
        try:
            if writer.can_write_eof():
                writer.write_eof()
            async with asyncio.timeout(LINGER):
                while await reader.read(65536):
                    pass
        except (TimeoutError, ConnectionError, OSError, ValueError):
            pass

    async def handle_line(self, line: bytes) -> tuple[dict[str, Any], Callable[[], None] | None, Stream | None]:
        """One request line -> (reply, action to run after the reply is sent,
        a stream that then owns the connection)."""
        self.requests += 1
        try:
            req = json.loads(line)
        except (ValueError, RecursionError):  # also bad UTF-8 and absurd nesting
            self.errors += 1
            return error_reply("malformed request: expected one JSON object per line"), None, None
        if not isinstance(req, dict):
            self.errors += 1
            return error_reply('malformed request: expected a JSON object like {"cmd": "status"}'), None, None
        cmd = req.get("cmd")
        handler = self._handlers.get(cmd) if isinstance(cmd, str) else None
        if handler is None:
            self.errors += 1
            shown = json.dumps(cmd)[:60] if cmd is not None else "none"
            return error_reply(f"unknown command {shown} (known: {', '.join(sorted(self._handlers))})"), None, None
        try:
            result = await handler(req)
        except RequestError as exc:
            self.errors += 1
            return error_reply(str(exc), exc.code), None, None
        except Exception as exc:  # every handler bug becomes an error reply
            self.errors += 1
            log.exception("control command %s failed", cmd)
            return error_reply(f"{cmd} failed: {type(exc).__name__}: {exc}", EXIT_FAILURE), None, None
        after = result.pop("_after", None)
        stream = result.pop("_stream", None)
        assert stream is None or isinstance(stream, Stream), "a handler's _stream is a Stream"
        return {"ok": True, **result}, after, stream

    # -- commands ---------------------------------------------------------------------

    async def _ping(self, req: dict[str, Any]) -> dict[str, Any]:
        only(req)
        return {"pong": True, "pid": os.getpid()}

    async def _status(self, req: dict[str, Any]) -> dict[str, Any]:
        only(req)
        return dict(await self.runtime.status())

    async def _buffers(self, req: dict[str, Any]) -> dict[str, Any]:
        only(req)
        return dict(await self.runtime.buffers())

    async def _flush(self, req: dict[str, Any]) -> dict[str, Any]:
        only(req, "device", "timeout")
        device = device_name(req, "device", required=False)
        timeout = req.get("timeout", FLUSH_TIMEOUT)
        # isfinite() of an int beyond the float range raises OverflowError:
        # compare ints by value instead
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or timeout < 0
            or (isinstance(timeout, float) and not math.isfinite(timeout))
        ):
            raise RequestError("flush: 'timeout' must be a finite number of seconds >= 0")
        if device is not None and not await self._known_device(device):
            raise RequestError(f"unknown device {device!r}{self._known_text()}")
        result = await self.runtime.flush(device, float(min(timeout, MAX_FLUSH_TIMEOUT)))
        return {
            "flushed": result.flushed,
            "devices": dict(result.devices),
            "sinks": [dict(s) for s in result.sinks],
            "incomplete": result.incomplete,
        }

    async def _known_device(self, name: str) -> bool:
        # a removed device keeps its account (and buffered frames) until they flush
        if name in self.runtime.devices:
            return True
        snap = await self.runtime.snapshot()
        return name in snap.accounts

    def _known_text(self) -> str:
        names = sorted(self.runtime.devices)
        if not names:
            return " (no devices)"
        shown = ", ".join(names[:20]) + (", …" if len(names) > 20 else "")
        return f" (known: {shown})"

    async def _stop(self, req: dict[str, Any]) -> dict[str, Any]:
        only(req)
        runtime = self.runtime
        # reply first, then stop: the drain may close this socket before a late reply
        return {"stopping": True, "_after": lambda: runtime.request_stop("control stop")}

    async def _devices_add(self, req: dict[str, Any]) -> dict[str, Any]:
        only(req, "name", "port", "codec", "board", "baudrate", "decode")
        raw: dict[str, Any] = {"name": device_name(req), "port": str_arg(req, "port", required=True)}
        for key in ("codec", "board"):
            value = str_arg(req, key)
            if value is not None:
                raw[key] = value
        for key in ("baudrate", "decode"):
            if key in req:
                raw[key] = req[key]  # the config loader checks it like in a file
        boards = await self._boards() if "board" in raw else {}
        check = functools.partial(
            config_from_dict,
            {"devices": [raw]},
            source="devices add",
            known_codecs=frozenset(self.runtime.codecs),
            boards=boards,
        )
        try:
            # the config loader's validation and messages, exactly as in a file; a
            # board given as a file's path is read there: off the loop
            cfg = await asyncio.to_thread(check) if "board" in raw else check()
        except ConfigError as exc:
            key = (exc.key or "").removeprefix("devices[0]").lstrip(".")
            raise RequestError(f"devices add: {key + ': ' if key else ''}{exc.message}") from None
        dc = cfg.devices[0]
        try:
            await self.runtime.add_device(dc)
        except ShuttingDown as exc:
            raise RequestError(f"devices add: {exc}", EXIT_FAILURE) from None
        except (DeviceExists, ValueError) as exc:
            raise RequestError(f"devices add: {exc}") from None
        return {
            "device": {
                "name": dc.name,
                "port": dc.port,
                "codec": dc.codec,
                "board": dc.board,
                "baudrate": dc.baudrate,
                "decode": dc.decode,
            }
        }

    async def _boards(self) -> Mapping[str, Board]:
        known = self.runtime.boards
        if known is not None:
            return known
        try:
            # file reads: off the loop
            return await asyncio.to_thread(load_boards)
        except ConfigError as exc:
            raise RequestError(f"devices add: {exc}") from None

    async def _devices_remove(self, req: dict[str, Any]) -> dict[str, Any]:
        only(req, "name")
        name = device_name(req)
        assert name is not None
        entry = self.runtime.devices.get(name)
        if entry is None or entry.removed:
            raise RequestError(f"unknown device {name!r}{self._known_text()}")
        try:
            await self.runtime.remove_device(name)
        except KeyError:  # removed meanwhile by another request
            raise RequestError(f"unknown device {name!r}") from None
        return {"removed": name}

    # -- send and request: talking to a board -------------------------------------------

    def _live_device(self, req: dict[str, Any]) -> str:
        device = device_name(req, "device")
        assert device is not None
        entry = self.runtime.devices.get(device)
        if entry is None or entry.removed:
            raise RequestError(f"unknown device {device!r}{self._known_text()}")
        return device

    async def _send_frame(self, req: dict[str, Any]) -> dict[str, Any]:
        only(req, "device", "type", "hex", "text")
        device = self._live_device(req)
        frame_type = int_arg(req, "type", TYPE_COMMAND, 0, 0xFF)
        body = body_arg(req)
        seq = self.runtime.requester.next_seq(device)
        try:
            # text codecs ignore the type: the default is fh1's command type
            sent = self.runtime.send(device, frame_type, body, seq)
        except KeyError:  # removed meanwhile
            raise RequestError(f"unknown device {device!r}") from None
        except ValueError as exc:  # the codec refuses the body (too long, a newline in a line)
            raise RequestError(f"send: {exc}") from None
        if not sent:
            raise RequestError(f"send: device {device!r} is not connected", EXIT_FAILURE)
        size = len(body.encode("utf-8")) if isinstance(body, str) else len(body)
        return {"device": device, "type": frame_type, "seq": seq, "bytes": size}

    async def _request(self, req: dict[str, Any]) -> dict[str, Any]:
        only(req, "device", "type", "hex", "text", "timeout", "retries")
        device = self._live_device(req)
        frame_type = int_arg(req, "type", TYPE_COMMAND, 0, 0xFF)
        assert frame_type is not None
        body = body_arg(req)
        timeout = number_arg(req, "timeout", DEFAULT_TIMEOUT, 0.0, MAX_TIMEOUT)
        retries = int_arg(req, "retries", DEFAULT_RETRIES, 0, MAX_RETRIES)
        assert retries is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            ack = await self.runtime.request(device, frame_type, body, timeout=timeout, retries=retries)
        except KeyError:
            raise RequestError(f"unknown device {device!r}") from None
        except (RequestTimeout, NotConnected, ShuttingDown) as exc:
            raise RequestError(f"request: {exc}", EXIT_FAILURE) from None
        except (RequestUnsupported, ValueError) as exc:
            raise RequestError(f"request: {exc}") from None
        return {
            "device": device,
            "seq": acked_seq(ack),
            "type": frame_type,
            "reply": ack_reply(ack).hex(),
            "fields": ack.fields,
            "ack_seq": ack.seq,
            "elapsed": round(loop.time() - started, 3),
        }

    def _stream_room(self, cmd: str) -> None:
        if self._streams >= self.max_streams:
            raise RequestError(
                f"{cmd}: too many streams open ({self.max_streams}: tail and record); end one and try again",
                EXIT_FAILURE,
            )

    async def _record(self, req: dict[str, Any]) -> dict[str, Any]:
        only(req, "device", "buffer")
        self._stream_room("record")
        name = device_name(req, "device")
        assert name is not None
        limit = req.get("buffer", DEFAULT_BUFFER)
        if isinstance(limit, bool) or not isinstance(limit, int) or not MIN_BUFFER <= limit <= MAX_BUFFER:
            raise RequestError(f"record: 'buffer' must be a whole number of bytes from {MIN_BUFFER} to {MAX_BUFFER}")
        entry = self.runtime.devices.get(name)
        if entry is None or entry.removed:
            raise RequestError(f"unknown device {name!r}{self._known_text()}")
        try:
            # attached now, so every read after the reply is in it
            sub = self.runtime.record(name, limit)
        except KeyError:
            raise RequestError(f"unknown device {name!r}") from None
        except ShuttingDown as exc:
            raise RequestError(f"record: {exc}", EXIT_FAILURE) from None
        idle_timeout = self.idle_timeout
        # a client that never got the reply never starts the stream: the
        # recording then ends by itself (bounded meanwhile, like any)
        orphan = asyncio.get_running_loop().call_later(idle_timeout, sub.close, "the client never came")

        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            orphan.cancel()
            await send_recording(sub, reader, writer, idle_timeout)

        def abandon() -> None:  # no stream will ever drain it
            orphan.cancel()
            sub.close("the client left")

        return {"recording": sub.header.to_dict(), "buffer": limit, "_stream": Stream(run, abandon)}

    async def _tail(self, req: dict[str, Any]) -> dict[str, Any]:
        only(req, "devices", "limit")
        self._stream_room("tail")
        names = device_names(req)
        limit = limit_arg(req, "limit", TAIL_LIMIT, 1, MAX_TAIL_LIMIT)
        for name in names or ():
            if not await self._known_device(name):
                raise RequestError(f"unknown device {name!r}{self._known_text()}")
        devices = None if names is None else sorted(set(names))
        # subscribed before the reply: every frame accepted after it is in the stream
        sub = self.runtime.subscribe(devices, limit)
        tails, idle_timeout, closing = self._tails, self.idle_timeout, self._closing
        tails.add(sub)

        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                async with sub:
                    await tail_stream(sub, reader, writer, idle_timeout, closing)
            finally:
                tails.discard(sub)

        def abandon() -> None:  # no stream will ever close it
            sub.close()
            tails.discard(sub)

        return {"tail": {"devices": devices, "limit": limit}, "_stream": Stream(run, abandon)}


# -- tail: the first streaming command ---------------------------------------------------

#: the line that ends a tail whose runtime stopped
TAIL_END = b'{"end":"stopped"}\n'
#: seconds a tail waits for frames before it looks again (nothing waits without a deadline)
TAIL_WAIT = 5.0
#: frames encoded between two yields to the loop (about a millisecond's work)
TAIL_ENCODE_SLICE = 1000


async def tail_stream(
    sub: Subscription,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    idle_timeout: float,
    closing: asyncio.Event,
) -> None:
    """Write ``sub``'s frames to a tail client as jsonl records, one write per
    take, a ``{"lost": N}`` line before frames that followed a loss, and
    ``TAIL_END`` when the runtime stops (``sub`` closes) or the server
    closes (``closing``).

    Nothing here can slow the pipeline: the subscription sheds the oldest
    frames (counted) while a write waits for the client; a write the client
    does not take within ``idle_timeout`` ends the stream, and so does the
    client leaving (EOF on its side, or an error on ours).
    """
    gone = asyncio.ensure_future(until_eof(reader))
    # besides the cancel from ControlServer.close: on 3.11 a wait_for whose
    # inner future finishes as the cancel comes swallows it, and a stream
    # that missed it would hold the server's close for ever
    stopping = asyncio.ensure_future(closing.wait())
    ready: asyncio.Future[bool] | None = None
    try:
        while True:
            if gone.done():  # the client closed its side: checked first, or a busy stream never would
                return
            closed = sub.closed or stopping.done()  # before the take: nothing arrives after
            frames, lost = sub.take()
            if frames or lost or closed:
                data = await _tail_lines(frames, lost)
                if closed:
                    # no waiting on the client now: the close sends what it can
                    writer.write(data + TAIL_END)
                    return
                writer.write(data)
                # bounded: a client that stops reading must not pin us
                await asyncio.wait_for(writer.drain(), idle_timeout)
            else:
                ready = asyncio.ensure_future(sub.wait(TAIL_WAIT))
                await asyncio.wait((ready, gone, stopping), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        # the server is closing (the runtime stops): what is held, then the end,
        # left in the transport to go out as it closes
        frames, lost = sub.take()
        if not writer.is_closing():
            writer.write((b'{"lost":%d}\n' % lost if lost else b"") + encode_records(frames) + TAIL_END)
        raise
    except TimeoutError:
        # a client that stopped reading: drop what waits for it at once rather
        # than hold it (and the connection) until it reads again
        writer.transport.abort()
    except (ConnectionError, OSError):
        return  # the client left
    finally:
        for task in (gone, stopping, ready):
            if task is not None:
                task.cancel()


async def _tail_lines(frames: list[Frame], lost: int) -> bytes:
    """One take as stream lines. A big take (what a client that stalled
    finds held) is encoded a slice at a time, yielding between slices, so it
    never holds the loop for long."""
    parts = [b'{"lost":%d}\n' % lost] if lost else []
    for start in range(0, len(frames), TAIL_ENCODE_SLICE):
        if start:
            await asyncio.sleep(0)
        parts.append(encode_records(frames[start : start + TAIL_ENCODE_SLICE]))
    return b"".join(parts)


def _secure_directory(directory: str, gid: int | None = None) -> None:
    """Create ``directory`` 0700 if missing (0710 and of group ``gid`` when the
    socket has a group: its members must reach it); refuse one other users
    could tamper with.

    Fine: a directory we own (or root owns) that is not group/other-writable,
    or a sticky shared directory like /tmp (others cannot remove or rename
    our socket there). Anything else lets another user swap the socket.
    """
    try:
        try:
            os.mkdir(directory, 0o700)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(directory) or ".", exist_ok=True)
            os.mkdir(directory, 0o700)
        if gid is not None:  # ours, just made: the group may pass through, not list or write
            os.chown(directory, -1, gid)
            os.chmod(directory, 0o710)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ControlError(
            f"cannot create the directory {directory} for the control socket: {exc.strerror or exc}"
        ) from None
    try:
        st = os.stat(directory)
    except OSError as exc:
        raise ControlError(f"control socket directory {directory}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ControlError(f"control socket directory {directory} is not a directory")
    writable_by_others = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable_by_others and not st.st_mode & stat.S_ISVTX:
        raise ControlError(
            f"refusing the control socket directory {directory}: writable by other users "
            f"(mode {stat.S_IMODE(st.st_mode):o}, not sticky); use a private directory"
        )
    if not writable_by_others and st.st_uid not in (os.getuid(), 0):
        raise ControlError(
            f"refusing the control socket directory {directory}: owned by another user (uid {st.st_uid})"
        )
