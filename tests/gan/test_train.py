"""Every recipe trains on real data at toy scale and writes the whole run folder; resume is exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ganforge.checkpoint import list_checkpoints, load_checkpoint
from ganforge.config import apply_overrides
from ganforge.gan.recipes import RECIPES, get_recipe
from ganforge.errors import ConfigError
from ganforge.gan.train import train
from conftest import write_cifar10, write_cifar100

TOY = {  # recipe -> overrides that keep a CPU test short while keeping the recipe's loop
    "default": ["data=mnist5k", "base_filters=8", "batch_size=16"],
    "seed004-mlp-mnist": ["data=mnist5k", "batch_size=32"],
    "seed001-dcgan-mnist": ["data=digits", "batch_size=8"],
    "tf-dcgan-mnist": ["data=digits", "batch_size=16"],
    "seed000-dcgan-cifar100": ["batch_size=4"],
    "dcgan": ["batch_size=4", "base_filters=8"],
    "cgan-mnist": ["data=mnist5k", "base_filters=8", "batch_size=16"],
    "cdcgan": ["batch_size=4", "base_filters=8"],
    "infogan-mnist": ["data=digits", "batch_size=8"],
}


def _tiny_cifar(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "cifar100").mkdir(parents=True)
    (data / "cifar10").mkdir(parents=True)
    write_cifar100(data / "cifar100" / "cifar-100-python.tar.gz", n_train=10, n_test=6)
    write_cifar10(data / "cifar10" / "cifar-10-python.tar.gz", per_batch=4)


def _run_folder_complete(run: Path) -> None:
    for name in ("config.json", "metrics.jsonl", "progress.gif", "losses.png", "summary.json"):
        assert (run / name).is_file(), name
    assert list((run / "samples").glob("*.png"))
    assert list_checkpoints(run / "checkpoints")
    summary = json.loads((run / "summary.json").read_text())
    for key in ("steps", "images_seen", "seconds", "images_per_second", "final"):
        assert key in summary
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "g_loss" in r]
    assert logged and {"d_loss", "g_loss", "d_real", "d_fake", "d_acc", "images_per_second"} <= set(logged[-1])


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_trains_and_writes_run_folder(name, tmp_path):
    _tiny_cifar(tmp_path)
    cfg = apply_overrides(get_recipe(name), TOY[name] + ["log_every=1", "device=cpu"])
    run = train(cfg, tmp_path / "run", steps=3, quiet=True)
    _run_folder_complete(run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["finished"]
    assert summary["images_seen"] > 0


def test_step_recipe_grid_cadence_and_names(tmp_path):
    cfg = apply_overrides(get_recipe("seed004-mlp-mnist"), ["data=mnist5k", "batch_size=16", "sample_every=2"])
    run = train(cfg, tmp_path / "run", steps=5, quiet=True)
    names = sorted(p.name for p in (run / "samples").glob("*.png"))
    # The source saves img-{iteration} at iterations 0, 2, 4 (every 2 here).
    assert names == ["img-0.png", "img-2.png", "img-4.png"]


def test_epoch_recipe_grids_and_milestones(tmp_path):
    from conftest import write_images

    write_images(tmp_path / "gray", 40, size=(28, 28), mode="L")  # 40 images, batch 16: 3 steps/epoch
    cfg = apply_overrides(get_recipe("tf-dcgan-mnist"), [f"data={tmp_path / 'gray'}", "batch_size=16",
                                                        "milestone_every=2", "keep_last=1"])
    run = train(cfg, tmp_path / "run", epochs=4, quiet=True)
    grids = sorted(p.name for p in (run / "samples").glob("*.png"))
    assert grids == [f"image_at_epoch_{e:04d}.png" for e in range(1, 5)]
    assert (run / "dcgan.gif").is_file()
    kept = [p.name for p in list_checkpoints(run / "checkpoints")]
    # Milestones (epochs 2 and 4) are never pruned; of the rolling ones only the newest survives.
    assert kept == ["step-000000006", "step-000000009", "step-000000012"]


def _final_state(run: Path) -> dict[str, torch.Tensor]:
    tensors, meta = load_checkpoint(list_checkpoints(run / "checkpoints")[-1])
    return {k: v for k, v in tensors.items() if not k.startswith("rng.")}, meta


@pytest.mark.parametrize("name", ["seed001-dcgan-mnist", "tf-dcgan-mnist", "default"])
def test_resume_is_bit_exact(name, tmp_path):
    cfg = apply_overrides(get_recipe(name), TOY[name] + ["checkpoint_every=1", "log_every=2"])
    full = train(cfg, tmp_path / "full", steps=8, quiet=True)
    half = train(cfg, tmp_path / "half", steps=4, quiet=True)
    resumed = train(None, half, resume=True, steps=8, quiet=True)
    (a, meta_a), (b, meta_b) = _final_state(full), _final_state(resumed)
    assert meta_a["step"] == meta_b["step"] == 8
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # The log has each step once, with the same numbers.
    rows_a = [r for r in map(json.loads, (full / "metrics.jsonl").read_text().splitlines()) if "g_loss" in r]
    rows_b = [r for r in map(json.loads, (resumed / "metrics.jsonl").read_text().splitlines()) if "g_loss" in r]
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
    assert [r["g_loss"] for r in rows_a] == [r["g_loss"] for r in rows_b]


def test_existing_run_folder_is_not_overwritten(tmp_path):
    cfg = apply_overrides(get_recipe("seed004-mlp-mnist"), ["data=digits", "batch_size=8"])
    run = train(cfg, tmp_path / "run", steps=1, quiet=True)
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, run, steps=1, quiet=True)
    train(cfg, run, steps=2, quiet=True, force=True)
    assert json.loads((run / "summary.json").read_text())["steps"] == 2


def test_loop_semantics_k_steps_and_minimax(tmp_path):
    cfg = apply_overrides(get_recipe("seed004-mlp-mnist"),
                          ["data=digits", "batch_size=8", "d_steps=3", "loss=minimax", "g_optimizer=sgd",
                           "d_optimizer=sgd", "g_lr=0.01", "d_lr=0.01"])
    run = train(cfg, tmp_path / "run", steps=2, quiet=True)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["images_seen"] == 2 * 3 * 8  # k real batches per G step
    assert summary["final"]["g_loss"] < 0  # log(1 - D(G(z))) is negative


def test_nonfinite_steps_are_skipped_counted_and_stop(tmp_path, monkeypatch):
    from ganforge import losses
    from ganforge.runs import TrainingDiverged

    real_g_loss = losses.NonSaturating.g
    monkeypatch.setattr(losses.NonSaturating, "g", lambda self, *a, **k: real_g_loss(self, *a, **k) * float("nan"))
    cfg = apply_overrides(get_recipe("seed004-mlp-mnist"), ["data=digits", "batch_size=8", "max_skips=3"])
    with pytest.raises(TrainingDiverged, match="non-finite"):
        train(cfg, tmp_path / "run", steps=10, quiet=True)
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("event") == "skipped_nonfinite_step" for r in rows) == 3


def test_ema_warms_up_and_copies_batchnorm_statistics():
    from ganforge.gan.ema import make_ema, update_ema

    torch.manual_seed(0)
    g = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    ema = make_ema(g, 0.999)
    start = g[0].weight.detach().clone()
    for _ in range(20):
        with torch.no_grad():
            g[0].weight.add_(1.0)
        g(torch.randn(8, 4))  # moves the BN statistics
        update_ema(ema, g)
    # With the (1 + n) / (10 + n) warm-up the average follows the recent weights, not the init.
    assert float((ema.module[0].weight.detach() - start).mean()) > 10
    assert torch.equal(ema.module[1].running_var, g[1].running_var)


def test_streamed_folder_trains_like_the_in_memory_one_and_resumes_exactly(tmp_path):
    """data_mode=stream (DataLoader workers decoding ahead) draws the same batches as the in-memory
    path, so the weights come out identical; a streamed run resumed midway ends identical too."""
    from conftest import write_images

    write_images(tmp_path / "gray", 40, size=(28, 28), mode="L")
    base = apply_overrides(get_recipe("default"), [f"data={tmp_path / 'gray'}", "base_filters=8",
                                                    "batch_size=16", "checkpoint_every=1", "log_every=2"])
    memory = train(apply_overrides(base, ["data_mode=memory"]), tmp_path / "memory", steps=6, quiet=True)
    streamed = apply_overrides(base, ["data_mode=stream", "workers=2"])
    full = train(streamed, tmp_path / "full", steps=6, quiet=True)
    half = train(streamed, tmp_path / "half", steps=3, quiet=True)
    resumed = train(None, half, resume=True, steps=6, quiet=True)
    (a, _), (b, _), (c, _) = _final_state(memory), _final_state(full), _final_state(resumed)
    for key in a:
        assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key]), key
    summary = json.loads((full / "summary.json").read_text())
    assert "streamed" in summary["data_source"] and summary["unreadable_files"] == 0


def test_streamed_file_that_breaks_mid_run_is_counted_and_reported(tmp_path, monkeypatch, capsys):
    from ganforge.data import folder
    from conftest import write_images

    write_images(tmp_path / "gray", 20, size=(28, 28), mode="L")
    original = folder._decode

    def flaky(path, *args):  # img_0003 turns unreadable after the scan
        if path.name == "img_0003.png":
            raise OSError("truncated")
        return original(path, *args)

    monkeypatch.setattr(folder, "_decode", flaky)
    cfg = apply_overrides(get_recipe("default"), [f"data={tmp_path / 'gray'}", "base_filters=8", "batch_size=10",
                                                   "data_mode=stream", "workers=0", "log_every=2"])
    run = train(cfg, tmp_path / "run", steps=6, log=print)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["unreadable_files"] == 1  # read (and replaced) once per epoch, counted once
    warnings = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "warning" in r]
    assert len(warnings) == 1 and "(first: img_0003.png)" in warnings[0]["warning"]
    assert capsys.readouterr().out.count("could not be decoded") == 1
