"""Shared fixtures: every test gets its own cache and data folders, and no proxy or mirror."""

from __future__ import annotations

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
