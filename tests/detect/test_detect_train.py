"""The detector trainer end to end on real digits-det canvases at toy scale: the run folder, exact
resume, signals, `detect val` / `detect predict` / `detect recipes`, bad data and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import assert_ok, ganforge, one_error_line
from ganforge.checkpoint import list_checkpoints, load_checkpoint, module_state
from ganforge.config import apply_overrides
from ganforge.detect.config import SCHEDULES
from ganforge.detect.digits import load_digits_det
from ganforge.detect.write_dataset import write_dataset
from ganforge.detect.recipes import RECIPES, get_recipe
from ganforge.detect.train import train
from ganforge.io import read_metrics

# A small yolov1-s (FC 64) on a few canvases: seconds a run on one core.
TOY = ["model=yolov1-s", "fc_width=64", "batch_size=4", "threads=1", "workers=0", "pretrain_steps=0",
       "log_every=2", "eval_every=4", "predict_every=3", "checkpoint_every=4", "predict_images=4",
       "device=cpu"]
TIMING = ("seconds", "images_per_second")


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    """digits-det canvases (20 train, 6 val, 4 test) written in the Ultralytics layout."""
    root = tmp_path_factory.mktemp("digits-yolo")
    splits = {"train": load_digits_det("train", count=20), "val": load_digits_det("val", count=6),
              "test": load_digits_det("test", count=4)}
    return write_dataset(splits, root, "yolo")


def _cfg(data: Path, *extra: str):
    return apply_overrides(get_recipe("adam"), [f"data={data}", *TOY, *extra])


def _comparable(rows: list[dict]) -> list[dict]:
    """Metric rows without wall-clock fields and without resume events."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows
            if r["kind"] in ("train", "eval")]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    tensors, _ = load_checkpoint(list_checkpoints(run / "checkpoints")[-1])
    return module_state(tensors, "net")


def test_schedules_follow_the_paper_and_cosine():
    paper, cosine = SCHEDULES.get("paper"), SCHEDULES.get("cosine")
    total, warmup = 1000, 100
    assert paper(0, total, warmup) == pytest.approx(0.1)  # 1e-3 of the 1e-2 peak
    assert paper(50, total, warmup) == pytest.approx(0.55)
    # after warm-up: 75 / 30 / 30 shares of the remaining 900 steps at 1, 0.1, 0.01
    assert paper(100, total, warmup) == 1.0 and paper(599, total, warmup) == 1.0
    assert paper(601, total, warmup) == 0.1 and paper(799, total, warmup) == 0.1
    assert paper(801, total, warmup) == 0.01 and paper(999, total, warmup) == 0.01
    assert cosine(0, total, warmup) == pytest.approx(0.01)
    assert cosine(100, total, warmup) == 1.0 and cosine(1000, total, warmup) == pytest.approx(0.0)
    cfg = RECIPES.get("paper").config
    assert (cfg.model, cfg.optimizer, cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.lr, cfg.schedule) == (
        "yolov1", "sgd", 0.9, 5e-4, 64, 1e-2, "paper")
    assert RECIPES.get("paper").source.startswith("Redmon et al. 2016")


