"""The report in a real headless Chromium (Debian's package), with the network blocked."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from ganforge.io import MetricsLog
from ganforge.report import write_report

CHROMIUM = next((p for p in (os.environ.get("GANFORGE_CHROMIUM"), "/usr/bin/chromium",
                             shutil.which("chromium"), shutil.which("chromium-browser")) if p and
                 Path(p).is_file()), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (Debian: apt-get install chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


class Visit:
    """One page load with the network off: every request outside the page's folder is refused and
    recorded, and so is every console error."""

    def __init__(self, browser, page_path: Path, viewport: dict) -> None:
        self.folder = page_path.parent.resolve()
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.context = browser.new_context(viewport=viewport, offline=True)
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(page_path.resolve().as_uri())
        self.page.wait_for_load_state("load")

    def _route(self, route) -> None:
        url = route.request.url
        parsed = urlparse(url)
        local = Path(unquote(parsed.path)).resolve() if parsed.scheme == "file" else None
        if url.startswith("data:") or (local is not None and local.is_relative_to(self.folder)):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def shot(self, path: Path) -> Path:
        self.page.screenshot(path=str(path), full_page=True)
        return path


def _not_blank(path: Path, viewport: dict) -> None:
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert img.shape[1] == viewport["width"] and img.shape[0] > viewport["height"], img.shape
    inked = (img < 200).mean()  # text, pictures, chart lines
    assert inked > 0.03 and img.std() > 20, (inked, img.std())
    rows = (img < 200).any(axis=1)
    assert rows[: viewport["height"]].mean() > 0.3, "the first screen is mostly empty"


def _with_events(run: Path) -> Path:
    with MetricsLog(run / "metrics.jsonl") as log:
        log.event(25, "resumed")
        log.warning(45, "the fixed-latent grid is 12% as diverse as real data: possible mode collapse")
    return run


def test_report_in_headless_chromium(browser, gan_run, tmp_path):
    page_path = write_report([_with_events(gan_run)])
    v = Visit(browser, page_path, DESKTOP)
    page = v.page

    # every sample grid and the GIF load from beside the page
    img = page.locator("#r0-samples-frame img")
    assert page.evaluate("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    last_src = img.get_attribute("src")
    assert last_src == "samples/step_000060.png"

    # the slider scrubs through training: keys and buttons change the grid shown
    slider = page.locator("#r0-samples-range")
    slider.focus()
    page.keyboard.press("Home")
    assert img.get_attribute("src") == "samples/step_000001.png"
    assert page.locator("#r0-samples-cap").inner_text().startswith("step 1 ")
    page.keyboard.press("ArrowRight")
    assert img.get_attribute("src") == "samples/step_000020.png"
    page.get_by_role("button", name="later").first.click()
    assert img.get_attribute("src") == "samples/step_000040.png"
    # the new frame decodes asynchronously: wait for it (bounded by the test timeout), never for a time
    page.wait_for_function("() => { const i = document.querySelector('#r0-samples-frame img'); "
                           "return i.complete && i.naturalWidth > 0; }")

    # the curves are drawn, and hovering shows the values at a step and the events there
    assert page.locator(".chart canvas").count() == 5
    over = page.locator("#chart-r0-losses .u-over")
    box = over.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    values = page.locator("#chart-r0-losses .u-legend .u-value").all_inner_texts()
    assert values[0].isdigit() and all(v not in ("—", "") for v in values[1:]), values
    at_cursor = ""
    for i in range(201):  # sweep across the chart until the cursor meets the marker at step 45
        page.mouse.move(box["x"] + box["width"] * i / 200, box["y"] + box["height"] * 0.5)
        at_cursor = page.locator("#chart-r0-losses-at").inner_text()
        if "collapse alarm" in at_cursor:
            break
    assert at_cursor.startswith("step 45: collapse alarm"), at_cursor

    desktop = v.shot(tmp_path / "report-desktop.png")
    _not_blank(desktop, DESKTOP)
    assert not v.errors, v.errors
    assert not v.outside, v.outside

    # a phone: one column, nothing wider than the screen
    p = Visit(browser, page_path, PHONE)
    width = p.page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], width
    phone = p.shot(tmp_path / "report-phone.png")
    _not_blank(phone, PHONE)
    assert not p.errors and not p.outside, (p.errors, p.outside)

    # printing keeps the pictures and curves, and drops the controls
    p.page.emulate_media(media="print")
    assert p.page.locator(".controls").first.is_hidden()
    assert p.page.locator("#r0-samples-frame img").is_visible()


def test_compare_page_in_headless_chromium(browser, gan_run, stopped_run, tmp_path):
    page_path = write_report([gan_run, stopped_run], tmp_path / "out" / "compare.html")
    v = Visit(browser, page_path, DESKTOP)
    assert v.page.evaluate("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    before = v.page.locator("#r0-samples-frame img").get_attribute("src")
    v.page.locator("#r0-samples-range").focus()
    v.page.keyboard.press("Home")
    assert v.page.locator("#r0-samples-frame img").get_attribute("src") != before
    assert v.page.locator(".finals img").count() == 2
    _not_blank(v.shot(tmp_path / "compare-desktop.png"), DESKTOP)
    assert not v.errors and not v.outside, (v.errors, v.outside)


def test_live_page_reloads_and_keeps_the_slider(browser, gan_run, monkeypatch):
    from ganforge.report import render

    monkeypatch.setattr(render, "REFRESH_SECONDS", 1)
    v = Visit(browser, write_report([gan_run], live=True), DESKTOP)
    assert "training" in v.page.locator(".live-note").inner_text()
    v.page.locator("#r0-samples-range").focus()
    v.page.keyboard.press("Home")
    with v.page.expect_navigation(timeout=10_000):
        pass  # the page reloads itself
    v.page.wait_for_load_state("load")
    assert v.page.locator("#r0-samples-frame img").get_attribute("src") == "samples/step_000001.png"
    assert v.page.locator("#r0-samples-range").input_value() == "0"
    assert not v.errors and not v.outside, (v.errors, v.outside)


def test_protocol_cards_give_long_keys_their_width(browser, gan_run):
    metrics = {"fid": "Frechet distance between Gaussians fitted to the two feature sets " * 2,
               "precision_recall": "improved precision and recall, k=3 nearest-neighbour manifolds " * 2}
    (gan_run / "eval.json").write_text(json.dumps({"fid": 12.5, "protocol": {
        "checkpoint_step": 60, "feature_test_accuracy": 0.99, "metrics": metrics}}))
    for viewport in (DESKTOP, PHONE):
        v = Visit(browser, write_report([gan_run]), viewport)
        keys = v.page.evaluate("""() => [...document.querySelectorAll('#r0-eval dl.nested dt')].map(d => {
            const text = document.createRange();
            text.selectNodeContents(d);
            return [d.textContent, d.getBoundingClientRect().width, text.getClientRects().length,
                    d.scrollWidth <= d.clientWidth + 1]; })""")
        # every key on one line, as wide as its text (a squeezed column broke them every 3 letters)
        assert [k[0] for k in keys] == ["fid", "precision_recall"], keys
        assert all(k[2] == 1 and k[3] for k in keys), keys
        assert keys[1][1] > 80, keys
