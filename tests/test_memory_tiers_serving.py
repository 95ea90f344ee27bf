"""`--memory` reaches the served pipelines: the server loads each model in the configured tier
and says which (with the DiT's speed switches) in `/ready`; an unknown tier is a config error."""

from __future__ import annotations

import pytest

from cantata.config import ConfigError, load_config
from serverkit import app_client, config, post, task


def test_the_configured_tier_is_served_and_reported(tmp_path, tiny_root):
    with app_client(config(tmp_path, tiny_root, memory="balanced")) as client:
        ready = client.get("/ready").json()
        assert ready["memory"] == {"xl-sft": "balanced"}
        assert ready["speed"]["xl-sft"].startswith("attention=dense ")  # the CPU default: the parity path
        r = post(client, [task(outputFormat="WAV", duration=30, steps=2)])
        assert r.status_code == 200 and r.json()["data"][0]["status"] == "success"


def test_auto_keeps_everything_resident_on_a_cpu_and_unknown_tiers_are_refused(tmp_path, tiny_root):
    with app_client(config(tmp_path, tiny_root)) as client:
        assert client.get("/ready").json()["memory"] == {"xl-sft": "high"}
    with pytest.raises(ConfigError, match="memory: 'medium' is not one of auto, high, balanced, low, offload"):
        load_config(env={"CANTATA_MEMORY": "medium"})
