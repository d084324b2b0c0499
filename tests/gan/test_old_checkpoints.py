"""Checkpoints of the first layout still load and resume exactly.

`tests/fixtures/v1-run` was written by ganforge 0.1.0 (checkpoint format 1: tensors named `G.`, `D.`,
`EMA.`, optimizers `opt_g`/`opt_d`, one RNG state, and each discriminator one `net` Sequential):
the fully connected recipe on `digits` at 8x8 with hidden widths 16 and an EMA, checkpointed at
step 2. `tests/fixtures/v1-run-expected` is that version's own checkpoint at step 4 of the same run.

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

import pytest
import torch

from ganforge.checkpoint import list_checkpoints, load_checkpoint, module_state, upgrade_state
from ganforge.cli import main
from ganforge.gan.config import GANConfig
from ganforge.gan.models import build_models

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
