"""Plugin host and scheduler, in-process: missed-tick policies on a blocked
loop, isolation of plugins that raise, hang or fail to import, processors,
plugin codecs, shutdown within the grace period, config errors.

Tests are plain functions that ``asyncio.run`` their body, so they do not
depend on an async pytest plugin. Helpers here are reused by the other
test_plugins_*.py files.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import logging
import sys
import time
import types
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import pytest

from firmware_host import (
    ConfigError,
    FakeOpener,
    FakePort,
    Frame,
    LinesCodec,
    PluginContext,
    PluginHost,
    PluginInfo,
    PluginOptionError,
    Runtime,
    Sink,
    config_from_dict,
)
from firmware_host.plugins.host import start_plugins
from tests.conftest import cli, toml_config

pytestmark = pytest.mark.timeout(30)


# ----------------------------------------------------------------------- helpers


def assert_law(status: Mapping[str, Any]) -> None:
    """frames == flushed + dropped + buffered, for every device."""
    for name, d in status["devices"].items():
        assert d["frames"] == d["flushed"] + d["dropped"] + d["buffered"], (name, d)


class MemorySink(Sink):
    name = "memory"

    def __init__(self) -> None:
        self.frames: list[Frame] = []

    async def write(self, frames: Sequence[Frame]) -> None:
        self.frames.extend(frames)


def plugin(setup: Callable[[PluginContext], Any]) -> types.SimpleNamespace:
    """A plugin object (what an entry point would load) from a setup function."""
    return types.SimpleNamespace(setup=setup)


def plugin_entry(status: Mapping[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in status["plugins"] if p["name"] == name)


def task_entry(status: Mapping[str, Any], plugin_name: str, task: str) -> dict[str, Any]:
    return next(t for t in plugin_entry(status, plugin_name)["tasks"] if t["name"] == task)


@contextlib.asynccontextmanager
async def plugin_runtime(
    config: Mapping[str, Any], plugins: Mapping[str, Any], **runtime_kwargs: Any
) -> AsyncIterator[tuple[Runtime, PluginHost]]:
    """A started runtime with ``plugins`` (name → object with setup, or a
    PluginInfo) available and those in ``config["plugins"]`` enabled; on exit an
    orderly shutdown, ``host.aclose()`` and the accounting law."""
    available = {n: p if isinstance(p, PluginInfo) else PluginInfo.from_object(n, p) for n, p in plugins.items()}
    host = PluginHost(config.get("plugins", {}), available, source="<test>")
    host.check()
    await host.setup()
    cfg = config_from_dict(config, source="<test>", known_codecs=host.known_codecs(), known_sinks=host.known_sinks())
    rt = Runtime(cfg, **runtime_kwargs)
    host.attach(rt)
    await rt.start()
    try:
        yield rt, host
    finally:
        summary = await rt.shutdown()
        await host.aclose()
        assert_law(summary.status)


def lines_device(name: str = "dev0", port: str = "fake://dev0") -> dict[str, Any]:
    return {"name": name, "port": port, "codec": "lines"}


async def feed_lines(port: FakePort, count: int, start: int = 0, every: float = 0.0) -> None:
    for i in range(start, start + count):
        port.feed(f"line {i}\n".encode())
        await asyncio.sleep(every)


# ----------------------------------------------------------------------- missed ticks


IV = 0.2  # grid interval of the policy tasks
BLOCK = 0.8  # the loop is blocked this long, starting mid-way between two ticks


def test_missed_tick_policies_on_a_blocked_loop() -> None:
    """Three tasks (skip, delay, burst) on the same interval while another
    plugin's task blocks the loop with time.sleep for ~4 intervals."""
    runs: dict[str, list[float]] = {"skip": [], "delay": [], "burst": []}
    block: dict[str, float] = {}

    def setup_policies(ctx: PluginContext) -> None:
        for policy in runs:

            async def record(policy: str = policy) -> None:
                runs[policy].append(asyncio.get_running_loop().time())

            ctx.every(IV, record, missed=policy, name=policy)  # type: ignore[arg-type]

    def setup_blocker(ctx: PluginContext) -> None:
        async def block_loop() -> None:
            if not block:  # once, 1.5 intervals in: mid-way between the policy tasks' ticks
                loop = asyncio.get_running_loop()
                block["start"] = loop.time()
                time.sleep(BLOCK)  # deliberately blocks the event loop
                block["end"] = loop.time()

        ctx.every(1.5 * IV, block_loop, name="block")

    async def main() -> dict[str, Any]:
        config = {"plugins": {"policies": {}, "blocker": {}}}
        async with plugin_runtime(config, {"policies": plugin(setup_policies), "blocker": plugin(setup_blocker)}) as (
            rt,
            _host,
        ):
            base = asyncio.get_running_loop().time()  # the tasks' grid started in rt.start()
            await rt.wait_until(
                lambda s: (
                    "end" in block and all(len([t for t in r if t > block["end"] + 2.5 * IV]) for r in runs.values())
                ),
                10,
            )
            status = await rt.status()
        return {"base": base, "status": status}

    got = asyncio.run(main())
    start, end = block["start"], block["end"]
    status = got["status"]
    for policy, times in runs.items():
        before = [t for t in times if t < start]
        during = [t for t in times if start <= t < end]
        after = [t for t in times if t >= end]
        assert before and not during, (policy, times, block)
        # the grid: T_n = base + n * IV (base measured from the first on-time run)
        base = before[0] - IV
        due = [base + n * IV for n in range(1, 100)]
        last_before = max(n for n, t in enumerate(due) if t < start + 0.01)
        missed_ticks = [t for t in due[last_before + 1 :] if t <= end]  # came due while blocked
        assert len(missed_ticks) >= 3, (policy, missed_ticks, block)
        next_grid = next(t for t in due if t > end)
        stats = task_entry(status, "policies", policy)
        # every policy runs once as soon as the loop is free again
        assert after[0] - end < 0.05, (policy, after[0], end)
        if policy == "skip":
            # missed ticks dropped; the next run is at the next grid point
            assert stats["missed"] == len(missed_ticks) - 1
            assert after[1] == pytest.approx(next_grid, abs=0.04), (after, next_grid)
        elif policy == "delay":
            # the grid is re-based on the late run
            assert stats["missed"] == len(missed_ticks) - 1
            assert after[1] - after[0] == pytest.approx(IV, abs=0.04), after
            assert after[2] - after[1] == pytest.approx(IV, abs=0.04), after
        else:
            # one run per missed tick, back to back, then the original grid
            assert stats["missed"] == 0
            burst = [t for t in after if t - end < 0.05]
            assert len(burst) == len(missed_ticks), (burst, missed_ticks)
            later = [t for t in after if t - end >= 0.05]
            assert later[0] == pytest.approx(next_grid, abs=0.04), (later, next_grid)
        assert stats["failures"] == 0 and stats["overruns"] == 0


