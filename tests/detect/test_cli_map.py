"""`ganforge detect map` over Object-Detection-Metrics style files, through the parser it adds."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from ganforge.detect.cli import add_detect_parser
from ganforge.errors import DataError


def _run(argv):
    parser = argparse.ArgumentParser(prog="ganforge")
    add_detect_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["detect", "map", *argv])
    return args.func(args)


@pytest.fixture
def folders(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    (gt / "img1.txt").write_text("dog 10 10 40 40\ncat 100 100 60 50\n")
    (gt / "img2.txt").write_text("dog 5 5 30 30\ncat 50 50 20 20 difficult\n")
    (gt / "empty.txt").write_text("")
    (pred / "img1.txt").write_text("dog 0.9 10 10 40 40\ndog 0.8 11 10 40 41\ncat 0.7 100 100 60 50\n")
    (pred / "img2.txt").write_text("cat 0.95 50 50 20 20\ndog 0.6 5 5 30 30\n")
    (pred / "empty.txt").write_text("bird 0.5 1 1 10 10\n")
    return gt, pred


def test_map_prints_per_class_ap_and_the_labelled_map(folders, capsys):
    gt, pred = folders
    assert _run(["--gt", str(gt), "--pred", str(pred)]) == 0
    out = capsys.readouterr().out
    # dog: TP, duplicate FP, TP -> 11-point (6 + 5 * 2/3) / 11 = 0.8485; cat 1.0 (the difficult one ignored)
    assert "dog         2  0.8485" in out and "cat         1  1.0000" in out
    assert "VOC07 11-point mAP@0.5: 0.9242  (3 images)" in out
    assert "bird" in out and "no truth: not in the mean" in out


def test_map_json_has_map_and_per_class_ap(folders, capsys):
    gt, pred = folders
    _run(["--gt", str(gt), "--pred", str(pred), "--json", "--metric", "voc12"])
    doc = json.loads(capsys.readouterr().out)
    # dog: scores .9 TP, .8 duplicate FP, .6 TP: recall .5 .5 1, precision 1 .5 2/3
    assert doc["ap"]["dog"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert doc["ap"]["cat"] == 1.0 and doc["ap"]["bird"] is None  # the difficult cat is ignored
    assert doc["map"] == pytest.approx((0.5 + 0.5 * 2 / 3 + 1.0) / 2)
    assert doc["metric"] == "voc12" and doc["label"] == "VOC12 all-point mAP@0.5"


def test_xyxy_format_and_iou(tmp_path, capsys):
    gt, pred = tmp_path / "gt_xyxy", tmp_path / "pred_xyxy"
    gt.mkdir()
    pred.mkdir()
    (gt / "img1.txt").write_text("cat 100 100 160 150\n")
    (pred / "img1.txt").write_text("cat 0.7 100 100 160 140\n")  # IoU 41 / 51 with +1 pixels
    _run(["--gt", str(gt), "--pred", str(pred), "--format", "xyxy", "--json"])
    assert json.loads(capsys.readouterr().out)["ap"]["cat"] == 1.0
    _run(["--gt", str(gt), "--pred", str(pred), "--format", "xyxy", "--json", "--iou", "0.85"])
    assert json.loads(capsys.readouterr().out)["ap"]["cat"] == 0.0
    _run(["--gt", str(gt), "--pred", str(pred), "--json"])  # read as xywh: another, larger box
    assert json.loads(capsys.readouterr().out)["ap"]["cat"] == 1.0  # (100,100,260,250) vs (100,100,260,240)
    (gt / "img1.txt").write_text("cat 100 100 60 50\n")
    with pytest.raises(DataError, match="negative size: fix the line or the --format"):
        _run(["--gt", str(gt), "--pred", str(pred), "--format", "xyxy"])


def test_bad_files_are_one_line_errors(folders, tmp_path):
    gt, pred = folders
    (pred / "img2.txt").write_text("dog 0.6 5 5 30\n")
    with pytest.raises(DataError, match=r"img2.txt:1: expected 'class confidence left top w h', got 5 fields"):
        _run(["--gt", str(gt), "--pred", str(pred)])
    (pred / "img2.txt").write_text("")
    (pred / "stray.txt").write_text("dog 0.6 5 5 30 30\n")
    with pytest.raises(DataError, match=r"stray.txt has no truth file .*add an empty truth file"):
        _run(["--gt", str(gt), "--pred", str(pred)])
    with pytest.raises(DataError, match="is not a folder"):
        _run(["--gt", str(tmp_path / "nope"), "--pred", str(pred)])


def test_in_a_subprocess_a_bad_file_is_one_line_on_stderr_and_exit_2(folders):
    gt, pred = folders
    (gt / "img1.txt").write_text("dog ten 10 40 40\n")
    code = ("import argparse, sys\n"
            "from ganforge.detect.cli import add_detect_parser\n"
            "from ganforge.errors import GanforgeError\n"
            "p = argparse.ArgumentParser(prog='ganforge')\n"
            "add_detect_parser(p.add_subparsers(dest='command', required=True))\n"
            "a = p.parse_args(sys.argv[1:])\n"
            "try:\n    sys.exit(a.func(a))\n"
            "except GanforgeError as e:\n    print(f'ganforge: error: {e}', file=sys.stderr); sys.exit(2)\n")
    good = subprocess.run([sys.executable, "-c", code, "detect", "map", "--gt", str(gt), "--pred", str(pred)],
                          capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert good.returncode == 2 and good.stdout == ""
    assert good.stderr.count("\n") == 1 and good.stderr.startswith("ganforge: error: ")
    assert "img1.txt:1: " in good.stderr and "are not all numbers" in good.stderr
