"""``socket://host:port`` devices, connected by asyncio.

Why not pyserial's socket handler: it waits with ``select()``, which cannot
take a descriptor >= 1024; past that (a big fleet, a raised ``ulimit -n``)
such a port spun a core and read nothing while its state said
``connected``. ``loop.create_connection`` puts the socket in the event loop's
own selector (epoll, or libuv under uvloop), which has no such limit, and
delivers every byte from the moment of connection, so a device's greeting is
kept (pyserial flushed it with the input buffer as it opened the port).

The URL is parsed here: ``socket://HOST:PORT`` with HOST a name, an IPv4
address or a bracketed IPv6 one (``socket://[::1]:7000``). pyserial's
options (``?logging=...``) and anything else this module would silently
ignore are refused at open with a clear error.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import urllib.parse

from firmware_host.errors import PortClosed
from firmware_host.transport.limits import CONNECT_TIMEOUT, KEEPALIVE_COUNT, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL
from firmware_host.transport.openerror import open_failed
from firmware_host.transport.stream import ChunkProtocol, StreamPort

__all__ = ["connect", "is_socket_url", "keep_alive", "open_socket", "parse_socket_url", "split_host_url"]

_SCHEME = "socket://"
_MAX_URL = 300  # a host name is at most 253 bytes; a URL longer than this is a mistake


def is_socket_url(url: str) -> bool:
    return url[: len(_SCHEME)].lower() == _SCHEME


def parse_socket_url(url: str) -> tuple[str, int]:
    """``(host, port)`` of ``socket://HOST:PORT``; ValueError says what is wrong."""
    host, port, query = split_host_url(url, "socket")
    if query:
        raise ValueError(f"options are not supported (?{query}); expected socket://HOST:PORT")
    return host, port


def split_host_url(url: str, scheme: str) -> tuple[str, int, str]:
    """``(host, port, query)`` of ``SCHEME://HOST:PORT[?QUERY]``; ValueError
    says what is wrong. Shared with ``rfc2217://``, which takes options."""
    shape = f"{scheme}://HOST:PORT"
    if len(url) > _MAX_URL:
        raise ValueError(f"expected {shape} of at most {_MAX_URL} characters")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError(f"expected {shape} without spaces or control characters")
    parts = urllib.parse.urlsplit(url)  # ValueError for an unbalanced [IPv6] bracket
    if parts.fragment or parts.path not in ("", "/") or parts.username is not None or parts.password is not None:
        raise ValueError(f"expected {shape} and nothing else")
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname
    if not host or port is None or not 1 <= port <= 65535:
        raise ValueError(f"expected {shape} with a port from 1 to 65535")
    return host, port, parts.query


async def connect(url: str, host: str, port: int, protocol: asyncio.Protocol) -> asyncio.Transport:
    """A connection to ``host:port`` feeding ``protocol``; PortClosed (naming
    ``url``) when there is none within ``CONNECT_TIMEOUT``."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            transport, _ = await loop.create_connection(lambda: protocol, host, port)
    except TimeoutError:  # before OSError: it is one
        raise PortClosed(f"cannot open {url}: no connection within {CONNECT_TIMEOUT:g} s") from None
    except OSError as exc:  # refused, unreachable, unknown host, out of descriptors
        # open_failed words an errno in the system's words (not asyncio's "Connect call failed (address)")
        raise open_failed(url, exc) from None
    keep_alive(transport)
    return transport


def keep_alive(transport: asyncio.BaseTransport) -> None:
    """Probe an idle connection (TCP keepalive), so a network that drops
    without a word (a cable pulled between gateway and device server) ends
    it within ``KEEPALIVE_IDLE + KEEPALIVE_COUNT * KEEPALIVE_INTERVAL``
    seconds and the device reconnects, instead of reading nothing forever."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if sys.platform == "linux":  # elsewhere the system's keepalive timing stands
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)


async def open_socket(url: str) -> StreamPort:
    """Connect to ``url`` (``socket://HOST:PORT``); PortClosed when it cannot."""
    try:
        host, port = parse_socket_url(url)
    except ValueError as exc:
        raise PortClosed(f"cannot open {url}: {exc}") from None
    protocol = ChunkProtocol()
    transport = await connect(url, host, port, protocol)
    return StreamPort(url, transport, protocol)