# ----------------------------------------------------------------------- isolation


def test_raising_hanging_and_unimportable_plugins_are_isolated(caplog: pytest.LogCaptureFixture) -> None:
    """Frames keep flowing while plugins raise, hang past their timeout, fail
    to import, fail in setup or in a processor; each is counted and named."""
    caplog.set_level(logging.WARNING)

    def setup_raiser(ctx: PluginContext) -> None:
        async def explode() -> None:
            raise RuntimeError("plugin bug")

        ctx.every(0.02, explode, name="explode")

    def setup_hanger(ctx: PluginContext) -> None:
        async def hang() -> None:
            await asyncio.Event().wait()  # never returns

        ctx.every(0.05, hang, timeout=0.1, name="hang")

    def setup_bad(ctx: PluginContext) -> None:
        raise ValueError("setup bug")

    def setup_bad_processor(ctx: PluginContext) -> None:
        @ctx.on_frame
        def crash(frame: Frame) -> Frame | None:
            raise KeyError("processor bug")

    unimportable = PluginInfo(
        "unimportable", "fh_no_such_module", "test 0", lambda: importlib.import_module("fh_no_such_module")
    )
    port = FakePort()
    sink = MemorySink()
    names = ["raiser", "hanger", "unimportable", "badsetup", "badproc"]

    async def main() -> dict[str, Any]:
        config = {"buffer": {"flush_interval": 0.02}, "devices": [lines_device()], "plugins": {n: {} for n in names}}
        plugins = {
            "raiser": plugin(setup_raiser),
            "hanger": plugin(setup_hanger),
            "unimportable": unimportable,
            "badsetup": plugin(setup_bad),
            "badproc": plugin(setup_bad_processor),
        }
        async with plugin_runtime(config, plugins, opener=FakeOpener({"fake://dev0": [port]}), sinks=[sink]) as (
            rt,
            _host,
        ):
            await feed_lines(port, 200, every=0.003)
            status = await rt.wait_until(
                lambda s: (
                    s["devices"]["dev0"]["flushed"] == 200
                    and task_entry(s, "hanger", "hang")["overruns"] >= 2
                    and task_entry(s, "raiser", "explode")["backed_off"] > 0
                ),
                10,
            )
        return status

    status = asyncio.run(main())
    assert [f.text for f in sink.frames] == [f"line {i}" for i in range(200)]  # kept, in order
    dev = status["devices"]["dev0"]
    assert dev["frames"] == 200 and dev["filtered"] == 0
    assert plugin_entry(status, "unimportable")["state"] == "failed"
    assert "import failed" in plugin_entry(status, "unimportable")["error"]
    assert plugin_entry(status, "badsetup")["state"] == "failed"
    assert "setup bug" in plugin_entry(status, "badsetup")["error"]
    assert plugin_entry(status, "badproc")["processor_failures"] == 200
    explode = task_entry(status, "raiser", "explode")
    assert explode["failures"] >= 3 and "plugin bug" in explode["last_error"]
    # exponential backoff: fewer runs than ticks
    assert explode["backed_off"] > 0
    hang = task_entry(status, "hanger", "hang")
    assert hang["overruns"] >= 2 and hang["failures"] == 0
    for name in ("raiser", "hanger", "badproc"):
        assert plugin_entry(status, name)["state"] == "running"
        assert plugin_entry(status, name)["failures"] > 0
    logged = caplog.text
    for name in ("raiser", "hanger", "unimportable", "badsetup", "badproc"):
        assert f"plugin {name}" in logged


