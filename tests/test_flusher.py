"""Flusher: a sink that fails N times and then recovers loses no frame;
drop-oldest keeps memory bounded during an outage; every sink sees every frame."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from firmware_host import FakeOpener, FakePort, Frame, Sink, encode_packet
from firmware_host.testing import assert_accounting

pytestmark = pytest.mark.timeout(30)


class FlakySink(Sink):
    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures_left = failures
        self.attempts = 0
        self.frames: list[tuple[str, int]] = []
        self.down = asyncio.Event()

    async def write(self, frames: Sequence[Frame]) -> None:
        self.attempts += 1
        if self.failures_left > 0:
            self.failures_left -= 1
            self.down.set()
            raise ConnectionError("sink down")
        self.frames.extend((f.device, f.seq) for f in frames)


def packets(seqs: range) -> bytes:
    return b"".join(encode_packet(0, s, b"p") for s in seqs)


async def test_sink_fails_then_recovers_no_loss(fh_runtime):
    # three failures: backoffs of 0.1 + 0.2 + 0.4 s (five took 3.1 s and proved no more)
    sink = FlakySink(failures=3)
    port = FakePort([packets(range(500))])
    config = {
        "buffer": {"flush_interval": 0.01, "batch_size": 100},
        "devices": [{"name": "a", "port": "fake://a", "codec": "fh1"}],
    }
    async with fh_runtime(config, opener=FakeOpener({"fake://a": [port]}), sinks=[sink]) as rt:
        await rt.wait_frames("a", 500)
        port.feed(packets(range(500, 1000)))
        await rt.wait_until(lambda s: s["devices"]["a"]["flushed"] == 1000, 20)
        status = await rt.status()
        assert status["sinks"][0]["failures"] == 3
    assert sink.frames == [("a", s) for s in range(1000)]  # each once, in order


async def test_two_sinks_one_failing_each_sees_every_frame_once(fh_runtime):
    good, flaky = FlakySink(0), FlakySink(3)
    port = FakePort([packets(range(300))])
    config = {
        "buffer": {"flush_interval": 0.01, "batch_size": 50},
        "devices": [{"name": "a", "port": "fake://a", "codec": "fh1"}],
    }
    async with fh_runtime(config, opener=FakeOpener({"fake://a": [port]}), sinks=[good, flaky]) as rt:
        await rt.wait_until(lambda s: s["devices"]["a"]["flushed"] == 300, 20)
    # the retry goes only to the sink that failed, so neither sees duplicates
    assert good.frames == flaky.frames == [("a", s) for s in range(300)]


async def test_outage_longer_than_buffer_drops_oldest_and_recovers(fh_runtime):
    sink = FlakySink(failures=10**9)
    port = FakePort()
    config = {
        "buffer": {"capacity": 200, "flush_interval": 0.01, "batch_size": 50},
        "devices": [{"name": "a", "port": "fake://a", "codec": "fh1"}],
    }
    async with fh_runtime(config, opener=FakeOpener({"fake://a": [port]}), sinks=[sink]) as rt:
        await rt.wait_state("a", "connected")
        for start in range(0, 2000, 100):
            port.feed(packets(range(start, start + 100)))
        await rt.wait_frames("a", 2000)
        buffers = await rt.buffers()
        assert buffers["depth"] <= 200 and buffers["dropped"] >= 1800  # bounded while the sink is down
        sink.failures_left = 0  # the sink comes back
        await rt.wait_until(lambda s: s["devices"]["a"]["buffered"] == 0, 20)
        status = await rt.status()
        assert_accounting(status)
        d = status["devices"]["a"]
        assert d["flushed"] + d["dropped"] == 2000
    delivered = [s for _, s in sink.frames]
    assert delivered == sorted(set(delivered)) and delivered[-1] == 1999  # the newest survive, once each


async def test_drain_gives_up_at_grace_and_reports_lost(fh_runtime):
    sink = FlakySink(failures=10**9)
    port = FakePort([packets(range(100))])
    config = {
        "buffer": {"flush_interval": 0},
        "shutdown": {"grace": 0.3},
        "devices": [{"name": "a", "port": "fake://a", "codec": "fh1"}],
    }
    async with fh_runtime(config, opener=FakeOpener({"fake://a": [port]}), sinks=[sink]) as rt:
        await rt.wait_frames("a", 100)
        summary = await rt.shutdown()
    assert summary.lost == 100 and not summary.drained
    d = summary.status["devices"]["a"]
    assert d["lost"] == 100 and d["buffered"] == 100 and d["flushed"] == 0


async def test_flush_on_batch_full_before_the_interval(fh_runtime):
    sink = FlakySink(0)
    port = FakePort([packets(range(250))])
    config = {
        "buffer": {"flush_interval": 3600, "batch_size": 100},
        "devices": [{"name": "a", "port": "fake://a", "codec": "fh1"}],
    }
    async with fh_runtime(config, opener=FakeOpener({"fake://a": [port]}), sinks=[sink]) as rt:
        await rt.wait_until(lambda s: s["devices"]["a"]["flushed"] == 200, 10)
        status = await rt.status()
        assert status["devices"]["a"]["buffered"] == 50  # a partial batch waits for the drain
    assert len(sink.frames) == 250


async def test_flush_one_device_only(fh_runtime):
    sink = FlakySink(0)
    pa, pb = FakePort([packets(range(30))]), FakePort([packets(range(20))])
    config = {
        "buffer": {"flush_interval": 0},
        "devices": [
            {"name": "a", "port": "fake://a", "codec": "fh1"},
            {"name": "b", "port": "fake://b", "codec": "fh1"},
        ],
    }
    async with fh_runtime(config, opener=FakeOpener({"fake://a": [pa], "fake://b": [pb]}), sinks=[sink]) as rt:
        await rt.wait_frames("a", 30)
        await rt.wait_frames("b", 20)
        result = await rt.flush("b")
        assert result.flushed == 20 and result.devices == {"b": 20}
        status = await rt.status()
        assert status["devices"]["a"]["buffered"] == 30 and status["devices"]["b"]["buffered"] == 0
    assert [f for f in sink.frames if f[0] == "b"] == [("b", s) for s in range(20)]


async def test_flush_interval_zero_means_on_demand_only(fh_runtime):
    sink = FlakySink(0)
    port = FakePort([packets(range(250))])
    config = {
        "buffer": {"flush_interval": 0, "batch_size": 100},
        "devices": [{"name": "a", "port": "fake://a", "codec": "fh1"}],
    }
    async with fh_runtime(config, opener=FakeOpener({"fake://a": [port]}), sinks=[sink]) as rt:
        await rt.wait_frames("a", 250)
        assert (await rt.status())["devices"]["a"]["buffered"] == 250 and sink.frames == []
        result = await rt.flush()
        assert result.flushed == 250
    assert len(sink.frames) == 250


class HangingSink(Sink):
    """Its first ``hangs`` writes never return (until cancelled); then it works."""

    name = "hanging"

    def __init__(self, hangs: int, timeout: float) -> None:
        self.hangs = hangs
        self.timeout = timeout
        self.cancelled = 0
        self.frames: list[tuple[str, int]] = []

    async def write(self, frames: Sequence[Frame]) -> None:
        if self.hangs > 0:
            self.hangs -= 1
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        self.frames.extend((f.device, f.seq) for f in frames)


async def test_a_write_that_never_returns_times_out_and_is_retried(fh_runtime):
    """Each write has a deadline (the sink's ``timeout``): a hung write is
    cancelled, counted as a failure ("timed out after ...") and retried with
    backoff; the other sink is not held up beyond that, and nothing is lost."""
    hanging, good = HangingSink(hangs=2, timeout=0.2), FlakySink(0)
    port = FakePort([packets(range(100))])
    config = {
        "buffer": {"flush_interval": 0.01, "batch_size": 50},
        "devices": [{"name": "a", "port": "fake://a", "codec": "fh1"}],
    }
    async with fh_runtime(config, opener=FakeOpener({"fake://a": [port]}), sinks=[hanging, good]) as rt:
        status = await rt.wait_until(lambda s: s["sinks"][0]["failures"] >= 1, 10)
        assert status["sinks"][0]["last_error"] == "timed out after 0.2s"
        assert status["sinks"][0]["state"] == "retrying"
        status = await rt.wait_until(lambda s: s["devices"]["a"]["flushed"] == 100, 10)
        assert status["sinks"][0]["failures"] == 2 and status["sinks"][0]["state"] == "ok"
        assert_accounting(status)
    assert hanging.cancelled == 2
    assert hanging.frames == good.frames == [("a", s) for s in range(100)]


async def test_shutdown_does_not_wait_for_a_hung_write(fh_runtime):
    """A write that would take its whole (long) timeout is abandoned when the
    drain's deadline comes: shutdown ends by the grace, the frames are lost."""
    hanging = HangingSink(hangs=10**9, timeout=60.0)
    port = FakePort([packets(range(10))])
    config = {
        "buffer": {"flush_interval": 0.01},
        "shutdown": {"grace": 0.3},
        "devices": [{"name": "a", "port": "fake://a", "codec": "fh1"}],
    }
    loop = asyncio.get_running_loop()
    async with fh_runtime(config, opener=FakeOpener({"fake://a": [port]}), sinks=[hanging]) as rt:
        await rt.wait_frames("a", 10)
        started = loop.time()
        summary = await rt.shutdown()
        assert loop.time() - started < 0.3 + 1.0
    assert summary.lost == 10 and not summary.drained


class SlowSink(Sink):
    """Each write takes ``delay`` seconds (in a thread, as the jsonl sink's do);
    ``writing`` is set while one is under way."""

    name = "slow"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.frames: list[int] = []
        self.writing = asyncio.Event()

    async def write(self, frames: Sequence[Frame]) -> None:
        self.writing.set()
        try:
            # the thread writes whatever happens to the coroutine awaiting it
            await asyncio.to_thread(self._write, [f.seq for f in frames])
        finally:
            self.writing.clear()

    def _write(self, seqs: list[int]) -> None:
        time.sleep(self.delay)
        self.frames.extend(seqs)


async def test_a_write_under_way_when_shutdown_begins_is_finished_not_sent_twice():
    """The shutdown used to abandon the periodic flusher's write in progress and
    let the final drain send the same frames again: each frame reached the sink
    twice whenever a stop met a write."""
    from firmware_host import Runtime, config_from_dict

    sink = SlowSink(0.3)
    port = FakePort([packets(range(200))])
    cfg = config_from_dict(
        {
            "buffer": {"flush_interval": 0.01, "batch_size": 1000},
            "shutdown": {"grace": 5},
            "devices": [{"name": "a", "port": "fake://a", "codec": "fh1"}],
        }
    )
    rt = Runtime(cfg, opener=FakeOpener({"fake://a": [port]}), sinks=[sink])
    await rt.start()
    await rt.wait_until(lambda s: s["devices"]["a"]["frames"] == 200, 10)
    await asyncio.wait_for(sink.writing.wait(), 10)  # the periodic flush is writing now
    summary = await rt.shutdown()
    assert_accounting(summary.status)
    assert sorted(sink.frames) == list(range(200)) and len(sink.frames) == 200  # each once
    assert summary.status["devices"]["a"]["flushed"] == 200 and summary.lost == 0
