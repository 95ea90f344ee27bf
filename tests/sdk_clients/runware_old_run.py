"""Drive Runware's older Python SDK (PyPI `runware`, GitHub Runware/sdk-python) against a server.

`Runware(api_key=..., url="ws://host:port/v1")`, `connect()`, then
`audioInference(IAudioInference(...))` — WebSocket only, `deliveryMethod` "sync" by default; with
"async" the call returns an `IAsyncTaskResponse` and `getResponse(taskUUID, numberResults)`
fetches the results. Run with the interpreter of a virtualenv holding `runware`.

Reads a JSON spec on stdin and prints {call name: outcome} as JSON on stdout:
    {"ws_url": "...", "http_url": "http://host:port/v1", "api_key": "...",
     "calls": [{"name": "...", "request": {... IAudioInference fields ...}}]}
Outcomes: {"ok": true, "ack": {...} | null, "results": [IAudio as dict, ...], "seconds": s} or
{"ok": false, "error": {"type", "module", "code", "data", "message"}, "seconds": s}.

SDK quirk accommodated here: this SDK's getResponse keeps only items carrying an `audioUUID`, so
a poll answered with a `processing` item (no results yet) waits out its 30 s poll timeout before
polling again. Before calling getResponse for an async task, this script therefore waits (with
plain HTTP getResponse, outside the SDK) until the server reports the task finished, so the
SDK's own getResponse is answered with the results at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
import urllib.request

from runware import IAudioInference, Runware


def _error(exc: BaseException) -> dict:
    return {"type": type(exc).__name__, "module": type(exc).__module__, "code": getattr(exc, "code", None),
            "data": getattr(exc, "error_data", None), "message": str(exc)}


def _task_finished(spec: dict, task_uuid: str) -> bool:
    body = json.dumps([{"taskType": "getResponse", "taskUUID": task_uuid}]).encode()
    request = urllib.request.Request(spec["http_url"], data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {spec['api_key']}"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        reply = json.load(resp)
    return bool(reply.get("errors")) or not any(i.get("status") == "processing" for i in reply.get("data", []))


async def _wait_finished(spec: dict, task_uuid: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(_task_finished, spec, task_uuid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {task_uuid} still processing after {timeout} s")
        await asyncio.sleep(0.25)


async def _call(runware: Runware, spec: dict, call: dict) -> dict:
    started = time.monotonic()
    try:
        request = IAudioInference(**call["request"])
        reply = await runware.audioInference(request)
        ack = None
        if not isinstance(reply, list):  # IAsyncTaskResponse
            ack = dataclasses.asdict(reply)
            await _wait_finished(spec, reply.taskUUID)
            reply = await runware.getResponse(taskUUID=reply.taskUUID,
                                              numberResults=call["request"].get("numberResults", 1))
        results = [dataclasses.asdict(r) | {"_class": type(r).__name__} for r in reply]
        return {"ok": True, "ack": ack, "results": results, "seconds": time.monotonic() - started}
    except Exception as exc:  # the SDK's error surface is what the test checks
        return {"ok": False, "error": _error(exc), "seconds": time.monotonic() - started}


async def main() -> None:
    spec = json.load(sys.stdin)
    runware = Runware(api_key=spec["api_key"], url=spec["ws_url"])
    await runware.connect()
    try:
        outcomes = await asyncio.gather(*(_call(runware, spec, call) for call in spec["calls"]))
    finally:
        await runware.disconnect()
    json.dump({call["name"]: outcome for call, outcome in zip(spec["calls"], outcomes)}, sys.stdout, default=str)


if __name__ == "__main__":
    asyncio.run(main())