FLAKY_IV = 0.03  # wide enough that a loaded machine's jitter stays well under half an interval


def test_failing_task_backs_off_exponentially_and_recovers() -> None:
    fail = {"on": True}
    calls: list[float] = []

    def setup(ctx: PluginContext) -> None:
        async def flaky() -> None:
            calls.append(asyncio.get_running_loop().time())
            if fail["on"]:
                raise OSError("device busy")

        ctx.every(FLAKY_IV, flaky, name="flaky")

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        async with plugin_runtime({"plugins": {"flaky": {}}}, {"flaky": plugin(setup)}) as (rt, _host):
            s1 = await rt.wait_until(lambda s: task_entry(s, "flaky", "flaky")["failures"] >= 6, 10)
            fail["on"] = False
            runs = task_entry(s1, "flaky", "flaky")["runs"]
            s2 = await rt.wait_until(lambda s: task_entry(s, "flaky", "flaky")["runs"] >= runs + 3, 10)
        return s1, s2

    s1, s2 = asyncio.run(main())
    t1 = task_entry(s1, "flaky", "flaky")
    # pauses of 1, 3, 7, 15, 31 intervals after failures 2..6
    assert t1["backed_off"] >= 1 + 3 + 7 + 15
    # each failure after the first doubles the gap between runs (a run takes a little time,
    # so the tick at the end of the pause is sat out too): runs at ticks 1, 2, 4, 8, 16, 32
    gaps = [round((b - a) / FLAKY_IV) for a, b in itertools.pairwise(calls)][:5]
    assert gaps == [1, 2, 4, 8, 16], gaps
    assert task_entry(s2, "flaky", "flaky")["last_error"] is not None  # kept for the report
    assert round((calls[-1] - calls[-2]) / FLAKY_IV) == 1  # a clean run ended the streak: back on every tick


