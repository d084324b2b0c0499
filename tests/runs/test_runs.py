"""The shared run plumbing carries a run that is not a GAN: one module, its own config class,
saved, resumed exactly and logged, without importing anything of the GAN trainer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from ganforge.checkpoint import list_checkpoints, load_checkpoint
from ganforge.io import read_metrics

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "one_module_run.py"


def _run(*args: str) -> dict:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_one_module_run_saves_resumes_and_logs_without_the_gan_trainer(tmp_path):
    full, half = tmp_path / "full", tmp_path / "half"
    report = _run(str(full), "6")
    assert report == {"gan_modules": [], "step": 6}
    assert _run(str(half), "3")["step"] == 3
    report = _run(str(half), "6", "--resume")
    assert report == {"gan_modules": [], "step": 6}

    a, meta_a = load_checkpoint(list_checkpoints(full / "checkpoints")[-1])
    b, meta_b = load_checkpoint(list_checkpoints(half / "checkpoints")[-1])
    assert meta_a["modules"] == ["net"] and list(meta_a["optimizers"]) == ["net"]
    assert meta_a["lr"] == {"net": 0.05} and set(meta_a["rng"]) == {"0"}
    weights = [k for k in a if k.startswith(("module.net.", "optim.net."))]
    assert len(weights) >= 4 + 4  # 2 linear layers' weight and bias, and SGD's momentum buffers
    for key in weights:
        assert torch.equal(a[key], b[key]), key
    assert [r["loss"] for r in read_metrics(full / "metrics.jsonl", "train")] == \
        [r["loss"] for r in read_metrics(half / "metrics.jsonl", "train")]
    assert [r["event"] for r in read_metrics(half / "metrics.jsonl", "event")] == ["resumed"]
    assert json.loads((half / "summary.json").read_text())["task"] == "detect"
    assert (half / "predictions").is_dir() and len(list_checkpoints(half / "checkpoints")) == 2


def test_resume_may_change_only_keys_declared_resumable(tmp_path):
    run = tmp_path / "run"
    _run(str(run), "2")
    proc = subprocess.run([sys.executable, str(SCRIPT), str(run), "3", "--resume", "momentum=0.5"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "momentum cannot change when resuming" in proc.stderr
    _run(str(run), "3", "--resume", "lr=0.01")
    _, meta = load_checkpoint(list_checkpoints(run / "checkpoints")[-1])
    assert meta["lr"] == {"net": 0.01} and meta["config"]["lr"] == 0.01
