"""Webhooks and upload endpoints, delivered from the durable outbox by any API node.

When a task finishes, the engine writes the deliveries it owes into the store's outbox in the
same transaction as its results: for every result an upload PUT (when `uploadEndpoint` is set)
and a webhook POST (when `webhookURL` is set), or one webhook POST carrying the task's error.

Every API node runs this service over the shared outbox. Each scan *claims* due rows
(`claim_deliveries`: only the oldest pending row of each task, so its uploads go before the
webhook that announces them; a claim holds the row for longer than one attempt can take, and two
nodes never claim the same row), makes one attempt per row under the outbound policy, and writes
the outcome: done, failed (a refusal, or the attempts used up) or the time of the next try
(exponential backoff with jitter, `outbound.retry_delay`). The retry schedule lives in the store,
so a restarted node, or any other node, resumes what is owed.

Contract: at least once. A node that dies after sending but before recording it lets the claim
lapse, and the row is sent again; the payload's `taskUUID` and `audioUUID` let a receiver spot
the repeat.

Payloads (Runware's webhook format, one call per result item):
  webhook: `{"data":[<result item>]}` or `{"errors":[<error>]}`, JSON, POST.
  upload:  the raw file, PUT, with the result's Content-Type.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from .. import outbound
from ..jobs.engine import Engine
from ..jobs.store import Delivery
from ..logfmt import kv
from .responses import Renderer
from .watch import TaskWatch

log = logging.getLogger("cantata.delivery")

_SCAN_EVERY = 2.0  # seconds between outbox scans when nothing wakes the service sooner
_CLAIM_LIMIT = 32  # rows one scan claims


class DeliveryService:
    def __init__(self, engine: Engine, renderer: Renderer, watch: TaskWatch, policy: outbound.OutboundPolicy, *,
                 attempts: int, base_delay: float, max_delay: float = 60.0) -> None:
        self.engine = engine
        self.renderer = renderer
        self.watch = watch
        self.policy = policy
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        #: How long a claim keeps a row from other nodes: longer than one attempt can take.
        self.hold_seconds = 2 * policy.total_timeout + 10
        self._in_flight: set[asyncio.Task] = set()
        self._next_due = float("inf")  # earliest retry this node scheduled
        self._rescan = asyncio.Event()

    async def run(self) -> None:
        """Claim and send due deliveries until cancelled."""
        while True:
            try:
                await self.dispatch_due()
            except Exception:
                log.exception(kv("delivery.scan_failed"))
            wait = max(0.0, min(_SCAN_EVERY, self._next_due - time.time()))
            finished = asyncio.create_task(self.watch.any_finished(wait))
            rescan = asyncio.create_task(self._rescan.wait())
            await asyncio.wait({finished, rescan}, return_when=asyncio.FIRST_COMPLETED)
            for waiter in (finished, rescan):
                waiter.cancel()
            self._rescan.clear()

    async def stop(self) -> None:
        tasks = list(self._in_flight)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def dispatch_due(self) -> None:
        now = time.time()
        if self._next_due <= now:
            self._next_due = float("inf")
        rows = await asyncio.to_thread(self.engine.claim_deliveries, now=now, hold_seconds=self.hold_seconds,
                                       limit=_CLAIM_LIMIT)
        for row in rows:
            task = asyncio.create_task(self._attempt(row))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _attempt(self, row: Delivery) -> None:
        """One try of a claimed row, and its outcome written."""
        view = await asyncio.to_thread(self.engine.view, row.task_uuid)
        if view is None:
            return  # the task was deleted with its outbox rows
        try:
            send = await asyncio.to_thread(self._sender, view, row)
        except (OSError, IndexError) as exc:  # the result's file is gone (swept): nothing to send
            await self._settle(row, "failed", error=f"result unavailable: {exc}")
            return
        try:
            status = await send()
        except outbound.OutboundError as exc:
            error = f"{exc.code}: {exc}"
            tries = row.attempts + 1
            if outbound.is_retryable(exc) and tries < self.attempts:
                retry_at = time.time() + outbound.retry_delay(row.attempts, base_delay=self.base_delay,
                                                              max_delay=self.max_delay)
                await asyncio.to_thread(self.engine.delivery_attempted, row.id, now=time.time(), error=error,
                                        retry_at=retry_at)
                self._next_due = min(self._next_due, retry_at)
                self._rescan.set()  # recompute the wait
                return
            await asyncio.to_thread(self.engine.delivery_attempted, row.id, now=time.time(), error=error)
            await self._settle(row, "failed")
            log.warning(kv("delivery.failed", taskUUID=row.task_uuid, kind=row.kind, url=row.url, code=exc.code,
                           attempts=tries, error=str(exc)))
            return
        await asyncio.to_thread(self.engine.delivery_attempted, row.id, now=time.time(), error=None)
        await self._settle(row, "done")
        log.info(kv("delivery.done", taskUUID=row.task_uuid, kind=row.kind, url=row.url, status=status))

    async def _settle(self, row: Delivery, status: str, error: str | None = None) -> None:
        await asyncio.to_thread(self.engine.delivery_settled, row.id, status, now=time.time(), error=error)
        self.engine.notify(row.task_uuid, "delivery")
        self._rescan.set()  # the task's next row (its webhook after an upload) is due now

    def _sender(self, view, row: Delivery) -> Callable[[], Awaitable[int]]:
        """Build the payload once (reads the file), and a coroutine factory that sends it."""
        if row.kind == "upload":
            result = view.results[row.result_idx]
            data = self.renderer.media_bytes(result)
            return lambda: outbound.put_bytes(row.url, data, result.mime, self.policy)
        payload = self.renderer.webhook_payload(view, row.result_idx)
        return lambda: outbound.post_json(row.url, payload, self.policy)
