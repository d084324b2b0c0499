"""Checkpoints of the first layout still load and resume exactly.

`tests/fixtures/v1-run` was written by ganforge 0.1.0 (checkpoint format 1: tensors named `G.`, `D.`,
`EMA.`, optimizers `opt_g`/`opt_d`, one RNG state, and each discriminator one `net` Sequential):
the fully connected recipe on `digits` at 8x8 with hidden widths 16 and an EMA, checkpointed at
step 2. `tests/fixtures/v1-run-expected` is that version's own checkpoint at step 4 of the same run.
`tests/fixtures/v1-run-samples` is what ganforge at commit 4d15e1e (the last before the task
skeleton) made of v1-run: `ganforge sample v1-run --n 16 --seed 0 --out samples` (00.png ... 15.png
and grid.png), and raw.safetensors, the float output behind them ("images": its `load_generator`
(v1-run) applied by `apply_generator` to `LatentSpec.from_config(cfg).fixed(16, 0)`).

That expected checkpoint was computed on one CPU. Float kernels on another CPU (AVX2 against
AVX-512, another BLAS blocking) round differently in the last bits, so weights and moments are
compared to a few float32 ulps (`_same`; bit for bit on the CPU kind that made the fixture) and
everything discrete (steps, image counts, names, events) exactly. Bit-identical resume on one
machine is what `test_reliability.py` proves against a reference run made on that machine.
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

from ganforge.checkpoint import list_checkpoints, load_checkpoint, module_state, upgrade_state
from ganforge.cli import main
from ganforge.gan.config import GANConfig
from ganforge.gan.latents import LatentSpec
from ganforge.gan.models import build_models
from ganforge.trained import load_run

DATA = Path(__file__).resolve().parents[1] / "fixtures"


def _same(a: torch.Tensor, b: torch.Tensor, key: str) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8, msg=lambda m: f"{key}: {m}")


def test_first_layout_checkpoint_resumes_as_the_old_version_continued(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(DATA / "v1-run", run)
    old_rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    _, meta2 = load_checkpoint(run / "checkpoints" / "step-000000002")
    assert "state_version" not in meta2 and "opt_g" in meta2["optimizers"]  # really the old layout

    assert main(["train", "--resume", str(run), "--steps", "4", "--quiet"]) == 0
    assert "resuming" in capsys.readouterr().out
    new, new_meta = load_checkpoint(list_checkpoints(run / "checkpoints")[-1])
    old, old_meta = upgrade_state(*load_checkpoint(DATA / "v1-run-expected" / "step-000000004"))
    assert new_meta["step"] == old_meta["step"] == 4 and new_meta["images_seen"] == old_meta["images_seen"]

    # G and its EMA keep their parameter names: every value is the old version's.
    g_keys = [k for k in old if k.startswith(("module.G.", "module.G_ema."))]
    assert len(g_keys) == 9
    for key in g_keys:
        _same(new[key], old[key], key)
    # D was one Sequential then: its weights load into today's trunk + head, and agree.
    _, d_old = build_models(GANConfig.from_dict(old_meta["config"]))
    d_old.load_state_dict(module_state(old, "D"))
    for key, value in d_old.state_dict().items():
        _same(new[f"module.D.{key}"], value, key)
    # Adam's moments too (same parameter order, new names).
    for old_name, new_name in (("opt_g", "optim.G"), ("opt_d", "optim.D")):
        moments = [k for k in old if k.startswith(f"{old_name}.state.")]
        assert moments
        for key in moments:
            _same(new[new_name + key[len(old_name):]], old[key], key)

    # The log of the re-run steps is the old run's, number for number.
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r.get("kind", "train") == "train"]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    for mine, theirs in zip(train_rows, old_rows):
        for key in ("images_seen", "d_loss", "g_loss", "d_real", "d_fake", "d_acc"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-5, abs=2e-6), (mine["step"], key)
    assert [r["event"] for r in rows if r.get("kind") == "event"] == ["resumed"]


def test_first_layout_run_samples_the_old_versions_images(tmp_path, capsys):
    run, out, old = tmp_path / "run", tmp_path / "samples", DATA / "v1-run-samples"
    shutil.copytree(DATA / "v1-run", run)
    assert main(["sample", str(run), "--n", "16", "--seed", "0", "--out", str(out)]) == 0, capsys.readouterr().err

    # The generator's float output for seed 0: the same latents and the same EMA weights.
    model = load_run(run)
    raw = model(*model.preprocess(LatentSpec.from_config(model.config).fixed(16, 0)))
    old_raw = load_file(old / "raw.safetensors")["images"]
    assert raw.shape == old_raw.shape == (16, 1, 8, 8)
    _same(raw, old_raw, "images")

    # The PNGs: one pixel may round the other way only where the old value sat on a rounding edge.
    names = sorted(p.name for p in old.glob("*.png"))
    assert names == sorted(p.name for p in out.glob("*.png")) and len(names) == 17
    scaled = ((old_raw.double() + 1) * 127.5).numpy()
    on_edge = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-3
    changed = 0
    for name in names:
        mine, theirs = (np.asarray(Image.open(d / name), dtype=np.int16) for d in (out, old))
        assert mine.shape == theirs.shape and np.abs(mine - theirs).max() <= 1, name
        if name != "grid.png":
            edge = on_edge[int(name.removesuffix(".png")), 0]
            assert np.array_equal(mine[~edge], theirs[~edge]), name
        else:
            changed = int((mine != theirs).sum())
    assert changed <= int(on_edge.sum())  # the grid holds the same 16 images
    # Sampling wrote nothing into the run folder.
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == sorted(
        p.relative_to(DATA / "v1-run").as_posix() for p in (DATA / "v1-run").rglob("*"))
