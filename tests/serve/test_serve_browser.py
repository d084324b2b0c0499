"""The served page in a real headless Chromium (Debian's package): the page's pictures, boxes and
translations equal ONNX Runtime's, `detect predict`'s and `translate apply`'s in Python, and it asks
nothing of any other host."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from ganforge.serve.latents import page_inputs, to_pixels

CHROMIUM = next((p for p in (os.environ.get("GANFORGE_CHROMIUM"), "/usr/bin/chromium",
                             shutil.which("chromium"), shutil.which("chromium-browser")) if p and
                 Path(p).is_file()), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (Debian: apt-get install chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
SEEDS = [0, 1, 7, 2024, 4294967295]
POSITIONS = [0.0, 0.5, 1.0]
READY_MS = 120_000  # a generous wait for a loaded machine; the time itself is reported, not asserted


@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    b = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
    yield b
    b.close()


class Visit:
    """The page of `server` at `viewport`: every request is logged, any that is not for the server
    is refused, and console errors are kept."""

    def __init__(self, browser, server, viewport: dict, hash_: str = "") -> None:
        self.origin = urlsplit(server.url).netloc
        self.requests: list[str] = []
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.context = browser.new_context(viewport=viewport)
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(server.url + hash_)
        self.page.wait_for_selector("body[data-ready='1'], .error", timeout=READY_MS)
        assert not self.page.locator(".error").count(), self.page.locator(".error").inner_text()
        self.ready_ms = self.page.evaluate("window.gfReadyMs")
        print(f"page ready in {self.ready_ms:.0f} ms ({viewport['width']} px wide)")

    def _route(self, route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme == "http" and parts.netloc == self.origin and parts.hostname == "127.0.0.1":
            route.continue_()
        elif url.startswith("data:"):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def set(self, selector: str, value) -> None:
        """Set an input's value as a person would, then wait for the page's inference to finish."""
        self.page.evaluate("([s, v]) => { const e = document.querySelector(s); e.value = v; "
                           "e.dispatchEvent(new Event(e.tagName === 'SELECT' ? 'change' : 'input')); }",
                           [selector, str(value)])
        self.idle()

    def idle(self) -> None:
        self.page.evaluate("() => window.gfIdle()")

    def pixels(self, canvas_id: str) -> np.ndarray:
        h, w, flat = self.page.evaluate("id => { const c = document.getElementById(id); return [c.height, c.width, "
                                        "Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)]; }",
                                        canvas_id)
        return np.array(flat, dtype=np.uint8).reshape(h, w, 4)

    def check_clean(self) -> None:
        assert not self.errors, self.errors
        assert not self.outside, self.outside
        assert all(urlsplit(u).hostname == "127.0.0.1" for u in self.requests if not u.startswith("data:")), \
            self.requests

    def close(self) -> None:
        self.context.close()


def _session(server):
    import onnxruntime as ort

    body = urllib.request.urlopen(server.url + "run/0/model.onnx", timeout=60).read()
    runs = json.loads(urllib.request.urlopen(server.url + "runs.json", timeout=60).read())["runs"]
    return ort.InferenceSession(body, providers=["CPUExecutionProvider"]), runs[0]["layout"]


def _python_image(sess, layout, **kwargs) -> np.ndarray:
    feeds = page_inputs(layout, **kwargs)
    names = [i.name for i in sess.get_inputs()]
    out = sess.run(None, {k: v for k, v in feeds.items() if k in names})[0]
    return to_pixels(out, layout["pixel_range"])[0].transpose(1, 2, 0)  # H x W x C


def _assert_same(page_rgba: np.ndarray, python_hwc: np.ndarray, what: str) -> None:
    rgb = page_rgba[..., :3].astype(int)
    ref = np.repeat(python_hwc, 3, axis=2) if python_hwc.shape[2] == 1 else python_hwc
    diff = np.abs(rgb - ref.astype(int)).max()
    assert diff <= 2, f"{what}: the page's pixels differ from ONNX Runtime's by {diff}/255"
    assert (page_rgba[..., 3] == 255).all()


def _not_blank(path: Path, viewport: dict) -> None:
    from PIL import Image

    img = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert img.shape[1] == viewport["width"], img.shape
    assert (img < 200).mean() > 0.03 and img.std() > 20, ((img < 200).mean(), img.std())
    rows = (img < 200).any(axis=1)
    assert rows[: viewport["height"]].mean() > 0.3, "the first screen is mostly empty"


def _shots(browser, server, tmp_path: Path, name: str, hash_: str = "") -> None:
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        v = Visit(browser, server, viewport, hash_)
        width = v.page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], (label, width)  # nothing wider than the screen
        path = tmp_path / f"serve-{name}-{label}.png"
        v.page.screenshot(path=str(path), full_page=True)
        _not_blank(path, viewport)
        if os.environ.get("GANFORGE_SHOTS"):  # keep them to look at
            shutil.copy(path, Path(os.environ["GANFORGE_SHOTS"]) / path.name)
        v.check_clean()
        v.close()


def test_generator_page_equals_onnx_runtime(browser, serve_runs, serving, tmp_path):
    with serving(serve_runs["gan"]) as server:
        sess, layout = _session(server)
        v = Visit(browser, server, DESKTOP)
        seen = []
        for seed in SEEDS:
            towards = (seed + 1) % 2**32
            v.set("#gan-seedA-0", seed)
            v.set("#gan-seedB-0", towards)
            for t in POSITIONS:
                v.set("#gan-t-0", t)
                page = v.pixels("gan-canvas-0")
                _assert_same(page, _python_image(sess, layout, seed_a=seed, seed_b=towards, t=t), f"seed {seed} t {t}")
                seen.append(page[..., 0])
        assert len({s.tobytes() for s in seen}) >= 10  # different seeds and positions are different pictures
        v.check_clean()
        v.close()
        _shots(browser, server, tmp_path, "gan")


def test_class_and_codes_labelled_with_what_eval_measured(browser, serve_runs, serving, tmp_path):
    run = Path(shutil.copytree(serve_runs["info"], tmp_path / "info"))
    measured = {"infogan": {"categorical": {"agreement": 0.91, "matching": {str(i): (i + 3) % 10 for i in range(10)}},
                            "continuous": {"codes": {"c1": {"slant": 0.8, "width": 0.1},
                                                     "c2": {"slant": -0.05, "width": 0.62}},
                                           "slant_code": "c1", "width_code": "c2"}}}
    (run / "eval.json").write_text(json.dumps(measured))
    with serving(run) as server:
        sess, layout = _session(server)
        v = Visit(browser, server, DESKTOP)
        labels = v.page.locator(".code-label").all_inner_texts()
        assert labels[0].startswith("cat: digit class") and "agreement 91.0%" in labels[0], labels
        assert labels[1].startswith("c1: slant") and "ρ +0.80 with slant" in labels[1], labels
        assert labels[2].startswith("c2: stroke width") and "+0.62 with width" in labels[2], labels
        v.set("#gan-seedA-0", 5)
        v.set("#gan-class-0", 7)
        v.set("#gan-code-cat-0", 3)
        assert "→ class 6" in v.page.locator("output[for='gan-code-cat-0']").inner_text()
        v.set("#gan-code-c1-0", 1.5)
        v.set("#gan-code-c2-0", -0.75)
        _assert_same(v.pixels("gan-canvas-0"), _python_image(sess, layout, seed_a=5, label=7, category=3,
                                                             continuous=[1.5, -0.75]), "class and codes")
        # the grid sweeps c1 across each row, one seed per row
        v.set("#gan-sweep-0", "c1")
        v.page.click("#gan-grid-toggle-0")
        v.idle()
        grid = v.pixels("gan-grid-0")
        size = layout["image_size"]
        assert grid.shape[:2] == (4 * size, 9 * size)
        _assert_same(grid[size:2 * size, :size], _python_image(sess, layout, seed_a=6, label=7, category=3,
                                                               continuous=[-2.0, -0.75]), "grid row 1, column 0")
        v.check_clean()
        v.close()
        _shots(browser, server, tmp_path, "infogan")


def _fixture_images(server, folder: Path) -> list[Path]:
    """Two of the run's served examples (its val split) and a larger photo that is not square."""
    from PIL import Image
    from skimage import data

    folder.mkdir()
    paths = []
    for i in range(2):
        path = folder / f"example{i}.png"
        path.write_bytes(urllib.request.urlopen(f"{server.url}run/0/example/{i}.png", timeout=60).read())
        paths.append(path)
    photo = folder / "coffee.png"
    Image.fromarray(data.coffee()).resize((300, 200)).save(photo)
    return paths + [photo]


