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
    with pytest.raises(CheckpointError, match=r"\(its G\) does not fit its config \(tensor \S+ is \S+ in the "
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
