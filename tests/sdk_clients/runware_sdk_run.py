"""Drive Runware's new Python SDK (PyPI `runware-sdk`, `client.run({...})`) against a server.

Run with the interpreter of a virtualenv that has `runware-sdk` installed (it installs into the
import name `runware`, like the old SDK, hence the separate virtualenv). Reads a JSON spec on
stdin and prints one JSON object on stdout: {call name: outcome}.

Spec:
    {"ws_url": "ws://host:port/v1", "http_url": "http://host:port/v1",
     "calls": [{"name": "...", "api_key": "...", "transport": "websocket" | "rest",
                "params": {... what the user passes to client.run ...},
                "connect_only": false}]}

Every call gets its own client, configured only through the SDK's documented settings
(`transport`, `ws_base_url`, `http_base_url`), and all calls run concurrently. An outcome is
    {"ok": true, "results": [...], "progress": [...], "seconds": s}
or, when the SDK raises,
    {"ok": false, "error": {"type", "module", "code", "parameter", "status_code", "task_uuid",
                            "message", "retryable"}, "seconds": s}
`connect_only` opens (and authenticates) the connection without running anything.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from runware import Runware
from runware.types.sdk import RunOptions


def _error(exc: BaseException) -> dict:
    return {"type": type(exc).__name__, "module": type(exc).__module__,
            "code": getattr(exc, "code", None), "parameter": getattr(exc, "parameter", None),
            "status_code": getattr(exc, "status_code", None), "task_uuid": getattr(exc, "task_uuid", None),
            "message": str(exc), "retryable": getattr(exc, "retryable", None)}


async def _call(spec: dict, call: dict) -> dict:
    started = time.monotonic()
    progress: list = []
    client = Runware(api_key=call["api_key"], transport=call.get("transport", "websocket"),
                     ws_base_url=spec["ws_url"], http_base_url=spec["http_url"])
    try:
        if call.get("connect_only"):
            await client.connect()
            return {"ok": True, "results": [], "progress": [], "seconds": time.monotonic() - started}
        options = RunOptions(on_progress=lambda item: progress.append(item.get("progress")))
        results = await client.run(call["params"], options)
        return {"ok": True, "results": results, "progress": progress, "seconds": time.monotonic() - started}
    except Exception as exc:  # the SDK's error surface is what the test checks
        return {"ok": False, "error": _error(exc), "progress": progress, "seconds": time.monotonic() - started}
    finally:
        await client.close()


async def main() -> None:
    spec = json.load(sys.stdin)
    outcomes = await asyncio.gather(*(_call(spec, call) for call in spec["calls"]))
    json.dump({call["name"]: outcome for call, outcome in zip(spec["calls"], outcomes)}, sys.stdout, default=str)


if __name__ == "__main__":
    asyncio.run(main())