def test_detector_page_boxes_equal_detect_predict(browser, serve_runs, serving, tmp_path):
    from ganforge.cli import main as ganforge_main

    conf = 0.01  # a detector trained for a few steps scores low
    with serving(serve_runs["det"]) as server:
        images = _fixture_images(server, tmp_path / "images")
        assert ganforge_main(["detect", "predict", str(serve_runs["det"]), "--source", str(tmp_path / "images"),
                              "--out", str(tmp_path / "pred"), "--conf", str(conf)]) == 0
        v = Visit(browser, server, DESKTOP)
        assert v.page.locator("#det-camera-0").count() == 0  # no camera in this browser: no live mode
        v.set("#det-conf-0", conf)
        compared = 0
        for i, path in enumerate(images):
            if i < 2:
                v.page.click(f"#det-example-0-{i}")
            else:
                v.page.set_input_files("#det-file-0", str(path))
            v.idle()
            page = v.page.evaluate("() => window.gfDetections[0]")
            assert v.page.locator("#det-info-0").inner_text().endswith(_size(path)), path
            truth = json.loads((tmp_path / "pred" / f"{path.stem}.json").read_text())["detections"]
            assert len(page) == len(truth), (path.name, len(page), len(truth))
            for p, t in zip(page, truth):
                assert p["label"] == t["class"] and p["name"] == t["name"], (p, t)
                assert abs(p["score"] - t["score"]) < 1e-3, (p, t)
                assert np.abs(np.array(p["box"]) - np.array(t["box_xyxy"])).max() < 0.5, (p, t)
            compared += len(page)
        assert compared > 0, "no boxes to compare: lower `conf`"
        v.check_clean()
        v.close()
        _shots(browser, server, tmp_path, "detector")


