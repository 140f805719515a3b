"""retry.py on a virtual clock: the lock's deadline, the backoff's cut to the
deadline and its cancel, and SourceFaults' counting, sparse log and capped
exponential retries (tests written from mutation testing, docs/testing-internals.md).

Every expected time is worked out by hand from the documented rules: a retry
after the k-th fault in a row waits ``min(initial * 2**(k-1), max)``; a wait
is cut to the deadline; ``acquire`` gives up at the deadline. The module reads
``time.monotonic``; the tests point it at the virtual loop's clock.
"""

from __future__ import annotations

import asyncio
import logging
import types

import pytest

from firmware_host import retry
from firmware_host._sync import Changes
from firmware_host.cancel import CancellationToken
from firmware_host.retry import SourceFaults, acquire, backoff
from tests.virtual_time import run_virtual, virtual_loop

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(autouse=True)
def loop_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """``time.monotonic`` in retry.py is the running loop's (virtual) clock."""
    monkeypatch.setattr(retry, "time", types.SimpleNamespace(monotonic=lambda: asyncio.get_running_loop().time()))


async def at(t: float) -> None:
    """Sleep until virtual time ``t``."""
    await asyncio.sleep(t - virtual_loop().time())


# -- acquire ------------------------------------------------------------------------


def test_acquire_gives_up_at_the_deadline() -> None:
    async def main() -> tuple[bool, float]:
        lock = asyncio.Lock()
        await lock.acquire()
        await at(5.0)
        ok = await acquire(lock, 7.0)
        return ok, virtual_loop().time()

    assert run_virtual(main()) == (False, 7.0)


def test_acquire_with_a_deadline_already_past_gives_up_at_once() -> None:
    async def main() -> tuple[bool, float]:
        lock = asyncio.Lock()
        await lock.acquire()
        await at(5.0)
        ok = await acquire(lock, 3.0)
        return ok, virtual_loop().time()

    assert run_virtual(main()) == (False, 5.0)


def test_acquire_takes_the_lock_when_it_is_released_before_the_deadline() -> None:
    async def main() -> tuple[bool, float, bool]:
        lock = asyncio.Lock()
        await lock.acquire()
        virtual_loop().call_later(1.5, lock.release)
        ok = await acquire(lock, 7.0)
        return ok, virtual_loop().time(), lock.locked()

    assert run_virtual(main()) == (True, 1.5, True)


def test_acquire_without_a_deadline_waits_as_long_as_it_takes() -> None:
    async def main() -> tuple[bool, float, bool]:
        lock = asyncio.Lock()
        await lock.acquire()
        virtual_loop().call_later(1000.0, lock.release)
        ok = await acquire(lock, None)
        return ok, virtual_loop().time(), lock.locked()

    assert run_virtual(main()) == (True, 1000.0, True)


# -- backoff ------------------------------------------------------------------------


def test_backoff_sleeps_its_delay() -> None:
    async def main() -> tuple[bool, float]:
        await at(10.0)
        ok = await backoff(3.0, None, None)
        return ok, virtual_loop().time()

    assert run_virtual(main()) == (True, 13.0)


def test_backoff_is_cut_to_the_deadline() -> None:
    async def main() -> tuple[bool, float]:
        await at(10.0)
        ok = await backoff(3.0, 12.0, None)
        return ok, virtual_loop().time()

    assert run_virtual(main()) == (True, 12.0)


def test_backoff_shorter_than_what_is_left_is_not_cut() -> None:
    async def main() -> tuple[bool, float]:
        await at(10.0)
        ok = await backoff(0.5, 20.0, None)
        return ok, virtual_loop().time()

    assert run_virtual(main()) == (True, 10.5)


def test_backoff_with_less_than_a_second_left_still_waits() -> None:
    async def main() -> tuple[bool, float]:
        await at(10.0)
        ok = await backoff(3.0, 10.5, None)
        return ok, virtual_loop().time()

    assert run_virtual(main()) == (True, 10.5)


@pytest.mark.parametrize("deadline", [10.0, 9.0])
def test_backoff_at_or_past_the_deadline_stops_at_once(deadline: float) -> None:
    async def main() -> tuple[bool, float]:
        await at(10.0)
        ok = await backoff(3.0, deadline, None)
        return ok, virtual_loop().time()

    assert run_virtual(main()) == (False, 10.0)


def test_backoff_with_a_token_sleeps_its_delay_when_not_cancelled() -> None:
    async def main() -> tuple[bool, float]:
        ok = await backoff(3.0, 100.0, CancellationToken())
        return ok, virtual_loop().time()

    assert run_virtual(main()) == (True, 3.0)


def test_backoff_ends_when_its_token_is_cancelled() -> None:
    async def main() -> tuple[bool, float]:
        token = CancellationToken()
        virtual_loop().call_later(1.0, token.cancel)
        ok = await backoff(3.0, None, token)
        return ok, virtual_loop().time()

    assert run_virtual(main()) == (False, 1.0)


def test_backoff_with_a_cancelled_token_does_not_wait() -> None:
    async def main() -> tuple[bool, float]:
        token = CancellationToken()
        token.cancel()
        ok = await backoff(3.0, None, token)
        return ok, virtual_loop().time()

    assert run_virtual(main()) == (False, 0.0)