def test_train_writes_the_run_folder_with_best_checkpoint(toy_data, tmp_path):
    run = tmp_path / "run"
    err = assert_ok(ganforge("detect", "train", "adam", "--data", toy_data, "--out", run, "--steps", "8",
                             *TOY))
    assert "Traceback" not in err
    rows = read_metrics(run / "metrics.jsonl")
    trains = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in trains] == [2, 4, 6, 8]
    for r in trains:
        assert {"loss", "loss_coord", "loss_obj", "loss_noobj", "loss_cls", "lr"} <= set(r)
        assert r["loss"] == pytest.approx(r["loss_coord"] + r["loss_obj"] + r["loss_noobj"] + r["loss_cls"],
                                          rel=1e-4)
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [4, 8]
    assert all(r["metric"] == "VOC07 11-point mAP@0.5" and 0 <= r["map"] <= 1 for r in evals)
    assert set(evals[-1]["ap"]) <= {str(d) for d in range(10)} and evals[-1]["ap"]
    preds = sorted(p.name for p in (run / "predictions").glob("*.png"))
    assert preds == ["step_000001.png", "step_000003.png", "step_000006.png", "step_000008.png"]
    assert Image.open(run / "predictions" / "step_000008.png").size == (2 * 128 + 3 * 2,) * 2  # 2 x 2 grid
    gif = Image.open(run / "predictions.gif")
    assert gif.format == "GIF" and gif.size == (262, 262)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "detect" and summary["status"] == "finished" and summary["steps"] == 8
    best_tensors, best_meta = load_checkpoint(run / "checkpoints" / "best")
    assert best_meta["map"] == pytest.approx(max(r["map"] for r in evals), abs=1e-6)
    assert best_meta["step"] == max(evals, key=lambda r: (r["map"], -r["step"]))["step"]
    assert any((run / "tb").iterdir())
    assert "DETECT run" in (run / "report.html").read_text()
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "detect" and config["data"] == str(toy_data.resolve())


