"""An in-process runtime for tests: started from a dict, drained in order,
the accounting law checked at the end."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from firmware_host.config import DEFAULT_CODECS, DEFAULT_SINKS, Config, config_from_dict
from firmware_host.runtime import Runtime, Summary

DEFAULT_TIMEOUT = 10.0


class AccountingError(AssertionError):
    """frames != flushed + dropped + buffered for some device."""


def assert_accounting(status: Mapping[str, Any]) -> None:
    """The accounting laws in a ``status`` dict: for every device,
    ``frames == flushed + dropped + buffered``; for every sink and device,
    ``frames == delivered + missed + pending``."""
    bad = []
    for name, d in status["devices"].items():
        if d["frames"] != d["flushed"] + d["dropped"] + d["buffered"]:
            bad.append(
                f"{name}: frames {d['frames']} != flushed {d['flushed']} + dropped {d['dropped']}"
                f" + buffered {d['buffered']}"
            )
        for sink in status.get("sinks") or []:
            c = sink.get("devices", {}).get(name)
            if c is not None and d["frames"] != c["delivered"] + c["missed"] + c["pending"]:
                bad.append(
                    f"sink {sink['name']}, {name}: frames {d['frames']} != delivered {c['delivered']}"
                    f" + missed {c['missed']} + pending {c['pending']}"
                )
    if bad:
        raise AccountingError("accounting law broken: " + "; ".join(bad))


class RuntimeUnderTest:
    """A started Runtime plus helpers that await conditions (never sleep)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.summary: Summary | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runtime, name)

    async def wait_frames(self, device: str, count: int, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Until ``device`` has decoded at least ``count`` frames."""
        return await self.runtime.wait_until(
            lambda s: device in s["devices"] and s["devices"][device]["frames"] >= count, timeout
        )

    async def wait_state(self, device: str, state: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Until the reader's state is ``state`` (connecting, connected, backoff, closed)."""
        return await self.runtime.wait_until(
            lambda s: device in s["devices"] and s["devices"][device]["state"] == state, timeout
        )

    async def wait_counter(self, device: str, key: str, value: int, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Until ``status.devices[device][key] >= value``."""
        return await self.runtime.wait_until(
            lambda s: device in s["devices"] and s["devices"][device][key] >= value, timeout
        )

    async def wait_flushed(self, device: str, count: int, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Until ``count`` of ``device``'s frames were accepted by every sink."""
        return await self.wait_counter(device, "flushed", count, timeout)

    async def shutdown(self, grace: float | None = None, check: bool = True) -> Summary:
        self.summary = await self.runtime.shutdown(grace)
        if check:
            assert_accounting(self.summary.status)
        return self.summary


def make_config(
    config: Config | Mapping[str, Any],
    codecs: Mapping[str, object] | None = None,
    sink_types: Mapping[str, object] | None = None,
) -> Config:
    """``config`` validated; a dict may name the codecs and sink types the
    runtime is given (``codecs=``, ``sink_types=``), as a config file may name
    a plugin's."""
    if isinstance(config, Config):
        return config
    return config_from_dict(
        config,
        source="<test config>",
        known_codecs={*DEFAULT_CODECS, *(codecs or {})},
        known_sinks={*DEFAULT_SINKS, *(sink_types or {})},
    )


@contextlib.asynccontextmanager
async def running_runtime(config: Config | Mapping[str, Any], **runtime_kwargs: Any) -> AsyncIterator[RuntimeUnderTest]:
    """``async with running_runtime({...}) as rt:`` — shut down in order on exit
    (also when the test fails) and check the accounting law."""
    cfg = make_config(config, runtime_kwargs.get("codecs"), runtime_kwargs.get("sink_types"))
    rt = RuntimeUnderTest(Runtime(cfg, **runtime_kwargs))
    await rt.runtime.start()
    failed = False
    try:
        yield rt
    except BaseException:
        failed = True
        raise
    finally:
        if rt.summary is None:
            # on a test failure still drain in order, but report the test's error, not ours
            await rt.shutdown(check=not failed)
