"""`detect predict` never destroys its inputs: the hostile --out examples of the field report, and
others of the same class (symlinks into the source, --out inside it, names alike in another case)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ganforge.detect.digits import load_digits_det
from ganforge.detect.write_dataset import write_dataset
from ganforge.outputs import MARKER

TOY = ["model=yolov1-s", "fc_width=64", "batch_size=4", "threads=1", "workers=0", "pretrain_steps=0",
       "log_every=1", "eval_every=0", "predict_every=100", "checkpoint_every=2", "device=cpu"]


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits-yolo")
    splits = {"train": load_digits_det("train", count=8), "val": load_digits_det("val", count=4)}
    return write_dataset(splits, root, "yolo")


@pytest.fixture(scope="module")
def run(toy_data, tmp_path_factory):
    from ganforge.config import apply_overrides
    from ganforge.detect.recipes import get_recipe
    from ganforge.detect.train import train

    cfg = apply_overrides(get_recipe("adam"), [f"data={toy_data}", *TOY])
    return train(cfg, tmp_path_factory.mktemp("trained") / "run", steps=2, quiet=True, log=lambda *a: None)


def cli(capsys, *args) -> tuple[int, str, str]:
    from ganforge.cli import main

    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(capsys, *args, words=()):
    code, out, err = cli(capsys, "detect", "predict", *args)
    assert code == 2 and err.startswith("ganforge: error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, err
    return err


def test_out_equal_to_source_leaves_a_16_bit_original_byte_identical(run, tmp_path, capsys):
    src = tmp_path / "photos"
    src.mkdir()
    deep = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 21).astype(np.uint16)
    Image.fromarray(deep).save(src / "deep.png")  # mode I;16
    assert Image.open(src / "deep.png").mode.startswith("I")
    Image.new("RGB", (40, 30), "gray").save(src / "plain.jpg")
    before = snapshot(src)
    for force in ([], ["--force"]):
        refused(capsys, run, "--source", src, "--out", src, *force, words=("own input",))
        refused(capsys, run, "--source", src, "--out", src / "predictions", *force, words=("own input",))
        refused(capsys, run, "--source", src / "deep.png", "--out", src, *force)
    link = tmp_path / "link"
    link.symlink_to(src, target_is_directory=True)
    refused(capsys, run, "--source", src, "--out", link, words=("own input",))
    assert snapshot(src) == before and sorted(p.name for p in src.iterdir()) == ["deep.png", "plain.jpg"]


def test_images_train_into_labels_train_keeps_every_label_file(run, toy_data, tmp_path, capsys):
    root = toy_data.parent
    labels = root / "labels" / "train"
    before = snapshot(labels)
    for force in ([], ["--force"]):
        refused(capsys, run, "--source", root / "images" / "train", "--out", labels, *force,
                words=("did not write",))
    assert snapshot(labels) == before and before


def test_out_into_a_run_folder_never_touches_the_run(run, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (40, 30), "white").save(src / "summary.png")
    Image.new("RGB", (40, 30), "white").save(src / "metrics.png")
    before = snapshot(run)
    for force in ([], ["--force"]):
        refused(capsys, run, "--source", src, "--out", run, *force)
        refused(capsys, run, "--source", src, "--out", run / "checkpoints", *force, words=("own input",))
    assert snapshot(run) == before
    assert json.loads((run / "summary.json").read_text())["task"] == "detect"


def test_val_json_never_replaces_a_run_file_or_a_foreign_file(run, tmp_path, capsys):
    before = snapshot(run)
    for name in ("config.json", "summary.json", "metrics.jsonl"):
        code, _, err = cli(capsys, "detect", "val", run, "--json", run / name, "--force")
        assert code == 2 and "own input" in err and err.count("\n") == 1, err
    assert snapshot(run) == before
    mine = tmp_path / "mine.json"
    mine.write_text('{"mine": 1}')
    code, _, err = cli(capsys, "detect", "val", run, "--json", mine)
    assert code == 2 and "did not write" in err and mine.read_text() == '{"mine": 1}', err
    assert cli(capsys, "detect", "val", run, "--json", mine, "--force")[0] == 0
    assert cli(capsys, "detect", "val", run, "--json", mine)[0] == 0  # now a detect val result: replaced


def test_sources_with_one_stem_get_distinct_results_and_the_count_is_right(run, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (40, 30), "white").save(src / "a.jpg")
    Image.new("RGB", (60, 20), "white").save(src / "a.png")
    Image.new("RGB", (50, 50), "white").save(src / "b.png")
    out = tmp_path / "out"
    code, text, err = cli(capsys, "detect", "predict", run, "--source", src, "--out", out, "--conf", "0.001")
    assert code == 0, err
    assert "in 3 images" in text
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([MARKER, *(f"{s}{e}" for s in ("a.jpg", "a.png", "b") for e in (".png", ".txt", ".json"))])
    assert json.loads((out / "a.jpg.json").read_text())["image"] == "a.jpg"
    assert json.loads((out / "a.png.json").read_text())["width"] == 60
    assert Image.open(out / "a.jpg.png").size == (40, 30) and Image.open(out / "a.png.png").size == (60, 20)
    # again: refused without --force; with it the earlier results are replaced and nothing else
    refused(capsys, run, "--source", src, "--out", out, words=("earlier results", "--force"))
    (out / "notes.md").write_text("mine")
    code, _, err = cli(capsys, "detect", "predict", run, "--source", src / "b.png", "--out", out, "--force")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "notes.md", "b.png", "b.txt", "b.json"])


# ---- detect map reads what detect predict wrote, and refuses what it would misread ------------------

def map_json(capsys, *args) -> dict:
    code, out, err = cli(capsys, "detect", "map", *args, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def predicted(run, toy_data, tmp_path_factory):
    """`detect predict` on the val images at detect val's own threshold (darknet's 0.001)."""
    from ganforge.cli import main

    out = tmp_path_factory.mktemp("predicted") / "val"
    assert main(["detect", "predict", str(run), "--source", str(toy_data.parent / "images" / "val"),
                 "--out", str(out), "--conf", "0.001"]) == 0
    return out


@pytest.fixture(scope="module")
def own_truth(toy_data, predicted, tmp_path_factory):
    """The val images with truth that a two-step model can find: from its own detections (the best
    three boxes of each image, some moved), so that AP is neither 0 nor 1."""
    import shutil

    root = tmp_path_factory.mktemp("own-truth")
    shutil.copytree(toy_data.parent / "images" / "val", root / "images" / "val")
    (root / "labels" / "val").mkdir(parents=True)
    for k, txt in enumerate(sorted(predicted.glob("*.txt"))):
        rows = [ln.split() for ln in txt.read_text().splitlines()]
        rows = sorted(rows, key=lambda r: -float(r[5]))[:3]
        lines = [f"{r[0]} {float(r[1]) + 0.01 * (i + k) % 0.03:.6f} {r[2]} {r[3]} {r[4]}" for i, r in enumerate(rows)]
        (root / "labels" / "val" / txt.name).write_text("".join(ln + "\n" for ln in lines))
    names = "".join(f"  {c}: '{c}'\n" for c in range(10))
    (root / "data.yaml").write_text(f"path: .\ntrain: images/val\nval: images/val\nnames:\n{names}")
    return root


@pytest.mark.parametrize("metric", ["voc07", "voc12", "coco50"])
def test_map_of_predicts_output_equals_detect_val(run, own_truth, predicted, tmp_path, capsys, metric):
    val = tmp_path / f"val-{metric}.json"
    code, _, err = cli(capsys, "detect", "val", run, "--data", own_truth / "data.yaml", "--metric", metric,
                       "--json", val)
    assert code == 0, err
    expected = json.loads(val.read_text())
    assert 0.05 < expected["map"] < 0.99
    labels = own_truth / "labels" / "val"
    for extra in ([], ["--layout", "yolo"], ["--images", own_truth / "images" / "val"]):
        got = map_json(capsys, "--gt", labels, "--pred", predicted, "--metric", metric, *extra)
        assert got["map"] == pytest.approx(expected["map"], abs=1e-6), extra
        assert got["ap"] == pytest.approx(expected["ap"], abs=1e-6)
    got = map_json(capsys, "--gt", labels, "--pred", predicted, "--metric", metric, "--layout", "ganforge")
    assert got["map"] == pytest.approx(expected["map"], abs=1e-3)  # its boxes are rounded to 0.01 pixel


def test_a_lower_confidence_threshold_never_lowers_the_11_point_ap(own_truth, predicted, tmp_path, capsys):
    labels = own_truth / "labels" / "val"
    scores = []
    for conf in (0.5, 0.2, 0.05, 0.01, 0.001):
        kept = tmp_path / f"conf-{conf}"
        kept.mkdir()
        for txt in predicted.glob("*.txt"):
            lines = [ln for ln in txt.read_text().splitlines() if float(ln.split()[5]) > conf]
            (kept / txt.name).write_text("".join(ln + "\n" for ln in lines))
        scores.append(map_json(capsys, "--gt", labels, "--pred", kept, "--images",
                               own_truth / "images" / "val")["map"])
    assert scores == sorted(scores) and scores[-1] > 0, scores


def map_refused(capsys, *args, words=()):
    code, out, err = cli(capsys, "detect", "map", *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("ganforge: error: "), err
    for w in words:
        assert w in err, err


def test_map_refuses_a_misread_layout_and_missing_sizes(toy_data, predicted, tmp_path, capsys):
    labels = toy_data.parent / "labels" / "val"
    map_refused(capsys, "--gt", labels, "--pred", predicted, "--layout", "pixels", words=("--layout yolo",))
    bare = tmp_path / "bare"  # YOLO txt without the JSON beside it: sizes unknown
    bare.mkdir()
    for txt in predicted.glob("*.txt"):
        (bare / txt.name).write_text(txt.read_text())
    map_refused(capsys, "--gt", labels, "--pred", bare, words=("--images",))
    pixels = tmp_path / "pixels"
    pixels.mkdir()
    (pixels / "a.txt").write_text("dog 10 10 40 40\n")
    map_refused(capsys, "--gt", pixels, "--pred", pixels, "--layout", "yolo", words=("normalised",))
    names = tmp_path / "names"  # names with coordinates that could be either
    names.mkdir()
    (names / "a.txt").write_text("dog 0.1 0.1 0.5 0.5\n")
    map_refused(capsys, "--gt", names, "--pred", pixels, words=("--layout pixels or yolo",))


def test_an_empty_or_wrong_pred_folder_is_an_error_and_a_partial_one_a_warning(toy_data, predicted, tmp_path,
                                                                                capsys):
    labels = toy_data.parent / "labels" / "val"
    images = toy_data.parent / "images" / "val"
    empty = tmp_path / "empty"
    empty.mkdir()
    map_refused(capsys, "--gt", labels, "--pred", empty, "--images", images, words=("no detection files",))
    wrong = tmp_path / "wrong"  # detections of other images
    wrong.mkdir()
    (wrong / "train_000001.txt").write_text("3 0.5 0.5 0.2 0.2 0.9\n")
    map_refused(capsys, "--gt", labels, "--pred", wrong, "--images", images,
                words=("train_000001.txt has no truth file",))
    map_refused(capsys, "--gt", labels, "--pred", toy_data.parent / "labels" / "train", "--layout", "yolo", "--images",
                images, words=("has no truth file",))  # a label folder of other images given as detections
    nothing = tmp_path / "nothing"  # files for every image, none with a detection: 0, said aloud
    nothing.mkdir()
    for txt in predicted.glob("*.txt"):
        (nothing / txt.name).write_text("")
    code, out, err = cli(capsys, "detect", "map", "--gt", labels, "--pred", nothing, "--images", images)
    assert code == 0 and "holds no detections at all" in err, err
    part = tmp_path / "part"
    part.mkdir()
    first = sorted(predicted.glob("*.txt"))[0]
    (part / first.name).write_text(first.read_text())
    code, out, err = cli(capsys, "detect", "map", "--gt", labels, "--pred", part, "--images", images)
    assert code == 0 and "warning: 3 of 4 truth images have no detection file" in err, err


@pytest.mark.parametrize("line", ["dog 0.9 1e308 1e308 1e308 1e308", "dog 0.9 10 10 inf 40", "dog nan 10 10 40 40",
                                  "dog 0.9 -1e300 -1e300 1e301 1e301"])
def test_non_finite_or_overflowing_boxes_are_refused(tmp_path, capsys, line):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    (gt / "a.txt").write_text("dog 10 10 40 40\n")
    (pred / "a.txt").write_text(line + "\n")
    map_refused(capsys, "--gt", gt, "--pred", pred, words=("fix",))


def test_metric_coco_in_detect_val_and_in_the_runs_eval_rows_and_report(toy_data, run, tmp_path, capsys):
    from ganforge.config import apply_overrides
    from ganforge.detect.recipes import get_recipe
    from ganforge.detect.train import train
    from ganforge.io import read_metrics

    code, out, err = cli(capsys, "detect", "val", run, "--metric", "coco")
    assert code == 0, err
    assert "COCO mAP@[.5:.95]:" in out and json.loads((run / "val-val-coco.json").read_text())["metric"] == "coco"
    cfg = apply_overrides(get_recipe("adam"), [f"data={toy_data}", *TOY, "metric=coco", "eval_every=2"])
    coco_run = train(cfg, tmp_path / "coco", steps=2, quiet=True, log=lambda *a: None)
    rows = read_metrics(coco_run / "metrics.jsonl", kind="eval")
    assert rows and rows[-1]["metric"] == "COCO mAP@[.5:.95]"
    assert "COCO mAP@[.5:.95]" in (coco_run / "report.html").read_text()
