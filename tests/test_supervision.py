"""No task dies silently: a supervised task (the actor, each sink's delivery,
the spooler) that raises is logged, shown in status (``tasks``) and restarted with
backoff; one that keeps failing is given up, and the runtime stops in order and
says why (``run`` exits 1). Each failure here is injected with pytest-mock."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from firmware_host import FakeOpener, FakePort, Frame, Runtime, Sink, config_from_dict, encode_packet
from firmware_host.aggregator import Aggregator
from firmware_host.cancel import CancellationToken
from firmware_host.sinklane import SinkLane
from firmware_host.supervise import Supervisor
from firmware_host.testing import assert_accounting

pytestmark = pytest.mark.timeout(30)


class ListSink(Sink):
    name = "list"

    def __init__(self) -> None:
        self.seqs: list[int] = []

    async def write(self, frames: Sequence[Frame]) -> None:
        self.seqs.extend(f.seq for f in frames)


def packets(seqs: range) -> bytes:
    return b"".join(encode_packet(0, s, b"p") for s in seqs)


def runtime(port: FakePort, sink: Sink, **buffer: Any) -> Runtime:
    cfg = config_from_dict(
        {
            "buffer": {"flush_interval": 0.01, "batch_size": 50, **buffer},
            "shutdown": {"grace": 5},
            "devices": [{"name": "a", "port": "fake://a", "codec": "fh1"}],
        }
    )
    return Runtime(cfg, opener=FakeOpener({"fake://a": [port]}), sinks=[sink])


def fail_first_calls(target: Any, name: str, times: int, mocker: Any) -> list[int]:
    """Patch ``target.name`` so its first ``times`` calls raise; returns the call count."""
    real = getattr(target, name)
    calls = [0]

    def count() -> None:
        calls[0] += 1
        if calls[0] <= times:
            raise RuntimeError(f"injected fault {calls[0]}")

    if inspect.iscoroutinefunction(real):

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            count()
            return await real(*args, **kwargs)

        mocker.patch.object(target, name, async_wrapper)
    else:

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            count()
            return real(*args, **kwargs)

        mocker.patch.object(target, name, wrapper)
    return calls


async def test_the_actor_restarts_after_a_fault_and_keeps_every_frame_accounted(mocker, caplog):
    """The first offer blows up inside the actor: the actor is restarted, what
    was queued behind the offer is still served, requests never hang, and the
    law holds (the failed offer's frames were never counted: logged, in status)."""
    caplog.set_level(logging.ERROR)
    fail_first_calls(Aggregator, "_offer", 1, mocker)
    sink, port = ListSink(), FakePort([packets(range(10))])
    rt = runtime(port, sink)
    await rt.start()
    port.feed(packets(range(10, 300)))
    status = await rt.wait_until(lambda s: s["devices"]["a"]["flushed"] == 290, 10)
    task = status["tasks"]["aggregator"]
    assert task["restarts"] == 1 and task["state"] == "running"
    assert "injected fault 1" in task["last_error"]
    summary = await rt.shutdown()
    assert_accounting(summary.status)
    assert summary.failure is None and summary.lost == 0
    assert sink.seqs == list(range(10, 300))
    assert "an offer of 10 frames from a failed" in caplog.text


async def test_the_actor_rebuilds_its_counters_after_a_fault_inside_an_offer(mocker):
    """A fault after the offer counted its frames but before they were buffered:
    the counters follow the buffer again (the frames count as dropped)."""
    agg = Aggregator(capacity=100, batch_size=10)
    real = Aggregator._offer

    def half_then_fail(self: Aggregator, device: str, frames: Sequence[Frame]) -> None:
        if frames[0].seq == 5:
            self._accounts[device].frames += len(frames)  # counted, never buffered
            raise RuntimeError("injected mid-offer")
        real(self, device, frames)

    mocker.patch.object(Aggregator, "_offer", half_then_fail)
    sup = Supervisor(lambda name, error: None, backoff_initial=0.01)
    token = CancellationToken()
    task = sup.start("aggregator", agg.run, token)
    h = agg.handle
    for start in (0, 5, 10):
        h.offer_nowait("d", [Frame("d", s, 0, 0.0, b"x") for s in range(start, start + 5)])
    snap = await asyncio.wait_for(h.snapshot(), 5)
    acct = snap.accounts["d"]
    assert (acct.frames, acct.dropped, acct.buffered) == (15, 5, 10)
    assert acct.frames == acct.flushed + acct.dropped + acct.buffered
    assert sup.tasks["aggregator"].restarts == 1
    token.cancel()
    await task


async def test_a_sinks_delivery_task_restarts_after_a_fault(mocker):
    calls = fail_first_calls(SinkLane, "run", 2, mocker)
    sink, port = ListSink(), FakePort([packets(range(200))])
    rt = runtime(port, sink)
    await rt.start()
    status = await rt.wait_until(lambda s: s["devices"]["a"]["flushed"] == 200, 10)
    assert status["tasks"]["sink list"]["restarts"] == 2 and calls[0] == 3
    summary = await rt.shutdown()
    assert_accounting(summary.status)
    assert sink.seqs == list(range(200)) and summary.failure is None


async def test_the_spooler_restarts_after_a_fault(mocker, tmp_path: Path):
    from firmware_host.spool import Spooler

    calls = fail_first_calls(Spooler, "run", 1, mocker)
    sink, port = ListSink(), FakePort([packets(range(200))])
    rt = runtime(port, sink, spool=str(tmp_path / "spool.db"))
    await rt.start()
    status = await rt.wait_until(lambda s: s["devices"]["a"]["flushed"] == 200, 10)
    assert status["tasks"]["spooler"]["restarts"] == 1 and calls[0] == 2
    summary = await rt.shutdown()
    assert_accounting(summary.status)
    assert sorted(sink.seqs) == list(range(200)) and summary.failure is None


async def test_a_task_that_keeps_failing_is_given_up_and_the_runtime_stops_in_order(mocker):
    mocker.patch("firmware_host.runtime.Supervisor", lambda *a, **k: Supervisor(*a, **k, backoff_initial=0.001))
    fail_first_calls(SinkLane, "run", 10**9, mocker)
    sink, port = ListSink(), FakePort([packets(range(100))])
    rt = runtime(port, sink)
    await rt.start()
    await asyncio.wait_for(rt.stopped.wait(), 10)
    summary = await rt.shutdown()
    assert summary.failure is not None and "task sink list cannot continue" in summary.failure
    assert summary.status["tasks"]["sink list"]["state"] == "failed"
    assert_accounting(summary.status)
    assert summary.lost == 0 and sorted(sink.seqs) == list(range(100))  # the final drain still delivered


def test_run_exits_1_when_a_task_cannot_continue(mocker, tmp_path: Path, capsys):
    from firmware_host.cli.run import RunOptions, run_main

    mocker.patch("firmware_host.runtime.Supervisor", lambda *a, **k: Supervisor(*a, **k, backoff_initial=0.001))
    fail_first_calls(SinkLane, "run", 10**9, mocker)
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[[sinks]]\ntype = "jsonl"\npath = "{tmp_path / "out.jsonl"}"\n')
    sock = tmp_path / "c.sock"
    code = run_main(RunOptions(config_path=str(cfg), duration=20, control_path=str(sock), quiet=True, allow_empty=True))
    assert code == 1
    err = capsys.readouterr().err
    assert "task sink jsonl cannot continue (RuntimeError: injected fault 10)" in err


@pytest.mark.timeout(20)
async def test_an_actor_that_is_given_up_still_lets_the_runtime_stop_in_order(mocker):
    """Every offer fails: the supervisor gives the actor up. Requests to it then
    fail at once (nothing waits on an actor that is gone), the runtime stops in
    order within its grace, and the summary still holds the law."""
    mocker.patch("firmware_host.runtime.Supervisor", lambda *a, **k: Supervisor(*a, **k, backoff_initial=0.001))
    fail_first_calls(Aggregator, "_offer", 10**9, mocker)
    sink, port = ListSink(), FakePort([packets(range(10))])
    rt = runtime(port, sink)
    await rt.start()
    for start in range(10, 200, 10):
        port.feed(packets(range(start, start + 10)))
    await asyncio.wait_for(rt.stopped.wait(), 10)
    started = asyncio.get_running_loop().time()
    summary = await asyncio.wait_for(rt.shutdown(grace=1), 10)
    assert asyncio.get_running_loop().time() - started < 3
    assert summary.failure is not None and "task aggregator cannot continue" in summary.failure
    assert summary.status["tasks"]["aggregator"]["state"] == "failed"
    assert_accounting(summary.status)
