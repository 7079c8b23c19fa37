"""End to end in a browser: `soundalike web` in a subprocess, the page driven in headless Chromium.

Uses Debian's Chromium (``scripts/bootstrap.sh`` installs it) through Playwright; Playwright's
own browser download is never used. A missing Chromium fails the test: it is part of the
set-up, not optional.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import requests
import soundfile as sf

from soundalike.audio import load_audio

pytestmark = pytest.mark.slow
CONF = Path(__file__).resolve().parents[1] / "conf" / "local.yaml"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--autoplay-policy=no-user-gesture-required"]


def chromium_path() -> str:
    path = os.environ.get("SOUNDALIKE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("Chromium not found: run scripts/bootstrap.sh (apt-get install chromium) or set SOUNDALIKE_CHROMIUM")
    return path


@contextlib.contextmanager
def serve_page(m, log_dir: Path, model_uri: str | None = None):
    """`python -m soundalike web` over ``model_uri`` (default: the registered model), on a free port; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = log_dir / "server.log"
    command = [sys.executable, "-m", "soundalike", "web", "--conf", str(CONF), "--port", str(port)]
    command += [x for o in m.overrides for x in ("--set", o)]
    command += ["--model", model_uri] if model_uri else []
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                info = json.loads(urllib.request.urlopen(f"{base}/api/info", timeout=2).read())
                break
            except OSError:
                assert server.poll() is None, f"soundalike web exited:\n{log_path.read_text()}"
                assert time.time() < deadline, f"soundalike web did not start:\n{log_path.read_text()}"
                time.sleep(0.5)
        assert info["backend"] == "local" and info["model"] == (model_uri or m.uri)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def web_server(registered_search_model, tmp_path_factory):
    """The page over the registered model (clip index only: no landmark matches)."""
    with serve_page(registered_search_model, tmp_path_factory.mktemp("web")) as base:
        yield base


@pytest.fixture(scope="module")
def fingerprinted_web_server(fingerprinted_search_model, tmp_path_factory):
    """The page over the model whose index has its landmark fingerprints (``match``, ``identified``)."""
    m = fingerprinted_search_model
    with serve_page(m, tmp_path_factory.mktemp("web_fp"), model_uri=m.uri) as base:
        yield base


@contextlib.contextmanager
def open_page(base: str):
    """A headless Chromium page on ``base``, once the page has loaded /api/info."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(base)
            expect(page.locator("body[data-ready=true]")).to_be_attached()
            yield page
        finally:
            browser.close()


def search_file(page, path: Path) -> None:
    """Upload ``path`` and wait until the page shows this query's answer."""
    from playwright.sync_api import expect

    page.set_input_files("#file-input", str(path))
    expect(page.locator("#drop-text")).to_contain_text(path.name)
    page.evaluate("() => { document.getElementById('status').textContent = ''; }")  # no answer seen yet
    page.click("#search-button")
    expect(page.locator("#status")).to_contain_text("songs in", timeout=120_000)
    expect(page.locator("#error")).to_be_hidden()


