"""The page of ``avsegformer serve`` end to end in a real headless Chromium.

Run with ``make test-browser`` (excluded from ``make test``). The browser is the system's
Chromium (``/usr/bin/chromium``, or ``$AVSEGFORMER_CHROMIUM``) driven by Playwright for
Python, whose wheel carries its driver: nothing is downloaded (never ``playwright
install``). Without Playwright or Chromium these tests skip, unless
``AVSEGFORMER_REQUIRE_BROWSER=1`` (set by ``make test-browser``) makes that a failure.

Screenshots go to ``$AVSEGFORMER_SCREENSHOTS`` (a folder) or the test's temporary folder.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from serving import Served, running_server
from videos import make_text_file, make_video

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("AVSEGFORMER_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("AVSEGFORMER_REQUIRE_BROWSER") == "1"
# No network, no first-run or background work: the browser only talks to the test server.
# Autoplay without a gesture: the test starts playback from script as well as by click.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
RESULT_TIMEOUT_MS = 180_000


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (AVSEGFORMER_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ModuleNotFoundError:
        _unavailable("playwright is not installed: pip install -e .[browser]")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with running_server(tmp_path_factory.mktemp("work"), max_upload_bytes=200 << 20) as served:
        yield served


@contextlib.contextmanager
def open_page(browser: object, served: Served) -> Iterator[object]:
    """A fresh page on ``served``'s URL, its settings loaded; fails on JavaScript errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(served.url)
    page.wait_for_selector("#model option", state="attached")  # settings from /api/config
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


@pytest.fixture()
def page(browser: object, server: Served) -> Iterator[object]:
    with open_page(browser, server) as opened:
        yield opened


