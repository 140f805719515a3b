"""An in-process runtime for tests: started from a dict, drained in order,
the accounting law checked at the end."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from firmware_host.config import DEFAULT_CODECS, DEFAULT_SINKS, Config, config_from_dict
from firmware_host.frames import Frame
from firmware_host.runtime import Runtime, Summary
from firmware_host.tap import Subscription

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


#: what ``expect`` looks for: a predicate on a frame, or a regular expression
#: (``str``: searched in the frame's text, or a binary payload decoded as UTF-8;
#: ``bytes``: searched in the payload, or a text frame's UTF-8 bytes)
FramePattern = Callable[[Frame], bool] | str | bytes | re.Pattern[str] | re.Pattern[bytes]


def _matcher(pattern: FramePattern) -> Callable[[Frame], re.Match[Any] | bool | None]:
    if isinstance(pattern, (str, bytes)):
        pattern = re.compile(pattern)
    if isinstance(pattern, re.Pattern):
        rx: re.Pattern[Any] = pattern
        if isinstance(rx.pattern, bytes):
            return lambda f: rx.search(f.payload if f.payload is not None else (f.text or "").encode())
        return lambda f: rx.search(f.text if f.text is not None else (f.payload or b"").decode("utf-8", "replace"))
    if callable(pattern):
        return pattern
    raise TypeError(f"expect: a predicate or a regular expression, not {type(pattern).__name__}")


class Expectation:
    """The frames of a device from the moment ``expecting`` began, matched in
    order: each ``match`` consumes the frames up to the one it returns."""

    def __init__(self, device: str | None, sub: Subscription) -> None:
        self.device = device
        self._sub = sub
        self._pending: deque[Frame] = deque()
        #: the regular expression's match of the last frame ``match`` returned (None for a predicate)
        self.last_match: re.Match[Any] | None = None
        #: frames looked at so far, and frames the subscription lost (it holds 10,000)
        self.seen = 0
        self.lost = 0

    async def match(self, pattern: FramePattern, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        """The next frame that matches ``pattern``; TimeoutError after ``timeout``."""
        test = _matcher(pattern)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            while self._pending:
                frame = self._pending.popleft()
                self.seen += 1
                found = test(frame)
                if found:
                    self.last_match = found if isinstance(found, re.Match) else None
                    return frame
            # what the subscription holds first: frames that came before the runtime stopped count
            frames, lost = self._sub.take()
            self.lost += lost
            if frames:
                self._pending.extend(frames)
                continue
            left = deadline - loop.time()
            if self._sub.closed or left <= 0 or not await self._sub.wait(left):
                shown = pattern if isinstance(pattern, (str, bytes, re.Pattern)) else "the predicate"
                why = "the runtime stopped" if self._sub.closed else f"within {timeout:g}s"
                raise TimeoutError(
                    f"no frame of {self.device!r} matched {shown!r} {why} ({self.seen} frames looked at)"
                )


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

    @contextlib.asynccontextmanager
    async def expecting(self, device: str | None) -> AsyncIterator[Expectation]:
        """Watch ``device``'s frames (None: every device's) from now on:
        ``async with rt.expecting("dut") as exp: <trigger>; await exp.match(...)``
        sees a frame that arrives before ``match`` is called."""
        sub = self.runtime.subscribe(None if device is None else [device])
        try:
            yield Expectation(device, sub)
        finally:
            sub.close()

    async def expect(self, device: str | None, pattern: FramePattern, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        """The first frame of ``device`` from this call on that matches ``pattern``
        (a predicate, or a regex: see ``FramePattern``); TimeoutError after
        ``timeout``. A frame that arrived before the call is not seen: to
        trigger something and catch its answer, use ``expecting``."""
        async with self.expecting(device) as exp:
            return await exp.match(pattern, timeout)

    async def request(self, device: str, *args: Any, **kwargs: Any) -> Frame:
        """``Runtime.request`` (a command and its ack)."""
        return await self.runtime.request(device, *args, **kwargs)

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
