"""Prometheus metrics (`GET /metrics`), in a registry of the app's own (several apps per process in
tests, and no stray default collectors).

  cantata_queue_depth{model}                 queued tasks (gauge, read at scrape time)
  cantata_tasks_finished_total{model,status} finished tasks by final status
  cantata_task_latency_seconds{model}        acceptance -> finish, for successful tasks
  cantata_gpu_seconds_total{model}           measured generation time
  cantata_results_total{model,format}        delivered result files
  cantata_errors_total{code}                 errors returned to clients, and task failures, by code
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from ..jobs.engine import Engine, Event
from ..jobs.store import SUCCESS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600)


class _QueueDepth:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self):
        family = GaugeMetricFamily("cantata_queue_depth", "Tasks waiting in the queue.", labels=["model"])
        for model in self.engine.models:
            family.add_metric([model], self.engine.queue_depth(model))
        yield family


class Metrics:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.registry = CollectorRegistry()
        self.registry.register(_QueueDepth(engine))
        self.tasks_finished = Counter("cantata_tasks_finished", "Finished tasks by final status.",
                                      ["model", "status"], registry=self.registry)
        self.latency = Histogram("cantata_task_latency_seconds", "Seconds from acceptance to a successful finish.",
                                 ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.gpu_seconds = Counter("cantata_gpu_seconds", "Measured generation (GPU) seconds.", ["model"],
                                   registry=self.registry)
        self.results = Counter("cantata_results", "Result files produced.", ["model", "format"],
                               registry=self.registry)
        self.errors = Counter("cantata_errors", "Errors by code: replies to clients and task failures.", ["code"],
                              registry=self.registry)
        self._unsubscribe = engine.subscribe(self._on_event)

    def close(self) -> None:
        self._unsubscribe()

    def count_error(self, code: str) -> None:
        self.errors.labels(code=code).inc()

    def _on_event(self, event: Event) -> None:
        if event.kind != "finished":
            return
        view = self.engine.view(event.task_uuid)
        if view is None:
            return
        self.tasks_finished.labels(model=view.model, status=view.status).inc()
        if view.status == SUCCESS:
            if view.finished_at is not None:
                self.latency.labels(model=view.model).observe(view.finished_at - view.created_at)
            self.gpu_seconds.labels(model=view.model).inc(sum(r.gpu_seconds for r in view.results))
            self.results.labels(model=view.model, format=view.task.output_format).inc(len(view.results))
        elif view.error:
            self.count_error(view.error["code"])

    def render(self) -> bytes:
        return generate_latest(self.registry)