def test_resume_after_a_stop_is_bit_identical(toy_data, tmp_path):
    # augmentation, dropout and a second worker process all draw random numbers
    extra = ["dropout=0.3", "workers=1", "log_every=3", "eval_every=5"]
    ref = train(_cfg(toy_data, *extra), tmp_path / "ref", steps=10, quiet=True, log=lambda *a: None)
    stopped = train(_cfg(toy_data, *extra, "max_seconds=0.01"), tmp_path / "cut", steps=10, quiet=True,
                    log=lambda *a: None)
    first = json.loads((stopped / "summary.json").read_text())
    assert first["status"] == "stopped" and first["steps"] < 10
    train(None, stopped, resume=True, quiet=True, log=lambda *a: None, resume_overrides=["max_seconds=0"])
    a, b = _weights(ref), _weights(stopped)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _comparable(read_metrics(ref / "metrics.jsonl")) == _comparable(read_metrics(stopped / "metrics.jsonl"))
    assert any(r.get("event") == "resumed" for r in read_metrics(stopped / "metrics.jsonl"))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_checkpoints_exits_128_plus_n_and_resume_finishes(toy_data, tmp_path, sig, code):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ganforge", "detect", "train", "adam", "--data", str(toy_data),
                             "--out", str(run), "--steps", "400", *TOY, "eval_every=0", "predict_every=100",
                             "checkpoint_every=100"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if any(r["kind"] == "train" for r in read_metrics(run / "metrics.jsonl")):
            break
        time.sleep(0.2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    text = err.decode()
    assert proc.returncode == code, text[-2000:]
    assert "Traceback" not in text
    assert f"ganforge: error: stopped by signal {int(sig)} at step" in text and "ganforge detect train --resume" in text
    stopped = int(text.split("at step ")[1].split(":")[0])
    assert 2 <= stopped < 400
    assert int(load_checkpoint(list_checkpoints(run / "checkpoints")[-1])[1]["step"]) == stopped
    assert_ok(ganforge("detect", "train", "--resume", run, "--steps", str(stopped + 4)))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == stopped + 4


@pytest.fixture(scope="module")
def trained(toy_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    return train(_cfg(toy_data), out, steps=6, quiet=True, log=lambda *a: None)


def test_val_prints_per_class_ap_and_writes_json(trained, tmp_path):
    proc = ganforge("detect", "val", trained, "--split", "test", "--metric", "voc12")
    assert_ok(proc)
    text = proc.stdout.decode()
    assert "VOC12 all-point mAP@0.5:" in text and "(4 images)" in text
    result = json.loads((trained / "val-test-voc12.json").read_text())
    assert result["metric"] == "voc12" and result["split"] == "test" and result["images"] == 4
    assert set(result["ap"]) == {str(d) for d in range(10)} and 0 <= result["map"] <= 1
    own = tmp_path / "val.json"
    assert_ok(ganforge("detect", "val", trained, "--json", own, "--checkpoint", "best"))
    assert json.loads(own.read_text())["checkpoint"] == "best"


def test_predict_writes_drawn_png_yolo_txt_and_json_in_original_pixels(trained, toy_data, tmp_path):
    source = tmp_path / "images"
    source.mkdir()
    canvas = Image.open(next((toy_data.parent / "images" / "val").glob("*.png")))
    canvas.resize((200, 150)).save(source / "wide.png")  # not the network's square input
    canvas.save(source / "square.jpg")
    (source / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    proc = ganforge("detect", "predict", trained, "--source", source, "--out", out, "--conf", "0.001")
    assert_ok(proc)
    assert "broken.png could not be read" in proc.stdout.decode() + proc.stderr.decode()
    assert sorted(p.name for p in out.iterdir()) == [".ganforge-output"] + \
        ["square.jpg".replace(".jpg", e) for e in (".json", ".png", ".txt")] + ["wide.json", "wide.png", "wide.txt"]
    assert Image.open(out / "wide.png").size == (200, 150)
    doc = json.loads((out / "wide.json").read_text())
    assert (doc["width"], doc["height"]) == (200, 150) and doc["detections"]
    lines = (out / "wide.txt").read_text().splitlines()
    assert len(lines) == len(doc["detections"])
    for line, det in zip(lines, doc["detections"]):
        cls, xc, yc, w, h, score = line.split()
        x1, y1, x2, y2 = det["box_xyxy"]
        assert 0 <= x1 <= x2 <= 200 and 0 <= y1 <= y2 <= 150
        assert int(cls) == det["class"] and det["name"] == str(det["class"])
        assert float(xc) * 200 == pytest.approx((x1 + x2) / 2, abs=0.05)
        assert float(h) * 150 == pytest.approx(y2 - y1, abs=0.05)
        assert float(score) == pytest.approx(det["score"], abs=1e-5)


def _in_process(capsys, *args: str) -> tuple[int, str, str]:
    from ganforge.cli import main

    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_recipes_lists_paper_and_adam(capsys):
    code, out, _ = _in_process(capsys, "detect", "recipes")
    assert code == 0
    assert "paper" in out and "adam" in out and "Redmon et al. 2016" in out


def test_bad_data_and_bad_input_are_one_line(toy_data, trained, tmp_path, capsys):
    no_names = tmp_path / "no-names.yaml"
    no_names.write_text(f"path: {toy_data.parent}\ntrain: images/train\nval: images/val\n")
    assert "names" in one_error_line(ganforge("detect", "train", "adam", "--data", no_names, "--out",
                                              tmp_path / "a", "--steps", "1", *TOY))
    missing = tmp_path / "missing.yaml"
    for args, words in [(["train", "adam", "--data", missing, "--out", tmp_path / "b", "--steps", "1", *TOY],
                         "does not exist"),
                        (["train", "nope", "--steps", "1"], "unknown detection recipe 'nope'"),
                        (["train", "adam", "lr=fast", "--steps", "1"], "bad value lr='fast'"),
                        (["val", tmp_path / "no-such-run"], "no-such-run"),
                        (["train", "adam", "--data", toy_data, "--out", trained, "--steps", "1"],
                         "already exists: continue it with `ganforge detect train --resume"),
                        (["predict", tmp_path, "--source", missing, "--out", tmp_path / "p"], "does not exist")]:
        code, _, err = _in_process(capsys, "detect", *args)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("ganforge: error: ") and words in lines[0], \
            (args, err)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_bad_labels_are_reported_once_and_training_goes_on(toy_data, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(toy_data.parent, root)
    labels = sorted((root / "labels" / "train").glob("*.txt"))
    labels[0].write_text("99 0.5 0.5 0.2 0.2\n")  # class id out of range
    labels[1].write_text("3 0.5 0.5\n")  # malformed line
    run = tmp_path / "run"
    proc = ganforge("detect", "train", "adam", "--data", root / "data.yaml", "--out", run, "--steps", "3", *TOY,
                    "eval_every=0", "predict_every=100")
    err = assert_ok(proc)
    text = proc.stdout.decode() + err
    warnings = [line for line in text.splitlines() if line.startswith("warning:") and "annotation problems" in line]
    assert len(warnings) == 1 and labels[0].name in warnings[0] and labels[1].name in warnings[0]
    rows = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "warning"]
    assert len(rows) == 1 and {Path(f).name for f in rows[0]["files"]} == {labels[0].name, labels[1].name}
    assert json.loads((run / "summary.json").read_text())["steps"] == 3


def test_trunk_pretraining_on_box_crops_then_detection(toy_data, tmp_path):
    # Data other than digits-det pretrains on crops of its own training boxes.
    run = train(_cfg(toy_data, "pretrain_steps=4", "pretrain_lr=1e-3"), tmp_path / "run", steps=2, quiet=True,
                log=lambda *a: None)
    rows = read_metrics(run / "metrics.jsonl")
    pre = [r for r in rows if r.get("event") == "pretrain"]
    assert [r["pretrain_step"] for r in pre] == [4] and 0 <= pre[0]["pretrain_accuracy"] <= 1
    assert [r["step"] for r in rows if r["kind"] == "train"] == [2]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["pretrain_accuracy"] == pytest.approx(pre[0]["pretrain_accuracy"], abs=1e-4)


def test_images_that_fail_to_decode_mid_run_are_reported_from_workers_and_val(toy_data, tmp_path):
    """Truncated after the header check that loading makes, so they fail only when decoded: in the
    augmentation worker (workers=1), in the box-crop pretraining, in the drawn val images and in the
    val mAP. The run finishes and names them; the val mAP leaves the unreadable image out."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(toy_data.parent, root)
    train_images = sorted((root / "images" / "train").iterdir())
    val_images = sorted((root / "images" / "val").iterdir())
    for image in [*train_images[::2], val_images[0]]:
        image.write_bytes(image.read_bytes()[:60])
    run = tmp_path / "run"
    proc = ganforge("detect", "train", "adam", "--data", root / "data.yaml", "--out", run, "--steps", "4", *TOY,
                    "workers=1", "pretrain_steps=2", "eval_every=4")
    err = assert_ok(proc)
    assert "Traceback" not in err
    rows = read_metrics(run / "metrics.jsonl")
    named = {Path(f).name for r in rows if r["kind"] == "warning" for f in r["files"]}
    assert val_images[0].name in named
    assert named - {val_images[0].name} and named <= {p.name for p in [*train_images[::2], val_images[0]]}
    evals = [r for r in rows if r["kind"] == "eval"]
    assert evals and all(0 <= r["map"] <= 1 for r in evals)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["label_issues"] == len(named) and summary["steps"] == 4
    assert any((run / "predictions").glob("*.png"))


def test_one_coco_json_finds_its_val_file_or_warns_that_val_is_not_held_out(tmp_path):
    import shutil

    from ganforge.detect.datasets import open_detection_data

    coco = write_dataset({"train": load_digits_det("train", count=12), "val": load_digits_det("val", count=4)},
                         tmp_path / "coco", "coco")
    flat = tmp_path / "flat"  # both files beside the images of both splits
    flat.mkdir()
    for split in ("train", "val"):
        for png in (coco / "images" / split).iterdir():
            shutil.copy(png, flat / png.name)
        shutil.copy(coco / "annotations" / f"instances_{split}.json", flat / f"instances_{split}.json")
    train_set = open_detection_data(str(flat / "instances_train.json"), "train")
    val_set = open_detection_data(str(flat / "instances_train.json"), "val")  # the file beside it
    assert (len(train_set), len(val_set)) == (12, 4) and val_set.source.endswith("instances_val.json")

    (flat / "instances_val.json").unlink()  # one file for every split: val is the training set
    run = tmp_path / "run"
    proc = ganforge("detect", "train", "adam", "--data", flat / "instances_train.json", "--out", run,
                    "--steps", "2", *TOY, "eval_every=0", "predict_every=100")
    err = assert_ok(proc)
    text = proc.stdout.decode() + err
    lines = [line for line in text.splitlines() if "are training images" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: 12 of the 12 val images")
    rows = [r for r in read_metrics(run / "metrics.jsonl") if r.get("alarm") == "val_overlap"]
    assert len(rows) == 1
    assert_ok(ganforge("detect", "train", "--resume", run, "--steps", "3"))  # said once, not again on resume
    rows = [r for r in read_metrics(run / "metrics.jsonl") if r.get("alarm") == "val_overlap"]
    assert len(rows) == 1


def _poison_loss(monkeypatch, bad_calls: set[int]) -> None:
    """Make equation 3's total NaN on the given calls (1-based) of the training step's loss."""
    import ganforge.detect.step as detect_step

    real, calls = detect_step.yolo_loss, [0]

    def poisoned(*args, **kwargs):
        parts = real(*args, **kwargs)
        calls[0] += 1
        if calls[0] in bad_calls:
            parts.total = parts.total * float("nan")
        return parts

    monkeypatch.setattr(detect_step, "yolo_loss", poisoned)


def test_a_non_finite_step_is_skipped_and_training_goes_on(toy_data, tmp_path, capsys, monkeypatch):
    _poison_loss(monkeypatch, {3})
    run = tmp_path / "run"
    code, _, err = _in_process(capsys, "detect", "train", "adam", "--data", toy_data, "--out", run, "--steps", "6",
                               *TOY, "eval_every=0", "predict_every=100", "--quiet")
    assert code == 0, err
    events = [r for r in read_metrics(run / "metrics.jsonl") if r.get("event") == "skipped_nonfinite_step"]
    assert [r["step"] for r in events] == [3]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 6
    assert all(torch.isfinite(t).all() for t in _weights(run).values())


def test_persistent_non_finite_steps_stop_with_exit_3_and_a_resume_line(toy_data, tmp_path, capsys, monkeypatch):
    _poison_loss(monkeypatch, set(range(5, 10_000)))  # every step from the 5th on
    run = tmp_path / "run"
    code, _, err = _in_process(capsys, "detect", "train", "adam", "--data", toy_data, "--out", run, "--steps", "40",
                               *TOY, "eval_every=0", "predict_every=100", "max_skips=3", "--quiet")
    assert code == 3
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "training diverged: 3 consecutive steps with a non-finite loss or gradient at step 7" in lines[0]
    assert "ganforge detect train --resume" in lines[0] and "lr=0.00015" in lines[0]
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows if r.get("event") == "skipped_nonfinite_step"] == [5, 6, 7]
    assert [r["step"] for r in rows if r.get("event") == "diverged"] == [7]
    assert json.loads((run / "summary.json").read_text())["status"] == "diverged"
    assert int(load_checkpoint(list_checkpoints(run / "checkpoints")[-1])[1]["step"]) == 4  # the last good one
    assert all(torch.isfinite(t).all() for t in _weights(run).values())


def test_val_on_other_data_with_the_same_classes_and_refused_with_other_classes(trained, tmp_path):
    voc = write_dataset({"test": load_digits_det("test", count=5)}, tmp_path / "voc", "voc")
    proc = ganforge("detect", "val", trained, "--data", voc, "--split", "test", "--json", tmp_path / "v.json")
    assert_ok(proc)
    assert "(5 images)" in proc.stdout.decode()
    result = json.loads((tmp_path / "v.json").read_text())
    assert result["data"] == str(voc) and result["images"] == 5
    other = tmp_path / "other"
    (other / "images" / "test").mkdir(parents=True)
    (other / "labels" / "test").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(other / "images" / "test" / "a.png")
    (other / "data.yaml").write_text("path: .\ntrain: images/test\nval: images/test\ntest: images/test\n"
                                     "names: [cat, dog]\n")
    line = one_error_line(ganforge("detect", "val", trained, "--data", other / "data.yaml", "--split", "test"))
    assert "has classes cat, dog" in line and "the run was trained on 0, 1" in line


def test_flip_on_for_digits_is_warned_about_once(tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = _in_process(capsys, "detect", "train", "adam", "--data", "digits-det", "--out", run,
                                 "--steps", "1", *TOY, "eval_every=0", "predict_every=100", "predict_images=2",
                                 "flip=on")
    assert code == 0, err
    lines = [line for line in (out + err).splitlines() if line.startswith("warning: flip=on")]
    assert len(lines) == 1 and "digits-det" in lines[0] and "flip=auto" in lines[0]
    assert [r["alarm"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "warning"] == ["flip"]


def test_a_run_of_the_other_task_is_named_for_what_it_is(trained, tmp_path):
    from ganforge.detect.use import load_detector
    from ganforge.errors import ConfigError
    from ganforge.gan.sampling import load_generator

    with pytest.raises(ConfigError, match=r"is a detector run, not a GAN run: .*`ganforge detect predict"):
        load_generator(trained)  # what sample, eval and explore load
    line = one_error_line(ganforge("sample", trained, "--out", tmp_path / "grid"))
    assert "detect" in line and "`ganforge detect predict`" in line and "unknown keys" not in line, line
    gan_run = Path(__file__).resolve().parents[1] / "fixtures" / "v1-run"
    with pytest.raises(ConfigError, match=r"is a GAN run, not a detector run: .*`ganforge sample`"):
        load_detector(gan_run)


def test_a_detector_checkpoint_asking_for_an_absurd_width_is_refused_before_allocating(trained, tmp_path):
    import shutil

    from ganforge.checkpoint import save_checkpoint

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    for step in list_checkpoints(run / "checkpoints"):
        tensors, meta = load_checkpoint(step)
        meta["config"]["fc_width"] = 200_000_000  # a 10 TB head
        shutil.rmtree(step)
        save_checkpoint(run / "checkpoints", step.name, tensors, meta)
    cap = ["prlimit", f"--as={6 << 30}"] if shutil.which("prlimit") else []
    for command in (["detect", "val", run], ["detect", "train", "--resume", run, "--steps", "9"]):
        line = one_error_line(ganforge(*command, prefix=cap))
        assert "tensor head.1.weight is 64x12544 in the checkpoint, 200000000x12544 in the model" in line, line


def test_predict_into_an_existing_file_is_called_a_file(trained, toy_data, tmp_path, capsys):
    from ganforge.cli import main

    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    source = toy_data.parent / "images" / "val"
    assert main(["detect", "predict", str(trained), "--source", str(source), "--out", str(existing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file" in err[0] and "free space" not in err[0], err
    assert existing.read_text() == "mine"


def test_detect_config_and_run_time_overrides_of_val_and_predict(trained, toy_data, tmp_path, capsys):
    import torch

    from ganforge.cli import main

    assert main(["detect", "config", "adam", "--json"]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["recipe"]["value"] == "adam" and "threads" in rows and "lr" in rows
    assert main(["detect", "config", "paper"]) == 0 and "momentum" in capsys.readouterr().out
    assert main(["detect", "config", "nope"]) == 2 and "paper, adam" in capsys.readouterr().err

    before = torch.get_num_threads()
    try:
        assert main(["detect", "val", str(trained), "threads=2", "device=cpu", "--json",
                     str(tmp_path / "v.json")]) == 0
        assert torch.get_num_threads() == 2 and json.loads((tmp_path / "v.json").read_text())["images"] > 0
        image = next((toy_data.parent / "images" / "val").glob("*.png"))
        assert main(["detect", "predict", str(trained), "threads=1", "--source", str(image), "--out",
                     str(tmp_path / "p")]) == 0
        assert torch.get_num_threads() == 1 and (tmp_path / "p" / f"{image.stem}.json").is_file()
    finally:
        torch.set_num_threads(before)
    capsys.readouterr()
    # what the model is cannot change, and values are checked as training checks them
    for bad, words in (("lr=1", "takes device=, threads="), ("threads=-1", "threads"), ("device=tpu", "tpu")):
        assert main(["detect", "val", str(trained), bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("ganforge: error: ") and words in err[0], err


def test_bf16_autocast_trains_the_same_run_in_bf16_arithmetic(toy_data, tmp_path):
    # bf16=true runs the forwards (trunk pretraining and detection) under bf16 autocast; the loss,
    # the optimizer and the weights stay float32. Its weights leave the float32 run's by bf16's
    # rounding, not by a different training, and a second bf16 run repeats it exactly.
    extra = ("pretrain_steps=2",)
    fp32 = _weights(train(_cfg(toy_data, *extra), tmp_path / "fp32", steps=4, quiet=True, log=lambda *a: None))
    runs = [train(_cfg(toy_data, *extra, "bf16=true"), tmp_path / f"bf16-{i}", steps=4, quiet=True,
                  log=lambda *a: None) for i in range(2)]
    bf16, again = (_weights(r) for r in runs)
    assert all(v.dtype == fp32[k].dtype for k, v in bf16.items())
    # An Adam step moves a weight by at most about its lr: 2 pretraining steps of 1e-3 and 4 of 3e-4.
    # Two runs of the same batches can differ by twice that where a tiny gradient flips sign.
    diff = max(float((bf16[k] - fp32[k]).abs().max()) for k in fp32 if "running" not in k)
    assert 0 < diff < 2 * (2 * 1e-3 + 4 * 3e-4)
    assert all(torch.equal(bf16[k], again[k]) for k in bf16)
    # The first step's loss (the same weights and batch, no pretraining) is the same number in
    # bf16's arithmetic: the forward alone differs.
    first = [[r["loss"] for r in read_metrics(train(_cfg(toy_data, "log_every=1", *more), tmp_path / name, steps=1,
                                                    quiet=True, log=lambda *a: None) / "metrics.jsonl")
              if r["kind"] == "train"] for name, more in (("fp32-step1", ()), ("bf16-step1", ("bf16=true",)))]
    assert len(first[0]) == len(first[1]) == 1
    assert first[1][0] == pytest.approx(first[0][0], rel=0.01) and first[1][0] != first[0][0]
    assert json.loads((runs[0] / "config.json").read_text())["bf16"] is True


def test_configs_saved_before_fused_kernels_keep_the_loop_optimizer():
    from ganforge.detect.config import DetectConfig

    saved = get_recipe("adam").to_dict()
    del saved["fused"]
    assert DetectConfig.from_dict(saved).fused is False  # an old run resumes with its own kernels
    assert get_recipe("adam").fused is True


def test_a_resume_takes_its_own_optimizer_kernels_not_the_saved_ones(toy_data, tmp_path):
    # load_state_dict would bring back the saved run's implementation flags; the resumed run uses
    # the kernels its own config asks for (fused=false at first, fused=true after the resume).
    run = train(_cfg(toy_data, "fused=false", "max_seconds=0.01"), tmp_path / "run", steps=6, quiet=True,
                log=lambda *a: None)
    assert json.loads((run / "summary.json").read_text())["status"] == "stopped"

    def saved_fused() -> list:
        _, meta = load_checkpoint(list_checkpoints(run / "checkpoints")[-1])
        found = []

        def walk(node):
            if isinstance(node, dict):
                if "fused" in node and "lr" in node:  # a param_group
                    found.append(node["fused"])
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)
        walk(meta)
        return found

    assert saved_fused() and not any(saved_fused())
    train(None, run, resume=True, quiet=True, log=lambda *a: None, resume_overrides=["max_seconds=0", "fused=true"])
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    assert saved_fused() and all(saved_fused())
