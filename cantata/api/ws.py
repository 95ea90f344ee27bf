"""WebSocket `/v1`: Runware's persistent transport (api.md §5.2, §6).

* The first message must be an `authentication` task. The reply carries a
  `connectionSessionUUID`; a refusal carries the error both as `errors:[...]` and as `error:{...}`
  (the TS SDK reads only the singular) and the socket is closed.
* Every client frame is a JSON array of tasks; each task's reply is its own frame
  (`{"data":[...]}` or `{"errors":[...]}` with taskUUID set), so clients route by taskUUID.
* Sync audioInference tasks get their result frames when they finish, and nothing before (no
  ACK, no "processing" items: the TS SDK counts every data item as a result). Async tasks (and
  those with a webhookURL) get the ACK at once and are followed with getResponse.
* A session outlives its socket: results of sync tasks that finish while the client is away
  wait in the session's buffer for `ws_resume_window` seconds; authenticating again with the same
  `connectionSessionUUID` (and key) replays them.
* `ping` -> `{"data":[{"taskType":"ping","pong":true}]}`; a socket with no traffic either way
  for `ws_idle_timeout` seconds is closed.

Frames of one task are processed in the order they arrive; a slow task (a mediaStorage URL
upload) delays the connection's later frames, not other connections.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid as uuidlib
from collections import deque
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..jobs.logfmt import kv
from .dispatch import Caller
from .errors import RunwareError
from .responses import settled

if TYPE_CHECKING:
    from .app import Services

log = logging.getLogger("cantata.ws")

POLICY_VIOLATION = 1008


class Session:
    def __init__(self, key_id: str) -> None:
        self.uuid = str(uuidlib.uuid4())
        self.key_id = key_id
        self.connection: Connection | None = None
        self.buffer: deque[tuple[float, str]] = deque()  # (time queued, frame) not yet delivered
        self.follows: dict[str, asyncio.Task] = {}
        self.detached_at: float | None = None


class Sessions:
    """Sessions by connectionSessionUUID, kept `window` seconds after their socket closes."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._sessions: dict[str, Session] = {}

    def open(self, key_id: str, resume: Any) -> Session:
        self.expire()
        session = self._sessions.get(resume) if isinstance(resume, str) else None
        if session is None or session.key_id != key_id:
            session = Session(key_id)
            self._sessions[session.uuid] = session
        return session

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
        text = json.dumps(frame)
        conn = session.connection
        if conn is None or not await conn.send_text(text):
            session.buffer.append((time.monotonic(), text))

    async def attach(self, session: Session, conn: Connection) -> None:
        session.connection = conn
        session.detached_at = None
        while session.buffer:
            _, text = session.buffer[0]
            if not await conn.send_text(text):
                return
            session.buffer.popleft()

    def detach(self, session: Session, conn: Connection) -> None:
        if session.connection is conn:
            session.connection = None
            session.detached_at = time.monotonic()

    def close(self) -> None:
        for session in self._sessions.values():
            for task in session.follows.values():
                task.cancel()
        self._sessions.clear()


