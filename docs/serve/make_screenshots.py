"""The screenshots of docs/SERVE.md: `ganforge serve`'s page for the given run folders, in Debian's
headless Chromium at desktop (1280 px) and phone (390 px) widths.

    python docs/serve/make_screenshots.py RUN [RUN ...] [--out docs/serve] [--chromium /usr/bin/chromium]

Each run gives serve-<run folder name>-desktop.png and -phone.png (the page as it opens; a
detector's confidence slider set to --conf first); a generator also -grid.png (grid mode, desktop)
and a CycleGAN run -btoa-desktop.png and -btoa-phone.png (its other direction). The pages are served on 127.0.0.1 and any request for
another host is refused. The PNGs are cut below the page's end and stored with at most 256
colours, so each stays well under 200 KB; a file that does not is reported.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from urllib.parse import urlsplit

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTHS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
LIMIT = 200_000  # bytes per PNG
MAX_HEIGHT = 2400  # px of a full-page shot kept (a phone's page is long)


def small_png(raw: bytes) -> bytes:
    """A screenshot with at most 256 colours (the page is flat colours and small pictures), without
    the blank window below the page's end, and at most MAX_HEIGHT tall."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as img:
        img = img.convert("RGB")
        rows = np.flatnonzero((np.asarray(img.convert("L")) < 250).any(axis=1))
        bottom = min(img.height, MAX_HEIGHT, int(rows[-1]) + 24 if rows.size else img.height)
        img = img.crop((0, 0, img.width, bottom))
        out = io.BytesIO()
        img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            out, format="PNG", optimize=True)
    return out.getvalue()


class Page:
    """One page load at one width; requests for anything but the server are refused and kept."""

    def __init__(self, browser, url: str, viewport: dict, hash_: str) -> None:
        self.origin = urlsplit(url).netloc
        self.outside: list[str] = []
        self.context = browser.new_context(viewport=viewport)
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.goto(url + hash_)
        self.page.wait_for_selector("body[data-ready='1'], .error", timeout=300_000)
        if self.page.locator(".error").count():
            raise SystemExit(f"the page says: {self.page.locator('.error').inner_text()}")

    def _route(self, route) -> None:
        url = route.request.url
        if urlsplit(url).netloc == self.origin or url.startswith("data:"):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def click(self, selector: str) -> None:
        self.page.click(selector)
        self.page.evaluate("() => window.gfIdle()")

    def set(self, selector: str, value) -> None:
        """Move a slider as a person would, then wait for the page's inference."""
        self.page.evaluate("([s, v]) => { const e = document.querySelector(s); e.value = v; "
                           "e.dispatchEvent(new Event('input')); }", [selector, str(value)])
        self.page.evaluate("() => window.gfIdle()")

    def shot(self, path: Path) -> None:
        width = self.page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        if width[0] > width[1]:
            print(f"warning: {path.name}: the page is {width[0]} px wide in a {width[1]} px window", file=sys.stderr)
        body = small_png(self.page.screenshot(full_page=True))
        path.write_bytes(body)
        note = "" if len(body) < LIMIT else f" (over {LIMIT // 1000} KB)"
        print(f"wrote {path} ({len(body) / 1000:.0f} KB){note}")

    def close(self) -> None:
        if self.outside:
            raise SystemExit(f"the page asked for other hosts: {self.outside}")
        self.context.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent), help="folder for the PNGs")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--conf", type=float, help="a detector's confidence threshold for the shots (default: the run's)")
    args = p.parse_args()

    from playwright.sync_api import sync_playwright

    from ganforge.serve import make_server

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    server = make_server(args.runs, port=0)
    server.start_background()
    try:
        runs = server_runs(server)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=FLAGS)
            for run in runs:
                name, hash_ = run["name"], f"#run={run['id']}"
                for label, viewport in WIDTHS.items():
                    page = Page(browser, server.url, viewport, hash_)
                    if run["task"] == "detect" and args.conf is not None:
                        page.set(f"#det-conf-{run['id']}", args.conf)
                    page.shot(out / f"serve-{name}-{label}.png")
                    if run["task"] == "gan" and label == "desktop":
                        page.click(f"#gan-grid-toggle-{run['id']}")
                        page.shot(out / f"serve-{name}-grid.png")
                    if run.get("directions"):
                        page.click(f"#tr-dir-{run['id']}-BtoA")
                        page.shot(out / f"serve-{name}-btoa-{label}.png")
                    page.close()
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    return 0


def server_runs(server) -> list[dict]:
    import json
    from urllib.request import urlopen

    return json.loads(urlopen(server.url + "runs.json", timeout=60).read())["runs"]


if __name__ == "__main__":
    sys.exit(main())
