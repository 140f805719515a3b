"""Benchmark feeder: fh1 devices on pty pairs, driven from a separate process.

The feeder opens N pty pairs, prints one JSON line ``{"ports": [...], "frame_len": L}``
and then obeys commands on stdin (one per line):

``go``     start sending (not before: pyserial flushes a port's input when it opens it)
``stats``  print ``{"sent": [frames per device], "backlog": bytes not yet written}``
``stop``   stop making frames, finish the bytes already started (whole frames only),
           print ``{"sent": [...], ...}``; the ptys stay open until stdin closes

Modes:

``flood``   every device is written as fast as the host reads it (non-blocking writes,
            epoll on the pty masters); ``--frames K`` stops each device after K frames
``paced``   every device sends at the line rate of ``--baud`` (10 bits per byte); every
            ``--tick`` seconds the feeder writes what the line carried since the last tick.
            With ``--stamp`` the first 8 payload bytes hold the send time (float64 LE,
            ``time.time()``) so the bench can measure end-to-end latency
``silent``  ports open, nothing sent

Writes never block: a device whose pty is full keeps its bytes pending (``backlog``)
and is retried when the pty is writable again, so the feeder never holds up the
host, and a slow host shows up as backlog rather than as lost bytes.

Every fh1 frame with an ``n``-byte payload is exactly ``n + 10`` bytes on the wire
(COBS adds one byte to a packet shorter than 254 bytes, whatever its zeros, plus
the 0x00 delimiter), so a byte count is a frame count.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import selectors
import struct
import sys
import time
import tty

from firmware_host.codecs.fh1 import encode_packet

_STAMP = struct.Struct("<d")


class Device:
    __slots__ = ("index", "limit", "master", "path", "pending", "registered", "seq", "slave", "written")

    def __init__(self, index: int) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # binary-safe: no echo, no CR/LF translation
        os.set_blocking(master, False)
        self.index = index
        self.master = master
        self.slave = slave  # kept open: the host's close must not hang up the pty
        self.path = os.ttyname(slave)
        self.written = 0  # bytes written so far
        self.pending = bytearray()  # paced mode: encoded, not yet written
        self.limit: int | None = None  # flood with --frames: bytes to send in total
        self.registered = False
        self.seq = 0


class Feeder:
    def __init__(self, args: argparse.Namespace) -> None:
        self.mode = args.mode
        self.payload = args.payload
        self.frame_len = args.payload + 10
        self.tick = args.tick
        self.stamp = args.stamp
        self.fps = args.baud / 10 / self.frame_len  # frames per second per device at line rate
        self.devices = [Device(i) for i in range(args.devices)]
        if args.frames:
            for d in self.devices:
                d.limit = args.frames * self.frame_len
        self.sel = selectors.DefaultSelector()
        self.sending = False
        self.stopping = False
        self.t0 = 0.0
        self.filler = bytes((0x41 + i % 26) for i in range(args.payload))  # no zeros
        # flood: every device sends the same byte stream (seq 0, 1, 2, ...), made once
        # in chunks and shared, so the feeder spends its time writing, not encoding
        self.chunk_frames = 512
        self.chunk_len = self.chunk_frames * self.frame_len
        self.chunks: dict[int, bytes] = {}
        self.backlog_max = 0
        self.writes = 0

    # -- frames ------------------------------------------------------------------

    def chunk(self, k: int) -> bytes:
        data = self.chunks.get(k)
        if data is None:
            base = k * self.chunk_frames
            data = b"".join(encode_packet(0, base + i, self.filler) for i in range(self.chunk_frames))
            assert len(data) == self.chunk_len
            self.chunks[k] = data
            if len(self.chunks) > 64:  # forget chunks every device has passed
                low = min(d.written for d in self.devices) // self.chunk_len
                for old in [c for c in self.chunks if c < low]:
                    del self.chunks[old]
        return data

    def stamped(self, dev: Device, n: int, now: float) -> bytes:
        body = _STAMP.pack(now) + self.filler[8:] if self.stamp else self.filler
        seq = dev.seq
        dev.seq += n
        return b"".join(encode_packet(0, seq + i, body) for i in range(n))

    # -- writing -------------------------------------------------------------------

    def write_flood(self, dev: Device) -> bool:
        """Write until the pty is full; True when the device has nothing more to send now."""
        while True:
            end = dev.limit
            if self.stopping:  # finish the frame already started, then nothing more
                cut = -(-dev.written // self.frame_len) * self.frame_len
                end = cut if end is None else min(end, cut)
            if end is not None and dev.written >= end:
                return True
            k, off = divmod(dev.written, self.chunk_len)
            view = memoryview(self.chunk(k))[off:]
            if end is not None and end - dev.written < len(view):
                view = view[: end - dev.written]
            n = self._write(dev, view)
            if n is None:
                return False
            dev.written += n

    def write_pending(self, dev: Device) -> bool:
        while dev.pending:
            n = self._write(dev, dev.pending)
            if n is None:
                return False
            del dev.pending[:n]
            dev.written += n
        return True

    def _write(self, dev: Device, data: bytes | bytearray | memoryview) -> int | None:
        try:
            n = os.write(dev.master, data)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno == errno.EIO:
                return None
            raise
        self.writes += 1
        return n if n else None

    def want_write(self, dev: Device, want: bool) -> None:
        if want and not dev.registered:
            self.sel.register(dev.master, selectors.EVENT_WRITE, dev)
            dev.registered = True
        elif not want and dev.registered:
            self.sel.unregister(dev.master)
            dev.registered = False

    # -- commands -----------------------------------------------------------------------

    def report(self, **extra: object) -> None:
        backlog = sum(len(d.pending) for d in self.devices)
        out = {
            "sent": [d.written // self.frame_len for d in self.devices],
            "backlog": backlog,
            "backlog_max": self.backlog_max,
            "writes": self.writes,
            **extra,
        }
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()

    def command(self, line: str) -> None:
        cmd = line.strip()
        if cmd == "go" and not self.sending:
            self.sending = True
            self.t0 = time.monotonic()
            if self.mode == "flood":
                for d in self.devices:
                    self.want_write(d, not self.write_flood(d))
        elif cmd == "stats":
            self.report()
        elif cmd == "stop":
            self.stopping = True
            for d in self.devices:
                done = self.write_flood(d) if self.mode == "flood" else self.write_pending(d)
                self.want_write(d, not done)

    # -- main loop -----------------------------------------------------------------------

    def run(self) -> None:
        print(
            json.dumps(
                {
                    "ports": [d.path for d in self.devices],
                    "frame_len": self.frame_len,
                    "fps": self.fps,
                    "pid": os.getpid(),
                }
            ),
            flush=True,
        )
        stdin = sys.stdin.fileno()
        os.set_blocking(stdin, False)
        self.sel.register(stdin, selectors.EVENT_READ, None)
        inbuf = b""
        next_tick = 0.0
        stop_deadline = None
        reported = False
        while True:
            timeout = None
            if self.mode == "paced" and self.sending and not self.stopping:
                timeout = max(0.0, next_tick - time.monotonic())
            if self.stopping and not reported:
                if stop_deadline is None:
                    stop_deadline = time.monotonic() + 10.0
                if not any(d.registered for d in self.devices) or time.monotonic() > stop_deadline:
                    # the ptys stay open until the bench closes our stdin: a device that
                    # vanished now would take its unread bytes with it (a hung-up tty's
                    # input is discarded), and the host has not necessarily read them yet
                    self.report(final=True)
                    reported = True
                    timeout = None
                else:
                    timeout = 0.05
            for key, _ in self.sel.select(timeout):
                if key.data is None:
                    try:
                        chunk = os.read(stdin, 4096)
                    except BlockingIOError:
                        continue
                    if not chunk:  # the bench went away
                        return
                    inbuf += chunk
                    while b"\n" in inbuf:
                        line, inbuf = inbuf.split(b"\n", 1)
                        self.command(line.decode())
                    continue
                dev = key.data
                done = self.write_flood(dev) if self.mode == "flood" else self.write_pending(dev)
                self.want_write(dev, not done)
            if self.mode == "paced" and self.sending and not self.stopping:
                now = time.monotonic()
                if now >= next_tick:
                    self.pace(now)
                    next_tick = now + self.tick

    def pace(self, now: float) -> None:
        due = int((now - self.t0) * self.fps)
        wall = time.time()
        backlog = 0
        for d in self.devices:
            n = due - d.seq
            if n > 0:
                d.pending += self.stamped(d, n, wall)
            if d.pending and not d.registered:
                self.want_write(d, not self.write_pending(d))
            backlog += len(d.pending)
        self.backlog_max = max(self.backlog_max, backlog)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=16)
    p.add_argument("--mode", choices=("flood", "paced", "silent"), default="flood")
    p.add_argument("--payload", type=int, default=64)
    p.add_argument("--baud", type=int, default=921600)
    p.add_argument("--tick", type=float, default=0.005)
    p.add_argument("--frames", type=int, default=0, help="flood: frames per device, then stop sending")
    p.add_argument("--stamp", action="store_true", help="paced: embed the send time in each payload")
    args = p.parse_args(argv)
    if not 8 <= args.payload < 244:
        p.error("--payload must be 8..243 (one COBS block)")
    Feeder(args).run()


if __name__ == "__main__":
    main()
