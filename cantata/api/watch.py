"""Bridge from the engine's thread-side change events to coroutines waiting on a task.

Workers report from their own threads; `TaskWatch` hops each event onto the event loop and wakes
whoever waits on that task (a sync HTTP request, a WebSocket session, the delivery service).
Waiters re-check the real state after every wake-up and at least once a second, so a missed
wake-up costs a second, never a hang.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ..jobs.engine import Engine, Event

_RECHECK = 1.0


class TaskWatch:
    def __init__(self, engine: Engine) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._any: set[asyncio.Event] = set()
        self._unsubscribe = engine.subscribe(self._on_event)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def close(self) -> None:
        self._unsubscribe()

    def _on_event(self, event: Event) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake, event)

    def _wake(self, event: Event) -> None:
        for waiter in self._waiters.get(event.task_uuid, ()):
            waiter.set()
        if event.kind == "finished":
            for waiter in self._any:
                waiter.set()

    async def until(self, task_uuid: str, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait until `predicate()` holds (True) or `timeout` seconds pass (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter = asyncio.Event()
        self._waiters.setdefault(task_uuid, set()).add(waiter)
        try:
            while True:
                waiter.clear()  # cleared before checking: a change during the check wakes us again
                if predicate():
                    return True
                remaining = _RECHECK if deadline is None else min(_RECHECK, deadline - time.monotonic())
                if remaining <= 0:
                    return False
                try:
                    await asyncio.wait_for(waiter.wait(), remaining)
                except TimeoutError:
                    pass
        finally:
            waiters = self._waiters.get(task_uuid)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[task_uuid]

    async def any_finished(self, timeout: float) -> None:
        """Sleep until some task finishes (or `timeout`): the delivery service's wake-up."""
        waiter = asyncio.Event()
        self._any.add(waiter)
        try:
            await asyncio.wait_for(waiter.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self._any.discard(waiter)
