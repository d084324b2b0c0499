"""Where ganforge keeps downloaded data, decoded caches and feature networks."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root cache directory: $GANFORGE_CACHE, else $XDG_CACHE_HOME/ganforge, else ~/.cache/ganforge."""
    env = os.environ.get("GANFORGE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ganforge"


def data_dir() -> Path:
    """Where datasets are looked for and downloaded to: $GANFORGE_DATA, else <cache>/data."""
    env = os.environ.get("GANFORGE_DATA")
    return Path(env).expanduser() if env else cache_dir() / "data"
