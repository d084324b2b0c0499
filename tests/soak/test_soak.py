"""The soak through pytest: `pytest -m slow tests/soak` (about 10 minutes on 2 cores)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.mark.slow
def test_soak(tmp_path):
    path = Path(__file__).resolve().parents[2] / "bench" / "soak.py"
    spec = importlib.util.spec_from_file_location("ganforge_soak", path)
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    report = soak.run_soak(trials=20, injections=20, root=tmp_path)
    print(soak.markdown(report))
    assert report["failures"] == []
