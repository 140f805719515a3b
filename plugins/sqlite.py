"""``sqlite``: a SQLite sink (stdlib sqlite3, WAL, idempotent, size-bounded).

    [plugins.sqlite]
    path = "frames.db"     # adds a sink writing here; without it the plugin
                           # only provides the sink type for [[sinks]] tables
    max_rows = 1000000     # keep at most this many rows, deleting the oldest; 0: no bound

    [[sinks]]              # the same sink as a [[sinks]] entry (needs [plugins.sqlite])
    type = "sqlite"
    path = "other.db"

Table ``frames(device, seq, ts, type, payload BLOB, text, fields)`` (``fields``:
the decoded values as JSON text, for ``json_extract``; NULL without) with primary key
``(device, seq, ts)``; rows go in with INSERT OR IGNORE, so a batch delivered
twice (delivery is at least once) stores each frame once. One transaction per
batch. All database work runs on one dedicated thread: a sqlite3 connection
belongs to the thread that made it, and the event loop must never block on disk.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from firmware_host import ConfigError, Frame, PluginContext, Sink, fields_text

DEFAULT_MAX_ROWS = 1_000_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    device  TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    ts      REAL    NOT NULL,
    type    INTEGER,
    payload BLOB,
    text    TEXT,
    fields  TEXT,
    PRIMARY KEY (device, seq, ts)
)
"""
INSERT = "INSERT OR IGNORE INTO frames (device, seq, ts, type, payload, text, fields) VALUES (?, ?, ?, ?, ?, ?, ?)"
# rowid order is insertion order: the oldest rows are the lowest rowids
TRIM = "DELETE FROM frames WHERE rowid IN (SELECT rowid FROM frames ORDER BY rowid LIMIT ?)"


class SqliteSink(Sink):
    name = "sqlite"

    def __init__(self, path: Any = None, max_rows: Any = DEFAULT_MAX_ROWS, **unknown: Any) -> None:
        if unknown:
            raise ConfigError(f"sink 'sqlite': unknown option {sorted(unknown)[0]!r} (known: max_rows, path)")
        if not isinstance(path, str) or not path:
            raise ConfigError("sink 'sqlite': option 'path' is required (a database file path)")
        if not isinstance(max_rows, int) or isinstance(max_rows, bool) or max_rows < 0:
            raise ConfigError(f"sink 'sqlite': option 'max_rows' must be an integer >= 0, got {max_rows!r}")
        self.path = path
        self.max_rows = max_rows
        self.rows = 0  # rows in the table, tracked so trimming needs no COUNT(*) per batch
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def _call(self, fn: Any, *args: Any) -> Any:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-sink")
        try:
            await self._call(self._open)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    def _open(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per batch
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
            conn.execute(SCHEMA)
            # a database made before decoded values existed gains their column
            if "fields" not in {row[1] for row in conn.execute("PRAGMA table_info(frames)")}:
                conn.execute("ALTER TABLE frames ADD COLUMN fields TEXT")
            self.rows = conn.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def write(self, frames: Sequence[Frame]) -> None:
        if self._conn is None:
            raise RuntimeError("sqlite sink is not open")
        rows = [
            (
                f.device,
                f.seq,
                f.ts,
                f.type,
                f.payload,
                f.text,
                None if f.fields is None else fields_text(f.fields),
            )
            for f in frames
        ]
        await self._call(self._write, rows)

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN")
        try:
            inserted = conn.executemany(INSERT, rows).rowcount
            count = self.rows + max(0, inserted)
            if self.max_rows and count > self.max_rows:
                count -= conn.execute(TRIM, (count - self.max_rows,)).rowcount
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.rows = count

    async def close(self) -> None:
        if self._executor is None:
            return
        conn, self._conn = self._conn, None
        try:
            if conn is not None:
                await self._call(conn.close)
        finally:
            self._executor.shutdown(wait=False)
            self._executor = None


def setup(ctx: PluginContext) -> None:
    opts = ctx.take_options({"path": (str, None), "max_rows": (int, DEFAULT_MAX_ROWS)})
    if opts["max_rows"] < 0:
        raise ctx.option_error("max_rows", f"expected an integer >= 0, got {opts['max_rows']}")
    ctx.add_sink_type("sqlite", SqliteSink)
    if opts["path"] is not None:
        if not opts["path"]:
            raise ctx.option_error("path", "expected a database file path")
        ctx.add_sink(SqliteSink(path=opts["path"], max_rows=opts["max_rows"]))