def _size(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as img:
        return f"{img.width}×{img.height}"


def test_translator_page_equals_translate_apply(browser, serve_runs, serving, tmp_path):
    """A held-out example (square, grey) and an odd-sized colour photo, whose luminance the grey-input
    generator reads: the page's translation (padded to the multiple, cropped back, grey in and colour
    out) equals `translate apply`'s output file."""
    from PIL import Image
    from skimage import data

    from ganforge.cli import main as ganforge_main

    with serving(serve_runs["p2p"]) as server:
        folder = tmp_path / "images"
        folder.mkdir()
        example = folder / "example0.png"
        example.write_bytes(urllib.request.urlopen(f"{server.url}run/0/example/0.png", timeout=60).read())
        photo = folder / "coffee.png"
        Image.fromarray(data.coffee()).resize((45, 29)).save(photo)  # neither side a multiple of 32
        assert ganforge_main(["translate", "apply", str(serve_runs["p2p"]), "--source", str(folder),
                              "--out", str(tmp_path / "out")]) == 0
        v = Visit(browser, server, DESKTOP)
        layout = v.page.evaluate("() => fetch('/runs.json').then(r => r.json()).then(j => j.runs[0].layout)")
        assert (layout["in_channels"], layout["out_channels"], layout["multiple"]) == (1, 3, 32), layout
        for path, pick in ((example, lambda: v.page.click("#tr-example-0-0")),
                           (photo, lambda: v.page.set_input_files("#tr-file-0", str(path)))):
            pick()
            size = _size(path)
            v.page.wait_for_function("s => document.getElementById('tr-info-0').textContent.startsWith(s)", arg=size,
                                     timeout=READY_MS)
            v.idle()
            with Image.open(path) as img:
                grey = np.asarray(img.convert("L"))
            truth = np.asarray(Image.open(tmp_path / "out" / path.name).convert("RGB"))
            assert truth.std() > 4, (path.name, truth.std())  # a picture, not the untrained flat grey
            page = v.pixels("tr-output-0")
            assert page.shape[:2] == truth.shape[:2] == grey.shape, (path.name, page.shape, truth.shape)
            _assert_same(page, truth, f"translation of {path.name}")
            print(f"{path.name}: the page's translation is within {np.abs(page[..., :3].astype(int) - truth).max()}/255 "
                  "of translate apply's")
            if os.environ.get("GANFORGE_SHOTS"):
                v.page.screenshot(path=str(Path(os.environ["GANFORGE_SHOTS"]) / f"serve-translator-{path.stem}.png"))
            _assert_same(v.pixels("tr-input-0"), grey[..., None], f"input of {path.name} as the model reads it")
        v.check_clean()
        v.close()
        _shots(browser, server, tmp_path, "translator")


def test_cyclegan_page_switches_to_the_other_generator(browser, serve_runs, serving, tmp_path):
    """A CycleGAN run's page offers both directions: B → A shows side B's held-out examples, and its
    translation of one equals `translate apply RUN --direction BtoA`'s file (colour in, grey out)."""
    from PIL import Image

    from ganforge.cli import main as ganforge_main

    run = serve_runs["cyc"]
    with serving(run) as server:
        folder = tmp_path / "images"
        folder.mkdir()
        example = folder / "b0.png"
        example.write_bytes(urllib.request.urlopen(f"{server.url}run/0/BtoA/example/0.png", timeout=60).read())
        assert ganforge_main(["translate", "apply", str(run), "--direction", "BtoA", "--source", str(folder),
                              "--out", str(tmp_path / "out")]) == 0
        v = Visit(browser, server, DESKTOP)
        assert v.page.get_attribute("#tr-dir-0-AtoB", "aria-pressed") == "true"
        a_example = v.page.get_attribute("#tr-example-0-0 img", "src")
        v.page.click("#tr-dir-0-BtoA")
        v.idle()
        assert v.page.get_attribute("#tr-dir-0-BtoA", "aria-pressed") == "true"
        assert v.page.get_attribute("#tr-dir-0-AtoB", "aria-pressed") == "false"
        assert a_example == "/run/0/example/0.png"
        assert v.page.get_attribute("#tr-example-0-0 img", "src") == "/run/0/BtoA/example/0.png"
        v.page.click("#tr-example-0-1")  # another example, then back: the page follows the clicks
        v.idle()
        v.page.click("#tr-example-0-0")
        v.idle()
        assert "colour in, grey out" in v.page.locator("#tr-info-0").inner_text()
        truth = np.asarray(Image.open(tmp_path / "out" / example.name).convert("RGB"))
        assert truth.std() > 4, truth.std()  # a picture, not the untrained flat grey
        page = v.pixels("tr-output-0")
        assert page.shape[:2] == truth.shape[:2], (page.shape, truth.shape)
        _assert_same(page, truth, "B → A translation of a held-out B example")
        print(f"B to A: the page's translation is within {np.abs(page[..., :3].astype(int) - truth).max()}/255 "
              "of translate apply --direction BtoA's")
        with Image.open(example) as img:
            _assert_same(v.pixels("tr-input-0"), np.asarray(img.convert("RGB")), "the B input as the model reads it")
        v.page.click("#tr-dir-0-AtoB")  # and back to A → B, with side A's examples
        v.idle()
        assert v.page.get_attribute("#tr-example-0-0 img", "src") == "/run/0/example/0.png"
        assert "grey in, colour out" in v.page.locator("#tr-info-0").inner_text()
        v.check_clean()
        v.close()
        _shots(browser, server, tmp_path, "cyclegan")


def test_detector_live_camera_mode_with_a_fake_camera(playwright, serve_runs, serving):
    """Chromium's fake capture device stands in for a camera: the live mode detects frame after
    frame and shows its frames per second; without a camera there is no camera button."""
    fake = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
    with serving(serve_runs["det"]) as server:
        b = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS + fake)
        try:
            v = Visit(b, server, DESKTOP)
            v.page.click("#det-camera-0")
            v.page.wait_for_selector(".fps:has-text('frames/s')", timeout=READY_MS)
            assert isinstance(v.page.evaluate("() => window.gfDetections[0]"), list)  # the last frame's boxes
            info = v.page.locator("#det-info-0").inner_text()
            assert info.endswith("640×480"), info  # the fake camera's frames, not the example image
            v.page.click("#det-camera-0")  # stop
            v.check_clean()
            v.close()
        finally:
            b.close()
