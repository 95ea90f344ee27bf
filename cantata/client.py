"""`cantata run`: a command-line client for any Runware-compatible `audioInference` endpoint.

It behaves like Runware's own CLI: `key=value` arguments with dotted paths build the task
(`settings.bpm=132`, `inputs.audio=song.mp3`), values are typed by the field's schema type,
the task goes over HTTP or WebSocket, async tasks are polled with a progress bar, and the
results are downloaded. Local file paths given for audio inputs are sent inline as data URIs
(as Runware's Python SDK does), so `inputs.audio=./song.mp3` works against a remote server.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

# Schema types of the audioInference fields (api.md §2-§3); anything else is parsed as JSON when
# it parses, else kept as a string.
FIELD_TYPES: dict[str, str] = {
    "positivePrompt": "string", "negativePrompt": "string", "duration": "number", "seed": "integer",
    "steps": "integer", "CFGScale": "number", "strength": "number", "numberResults": "integer",
    "outputType": "string", "outputFormat": "string", "deliveryMethod": "string", "webhookURL": "string",
    "uploadEndpoint": "string", "includeCost": "boolean", "ttl": "integer",
    "audioSettings.sampleRate": "integer", "audioSettings.bitrate": "integer", "audioSettings.channels": "integer",
    "inputs.audio": "string", "inputs.referenceAudios": "array",
    "settings.lyrics": "string", "settings.bpm": "integer", "settings.keyScale": "string",
    "settings.timeSignature": "integer", "settings.vocalLanguage": "string", "settings.guidanceType": "string",
    "settings.cfgIntervalStart": "number", "settings.cfgIntervalEnd": "number",
    "settings.coverConditioningScale": "number", "settings.repaintingStart": "number",
    "settings.repaintingEnd": "number", "settings.repaintMode": "string", "settings.repaintStrength": "number",
    "settings.task": "string", "settings.trackName": "string", "settings.trackClasses": "array",
    "settings.dcw": "boolean", "lora.model": "string", "lora.weight": "number",
}
PROTECTED = ("model", "taskType", "taskUUID")
AUDIO_INPUTS = ("inputs.audio", "inputs.referenceAudios")


class ClientError(Exception):
    """The server answered with errors, or the request could not be made."""


def _schema_type(path: str) -> str | None:
    parts = [p for p in path.split(".") if not p.isdigit()]
    return FIELD_TYPES.get(".".join(parts))


def coerce(path: str, text: str) -> Any:
    """Type a command-line value by the field's schema type (integer, number, boolean, array…)."""
    kind = _schema_type(path)
    if kind == "array" and path.rsplit(".", 1)[-1].isdigit():
        kind = "string"  # one element of an array of strings (referenceAudios, trackClasses)
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
        if kind == "boolean":
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if kind == "array":
            value = json.loads(text) if text.startswith("[") else [text]
            return value
    except ValueError:
        raise ClientError(f"{path}: {text!r} is not a valid {kind}") from None
    if kind == "string":
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _inline_file(value: Any) -> Any:
    """A local audio file path -> `data:<mime>;base64,…`; anything else unchanged."""
    if isinstance(value, list):
        return [_inline_file(v) for v in value]
    if isinstance(value, str) and "://" not in value and not value.startswith("data:"):
        path = Path(value).expanduser()
        if path.is_file():
            mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"
    return value


def _assign(task: dict, path: str, value: Any) -> None:
    """Dotted path assignment; a numeric segment indexes a list."""
    parts = path.split(".")
    node: Any = task
    for part, nxt in zip(parts, parts[1:]):
        key: Any = int(part) if part.isdigit() else part
        if isinstance(node, list):
            while len(node) <= key:
                node.append(None)
            if node[key] is None:
                node[key] = [] if nxt.isdigit() else {}
            node = node[key]
        else:
            node = node.setdefault(key, [] if nxt.isdigit() else {})
    last: Any = int(parts[-1]) if parts[-1].isdigit() else parts[-1]
    if isinstance(node, list):
        while len(node) <= last:
            node.append(None)
    node[last] = value


def build_task(model: str, assignments: list[str], delivery_method: str) -> dict:
    task: dict[str, Any] = {"taskType": "audioInference", "taskUUID": str(uuid.uuid4()), "model": model,
                            "deliveryMethod": delivery_method}
    for item in assignments:
        if "=" not in item:
            raise ClientError(f"expected key=value, got {item!r}")
        path, text = item.split("=", 1)
        if path.split(".")[0] in PROTECTED:
            raise ClientError(f"{path} is set by the client; pass the model as the first argument")
        value = coerce(path, text)
        if any(path == p or path.startswith(p + ".") for p in AUDIO_INPUTS):
            value = _inline_file(value)
        _assign(task, path, value)
    return task


