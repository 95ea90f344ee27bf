"""The configured backends of a process: which store, which media storage, which event bus, and
where its work comes from. `Engine.from_config` reads only this, so every role (`serve`,
`serve --no-worker`, `cantata worker`, `serve --devices …`) builds them the same way.
"""

from __future__ import annotations

import os
import socket

from ..models.device import resolve_device
from ..models.speed.batching import max_padding_waste
from .claims import StoreQueue
from .events import EventBus, InProcessBus, PostgresBus
from .media import MediaStorage
from .s3_media import open_media_storage
from .scheduler import Scheduler
from .store import Store
from .store_contract import JobStore


def open_store(config) -> JobStore:
    """PostgreSQL for a `postgresql://` store, else the SQLite file (the embedded default)."""
    if config.postgres:
        from .pg_store import PostgresStore  # psycopg is only needed by who uses it

        return PostgresStore(config.store_url)
    return Store(config.store_url)


def open_media(config) -> MediaStorage:
    """A folder (the data directory's by default) or `s3://bucket/prefix` (`s3_media`)."""
    return open_media_storage(config.media, local_root=config.media_dir, presign=config.media_presign)


def event_bus(config) -> EventBus:
    return PostgresBus(config.store_url) if config.postgres else InProcessBus()


def worker_id(config) -> str:
    """Names this process in the store's leases (`claimed_by`): host, process and device."""
    return f"{socket.gethostname()}:{os.getpid()}:{config.device}"


def work_source(config, store: JobStore) -> Scheduler | StoreQueue:
    """In memory for a single server; claims from the store when other processes share it. Both
    batch with the padding this process's device tolerates (`speed.batching`)."""
    padding = max_padding_waste(resolve_device(config.device))
    if config.shared_store:
        return StoreQueue(store, worker_id=worker_id(config), capacity=config.queue_capacity,
                          max_batch_size=config.max_batch_size, max_padding_waste=padding,
                          lease_seconds=config.lease_seconds)
    return Scheduler(config.queue_capacity, config.max_batch_size, max_padding_waste=padding)