def test_upload_shows_ranked_songs_with_playable_clips_and_a_comparison(registered_search_model, web_server, tmp_path):
    from playwright.sync_api import expect

    m = registered_search_model
    source = m.meta[0]
    # The generated track: a 25 s excerpt of a catalogue track from off the clip grid, as WAV.
    upload = tmp_path / "excerpt.wav"
    sf.write(upload, load_audio(m.root / source.file, 44100, offset_s=3.7, duration_s=25.0), 44100)
    not_audio = tmp_path / "notes.mp3"
    not_audio.write_text("these are notes, not music")
    screenshot = tmp_path / "web_results.png"

    with open_page(web_server) as page:
        expect(page.locator("#model-info")).to_contain_text(m.uri)
        expect(page.locator("#text-form")).to_be_hidden()  # mel has no text tower

        # Progress feedback: record what the status line and the button do while the query runs.
        page.evaluate("""() => {
            window.seen = [];
            new MutationObserver(() => window.seen.push([document.getElementById('status').textContent,
                                                          document.getElementById('search-button').disabled]))
                .observe(document.getElementById('status'), {childList: true, characterData: true, subtree: true});
        }""")
        search_file(page, upload)
        songs = page.locator("#results li.song")
        expect(songs.first).to_be_visible()
        seen = page.evaluate("window.seen")
        assert any(("Uploading" in text or "Searching" in text) and disabled for text, disabled in seen), seen
        expect(page.locator("#search-button")).to_be_enabled()

        first = songs.first
        expect(first.locator(".rank")).to_have_text("1")
        expect(first.locator(".title")).to_have_text(source.title)
        expect(first.locator(".file")).to_have_text(source.file)
        expect(first.locator(".combined")).to_have_text("1.000")
        # No fingerprint index behind this model: no landmark match, so nothing about one.
        expect(page.locator("#identified")).to_be_hidden()
        expect(page.locator("#results .landmark")).to_have_count(songs.count())
        expect(page.locator("#results .landmark:visible")).to_have_count(0)
        assert int(first.locator(".votes").inner_text()) >= 1
        assert float(first.locator(".total").inner_text()) > 0
        assert 1 <= songs.count() <= 10

        # Matched clips: the input clip and the catalogue clip, each in a player, with the distance.
        row = first.locator("tr.match").first
        expect(row).to_be_visible()
        assert 0 <= float(row.locator(".distance").inner_text()) < 1
        clip = row.locator("audio.clip-audio")
        assert "/api/clips/" in clip.get_attribute("src")
        with page.expect_response(lambda r: "/api/clips/" in r.url) as clip_response:
            clip.evaluate("a => { a.muted = true; return a.play(); }")
        assert clip_response.value.status == 200 and clip_response.value.headers["content-type"] == "audio/wav"
        page.wait_for_function("a => a.readyState >= 2 && a.currentTime > 0", arg=clip.element_handle(),
                               timeout=30_000)
        assert clip.evaluate("a => a.duration") == pytest.approx(10.0, abs=0.01)
        mine = row.locator("audio.query-audio")
        assert mine.get_attribute("src").startswith("blob:")
        mine.evaluate("a => { a.muted = true; return a.play(); }")
        page.wait_for_function("a => a.readyState >= 2", arg=mine.element_handle(), timeout=30_000)
        assert mine.evaluate("a => a.duration") == pytest.approx(25.0, abs=0.05)

        # The compare view: this match's two clips, their spectrograms and similarity curve.
        row.locator("button.compare-button").click()
        expect(page.locator("#compare-result")).to_be_visible(timeout=60_000)
        expect(page.locator("#compare-summary")).to_contain_text("mean cosine")
        page.wait_for_function("() => document.getElementById('compare-plot').naturalWidth === 1300")
        page.screenshot(path=str(screenshot), full_page=True)
        print(f"\nscreenshot: {screenshot}")

        # A file that is not audio: a clear message, no results from it.
        page.set_input_files("#file-input", str(not_audio))
        page.click("#search-button")
        expect(page.locator("#error")).to_be_visible(timeout=60_000)
        expect(page.locator("#error")).to_contain_text("cannot decode")
        expect(page.locator("#search-button")).to_be_enabled()
        # The previous answer is gone: beside the error it would read as this file's results.
        expect(page.locator("#results-section")).to_be_hidden()
        expect(page.locator("#results li.song")).to_have_count(0)
    assert screenshot.stat().st_size > 50_000


def phone_excerpt(m, i: int, offset_s: float, duration_s: float, path: Path) -> Path:
    """``duration_s`` of catalogue track ``i`` from ``offset_s``, at 8 kHz like a phone recording, as WAV."""
    sf.write(path, load_audio(m.root / m.meta[i].file, 8000, offset_s=offset_s, duration_s=duration_s), 8000)
    return path


def clock_seconds(text: str) -> int:
    """``"1:07"`` → 67."""
    minutes, seconds = text.split(":")
    return 60 * int(minutes) + int(seconds)


