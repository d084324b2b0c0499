"""A toy-trained detector run through ONNX Runtime and TorchScript: `detect val` gives PyTorch's
mAP to 4 decimals and `detect predict` the same boxes, with the file in place of the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ganforge.cli import main
from ganforge.config import apply_overrides
from ganforge.detect.digits import load_digits_det
from ganforge.detect.recipes import get_recipe
from ganforge.detect.train import train
from ganforge.detect.write_dataset import write_dataset

# yolov1-s overfits 8 canvases well enough in 60 steps that its mAP on them is far from 0.
TOY = ["model=yolov1-s", "fc_width=64", "batch_size=8", "lr=1e-3", "augment=false", "threads=1", "workers=0", "pretrain_steps=0",
       "log_every=2", "eval_every=30", "predict_every=100", "predict_images=2", "checkpoint_every=30", "device=cpu"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits-yolo")
    data = write_dataset({"train": load_digits_det("train", count=8), "val": load_digits_det("val", count=6),
                          "test": load_digits_det("test", count=5)}, root, "yolo")
    cfg = apply_overrides(get_recipe("adam"), [f"data={data}", *TOY])
    return train(cfg, tmp_path_factory.mktemp("trained") / "run", steps=60, quiet=True, log=lambda *a: None)


def test_val_and_predict_through_onnx_runtime_and_torchscript_match_pytorch(run, tmp_path, capsys):
    files = {"onnx": tmp_path / "det.onnx", "ts": tmp_path / "det.pt"}
    assert main(["export", str(run), "--out", str(files["onnx"]), "--checkpoint", "best"]) == 0
    assert main(["export", str(run), "--out", str(files["ts"]), "--format", "torchscript", "--batch", "3",
                 "--checkpoint", "best"]) == 0
    assert main(["detect", "val", str(run), "--split", "train", "--checkpoint", "best",
                 "--json", str(tmp_path / "torch.json")]) == 0
    ours = json.loads((tmp_path / "torch.json").read_text())
    for name, path in files.items():
        assert main(["detect", "val", "--model", str(path), "--split", "train", "--json",
                     str(tmp_path / f"{name}.json")]) == 0
        theirs = json.loads((tmp_path / f"{name}.json").read_text())
        assert ours["map"] > 0.01, ours["map"]  # a model that finds something, so equality means something
        assert round(theirs["map"], 4) == round(ours["map"], 4) and theirs["images"] == ours["images"] == 8
        assert theirs["checkpoint"] == "best" and theirs["runtime"] in ("onnxruntime", "torchscript")
    source = next(Path(run).parents[1].glob("digits-yolo*/images/val"))  # the fixture's data
    main(["detect", "predict", str(run), "--checkpoint", "best", "--source", str(source), "--out",
          str(tmp_path / "p-torch"), "--conf", "0.2"])
    assert main(["detect", "predict", "--model", str(files["onnx"]), "--source", str(source), "--out",
                 str(tmp_path / "p-ort"), "--conf", "0.2"]) == 0
    for txt in sorted((tmp_path / "p-torch").glob("*.txt")):
        # boxes of equal score may swap places: compare them in (class, centre) order
        a = sorted([float(v) for v in line.split()] for line in txt.read_text().splitlines())
        b = sorted([float(v) for v in line.split()] for line in (tmp_path / "p-ort" / txt.name).read_text().splitlines())
        assert len(a) == len(b) and [r[0] for r in a] == [r[0] for r in b]
        assert all(abs(x - y) <= 1e-4 for ra, rb in zip(a, b) for x, y in zip(ra, rb))
    capsys.readouterr()
    assert main(["detect", "val", "--model", str(files["onnx"]), "--split", "train"]) == 2
    assert "--json FILE" in capsys.readouterr().err
    assert main(["detect", "val", str(run), "--model", str(files["onnx"])]) == 2
