"""The services a request handler needs, built once by `create_app` and hung on `app.state.cantata`.

A module of its own so that the transports (`http`, `ws`) can name it without importing the app
that imports them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ServerConfig
from ..jobs.engine import Engine
from .auth import KeyRing
from .delivery import DeliveryService
from .dispatch import Dispatcher
from .metrics import Metrics
from .responses import Renderer
from .sessions import Sessions
from .watch import TaskWatch


@dataclass
class Services:
    config: ServerConfig
    engine: Engine
    keyring: KeyRing
    renderer: Renderer
    dispatcher: Dispatcher
    metrics: Metrics
    watch: TaskWatch
    delivery: DeliveryService
    sessions: Sessions
