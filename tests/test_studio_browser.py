"""Cantata Studio in a real browser: Playwright (PyPI `playwright`) driving Debian's Chromium
against `cantata serve --demo` as a subprocess (the tiny checkpoints; no planner). Compose and
generate two takes and compare them, reload, restart the server, select a region on a source's
waveform and repaint it, each audio-to-audio mode's request, the server's errors next to their
fields, queue and cancel, presets, the API-key prompt, a phone width in dark mode.

Skipped with the reason when Playwright or /usr/bin/chromium is missing, a failure under CI
(`.ci/run` installs both). Screenshots of the main states go to each test's tmp folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cantata.api.auth import add_key
from serverkit import XL_BASE, XL_SFT, ServerProcess, config, free_port, server_checkpoints, uvicorn_server
from unavailable import unavailable

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]
WAIT_MS = 120_000  # one generation on a loaded 2-core machine
SOURCE_SECONDS = 2  # the VAE encoder of the tiny checkpoints runs ~8 s per source second on 2 loaded cores


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
    return server_checkpoints(tmp_path_factory, ("xl-sft", "xl-base"))


@pytest.fixture(scope="module")
def studio(tmp_path_factory, root):
    """`cantata serve --demo` in its own process, so a test can stop it and start it again."""
    server = ServerProcess(root, tmp_path_factory.mktemp("studio") / "data", free_port(), "--demo",
                           "--model", "xl-sft", "--model", "xl-base").start()
    yield server
    server.stop()


@pytest.fixture
def page(browser, studio):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    errors = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(studio.url + "/")
    opened.wait_for_selector("body[data-ready=true]")
    yield opened
    context.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def source_file(tmp_path_factory) -> Path:
    rate = 48000
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(SOURCE_SECONDS * rate) / rate)
    path = tmp_path_factory.mktemp("audio") / "source.wav"
    sf.write(path, np.stack([tone, tone], axis=1), rate)
    return path


def shot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)


def compose(page, caption: str, *, seed: int, steps: int = 2, duration: float = 30, results: int = 1) -> None:
    page.fill("#positivePrompt", caption)
    page.click("[data-tag='[Verse]']")
    page.keyboard.type("city lights are calling me")
    page.fill("#duration", str(duration))
    page.click("#advanced summary")
    page.fill("#steps", str(steps))
    page.fill("#numberResults", str(results))
    page.fill("#seed", str(seed))
    page.check("#seedLock")


def newest_take(page):
    """The take at the top of the list now (pinned by its taskUUID: newer ones go above it)."""
    return page.locator(f".task[data-task='{page.locator('.task').first.get_attribute('data-task')}']")


def wait_state(take, state: str = "done") -> None:
    take.locator(f"xpath=self::*[@data-state='{state}']").wait_for(timeout=WAIT_MS)


def drawn_results(take):
    """The take's results once their waveforms are drawn (drawn when scrolled into view)."""
    take.scroll_into_view_if_needed()
    results = take.locator(".result")
    for i in range(results.count()):
        results.nth(i).scroll_into_view_if_needed()
        results.nth(i).locator("xpath=self::*[@data-ready='true']").wait_for(timeout=30_000)
    return results


def audio_of(result):
    return result.locator("audio")


def is_dark(page) -> bool:
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    return sum(int(c) for c in background[background.index("(") + 1:-1].split(",")[:3]) < 3 * 64


def drag_across(page, selector: str, start: float, end: float) -> None:
    """Press the mouse at `start` (a fraction of the element's width) and release it at `end`."""
    box = page.locator(selector).bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * start, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * end, y, steps=10)
    page.mouse.up()


