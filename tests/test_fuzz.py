"""A hostile client's fuzz of POST /v1: thousands of mutated bodies, none may earn a 5xx or a body
that is not JSON.

Bodies start from one valid task of each type and are mutated: values swapped for wrong types,
huge or non-finite numbers, "NaN" strings, lone UTF-16 surrogates in strings and key names,
deep nesting, unknown keys and task types, missing fields; some bodies are mangled as text
(truncated, stray bytes, invalid UTF-8, absurd nesting or digits). Every request carries
`X-Runware-Dry-Run: 1`, so audioInference only validates and prices, and the other task types
stay harmless (dry-run cancel and mediaStorage do nothing; polls find nothing). Seeded: a failure
reproduces with the same seed.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import uuid
from collections import Counter

import pytest

from serverkit import XL_SFT, app_client, config, server_checkpoints

SEED = 20240612
BODIES = 5_200
DRY_RUN = {"X-Runware-Dry-Run": "1", "Content-Type": "application/json"}

SURROGATES = ("\ud800", "\udfff", "\ud83d", "\udc00")
NASTY_STRINGS = (
    "", " ", "NaN", "nan", "Infinity", "-Infinity", "null", "true", "0", "1e309", "-0", "\x00", "\u202e", "💥",
    "x" * 5000, "' OR 1=1 --", "../../etc/passwd", "%00", "\\", '"', "sync", "async", "URL", "MP3", "apg",
    "http://127.0.0.1/hook", "http://localhost/hook", "http://[::1]/hook", "http://127.1/hook",
    "http://10.0.0.1/hook", "http://169.254.169.254/latest", "http://169.254.170.2/v2/credentials",
    "ftp://127.0.0.1/x", "http://user:pw@127.0.0.1/", "http://\ud800/", "http://[::1", "http://%zz/",
    "data:audio/wav;base64,AAAA", "data:;base64,", "AAAA", XL_SFT, "runware:ace-step@v1.5-turbo",
    "runware:\ud800@1", "C# major", "Bb minor", "en", "zz", "vocals", "cover", "repaint", "lego",
)
NASTY_NUMBERS = (
    0, -1, 1, 2, 30, 300, 301, 29.95, 0.5, -0.0, 1e-320, 3.5, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1,
    10**30, 10**300, 1e308, -1e308, float("nan"), float("inf"), float("-inf"),
)
NASTY_CONTAINERS = ([], {}, [None], {"": None}, {"\ud800": "\udc00"}, [[[[[]]]]], {"a": {"b": {"c": {}}}})
NASTY_KEYS = ("\ud800", "\udfffkey", "", " ", "__proto__", "constructor", "taskType", "settings", "inputs",
              "x" * 300, "💥", "positivePrompt ", "Seed", "seed")
TASK_TYPES = ("audioInference", "getResponse", "getTaskDetails", "mediaStorage", "cancel", "ping",
              "authentication", "imageInference", "AUDIOINFERENCE", "", "\ud800")
WAV_URI = "data:audio/wav;base64," + base64.b64encode(b"RIFF\x24\x00\x00\x00WAVEfmt ").decode()


TEMPLATE_WEIGHTS = (6, 3, 3, 2, 1, 1, 1, 1, 1, 1, 1)


def templates(new_uuid) -> list[dict]:
    """One valid task of each type, with (for audioInference) nearly every field set."""
    return [
        {"taskType": "audioInference", "taskUUID": new_uuid(), "model": XL_SFT,
         "positivePrompt": "lo-fi hip hop, dusty drums", "negativePrompt": "harsh", "duration": 30, "steps": 2,
         "seed": 7, "CFGScale": 5, "numberResults": 1, "outputType": "URL", "outputFormat": "MP3",
         "audioSettings": {"sampleRate": 44100, "channels": 2, "bitrate": 192}, "deliveryMethod": "sync",
         "webhookURL": "https://8.8.8.8/hook", "includeCost": True, "ttl": 3600,
         "settings": {"lyrics": "[Verse]\nla la la la", "bpm": 120, "keyScale": "C major", "timeSignature": 4,
                      "vocalLanguage": "en", "guidanceType": "apg", "cfgIntervalStart": 0.1, "cfgIntervalEnd": 0.9,
                      "dcw": False},
         "advancedFeatures": {}},
        {"taskType": "audioInference", "taskUUID": new_uuid(), "model": XL_SFT, "positivePrompt": "jazz trio",
         "inputs": {"audio": WAV_URI, "referenceAudios": [WAV_URI]}, "outputType": "base64Data",
         "settings": {"repaintingStart": 1, "repaintingEnd": 5, "repaintMode": "balanced", "repaintStrength": 0.5}},
        {"taskType": "audioInference", "taskUUID": new_uuid(), "model": XL_SFT, "positivePrompt": "synthwave",
         "inputs": {"audio": WAV_URI}, "strength": 0.6, "settings": {"coverConditioningScale": 0.5}},
        {"taskType": "audioInference", "taskUUID": new_uuid(), "model": XL_SFT, "positivePrompt": "ambient pads",
         "duration": 30, "deliveryMethod": "async"},
        {"taskType": "getResponse", "taskUUID": new_uuid()},
        {"taskType": "getTaskDetails", "taskUUID": new_uuid()},
        {"taskType": "mediaStorage", "taskUUID": new_uuid(), "operation": "upload", "media": WAV_URI},
        {"taskType": "mediaStorage", "taskUUID": new_uuid(), "operation": "delete", "media": new_uuid()},
        {"taskType": "cancel", "taskUUID": new_uuid()},
        {"taskType": "ping", "ping": True},
        {"taskType": "authentication", "apiKey": "cnt_whatever"},
    ]


class Fuzzer:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def template(self) -> dict:
        """A fresh template, the full audioInference one most often: it has the most to validate."""
        return self.rng.choices(templates(self.uuid), weights=TEMPLATE_WEIGHTS)[0]

    def value(self, depth: int = 0):
        roll = self.rng.random()
        if roll < 0.35:
            return self.string()
        if roll < 0.65:
            return self.rng.choice(NASTY_NUMBERS)
        if roll < 0.75:
            return self.rng.choice((None, True, False))
        if roll < 0.85 or depth > 3:
            return copy.deepcopy(self.rng.choice(NASTY_CONTAINERS))
        if roll < 0.93:
            return [self.value(depth + 1) for _ in range(self.rng.randint(0, 3))]
        return {self.key(): self.value(depth + 1) for _ in range(self.rng.randint(0, 3))}

    def string(self) -> str:
        text = self.rng.choice(NASTY_STRINGS)
        return self.surrogated(text) if self.rng.random() < 0.3 else text

    def surrogated(self, text: str) -> str:
        at = self.rng.randint(0, len(text))
        return text[:at] + self.rng.choice(SURROGATES) + text[at:]

    def key(self) -> str:
        return self.rng.choice(NASTY_KEYS) if self.rng.random() < 0.6 else self.surrogated(self.rng.choice(NASTY_KEYS))

    def deep(self, depth: int):
        inner = self.value()
        for _ in range(depth):
            inner = [inner] if self.rng.random() < 0.5 else {self.key(): inner}
        return inner

    # -- mutations of one task ----------------------------------------------------------------------

    def containers(self, node, found=None) -> list:
        """Every dict in `node` (the task and its nested objects)."""
        found = [] if found is None else found
        if isinstance(node, dict):
            found.append(node)
            for child in node.values():
                self.containers(child, found)
        elif isinstance(node, list):
            for child in node:
                self.containers(child, found)
        return found

    MUTATIONS = ("replace", "replace", "replace", "delete", "add", "add", "task_type", "deep", "strings", "strings",
                 "keys", "retype")

    def mutate(self, task: dict) -> dict:
        """1-3 mutations, each of a random object in the task (the task itself or one nested in it)."""
        for _ in range(self.rng.randint(1, 3)):
            target = self.rng.choice(self.containers(task))
            key = self.rng.choice(list(target)) if target else None
            mutation = self.rng.choice(self.MUTATIONS)
            if mutation == "replace" and key is not None:
                target[key] = self.value()
            elif mutation == "delete" and key is not None:
                del target[key]
            elif mutation == "add":
                target[self.key()] = self.value()
            elif mutation == "task_type":
                task["taskType"] = self.rng.choice(TASK_TYPES)
            elif mutation == "deep" and key is not None:
                target[key] = self.deep(self.rng.randint(5, 60))
            elif mutation == "strings":  # a surrogate in every string below this object
                for k in list(target):
                    target[k] = self.map_strings(target[k])
            elif mutation == "keys":  # surrogates in this object's key names
                renamed = {(self.surrogated(k) if self.rng.random() < 0.5 else k): v for k, v in target.items()}
                target.clear()
                target.update(renamed)
            elif mutation == "retype" and key is not None:
                target[key] = str(target[key]) if not isinstance(target[key], str) else [target[key]]
        return task

    def map_strings(self, node):
        if isinstance(node, dict):
            return {k: self.map_strings(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self.map_strings(v) for v in node]
        return self.surrogated(node) if isinstance(node, str) else node

    # -- whole bodies ---------------------------------------------------------------------------------

    def body(self) -> tuple[str, bytes]:
        """(kind, raw body bytes)."""
        roll = self.rng.random()
        if roll < 0.08:
            return "mangled", self.mangled()
        if roll < 0.12:
            return "not-an-array", json.dumps(self.value()).encode()
        tasks = [self.mutate(self.template()) for _ in range(self.rng.randint(1, 4))]
        if self.rng.random() < 0.1:
            tasks.insert(self.rng.randint(0, len(tasks)), self.value())
        return "tasks", json.dumps(tasks).encode()  # ensure_ascii: surrogates go out as \ud800 escapes

    def mangled(self) -> bytes:
        good = json.dumps([self.mutate(self.template())]).encode()
        choice = self.rng.randrange(6)
        if choice == 0:
            return good[: self.rng.randint(0, len(good))]
        if choice == 1:
            at = self.rng.randint(0, len(good))
            return good[:at] + bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 8))) + good[at:]
        if choice == 2:
            return good.replace(b'"', b'"\xff\xfe', 1)  # invalid UTF-8
        if choice == 3:
            depth = self.rng.choice((1_000, 10_000, 100_000))
            return b"[" * depth + b"]" * depth
        if choice == 4:
            return b'[{"taskType": "ping", "seed": ' + b"9" * self.rng.choice((4_000, 5_000, 50_000)) + b"}]"
        return self.rng.choice((b"", b"[]", b"null", b"NaN", b"[NaN]", b"[Infinity]", b'"\\ud800"', b"[{}]"))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = server_checkpoints(tmp_path_factory)
    cfg = config(tmp_path_factory.mktemp("fuzz"), root, outbound_connect_timeout=0.5)
    with app_client(cfg) as c:
        yield c


def strict_json(raw: bytes):
    return json.loads(raw.decode("utf-8"), parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))


def test_fuzzed_bodies_never_get_a_5xx_and_always_get_json(client):
    fuzzer = Fuzzer(SEED)
    statuses: Counter = Counter()
    codes: Counter = Counter()
    kinds: Counter = Counter()
    failures: list[str] = []
    for n in range(BODIES):
        kind, raw = fuzzer.body()
        kinds[kind] += 1
        response = client.post("/v1", content=raw, headers=DRY_RUN)
        statuses[response.status_code] += 1
        try:
            body = strict_json(response.content)
        except ValueError as exc:
            failures.append(f"#{n} {response.status_code}: unparseable body ({exc}): {raw[:200]!r}")
            continue
        codes.update(e.get("code") for e in body.get("errors", []))
        if response.status_code >= 500:
            failures.append(f"#{n} {response.status_code} {body}: {raw[:300]!r}")
    print(f"\nfuzz seed={SEED}: {BODIES} bodies {dict(kinds)}; statuses {dict(sorted(statuses.items()))}")
    print("error codes:", dict(codes.most_common()))
    assert not failures, f"{len(failures)} bad responses, first: " + "\n".join(failures[:5])
    assert statuses[200] and statuses[400]  # the fuzz reached both accepted and refused tasks
