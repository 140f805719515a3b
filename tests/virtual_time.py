"""An event loop whose clock moves only when the loop would sleep.

Waiting for a timer advances ``loop.time()`` to it at once instead of sleeping, so code
timed by the loop (the plugin scheduler, the read gate, the read clock) runs exactly on
its grid and a test can assert exact times with no wall-clock slack and no real waiting.
``block(seconds)`` moves the clock as if a callback had hogged the loop that long.
File descriptors still work (the real selector answers first, without waiting).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class _Selector(selectors.BaseSelector):
    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop
        self._real = selectors.DefaultSelector()

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            # nothing is scheduled: only a descriptor (or another thread) can wake the loop
            return self._real.select(None)
        self._loop.now += timeout
        return []

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_Selector(self))

    def time(self) -> float:
        return self.now

    def block(self, seconds: float) -> None:
        """As if the running callback had kept the loop busy for ``seconds``."""
        self.now += seconds


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a ``VirtualTimeLoop``."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(coro)


def virtual_loop() -> VirtualTimeLoop:
    """The running loop, typed (call inside ``run_virtual``)."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop)
    return loop