def test_excerpt_is_identified_with_its_song_and_where_it_was_cut(fingerprinted_search_model,
                                                                   fingerprinted_web_server, tmp_path):
    from playwright.sync_api import expect

    m = fingerprinted_search_model
    source, cut_s = m.meta[2], 12.4
    upload = phone_excerpt(m, 2, cut_s, 15.0, tmp_path / "phone_clip.wav")
    screenshot = tmp_path / "web_identified.png"

    with open_page(fingerprinted_web_server) as page:
        search_file(page, upload)
        banner = page.locator("#identified")
        expect(banner).to_be_visible()
        expect(page.locator("#identified-title")).to_have_text(source.title)
        expect(banner).to_contain_text("excerpt found at")
        shown = page.locator("#identified-offset")
        assert abs(clock_seconds(shown.inner_text()) - cut_s) <= 1, shown.inner_text()
        assert float(shown.get_attribute("data-offset-s")) == pytest.approx(cut_s, abs=0.25)
        expect(page.locator("#identified-speed")).to_have_text("")  # cut at its own speed
        assert page.evaluate("[0, 59.6, 125.4, -3.2].map(minSec)") == ["0:00", "1:00", "2:05", "−0:03"]
        # Speed factors off the default 1 % grid (fingerprint.speed_factors) never read "0 % fast".
        assert page.evaluate("[1, 1.03, 0.97, 1.005].map(speedText)") == [
            "", " · speed ×1.03 (the excerpt plays 3 % fast)", " · speed ×0.97 (the excerpt plays 3 % slow)",
            " · speed ×1.005 (the excerpt plays 0.5 % fast)"]
        # The banner sits above the ranked list, whose first song is the identified one.
        assert banner.bounding_box()["y"] < page.locator("#results").bounding_box()["y"]

        first = page.locator("#results li.song").first
        expect(first).to_have_class("song identified-song")
        expect(first.locator(".title")).to_have_text(source.title)
        landmark = first.locator(".landmark")
        expect(landmark).to_be_visible()
        expect(landmark.locator(".badge")).to_have_text("confident")
        assert abs(clock_seconds(landmark.locator(".offset").inner_text()) - cut_s) <= 1

        # Both players start the catalogue song where the excerpt lies in it.
        for audio in (banner.locator("audio.offset-audio"), landmark.locator("audio.offset-audio")):
            src = audio.get_attribute("src")
            assert src.startswith("/api/clips/") and float(src.split("start_s=")[1]) == pytest.approx(cut_s, abs=0.25)
        with page.expect_response(lambda r: "/api/clips/" in r.url) as clip_response:
            banner.locator("audio").evaluate("a => { a.muted = true; return a.play(); }")
        assert clip_response.value.status == 200 and clip_response.value.headers["content-type"] == "audio/wav"

        text = page.locator("#results-section").inner_text()
        assert not any(word in text for word in ("undefined", "null", "NaN")), text
        page.screenshot(path=str(screenshot), full_page=True)
        print(f"\nscreenshot: {screenshot}")

        # The same excerpt played 3 % fast (a tape or a pitch-shifting player): the banner says so.
        fast = tmp_path / "phone_clip_fast.wav"
        sf.write(fast, sf.read(upload, dtype="float32")[0], 8240)
        search_file(page, fast)
        expect(page.locator("#identified-title")).to_have_text(source.title)
        expect(page.locator("#identified-speed")).to_contain_text("speed ×1.03 (the excerpt plays 3 % fast)")
        assert abs(clock_seconds(shown.inner_text()) - cut_s) <= 1, shown.inner_text()

        # A song found by its landmarks alone (no clip of it among the nearest clips, as when the
        # phone band hides it from the vectors): the server's answer with that song's clip
        # matches taken out. Its row shows the landmark match and no empty "0 of 0" clip table.
        with open(upload, "rb") as f:
            answer = requests.post(f"{fingerprinted_web_server}/api/search", files={"file": f}, timeout=120).json()
        for song in answer["results"]:
            if song["track_id"] == answer["identified"]["track_id"]:
                song.update(evidence=[], votes=0, total_similarity=0.0)
        page.evaluate("answer => showResults(answer, null)", answer)
        row = page.locator("#results li.identified-song")
        expect(row.locator(".landmark .badge")).to_have_text("confident")
        expect(row.locator("details")).to_be_hidden()
        expect(page.locator("#results li.song:not(.identified-song) details").first).to_be_visible()


def test_unrelated_audio_shows_no_identification(fingerprinted_search_model, fingerprinted_web_server, tmp_path):
    from playwright.sync_api import expect

    from conftest import melody

    m = fingerprinted_search_model
    excerpt = phone_excerpt(m, 2, 12.4, 15.0, tmp_path / "phone_clip.wav")
    unrelated = tmp_path / "unrelated.wav"
    sf.write(unrelated, melody(22050, 20.0, seed=1234), 22050)

    with open_page(fingerprinted_web_server) as page:
        search_file(page, excerpt)
        expect(page.locator("#identified")).to_be_visible()

        # The next query, of audio in no catalogue song, leaves no trace of the last identification.
        search_file(page, unrelated)
        expect(page.locator("#results li.song").first).to_be_visible()
        expect(page.locator("#identified")).to_be_hidden()
        expect(page.locator("#results li.identified-song")).to_have_count(0)
        expect(page.locator("#results .landmark.confident")).to_have_count(0)
        text = page.locator("#results-section").inner_text()
        assert "excerpt found" not in text
        assert not any(word in text for word in ("undefined", "null", "NaN")), text
