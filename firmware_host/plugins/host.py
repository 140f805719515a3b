"""Plugins: discovery through entry points, the PluginContext they register
with, and the host that supervises them inside a Runtime.

Lifecycle (why in this order): the ``[plugins.NAME]`` tables are read first;
each enabled plugin is imported and its ``setup(ctx)`` run *before* the rest
of the config is validated, because a plugin may add the codecs and sink
types that the config names. Then the host is attached to the Runtime: its
sinks, sink types, codecs and processors join the runtime's (read at
``start()``); periodic tasks start in the ``on_start`` hook and stop taking
new runs in the ``on_stop`` hook. Runs still in progress then get until the
grace deadline, concurrently with the final drain (a slow plugin never eats
the drain's time), and are cancelled at the deadline; ``aclose()`` awaits that.

Isolation: a plugin that cannot be imported, whose ``setup`` raises, or whose
task or processor raises or hangs, is logged under its own name and counted;
the runtime keeps running without it. Only a name in the config that no
installed distribution provides is a config error (most likely a typo).
Configs cannot execute code: plugins come only from installed entry points
(or from Python code that builds a ``PluginHost`` itself).
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

from firmware_host.cancel import CancellationToken
from firmware_host.codecs import CodecFactory
from firmware_host.config._check import read_toml
from firmware_host.config.schema import (
    DEFAULT_CODECS,
    DEFAULT_SINKS,
    Config,
    ConfigError,
    config_from_dict,
)
from firmware_host.frames import Frame
from firmware_host.plugins.context import PluginContext
from firmware_host.plugins.scheduler import PeriodicTask, finish_tasks
from firmware_host.sinks import Sink, SinkFactory

if TYPE_CHECKING:
    from firmware_host.runtime import Runtime

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginHost",
    "PluginInfo",
    "discover_plugins",
    "plugins_report",
    "read_plugin_table",
    "start_plugins",
]

log = logging.getLogger("firmware_host.plugins")

ENTRY_POINT_GROUP = "firmware_host.plugins"
#: an async ``setup`` that takes longer is treated as failed (start-up must not hang)
SETUP_TIMEOUT = 10.0
#: after a cancel at the shutdown deadline, how long to wait for a run to unwind
CANCEL_WAIT = 1.0
#: at most one log line per this many seconds for a plugin's processor failures
PROCESSOR_LOG_EVERY = 10.0


# ----------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class PluginInfo:
    """An installed (or programmatically given) plugin, not yet imported."""

    name: str
    value: str  # "module" or "module:attr"
    source: str | None  # "distribution version"
    load: Callable[[], Any] = field(compare=False, repr=False)

    @classmethod
    def from_entry_point(cls, ep: metadata.EntryPoint) -> PluginInfo:
        dist = getattr(ep, "dist", None)
        source = f"{dist.name} {dist.version}" if dist is not None else None
        return cls(ep.name, ep.value, source, ep.load)

    @classmethod
    def from_object(cls, name: str, obj: Any, source: str = "<in-process>") -> PluginInfo:
        """A plugin given as a module or object with ``setup`` (tests, embedding)."""
        return cls(name, getattr(obj, "__name__", repr(obj)), source, lambda: obj)


def discover_plugins(group: str = ENTRY_POINT_GROUP) -> dict[str, PluginInfo]:
    """Installed plugins by name. On a name clash the first distribution wins."""
    found: dict[str, PluginInfo] = {}
    for ep in metadata.entry_points(group=group):
        info = PluginInfo.from_entry_point(ep)
        if info.name in found:
            if found[info.name].value != info.value:
                log.warning(
                    "plugin %s is provided twice (%s and %s); using %s",
                    info.name,
                    found[info.name].source,
                    info.source,
                    found[info.name].source,
                )
            continue
        found[info.name] = info
    return found


def read_plugin_table(path: str) -> tuple[dict[str, dict[str, object]], str]:
    """The ``[plugins.NAME]`` tables of a config file, validated as the config
    loader does, without checking the rest (which may name plugin codecs)."""
    source, data = read_toml(path)  # the config loader's reader: one set of error messages
    part = config_from_dict({"plugins": data.get("plugins", {})}, source=source)
    return part.plugins, source


# ----------------------------------------------------------------------- the host


@dataclass
class _Plugin:
    info: PluginInfo
    options: dict[str, object]
    state: str = "loading"  # loading | ready | running | stopped | failed
    error: str | None = None
    ctx: PluginContext | None = None
    processor_failures: int = 0
    frames_dropped: int = 0
    _last_log: float = 0.0

    def processor_failed(self, exc: BaseException) -> None:
        # a processor runs per frame: a traceback once, then one line per PROCESSOR_LOG_EVERY
        self.processor_failures += 1
        now = time.monotonic()
        plog = logging.getLogger(f"firmware_host.plugins.{self.info.name}")
        if self.processor_failures == 1:
            plog.error("plugin %s: frame processor failed; frame kept", self.info.name, exc_info=exc)
        elif now - self._last_log >= PROCESSOR_LOG_EVERY:
            plog.error(
                "plugin %s: frame processor failed %d times so far; frames kept (last: %s: %s)",
                self.info.name,
                self.processor_failures,
                type(exc).__name__,
                exc,
            )
        else:
            return
        self._last_log = now


class PluginHost:
    """Loads the enabled plugins and supervises them inside one Runtime."""

    def __init__(
        self,
        enabled: Mapping[str, Mapping[str, object]] | None = None,
        available: Mapping[str, PluginInfo] | None = None,
        *,
        source: str = "<config>",
    ) -> None:
        self.available: dict[str, PluginInfo] = discover_plugins() if available is None else dict(available)
        self.enabled: dict[str, dict[str, object]] = {k: dict(v) for k, v in (enabled or {}).items()}
        self.source = source
        self.state = "new"  # new | ready | running | stopping | stopped
        self._plugins: dict[str, _Plugin] = {
            name: _Plugin(self.available[name], opts) for name, opts in self.enabled.items() if name in self.available
        }
        self._token = CancellationToken()
        self._rt: Runtime | None = None
        self._seqs: dict[str, int] = {}
        self._link: asyncio.Task[None] | None = None
        self._finisher: asyncio.Task[None] | None = None
        #: no log lines for load failures (the ``plugins`` report shows them itself)
        self.quiet = False

    # -- loading --------------------------------------------------------------------

    def missing(self) -> list[str]:
        return sorted(name for name in self.enabled if name not in self.available)

    def check(self) -> None:
        """ConfigError (exit 2) for an enabled plugin that is not installed."""
        for name in self.missing():
            installed = ", ".join(sorted(self.available)) or "none"
            raise ConfigError(
                f"no installed plugin named {name!r} (installed: {installed}; plugins come from "
                f"installed packages' {ENTRY_POINT_GROUP!r} entry points)",
                source=self.source,
                key=f"plugins.{name}",
            )

    async def setup(self, *, strict: bool = True) -> None:
        """Import each enabled plugin and run its ``setup(ctx)``.

        Failures are recorded (state "failed"); a PluginOptionError is a config
        error and propagates when ``strict`` (as ``run`` wants), else it is
        recorded too (as the ``plugins`` report wants).
        """
        for plugin in self._plugins.values():
            try:
                await self._setup_one(plugin)
            except ConfigError as exc:
                if strict:
                    raise
                self._fail(plugin, str(exc), None)
        self.state = "ready"

    async def _setup_one(self, p: _Plugin) -> None:
        name = p.info.name
        try:
            obj = p.info.load()
        except (Exception, SystemExit) as exc:
            self._fail(p, f"import failed: {type(exc).__name__}: {exc}", exc)
            return
        setup = getattr(obj, "setup", None)
        if setup is None and callable(obj) and not isinstance(obj, type):
            setup = obj  # the entry point names the setup function itself
        if not callable(setup):
            self._fail(p, f"{p.info.value} has no setup(ctx)", None)
            return
        ctx = PluginContext(self, name, p.options)
        try:
            result = setup(ctx)
            if inspect.isawaitable(result):
                await asyncio.wait_for(result, SETUP_TIMEOUT)
        except ConfigError:
            raise
        except TimeoutError as exc:
            self._fail(p, f"setup() did not finish within {SETUP_TIMEOUT:g} s", exc)
            return
        except (Exception, SystemExit) as exc:
            self._fail(p, f"setup() failed: {type(exc).__name__}: {exc}", exc)
            return
        ctx.seal()
        clash = self._clash(ctx)
        if clash:
            self._fail(p, clash, None)
            return
        p.ctx, p.state = ctx, "ready"
        log.info("plugin %s loaded from %s", name, p.info.source or p.info.value)

    def _clash(self, ctx: PluginContext) -> str | None:
        for other in self._ready():
            assert other.ctx is not None
            for kind, mine, theirs in (
                ("codec", ctx.registered.codecs, other.ctx.registered.codecs),
                ("sink type", ctx.registered.sink_types, other.ctx.registered.sink_types),
            ):
                for key in mine:
                    if key in theirs:
                        return f"{kind} {key!r} is already provided by plugin {other.info.name}"
        return None

    def _fail(self, p: _Plugin, error: str, exc: BaseException | None) -> None:
        p.state, p.error, p.ctx = "failed", error, None
        if self.quiet:
            return
        log.error(
            "plugin %s: %s; running without it",
            p.info.name,
            error,
            exc_info=exc if exc is not None and not isinstance(exc, asyncio.TimeoutError) else None,
        )

    def _ready(self) -> list[_Plugin]:
        return [p for p in self._plugins.values() if p.ctx is not None]

    # -- what plugins registered ------------------------------------------------------

    @property
    def codecs(self) -> dict[str, CodecFactory]:
        return {k: v for p in self._ready() for k, v in p.ctx.registered.codecs.items()}  # type: ignore[union-attr]

    @property
    def sink_types(self) -> dict[str, SinkFactory]:
        return {k: v for p in self._ready() for k, v in p.ctx.registered.sink_types.items()}  # type: ignore[union-attr]

    @property
    def sinks(self) -> list[Sink]:
        return [s for p in self._ready() for s in p.ctx.registered.sinks]  # type: ignore[union-attr]

    def known_codecs(self) -> set[str]:
        """Codec names for config validation: built-in plus plugins'."""
        return set(DEFAULT_CODECS) | set(self.codecs)

    def known_sinks(self) -> set[str]:
        return set(DEFAULT_SINKS) | set(self.sink_types)

    def processors(self) -> list[Callable[[list[Frame]], list[Frame]]]:
        """One batch processor per plugin with ``on_frame`` functions."""
        return [self._batch_processor(p) for p in self._ready() if p.ctx and p.ctx.registered.frame_fns]

    @staticmethod
    def _batch_processor(p: _Plugin) -> Callable[[list[Frame]], list[Frame]]:
        assert p.ctx is not None
        fns = tuple(p.ctx.registered.frame_fns)

        def process(frames: list[Frame]) -> list[Frame]:
            out: list[Frame] = []
            for frame in frames:
                current: Frame | None = frame
                for fn in fns:
                    assert current is not None
                    try:
                        result = fn(current)
                    except Exception as exc:
                        p.processor_failed(exc)
                        continue  # keep the frame as it was
                    if result is None:
                        current = None
                        break
                    # a processor must not move a frame to another device: that would
                    # break the per-device accounting
                    if not isinstance(result, Frame) or result.device != current.device:
                        p.processor_failed(
                            TypeError(f"processor returned {result!r}, not a Frame of device {current.device!r}")
                        )
                        continue
                    current = result
                if current is None:
                    p.frames_dropped += 1
                else:
                    out.append(current)
            return out

        return process

    # -- inside a runtime ----------------------------------------------------------------

    def attach(self, rt: Runtime) -> None:
        """Hand the plugins' registrations to ``rt`` (before ``rt.start()``)."""
        if self._rt is not None:
            raise RuntimeError("this PluginHost is already attached to a runtime")
        self._rt = rt
        rt.codecs.update(self.codecs)
        rt.sink_types.update(self.sink_types)
        rt.sinks.extend(self.sinks)
        rt.processors.extend(self.processors())
        rt.on_start.append(self._on_start)
        rt.on_stop.append(self._on_stop)
        rt.status_sections["plugins"] = self.report

    @property
    def token(self) -> CancellationToken:
        return self._token

    def runtime(self, what: str) -> Runtime:
        if self._rt is None:
            raise RuntimeError(f"ctx.{what}() works once the runtime runs (call it from a task, not setup)")
        return self._rt

    def next_seq(self, device: str) -> int:
        seq = self._seqs.get(device, 0)
        self._seqs[device] = (seq + 1) % 2**32
        return seq

    def _tasks(self) -> list[PeriodicTask]:
        return [t for p in self._ready() for t in p.ctx.registered.tasks]  # type: ignore[union-attr]

    def task_added(self, ctx: PluginContext, task: PeriodicTask) -> None:
        if self.state in ("stopping", "stopped"):
            raise RuntimeError(f"plugin {ctx.name}: the runtime is shutting down; no new tasks")
        if self.state == "running":
            task.notify = self._rt.changes.notify if self._rt is not None else None
            task.start()

    async def _on_start(self, rt: Runtime) -> None:
        self.state = "running"
        self._link = asyncio.create_task(self._follow(rt.tasks_token), name="plugins:token")
        for p in self._ready():
            p.state = "running"
            for task in p.ctx.registered.tasks:  # type: ignore[union-attr]
                task.notify = rt.changes.notify
                task.start()

    async def _follow(self, parent: CancellationToken) -> None:
        # ctx tokens are made before the runtime exists; this makes them children of rt.tasks_token
        await parent.cancelled()
        self._token.cancel()

    async def _on_stop(self, rt: Runtime) -> None:
        """No new runs; runs in progress finish concurrently with the drain."""
        if self.state != "running":
            return
        self._begin_stop(asyncio.get_running_loop().time() + rt.config.shutdown.grace)

    def _begin_stop(self, deadline: float) -> None:
        """No new runs; a task finishes the runs in progress by ``deadline`` (loop time)."""
        self.state = "stopping"
        self._token.cancel()
        tasks = self._tasks()
        for task in tasks:
            task.stop()
        self._finisher = asyncio.create_task(self._finish(tasks, deadline), name="plugins:finish")

    async def _finish(self, tasks: list[PeriodicTask], deadline: float) -> None:
        await finish_tasks(tasks, deadline, CANCEL_WAIT)
        for p in self._ready():
            p.state = "stopped"
        if self._link is not None:
            self._link.cancel()
        self.state = "stopped"

    async def aclose(self) -> None:
        """Await the end of the plugins' runs (at the latest the grace deadline).

        Call after ``rt.shutdown()``; also safe when the runtime never started."""
        if self._finisher is None and self.state == "running":
            self._begin_stop(asyncio.get_running_loop().time())
        if self._finisher is not None:
            await self._finisher
        elif self._link is not None:
            self._link.cancel()

    # -- reporting ----------------------------------------------------------------------

    def report(self) -> list[dict[str, Any]]:
        """One entry per discovered or enabled plugin, sorted by name."""
        out: list[dict[str, Any]] = []
        for name in sorted(set(self.available) | set(self.enabled)):
            info = self.available.get(name)
            entry: dict[str, Any] = {
                "name": name,
                "enabled": name in self.enabled,
                "source": info.source if info else None,
                "entry_point": info.value if info else None,
                "state": "disabled",
                "error": None,
                "failures": 0,
                "tasks": [],
            }
            p = self._plugins.get(name)
            if info is None:
                entry["state"], entry["error"] = "missing", "no installed plugin by this name"
            elif p is not None:
                entry["state"], entry["error"] = p.state, p.error
                if p.ctx is not None:
                    ctx = p.ctx
                    tasks = [t.report() for t in ctx.registered.tasks]
                    entry.update(
                        {
                            "tasks": tasks,
                            "processors": len(ctx.registered.frame_fns),
                            "processor_failures": p.processor_failures,
                            "frames_dropped": p.frames_dropped,
                            "sinks": [s.name for s in ctx.registered.sinks],
                            "sink_types": sorted(ctx.registered.sink_types),
                            "codecs": sorted(ctx.registered.codecs),
                            "info": _copy_info(ctx.info),
                        }
                    )
                    entry["failures"] = p.processor_failures + sum(t["failures"] + t["overruns"] for t in tasks)
                else:
                    entry["failures"] = 1 if p.state == "failed" else 0
            out.append(entry)
        return out


