"""The trunk pretraining stage keeps the detection stage's promises: the first SIGINT/SIGTERM stops
it with a checkpoint (exit 130/143), max_seconds counts it, and `--resume` continues it where it
stopped, ending bit-identical to a run that was never stopped.

The stops are injected at a chosen pretraining step (a signal sent to this process, a pause longer
than max_seconds), so nothing here depends on how fast the machine is."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from ganforge.checkpoint import list_checkpoints, load_checkpoint, module_state
from ganforge.detect.digits import load_digits_det
from ganforge.detect.pretrain import Pretraining
from ganforge.detect.write_dataset import write_dataset
from ganforge.io import read_metrics

# Box-crop pretraining (the data is not digits-det) of 6 steps, then 2 detection steps.
TOY = ["model=yolov1-s", "fc_width=32", "batch_size=4", "threads=1", "workers=0", "pretrain_steps=6",
       "log_every=1", "eval_every=0", "predict_every=100", "checkpoint_every=2", "predict_images=1", "device=cpu"]


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits-yolo")
    return write_dataset({"train": load_digits_det("train", count=8), "val": load_digits_det("val", count=2)},
                         root, "yolo")


def _cli(capsys, *args) -> tuple[int, str]:
    from ganforge.cli import main

    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture(scope="module")
def reference(toy_data, tmp_path_factory) -> Path:
    """The same run, never stopped."""
    from ganforge.cli import main

    run = tmp_path_factory.mktemp("ref") / "run"
    assert main(["detect", "train", "adam", "--data", str(toy_data), "--out", str(run), "--steps", "2", *TOY,
                 "--quiet"]) == 0
    return run


def _at_pretrain_step(monkeypatch, step: int, action) -> None:
    """Run `action()` right after pretraining step `step` (of this process's first stage only)."""
    real = Pretraining.take_step
    fired = []

    def take_step(self, batches):
        row = real(self, batches)
        if self.step == step and not fired:
            fired.append(step)
            action()
        return row

    monkeypatch.setattr(Pretraining, "take_step", take_step)


def _same_run(a: Path, b: Path) -> None:
    wa, wb = (module_state(load_checkpoint(list_checkpoints(r / "checkpoints")[-1])[0], "net") for r in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

    def rows(run):
        return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")}
                for r in read_metrics(run / "metrics.jsonl") if r["kind"] in ("train", "eval")
                or r.get("event") == "pretrain"]

    assert rows(a) == rows(b)
    assert json.loads((b / "summary.json").read_text())["pretrain_accuracy"] == pytest.approx(
        json.loads((a / "summary.json").read_text())["pretrain_accuracy"], abs=1e-6)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_pretraining_checkpoints_and_resume_finishes_it_exactly(
        toy_data, reference, tmp_path, capsys, monkeypatch, sig, code):
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _at_pretrain_step(m, 3, lambda: os.kill(os.getpid(), sig))
        got, text = _cli(capsys, "detect", "train", "adam", "--data", toy_data, "--out", run, "--steps", "2", *TOY)
    assert got == code, text
    assert "Traceback" not in text
    assert (f"ganforge: error: stopped by signal {int(sig)} at pretraining step 3 of 6: checkpoint saved; "
            f"continue with `ganforge detect train --resume") in text
    _, meta = load_checkpoint(list_checkpoints(run / "checkpoints")[-1])
    assert meta["step"] == 0 and not meta["pretrained"] and meta["pretraining"]["step"] == 3
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["stop_reason"] == "signal"

    got, text = _cli(capsys, "detect", "train", "--resume", run)
    assert got == 0, text
    assert "pretraining the trunk on single objects for 6 steps, from step 3" in text
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    _same_run(reference, run)


def test_max_seconds_counts_pretraining_and_stops_inside_it_with_a_checkpoint(
        toy_data, reference, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _at_pretrain_step(m, 1, lambda: time.sleep(0.3))  # the budget is spent after step 1
        got, text = _cli(capsys, "detect", "train", "adam", "--data", toy_data, "--out", run, "--steps", "2", *TOY,
                         "max_seconds=0.2")
    assert got == 0, text
    assert "stopped after max_seconds=0.2 at pretraining step 1 of 6 (checkpoint saved)" in text
    _, meta = load_checkpoint(list_checkpoints(run / "checkpoints")[-1])
    assert meta["step"] == 0 and not meta["pretrained"] and meta["pretraining"]["step"] == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["stop_reason"] == "max_seconds" and summary["steps"] == 0
    assert not [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]

    got, text = _cli(capsys, "detect", "train", "--resume", run, "max_seconds=0")
    assert got == 0, text
    _same_run(reference, run)