# -- transports ------------------------------------------------------------------------------


@dataclass
class Transport:
    url: str  # http(s)://host/v1 or ws(s)://host/v1
    api_key: str | None
    timeout: float = 600.0
    _ws: Any = field(default=None, repr=False)

    def send(self, tasks: list[dict]) -> dict:
        if self.url.startswith(("ws://", "wss://")):
            return self._send_ws(tasks)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        resp = httpx.post(self.url, json=tasks, headers=headers, timeout=self.timeout)
        try:
            return resp.json()
        except ValueError:
            raise ClientError(f"HTTP {resp.status_code}: {resp.text[:200]}") from None

    def _send_ws(self, tasks: list[dict]) -> dict:
        from websockets.sync.client import connect

        if self._ws is None:
            self._ws = connect(self.url, open_timeout=30, max_size=None)
            self._ws.send(json.dumps([{"taskType": "authentication", "apiKey": self.api_key or ""}]))
            reply = json.loads(self._ws.recv(timeout=30))
            if reply.get("errors"):
                raise ClientError(_describe(reply["errors"]))
        self._ws.send(json.dumps(tasks))
        # Items to wait for per taskUUID: every result of a sync task, else the one reply frame.
        pending = {t["taskUUID"]: t.get("numberResults", 1) if t.get("deliveryMethod") == "sync" else 1
                   for t in tasks if "taskUUID" in t}
        merged: dict[str, list] = {"data": [], "errors": []}
        deadline = time.monotonic() + self.timeout
        while pending:
            frame = json.loads(self._ws.recv(timeout=max(1.0, deadline - time.monotonic())))
            for kind in ("data", "errors"):
                for item in frame.get(kind, []):
                    uid = item.get("taskUUID")
                    if uid not in pending:
                        continue
                    merged[kind].append(item)
                    pending[uid] = 0 if kind == "errors" else pending[uid] - 1
                    if pending[uid] <= 0:
                        del pending[uid]
            if frame.get("data") == [] and not frame.get("errors"):  # an empty getResponse reply
                pending = {u: n for u, n in pending.items() if n > 1}
        return merged

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()


def _describe(errors: list[dict]) -> str:
    return "; ".join(f"{e.get('code')}: {e.get('message')}" + (f" ({e['parameter']})" if e.get("parameter") else "")
                     for e in errors)


def run(transport: Transport, task: dict, *, poll_interval: float = 2.0, progress=None) -> list[dict]:
    """Submit one task and return its result items (polling when async)."""
    reply = transport.send([task])
    if reply.get("errors"):
        raise ClientError(_describe(reply["errors"]))
    want = task.get("numberResults", 1)
    if task.get("deliveryMethod") != "async":
        return [i for i in reply.get("data", []) if i.get("taskUUID") == task["taskUUID"]]
    deadline = time.monotonic() + transport.timeout
    while time.monotonic() < deadline:
        time.sleep(poll_interval)
        reply = transport.send([{"taskType": "getResponse", "taskUUID": task["taskUUID"]}])
        if reply.get("errors"):
            raise ClientError(_describe(reply["errors"]))
        items = reply.get("data", [])
        done = [i for i in items if i.get("status") == "success"]
        if progress is not None:
            running = [i.get("progress", 0) for i in items if i.get("status") == "processing"]
            progress(max(running, default=100 if done else 0))
        if len(done) >= want:
            return done
    raise ClientError(f"timed out after {transport.timeout:.0f}s waiting for {task['taskUUID']}")


def save_results(items: list[dict], out_dir: Path, fmt: str) -> list[Path]:
    """Write each result (URL download, base64 or data URI) to `out_dir/<audioUUID>.<ext>`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for item in items:
        if "audioURL" in item:
            resp = httpx.get(item["audioURL"], timeout=120, follow_redirects=True)
            resp.raise_for_status()
            data = resp.content
            ext = Path(httpx.URL(item["audioURL"]).path).suffix or f".{fmt.lower()}"
        elif "audioBase64Data" in item:
            data, ext = base64.b64decode(item["audioBase64Data"]), f".{fmt.lower()}"
        elif "audioDataURI" in item:
            data, ext = base64.b64decode(item["audioDataURI"].split(",", 1)[1]), f".{fmt.lower()}"
        else:
            continue
        path = out_dir / f"{item.get('audioUUID', uuid.uuid4())}{ext}"
        path.write_bytes(data)
        paths.append(path)
    return paths
