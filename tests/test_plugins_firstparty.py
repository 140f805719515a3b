"""The first-party plugins: stats, heartbeat, sqlite, stdout."""

from __future__ import annotations

import ast
import asyncio
import configparser
import importlib
import importlib.util
import io
import json
import logging
import sqlite3
import sys
import types
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from firmware_host import (
    ConfigError,
    FakeOpener,
    FakePort,
    Fh1Codec,
    Frame,
    PluginHost,
    PluginInfo,
    VirtualPort,
    discover_plugins,
    encode_packet,
    encode_records,
)
from tests.conftest import REPO
from tests.test_plugins import MemorySink, assert_law, lines_device, plugin_entry, plugin_runtime, task_entry

pytestmark = pytest.mark.timeout(30)

FIRST_PARTY = ("heartbeat", "sqlite", "stats", "stdout")


def first_party(name: str) -> types.ModuleType:
    """``firmware_host_plugins.NAME``: installed (pip install -e .), else from plugins/."""
    try:
        return importlib.import_module(f"firmware_host_plugins.{name}")
    except ImportError:
        spec = importlib.util.spec_from_file_location(
            "firmware_host_plugins",
            REPO / "plugins" / "__init__.py",
            submodule_search_locations=[str(REPO / "plugins")],
        )
        assert spec is not None and spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules["firmware_host_plugins"] = package
        spec.loader.exec_module(package)
        return importlib.import_module(f"firmware_host_plugins.{name}")


def frames(device: str, seqs: range, text: bool = False) -> list[Frame]:
    if text:
        return [Frame(device, s, None, 1000.0 + s, text=f"line {s}") for s in seqs]
    return [Frame(device, s, 1, 1000.0 + s, payload=bytes([s % 256]) * 3) for s in seqs]


# ----------------------------------------------------------------------- registration


def test_first_party_plugins_use_entry_points_and_only_the_public_api() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    declared = dict(
        line.split(" = ") for line in cfg["options.entry_points"]["firmware_host.plugins"].strip().splitlines()
    )
    assert {name: declared.get(name) for name in FIRST_PARTY} == {
        name: f"firmware_host_plugins.{name}" for name in FIRST_PARTY
    }
    for name in FIRST_PARTY:
        source = (REPO / "plugins" / f"{name}.py").read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("firmware_host"):
                assert node.module == "firmware_host", f"{name}.py imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("firmware_host.") for a in node.names), name
        assert callable(first_party(name).setup)
    try:
        metadata.distribution("firmware-host")
    except metadata.PackageNotFoundError:
        pytest.skip("firmware-host is not installed (pip install -e .): entry points not visible")
    found = discover_plugins()
    installed = {n: i.value for n, i in found.items() if (i.source or "").startswith("firmware-host ")}
    assert installed == declared, "stale install? run: pip install -e ."


# ----------------------------------------------------------------------- stats


def test_stats_logs_one_line_per_device(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="firmware_host.plugins.stats")
    port = FakePort([b"a\nb\nc\n"])

    async def main() -> dict[str, Any]:
        config = {
            "buffer": {"flush_interval": 0.01},
            "devices": [lines_device()],
            "plugins": {"stats": {"interval": 0.05}},
        }
        async with plugin_runtime(
            config, {"stats": first_party("stats")}, sinks=[MemorySink()], opener=FakeOpener({"fake://dev0": [port]})
        ) as (rt, _host):
            await rt.wait_until(lambda s: s["devices"]["dev0"]["flushed"] == 3, 5)
            return await rt.wait_until(lambda s: task_entry(s, "stats", "summary")["runs"] >= 2, 5)

    status = asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "firmware_host.plugins.stats"]
    assert any(line.startswith("dev0: connected frames=3 ") and "flushed=3" in line for line in lines), lines
    assert "dev0" in plugin_entry(status, "stats")["info"]["rates"]


