"""The `ganforge` command: every subcommand, and one clear line (no traceback) for each bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganforge.cli import main
from ganforge.gan.recipes import RECIPES

TINY = ["data=digits", "batch_size=8", "--quiet", "--device", "cpu"]


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback
    assert err[0].startswith("ganforge: error: ")
    return err[0]


def _images(folder: Path, count: int, size: int = 20, gray: bool = False) -> None:
    rng = np.random.default_rng(count)
    (folder / "nested").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        shape = (size, size) if gray else (size, size, 3)
        sub = folder / "nested" if i % 2 else folder
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(sub / f"{i:03d}.png")


def test_recipes_table_and_json(capsys):
    assert main(["recipes"]) == 0
    table = capsys.readouterr().out
    for name in RECIPES:
        assert name in table
    assert "2,305,472" in table  # tf-dcgan-mnist G trainable
    assert main(["recipes", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(RECIPES)
    by_name = {r["name"]: r for r in rows}
    assert by_name["seed001-dcgan-mnist"]["generator"] == {"trainable": 855_809, "non_trainable": 384}
    assert by_name["tf-dcgan-mnist"]["discriminator"] == {"trainable": 212_865, "non_trainable": 0}
    for r in rows:
        assert set(r["generator"]) == set(r["discriminator"]) == {"trainable", "non_trainable"}


def test_train_resume_and_sample(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "seed004-mlp-mnist", "--out", str(run), "--steps", "3", *TINY]) == 0
    assert "progress.gif" in capsys.readouterr().out
    assert main(["train", "--resume", str(run), "--steps", "5", "--quiet"]) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 5
    out = tmp_path / "samples"
    assert main(["sample", str(run), "--n", "7", "--out", str(out), "--seed", "1"]) == 0
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["0.png", "1.png", "2.png", "3.png", "4.png", "5.png", "6.png", "grid.png"]
    assert Image.open(out / "0.png").size == (28, 28)


def test_train_on_own_folder_counts_non_images(tmp_path, capsys):
    folder = tmp_path / "photos"
    _images(folder, 12, size=40)
    (folder / "notes.txt").write_text("not an image")
    run = tmp_path / "run"
    assert main(["train", "default", "--data", str(folder), "--out", str(run), "--steps", "2",
                 "image_size=32", "channels=3", "base_filters=4", "batch_size=4", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "ignored 1 files that are not images (first: notes.txt)" in err
    assert Image.open(next((run / "samples").glob("*.png"))).mode == "RGB"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", "no-such-recipe"], "valid recipes: default, seed004-mlp-mnist"),
        (["train", "default", "no_such_key=1"], "valid keys:"),
        (["train", "default", "--data", "no-such-data"], "mnist5k"),
        (["train", "default", "g_lr=-0.1"], "g_lr=-0.1: must be greater than zero"),
        (["train", "default", "batch_size=0"], "batch_size=0: must be greater than zero"),
        (["train", "default", "image_size=30"], "valid sizes are 28, 32"),
        (["train", "default", "loss=wasserstein"], "valid: ns, minimax, hinge"),
        (["train", "default", "g_lr=fast"], "expected float"),
        (["train", "default", "--data", "MISSING_DIR/"], "not a folder"),
        (["train"], "name a recipe"),
        (["sample", "NO_RUN", "--out", "x"], "no checkpoints"),
    ],
)
def test_bad_input_is_one_line(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("MISSING_DIR", str(tmp_path / "missing")) for a in argv]
    code = main(argv + ["--out", str(tmp_path / "run")] if argv[0] == "train" and len(argv) > 1 else argv)
    assert code == 2
    assert needle in _err_line(capsys)
    assert not (tmp_path / "run").exists()  # bad input leaves no half-made run folder


def test_empty_folder_and_mostly_broken_folder(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "default", "--data", str(empty), "--out", str(tmp_path / "r1")]) == 2
    assert "contains no images" in _err_line(capsys)
    broken = tmp_path / "broken"
    _images(broken, 10)
    for i in range(3):
        (broken / f"bad{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert main(["train", "default", "--data", str(broken), "--out", str(tmp_path / "r2")]) == 2
    assert "3 of 13 files" in _err_line(capsys)


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "seed004-mlp-mnist", "--out", str(run), "--steps", "1", *TINY]) == 0
    capsys.readouterr()
    before = (run / "summary.json").read_text()
    assert main(["train", "seed004-mlp-mnist", "--out", str(run), "--steps", "2", *TINY]) == 2
    assert "--resume" in _err_line(capsys)
    assert (run / "summary.json").read_text() == before
    assert main(["train", "seed004-mlp-mnist", "--out", str(run), "--steps", "2", "--force", *TINY]) == 0


def test_subprocess_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ganforge", "train", "default", "batch_size=-3",
                           "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "ganforge: error: bad value batch_size=-3: must be greater than zero"
    assert "Traceback" not in proc.stderr


def test_resume_may_change_learning_rates_but_not_the_run(tmp_path, capsys):
    from ganforge.checkpoint import list_checkpoints, load_checkpoint

    run = tmp_path / "run"
    assert main(["train", "seed004-mlp-mnist", "--out", str(run), "--steps", "2", *TINY]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "batch_size=4", "--steps", "3", "--quiet"]) == 2
    assert "batch_size cannot change when resuming" in _err_line(capsys)
    assert main(["train", "--resume", str(run), "g_lr=1e-5", "--steps", "3", "--quiet"]) == 0
    _, meta = load_checkpoint(list_checkpoints(run / "checkpoints")[-1])
    assert meta["lr"]["G"] == 1e-5 and meta["config"]["g_lr"] == 1e-5 and meta["step"] == 3


def test_dead_data_worker_is_one_line(monkeypatch, capsys, tmp_path):
    import ganforge.runs.command as command

    run = tmp_path / "run"
    assert main(["train", "seed004-mlp-mnist", "--out", str(run), "--steps", "1", *TINY]) == 0
    capsys.readouterr()

    def dies(args):
        raise RuntimeError("DataLoader worker (pid 4203) is killed by signal: Killed. ")

    monkeypatch.setattr(command, "run_training", lambda task, args: dies(args))
    assert main(["train", "default", "--out", str(run)]) == 2
    line = _err_line(capsys)
    assert "data-loading worker died (DataLoader worker (pid 4203) is killed by signal: Killed)" in line
    assert f"ganforge train --resume {run}" in line  # a checkpoint exists: resuming works
    # Before the first checkpoint there is nothing to resume: the advice says what does work.
    assert main(["train", "default", "--out", str(tmp_path / "new")]) == 2
    line = _err_line(capsys)
    assert "--resume" not in line and "--force" in line


def test_resume_refuses_data_and_seed_flags_and_takes_device(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "seed004-mlp-mnist", "--out", str(run), "--steps", "1", *TINY]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--data", "digits"]) == 2
    assert "--data cannot change when resuming" in _err_line(capsys)
    assert main(["train", "--resume", str(run), "--seed", "5"]) == 2
    assert "--seed cannot change" in _err_line(capsys)
    assert main(["train", "--resume", str(run), "--device", "cuda:7", "--steps", "2"]) == 2
    assert "no CUDA GPU" in _err_line(capsys)


def test_folder_run_resumes_and_evaluates_from_anywhere(tmp_path, capsys, monkeypatch):
    """A folder given by a relative path is saved absolute; eval reads it at the run's shape."""
    from ganforge.metrics import evaluate as ev

    _images(tmp_path / "work" / "photos", 12, size=40)  # RGB files, trained as 1 channel
    monkeypatch.chdir(tmp_path / "work")
    run = tmp_path / "run"
    assert main(["train", "default", "--data", "photos", "--out", str(run), "--steps", "1",
                 "base_filters=4", "batch_size=4", "--quiet"]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--resume", str(run), "--steps", "2", "--quiet"]) == 0
    seen = {}

    def fake_select(real, features, **kw):  # no Inception weights offline: stop at the reference
        seen["shape"] = tuple(real.images.shape[1:])
        raise ev.ConfigError("stop here")

    monkeypatch.setattr(ev, "select_extractor", fake_select)
    capsys.readouterr()
    assert main(["eval", str(run), "--n", "4"]) == 2
    assert seen["shape"] == (1, 28, 28)


def test_small_folder_warnings_and_worker_limit(tmp_path, capsys):
    _images(tmp_path / "few", 3, size=28)
    run = tmp_path / "run"
    assert main(["train", "default", "--data", str(tmp_path / "few"), "--out", str(run), "--steps", "1",
                 "base_filters=4", "batch_size=16"]) == 0
    assert "batch_size 16 is larger than" in capsys.readouterr().err
    assert (run / "losses.png").is_file()
    assert main(["train", "default", "--data", str(tmp_path / "few"), "--out", str(tmp_path / "r2"),
                 "data_mode=stream", "workers=500", "batch_size=2"]) == 2
    assert "more than 4 per core" in _err_line(capsys)


def test_killed_data_worker_stops_a_run_with_one_line(tmp_path):
    """kill -9 of a streamed run's data worker: exit 2, one line, no traceback; the run resumes."""
    import os
    import signal
    import time

    _images(tmp_path / "imgs", 40, size=28)
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ganforge", "train", "default", "--data", str(tmp_path / "imgs"), "--out",
         str(run), "--steps", "100000", "base_filters=4", "batch_size=8", "data_mode=stream", "workers=1",
         "checkpoint_every=5", "threads=1", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not list((run / "checkpoints").glob("step-*")) and time.time() < deadline:
            time.sleep(0.2)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert children, "no data worker found"
        for pid in children:
            os.kill(int(pid), signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "data-loading worker died" in lines[0] and "--resume" in lines[0], err
    last = max(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*"))
    assert main(["train", "--resume", str(run), "--steps", str(last + 2), "workers=1", "--quiet"]) == 0


def test_a_reader_that_leaves_early_gets_no_error_line():
    """`ganforge recipes | head -1`: the reader closes the pipe; the command stops without a line
    that blames something else (it once said a data-loading worker died)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "ganforge", "translate", "recipes"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and err == "", err
