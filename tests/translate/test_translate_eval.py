"""`ganforge translate eval`: the scores, their protocol, eval.json and the metrics log."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_cache_env
from ganforge.checkpoint import load_checkpoint
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


def test_eval_every_keeps_the_best_checkpoint_and_eval_scores_it(tmp_path, capsys):
    """Held-out scores during training are `translate eval`'s; `checkpoints/best` holds the lowest
    L1, and `translate eval RUN --checkpoint best` scores it, says so, and finds the same L1."""
    rng = np.random.RandomState(1)
    for i in range(20):
        for side in "AB":
            (tmp_path / "data" / side).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.randint(0, 255, (32, 32), dtype=np.uint8)).save(tmp_path / "data" / side / f"{i}.png")
    cfg = apply_overrides(get_recipe("pix2pix-small"), {**TOY, "data": str(tmp_path / "data"), "eval_every": 2,
                                                        "eval_n": 2, "lr": 2e-3, "checkpoint_every": 100})
    run = train(cfg, tmp_path / "run", steps=5, log=lambda *_: None)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r.get("kind") == "eval"]
    assert [r["step"] for r in evals] == [2, 4, 5]  # on the cadence, and at the end
    assert all(r["score_name"] == "l1" and r["score"] == r["l1"] and r["images"] == 2 for r in evals)
    best = min(evals, key=lambda r: r["score"])
    _, meta = load_checkpoint(run / "checkpoints" / "best")
    assert meta["step"] == best["step"] and meta["best_score"] == best["score"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_score"] == best["score"] and summary["score_name"] == "l1"
    capsys.readouterr()
    assert main(["translate", "eval", str(run), "--checkpoint", "best", "--n", "2"]) == 0
    assert f"at step {best['step']} (best)" in capsys.readouterr().out
    result = json.loads((run / "eval.json").read_text())
    assert result["checkpoint"] == "best" and result["step"] == best["step"]
    assert result["l1"] == pytest.approx(best["l1"], abs=1e-7)
    # Without --checkpoint: the final checkpoint, and the best beside it, both in eval.json.
    assert main(["translate", "eval", str(run), "--n", "2"]) == 0
    out = capsys.readouterr().out
    both = json.loads((run / "eval.json").read_text())
    assert both["step"] == 5 and both["checkpoint"] != "best" and both["best"]["checkpoint"] == "best"
    assert both["best"]["step"] == best["step"] and both["best"]["l1"] == pytest.approx(best["l1"], abs=1e-7)
    assert "at step 5 (" in out and f"at step {best['step']} (best)" in out


@pytest.mark.parametrize("recipe,data,term", [("pix2pix-small", "edges2mnist", "g_l1"),
                                              ("cyclegan-small", "thin2thick-unpaired", "cyc_a")])
def test_the_report_charts_the_loss_terms_and_knows_the_step_eval_scored(tmp_path, capsys, recipe, data, term):
    """A translation run's report draws the terms its steps log and dates `translate eval`'s scores."""
    cfg = apply_overrides(get_recipe(recipe), {**TOY, "data": data, "batch_size": 2})
    run = train(cfg, tmp_path / "run", steps=2, log=lambda *_: None)
    assert main(["translate", "eval", str(run), "--n", "4"]) == 0
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert '"id":"r0-losses"' in page and f'"{term}"' in page
    assert "its step is not recorded" not in page and "at step 2 (eval.json)" in page
