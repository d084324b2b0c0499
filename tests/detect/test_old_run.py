"""A detector run folder written before the task skeleton predicts and resumes as that version did.

The fixtures were written by ganforge at commit 4d15e1e (the last one before the restructure), on
one CPU, with that commit's `src` on PYTHONPATH:

    ganforge detect train adam --data digits-det --out run --steps 20 --quiet model=yolov1-s \\
        fc_width=4 batch_size=4 threads=1 workers=0 pretrain_steps=0 schedule=constant log_every=1 \\
        eval_every=0 predict_every=20 predict_images=4 checkpoint_every=20 device=cpu
    cp -r run cont && ganforge detect train --resume cont --steps 24 --quiet
    ganforge detect predict run --source images --out predicted --conf 0.228

- `detect-v1-run`: run's config.json, metrics.jsonl and checkpoints/step-000000020 (nothing else).
- `detect-v1-run-expected`: cont's metrics.jsonl, the meta.json of its checkpoints/step-000000024,
  and `digest(...)` (below) of that checkpoint's tensors.safetensors (read with
  `safetensors.torch.load_file`), saved as digest.safetensors.
- `detect-v1-predict/images`: digits-det test canvases 0, 1, 2 (`load_digits_det("test", count=3)`)
  as PNGs, and rows 8..103 of canvas 0 (a 128 x 96 image, so the resize changes the aspect).
- `detect-v1-predict/predicted`: what that `detect predict` wrote, and raw.safetensors: the network's
  raw grid for each image, computed as that version's predict_files fed it (`load_detector(run)`,
  `F.resize(image, [112, 112], antialias=True)`, `to_input(x, channels_last)`, one image at a time).

Why these sizes. yolov1-s is the smallest detector the old code builds, and its trunk alone holds
800k weights, so a checkpoint with Adam's two moments is 10 MB at best (fc_width=4); the expected
one is therefore kept as a digest. The run trains 20 steps, not 2, because after 2 steps BatchNorm's
running statistics are still at their initial values and the network in eval mode gives nearly the
same grid for every image (a resize without antialiasing moved its outputs by 1e-6): after 20 its
outputs depend on the image, so a change in preprocessing shows. The schedule is constant so that
the continued steps move the weights (a cosine one is near zero at the end of its budget). `--conf
0.228` lies 2e-3 or more from every score, so float rounding cannot add or drop a box.

Tolerance, as in tests/gan/test_old_checkpoints.py: the expected values were computed on one CPU;
another CPU kind rounds float kernels differently in the last bits, so floats are compared to a few
float32 ulps (bit for bit on the CPU kind that made the fixture) and everything discrete (steps,
image counts, names, classes, counters, RNG states) exactly. The JSON and txt files hold rounded
numbers (scores to 6 decimals, pixel boxes to 2), so they may differ by one unit of that rounding.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ganforge.checkpoint import list_checkpoints, load_checkpoint
from ganforge.cli import main
from ganforge.detect.data import read_image
from ganforge.trained import load_run

DATA = Path(__file__).resolve().parents[1] / "fixtures"
OLD_RUN, EXPECTED, PREDICT = DATA / "detect-v1-run", DATA / "detect-v1-run-expected", DATA / "detect-v1-predict"
WHOLE, SAMPLE = 4096, 1024  # digest: tensors up to WHOLE values kept whole, larger ones sampled
CONF = "0.228"


def digest(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors made small: each one that is not float, or has at most WHOLE values,
    whole; of a larger one, SAMPLE values spread evenly over it (every numel // SAMPLE-th) and, under
    `<key>.abs_sum`, the float64 sum of all its magnitudes. A step that went wrong moves nearly every
    value, so the samples see it, and the sums see the rest."""
    out = {}
    for key, value in tensors.items():
        if not value.is_floating_point() or value.numel() <= WHOLE:
            out[key] = value.contiguous()
        else:
            flat = value.flatten()
            out[key] = flat[::value.numel() // SAMPLE].contiguous()
            out[f"{key}.abs_sum"] = flat.double().abs().sum().reshape(1)
    return out


def _same(a: torch.Tensor, b: torch.Tensor, key: str) -> None:
    if a.is_floating_point():
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8, msg=lambda m: f"{key}: {m}")
    else:
        assert a.dtype == b.dtype and torch.equal(a, b), key


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def old_run(tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    return run


def test_old_detector_run_predicts_the_old_boxes(old_run, tmp_path, capsys):
    out = tmp_path / "predicted"
    assert main(["detect", "predict", str(old_run), "--source", str(PREDICT / "images"), "--out", str(out),
                 "--conf", CONF]) == 0, capsys.readouterr().err
    assert "36 boxes in 4 images" in capsys.readouterr().out
    old_out = PREDICT / "predicted"
    stems = sorted(p.stem for p in (PREDICT / "images").glob("*.png"))
    assert len(stems) == 4
    for stem in stems:
        mine, theirs = (json.loads((d / f"{stem}.json").read_text()) for d in (out, old_out))
        for key in ("image", "width", "height"):
            assert mine[key] == theirs[key], (stem, key)
        assert len(theirs["detections"]) >= 5, stem  # boxes to compare, not an empty list
        assert [(d["class"], d["name"]) for d in mine["detections"]] == [(d["class"], d["name"])
                                                                          for d in theirs["detections"]], stem
        for a, b in zip(mine["detections"], theirs["detections"]):
            assert a["score"] == pytest.approx(b["score"], abs=1.5e-6), stem
            assert a["box_xyxy"] == pytest.approx(b["box_xyxy"], abs=0.015), stem
        mine_txt, theirs_txt = ([line.split() for line in (d / f"{stem}.txt").read_text().splitlines()]
                                for d in (out, old_out))
        assert [row[0] for row in mine_txt] == [row[0] for row in theirs_txt], stem
        np.testing.assert_allclose([[float(v) for v in row[1:]] for row in mine_txt],
                                   [[float(v) for v in row[1:]] for row in theirs_txt], rtol=0, atol=1.5e-6)
        # The drawing: the same boxes in the same colours and labels. A box edge or a label's last
        # digit may round the other way on another CPU, which moves a few pixels, not a picture.
        drawn, old_drawn = (np.asarray(Image.open(d / f"{stem}.png").convert("RGB")) for d in (out, old_out))
        assert drawn.shape == old_drawn.shape
        assert (drawn != old_drawn).any(-1).mean() <= 0.01, stem

    # The raw grids behind those boxes: the network and its preprocessing are the old version's.
    model = load_run(old_run)
    old_raw = load_file(old_out / "raw.safetensors")
    assert sorted(old_raw) == stems
    for stem in stems:
        raw = model(*(x.to(model.device) for x in model.preprocess([read_image(PREDICT / "images" / f"{stem}.png")])))
        assert raw.shape == old_raw[stem].shape == (1, 7, 7, 20)
        _same(raw.contiguous(), old_raw[stem], stem)
    assert sorted(p.relative_to(old_run).as_posix() for p in old_run.rglob("*")) == sorted(
        p.relative_to(OLD_RUN).as_posix() for p in OLD_RUN.rglob("*"))  # using a run writes nothing into it


def test_old_detector_run_resumes_as_the_old_version_continued(old_run, capsys):
    _, meta20 = load_checkpoint(old_run / "checkpoints" / "step-000000020")
    assert meta20["state_version"] == 2 and meta20["step"] == 20  # really the old version's layout

    assert main(["detect", "train", "--resume", str(old_run), "--steps", "24", "--quiet"]) == 0, \
        capsys.readouterr().err
    assert "resuming" in capsys.readouterr().out
    last = list_checkpoints(old_run / "checkpoints")[-1]
    assert last.name == "step-000000024"
    tensors, meta = load_checkpoint(last)
    old_meta = json.loads((EXPECTED / "step-000000024" / "meta.json").read_text())["meta"]

    # Weights, BatchNorm statistics and counters, Adam's moments and step counts, the RNG state:
    # the same names, and every value the old version's.
    mine, theirs = digest(tensors), load_file(EXPECTED / "step-000000024" / "digest.safetensors")
    assert sorted(mine) == sorted(theirs)
    assert any(k.startswith("optim.net.state.") and k.endswith("exp_avg_sq") for k in theirs)
    for key in sorted(theirs):
        _same(mine[key], theirs[key], key)
    # ... and the four continued steps did move them, so agreeing says something.
    before = digest(load_checkpoint(old_run / "checkpoints" / "step-000000020")[0])
    assert not torch.allclose(before["module.net.head.1.weight"], theirs["module.net.head.1.weight"], rtol=1e-3)
    for key in ("step", "images_seen", "total_steps", "skipped_steps", "data_size", "names", "input_size",
                "channels_last", "rng", "scheduler", "window", "last_prediction", "lr"):
        assert meta[key] == old_meta[key], key
    assert meta["epoch"] == pytest.approx(old_meta["epoch"], rel=1e-12)
    assert meta["best_map"] == pytest.approx(old_meta["best_map"], rel=1e-4, abs=2e-6)

    # The log of the continued steps is the old continuation's, number for number.
    rows, old_rows = _rows(old_run / "metrics.jsonl"), _rows(EXPECTED / "metrics.jsonl")
    for kind, fields in (("train", ("epoch", "images_seen", "loss", "loss_coord", "loss_obj", "loss_noobj",
                                    "loss_cls", "lr")),
                         ("eval", ("map",))):
        ours, old = ([r for r in rs if r["kind"] == kind] for rs in (rows, old_rows))
        assert [r["step"] for r in ours] == [r["step"] for r in old], kind
        for a, b in zip(ours, old):
            for key in fields:
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=2e-6), (kind, a["step"], key)
            if kind == "eval":
                assert a["ap"] == pytest.approx(b["ap"], abs=2e-6) and a["metric"] == b["metric"]
    assert [r["event"] for r in rows if r["kind"] == "event"] == ["resumed"]
