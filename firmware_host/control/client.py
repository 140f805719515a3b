"""The control socket's client: what the CLI's ``status``, ``buffers``,
``flush``, ``stop`` and ``tail`` use. Light on purpose (the standard library, the
protocol and the errors), so those commands start fast on a Raspberry Pi.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import stat
from collections.abc import Iterator
from typing import Any

from firmware_host.control.protocol import MAX_REPLY
from firmware_host.errors import EXIT_FAILURE, EXIT_USAGE, ControlError, NoRuntime

__all__ = [
    "ControlError",
    "ControlStream",
    "NoRuntime",
    "is_listening",
    "open_stream",
    "parse_reply",
    "request",
    "request_sync",
]


def parse_reply(data: bytes) -> dict[str, Any]:
    """A reply line's result (without ``ok``); an error reply raises ControlError with its code."""
    try:
        reply = json.loads(data)
    except ValueError:
        raise ControlError("the runtime sent a malformed reply") from None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ControlError("the runtime sent a malformed reply")
    if not reply["ok"]:
        code = reply.get("code")
        if isinstance(code, bool) or not isinstance(code, int) or not 1 <= code <= 125:
            code = EXIT_FAILURE
        raise ControlError(str(reply.get("error") or "the runtime refused the request"), code)
    reply.pop("ok")
    return reply


def _connect_error(path: str, exc: OSError) -> ControlError:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return NoRuntime(f"no runtime is listening on {path}")
    if exc.errno == errno.ECONNREFUSED:
        return NoRuntime(f"no runtime is listening on {path}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ControlError(f"permission denied on the control socket {path} (another user's runtime?)")
    return ControlError(f"cannot reach the control socket {path}: {exc.strerror or exc}")


def request_sync(path: str, req: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request and return the reply without ``ok``.

    Raises NoRuntime when nothing listens at ``path`` and ControlError for an
    error reply (its ``exit_code`` is the reply's ``code``) or a broken exchange.
    """
    sock = _connect(path, timeout)
    try:
        try:
            sock.sendall(json.dumps(req).encode() + b"\n")
            data = _read_line(sock)
        except TimeoutError:
            raise ControlError(f"no reply from the runtime on {path} within {timeout:g}s") from None
        except OSError as exc:
            raise ControlError(f"control connection to {path} failed: {exc.strerror or exc}") from None
    finally:
        sock.close()
    return parse_reply(data)


def _connect(path: str, timeout: float) -> socket.socket:
    """A connected socket with ``timeout`` set; NoRuntime or ControlError."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _connect_error(path, exc) from None
    if not stat.S_ISSOCK(st.st_mode):
        raise NoRuntime(f"no runtime is listening on {path} (it is not a socket)")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except TimeoutError:
            raise ControlError(f"the runtime on {path} did not accept a connection within {timeout:g}s") from None
        except OSError as exc:
            if exc.errno == errno.EINVAL or "too long" in str(exc):
                raise ControlError(f"control socket path too long: {path}", EXIT_USAGE) from None
            raise _connect_error(path, exc) from None
    except BaseException:
        sock.close()
        raise
    return sock


def _read_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ControlError("the runtime closed the connection without replying")
        nl = chunk.find(b"\n")
        if nl >= 0:
            chunks.append(chunk[:nl])
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_REPLY:
            raise ControlError("the runtime's reply is too long")


class ControlStream:
    """A streaming request (``tail``): the reply, then lines as they come.

    ``open_stream`` returns it once the reply said ok. ``blocks(wait)`` yields
    whole lines (one or more, each ending in a newline, as the socket gave
    them), or None when ``wait`` seconds passed without any (the caller's
    chance to look around: a silent device sends nothing); ``lines(wait)`` the
    same a line at a time. Both end when the runtime closes the connection.
    Close it (or use ``with``) to leave.
    """

    def __init__(self, path: str, sock: socket.socket, reply: dict[str, Any], rest: bytes) -> None:
        self.path = path
        self.reply = reply
        self._sock = sock
        self._rest = bytearray(rest)

    def blocks(self, wait: float = 1.0) -> Iterator[bytes | None]:
        sock, rest = self._sock, self._rest
        sock.settimeout(wait)
        while True:
            cut = rest.rfind(b"\n") + 1
            if cut:
                block = bytes(rest[:cut])
                del rest[:cut]
                yield block
            elif len(rest) > MAX_REPLY:
                raise ControlError("the runtime sent a line that is too long")
            try:
                chunk = sock.recv(1 << 16)
            except TimeoutError:
                yield None
                continue
            except OSError as exc:
                raise ControlError(f"control connection to {self.path} failed: {exc.strerror or exc}") from None
            if not chunk:
                return  # a half line before the close is no line
            rest += chunk

    def lines(self, wait: float = 1.0) -> Iterator[bytes | None]:
        for block in self.blocks(wait):
            if block is None:
                yield None
            else:
                yield from block.split(b"\n")[:-1]

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> ControlStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_stream(path: str, req: dict[str, Any], timeout: float = 30.0) -> ControlStream:
    """Send a streaming request; its reply (``.reply``, without ``ok``) and
    the lines that follow (``.lines()``). Errors as ``request_sync``."""
    sock = _connect(path, timeout)
    try:
        try:
            sock.sendall(json.dumps(req).encode() + b"\n")
            data, rest = _read_first_line(sock)
        except TimeoutError:
            raise ControlError(f"no reply from the runtime on {path} within {timeout:g}s") from None
        except OSError as exc:
            raise ControlError(f"control connection to {path} failed: {exc.strerror or exc}") from None
        return ControlStream(path, sock, parse_reply(data), rest)
    except BaseException:
        sock.close()
        raise


def _read_first_line(sock: socket.socket) -> tuple[bytes, bytes]:
    """The first line, and what came after it (the stream's start)."""
    buf = bytearray()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ControlError("the runtime closed the connection without replying")
        buf += chunk
        nl = buf.find(b"\n")
        if nl >= 0:
            return bytes(buf[:nl]), bytes(buf[nl + 1 :])
        if len(buf) > MAX_REPLY:
            raise ControlError("the runtime's reply is too long")


async def request(path: str, req: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """``request_sync`` for asyncio code (plugins, tests): same results and errors."""
    return await asyncio.to_thread(request_sync, path, req, timeout)


async def is_listening(path: str) -> bool:
    """True when something accepts connections on ``path`` (a live runtime)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), 2.0)
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except TimeoutError:
        return True  # a full backlog is a live, busy listener
    except OSError as exc:
        raise ControlError(f"cannot check the control socket {path}: {exc.strerror or exc}") from None
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True