def test_stats_rejects_bad_options() -> None:
    async def main(options: dict[str, Any]) -> None:
        host = PluginHost({"stats": options}, {"stats": PluginInfo.from_object("stats", first_party("stats"))})
        await host.setup()

    with pytest.raises(
        ConfigError, match=r"plugins\.stats\.interval: expected a number from 0.01 to 86400 \(seconds\), got 0"
    ):
        asyncio.run(main({"interval": 0}))
    with pytest.raises(ConfigError, match=r"plugins\.stats\.every: unknown option"):
        asyncio.run(main({"every": 1}))


# ----------------------------------------------------------------------- heartbeat


def test_heartbeat_pings_fh1_devices_and_marks_silent_ones_stale(tmp_path: Path) -> None:
    """0xF2 frames go downlink to the fh1 device only; silence marks it stale,
    a frame clears the mark."""
    stale_after = 0.4

    def hb(status: dict[str, Any]) -> dict[str, Any]:
        return plugin_entry(status, "heartbeat")["info"]["devices"].get("hb0", {})

    async def main() -> dict[str, Any]:
        fh1_port, text_port = VirtualPort(str(tmp_path / "hb0")), VirtualPort(str(tmp_path / "txt0"))
        try:
            config = {
                "buffer": {"flush_interval": 0.02},
                "devices": [
                    {"name": "hb0", "port": fh1_port.path, "codec": "fh1"},
                    {"name": "txt0", "port": text_port.path, "codec": "lines"},
                ],
                "plugins": {"heartbeat": {"interval": 0.1, "stale_after": stale_after}},
            }
            async with plugin_runtime(config, {"heartbeat": first_party("heartbeat")}, sinks=[MemorySink()]) as (
                rt,
                _host,
            ):
                await rt.wait_until(lambda s: all(d["state"] == "connected" for d in s["devices"].values()), 5)
                await fh1_port.write(encode_packet(0x01, 0, b"hello"))
                await rt.wait_until(lambda s: s["devices"]["hb0"]["frames"] == 1, 5)
                # the downlink: heartbeat frames decoded as the device would
                codec, pings = Fh1Codec("device-side"), []
                while len(pings) < 3:
                    pings += codec.feed(await asyncio.wait_for(fh1_port.read(), 2), 0.0)
                # then silence: stale once nothing arrived for stale_after
                stale = await rt.wait_until(lambda s: hb(s).get("stale") is True, 5)
                await fh1_port.write(encode_packet(0x01, 1, b"again"))
                fresh = await rt.wait_until(
                    lambda s: s["devices"]["hb0"]["frames"] == 2 and hb(s).get("stale") is False, 5
                )
                downlink_to_text = text_port.read_nowait()
        finally:
            fh1_port.close()
            text_port.close()
        return {"pings": pings, "stale": stale, "fresh": fresh, "text": downlink_to_text}

    got = asyncio.run(main())
    pings = got["pings"]
    assert [f.type for f in pings] == [0xF2] * len(pings) and all(f.payload == b"" for f in pings)
    assert [f.seq for f in pings] == list(range(pings[0].seq, pings[0].seq + len(pings)))
    assert hb(got["stale"])["silent_for"] >= stale_after and hb(got["stale"])["pings"] >= 3
    assert got["text"] == b""  # a lines device gets no heartbeat
    assert "txt0" not in plugin_entry(got["fresh"], "heartbeat")["info"]["devices"]
    assert_law(got["fresh"])


# ----------------------------------------------------------------------- sqlite


def test_sqlite_sink_is_idempotent_and_survives_reopen(tmp_path: Path) -> None:
    SqliteSink = first_party("sqlite").SqliteSink
    path = tmp_path / "db" / "frames.db"
    batch = frames("imu0", range(5)) + frames("gps0", range(3), text=True)

    async def main() -> int:
        sink = SqliteSink(path=str(path), max_rows=0)
        await sink.open()
        await sink.write(batch)
        await sink.write(batch)  # redelivery (at least once): no duplicates
        await sink.close()
        sink = SqliteSink(path=str(path))
        await sink.open()
        await sink.write(batch[:4])
        rows = sink.rows
        await sink.close()
        return rows

    assert asyncio.run(main()) == 8
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = db.execute("SELECT device, seq, ts, type, payload, text FROM frames ORDER BY device, seq").fetchall()
    assert len(rows) == 8
    assert rows[0] == ("gps0", 0, 1000.0, None, None, "line 0")
    assert rows[3] == ("imu0", 0, 1000.0, 1, b"\x00\x00\x00", None)


