"""`sample`, `explore`, `eval` and `report` never write over the run they read, nor over a file
that ganforge did not make (ganforge.outputs, as `detect predict`)."""

from __future__ import annotations

import pytest

from ganforge.cli import main
from ganforge.outputs import MARKER

TINY = ["data=digits", "batch_size=8", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("gan") / "run"
    assert main(["train", "seed004-mlp-mnist", "--out", str(run), "--steps", "2", *TINY]) == 0
    return run


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(*argv) -> int:
    return main([str(a) for a in argv])


def refused(capsys, *argv, words=()):
    code = cli(*argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ganforge: error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, err


def test_report_out_never_replaces_the_runs_own_files(run, tmp_path, capsys):
    before = snapshot(run)
    for force in ([], ["--force"]):
        for name in ("metrics.jsonl", "summary.json", "config.json"):
            refused(capsys, "report", run, "--out", run / name, *force, words=("own input",))
        refused(capsys, "report", run, "--out", run / "checkpoints", *force, words=("own input",))
    assert snapshot(run) == before
    notes = tmp_path / "notes.html"
    notes.write_text("<p>my notes</p>")
    refused(capsys, "report", run, "--out", notes, words=("did not write", "--force"))
    assert notes.read_text() == "<p>my notes</p>"
    assert cli("report", run, "--out", notes, "--force") == 0
    assert cli("report", run, "--out", notes) == 0  # now it is ganforge's page: replaced freely
    assert cli("report", run) == 0 and (run / "report.html").is_file()


def test_sample_and_explore_never_write_into_the_run_or_a_foreign_folder(run, tmp_path, capsys):
    before = snapshot(run)
    for force in ([], ["--force"]):
        refused(capsys, "sample", run, "--n", "2", "--out", run, *force)
        refused(capsys, "sample", run, "--n", "2", "--out", run / "samples", *force, words=("own input",))
        refused(capsys, "explore", run, "--frames", "2", "--n", "1", "--out", run / "checkpoints", *force,
                words=("own input",))
    assert snapshot(run) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "0.png").write_bytes(b"a picture of mine")
    refused(capsys, "sample", run, "--n", "2", "--out", mine, "--force", words=("did not write",))
    assert (mine / "0.png").read_bytes() == b"a picture of mine"
    out = tmp_path / "s"
    assert cli("sample", run, "--n", "3", "--out", out) == 0
    refused(capsys, "sample", run, "--n", "2", "--out", out, words=("earlier results",))
    assert cli("sample", run, "--n", "2", "--out", out, "--force") == 0
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "0.png", "1.png", "grid.png"]


def test_explore_replaces_its_own_default_folder_and_adopts_one_from_before_markers(run, capsys):
    assert cli("explore", run, "--frames", "2", "--n", "1") == 0
    explore = run / "explore"
    (explore / MARKER).unlink()  # as an older ganforge left it
    assert cli("explore", run, "--frames", "2", "--n", "1", "--dims", "0") == 0
    assert (explore / "interpolation.gif").is_file() and (explore / MARKER).is_file()
    (explore / MARKER).unlink()
    (explore / "thesis.pdf").write_bytes(b"x")  # not explore's: the folder is no longer taken as its own
    refused(capsys, "explore", run, "--frames", "2", "--n", "1", words=("did not write",))
    assert (explore / "thesis.pdf").read_bytes() == b"x"


def test_eval_out_never_replaces_the_runs_config(run, tmp_path, capsys):
    before = snapshot(run)
    for name in ("config.json", "summary.json"):
        refused(capsys, "eval", run, "--n", "4", "--out", run / name, words=("own input",))
    assert snapshot(run) == before
    mine = tmp_path / "results.json"
    mine.write_text('{"mine": 1}')
    refused(capsys, "eval", run, "--n", "4", "--out", mine, words=("did not write",))
    assert mine.read_text() == '{"mine": 1}'
