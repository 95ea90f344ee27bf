"""Server configuration: one frozen `ServerConfig`, read from a TOML file, `CANTATA_*` environment
variables and command-line flags, in that order of precedence (flags win).

The TOML file may group keys under any tables it likes (`[server]`, `[limits]`, ...): tables are
only for readability, every key is a field name below and must be unique. Each field can also be
set as `CANTATA_<FIELD NAME IN CAPITALS>` (booleans: 1/0, true/false, yes/no, on/off; lists:
comma-separated; per-model tables: JSON objects such as `{"xl-sft": 0.00015}`).

Keys (default in brackets):

Serving
  host [127.0.0.1]            address to listen on; 0.0.0.0 exposes the server to the network.
  port [8080]                 TCP port.
  public_url [derived]        base URL clients reach us at; used in `audioURL`s, `mediaURL`s and
                              error `documentation` links. Default http://<host>:<port>
                              (localhost when listening on every address).
  data_dir [$XDG_DATA_HOME/cantata or ~/.local/share/cantata]
                              SQLite database (`cantata.db`) and stored media (`media/`).
  checkpoints [$CANTATA_CHECKPOINTS or ~/.cache/cantata/checkpoints]
                              checkpoint root in the official layout.
  models [xl-sft]             variants to serve (short names or AIRs), one worker thread each.
  device [auto]               auto, cpu, cuda, cuda:1, ...
  dtype [auto]                auto (fp32 on CPU, bf16 on CUDA), fp32, bf16, fp16.
  download [true]             fetch missing checkpoint files from the Hugging Face Hub.
  demo [false]                the checkpoints are tiny random ones: every result is noise, and
                              the logs say so.
  planner [auto]              the 5 Hz LM planner (metadata completion, `thinking`): auto serves
                              one already complete under the checkpoints root (1.7B first, never
                              downloaded; `--demo` writes a tiny 1.7B), none serves none, 0.6B,
                              1.7B or 4B serves that one (downloaded like the DiT when missing).
  loras [<data_dir>/loras]    the adapter registry: one folder per adapter, installed by
                              `cantata lora add`; new ones are picked up without a restart.
  lora_cache_mb [2048]        device memory for loaded adapters per model (least recently used
                              ones are dropped first).
  memory [auto]               what stays on the GPU (cantata/models/speed/memory.py): high (all
                              resident), balanced (text encoder and VAE moved in for each use),
                              low (balanced + INT8 DiT weights: changes the song slightly),
                              offload (DiT blocks streamed from the CPU: the last resort); auto
                              picks the highest that fits in the free memory at load time.

Scaling out (README "Scaling out")
  role [all]                  all: API and workers in one process; api: API only (`serve
                              --no-worker`, stateless); worker: workers only (`cantata worker`).
  store [<data_dir>/cantata.db]
                              the job store: a SQLite file, or postgresql://user:pass@host/db to
                              share one store between any number of API and worker processes.
  media [<data_dir>/media]    where files live: a folder, or s3://bucket/prefix on any
                              S3-compatible service (endpoint, region and credentials from the
                              usual AWS_* variables).
  media_presign [false]       S3 only: result URLs redirect to presigned object URLs instead of
                              streaming through the API node.
  devices []                  `serve --devices cuda:0,cuda:1`: one worker process per device on
                              this machine, the serving process runs the API only.
  lease_seconds [30.0]        shared store: a worker's claim on a running task lapses after this
                              long without renewal (renewed every third of it); the task is then
                              retried elsewhere.

Authentication
  no_auth [false]             accept every request without an API key (local use only).
  api_keys_file [<data_dir>/api-keys]
                              hashed keys written by `cantata keys add NAME`.
  api_keys []                 extra keys as NAME=KEY pairs (environment use: CANTATA_API_KEYS);
                              they are hashed in memory like the file's.

Outbound calls (input audio URLs, webhooks, upload endpoints)
  allow_private_urls [false]  allow loopback/private/link-local targets (never cloud metadata).
  allowed_hosts []            host names, addresses or CIDR networks allowed even if private.
  outbound_connect_timeout [5.0]  seconds.
  outbound_total_timeout [30.0]   seconds for a whole call, redirects and body included.
  max_redirects [3]           for input audio downloads (webhooks/uploads never follow them).

Limits
  max_request_bytes [67108864]        HTTP body / WebSocket message size (413 above it).
  max_input_audio_bytes [52428800]    size of one input audio file (upload, base64 or URL).
  max_input_audio_seconds [600.0]     duration of one input audio file.
  queue_capacity [256]                queued tasks over all keys before submissions get 429.
  max_batch_size [4]                  results (numberResults summed) one DiT batch may carry.
  max_number_results [3]              numberResults cap (Runware's own is 3).
  sync_wait_timeout [100.0]           seconds a sync HTTP request waits for its results (below
                                      the 120 s HTTP timeout of Runware's CLI).
  result_ttl [604800]                 seconds results, uploads and finished tasks are kept (7
                                      days, like Runware URLs); also the largest `ttl` accepted.
  webhook_attempts [5]                tries per webhook POST / upload PUT before giving up.
  webhook_base_delay [1.0]            seconds before the first retry (exponential, jittered).
  ws_idle_timeout [120.0]             close a WebSocket after this long without traffic.
  ws_resume_window [120.0]            keep undelivered WebSocket results this long for a resume.
  shutdown_grace [30.0]               seconds a running batch may finish in at shutdown.
  sweep_interval [60.0]               seconds between sweeps of expired media and tasks.

Cost model (USD; see cantata/api/cost.py)
  cost_per_gpu_second [0.00015 for every model]   real runs: ceil(GPU seconds) x rate.
  cost_per_audio_second [xl: 0.00009, 2B: 0.00006, turbo: 0.00003]
                                                  dry-run estimate at the default steps.

Logging
  log_level [info]            debug, info, warning, error.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .limits import Limits
from .models.checkpoint import default_root
from .models.variants import VARIANTS, get_variant
from .models.vocabulary import MEMORY_CHOICES
from .outbound import OutboundPolicy

ENV_PREFIX = "CANTATA_"


class ConfigError(ValueError):
    """A configuration value is unknown or malformed; the message names the key and its source."""


ROLES = ("all", "api", "worker")


def default_data_dir() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "cantata"


def _rates(xl: float, two_b: float, turbo: float) -> dict[str, float]:
    return {name: turbo if v.turbo else xl if v.xl else two_b for name, v in VARIANTS.items()}


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    data_dir: Path = field(default_factory=default_data_dir)
    checkpoints: Path = field(default_factory=default_root)
    models: tuple[str, ...] = ("xl-sft",)
    device: str = "auto"
    dtype: str = "auto"
    download: bool = True
    demo: bool = False
    planner: str = "auto"
    loras: Path | None = None
    lora_cache_mb: int = 2048
    memory: str = "auto"

    role: str = "all"
    store: str | None = None
    media: str | None = None
    media_presign: bool = False
    devices: tuple[str, ...] = ()
    lease_seconds: float = 30.0

    no_auth: bool = False
    api_keys_file: Path | None = None
    api_keys: tuple[str, ...] = ()

    allow_private_urls: bool = False
    allowed_hosts: tuple[str, ...] = ()
    outbound_connect_timeout: float = 5.0
    outbound_total_timeout: float = 30.0
    max_redirects: int = 3

    max_request_bytes: int = 64 * 2**20
    max_input_audio_bytes: int = 50 * 2**20
    max_input_audio_seconds: float = 600.0
    queue_capacity: int = 256
    max_batch_size: int = 4
    max_number_results: int = 3
    sync_wait_timeout: float = 100.0
    result_ttl: int = 7 * 24 * 3600
    webhook_attempts: int = 5
    webhook_base_delay: float = 1.0
    ws_idle_timeout: float = 120.0
    ws_resume_window: float = 120.0
    shutdown_grace: float = 30.0
    sweep_interval: float = 60.0

    cost_per_gpu_second: Mapping[str, float] = field(default_factory=lambda: _rates(0.00015, 0.00015, 0.00015))
    cost_per_audio_second: Mapping[str, float] = field(default_factory=lambda: _rates(0.00009, 0.00006, 0.00003))

    log_level: str = "info"

    def __post_init__(self) -> None:
        # Canonical variant names, so every layer keys models the same way.
        try:
            models = tuple(dict.fromkeys(get_variant(m).name for m in self.models))
        except KeyError as exc:
            raise ConfigError(f"models: {exc.args[0]}") from None
        if not models:
            raise ConfigError("models: serve at least one model")
        object.__setattr__(self, "models", models)
        for name in ("queue_capacity", "max_batch_size", "max_number_results", "webhook_attempts",
                     "max_request_bytes", "max_input_audio_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.role not in ROLES:
            raise ConfigError(f"role: {self.role!r} is not one of {', '.join(ROLES)}")
        if self.lease_seconds < 3:
            raise ConfigError("lease_seconds must be at least 3")
        if self.devices and self.role != "all":
            raise ConfigError("devices: only `cantata serve` (role all) starts worker processes")
        if self.result_ttl < 60:
            raise ConfigError("result_ttl must be at least 60 seconds (Runware's smallest ttl)")
        if self.api_keys_file is None:
            object.__setattr__(self, "api_keys_file", self.data_dir / "api-keys")
        if self.loras is None:
            object.__setattr__(self, "loras", self.data_dir / "loras")
        from .planner.checkpoint import AUTO_PLANNER, NO_PLANNER, PLANNERS  # imports torch: not at module load

        if self.memory not in MEMORY_CHOICES:
            raise ConfigError(f"memory: {self.memory!r} is not one of {', '.join(MEMORY_CHOICES)}")

        if self.planner.lower() not in (AUTO_PLANNER, NO_PLANNER, *(n.lower() for n in PLANNERS)):
            raise ConfigError(f"planner: {self.planner!r} is not {AUTO_PLANNER}, {NO_PLANNER} or one of "
                              f"{', '.join(PLANNERS)}")

    # -- derived views, so other modules never re-derive them differently -----------------------

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "localhost" if self.host in ("", "0.0.0.0", "::") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "cantata.db"

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def store_url(self) -> str:
        """The store as given, or the SQLite file in the data directory."""
        return self.store or str(self.db_path)

    @property
    def postgres(self) -> bool:
        return self.store_url.startswith(("postgresql://", "postgres://"))

    @property
    def shared_store(self) -> bool:
        """Whether other processes may run tasks from this store: then this process claims work
        from the store under leases instead of queueing in memory (`jobs.claims`)."""
        return self.postgres or self.role != "all" or bool(self.devices)

    @property
    def runs_workers(self) -> bool:
        """Whether this process runs model workers (not an API-only node, not the parent of
        per-device worker processes)."""
        return self.role != "api" and not self.devices

    def outbound_policy(self) -> OutboundPolicy:
        return OutboundPolicy(
            allow_private=self.allow_private_urls,
            allowed_hosts=self.allowed_hosts,
            connect_timeout=self.outbound_connect_timeout,
            total_timeout=self.outbound_total_timeout,
            max_download_bytes=self.max_input_audio_bytes,
            max_redirects=self.max_redirects,
        )

    def validation_limits(self) -> Limits:
        return Limits(max_number_results=self.max_number_results, max_ttl=self.result_ttl)

    def replace(self, **changes: Any) -> "ServerConfig":
        return dataclasses.replace(self, **changes)

    def as_environment(self) -> dict[str, str]:
        """This configuration as `CANTATA_*` variables: how `serve --devices` hands its exact
        configuration to the worker processes it starts."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, tuple):
                text = ",".join(value)
            elif isinstance(value, Mapping):
                text = json.dumps(dict(value))
            else:
                text = str(value)
            env[ENV_PREFIX + f.name.upper()] = text
        return env


