"""`cantata run` (the Runware-CLI-like client) as a subprocess against a real `cantata serve`
with API keys: HTTP and WebSocket, sync and async delivery (with progress), `key=value` typing by
field, local audio files inlined for `inputs.audio`, downloads into `--output-dir`, and errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cantata.audio.codecs import encode
from cantata.audio.decode import decode_audio
from serverkit import XL_SFT, cantata_cli, keyed_server, read_audio, server_checkpoints

pytestmark = pytest.mark.slow  # real servers and subprocesses: minutes on 2 cores

PROMPT = "positivePrompt=lo-fi hip hop, dusty drums, warm keys"
SAVED = re.compile(r"^(?P<path>\S+)  seed=(?P<seed>\d+)(?:  cost=(?P<cost>[0-9.e-]+))?$")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with keyed_server(tmp_path_factory.mktemp("cli"), server_checkpoints(tmp_path_factory), key_name="cli") as (srv, key):
        yield {"url": srv.url + "/v1", "key": key}


def run(server, *args: str, key: str | None = "default", cwd: Path | None = None, env=None):
    """`cantata run MODEL ARGS --url … [--api-key …]`; the completed process."""
    key = server["key"] if key == "default" else key
    return cantata_cli("run", XL_SFT, *args, "--url", server["url"], *(["--api-key", key] if key else []),
                       cwd=cwd, env=env)


def saved(done) -> list[tuple[Path, int, float | None]]:
    """The (file, seed, cost) lines `cantata run` prints for its downloads."""
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [SAVED.match(line) for line in done.stdout.splitlines()]
    assert lines and all(lines), done.stdout
    return [(Path(m["path"]), int(m["seed"]), float(m["cost"]) if m["cost"] else None) for m in lines]


def progress(done) -> list[int]:
    """Percentages the progress bar showed (tqdm on stderr)."""
    return [int(p) for p in re.findall(r"(\d+)/100 \[", done.stderr)]


def seconds_of(path: Path) -> float:
    info = sf.info(str(path))
    assert (info.samplerate, info.channels) == (48000, 2)
    return info.frames / info.samplerate


def test_http_async_types_values_by_field_polls_with_progress_and_downloads(server, tmp_path):
    out = tmp_path / "out"
    done = run(server, PROMPT, "duration=30", "steps=8", "seed=77", "settings.bpm=132", "settings.keyScale=D minor",
               "settings.timeSignature=4", "settings.vocalLanguage=en", "includeCost=true", "--http",
               "--poll-interval", "0.2", "--output-dir", str(out))
    # the server's validator refuses strings for bpm/duration/seed/includeCost: success means they were typed
    ((path, seed, cost),) = saved(done)
    assert path.parent == out and path.suffix == ".mp3" and seed == 77 and cost and cost > 0
    assert seconds_of(path) == pytest.approx(30, abs=0.06)
    shown = progress(done)
    assert shown[-1] == 100 and any(0 < p < 100 for p in shown), done.stderr  # polled while processing


def test_websocket_sync_and_async(server, tmp_path):
    sync = run(server, PROMPT, "duration=30", "steps=2", "numberResults=2", "outputFormat=WAV", "--ws",
               "--delivery-method", "sync", "--output-dir", str(tmp_path / "sync"))
    files = saved(sync)
    assert len(files) == 2 and len({seed for _, seed, _ in files}) == 2
    for path, _, cost in files:
        assert path.suffix == ".wav" and sf.info(str(path)).format == "WAV" and cost is None
        assert seconds_of(path) == pytest.approx(30, abs=1e-3)
    assert progress(sync)[-1] == 100

    asynchronous = run(server, PROMPT, "duration=31.5", "steps=2", "seed=5", "--ws", "--poll-interval", "0.2",
                       "--output-dir", str(tmp_path / "async"))
    ((path, seed, _),) = saved(asynchronous)
    assert seed == 5 and seconds_of(path) == pytest.approx(31.5, abs=0.06)
    assert progress(asynchronous)[-1] == 100


def test_local_audio_file_is_inlined_for_a_cover_http_sync(server, tmp_path):
    t = np.arange(2 * 48000) / 48000
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 2 * t))
    mp3 = encode(np.stack([tone, 0.6 * tone]).astype(np.float32), 48000, "MP3")
    (tmp_path / "local.mp3").write_bytes(mp3)
    done = run(server, PROMPT, "inputs.audio=./local.mp3", "steps=2", "outputFormat=WAV", "--http",
               "--delivery-method", "sync", "--output-dir", "covers", cwd=tmp_path)
    ((path, _, _),) = saved(done)
    assert path.parent == Path("covers") and path.suffix == ".wav"  # relative to the working directory
    assert progress(done)[-1] == 100
    audio, rate = read_audio((tmp_path / path).read_bytes())
    assert rate == 48000 and audio.shape[1] == 2
    assert audio.shape[0] == decode_audio(mp3).shape[1]  # the source sets the length, to the sample


def test_validation_errors_print_the_server_code_and_exit_nonzero(server):
    for transport in ("--http", "--ws"):
        done = run(server, PROMPT, "settings.bpm=999", transport)
        assert done.returncode == 1 and done.stdout == ""
        assert "error: invalidBpm:" in done.stderr and "(settings.bpm)" in done.stderr, done.stderr
    done = run(server, PROMPT, "duration=30", "inputs.audio=https://example.com/a.mp3")
    assert done.returncode == 1 and "error: conflictingParameters:" in done.stderr, done.stderr
    typo = run(server, PROMPT, "settings.bpm=fast")  # refused before anything is sent
    assert typo.returncode == 1 and "settings.bpm: 'fast' is not a valid integer" in typo.stderr


def test_api_key_is_required_when_the_server_has_auth(server):
    for transport in ("--http", "--ws"):
        missing = run(server, PROMPT, "duration=30", "steps=2", transport, key=None)
        assert missing.returncode == 1 and "error: missingApiKey:" in missing.stderr, missing.stderr
        wrong = run(server, PROMPT, "duration=30", "steps=2", transport, key="cnt_not-a-key")
        assert wrong.returncode == 1 and "error: invalidApiKey:" in wrong.stderr, wrong.stderr
    # $CANTATA_API_KEY stands in for --api-key: the request gets past auth to validation
    from_env = run(server, PROMPT, "settings.bpm=999", key=None, env={"CANTATA_API_KEY": server["key"]})
    assert from_env.returncode == 1 and "error: invalidBpm:" in from_env.stderr, from_env.stderr
