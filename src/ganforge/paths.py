"""Where ganforge keeps downloaded data, decoded caches and feature networks, and what happens when
it cannot keep them.

The caches (decoded folders, feature networks, metric statistics) are optional: a cache that cannot
be written (a full disk, a read-only folder) costs time, never a run. The first failed write in a
process prints one warning, and the work goes on uncached. Cache files are written atomically
(:func:`ganforge.io.atomic_writer`), so a failed write leaves no temporary file behind.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from safetensors import SafetensorError

from ganforge.io import atomic_writer, display_path, first_line

CACHE_ENV = "GANFORGE_CACHE"
# What a cache write can raise: the OS's errors, safetensors' own (it wraps ENOSPC), and a path that
# a library refuses to encode (safetensors takes UTF-8 paths only).
CACHE_ERRORS = (OSError, UnicodeError, SafetensorError)

_said: set[str] = set()  # one-time notes and warnings already printed by this process


def _say_once(key: str, message: str) -> None:
    if key not in _said:
        _said.add(key)
        print(message, file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """Root cache directory: $GANFORGE_CACHE, else $XDG_CACHE_HOME/ganforge, else ~/.cache/ganforge.

    An unset, empty, relative or root ("/") HOME would put the cache in /.cache: then the account's
    own home folder from the password database is used if it is writable, else a private folder in
    the system's temporary directory, and a note (once per process) says where."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec says to ignore a relative value
        return Path(xdg) / "ganforge"
    home = os.environ.get("HOME")
    if _usable_home(home):
        return Path(home) / ".cache" / "ganforge"
    fallback = _fallback_cache()
    state = "unset" if home is None else "empty" if not home else f"{display_path(home)!r}"
    _say_once("home", f"note: HOME is {state}, so ganforge keeps its cache in {display_path(fallback)}; "
                      f"set {CACHE_ENV} to choose another folder")
    return fallback


def _usable_home(home: str | None) -> bool:
    return bool(home) and os.path.isabs(home) and home.strip("/") != ""


def _fallback_cache() -> Path:
    try:
        import pwd

        account_home = pwd.getpwuid(os.getuid()).pw_dir
    except (ImportError, KeyError, AttributeError):  # no password database (Windows, odd containers)
        account_home = None
    if _usable_home(account_home) and os.path.isdir(account_home) and os.access(account_home, os.W_OK):
        return Path(account_home) / ".cache" / "ganforge"
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    shared = Path(tempfile.gettempdir()) / f"ganforge-cache-{uid}"
    try:
        shared.mkdir(mode=0o700, exist_ok=True)
        # In a folder everyone can write, trust only a cache this account made itself.
        if not hasattr(os, "getuid") or shared.stat().st_uid == os.getuid():
            return shared
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="ganforge-cache-"))


def data_dir() -> Path:
    """Where datasets are looked for and downloaded to: $GANFORGE_DATA, else <cache>/data."""
    env = os.environ.get("GANFORGE_DATA")
    return Path(env).expanduser() if env else cache_dir() / "data"


# ---- optional cache writes --------------------------------------------------------------------------

def cache_unwritable(err: BaseException) -> None:
    """Say (once per process) that the cache cannot be written and that work goes on without it."""
    reason = getattr(err, "strerror", None) or first_line(err)
    _say_once("unwritable", f"warning: cannot write the cache in {display_path(cache_dir())} ({reason}): "
                            f"carrying on without it (slower, nothing else changes); set {CACHE_ENV} "
                            "to a writable folder to cache again")


def write_cache(write: Callable[[], object]) -> bool:
    """Run one cache write; True when it succeeded, False (after the one warning) when it failed."""
    try:
        write()
    except CACHE_ERRORS as err:
        cache_unwritable(err)
        return False
    return True


def save_tensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> bool:
    """Write a safetensors file into the cache atomically (see :func:`write_cache`)."""
    from safetensors.torch import save_file

    def write() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(path) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)

    return write_cache(write)


def read_tensors(path: Path) -> tuple[dict, dict[str, str]] | None:
    """A cached safetensors file's (tensors, metadata), or None when it is missing or unreadable: a
    cache entry is disposable, so a damaged one is rebuilt, never trusted."""
    from safetensors import safe_open

    try:
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (*CACHE_ERRORS, ValueError, KeyError):
        return None
