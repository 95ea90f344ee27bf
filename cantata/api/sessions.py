"""WebSocket sessions: what survives a client's socket (api.md §5.2, §6).

A session is opened by an `authentication` task and named by its `connectionSessionUUID`. Results
of its sync tasks that finish while no socket is attached wait in its buffer for `window` seconds;
a client that authenticates again with the same UUID and key gets them replayed. A client that
resumes on another node (its node died, or a load balancer moved it) gets the session adopted
there: the store lists the sync tasks sent over it (`Engine.ws_session_tasks`), and each result
is sent again once settled -- at least once, as a frame may have reached the client just before
its old node went away. The socket itself
(`cantata.api.ws.Connection`) is a `Peer` here: something that can be sent a text frame.
"""

from __future__ import annotations

import asyncio
import time
import uuid as uuidlib
from collections import deque
from typing import Any, Protocol

from .wire import dumps


class Peer(Protocol):
    async def send_text(self, text: str) -> bool:
        """Send one frame; False when the socket is gone (the frame is then buffered)."""


class Session:
    """One authenticated client, across the sockets it reconnects with."""

    def __init__(self, key_id: str, session_uuid: str | None = None) -> None:
        self.uuid = session_uuid or str(uuidlib.uuid4())
        self.key_id = key_id
        self.connection: Peer | None = None
        self.buffer: deque[tuple[float, str]] = deque()  # (time queued, frame) not yet delivered
        self.follows: dict[str, asyncio.Task] = {}
        self.detached_at: float | None = None


class Sessions:
    """Sessions by connectionSessionUUID, kept `window` seconds after their socket closes."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._sessions: dict[str, Session] = {}

    def open(self, key_id: str, resume: Any) -> tuple[Session, bool]:
        """The session to attach, and whether it was adopted: a resume of a session this node
        does not hold (it lived on another node, or before a restart) keeps its UUID, and the
        caller replays what the store says it is owed. A resume of another key's session here
        gets a new session."""
        self.expire()
        session = self._sessions.get(resume) if isinstance(resume, str) else None
        if session is not None and session.key_id == key_id:
            return session, False
        adopted = session is None and _is_uuid(resume)
        session = Session(key_id, resume if adopted else None)
        self._sessions[session.uuid] = session
        return session, adopted

    def expire(self) -> None:
        now = time.monotonic()
        for session in list(self._sessions.values()):
            while session.buffer and now - session.buffer[0][0] > self.window:
                session.buffer.popleft()
            if session.detached_at is not None and now - session.detached_at > self.window:
                for task in session.follows.values():
                    task.cancel()
                del self._sessions[session.uuid]

    async def push(self, session: Session, frame: dict[str, Any]) -> None:
        """Send to the session's socket, or keep for a resume if it has none (or the send fails)."""
        text = dumps(frame)
        conn = session.connection
        if conn is None or not await conn.send_text(text):
            session.buffer.append((time.monotonic(), text))

    async def attach(self, session: Session, conn: Peer) -> None:
        session.connection = conn
        session.detached_at = None
        while session.buffer:
            _, text = session.buffer[0]
            if not await conn.send_text(text):
                return
            session.buffer.popleft()

    def detach(self, session: Session, conn: Peer) -> None:
        if session.connection is conn:
            session.connection = None
            session.detached_at = time.monotonic()

    def close(self) -> None:
        for session in self._sessions.values():
            for task in session.follows.values():
                task.cancel()
        self._sessions.clear()


def _is_uuid(value: Any) -> bool:
    try:
        return isinstance(value, str) and str(uuidlib.UUID(value)) == value.lower()
    except ValueError:
        return False
