"""`ganforge translate eval`: the scores, their protocol, eval.json and the metrics log."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_cache_env
from ganforge.cli import main
from ganforge.config import apply_overrides
from ganforge.translate.evaluate import evaluate_run, pixel_scores
from ganforge.translate.recipes import get_recipe
from ganforge.translate.train import train

TOY = {"ngf": 4, "ndf": 4, "threads": 1, "batch_size": 2, "sample_images": 2}


def test_pixel_scores_of_an_image_with_itself_and_with_its_negative():
    x = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)
    same = pixel_scores(x, x)
    assert same["l1"] == 0 and same["ssim"] == pytest.approx(1.0)
    other = pixel_scores(255 - x, x)
    assert other["l1"] > 0.3 and other["ssim"] < 0.1 and other["psnr"] < 10


def test_eval_of_a_paired_folder_run(tmp_path, capsys):
    rng = np.random.RandomState(0)
    for i in range(20):
        for side in "AB":
            (tmp_path / "data" / side).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.randint(0, 255, (32, 32), dtype=np.uint8)).save(tmp_path / "data" / side / f"{i}.png")
    run = train(apply_overrides(get_recipe("pix2pix-small"), {**TOY, "data": str(tmp_path / "data")}),
                tmp_path / "run", steps=2, log=lambda *_: None)
    assert main(["translate", "eval", str(run)]) == 0
    assert "wrote" in capsys.readouterr().out
    result = json.loads((run / "eval.json").read_text())
    assert result["images"] == 2 and result["split"] == "test" and result["step"] == 2  # every tenth pair held out
    assert {"l1", "psnr", "ssim", "input_l1"} <= set(result) and "classifier_score" not in result
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["kind"] == "eval" and rows[-1]["l1"] == result["l1"]


def test_eval_of_an_unpaired_thin2thick_run(tmp_path, ganforge_cache):
    run = train(apply_overrides(get_recipe("cyclegan-small"), TOY), tmp_path / "run", steps=2, log=lambda *_: None)
    with shared_cache_env(ganforge_cache):
        result = evaluate_run(run, n=100, quiet=True)
    assert {"cycle_l1", "target_domain_rate", "label_preservation", "classifier_ceiling", "fid"} <= set(result)
    assert 0 <= result["target_domain_rate"] <= 1 and result["classifier"]["id"] == "cnn-mnist5k"
    shift = result["stroke_width_shift"]
    assert shift["known"] > 1  # thickening by a disk of radius 1 adds about two pixels