def screenshot_path(tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("AVSEGFORMER_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


PLAYBACK = """async (id) => {
    const video = document.getElementById(id);
    const start = video.currentTime;
    await new Promise((resolve) => setTimeout(resolve, 1500));
    return {
        start,
        now: video.currentTime,
        paused: video.paused,
        error: video.error && video.error.message,
        audioBytes: video.webkitAudioDecodedByteCount,
        audioTracks: video.captureStream().getAudioTracks().length,
        width: video.videoWidth,
    };
}"""

# The loudest sample the page's audio output carries while the overlay plays its tone
# (Web Audio analyser between the <video> and the speakers).
LOUDNESS = """async (id) => {
    const video = document.getElementById(id);
    const context = new AudioContext();
    const source = context.createMediaElementSource(video);
    const analyser = context.createAnalyser();
    source.connect(analyser);
    analyser.connect(context.destination);
    await context.resume();
    video.currentTime = 1.0;
    video.muted = false;
    await video.play();
    const samples = new Float32Array(analyser.fftSize);
    let peak = 0;
    for (let i = 0; i < 40; i++) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        analyser.getFloatTimeDomainData(samples);
        for (const v of samples) peak = Math.max(peak, Math.abs(v));
    }
    video.pause();
    return {peak, state: context.state};
}"""


SEEK = """async (t) => {
    const videos = [...document.querySelectorAll("video")];
    const seeked = videos.map(
        (v) => new Promise((done) => v.addEventListener("seeked", done, {once: true}))
    );
    seek(t);
    await Promise.all(seeked);
}"""


def test_upload_a_clip_and_watch_the_overlay_play_with_its_sound(
    page: object, server: Served, tmp_path: Path
) -> None:
    clip = make_video(tmp_path / "street.mp4", seconds=2.0, size=(320, 240))
    page.fill("#fps", "2")
    page.set_input_files("#file", str(clip))
    page.wait_for_selector("#result:not([hidden])", timeout=RESULT_TIMEOUT_MS)

    # 2 s at 2 samples per second: 4 masks, each loaded.
    page.wait_for_function(
        "() => [...document.querySelectorAll('#strip img')].every(i => i.complete)"
    )
    widths = page.eval_on_selector_all("#strip img", "imgs => imgs.map(i => i.naturalWidth)")
    assert widths == [320, 320, 320, 320]
    captions = page.eval_on_selector_all("#strip figcaption", "c => c.map(e => e.textContent)")
    assert [c.split(" ")[0] for c in captions] == ["0.44", "0.96", "1.44", "1.96"]
    assert page.text_content("#result-title") == "street.mp4, with its own sound"
    assert page.locator("#plot polyline").count() == 1

    # Play both (a click, as a person would): the overlay plays, with sound.
    page.click("#play-both")
    overlay = page.evaluate(PLAYBACK, "overlay")
    assert overlay["error"] is None and overlay["width"] == 320
    assert overlay["now"] > overlay["start"] + 0.3, overlay  # currentTime advances
    assert overlay["audioBytes"] > 0, overlay  # sound was decoded...
    assert overlay["audioTracks"] == 1, overlay  # ...from its audio track
    original = page.evaluate(PLAYBACK, "original")
    assert original["now"] > original["start"] + 0.3, original
    # What comes out is the clip's sound: its 440 Hz tone (amplitude 0.5) from 1 s on.
    heard = page.evaluate(LOUDNESS, "overlay")
    assert heard["state"] == "running" and heard["peak"] > 0.2, heard

    # The download links point at files the server serves.
    for link in ("#dl-zip", "#dl-summary", "#dl-overlay"):
        href = page.get_attribute(link, "href")
        assert server.request("GET", href)[0] == 200, href

    path = screenshot_path(tmp_path, "serve-upload.png")
    page.evaluate("() => { for (const v of document.querySelectorAll('video')) v.pause(); }")
    page.screenshot(path=str(path), full_page=True)
    with Image.open(path) as image:
        assert image.size[0] == 1280 and image.size[1] > 900


def test_demo_clip_then_rerun_with_the_sound_silenced(
    page: object, server: Served, tmp_path: Path
) -> None:
    page.click("#demo")
    page.wait_for_selector("#result:not([hidden])", timeout=RESULT_TIMEOUT_MS)
    assert page.locator("#strip img").count() == 8  # the 8-s demo clip at 1 per second
    assert page.text_content("#left-caption") == "Original"
    page.evaluate(SEEK, 3.1)  # both videos at a moment where the ring sounds
    page.screenshot(path=str(screenshot_path(tmp_path, "serve-demo.png")), full_page=True)

    page.check("input[name=audio][value=silence]")
    page.click("#rerun")
    page.wait_for_function(
        "() => document.getElementById('result-title').textContent.includes('silenced')",
        timeout=RESULT_TIMEOUT_MS,
    )
    page.wait_for_selector("#result:not([hidden])")
    assert page.text_content("#left-caption") == "Overlay with its own sound"
    assert page.text_content("#right-caption") == "Overlay with the sound silenced"
    legend = page.eval_on_selector_all("#legend span", "s => s.map(e => e.textContent)")
    assert legend == ["with its own sound", "sounding area"]
    assert page.locator("#strip img").count() == 8
    page.screenshot(path=str(screenshot_path(tmp_path, "serve-rerun.png")), full_page=True)
    heard = page.evaluate(LOUDNESS, "overlay")  # the silenced overlay: silence comes out
    assert heard["state"] == "running" and heard["peak"] < 1e-3, heard


def test_the_page_explains_refused_files(browser: object, tmp_path: Path) -> None:
    with (
        running_server(tmp_path / "work", max_upload_bytes=3_000_000) as small,
        open_page(browser, small) as page,
    ):
        notes = make_text_file(tmp_path / "notes.txt")
        page.set_input_files("#file", str(notes))
        page.wait_for_selector("#message:not([hidden])")
        assert "notes.txt: not a video file" in page.text_content("#message")

        big = tmp_path / "holiday.mp4"
        with open(big, "wb") as file:
            file.truncate(4_000_000)  # over this server's 3 MB: refused before the upload
        page.set_input_files("#file", str(big))
        page.wait_for_function(
            "() => document.getElementById('message').textContent.includes('limited to')"
        )
        message = page.text_content("#message")
        assert message.startswith("holiday.mp4 is 4.0 MB: uploads are limited to 2.9 MB")
        assert page.is_hidden("#status")
        assert small.job_folders() == []


def test_an_avss_model_plots_each_class(browser: object, tmp_path: Path) -> None:
    import torch

    from avsegformer import build_model
    from avsegformer.checkpoint import save_checkpoint
    from avsegformer.serve.models import model_choices

    torch.manual_seed(0)
    weights = save_checkpoint(
        build_model("tiny_avss"), tmp_path / "avss.safetensors", config="tiny_avss"
    )
    clip = make_video(tmp_path / "band.mp4", seconds=2.0, size=(320, 240))
    with (
        running_server(tmp_path / "work", choices=model_choices([weights])) as served,
        open_page(browser, served) as page,
    ):
        page.set_input_files("#file", str(clip))
        page.wait_for_selector("#result:not([hidden])", timeout=RESULT_TIMEOUT_MS)
        legend = page.eval_on_selector_all("#legend span", "s => s.map(e => e.textContent)")
        assert legend[0] == "all sounding classes" and len(legend) >= 2
        assert page.locator("#plot polyline").count() == len(legend)  # a line per class
        assert page.locator("#strip img").count() == 2
        page.screenshot(path=str(screenshot_path(tmp_path, "serve-avss.png")), full_page=True)
