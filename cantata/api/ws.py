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
  `connectionSessionUUID` (and key) replays them, on any node (`sessions`).
* `ping` -> `{"data":[{"taskType":"ping","pong":true}]}`; a socket with no traffic either way
  for `ws_idle_timeout` seconds is closed, unless a sync task of its session is still running
  (the client is waiting for that result, which restarts the clock when it is sent).

Frames of one task are processed in the order they arrive; a slow task (a mediaStorage URL
upload) delays the connection's later frames, not other connections.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..logfmt import kv
from .dispatch import Caller
from .errors import RunwareError
from .responses import settled
from .services import Services
from .sessions import Session
from .wire import dumps

log = logging.getLogger("cantata.ws")

POLICY_VIOLATION = 1008


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
        await self.send_text(dumps(frame))

    async def serve(self) -> None:
        await self.ws.accept()
        try:
            while not self.closed:
                idle_timeout = self.s.config.ws_idle_timeout
                idle_left = idle_timeout - (time.monotonic() - self.last_activity)
                if idle_left <= 0:
                    if not self._awaiting_results():
                        await self._close(1000, "no traffic for too long")
                        return
                    idle_left = idle_timeout  # look again later: its result frames restart the clock
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

    def _awaiting_results(self) -> bool:
        """Whether a sync task of this socket's session is still running: a client silently waiting
        for its result is not idle."""
        return self.session is not None and self.session.connection is self and bool(self.session.follows)

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
            elif self.session is not None and not self.s.keyring.knows(self.session.key_id):
                await self._refuse(fail("invalidApiKey", "The API key this socket authenticated with was removed.",
                                        parameter="apiKey", task_type="authentication"))
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
        session, adopted = self.s.sessions.open(key_id, resume)
        self.session = session
        item = {"taskType": "authentication", "connectionSessionUUID": session.uuid}
        if isinstance(task_uuid, str):
            item["taskUUID"] = task_uuid
        await self.send({"data": [item]})
        await self.s.sessions.attach(session, self)
        if adopted:
            await self._replay_from_store(session)
        log.info(kv("ws.session", session=session.uuid, key=key_id, resumed=session.uuid == resume or None,
                    adopted=adopted or None))

    async def _replay_from_store(self, session: Session) -> None:
        """A session resumed from another node: follow every sync task sent over it that is still
        running or finished within the resume window (each result frame is sent once settled)."""
        since = time.time() - self.s.config.ws_resume_window
        owed = await asyncio.to_thread(self.s.engine.ws_session_tasks, session.key_id, session.uuid,
                                       finished_since=since)
        for task_uuid in owed:
            self._start_follow(session, task_uuid)

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
        reply = await self.s.dispatcher.handle(task, Caller(key_id=session.key_id, transport="ws",
                                                            ws_session=session.uuid))
        if reply.data:
            await self.send({"data": reply.data})
        if reply.errors:
            await self.send({"errors": [e.to_dict() for e in reply.errors]})
        if reply.follow:
            self._start_follow(session, reply.follow)

    def _start_follow(self, session: Session, task_uuid: str) -> None:
        if task_uuid in session.follows:
            return
        follow = asyncio.create_task(self._follow(session, task_uuid))
        session.follows[task_uuid] = follow
        follow.add_done_callback(lambda _, u=task_uuid: session.follows.pop(u, None))

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
        data, errors = await asyncio.to_thread(s.renderer.items_or_failure, view)
        if data:
            await s.sessions.push(session, {"data": data})
        if errors:
            await s.sessions.push(session, {"errors": [e.to_dict() for e in errors]})


async def ws_v1(websocket: WebSocket) -> None:
    await Connection(websocket, websocket.app.state.cantata).serve()
