"""The descriptor budget (``firmware_host/transport/fds.py``) at its exact edge
(tests written from mutation testing, docs/testing-internals.md).

The soft RLIMIT_NOFILE is lowered for a moment to what the process holds plus a
few, so the arithmetic the module documents ("refuse an open that would leave
fewer than ``reserve`` free", opens in flight counted at their cost) can be
checked by hand: free = limit - used - in flight - cost, refused when < reserve.
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
from collections.abc import Iterator

import pytest

from firmware_host.errors import PortClosed
from firmware_host.transport.fds import FdBudget, open_descriptors, soft_limit

pytestmark = [
    pytest.mark.timeout(10),
    pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd"),
]

ADVICE = "raise the limit: ulimit -n / LimitNOFILE="


@contextlib.contextmanager
def soft_nofile(value: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (value, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_soft_limit_is_the_soft_one():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with soft_nofile(min(hard, 4096) - 1):
        assert soft_limit() == min(hard, 4096) - 1
    assert soft_limit() == (None if soft == resource.RLIM_INFINITY else soft)


def test_open_descriptors_counts_what_the_process_holds():
    before = open_descriptors()
    assert before is not None
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(7)]
    try:
        assert open_descriptors() == before + 7
    finally:
        for fd in fds:
            os.close(fd)
    assert open_descriptors() == before


def message(url: str, used: int, limit: int, reserve: int, pending: int = 0) -> str:
    more = f", {pending} more being opened" if pending else ""
    return (
        f"cannot open {url}: too many open files ({used} of {limit} descriptors in use{more},"
        f" {reserve} kept free for the control socket and sinks); {ADVICE}"
    )


def test_an_open_is_refused_exactly_when_it_would_leave_fewer_than_the_reserve():
    budget = FdBudget(reserve=4)
    used = open_descriptors()
    assert used is not None
    # free after an open of cost 5: limit - used - 5; allowed while >= 4
    with soft_nofile(used + 9):
        with budget.opening("/dev/a", 5):
            pass
        with pytest.raises(PortClosed) as info, budget.opening("/dev/b", 6):
            pass
        assert str(info.value) == message("/dev/b", used, used + 9, 4)


def test_opens_in_flight_count_against_the_next():
    budget = FdBudget(reserve=2)
    used = open_descriptors()
    assert used is not None
    with soft_nofile(used + 10):
        with budget.opening("/dev/a", 5):
            # 10 - 5 in flight - 3 = 2: allowed
            with budget.opening("/dev/b", 3):
                pass
            with pytest.raises(PortClosed) as info, budget.opening("/dev/c", 4):
                pass
            assert str(info.value) == message("/dev/c", used, used + 10, 2, pending=5)
        # released: the same open passes now
        with budget.opening("/dev/c", 8):
            pass


def test_a_refused_open_reserves_nothing():
    budget = FdBudget(reserve=0)
    used = open_descriptors()
    assert used is not None
    with soft_nofile(used + 3):
        with pytest.raises(PortClosed), budget.opening("/dev/x", 4):
            pass
        with budget.opening("/dev/y", 3):
            pass


def test_an_open_that_fails_releases_its_reservation():
    budget = FdBudget(reserve=0)
    used = open_descriptors()
    assert used is not None
    with soft_nofile(used + 3):
        with pytest.raises(OSError), budget.opening("/dev/x", 3):
            raise OSError("the open itself failed")
        with budget.opening("/dev/y", 3):
            pass


def test_a_connect_counts_itself_once_and_others_in_flight():
    budget = FdBudget(reserve=3)
    used = open_descriptors()
    assert used is not None
    with soft_nofile(used + 4):
        with budget.connecting():
            budget.check("socket://a:1")  # 4 - 1 = 3 free: allowed
            with budget.connecting():
                with pytest.raises(PortClosed) as info:
                    budget.check("socket://b:1")  # one other in flight: 2 free
                assert str(info.value) == message("socket://b:1", used, used + 4, 3, pending=1)
        with budget.connecting():
            budget.check("socket://c:1")  # the others are done


def test_a_connect_and_an_open_in_flight_add_up():
    budget = FdBudget(reserve=0)
    used = open_descriptors()
    assert used is not None
    with soft_nofile(used + 6):
        with budget.opening("/dev/a", 5), budget.connecting():
            budget.check("socket://a:1")  # 6 - 5 - 1 = 0 free: allowed with no reserve
            with budget.connecting(), pytest.raises(PortClosed) as info:
                budget.check("socket://b:1")
            assert ", 6 more being opened" in str(info.value)


def test_the_default_reserve_is_32():
    assert FdBudget().reserve == 32
    used = open_descriptors()
    assert used is not None
    budget = FdBudget()
    with soft_nofile(used + 33):
        with budget.opening("/dev/a", 1):
            pass
        with pytest.raises(PortClosed), budget.opening("/dev/a", 2):
            pass


def test_opens_from_threads_are_counted_under_the_lock():
    budget = FdBudget(reserve=0)
    used = open_descriptors()
    assert used is not None
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with budget.opening("/dev/t", 5):
            inside.set()
            release.wait(5)

    with soft_nofile(used + 12):  # the thread's open: 5; ours may take the rest
        thread = threading.Thread(target=hold)
        thread.start()
        try:
            assert inside.wait(5)
            with pytest.raises(PortClosed, match=r", 5 more being opened"), budget.opening("/dev/m", 8):
                pass
        finally:
            release.set()
            thread.join(5)


def test_no_soft_limit_means_nothing_to_respect(monkeypatch):
    """RLIM_INFINITY (a limit the kernel cannot report lower): the check passes.
    getrlimit is replaced: the hard limit here is finite, so the soft one cannot be raised to it."""
    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert soft_limit() is None
    with FdBudget(reserve=1 << 30).opening("/dev/a", 5):
        pass


def test_the_count_falls_back_to_dev_fd_and_then_to_none(monkeypatch):
    real = os.listdir
    expected = len(real("/dev/fd"))

    def no_proc(path):
        if path == "/proc/self/fd":
            raise FileNotFoundError(path)
        return real(path)

    monkeypatch.setattr(os, "listdir", no_proc)
    assert open_descriptors() == expected

    def nothing(path):
        raise PermissionError(path)

    monkeypatch.setattr(os, "listdir", nothing)
    assert open_descriptors() is None
    # without a count the check passes (a failed open would still say EMFILE in words)
    with FdBudget(reserve=1 << 30).opening("/dev/a", 5):
        pass
