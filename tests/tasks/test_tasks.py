"""The task boundary: a task is a registered record, the shared rooms know none by name, and a
third task costs only its own code (toy_task.py) to train, resume, be used and be reported."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ganforge
from ganforge.checkpoint import list_checkpoints, load_checkpoint, module_state
from ganforge.cli import main
from ganforge.task import TASKS, tasks

SRC = Path(ganforge.__file__).parent
TASK_PACKAGES = sorted(p.parent.name for p in SRC.glob("*/task.py"))


def _imports(path: Path) -> set[str]:
    """Every ganforge module a source file imports, at its top or inside a function."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found |= {module} | {f"{module}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("ganforge")}


def _task_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in TASK_PACKAGES else None


def test_every_task_registers_itself_and_the_registry_finds_them():
    assert {"gan", "detect"} <= set(TASK_PACKAGES)
    assert set(TASK_PACKAGES) <= set(tasks().names())


KNOWN_CROSSINGS: set[str] = set()  # none left: keep it that way


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_task_imports_another_and_no_shared_room_imports_a_task(path):
    if str(path.relative_to(SRC)) in KNOWN_CROSSINGS:
        pytest.xfail("a shared room that still imports a task")
    own = _task_of(".".join(path.relative_to(SRC.parent).with_suffix("").parts))
    for module in _imports(path):
        other = _task_of(module)
        assert other is None or other == own, f"{path.relative_to(SRC)} imports {module}"


def test_shared_rooms_import_no_task_in_a_fresh_interpreter():
    code = ("import sys, ganforge.cli, ganforge.report, ganforge.runs, ganforge.runs.start, ganforge.runs.command, "
            "ganforge.task, ganforge.metrics, ganforge.viz\n"
            f"print([m for m in sys.modules if m.split('.')[1:2] and m.split('.')[1] in {TASK_PACKAGES!r}])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- the toy task: trains, resumes exactly, is used and is reported through the shared skeleton ----

@pytest.fixture
def toy(monkeypatch):
    import toy_task

    monkeypatch.setitem(TASKS._items, "toy", toy_task.TASK)
    return toy_task


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return module_state(load_checkpoint(list_checkpoints(run / "checkpoints")[-1])[0], "net")


def test_a_toy_task_trains_resumes_exactly_is_used_and_reported(toy, tmp_path, capsys):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main(["toy", "train", "tiny", "--out", str(whole), "--device", "cpu", "--seed", "3", "--quiet"]) == 0
    assert main(["toy", "train", "tiny", "--out", str(parts), "--device", "cpu", "--seed", "3", "--steps", "5",
                 "--quiet"]) == 0
    assert main(["toy", "train", "--resume", str(parts), "--steps", "8", "--quiet"]) == 0
    a, b = _weights(whole), _weights(parts)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit
    summary = json.loads((parts / "summary.json").read_text())
    assert summary["task"] == "toy" and summary["status"] == "finished" and summary["steps"] == 8

    trained = toy.TASK.load(parts, None, "cpu")
    assert trained.config.seed == 3
    digits = torch.tensor(toy.DIGITS.data[:100], dtype=torch.float32)
    labels = trained.postprocess(trained.module(trained.preprocess(digits)))
    assert labels.shape == (100,) and (labels == torch.tensor(toy.DIGITS.target[:100])).float().mean() > 0.3

    capsys.readouterr()
    assert main(["report", str(parts)]) == 0
    page = (parts / "report.html").read_text()
    assert 'id="r0-toy-s"' in page and "Class templates" in page and '"id":"r0-losses"' in page
    assert "TOY run" in page


def test_every_train_command_takes_the_same_flags(toy):
    from ganforge.cli import _parser

    parser = _parser()
    for argv in (["train", "default"], ["detect", "train", "adam"], ["translate", "train", "pix2pix"],
                 ["toy", "train", "tiny"]):
        args = parser.parse_args(argv + ["--device", "cpu", "--seed", "3", "--epochs", "1.5", "--force",
                                         "--nproc", "2", "--max-restarts", "1", "--out", "x"])
        assert (args.device, args.seed, args.epochs, args.nproc, args.max_restarts) == ("cpu", 3, 1.5, 2, 1)
        assert args.force and args.train_task.name == {"train": "gan"}.get(argv[0], argv[0])


def test_a_gan_refuses_a_fraction_of_an_epoch_in_one_line(tmp_path, capsys):
    assert main(["train", "default", "--epochs", "0.5", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "epochs" in err[0] and "int" in err[0]
    assert not (tmp_path / "r").exists()


def test_detect_train_takes_device_and_seed(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["detect", "train", "adam", "--data", "digits-det", "--out", str(run), "--steps", "1", "--device", "cpu",
            "--seed", "3", "model=yolov1-s", "fc_width=64", "batch_size=4", "threads=1", "workers=0",
            "pretrain_steps=0", "eval_every=0", "predict_every=100", "predict_images=2", "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    config = json.loads((run / "config.json").read_text())
    assert (config["device"], config["seed"]) == ("cpu", 3)
    assert main(["detect", "train", "--resume", str(run), "--seed", "4"]) == 2
    assert "--seed cannot change when resuming" in capsys.readouterr().err


def test_epochs_is_one_number_read_as_each_config_counts_them():
    from ganforge.detect.recipes import get_recipe as detect_recipe
    from ganforge.gan.recipes import get_recipe as gan_recipe
    from ganforge.runs import with_budget

    gan = with_budget(gan_recipe("default"), None, 2.0)
    assert gan.epochs == 2 and isinstance(gan.epochs, int) and gan.steps is None
    assert with_budget(detect_recipe("adam"), None, 0.5).epochs == 0.5
