"""`ganforge translate recipes / train` from the command line."""

from __future__ import annotations

import json

from ganforge.cli import main


def test_recipes_json_lists_parameter_counts(capsys):
    assert main(["translate", "recipes", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["pix2pix"]["parameters"] == {"G": 54_413_955, "D": 2_768_705}
    assert rows["cyclegan"]["total_parameters"] == 28_285_832
    assert {"pix2pix-tf", "cyclegan-tf", "pix2pix-small", "cyclegan-small"} <= set(rows)


def test_train_and_resume_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["translate", "train", "pix2pix-small", "--data", "thin2thick", "--out", str(out), "--steps", "2",
            "--seed", "3", "ngf=4", "ndf=4", "threads=1", "batch_size=2", "--quiet"]
    assert main(argv) == 0
    assert json.loads((out / "config.json").read_text())["seed"] == 3
    assert main(["translate", "train", "--resume", str(out), "--steps", "3", "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 3
    capsys.readouterr()
    for bad, message in [(["translate", "train", "nope", "--steps", "1"], "translation recipe"),
                         (["translate", "train", "pix2pix-small", "patch=5", "--steps", "1"], "valid: 1, 16, 34, 70"),
                         (["translate", "train", "pix2pix-small", "--data", str(tmp_path / "missing"), "--steps", "1",
                           "--out", str(tmp_path / "r2")], "not a built-in"),
                         (argv, "already exists")]:
        assert main(bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("ganforge: error: ") and message in err and err.count("\n") == 1, err