def test_sqlite_sink_keeps_at_most_max_rows_newest(tmp_path: Path) -> None:
    SqliteSink = first_party("sqlite").SqliteSink
    path = tmp_path / "bounded.db"

    async def main() -> int:
        sink = SqliteSink(path=str(path), max_rows=10)
        await sink.open()
        for start in (0, 10, 20):
            await sink.write(frames("imu0", range(start, start + 10)))
        await sink.write(frames("imu0", range(25, 30)))  # duplicates: nothing to trim
        rows = sink.rows
        await sink.close()
        return rows

    assert asyncio.run(main()) == 10
    with sqlite3.connect(path) as db:
        assert [r[0] for r in db.execute("SELECT seq FROM frames ORDER BY seq")] == list(range(20, 30))


def test_sqlite_options_are_checked(tmp_path: Path) -> None:
    SqliteSink = first_party("sqlite").SqliteSink
    with pytest.raises(ConfigError, match="'path' is required"):
        SqliteSink()
    with pytest.raises(ConfigError, match="'max_rows' must be an integer >= 0"):
        SqliteSink(path="x.db", max_rows=-1)
    with pytest.raises(ConfigError, match="unknown option 'maxrows'"):
        SqliteSink(path="x.db", maxrows=5)


def test_sqlite_plugin_as_sink_and_as_sink_type_in_a_runtime(tmp_path: Path) -> None:
    port = FakePort([b"".join(f"l{i}\n".encode() for i in range(30))])
    main_db, typed_db = tmp_path / "plugin.db", tmp_path / "typed.db"

    async def main() -> dict[str, Any]:
        config = {
            "buffer": {"flush_interval": 0.01, "batch_size": 7},
            "devices": [lines_device()],
            "sinks": [{"type": "sqlite", "path": str(typed_db), "max_rows": 5}],
            "plugins": {"sqlite": {"path": str(main_db)}},
        }
        async with plugin_runtime(
            config, {"sqlite": first_party("sqlite")}, opener=FakeOpener({"fake://dev0": [port]})
        ) as (rt, _host):
            return await rt.wait_until(lambda s: s["devices"]["dev0"]["flushed"] == 30, 5)

    status = asyncio.run(main())
    assert plugin_entry(status, "sqlite")["sinks"] == ["sqlite"]
    with sqlite3.connect(main_db) as db:
        assert [r[0] for r in db.execute("SELECT text FROM frames ORDER BY seq")] == [f"l{i}" for i in range(30)]
    with sqlite3.connect(typed_db) as db:
        assert db.execute("SELECT COUNT(*) FROM frames").fetchone()[0] == 5


# ----------------------------------------------------------------------- stdout


def test_stdout_sink_writes_jsonl_records() -> None:
    StdoutSink = first_party("stdout").StdoutSink
    out = io.BytesIO()
    batch = frames("imu0", range(3)) + frames("gps0", range(2), text=True)

    async def main() -> None:
        sink = StdoutSink(out)
        await sink.open()
        await sink.write(batch)
        await sink.close()

    asyncio.run(main())
    assert out.getvalue() == encode_records(batch)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert records[0]["device"] == "imu0" and records[-1] == {
        "device": "gps0",
        "seq": 1,
        "type": None,
        "ts": 1001.0,
        "text": "line 1",
    }


def test_stdout_plugin_prints_flushed_frames(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    port = FakePort([b"x\ny\n"])

    async def main() -> None:
        config = {"buffer": {"flush_interval": 0.01}, "devices": [lines_device()], "plugins": {"stdout": {}}}
        async with plugin_runtime(
            config, {"stdout": first_party("stdout")}, opener=FakeOpener({"fake://dev0": [port]})
        ) as (rt, _host):
            await rt.wait_until(lambda s: s["devices"]["dev0"]["flushed"] == 2, 5)

    asyncio.run(main())
    printed = [json.loads(line) for line in capfdbinary.readouterr().out.splitlines()]
    assert [r["text"] for r in printed] == ["x", "y"]