def test_compose_two_takes_compare_them_then_reload_and_restart_keep_everything(page, studio, tmp_path):
    compose(page, "dusty lo-fi piano, vinyl crackle", seed=1234, results=2)
    assert page.input_value("#lyrics") == "[Verse]\ncity lights are calling me"
    assert not is_dark(page)  # the system's light scheme
    page.keyboard.press("Control+Enter")
    take = newest_take(page)
    wait_state(take)
    first, second = (drawn_results(take).nth(i) for i in range(2))
    assert first.locator(".result-meta").inner_text().startswith("seed 1234 ")
    assert second.locator(".result-meta").inner_text().startswith("seed 1235 ")  # seed + i, as Runware
    for result in (first, second):
        assert audio_of(result).evaluate("a => a.duration") == pytest.approx(30, abs=0.1)
        assert result.locator(".result-download").get_attribute("href").endswith(".mp3")

    wave = first.locator(".wave")  # the player, by keyboard: Space plays and pauses, arrows seek
    wave.focus()
    page.keyboard.press("Space")
    audio_of(first).evaluate("a => !a.paused || new Promise(r => a.addEventListener('playing', r, {once: true}))")
    assert first.locator(".result-play").inner_text() == "Pause"
    page.keyboard.press("Space")
    assert audio_of(first).evaluate("a => a.paused")
    before = audio_of(first).evaluate("a => a.currentTime")
    page.keyboard.press("ArrowRight")
    assert audio_of(first).evaluate("a => a.currentTime") == pytest.approx(before + 1, abs=0.05)

    first.locator(".result-a").click()  # A/B: the switch plays the other take from the same place
    second.locator(".result-b").click()
    assert page.inner_text("#ab-a") == "A: seed 1234" and page.inner_text("#ab-b") == "B: seed 1235"
    first.locator(".result-play").click()
    page.click("#ab-switch")
    assert page.inner_text("#ab-now") == "playing B"
    assert audio_of(first).evaluate("a => a.paused") and not audio_of(second).evaluate("a => a.paused")
    assert audio_of(second).evaluate("a => a.currentTime") >= 1
    second.locator(".result-play").click()
    shot(page, tmp_path, "studio-result")

    task_uuid = take.get_attribute("data-task")

    def settings_and_history_are_there():
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        assert page.input_value("#positivePrompt") == "dusty lo-fi piano, vinyl crackle"
        assert page.input_value("#steps") == "2" and page.input_value("#seed") == "1234"
        kept = page.locator(f".task[data-task='{task_uuid}']")
        seeds = [m.inner_text().split(" · ")[0] for m in kept.locator(".result-meta").all()]
        assert seeds == ["seed 1234", "seed 1235"]
        assert audio_of(drawn_results(kept).first).evaluate("a => a.duration") == pytest.approx(30, abs=0.1)

    settings_and_history_are_there()
    assert page.inner_text("#connection") == "connected (WebSocket)"
    studio.stop()  # a real restart: a new process on the same data directory
    page.wait_for_function("document.getElementById('connection').textContent === 'connected (HTTP)'")
    studio.start()  # the page opens a new socket by itself, without a reload
    page.wait_for_function("document.getElementById('connection').textContent === 'connected (WebSocket)'",
                           timeout=30_000)
    settings_and_history_are_there()
    shot(page, tmp_path, "studio-after-restart")


def test_select_a_region_on_the_source_and_repaint_it_keeps_the_length(page, source_file, tmp_path):
    compose(page, "a guitar solo", seed=77)
    page.set_input_files("#source-file", str(source_file))
    page.wait_for_selector("#source-wave[data-ready=true]")
    assert page.is_disabled("#duration")  # the source sets the length
    drag_across(page, "#source-wave", 0.5, 0.75)
    assert (page.input_value("#repaintingStart"), page.input_value("#repaintingEnd")) == ("1.0", "1.5")
    page.click("#generate")
    take = newest_take(page)
    wait_state(take)
    assert take.locator(".task-kind").inner_text() == "repaint"
    result = drawn_results(take).first
    assert result.locator(".result-meta").inner_text().startswith("seed 77 ")
    assert audio_of(result).evaluate("a => a.duration") == pytest.approx(SOURCE_SECONDS, abs=0.05)
    shot(page, tmp_path, "studio-repaint")

    result.locator(".result-repaint").click()  # the new take becomes the source, its region kept
    page.wait_for_selector("#source-wave[data-ready=true]")
    assert page.inner_text("#source-name") == "Source: take with seed 77"
    assert page.input_value("#sourceAudio") == result.get_attribute("data-audio")


