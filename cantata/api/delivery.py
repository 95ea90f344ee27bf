"""Webhooks and upload endpoints, delivered from the durable outbox.

When a task finishes, the engine writes the deliveries it owes into the store's outbox in the
same transaction as its results: for every result an upload PUT (when `uploadEndpoint` is set)
and a webhook POST (when `webhookURL` is set), or one webhook POST carrying the task's error.
This service sends them: a task's rows in order (its uploads before its webhooks, so a webhook
arrives after the file it announces), each through `outbound.deliver_with_retries` under the
outbound policy, recording every attempt. A crash loses nothing: rows still pending are sent
again after a restart (at least once; the payload's audioUUID lets a receiver spot a repeat).

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
from ..logfmt import kv
from ..jobs.store import Delivery
from .responses import Renderer
from .watch import TaskWatch

log = logging.getLogger("cantata.delivery")

_SCAN_EVERY = 2.0  # seconds between outbox scans when no task finishes


class DeliveryService:
    def __init__(self, engine: Engine, renderer: Renderer, watch: TaskWatch, policy: outbound.OutboundPolicy, *,
                 attempts: int, base_delay: float,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self.engine = engine
        self.renderer = renderer
        self.watch = watch
        self.policy = policy
        self.attempts = attempts
        self.base_delay = base_delay
        self.sleep = sleep
        self._in_flight: dict[str, asyncio.Task] = {}

    async def run(self) -> None:
        """Send pending deliveries until cancelled."""
        while True:
            try:
                self.dispatch_pending()
            except Exception:
                log.exception(kv("delivery.scan_failed"))
            await self.watch.any_finished(_SCAN_EVERY)

    async def stop(self) -> None:
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def dispatch_pending(self) -> None:
        by_task: dict[str, list[Delivery]] = {}
        for row in self.engine.store.pending_deliveries():
            by_task.setdefault(row.task_uuid, []).append(row)
        for task_uuid, rows in by_task.items():
            if task_uuid not in self._in_flight:
                task = asyncio.create_task(self._deliver_task(task_uuid, rows))
                self._in_flight[task_uuid] = task
                task.add_done_callback(lambda _, u=task_uuid: self._in_flight.pop(u, None))

    async def _deliver_task(self, task_uuid: str, rows: list[Delivery]) -> None:
        for row in rows:
            await self._deliver(row)
            self.engine.notify(task_uuid, "delivery")

    async def _deliver(self, row: Delivery) -> None:
        store = self.engine.store
        view = self.engine.view(row.task_uuid)
        if view is None:
            return
        try:
            send = await asyncio.to_thread(self._sender, view, row)
        except (OSError, IndexError) as exc:  # the result's file is gone (swept): nothing to send
            store.delivery_settled(row.id, "failed", now=time.time(), error=f"result unavailable: {exc}")
            return

        async def attempt() -> int:
            try:
                status = await send()
            except outbound.OutboundError as exc:
                store.delivery_attempted(row.id, now=time.time(), error=f"{exc.code}: {exc}")
                raise
            store.delivery_attempted(row.id, now=time.time(), error=None)
            return status

        try:
            status = await outbound.deliver_with_retries(attempt, attempts=max(1, self.attempts - row.attempts),
                                                         base_delay=self.base_delay, sleep=self.sleep)
        except outbound.OutboundError as exc:
            store.delivery_settled(row.id, "failed", now=time.time())
            log.warning(kv("delivery.failed", taskUUID=row.task_uuid, kind=row.kind, url=row.url, code=exc.code,
                           error=str(exc)))
            return
        store.delivery_settled(row.id, "done", now=time.time())
        log.info(kv("delivery.done", taskUUID=row.task_uuid, kind=row.kind, url=row.url, status=status))

    def _sender(self, view, row: Delivery) -> Callable[[], Awaitable[int]]:
        """Build the payload once (reads the file), and a coroutine factory that sends it."""
        if row.kind == "upload":
            result = view.results[row.result_idx]
            data = self.renderer.media_bytes(result)
            return lambda: outbound.put_bytes(row.url, data, result.mime, self.policy)
        payload = self.renderer.webhook_payload(view, row.result_idx)
        return lambda: outbound.post_json(row.url, payload, self.policy)
