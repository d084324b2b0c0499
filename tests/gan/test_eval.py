"""`ganforge eval` on real short runs, in-training evaluation with a `best` checkpoint, and its errors."""

from __future__ import annotations

import json

import pytest
import torch

from ganforge.checkpoint import load_checkpoint
from ganforge.cli import main
from ganforge.config import apply_overrides
from ganforge.gan.recipes import get_recipe
from ganforge.gan.train import train
pytestmark = pytest.mark.usefixtures("shared_metrics_cache", "no_network")


@pytest.fixture
def digits_run(tmp_path):
    cfg = apply_overrides(get_recipe("seed004-mlp-mnist"),
                          ["data=digits", "batch_size=16", "eval_every=3", "eval_n=200", "log_every=3"])
    return train(cfg, tmp_path / "run", steps=6, quiet=True)


def test_training_logs_metrics_and_keeps_best_checkpoint(digits_run):
    rows = [json.loads(l) for l in (digits_run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "fid" in r]
    assert [r["step"] for r in evals] == [3, 6]
    assert all(r["fid"] > 0 and 0 <= r["precision"] <= 1 for r in evals)
    _, meta = load_checkpoint(digits_run / "checkpoints" / "best")
    assert meta["fid"] == min(r["fid"] for r in evals)
    assert json.loads((digits_run / "summary.json").read_text())["best_fid"] == meta["fid"]


def test_eval_command_writes_protocol(digits_run, capsys):
    assert main(["eval", str(digits_run), "--n", "300", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    result = json.loads((digits_run / "eval.json").read_text())
    # The printed table shows the very numbers eval.json holds.
    assert f"FID  {result['fid']:.4f}" in " ".join(out.split()).replace("FID ", "FID  ")
    assert f"{result['precision']:.4f}" in out and f"{result['recall']:.4f}" in out
    # Beside each score: real training images scored the same way, and the untrained generator.
    real, untrained = result["baselines"]["real_images"], result["baselines"]["untrained_generator"]
    assert real["fid"] < 0.2 * result["fid"] and real["precision"] > result["precision"]
    assert untrained["fid"] > 0 and untrained["n_images"] == 300
    header = out.splitlines()[0]
    assert "real images" in header and "untrained G" in header and f"{real['fid']:.4f}" in out
    assert (digits_run / "eval_baselines.json").is_file()  # cached in the run folder
    proto = result["protocol"]
    assert proto["n_fake"] == 300 and proto["reference"] == "digits:test" and proto["seed"] == 1
    for key in ("features", "feature_hash", "feature_test_accuracy", "n_real", "ganforge_version", "run",
                "checkpoint_step"):
        assert key in proto, key
    assert proto["checkpoint_step"] == 6
    # The best checkpoint can be scored too, and an images folder as well.
    assert main(["eval", str(digits_run), "--n", "200", "--checkpoint", "best", "--out",
                 str(digits_run / "best.json")]) == 0
    assert main(["sample", str(digits_run), "--n", "40", "--out", str(digits_run / "imgs")]) == 0
    assert main(["eval", "--images", str(digits_run / "imgs"), "--data", "digits"]) == 0
    assert json.loads((digits_run / "imgs" / "eval.json").read_text())["protocol"]["n_fake"] == 40


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ganforge: error: "), err
    return err[0]


def test_eval_errors_are_one_line(digits_run, capsys):
    assert main(["eval", str(digits_run), "--checkpoint", "no-such-checkpoint"]) == 2
    assert "no checkpoint" in _one_line(capsys)
    assert main(["eval", str(digits_run), "--n", "50", "--features", "inception"]) == 2
    line = _one_line(capsys)
    assert "Inception-v3 FID weights are not on this machine" in line and "never downloads" in line
    assert main(["eval", "--images", str(digits_run / "samples")]) == 2
    assert "--data" in _one_line(capsys)


def test_eval_mismatched_dataset_is_refused(tmp_path, capsys):
    from conftest import write_cifar10

    root = tmp_path / "data" / "cifar10"
    root.mkdir(parents=True)
    write_cifar10(root / "cifar-10-python.tar.gz", per_batch=4)
    cfg = apply_overrides(get_recipe("seed004-mlp-mnist"), ["data=digits", "batch_size=8"])
    run = train(cfg, tmp_path / "run", steps=1, quiet=True)
    assert main(["eval", str(run), "--n", "20", "--data", "cifar10"]) == 2
    assert "cifar10" in _one_line(capsys)


def test_cold_cache_eval_equals_a_warm_rerun(digits_run, tmp_path, monkeypatch):
    # Empty cache: the feature net is trained and the reference features extracted in this eval.
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cold-cache"))
    results = []
    for name in ("cold", "warm"):
        assert main(["eval", str(digits_run), "--n", "200", "--out", str(tmp_path / f"{name}.json")]) == 0
        results.append(json.loads((tmp_path / f"{name}.json").read_text()))
    assert list((tmp_path / "cold-cache" / "metric_stats").iterdir())  # the warm run read a cache
    assert results[0] == results[1]  # every score to the last digit, the baselines too


def test_cached_reference_features_are_the_ones_a_cold_run_scored_with():
    from ganforge.data import load_dataset
    from ganforge.metrics.evaluate import real_features

    class PixelFeatures:
        """Pixels / 7 in float64: values that float32 cannot hold exactly."""
        id, hash, test_accuracy, channels, image_size = "pixels", "pixels-7", None, 1, 8

        def extract(self, images):
            feats = images.flatten(1).double() / 7
            return feats, feats[:, :10]

    train = load_dataset("digits", split="train", quiet=True)
    cold = real_features(PixelFeatures(), train.images[:50], "digits", "train", None)
    warm = real_features(PixelFeatures(), train.images[:50], "digits", "train", None)
    assert cold.dtype == warm.dtype == torch.float64 and torch.equal(cold, warm)