# -- SourceFaults -------------------------------------------------------------------


def test_a_fault_is_counted_shown_and_notified() -> None:
    async def main() -> None:
        changes = Changes()
        faults = SourceFaults("spool", changes)
        assert (faults.what, faults.changes, faults.error, faults.failures) == ("spool", changes, None, 0)
        waiter = changes.waiter()
        faults.failed(OSError("disk full"))
        assert waiter.done()
        assert (faults.failures, faults.error) == (1, "OSError: disk full")
        faults.failed(ValueError("bad row"))
        assert (faults.failures, faults.error) == (2, "ValueError: bad row")

    run_virtual(main())


def test_cleared_notifies_only_when_there_was_an_error() -> None:
    async def main() -> None:
        changes = Changes()
        faults = SourceFaults("spool", changes)
        waiter = changes.waiter()
        faults.cleared()
        assert not waiter.done()  # nothing changed: nobody is woken
        faults.failed(OSError("disk full"))
        waiter = changes.waiter()
        faults.cleared()
        assert waiter.done() and faults.error is None and faults.failures == 1

    run_virtual(main())


def test_faults_are_logged_on_the_first_and_every_hundredth(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="firmware_host.retry")

    async def main() -> None:
        faults = SourceFaults("spool", Changes())
        for i in range(1, 201):
            faults.failed(OSError(f"n{i}"), "spool delete" if i == 200 else None)

    run_virtual(main())
    assert [r.getMessage() for r in caplog.records] == [
        "spool failed (1 so far): OSError: n1",
        "spool failed (100 so far): OSError: n100",
        "spool delete failed (200 so far): OSError: n200",
    ]
    assert {r.name for r in caplog.records} == {"firmware_host.retry"}


class Attempts:
    """Fails its first ``fails`` calls with ``exc``; records when it is called."""

    def __init__(self, fails: int, exc: Exception | None = None) -> None:
        self.fails = fails
        self.exc = exc or OSError("disk full")
        self.times: list[float] = []

    async def __call__(self) -> str:
        self.times.append(virtual_loop().time())
        if len(self.times) <= self.fails:
            raise self.exc
        return "done"


def test_retry_backs_off_exponentially_from_the_defaults_up_to_the_cap() -> None:
    # defaults 0.1 s doubling to a 5 s cap: waits .1 .2 .4 .8 1.6 3.2 5 5
    attempt = Attempts(8)

    async def main() -> str | None:
        return await SourceFaults("spool", Changes()).retry(attempt, (OSError,), None, None)

    assert run_virtual(main()) == "done"
    assert attempt.times == pytest.approx([0, 0.1, 0.3, 0.7, 1.5, 3.1, 6.3, 11.3, 16.3], abs=1e-9)


def test_retry_with_its_own_backoff_and_a_success_clears_the_error() -> None:
    attempt = Attempts(3)

    async def main() -> tuple[str | None, SourceFaults]:
        faults = SourceFaults("spool", Changes(), backoff_initial=1.0, backoff_max=3.0)
        return await faults.retry(attempt, (OSError,), None, None), faults

    result, faults = run_virtual(main())
    assert result == "done" and attempt.times == [0.0, 1.0, 3.0, 6.0]
    assert faults.failures == 3 and faults.error is None


def test_retry_stops_at_the_deadline_with_the_error_shown() -> None:
    attempt = Attempts(10**6)

    async def main() -> tuple[str | None, float, SourceFaults]:
        faults = SourceFaults("spool", Changes(), backoff_initial=1.0, backoff_max=100.0)
        result = await faults.retry(attempt, (OSError,), 5.0, None)
        return result, virtual_loop().time(), faults

    result, ended, faults = run_virtual(main())
    # attempts at 0, 1, 3, then the 4 s wait is cut to the deadline (5), one more, then no time is left
    assert result is None and ended == 5.0 and attempt.times == [0.0, 1.0, 3.0, 5.0]
    assert faults.failures == 4 and faults.error == "OSError: disk full"


def test_retry_stops_when_its_token_is_cancelled() -> None:
    attempt = Attempts(10**6)

    async def main() -> tuple[str | None, float]:
        token = CancellationToken()
        virtual_loop().call_later(2.5, token.cancel)
        faults = SourceFaults("spool", Changes(), backoff_initial=1.0, backoff_max=100.0)
        return await faults.retry(attempt, (OSError,), None, token), virtual_loop().time()

    assert run_virtual(main()) == (None, 2.5)
    assert attempt.times == [0.0, 1.0]


def test_retry_names_the_attempt_in_its_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="firmware_host.retry")

    async def main() -> str | None:
        return await SourceFaults("spool", Changes()).retry(Attempts(1), (OSError,), None, None, "spool ack")

    assert run_virtual(main()) == "done"
    assert [r.getMessage() for r in caplog.records] == ["spool ack failed (1 so far): OSError: disk full"]


def test_retry_lets_a_fault_it_was_not_given_through() -> None:
    attempt = Attempts(1, KeyError("bug"))

    async def main() -> str | None:
        return await SourceFaults("spool", Changes()).retry(attempt, (OSError,), None, None)

    with pytest.raises(KeyError):
        run_virtual(main())
    assert attempt.times == [0.0]