def _copy_info(info: dict[str, Any]) -> Any:
    # one plugin's odd value must not take the whole "plugins" status section down
    try:
        return copy.deepcopy(info)
    except Exception as exc:
        return {"error": f"info cannot be copied: {exc}"}


# ----------------------------------------------------------------------- entry points for app / CLI


async def start_plugins(config_path: str | None, available: Mapping[str, PluginInfo] | None = None) -> PluginHost:
    """What ``run`` does first: read ``[plugins.*]``, check the names, set them up."""
    if config_path:
        enabled, source = read_plugin_table(config_path)
    else:
        enabled, source = {}, "<no config>"
    host = PluginHost(enabled, available, source=source)
    host.check()
    await host.setup()
    return host


def plugins_report(
    config: Config | Mapping[str, Mapping[str, object]] | None = None,
    *,
    available: Mapping[str, PluginInfo] | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """The ``plugins`` command's data: every discovered plugin; enabled ones
    (from ``config`` or a ``[plugins]`` table) are imported and set up to list
    their tasks. Synchronous: call it outside an event loop."""
    if isinstance(config, Config):
        enabled, source = config.plugins, source or config.source
    else:
        enabled, source = {name: dict(opts) for name, opts in (config or {}).items()}, source or "<config>"
    host = PluginHost(enabled, available, source=source)
    host.quiet = True
    if host._plugins:
        asyncio.run(host.setup(strict=False))
    return {"group": ENTRY_POINT_GROUP, "plugins": host.report()}
