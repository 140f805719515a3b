"""CancellationToken semantics (design.md, modelled on tokio-util)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from firmware_host import CancellationToken

pytestmark = pytest.mark.timeout(10)


async def test_cancelled_returns_at_once_when_already_cancelled():
    token = CancellationToken()
    token.cancel()
    token.cancel()  # idempotent
    assert token.is_cancelled
    await asyncio.wait_for(token.cancelled(), 0.1)


async def test_waiters_wake_on_cancel():
    token = CancellationToken()
    waiters = [asyncio.ensure_future(token.cancelled()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    token.cancel()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)


async def test_parent_cancels_child_never_the_reverse():
    root = CancellationToken()
    child = root.child_token()
    grandchild = child.child_token()
    sibling = root.child_token()
    child.cancel()
    assert child.is_cancelled and grandchild.is_cancelled
    assert not root.is_cancelled and not sibling.is_cancelled
    root.cancel()
    assert sibling.is_cancelled
    assert root.child_token().is_cancelled  # a child of a cancelled token starts cancelled


async def test_run_until_cancelled():
    token = CancellationToken()
    assert await token.run_until_cancelled(asyncio.sleep(0, "done")) == "done"
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    task = asyncio.ensure_future(token.run_until_cancelled(forever()))
    await started.wait()
    token.cancel()
    assert await task is None
    assert cancelled.is_set()  # the work was cancelled, not left running
    assert await token.run_until_cancelled(asyncio.sleep(0, "late")) is None


async def test_drop_guard_cancels_unless_disarmed():
    token = CancellationToken()
    with token.drop_guard():
        pass
    assert token.is_cancelled

    token = CancellationToken()
    with pytest.raises(ValueError):
        with token.drop_guard():
            raise ValueError("boom")
    assert token.is_cancelled  # also on an exception

    token = CancellationToken()
    with token.drop_guard() as guard:
        assert guard.disarm() is token
    assert not token.is_cancelled


async def test_children_do_not_leak():
    root = CancellationToken()
    for _ in range(1000):
        root.child_token()
    gc.collect()
    assert len(root._children) == 0


async def test_outside_cancel_of_a_waiter_does_not_accumulate():
    token = CancellationToken()
    for _ in range(100):
        waiter = asyncio.ensure_future(token.cancelled())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert token._waiters == []


async def _slow_to_cancel(release: asyncio.Event) -> None:
    """A task that, once cancelled, still takes until ``release`` to end (a
    write finishing, a lane's last step)."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        await release.wait()
        raise


async def test_reap_swallows_the_tasks_own_cancel():
    from firmware_host.cancel import reap

    task = asyncio.ensure_future(asyncio.sleep(3600))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait_for(reap(task), 1)  # no CancelledError: the one it was asked for
    assert task.cancelled()


async def test_reap_passes_on_a_cancel_of_its_caller():
    """The drain's bug: a wait for a cancelled task swallowed the cancel of
    the waiter itself, which then went on delivering (and retrying) until the
    grace ran out, past a second signal."""
    from firmware_host.cancel import reap

    release = asyncio.Event()
    inner = asyncio.ensure_future(_slow_to_cancel(release))
    went_on = asyncio.Event()

    async def waiter() -> None:
        inner.cancel()
        await reap(inner)
        went_on.set()  # reached only if the cancel below was swallowed

    outer = asyncio.ensure_future(waiter())
    await asyncio.sleep(0.01)  # outer is in reap, inner still ending
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(outer, 1)
    assert outer.cancelled() and not went_on.is_set()
    release.set()
    await asyncio.wait_for(asyncio.gather(inner, return_exceptions=True), 1)


async def test_run_until_cancelled_passes_on_a_cancel_of_its_caller():
    release = asyncio.Event()
    token = CancellationToken()
    returned: list[object] = []

    async def caller() -> None:
        returned.append(await token.run_until_cancelled(_slow_to_cancel(release)))

    outer = asyncio.ensure_future(caller())
    await asyncio.sleep(0.01)
    token.cancel()  # run_until_cancelled cancels the work and waits for it to end
    await asyncio.sleep(0.01)
    outer.cancel()  # ...and is itself cancelled meanwhile
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(outer, 1)
    assert returned == []  # it did not return None as if only the work was cancelled
    release.set()
    await asyncio.sleep(0.01)  # the work ends its cancel now


async def test_reap_is_not_fooled_by_a_cancel_its_caller_swallowed_before():
    """A caller that once caught its own cancel and went on (never calling
    uncancel) still counts as cancelling; only a cancel during this wait is
    passed on, as asyncio.timeout counts them."""
    from firmware_host.cancel import reap

    async def caller() -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # swallowed: its cancelling() stays 1
        task = asyncio.ensure_future(asyncio.sleep(3600))
        await asyncio.sleep(0)
        task.cancel()
        await reap(task)
        return "went on"

    outer = asyncio.ensure_future(caller())
    await asyncio.sleep(0)
    outer.cancel()
    assert await asyncio.wait_for(outer, 1) == "went on"