# ----------------------------------------------------------------------- processors and codecs


def test_processors_drop_transform_and_keep_on_error() -> None:
    def setup(ctx: PluginContext) -> None:
        @ctx.on_frame
        def clean(frame: Frame) -> Frame | None:
            text = frame.text or ""
            if text.startswith("#"):
                return None  # comments never enter the buffer
            if text == "boom":
                raise ValueError("cannot parse")  # kept unchanged, counted
            if text == "other":
                return Frame("someone-else", frame.seq, None, frame.ts, text="stolen")  # refused
            return Frame(frame.device, frame.seq, frame.type, frame.ts, text=text.upper())

    port = FakePort([b"a\n# comment\nboom\nb\nother\n#x\nc\n"])
    sink = MemorySink()

    async def main() -> dict[str, Any]:
        config = {"buffer": {"flush_interval": 0.01}, "devices": [lines_device()], "plugins": {"clean": {}}}
        async with plugin_runtime(
            config, {"clean": plugin(setup)}, opener=FakeOpener({"fake://dev0": [port]}), sinks=[sink]
        ) as (rt, _host):
            return await rt.wait_until(lambda s: s["devices"]["dev0"]["flushed"] == 5, 5)

    status = asyncio.run(main())
    assert [f.text for f in sink.frames] == ["A", "boom", "B", "other", "C"]
    entry = plugin_entry(status, "clean")
    assert entry["frames_dropped"] == 2 and entry["processor_failures"] == 2
    assert status["devices"]["dev0"]["filtered"] == 2


class ShoutCodec(LinesCodec):
    """A plugin codec: lines, upper-cased."""

    name = "shout"

    def feed(self, data: bytes, ts: float) -> list[Frame]:
        frames = super().feed(data, ts)
        for f in frames:
            f.text = (f.text or "").upper()
        return frames


def test_plugin_codec_and_sink_type_are_known_to_the_config() -> None:
    sinks: list[MemorySink] = []

    def setup(ctx: PluginContext) -> None:
        ctx.add_codec("shout", ShoutCodec)

        def memory(**options: Any) -> MemorySink:
            sinks.append(MemorySink())
            return sinks[-1]

        ctx.add_sink_type("memory", memory)

    port = FakePort([b"hello\nworld\n"])

    async def main() -> dict[str, Any]:
        config = {
            "buffer": {"flush_interval": 0.01},
            "devices": [{"name": "dev0", "port": "fake://dev0", "codec": "shout"}],
            "sinks": [{"type": "memory"}],
            "plugins": {"shout": {}},
        }
        async with plugin_runtime(config, {"shout": plugin(setup)}, opener=FakeOpener({"fake://dev0": [port]})) as (
            rt,
            _host,
        ):
            return await rt.wait_until(lambda s: s["devices"]["dev0"]["flushed"] == 2, 5)

    status = asyncio.run(main())
    assert [f.text for f in sinks[0].frames] == ["HELLO", "WORLD"]
    assert plugin_entry(status, "shout")["codecs"] == ["shout"]
    # without the plugin, the same config is a config error
    with pytest.raises(ConfigError, match="unknown codec 'shout'"):
        config_from_dict({"devices": [{"name": "d", "port": "x", "codec": "shout"}]})


# ----------------------------------------------------------------------- shutdown