class Connection:
    def __init__(self, websocket: WebSocket, services: Services) -> None:
        self.ws = websocket
        self.s = services
        self.session: Session | None = None
        self.last_activity = time.monotonic()
        self._send_lock = asyncio.Lock()
        self.closed = False

    async def send_text(self, text: str) -> bool:
        if self.closed:
            return False
        try:
            async with self._send_lock:
                await self.ws.send_text(text)
        except Exception:  # the peer went away mid-send: the caller buffers the frame
            self.closed = True
            return False
        self.last_activity = time.monotonic()
        return True

    async def send(self, frame: dict[str, Any]) -> None:
        await self.send_text(json.dumps(frame))

    async def serve(self) -> None:
        await self.ws.accept()
        try:
            while not self.closed:
                idle_left = self.s.config.ws_idle_timeout - (time.monotonic() - self.last_activity)
                if idle_left <= 0:
                    await self._close(1000, "no traffic for too long")
                    return
                try:
                    message = await asyncio.wait_for(self.ws.receive(), idle_left)
                except TimeoutError:
                    continue
                if message["type"] == "websocket.disconnect":
                    return
                self.last_activity = time.monotonic()
                text = message.get("text")
                if text is None:
                    text = (message.get("bytes") or b"").decode("utf-8", errors="replace")
                await self._frame(text)
        except WebSocketDisconnect:
            return
        finally:
            self.closed = True
            if self.session is not None:
                self.s.sessions.detach(self.session, self)

    async def _close(self, code: int, reason: str) -> None:
        self.closed = True
        try:
            await self.ws.close(code=code, reason=reason)
        except Exception:
            pass

    async def _frame(self, text: str) -> None:
        fail = self.s.dispatcher.error
        if len(text) > self.s.config.max_request_bytes:
            return await self._errors([fail("maxRequestSizeExceeded", "The message is over the "
                                            f"{self.s.config.max_request_bytes} byte limit.")])
        try:
            payload = json.loads(text)
        except (ValueError, RecursionError) as exc:
            return await self._errors([fail("invalidJSON", f"The message is not valid JSON: {exc}.")])
        tasks = payload if isinstance(payload, list) else [payload]
        if not tasks:
            return await self._errors([fail("invalidRequestBody", "The message must be a non-empty JSON array of "
                                            "task objects.")])
        for task in tasks:
            if self.closed:
                return
            if isinstance(task, dict) and task.get("taskType") == "authentication":
                await self._authenticate(task)
            elif self.session is None and not self.s.keyring.no_auth:
                await self._refuse(fail("missingApiKey", "Authenticate first: send [{\"taskType\": "
                                        "\"authentication\", \"apiKey\": \"<key>\"}].", parameter="apiKey",
                                        task_type="authentication"))
            else:
                if self.session is None:
                    await self._open_session(self.s.keyring.identify(None), None, None)
                await self._dispatch(task)

    async def _authenticate(self, task: dict) -> None:
        key = task.get("apiKey")
        key_id = self.s.keyring.identify(key)
        if key_id is None:
            code = "invalidApiKey" if key else "missingApiKey"
            await self._refuse(self.s.dispatcher.error(code, "Invalid API key." if key else "apiKey is required.",
                                                       parameter="apiKey", task_type="authentication"))
            return
        await self._open_session(key_id, task.get("connectionSessionUUID"), task.get("taskUUID"))

    async def _open_session(self, key_id: str, resume: Any, task_uuid: Any) -> None:
        if self.session is not None:
            self.s.sessions.detach(self.session, self)
        session = self.s.sessions.open(key_id, resume)
        self.session = session
        item = {"taskType": "authentication", "connectionSessionUUID": session.uuid}
        if isinstance(task_uuid, str):
            item["taskUUID"] = task_uuid
        await self.send({"data": [item]})
        await self.s.sessions.attach(session, self)
        log.info(kv("ws.session", session=session.uuid, key=key_id, resumed=session.uuid == resume or None))

    async def _refuse(self, err: RunwareError) -> None:
        self.s.metrics.count_error(err.code)
        error = err.to_dict()
        await self.send({"errors": [error], "error": error})
        await self._close(POLICY_VIOLATION, "authentication failed")

    async def _errors(self, errors: list[RunwareError]) -> None:
        for err in errors:
            self.s.metrics.count_error(err.code)
        await self.send({"errors": [e.to_dict() for e in errors]})

    async def _dispatch(self, task: Any) -> None:
        session = self.session
        reply = await self.s.dispatcher.handle(task, Caller(key_id=session.key_id, transport="ws"))
        if reply.data:
            await self.send({"data": reply.data})
        if reply.errors:
            await self.send({"errors": [e.to_dict() for e in reply.errors]})
        if reply.follow:
            follow = asyncio.create_task(self._follow(session, reply.follow))
            session.follows[reply.follow] = follow
            follow.add_done_callback(lambda _, u=reply.follow: session.follows.pop(u, None))

    async def _follow(self, session: Session, task_uuid: str) -> None:
        """Push a sync task's result frames to its session when it settles (no interim frames)."""
        s = self.s

        def is_settled() -> bool:
            view = s.engine.view(task_uuid)
            return view is None or settled(view)

        await s.watch.until(task_uuid, is_settled)
        view = s.engine.view(task_uuid, session.key_id)
        if view is None:
            return
        data, errors = await asyncio.to_thread(s.renderer.items, view)
        if data:
            await s.sessions.push(session, {"data": data})
        if errors:
            await s.sessions.push(session, {"errors": [e.to_dict() for e in errors]})


async def ws_v1(websocket: WebSocket) -> None:
    await Connection(websocket, websocket.app.state.cantata).serve()
