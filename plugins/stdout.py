"""``stdout``: every flushed frame as a JSON line on standard output.

    [plugins.stdout]       # no options

The records are the ``jsonl`` sink's (the jsonl record in the README). Writes run in the
sink's own writer thread, straight to the file descriptor: a slow reader of
the pipe must not block the event loop, and a write blocked for ever on a
pipe nobody reads must not hold ``sys.stdout``'s lock when the process exits.
When the reader leaves (EPIPE, as after ``| head -2``) the sink closes; if it
was the last sink the runtime stops like a Unix filter. Run with ``-q`` so
the final status table does not mix with the records.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import BinaryIO

from firmware_host import Frame, PluginContext, Sink, SinkClosed, WriterThread, encode_records


class StdoutSink(Sink):
    name = "stdout"

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream  # None: sys.stdout's buffer, looked up at open (tests swap sys.stdout)
        self._out: BinaryIO | None = None
        self._fd: int | None = None  # the stream's descriptor, when it has one
        self._gone = False  # the reader has left (EPIPE): closed for good
        self._writer = WriterThread("stdout")

    async def open(self) -> None:
        out = self._stream if self._stream is not None else sys.stdout.buffer
        try:
            fd = out.fileno()
        except (OSError, ValueError):  # io.UnsupportedOperation: an in-memory stream
            fd = None
        else:
            out.flush()  # what Python buffered goes first; from now on, straight to the fd
        self._out, self._fd = out, fd

    async def write(self, frames: Sequence[Frame]) -> None:
        if self._gone:
            raise SinkClosed("stdout: the reader has gone")
        if self._out is None:
            raise RuntimeError("stdout sink is not open")
        data = encode_records(frames)  # whole lines, one write per batch
        try:
            await self._writer.run(self._write, data)
        except BrokenPipeError:
            self._gone = True
            raise SinkClosed("stdout: the reader has gone (EPIPE)") from None

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            assert self._out is not None
            self._out.write(data)
            self._out.flush()
            return
        view = memoryview(data)
        while view:  # a pipe may take part of it: never cut a line
            view = view[os.write(self._fd, view) :]

    async def close(self) -> None:
        self._out = None
        self._writer.stop()


def setup(ctx: PluginContext) -> None:
    ctx.take_options({})
    ctx.add_sink(StdoutSink())