def test_shutdown_stops_new_runs_and_gives_running_ones_until_the_grace_deadline() -> None:
    seen: dict[str, Any] = {"slow_done": 0, "stuck_cancelled": False}
    starts: list[float] = []

    def setup(ctx: PluginContext) -> None:
        async def slow() -> None:
            starts.append(asyncio.get_running_loop().time())
            await asyncio.sleep(0.3)  # ignores the token: it simply finishes within the grace
            seen["slow_done"] += 1

        async def stuck() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                seen["stuck_cancelled"] = True
                raise

        async def cooperative() -> None:
            await ctx.token.cancelled()  # returns as soon as shutdown begins
            seen["cooperative_at"] = asyncio.get_running_loop().time()

        seen["token"] = ctx.token
        ctx.every(0.05, slow, name="slow")
        ctx.every(0.05, stuck, name="stuck")
        ctx.every(0.05, cooperative, name="cooperative")

    port = FakePort()
    sink = MemorySink()

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        config = {
            "shutdown": {"grace": 1.0},
            "buffer": {"flush_interval": 0},
            "devices": [lines_device()],
            "plugins": {"p": {}},
        }
        available = {"p": PluginInfo.from_object("p", plugin(setup))}
        host = PluginHost(config["plugins"], available)
        await host.setup()
        rt = Runtime(config_from_dict(config), opener=FakeOpener({"fake://dev0": [port]}), sinks=[sink])
        host.attach(rt)
        await rt.start()
        await feed_lines(port, 50)
        await rt.wait_until(
            lambda s: s["devices"]["dev0"]["frames"] == 50 and all(t["running"] for t in plugin_entry(s, "p")["tasks"]),
            5,
        )
        runs_at_stop = {t["name"]: t["runs"] for t in host.report()[0]["tasks"]}
        t0 = loop.time()
        summary = await rt.shutdown()
        t_drained = loop.time()
        await host.aclose()
        t_closed = loop.time()
        final = host.report()
        return {
            "summary": summary,
            "drain": t_drained - t0,
            "close": t_closed - t0,
            "t0": t0,
            "final": final,
            "runs_at_stop": runs_at_stop,
        }

    got = asyncio.run(main())
    status = got["summary"].status
    assert_law(status)
    assert status["devices"]["dev0"]["flushed"] == 50 and len(sink.frames) == 50
    # the drain did not wait for the stuck run; the stuck run was cancelled at the deadline
    assert got["drain"] < 0.5
    assert 0.9 <= got["close"] < 2.0
    # the slow run in progress finished (not cancelled); no run started after shutdown began
    assert seen["slow_done"] == len(starts)
    assert seen["stuck_cancelled"] and seen["token"].is_cancelled
    assert seen["cooperative_at"] - got["t0"] < 0.1
    tasks = {t["name"]: t for t in got["final"][0]["tasks"]}
    assert {name: t["runs"] for name, t in tasks.items()} == got["runs_at_stop"]
    assert tasks["stuck"]["runs"] == 1 and tasks["cooperative"]["runs"] == 1
    assert got["final"][0]["state"] == "stopped"


# ----------------------------------------------------------------------- config and loading


