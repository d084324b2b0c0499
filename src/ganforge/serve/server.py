"""A small read-only web server for the page: GET and HEAD of a fixed table of files, nothing else.

Safety comes from the table, not from cleaning paths: every URL the server answers is a key of a
dict built before it starts (the page, its vendored assets, each run's exported model, example
images and figures, and the runs' JSON). A request path is looked up as it arrives, after percent
decoding; anything that is not exactly a key (``..``, ``%2e%2e%2f``, an absolute path, a folder,
any other file of a run folder) is 404. Each file in the table was checked when the table was built
to be a regular file that is not a symbolic link, inside the folder it was taken from, and its
bytes are read then, so a file swapped for a link later is never followed. POST, PUT, DELETE and
every other method are refused with 405: nothing a browser sends can write or delete anything.
On a loopback address only requests for this machine's own names (127.0.0.1, localhost, ::1 and
the port) are answered, so a web page elsewhere cannot reach it through DNS rebinding.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ganforge.errors import ConfigError, DataError
from ganforge.io import display_path

TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".json": "application/json", ".wasm": "application/wasm", ".onnx": "application/octet-stream",
         ".png": "image/png", ".gif": "image/gif", ".md": "text/plain; charset=utf-8",
         ".txt": "text/plain; charset=utf-8"}
# The page runs only its own scripts and connects only to this server (wasm needs 'wasm-unsafe-eval';
# camera frames come in as blob/mediastream).
CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; img-src 'self' data: blob:; "
       "media-src 'self' blob: mediastream:; style-src 'self'; connect-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@dataclass(frozen=True)
class Entry:
    body: bytes
    content_type: str


def safe_file(inside: Path, relative: str | Path) -> bytes:
    """The bytes of the file at `relative` in the folder `inside`: a regular file, with no `..`
    and no symbolic link on the way from `inside` to it; otherwise DataError."""
    rel = Path(relative)
    if rel.is_absolute() or not rel.parts or ".." in rel.parts:
        raise DataError(f"{relative} is not a path inside {display_path(inside)}: it will not be served")
    step = Path(inside).resolve()
    for part in rel.parts:
        step = step / part
        if step.is_symlink():
            raise DataError(f"{display_path(step)} is a symbolic link: it will not be served")
    if not step.is_file():
        raise DataError(f"{display_path(step)} is not a regular file: it will not be served")
    return step.read_bytes()


class Table:
    """URL path -> bytes and content type; the only things the server can send."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def add(self, url: str, body: bytes, suffix: str | None = None) -> None:
        if not url.startswith("/") or url in self.entries:
            raise ValueError(f"bad or repeated URL {url!r}")
        kind = TYPES.get(suffix or Path(url).suffix, "application/octet-stream")
        self.entries[url] = Entry(body, kind)

    def get(self, raw_path: str) -> Entry | None:
        path = unquote(urlsplit(raw_path).path, errors="strict")
        return self.entries.get(path)


def _handler(table: Table, quiet: bool, hosts):
    class Handler(BaseHTTPRequestHandler):
        server_version = "ganforge"
        sys_version = ""

        def _send(self, head_only: bool) -> None:
            allowed = hosts()
            if allowed is not None and self.headers.get("Host", "").lower() not in allowed:
                # another name that resolves here (DNS rebinding): a web page elsewhere must not read this one
                self.send_error(HTTPStatus.FORBIDDEN, "unknown Host")
                return
            try:
                entry = table.get(self.path)
            except UnicodeDecodeError:
                entry = None
            if entry is None:
                self.send_error(HTTPStatus.NOT_FOUND, "not served")
                return
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", entry.content_type)
            self.send_header("Content-Length", str(len(entry.body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Content-Security-Policy", CSP)
            self.end_headers()
            if not head_only:
                self.wfile.write(entry.body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._send(head_only=False)

        def do_HEAD(self) -> None:  # noqa: N802
            self._send(head_only=True)

        def _refuse(self) -> None:
            self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
            self.send_header("Allow", "GET, HEAD")
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse  # noqa: N815

        def log_message(self, format, *args) -> None:  # noqa: A002
            if not quiet:
                super().log_message(format, *args)

    return Handler


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost` (the names that never leave this machine)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung browser connection never keeps the command from exiting

    def __init__(self, table: Table, host: str = "127.0.0.1", port: int = 0, quiet: bool = True) -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        try:
            super().__init__((host, port), _handler(table, quiet, self.allowed_hosts))
        except OSError as err:
            raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror or err}): choose another --port "
                              "(0 picks a free one) or --host") from None

    def allowed_hosts(self) -> set[str] | None:
        """The Host headers answered on a loopback address (None: any, on an address others reach)."""
        host, port = self.server_address[:2]
        if not is_loopback(host):
            return None
        return {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"{host}:{port}", f"[{host}]:{port}"}

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def start_background(self) -> threading.Thread:
        """Serve from a daemon thread (tests, benchmarks); stop with `shutdown()` then `server_close()`."""
        thread = threading.Thread(target=self.serve_forever, name="ganforge-serve", daemon=True)
        thread.start()
        return thread