# -- loading ---------------------------------------------------------------------------------

_FIELDS = {f.name: f for f in fields(ServerConfig)}


def load_config(path: str | Path | None = None, *, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> ServerConfig:
    """TOML file (if any; `CANTATA_CONFIG` names one too), then the environment, then `overrides`
    (the CLI's flags; None values mean "flag not given")."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = path or env.get(f"{ENV_PREFIX}CONFIG")
    if path:
        values.update(_from_toml(Path(path)))
    values.update(_from_env(env))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"unknown configuration key(s): {', '.join(unknown)}")
    return ServerConfig(**{k: _coerce(k, v, "configuration") for k, v in values.items()})


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    flat: dict[str, Any] = {}

    def walk(table: dict, where: str) -> None:
        for key, value in table.items():
            if isinstance(value, dict) and key not in _FIELDS:
                walk(value, f"{where}{key}.")
            elif key in flat:
                raise ConfigError(f"{path}: key {key!r} is set twice")
            else:
                flat[key] = value

    walk(data, "")
    return flat


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out = {}
    for name in _FIELDS:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None:
            out[name] = _parse_text(name, raw)
    return out


def _parse_text(name: str, raw: str) -> Any:
    kind = str(_FIELDS[name].type)
    if kind.startswith("bool"):
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}: expected a boolean, got {raw!r}")
    if kind.startswith("tuple"):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if kind.startswith("Mapping"):
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{ENV_PREFIX}{name.upper()}: expected a JSON object ({exc})") from None
    return raw


def _coerce(name: str, value: Any, source: str) -> Any:
    """Turn TOML/env/flag values into the field's type, with an error that names the key."""
    kind = str(_FIELDS[name].type)
    try:
        if kind.startswith("bool"):
            if not isinstance(value, bool):
                raise TypeError("expected true or false")
            return value
        if kind.startswith("int"):
            if isinstance(value, bool):
                raise TypeError("expected an integer")
            return int(value)
        if kind.startswith("float"):
            if isinstance(value, bool):
                raise TypeError("expected a number")
            return float(value)
        if kind.startswith("Path"):
            return None if value is None else Path(value).expanduser()
        if kind.startswith("tuple"):
            items = [value] if isinstance(value, str) else list(value)
            return tuple(str(v) for v in items)
        if kind.startswith("Mapping"):
            if not isinstance(value, Mapping):
                raise TypeError("expected a table of model name -> rate")
            rates = dict(_FIELDS[name].default_factory())
            rates.update({get_variant(k).name: float(v) for k, v in value.items()})
            return rates
        return None if value is None else str(value)
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"{source} key {name!r}: {exc}") from None