def test_enabled_plugin_that_is_not_installed_is_a_config_error(tmp_path: Any) -> None:
    host = PluginHost(
        {"statz": {}}, {"stats": PluginInfo.from_object("stats", plugin(lambda ctx: None))}, source="gw.toml"
    )
    with pytest.raises(ConfigError) as err:
        host.check()
    assert str(err.value).startswith("gw.toml: plugins.statz: no installed plugin named 'statz'")
    assert "\n" not in str(err.value)
    cfg = toml_config(tmp_path / "gw.toml", "[plugins.no-such-plugin-xyz]\ninterval = 1\n")
    proc = cli("run", "-c", str(cfg), "--duration", "1", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "plugins.no-such-plugin-xyz: no installed plugin named" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plugin_options_errors_are_config_errors() -> None:
    def setup(ctx: PluginContext) -> None:
        ctx.take_options({"interval": (float, 1.0), "path": (str, ...)})

    async def load(options: dict[str, Any]) -> PluginHost:
        host = PluginHost({"p": options}, {"p": PluginInfo.from_object("p", plugin(setup))}, source="c.toml")
        await host.setup()
        return host

    with pytest.raises(PluginOptionError, match=r"^c.toml: plugins.p.intervall: unknown option"):
        asyncio.run(load({"intervall": 1, "path": "x"}))
    with pytest.raises(PluginOptionError, match=r"^c.toml: plugins.p.path: required option is missing"):
        asyncio.run(load({}))
    with pytest.raises(PluginOptionError, match=r'plugins.p.interval: expected a finite number, got "fast"$'):
        asyncio.run(load({"interval": "fast", "path": "x"}))
    host = asyncio.run(load({"interval": 2, "path": "x"}))  # an int is a fine float
    assert host.report()[0]["state"] == "ready"


def test_registration_errors_fail_only_that_plugin() -> None:
    def sync_task(ctx: PluginContext) -> None:
        def not_async() -> None:
            pass

        ctx.every(1, not_async)  # type: ignore[arg-type]

    def bad_interval(ctx: PluginContext) -> None:
        async def t() -> None:
            pass

        ctx.every(0, t)

    def builtin_codec(ctx: PluginContext) -> None:
        ctx.add_codec("fh1", ShoutCodec)

    async def async_setup(ctx: PluginContext) -> None:
        await asyncio.sleep(0)
        ctx.add_codec("shout", ShoutCodec)

    def same_codec(ctx: PluginContext) -> None:
        ctx.add_codec("shout", ShoutCodec)

    plugins = {
        "a_async": async_setup,
        "b_same": same_codec,
        "sync": sync_task,
        "zero": bad_interval,
        "fh1": builtin_codec,
    }
    host = PluginHost({n: {} for n in plugins}, {n: PluginInfo.from_object(n, plugin(f)) for n, f in plugins.items()})
    asyncio.run(host.setup())
    states = {p["name"]: (p["state"], p["error"]) for p in host.report()}
    assert states["a_async"] == ("ready", None)
    assert "already provided by plugin a_async" in states["b_same"][1]
    assert "needs an async function" in states["sync"][1]
    assert "interval must be" in states["zero"][1]
    assert "codec 'fh1' already exists" in states["fh1"][1]
    assert host.known_codecs() >= {"fh1", "nmea", "lines", "shout"}


def test_entry_point_may_name_the_setup_function_and_ctx_basics() -> None:
    got: dict[str, Any] = {}

    def setup(ctx: PluginContext) -> None:
        got.update(name=ctx.name, options=ctx.options, log=ctx.log.name)
        with pytest.raises(TypeError):
            ctx.options["x"] = 2  # type: ignore[index]
        with pytest.raises(RuntimeError, match="once the runtime runs"):
            ctx.send("dev0", 0xF0, b"")

    host = PluginHost({"fn": {"x": 1}}, {"fn": PluginInfo("fn", "mod:setup", "dist 1", lambda: setup)})
    asyncio.run(host.setup())
    assert got == {"name": "fn", "options": {"x": 1}, "log": "firmware_host.plugins.fn"}
    assert host.report()[0]["state"] == "ready"
    with pytest.raises(RuntimeError, match="only works inside setup"):
        host._plugins["fn"].ctx.add_sink(MemorySink())  # type: ignore[union-attr]


def test_start_plugins_reads_only_the_plugin_tables(tmp_path: Any) -> None:
    cfg = toml_config(
        tmp_path / "c.toml", '[plugins.p]\nk = "v"\n\n[[devices]]\nname = "d"\nport = "x"\ncodec = "made-up-by-p"\n'
    )
    seen: dict[str, Any] = {}

    def setup(ctx: PluginContext) -> None:
        seen.update(ctx.options)
        ctx.add_codec("made-up-by-p", ShoutCodec)

    async def main() -> PluginHost:
        return await start_plugins(str(cfg), {"p": PluginInfo.from_object("p", plugin(setup))})

    host = asyncio.run(main())
    assert seen == {"k": "v"} and "made-up-by-p" in host.known_codecs()


# ----------------------------------------------------------------------- the documented example


def test_docs_worked_example_runs_as_documented(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/plugins.md's fh-watch plugin and its in-process test, executed verbatim."""
    import re

    from tests.conftest import REPO

    doc = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    module = next(b for b in blocks if b.startswith("# fh_watch/__init__.py"))
    snippet = next(b for b in blocks if "import fh_watch" in b)
    (tmp_path / "fh_watch").mkdir()
    (tmp_path / "fh_watch" / "__init__.py").write_text(module, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fh_watch", raising=False)
    exec(compile(snippet, "docs/plugins.md", "exec"), {"__name__": "docs_example"})
