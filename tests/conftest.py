"""Shared fixtures: every test gets its own cache and data folders, and no proxy or mirror."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# Two cores are shared by two pytest workers: one intra-op thread each avoids oversubscription.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GANFORGE_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("GANFORGE_MIRROR", raising=False)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@contextlib.contextmanager
def shared_cache_env(cache: Path) -> Iterator[None]:
    """Point ganforge at `cache` (and torch hub at an empty folder: no stray Inception weights)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANFORGE_CACHE", str(cache))
        mp.setenv("TORCH_HOME", str(cache / "torch"))
        mp.delenv("GANFORGE_INCEPTION_WEIGHTS", raising=False)
        yield


@pytest.fixture(scope="session")
def ganforge_cache(tmp_path_factory) -> Path:
    """One throw-away cache per test session for feature networks, so each net trains once."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # shared by xdist workers
    cache = root / "ganforge-metrics-cache"
    cache.mkdir(exist_ok=True)
    return cache


@pytest.fixture
def shared_metrics_cache(ganforge_cache):
    """Use after the per-test isolation: swaps in the session-wide feature-network cache."""
    with shared_cache_env(ganforge_cache):
        yield


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt, or any call of the weight downloaders, fails the test."""
    attempts: list[tuple] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in an offline test")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(tfi, "load_state_dict_from_url", refuse)
    yield
    assert not attempts, f"network access attempted: {attempts}"
