"""`ganforge serve RUN [RUN ...]`: a page on 127.0.0.1 that runs the runs' exported models in the
browser (onnxruntime-web, vendored), to play with a generator's latent space, a detector's boxes or
a translator's output beside its input.

The server (server.py) is read-only and answers only a table of URLs built here:

    /, /index.html          the page
    /assets/<file>          its script and style, and onnxruntime-web (see serve_assets/VENDORED.md)
    /runs.json              what the page knows of each run (runs.py)
    /run/<i>/model.onnx     run i's exported model
    /run/<i>/example/<k>.png a detector's or translator's example images (from its held-out split)
    /run/<i>/BtoA/model.onnx, /run/<i>/BtoA/example/<k>.png
                            a CycleGAN run's other generator and its inputs (side B of the split)
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from importlib import resources
from pathlib import Path

from ganforge.errors import ConfigError
from ganforge.serve.runs import ServedRun, load_served
from ganforge.serve.server import Server, Table, is_loopback

ASSETS = "serve_assets"
PAGE = "index.html"


def asset_files() -> dict[str, bytes]:
    """The page's own files and the vendored runtime, by file name."""
    root = resources.files("ganforge") / ASSETS
    return {item.name: item.read_bytes() for item in root.iterdir()
            if item.is_file() and not item.name.startswith((".", "_"))}


def describe(runs: list[ServedRun]) -> list[dict]:
    """runs.json: one entry per run, in the order given on the command line."""
    out = []
    for i, run in enumerate(runs):
        entry = {"id": i, "name": run.run_dir.resolve().name, "task": run.task, **_model(run, f"/run/{i}/"),
                 "measured": run.measured}
        if run.reverse is not None:  # a CycleGAN run: the page offers both directions
            entry["directions"] = [{"direction": "AtoB", **_model(run, f"/run/{i}/")},
                                   {"direction": "BtoA", **_model(run.reverse, f"/run/{i}/BtoA/")}]
        out.append(entry)
    return out


def _model(run: ServedRun, prefix: str) -> dict:
    return {"model": f"{prefix}model.onnx", "layout": run.layout,
            "examples": [f"{prefix}example/{name}" for name, _ in run.examples]}


def build_table(runs: list[ServedRun]) -> Table:
    table = Table()
    assets = asset_files()
    table.add("/", assets[PAGE], ".html")
    for name, body in assets.items():
        table.add(f"/assets/{name}", body)
    table.add("/runs.json", json.dumps({"runs": describe(runs)}).encode("utf-8"))
    for i, run in enumerate(runs):
        for model, prefix in ((run, f"/run/{i}/"), (run.reverse, f"/run/{i}/BtoA/")):
            if model is None:
                continue
            table.add(f"{prefix}model.onnx", model.model_bytes)
            for name, body in model.examples:
                table.add(f"{prefix}example/{name}", body)
    return table


def make_server(run_dirs: list[str | Path], *, host: str = "127.0.0.1", port: int = 0,
                checkpoint: str | None = None, quiet: bool = True, log=print) -> Server:
    """Export (or reuse the exports of) the runs and build the server; call `serve_forever()` or
    `start_background()` on it."""
    runs = []
    for run_dir in run_dirs:
        run = load_served(run_dir, checkpoint)
        for note in run.notes:
            log(note)
        runs.append(run)
    return Server(build_table(runs), host, port, quiet=quiet)


def link_reports(run_dirs: list[str | Path], url: str | None, log=print) -> None:
    """Rewrite each run's own report.html (a page ganforge wrote) with a link to its served page, or
    without one (`url` None) when serving stops. A report that cannot be rewritten is a note."""
    from ganforge.errors import GanforgeError
    from ganforge.report import write_report
    from ganforge.report.cli import PAGE_NAME

    for i, run in enumerate(run_dirs):
        page = Path(run) / PAGE_NAME
        try:
            if page.is_symlink() or not page.is_file():
                continue
            old = page.read_text(encoding="utf-8", errors="replace")
            if '<meta name="generator" content="ganforge' not in old:
                continue  # not a page ganforge wrote: left alone
            write_report([Path(run)], live='class="live-note"' in old and "is training" in old,
                         served=f"{url}#run={i}" if url else None)
        except (GanforgeError, OSError) as err:
            log(f"note: {page} was not {'linked to the page' if url else 'restored'} ({err})")


def host_warning(host: str) -> str | None:
    """The warning printed when the page is served where other machines can reach it."""
    if is_loopback(host):
        return None
    return (f"warning: serving on {host}, which other machines can reach: the page has no authentication, "
            "so anyone who can reach it can load these models")


def cmd_serve(args: argparse.Namespace) -> int:
    host = args.host or "127.0.0.1"
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"bad value --port {args.port}: use 0 to 65535 (0 picks a free port)")
    server = make_server(args.runs, host=host, port=args.port, checkpoint=args.checkpoint, quiet=not args.verbose)
    warning = host_warning(host)
    if warning:
        print(warning, file=sys.stderr)

    def stop(signum, frame):  # SIGTERM ends it like Ctrl-C: the reports lose their link
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        link_reports(args.runs, server.url)
        print(f"serving {len(args.runs)} run{'s' if len(args.runs) != 1 else ''} at {server.url} (Ctrl-C stops)",
              flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
        link_reports(args.runs, None)
    return 0


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("serve", help="an offline page that runs trained models in the browser",
                              description="Serve a page on this machine that runs the runs' exported ONNX "
                                          "models in the browser: a generator's seeds, classes and codes, or "
                                          "a detector's boxes, or a translator's output beside its input. "
                                          "Read-only; nothing is fetched from the network.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (GAN, detector or translation)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; another address lets other "
                                  "machines reach a page that has no authentication)")
    p.add_argument("--checkpoint", help="a checkpoint name in each RUN/checkpoints (default: the latest)")
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve)
    return p
