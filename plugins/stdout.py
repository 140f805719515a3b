"""``stdout``: every flushed frame as a JSON line on standard output.

    [plugins.stdout]       # no options

The records are the ``jsonl`` sink's (design.md, "Sinks"). Writes run in an
executor: a slow reader of the pipe must not block the event loop. Run with
``-q`` so the final status table does not mix with the records.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import BinaryIO

from firmware_host import Frame, PluginContext, Sink, encode_records


class StdoutSink(Sink):
    name = "stdout"

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream  # None: sys.stdout's buffer, looked up at open (tests swap sys.stdout)
        self._out: BinaryIO | None = None

    async def open(self) -> None:
        self._out = self._stream if self._stream is not None else sys.stdout.buffer

    async def write(self, frames: Sequence[Frame]) -> None:
        if self._out is None:
            raise RuntimeError("stdout sink is not open")
        data = encode_records(frames)  # whole lines, one write per batch
        await asyncio.get_running_loop().run_in_executor(None, self._write, self._out, data)

    @staticmethod
    def _write(out: BinaryIO, data: bytes) -> None:
        out.write(data)
        out.flush()

    async def close(self) -> None:
        self._out = None


def setup(ctx: PluginContext) -> None:
    ctx.take_options({})
    ctx.add_sink(StdoutSink())
