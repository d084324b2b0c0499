"""Translation on the shared run skeleton: the shared train command and its resume rules, the
shapes checked before a resume allocates anything, and the shared policy for non-finite steps."""

from __future__ import annotations

import json
import shutil

import pytest

from ganforge.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from ganforge.cli import main
from ganforge.config import apply_overrides
from ganforge.errors import CheckpointError
from ganforge.translate.recipes import get_recipe
from ganforge.translate.train import train

TOY = {"ngf": 4, "ndf": 4, "threads": 1, "batch_size": 2, "log_every": 2, "sample_every": 100,
       "checkpoint_every": 2, "sample_images": 2, "data": "thin2thick"}


def quiet(*_) -> None:
    pass


def test_a_checkpoint_asking_for_absurd_widths_is_refused_before_allocating(tmp_path):
    run = train(apply_overrides(get_recipe("pix2pix-small"), TOY), tmp_path / "run", steps=2, log=quiet)
    for step in list_checkpoints(run / "checkpoints"):
        tensors, meta = load_checkpoint(step)
        meta["config"]["ngf"] = 1_000_000  # petabytes of generator
        shutil.rmtree(step)
        save_checkpoint(run / "checkpoints", step.name, tensors, meta)
    with pytest.raises(CheckpointError, match=r"\(its G\) does not match its config \(tensor \S+ is \S+ in the "
                                              r"checkpoint, 1000000x\S+ in the model its config builds\)"):
        train(None, run, resume=True, steps=4, log=quiet)


def test_resume_follows_the_shared_rules(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["translate", "train", "pix2pix-small", "--out", str(run), "--steps", "2", "--device", "cpu", "--quiet",
            *(f"{k}={v}" for k, v in TOY.items())]
    assert main(argv) == 0
    capsys.readouterr()
    for extra, message in [(["--seed", "4"], "--seed cannot change when resuming"),
                           (["--data", "edges2mnist"], "--data cannot change when resuming"),
                           (["--force"], "--force cannot be given with --resume"),
                           (["ngf=8"], "ngf cannot change when resuming")]:
        assert main(["translate", "train", "--resume", str(run), "--steps", "3", *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert main(["translate", "train", "--resume", str(run), "--steps", "3", "lr=1e-4", "--quiet"]) == 0
    assert json.loads((run / "config.json").read_text())["lr"] == 1e-4


def _poison_g(monkeypatch, calls: set[int]) -> None:
    """A NaN in G's adversarial term at these (1-based) calls: pix2pix calls it once a step."""
    from ganforge import losses

    real, count = losses.NonSaturating.g, [0]

    def poisoned(self, *args):
        count[0] += 1
        value = real(self, *args)
        return value * float("nan") if count[0] in calls else value

    monkeypatch.setattr(losses.NonSaturating, "g", poisoned)


def _train_argv(run, steps: int, *extra: str) -> list[str]:
    return ["translate", "train", "pix2pix-small", "--out", str(run), "--steps", str(steps), "--quiet",
            *(f"{k}={v}" for k, v in TOY.items()), "decay_from=1", "max_skips=2", *extra]


def test_nonfinite_steps_roll_back_with_lower_learning_rates(tmp_path, capsys, monkeypatch):
    """The shared policy: after max_skips non-finite steps in a row, back to the last checkpoint with
    the rates (the schedule's peak and the current rate) times rollback_lr_factor."""
    _poison_g(monkeypatch, {5, 6})
    run = tmp_path / "run"
    assert main(_train_argv(run, 10, "rollback_lr_factor=0.5", "keep_last=100")) == 0
    out = capsys.readouterr().out
    assert "warning: 2 non-finite steps: rolled back to step 4 with learning rates x0.5" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["steps"] == 10 and summary["skipped_steps"] == 2
    _, meta = load_checkpoint(list_checkpoints(run / "checkpoints")[-2])  # step 8 (at 10 the schedule is at 0)
    assert meta["step"] == 8 and meta["lr"] == {"G": 1e-4, "D": 1e-4}
    assert [s["base_lrs"] for s in meta["schedulers"].values()] == [[1e-4], [1e-4]]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("event") == "rolled_back"] == [4]
    assert [r["step"] for r in rows if r.get("kind") == "train"] == [2, 4, 6, 8, 10]


def test_persistent_nonfinite_steps_stop_with_exit_3(tmp_path, capsys, monkeypatch):
    _poison_g(monkeypatch, set(range(3, 10_000)))
    run = tmp_path / "run"
    assert main(_train_argv(run, 20)) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training diverged: 2 consecutive steps with a non-finite loss at step 4" in err[0]
    assert "ganforge translate train --resume" in err[0] and "lr=0.0001" in err[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["skipped_steps"] == 2
