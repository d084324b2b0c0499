"""ganforge.outputs, the rules every writing command shares: no output into or over an input, no
overwrite of a file ganforge did not make, --force as `train --force`, and distinct result names."""

from __future__ import annotations

import json
import os

import pytest

from ganforge.errors import ConfigError
from ganforge.outputs import MARKER, OutputFolder, check_file, distinct_stems, json_with, run_record


def _source(tmp_path):
    src = tmp_path / "images"
    src.mkdir()
    (src / "a.png").write_bytes(b"original a")
    (src / "b.png").write_bytes(b"original b")
    return src


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(make, *words):
    with pytest.raises(ConfigError) as err:
        make()
    message = str(err.value)
    assert "\n" not in message and ("nothing was written" in message or "not overwritten" in message), message
    for w in words:
        assert w in message, message
    return message


def test_a_new_folder_gets_a_marker_listing_what_was_written(tmp_path):
    src = _source(tmp_path)
    out = OutputFolder(tmp_path / "out", "test", inputs=[src]).open()
    out.target("a.png").write_bytes(b"x")
    out.target("sub/frame_0.png").write_bytes(b"y")
    assert out.listed() == ["a.png", "sub/frame_0.png"]
    assert json.loads((tmp_path / "out" / MARKER).read_text().splitlines()[0])["command"] == "test"


@pytest.mark.parametrize("where", ["same", "inside", "symlink", "symlink-inside"])
def test_the_output_never_lies_in_an_input(tmp_path, where):
    src = _source(tmp_path)
    before = _snapshot(src)
    out = {"same": src, "inside": src / "preds"}.get(where)
    if where.startswith("symlink"):
        link = tmp_path / "link"
        link.symlink_to(src, target_is_directory=True)
        out = link if where == "symlink" else link / "deeper" / "preds"
    for force in (False, True):
        _refused(lambda: OutputFolder(out, "test", inputs=[src], force=force).open(), "own input")
    assert _snapshot(src) == before and not (src / "preds").exists()


def test_a_folder_holding_an_input_or_files_ganforge_did_not_write_is_refused_even_with_force(tmp_path):
    labels = tmp_path / "labels" / "train"
    labels.mkdir(parents=True)
    (labels / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    src = _source(tmp_path)
    for force in (False, True):
        _refused(lambda: OutputFolder(labels, "test", inputs=[src], force=force).open(), "did not write", "a.txt")
        _refused(lambda: OutputFolder(tmp_path, "test", inputs=[src], force=force).check(),
                 "holds this command's input")
    assert (labels / "a.txt").read_text() == "0 0.5 0.5 0.2 0.2\n"


def test_force_replaces_only_what_the_marker_lists(tmp_path):
    out_dir = tmp_path / "out"
    first = OutputFolder(out_dir, "test").open()
    first.target("old.png").write_bytes(b"old")
    first.target("frames/frame_0.png").write_bytes(b"old")
    _refused(lambda: OutputFolder(out_dir, "test").check(), "earlier results", "--force")
    (out_dir / "mine.txt").write_text("a user's note")  # added by hand: never deleted
    second = OutputFolder(out_dir, "test", force=True).open()
    assert sorted(p.name for p in out_dir.iterdir()) == [MARKER, "mine.txt"]
    second.target("new.png").write_bytes(b"new")
    _refused(lambda: second.target("mine.txt"), "did not write")
    assert (out_dir / "mine.txt").read_text() == "a user's note" and second.listed() == ["new.png"]


def test_a_planted_symlink_or_hard_link_is_never_written_through(tmp_path):
    src = _source(tmp_path)
    out = OutputFolder(tmp_path / "out", "test", inputs=[src]).open()
    (tmp_path / "out" / "a.png").symlink_to(src / "a.png")
    _refused(lambda: out.target("a.png"))
    (tmp_path / "out" / "sub").symlink_to(src, target_is_directory=True)
    _refused(lambda: out.target("sub/b.png"), "own input")
    os.link(src / "b.png", tmp_path / "b-copy.png")
    _refused(lambda: check_file(tmp_path / "b-copy.png", inputs=[src / "b.png"], force=True), "own input")
    assert _snapshot(src) == {"a.png": b"original a", "b.png": b"original b"}


def test_two_results_never_share_a_name_even_in_another_case(tmp_path):
    files = [tmp_path / n for n in ("a.jpg", "a.png", "b.png", "B.jpg", "c.png", "c.PNG", "d.png")]
    names = distinct_stems(files)
    assert names == ["a.jpg", "a.png", "b.png", "B.jpg", "c.png", "c.PNG-2", "d"]
    assert len({n.casefold() for n in names}) == len(names)
    out = OutputFolder(tmp_path / "out", "test").open()
    out.target("x.png")
    _refused(lambda: out.target("X.PNG"), "both be named")


def test_one_output_file_never_replaces_an_input_or_a_foreign_file_without_force(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    (run / "report.html").write_text("<html>")
    inputs = run_record(run, own=("report.html",))
    for force in (False, True):
        _refused(lambda: check_file(run / "metrics.jsonl", inputs=inputs, force=force), "own input")
    _refused(lambda: check_file(run / "report.html", inputs=inputs), "did not write", "--force")
    assert check_file(run / "report.html", inputs=inputs, force=True) == run / "report.html"
    (tmp_path / "r.json").write_text('{"metric": "voc07", "map": 0.5}')
    assert check_file(tmp_path / "r.json", ours=json_with("metric", "map")) == tmp_path / "r.json"
    (tmp_path / "notes.json").write_text('["not ours"]')
    _refused(lambda: check_file(tmp_path / "notes.json", ours=json_with("metric", "map")), "did not write")
    assert (run / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_adopt_takes_an_old_folder_only_when_every_file_is_the_commands(tmp_path):
    old = tmp_path / "explore"
    (old / "interpolation").mkdir(parents=True)
    (old / "interpolation" / "frame_0.png").write_bytes(b"x")
    (old / "interpolation.gif").write_bytes(b"x")
    ours = OutputFolder(old, "explore", force=True)
    ours.adopt(lambda name: name.startswith("interpolation"))
    assert sorted(ours.listed()) == ["interpolation.gif", "interpolation/frame_0.png"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.pdf").write_bytes(b"x")
    theirs = OutputFolder(other, "explore", force=True)
    theirs.adopt(lambda name: name.startswith("interpolation"))
    assert theirs.listed() is None
    _refused(lambda: theirs.open(), "did not write")


def test_force_never_follows_a_crafted_marker_out_of_the_folder(tmp_path):
    src = _source(tmp_path)
    (tmp_path / "outside.txt").write_text("keep me")
    out_dir = tmp_path / "out"
    OutputFolder(out_dir, "test").open()
    (out_dir / "sub").symlink_to(src, target_is_directory=True)
    (out_dir / "b.png").symlink_to(src / "b.png")
    with open(out_dir / MARKER, "a") as fh:
        fh.write("sub/a.png\n../outside.txt\n/etc/hostname\n")
    OutputFolder(out_dir, "test", inputs=[src], force=True).open()
    assert _snapshot(src) == {"a.png": b"original a", "b.png": b"original b"}
    assert (tmp_path / "outside.txt").read_text() == "keep me"
