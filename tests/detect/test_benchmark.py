"""`detect benchmark` at toy size, for its shape only (no timing is asserted)."""

from __future__ import annotations

import json

from ganforge.cli import main
from ganforge.config import apply_overrides
from ganforge.detect.digits import load_digits_det
from ganforge.detect.recipes import get_recipe
from ganforge.detect.train import train
from ganforge.detect.write_dataset import write_dataset

TOY = ["model=yolov1-s", "fc_width=16", "batch_size=2", "threads=1", "workers=0", "pretrain_steps=0",
       "log_every=1", "eval_every=2", "predict_every=2", "predict_images=1", "checkpoint_every=2", "device=cpu"]


def test_benchmark_prints_and_saves_one_row_per_way(tmp_path, capsys):
    data = write_dataset({"train": load_digits_det("train", count=4), "val": load_digits_det("val", count=3)},
                         tmp_path / "data", "yolo")
    run = train(apply_overrides(get_recipe("adam"), [f"data={data}", *TOY]), tmp_path / "run", steps=2,
                quiet=True, log=lambda *a: None)
    code = main(["detect", "benchmark", str(run), "--repeat", "2"])
    text = capsys.readouterr().out
    result = json.loads((run / "benchmark-val.json").read_text())
    assert [r["way"] for r in result["rows"]] == ["eager", "speed", "onnxruntime", "torchscript"]
    for row in result["rows"]:
        assert set(row) == {"way", "file_mb", "map50", "ms", "fps", "ok"} and row["ms"] > 0 and row["file_mb"] > 0
        assert row["way"] in text
    eager = result["rows"][0]["map50"]
    assert [r["ok"] for r in result["rows"]] == [r["map50"] >= eager - 0.005 for r in result["rows"]]
    assert code == (0 if all(r["ok"] for r in result["rows"]) else 1)
    assert result["images"] == 3 and result["batch"] == 1 and "load_1min" in result
    assert main(["detect", "benchmark", str(run), "--json", str(run / "config.json")]) == 2  # never an input
