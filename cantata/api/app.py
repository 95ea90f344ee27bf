"""The ASGI app: `create_app(config, engine=...)` wires the API layer onto a job engine.

Routes:
  POST /v1                  tasks over HTTP (cantata.api.http)
  WS   /v1                  tasks over WebSocket (cantata.api.ws)
  GET  /v1/media/<uuid>.<ext>  result files and uploads (unguessable UUIDs, like Runware's URLs;
                            404 `mediaNotFound` / `mediaExpired` once their ttl is over)
  GET  /health              liveness: the process answers
  GET  /ready               readiness: models loaded, workers alive, store writable (503 if not)
  GET  /metrics             Prometheus text format
  GET  /docs/api            the error codes and where the `documentation` links point
  GET  /                    Cantata Studio, the web page (cantata.studio), a client of /v1 like any other

The app's lifespan starts the engine (recovering unfinished tasks), the delivery service and the
WebSocket session sweeper, and on shutdown stops taking work and lets the running batch finish
(engine.stop). Anything unexpected is answered with a Runware error body, never a bare 500 page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from importlib import resources

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from ..config import ServerConfig
from ..errors import CATALOGUE, all_codes
from ..jobs.engine import Engine
from ..logfmt import kv
from .auth import KeyRing
from .cost import CostModel
from .delivery import DeliveryService
from .dispatch import Dispatcher
from ..models.adapters.registry import LoraRegistry
from .headers import HeaderSizeLimit
from .http import envelope, post_v1
from .media import media
from .metrics import CONTENT_TYPE, Metrics
from .openapi import register_routes as register_openapi_routes
from ..studio.routes import register_routes as register_studio_routes
from .responses import MEDIA_ROUTE, Renderer
from .services import Services
from .sessions import Sessions
from .watch import TaskWatch
from .ws import ws_v1

log = logging.getLogger("cantata.api")

_SESSION_SWEEP_EVERY = 5.0


def create_app(config: ServerConfig, engine: Engine | None = None, *, keyring: KeyRing | None = None) -> FastAPI:
    engine = engine or Engine.from_config(config)
    costs = CostModel(config.cost_per_gpu_second, config.cost_per_audio_second)
    renderer = Renderer(base_url=config.base_url, result_bytes=engine.result_bytes, costs=costs)
    metrics = Metrics(engine)
    watch = TaskWatch(engine)
    policy = config.outbound_policy()
    services = Services(
        config=config, engine=engine, keyring=keyring or KeyRing.from_config(config), renderer=renderer,
        dispatcher=Dispatcher(engine=engine, renderer=renderer, costs=costs, metrics=metrics, policy=policy,
                              limits=config.validation_limits(), base_url=config.base_url,
                              loras=LoraRegistry(config.loras)),
        metrics=metrics, watch=watch,
        delivery=DeliveryService(engine, renderer, watch, policy, attempts=config.webhook_attempts,
                                 base_delay=config.webhook_base_delay),
        sessions=Sessions(config.ws_resume_window))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        watch.bind(asyncio.get_running_loop())
        await asyncio.to_thread(engine.start)
        background = [asyncio.create_task(services.delivery.run()),
                      asyncio.create_task(_sweep_sessions(services.sessions))]
        log.info(kv("server.started", url=config.base_url, models=",".join(config.models),
                    auth="off" if services.keyring.no_auth else "on", demo=config.demo or None))
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await services.delivery.stop()
            services.sessions.close()
            await asyncio.to_thread(engine.stop)
            watch.close()
            metrics.close()
            log.info(kv("server.stopped"))

    app = FastAPI(title="Cantata", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.cantata = services
    app.add_api_route("/v1", post_v1, methods=["POST"])
    app.add_api_websocket_route("/v1", ws_v1)
    app.add_api_route(MEDIA_ROUTE, media, methods=["GET", "HEAD"])
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/ready", ready, methods=["GET"])
    app.add_api_route("/metrics", metrics_endpoint, methods=["GET"])
    app.add_api_route("/docs/api", api_docs, methods=["GET"])
    register_openapi_routes(app)  # /openapi.json, /docs, /v1/models/{model}/schema.json
    register_studio_routes(app)  # / (Cantata Studio) and /studio/*
    app.add_exception_handler(HTTPException, _http_exception)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(HeaderSizeLimit)
    return app


async def _sweep_sessions(sessions: Sessions) -> None:
    while True:
        await asyncio.sleep(_SESSION_SWEEP_EVERY)
        sessions.expire()


def _services(request: Request) -> Services:
    return request.app.state.cantata


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> JSONResponse:
    state = await asyncio.to_thread(_services(request).engine.readiness)
    return JSONResponse(state, status_code=200 if state["ready"] else 503)


async def metrics_endpoint(request: Request) -> Response:
    return Response(_services(request).metrics.render(), media_type=CONTENT_TYPE)


async def api_docs(request: Request) -> PlainTextResponse:
    """`reference.md` (fields, rules, anchors for the `documentation` links) plus the error codes,
    listed from the code tables themselves so the page cannot drift from what the server emits."""
    page = (resources.files("cantata.api") / "reference.md").read_text(encoding="utf-8")
    page += "\n" + "\n".join(f"- <a id=\"{code}\"></a>`{code}`: {text}" for code, text in sorted(all_codes().items()))
    return PlainTextResponse(page + "\n", media_type="text/markdown")


async def _http_exception(request: Request, exc: HTTPException) -> JSONResponse:
    code = {404: "notFound", 405: "methodNotAllowed"}.get(exc.status_code, "invalidRequestBody")
    s = _services(request)
    return envelope([], [s.dispatcher.error(code, CATALOGUE[code].description)], status=exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception(kv("request.crashed", path=request.url.path))
    err = _services(request).dispatcher.error("internalServerError", "An unexpected error occurred.")
    return envelope([], [err], status=500)
