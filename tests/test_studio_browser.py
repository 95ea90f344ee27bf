"""Cantata Studio in a real browser: Playwright (PyPI `playwright`) driving Debian's Chromium
against the server with the tiny demo checkpoints. Compose and generate, reload, the server's
errors next to their fields, cancel, presets, and the API-key prompt.

Skipped with the reason when Playwright or /usr/bin/chromium is missing, a failure under CI
(`.ci/run` installs both). Screenshots of the main states go to the test's tmp folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cantata.api.auth import add_key
from serverkit import config, server_checkpoints, uvicorn_server
from unavailable import unavailable

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
WAIT_MS = 90_000  # one generation on a loaded 2-core machine


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright is not installed (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return server_checkpoints(tmp_path_factory, ("xl-sft",))


@pytest.fixture(scope="module")
def studio(tmp_path_factory, root):
    cfg = config(tmp_path_factory.mktemp("studio"), root, models=("xl-sft",))
    with uvicorn_server(cfg) as (url, _app):
        yield url


@pytest.fixture
def page(browser, studio):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    errors = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(studio + "/")
    opened.wait_for_selector("body[data-ready=true]")
    yield opened
    context.close()
    assert not errors, errors


def shot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)


def compose(page, caption: str, *, seed: int, steps: int = 2, duration: float = 30) -> None:
    page.fill("#positivePrompt", caption)
    page.click("[data-tag='[Verse]']")
    page.keyboard.type("city lights are calling me")
    page.fill("#duration", str(duration))
    page.click("#advanced summary")
    page.fill("#steps", str(steps))
    page.fill("#seed", str(seed))
    page.check("#seedLock")


def newest_take(page):
    return page.locator(".task").first


def wait_done(take, status: str = "done") -> None:
    take.locator(f".task-status:text-is('{status}')").wait_for(timeout=WAIT_MS)


def audio_duration(take) -> float:
    audio = take.locator(".result audio").first
    audio.evaluate("a => a.readyState >= 1 || new Promise(r => a.addEventListener('loadedmetadata', r))")
    return audio.evaluate("a => a.duration")


def test_compose_generate_then_reload_keeps_settings_and_history(page, tmp_path):
    compose(page, "dusty lo-fi piano, vinyl crackle", seed=1234)
    assert page.input_value("#lyrics") == "[Verse]\ncity lights are calling me"
    page.keyboard.press("Control+Enter")
    take = newest_take(page)
    wait_done(take)
    assert take.locator(".result-meta").inner_text().startswith("seed 1234 ")
    assert audio_duration(take) == pytest.approx(30, abs=0.1)
    assert take.locator(".result-download").get_attribute("href").endswith(".mp3")
    shot(page, tmp_path, "studio-result")

    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.input_value("#positivePrompt") == "dusty lo-fi piano, vinyl crackle"
    assert page.input_value("#steps") == "2" and page.input_value("#seed") == "1234"
    from_history = page.locator(".task", has_text="dusty lo-fi piano").first
    assert from_history.locator(".result-meta").inner_text().startswith("seed 1234 ")
    shot(page, tmp_path, "studio-reloaded")


def test_the_servers_error_is_shown_next_to_its_field(page, tmp_path):
    compose(page, "anything", seed=5)
    page.fill("#bpm", "999")
    page.click("#generate")
    note = page.locator("#bpm-error")
    note.wait_for()
    assert note.get_attribute("data-code") == "invalidBpm"
    assert "settings.bpm" in note.inner_text()
    assert page.get_attribute("#bpm", "aria-invalid") == "true"
    shot(page, tmp_path, "studio-error")


def test_cancel_a_running_task(page):
    compose(page, "a very long drone", seed=9, steps=300, duration=300)
    page.click("#generate")
    take = newest_take(page)
    take.locator(".task-status:text-matches('queued|running')").wait_for()
    take.locator(".task-cancel").click()
    wait_done(take, "cancelled")
    assert "cancelled" in take.locator(".task-error").inner_text()


def test_a_picked_file_is_uploaded_and_becomes_the_repaint_source(page, tmp_path):
    rate = 48000
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(8 * rate) / rate)
    source = tmp_path / "source.wav"
    sf.write(source, np.stack([tone, tone], axis=1), rate)
    page.set_input_files("#source-file", str(source))
    page.wait_for_selector("#source-panel:not([hidden])")
    media_uuid = page.input_value("#sourceAudio")
    assert len(media_uuid) == 36 and media_uuid in page.inner_text("#source-name")
    assert (page.input_value("#repaintingStart"), page.input_value("#repaintingEnd")) == ("2.0", "4.0")
    assert page.is_disabled("#duration")  # the source sets the length
    page.click("#source-clear")
    assert not page.is_visible("#source-panel") and page.is_enabled("#duration")


def test_phone_width_in_dark_mode_fits_and_follows_the_system(browser, studio, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark")
    page = context.new_page()
    page.goto(studio + "/")
    page.wait_for_selector("body[data-ready=true]")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert sum(int(c) for c in background[background.index("(") + 1:-1].split(",")[:3]) < 3 * 64, background
    page.keyboard.press("Tab")  # the first stop is a control of the page, in reading order
    assert page.evaluate("document.activeElement.id") == "model"
    shot(page, tmp_path, "studio-phone-dark")
    context.close()


def test_presets_save_load_and_delete(page):
    page.fill("#positivePrompt", "preset caption")
    page.fill("#preset-name", "mine")
    page.click("#preset-save")
    page.fill("#positivePrompt", "something else")
    page.select_option("#preset-list", "mine")
    page.click("#preset-load")
    assert page.input_value("#positivePrompt") == "preset caption"
    page.click("#preset-delete")
    assert page.locator("#preset-list option").count() == 0


def test_with_auth_on_a_wrong_key_is_refused_and_a_right_one_kept(browser, root, tmp_path_factory, tmp_path):
    keys = tmp_path_factory.mktemp("studio-keys") / "api-keys"
    key = add_key(keys, "alice")
    cfg = config(tmp_path_factory.mktemp("studio-auth"), root, models=("xl-sft",), no_auth=False, api_keys_file=keys)
    with uvicorn_server(cfg) as (url, _app):
        context = browser.new_context()
        page = context.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#key-dialog[open]")
        page.fill("#api-key", "not-a-key")
        page.click("#key-submit")
        page.wait_for_selector("#key-error:text-matches('refused')")
        shot(page, tmp_path, "studio-wrong-key")
        page.fill("#api-key", key)
        page.click("#key-submit")
        page.wait_for_selector("body[data-ready=true]")
        assert page.locator("#model option").count() == 1
        page.reload()
        page.wait_for_selector("body[data-ready=true]")  # the key was kept: no prompt this time
        assert not page.is_visible("#key-dialog")
        context.close()