def test_each_audio_to_audio_mode_makes_its_request(page, source_file):
    page.set_input_files("#source-file", str(source_file))
    page.wait_for_selector("#source-wave[data-ready=true]")
    media_uuid = page.input_value("#sourceAudio")
    assert len(media_uuid) == 36 and page.inner_text("#source-name") == "Source: source.wav"
    assert (page.input_value("#repaintingStart"), page.input_value("#repaintingEnd")) == ("0.5", "1.0")
    modes = page.locator("#sourceMode option:not([disabled])")
    assert modes.evaluate_all("os => os.map(o => o.value)") == ["repaint", "outpaint", "cover"]  # XL SFT: no stems
    page.click("#request-preview summary")

    def settings() -> dict:
        task = json_task(page)
        assert task["inputs"] == {"audio": media_uuid} and "duration" not in task
        return task["settings"]

    assert settings() == {"repaintingStart": 0.5, "repaintingEnd": 1.0}
    page.select_option("#sourceMode", "outpaint")
    page.select_option("#outpaintSide", "before")
    page.fill("#outpaintSeconds", "3")
    assert settings() == {"repaintingStart": -3, "repaintingEnd": 0}
    page.select_option("#outpaintSide", "after")
    assert settings() == {"repaintingStart": SOURCE_SECONDS, "repaintingEnd": SOURCE_SECONDS + 3}
    page.select_option("#sourceMode", "cover")
    page.fill("#strength", "0.4")
    page.fill("#coverConditioningScale", "0.5")
    assert settings() == {"coverConditioningScale": 0.5} and json_task(page)["strength"] == 0.4

    page.select_option("#model", XL_BASE)  # a base model: its schema offers the stem tasks
    page.locator("#sourceMode option[value=extract]:not([disabled])").wait_for(state="attached")
    assert modes.evaluate_all("os => os.map(o => o.value)") == ["repaint", "outpaint", "cover", "extract", "lego",
                                                               "complete"]
    page.select_option("#sourceMode", "extract")
    page.select_option("#trackName", "vocals")
    assert settings() == {"task": "extract", "trackName": "vocals"}
    page.select_option("#sourceMode", "lego")  # lego adds its stem in the region
    assert settings() == {"task": "lego", "trackName": "vocals", "repaintingStart": 0.5, "repaintingEnd": 1.0}
    page.select_option("#sourceMode", "complete")
    page.select_option("#trackClasses", ["drums", "bass"])
    assert settings() == {"task": "complete", "trackClasses": ["bass", "drums"]}
    page.select_option("#model", XL_SFT)  # back to a model without them: repaint again
    page.locator("#sourceMode option[value=extract][disabled]").wait_for(state="attached")
    assert page.input_value("#sourceMode") == "repaint"

    page.click("#source-clear")
    assert not page.is_visible("#source-panel") and page.is_enabled("#duration")
    assert "inputs" not in json_task(page) and json_task(page)["duration"] == 30


def json_task(page) -> dict:
    """The audioInference task the form would send, as the page shows it."""
    (task,) = json.loads(page.inner_text("#request-json"))
    return task


def test_the_servers_error_is_shown_next_to_its_field(page, tmp_path):
    compose(page, "anything", seed=5)
    page.fill("#bpm", "999")
    page.click("#generate")
    note = page.locator("#bpm-error")
    note.wait_for()
    assert note.get_attribute("data-code") == "invalidBpm"
    assert "settings.bpm" in note.inner_text()
    assert page.get_attribute("#bpm", "aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "bpm"  # focus goes to the field to fix
    shot(page, tmp_path, "studio-error")


def test_queued_behind_a_running_take_then_both_cancelled(page, tmp_path):
    compose(page, "a very long drone", seed=9, steps=300, duration=300)
    page.click("#generate")
    running = newest_take(page)
    running.locator("xpath=self::*[@data-state='running']").wait_for(timeout=WAIT_MS)
    page.click("#generate")
    queued = newest_take(page)
    queued.locator("xpath=self::*[@data-state='queued']").wait_for(timeout=WAIT_MS)
    queued.locator(".task-status:text-matches('^queued · next in line')").wait_for()
    shot(page, tmp_path, "studio-queue")
    for take in (queued, running):
        take.locator(".task-cancel").click()
        wait_state(take, "cancelled")
        assert "cancelled" in take.locator(".task-error").inner_text()


def test_phone_width_in_dark_mode_fits_with_labels_and_keyboard_order(browser, studio, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark")
    page = context.new_page()
    page.goto(studio.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    assert is_dark(page)
    unlabeled = page.evaluate("""[...document.querySelectorAll('input, select, textarea, button')]
        .filter(el => el.type !== 'hidden' && !el.closest('[hidden], template'))
        .filter(el => !(el.labels?.length || el.getAttribute('aria-label') || el.textContent.trim()))
        .map(el => el.id || el.outerHTML.slice(0, 60))""")
    assert unlabeled == []  # every control has a name a screen reader can say
    stops = []
    for _ in range(4):  # the first stops follow the reading order of the form
        page.keyboard.press("Tab")
        stops.append(page.evaluate("document.activeElement.id || document.activeElement.textContent"))
    assert stops == ["model", "positivePrompt", "instrumental", "[Intro]"]
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
