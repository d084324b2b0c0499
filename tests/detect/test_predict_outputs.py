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
