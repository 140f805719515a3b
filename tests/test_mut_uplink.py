"""One uplink reader on its own, against scripted ports and an inlet that records
what it is offered (tests written from mutation testing, docs/testing-internals.md):
reconnect backoff times, the read gate, offer without and with waiting, processors,
codec failures, send, and cancellation at each step.

Times are exact: these run on a virtual clock (tests/virtual_time.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from firmware_host._sync import Changes, ReadGate
from firmware_host.cancel import CancellationToken
from firmware_host.codecs.lines import LinesCodec
from firmware_host.errors import PortClosed
from firmware_host.frames import Frame
from firmware_host.transport.base import Port
from firmware_host.transport.fake import FakeOpener, FakePort
from firmware_host.uplink import UplinkReader, apply_processors, fixed_url
from tests.virtual_time import run_virtual, virtual_loop

pytestmark = pytest.mark.timeout(10)

URL = "fake://dev"


class Inlet:
    """A FrameInlet that records offers (and when), and can refuse the no-wait path."""

    def __init__(self, *, room: bool = True) -> None:
        self.read_gate = ReadGate()
        self.room = room
        self.nowait: list[tuple[float, str, list[str | None]]] = []
        self.waited: list[tuple[float, str, list[str | None]]] = []

    def offer_nowait(self, device: str, frames: Sequence[Frame]) -> bool:
        if not self.room:
            return False
        self.nowait.append((virtual_loop().time(), device, [f.text for f in frames]))
        return True

    async def offer(self, device: str, frames: Sequence[Frame]) -> None:
        self.waited.append((virtual_loop().time(), device, [f.text for f in frames]))


class TimedOpener:
    """FakeOpener that notes the loop time of every open."""

    def __init__(self, script: list[FakePort | BaseException]) -> None:
        self.inner = FakeOpener({URL: list(script)})
        self.times: list[float] = []

    async def __call__(self, url: str, baudrate: int) -> Port:
        self.times.append(virtual_loop().time())
        return await self.inner(url, baudrate)


def reader(opener: object, inlet: Inlet | None = None, **kwargs: object) -> UplinkReader:
    return UplinkReader(
        "dev",
        fixed_url(URL),
        115200,
        LinesCodec("dev"),
        inlet or Inlet(),
        opener,  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


async def run_for(r: UplinkReader, seconds: float) -> None:
    token = CancellationToken()
    virtual_loop().call_later(seconds, token.cancel)
    await r.run(token)


def test_reconnect_backoff_doubles_up_to_its_cap() -> None:
    opener = TimedOpener([])  # every open fails

    async def main() -> UplinkReader:
        r = reader(opener, backoff_initial=0.1, backoff_max=0.5)
        await run_for(r, 2.0)
        return r

    r = run_virtual(main())
    # waits of 0.1, 0.2, 0.4, then 0.5 (the cap) each time
    assert opener.times == pytest.approx([0.0, 0.1, 0.3, 0.7, 1.2, 1.7])
    assert r.stats.state == "closed"
    assert r.stats.connects == 0 and r.stats.reconnects == 0
    assert r.stats.last_error == "cannot open fake://dev: no such device"
    assert r.url == URL


def test_a_connect_resets_the_backoff_and_counts_reconnects() -> None:
    dead1, dead2 = FakePort([PortClosed("gone")]), FakePort([PortClosed("gone")])
    opener = TimedOpener([PortClosed("busy"), PortClosed("busy"), dead1, PortClosed("busy"), dead2])

    async def main() -> UplinkReader:
        r = reader(opener, backoff_initial=0.1, backoff_max=5.0)
        await run_for(r, 1.5)
        return r

    r = run_virtual(main())
    # fail at 0 (wait 0.1), fail at 0.1 (wait 0.2), connect at 0.3 and die at once: the wait
    # starts again from 0.1, so 0.4; fail (wait 0.2) -> 0.6 connect, die (wait 0.1) -> 0.7
    assert opener.times[:6] == pytest.approx([0.0, 0.1, 0.3, 0.4, 0.6, 0.7])
    assert r.stats.connects == 2 and r.stats.reconnects == 1
    assert dead1.closed and dead2.closed


def test_the_default_backoff_starts_at_a_tenth_and_stops_at_five_seconds() -> None:
    opener = TimedOpener([])

    async def main() -> None:
        await run_for(reader(opener), 20.0)

    run_virtual(main())
    gaps = [round(b - a, 6) for a, b in zip(opener.times, opener.times[1:], strict=False)]
    assert gaps[:7] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0]
    assert set(gaps[6:]) == {5.0}


def test_frames_are_offered_without_waiting_when_there_is_room() -> None:
    port = FakePort([b"a\nb", b"\nc\n"])
    inlet = Inlet()
    changes = Changes()

    async def main() -> UplinkReader:
        r = reader(TimedOpener([port]), inlet, changes=changes)
        pulse = changes.waiter()
        token = CancellationToken()
        task = asyncio.ensure_future(r.run(token))
        await pulse  # readers poke the change signal
        await asyncio.sleep(1.0)
        assert r.stats.state == "connected" and r.stats.connects == 1
        assert r.stats.bytes == 6 and r.stats.last_rx is not None
        token.cancel()
        await task
        return r

    r = run_virtual(main())
    assert inlet.nowait == [(0.0, "dev", ["a"]), (0.0, "dev", ["b", "c"])]
    assert inlet.waited == []
    assert port.closed and r.stats.state == "closed"


def test_a_full_inbox_means_awaiting_offer_with_the_same_frames() -> None:
    inlet = Inlet(room=False)

    async def main() -> None:
        await run_for(reader(TimedOpener([FakePort([b"x\ny\n"])]), inlet), 1.0)

    run_virtual(main())
    assert inlet.nowait == [] and inlet.waited == [(0.0, "dev", ["x", "y"])]


def test_a_closed_read_gate_holds_the_next_read() -> None:
    inlet = Inlet()
    port = FakePort([b"early\n"])

    async def main() -> None:
        token = CancellationToken()
        task = asyncio.ensure_future(reader(TimedOpener([port]), inlet).run(token))
        await asyncio.sleep(1.0)
        inlet.read_gate.close(10.0)
        port.feed(b"in flight\n")  # the read already waiting takes this one
        port.feed(b"held\n")  # the next read waits at the gate
        await asyncio.sleep(1.0)
        assert [t for t, _, _ in inlet.nowait] == [0.0, 1.0]
        inlet.read_gate.open()
        await asyncio.sleep(0.5)
        token.cancel()
        await task

    run_virtual(main())
    assert inlet.nowait == [(0.0, "dev", ["early"]), (1.0, "dev", ["in flight"]), (2.0, "dev", ["held"])]


def test_processors_filter_and_an_emptied_batch_is_not_offered() -> None:
    inlet = Inlet()

    def drop_hash(frames: list[Frame]) -> list[Frame]:
        return [f for f in frames if not (f.text or "").startswith("#")]

    async def main() -> UplinkReader:
        r = reader(TimedOpener([FakePort([b"#a\n#b\n", b"c\n#d\n"])]), inlet, process=drop_hash)
        await run_for(r, 1.0)
        return r

    r = run_virtual(main())
    assert inlet.nowait == [(0.0, "dev", ["c"])]
    assert r.stats.filtered == 3


def test_a_failing_codec_counts_the_read_as_rejected_and_reading_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    class Boom(LinesCodec):
        def feed(self, data: bytes, ts: float) -> list[Frame]:
            if data.startswith(b"boom"):
                raise RuntimeError("codec bug")
            return super().feed(data, ts)

    inlet = Inlet()

    async def main() -> UplinkReader:
        r = UplinkReader(
            "dev", fixed_url(URL), 9600, Boom("dev"), inlet, TimedOpener([FakePort([b"par", b"boom", b"ok\n"])])
        )
        await run_for(r, 1.0)
        return r

    r = run_virtual(main())
    assert inlet.nowait == [(0.0, "dev", ["ok"])]  # the partial "par" was reset, not glued on
    assert r.rejected == 2  # the reset of "par", and the failed read
    assert r.gaps == 0
    logged = [rec.getMessage() for rec in caplog.records if rec.name == "firmware_host.uplink"]
    assert "dev: codec lines failed; input counted as rejected" in logged


def test_send_only_while_connected() -> None:
    port = FakePort()

    async def main() -> None:
        r = reader(TimedOpener([port]))
        assert r.send(b"early") is False
        token = CancellationToken()
        task = asyncio.ensure_future(r.run(token))
        await asyncio.sleep(0.5)
        assert r.send(b"cmd") is True
        port.closed = True  # the port now raises on write
        assert r.send(b"lost") is False
        port.closed = False
        token.cancel()
        await task
        assert r.send(b"late") is False

    run_virtual(main())
    assert port.writes == [b"cmd"]


def test_errors_are_logged_once_per_change_and_unexpected_ones_named(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="firmware_host.uplink")
    calls = {"n": 0}

    async def resolve() -> str:
        calls["n"] += 1
        if calls["n"] <= 3:
            raise LookupError("no board with serial 42")
        raise RuntimeError("resolver bug")

    async def main() -> UplinkReader:
        r = UplinkReader("dev", resolve, 9600, LinesCodec("dev"), Inlet(), TimedOpener([]), backoff_max=0.1)
        await run_for(r, 1.0)
        return r

    r = run_virtual(main())
    assert r.stats.last_error == "RuntimeError: resolver bug"
    records = [rec for rec in caplog.records if rec.name == "firmware_host.uplink"]
    assert [rec.getMessage() for rec in records] == [
        "dev: no board with serial 42",
        "dev: RuntimeError: resolver bug",
    ]
    assert records[0].exc_info is None and records[1].exc_info is not None


def test_an_unexpected_open_error_is_named_and_retried() -> None:
    opener = TimedOpener([ValueError("bad url"), FakePort([b"fine\n"])])
    inlet = Inlet()

    async def main() -> UplinkReader:
        r = reader(opener, inlet)
        await run_for(r, 1.0)
        return r

    r = run_virtual(main())
    assert r.stats.last_error == "ValueError: bad url"
    assert inlet.nowait == [(0.1, "dev", ["fine"])]


def test_a_read_error_of_any_type_means_reconnect() -> None:
    opener = TimedOpener([FakePort([b"a\n", ZeroDivisionError("driver bug")]), FakePort([b"b\n"])])
    inlet = Inlet()

    async def main() -> UplinkReader:
        r = reader(opener, inlet)
        await run_for(r, 1.0)
        return r

    r = run_virtual(main())
    assert [frames for _, _, frames in inlet.nowait] == [["a"], ["b"]]
    assert r.stats.last_error == "ZeroDivisionError: driver bug"
    assert r.stats.reconnects == 1


def test_cancel_while_a_port_is_opening_closes_it_when_it_lands() -> None:
    port = FakePort()
    landed: asyncio.Future[Port] | None = None

    async def slow_open(url: str, baudrate: int) -> Port:
        nonlocal landed
        landed = virtual_loop().create_future()
        return await landed

    errors: list[dict[str, object]] = []

    async def main() -> UplinkReader:
        virtual_loop().set_exception_handler(lambda _loop, context: errors.append(context))
        r = reader(slow_open)
        await run_for(r, 0.5)
        assert r.stats.state == "closed" and virtual_loop().time() == 0.5
        assert landed is not None
        landed.set_result(port)  # the open finishes after the reader gave up
        await asyncio.sleep(0.1)
        return r

    r = run_virtual(main())
    assert port.closed
    assert r.stats.connects == 0
    assert not r._late_closes  # the close task was held until it ended, then let go
    assert errors == []


@pytest.mark.parametrize("outcome", ["fails", "is cancelled"])
def test_an_open_that_fails_or_is_cancelled_after_the_reader_gave_up_is_no_error(outcome: str) -> None:
    landed: asyncio.Future[Port] | None = None
    errors: list[dict[str, object]] = []

    async def slow_open(url: str, baudrate: int) -> Port:
        nonlocal landed
        landed = virtual_loop().create_future()
        return await landed

    async def main() -> UplinkReader:
        virtual_loop().set_exception_handler(lambda _loop, context: errors.append(context))
        r = reader(slow_open)
        await run_for(r, 0.5)
        assert landed is not None
        if outcome == "fails":
            landed.set_exception(OSError("no such port"))
        else:
            landed.cancel()
        await asyncio.sleep(0.1)
        return r

    r = run_virtual(main())
    assert not r._late_closes
    assert errors == []


def test_a_port_opened_as_the_token_is_cancelled_is_closed_not_read() -> None:
    port = FakePort([b"never\n"])
    inlet = Inlet()
    token = CancellationToken()

    async def open_and_cancel(url: str, baudrate: int) -> Port:
        token.cancel()
        return port

    async def main() -> UplinkReader:
        r = reader(open_and_cancel, inlet)
        await r.run(token)
        return r

    r = run_virtual(main())
    assert port.closed and inlet.nowait == [] and r.stats.connects == 0


def test_cancel_during_a_read_closes_the_port_at_once() -> None:
    port = FakePort()

    async def main() -> None:
        await run_for(reader(TimedOpener([port])), 3.0)
        assert virtual_loop().time() == 3.0

    run_virtual(main())
    assert port.closed


def test_a_port_failing_to_close_does_not_end_the_reader() -> None:
    class BadClose(FakePort):
        async def close(self) -> None:
            await super().close()
            raise OSError("close failed")

    opener = TimedOpener([BadClose([PortClosed("gone")]), FakePort([b"after\n"])])
    inlet = Inlet()

    async def main() -> UplinkReader:
        r = reader(opener, inlet)
        await run_for(r, 1.0)
        return r

    r = run_virtual(main())
    assert inlet.nowait == [(0.1, "dev", ["after"])]
    assert r.stats.last_error == "close failed"


def test_apply_processors() -> None:
    def upper(frames: list[Frame]) -> list[Frame]:
        return [Frame(f.device, f.seq, None, f.ts, None, (f.text or "").upper()) for f in frames]

    def none(frames: list[Frame]) -> list[Frame]:
        return []

    seen: list[int] = []

    def count(frames: list[Frame]) -> list[Frame]:
        seen.append(len(frames))
        return frames

    assert apply_processors([]) is None
    assert apply_processors([upper]) is upper
    chain = apply_processors([upper, count])
    assert chain is not None
    assert [f.text for f in chain([Frame("d", 0, None, 0.0, None, "a")])] == ["A"]
    assert seen == [1]
    stop = apply_processors([none, count])
    assert stop is not None and stop([Frame("d", 0, None, 0.0, None, "a")]) == []
    assert seen == [1]  # an emptied batch goes no further


def test_fixed_url() -> None:
    async def main() -> str:
        return await fixed_url("fake://x")()

    assert run_virtual(main()) == "fake://x"


def test_the_state_is_connecting_while_a_port_opens() -> None:
    seen: list[str] = []
    holder: list[UplinkReader] = []

    async def open_and_look(url: str, baudrate: int) -> Port:
        seen.append(holder[0].stats.state)
        raise PortClosed("no device")

    async def main() -> None:
        r = reader(open_and_look)
        holder.append(r)
        assert r.url is None and r.stats.state == "connecting"
        await run_for(r, 0.25)

    run_virtual(main())
    assert seen == ["connecting", "connecting"]  # at 0 and, after backoff, at 0.1
