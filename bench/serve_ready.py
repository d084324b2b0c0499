"""How long the served page takes to be ready: from navigation to its first picture (a generator's
image, or a detector's boxes on its first example), in Debian's headless Chromium.

    python bench/serve_ready.py RUN [RUN ...] [--loads 5] [--chromium /usr/bin/chromium]

For each run the page is loaded `--loads` times in a fresh browser context (no cache between loads)
and `window.gfReadyMs` is read: performance.now() when the first inference has been drawn. Prints
each load and the median. Also prints the exported model's size. The figure depends on the machine
and its load: report it with both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--loads", type=int, default=5)
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--width", type=int, default=1280)
    args = p.parse_args()

    from playwright.sync_api import sync_playwright

    from ganforge.serve import make_server

    server = make_server(args.runs, port=0)
    server.start_background()
    print(f"machine: {os.cpu_count()} CPU cores, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=FLAGS)
            for i, run in enumerate(args.runs):
                size = len(_body(server, f"/run/{i}/model.onnx"))
                times = []
                for _ in range(args.loads):
                    context = browser.new_context(viewport={"width": args.width, "height": 900})
                    page = context.new_page()
                    page.goto(f"{server.url}#run={i}")
                    page.wait_for_selector("body[data-ready='1'], .error", timeout=300_000)
                    if page.locator(".error").count():
                        print(f"{run}: {page.locator('.error').inner_text()}", file=sys.stderr)
                        return 1
                    times.append(page.evaluate("window.gfReadyMs"))
                    context.close()
                print(f"{Path(run).name}: model {size / 1e6:.2f} MB; ready in "
                      + ", ".join(f"{t:.0f}" for t in times) + f" ms; median {statistics.median(times):.0f} ms")
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    return 0


def _body(server, path: str) -> bytes:
    from urllib.request import urlopen

    return urlopen(server.url + path.lstrip("/"), timeout=60).read()


if __name__ == "__main__":
    sys.exit(main())
