"""`ganforge translate train` on several processes (torchrun, DDP, gloo on the CPU), through the CLI
as a person runs it: `--nproc 2` at toy scale (ngf 4, a few steps of batch 4, 2 rows per rank).

Two processes with a global batch B end where one process with batch B ends (pix2pix: BatchNorm
synced over the global batch; CycleGAN: its image pools hold the global batch's fakes, as in one
process); only rank 0 writes the run folder; a run stopped on two processes resumes on two and
continues to where one process ends; another process count warns; a batch that does not split is
one line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import assert_ok, ganforge, one_error_line
from ganforge.checkpoint import load_latest
from ganforge.cli import main

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or sys.platform == "win32",
                                reason="torch.distributed with gloo")

# A constant schedule (decay_from=1): a run cut at step 4 and extended to 6 steps on the schedule a
# 6-step run has. dropout=0: dropout draws from a stream of each rank's own.
TOY = ["ngf=4", "ndf=4", "threads=1", "batch_size=4", "log_every=2", "sample_every=2", "checkpoint_every=2",
       "sample_images=2", "dropout=0", "decay_from=1", "device=cpu", "--quiet"]


def _state(run: Path) -> tuple[dict[str, torch.Tensor], dict]:
    _, tensors, meta = load_latest(run / "checkpoints", log=lambda *a: None)
    return tensors, meta


def _rows(run: Path, kind: str = "train") -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("kind") == kind]


def _names(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if "tb" not in p.parts)


def _largest_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys) -> float:
    keys = list(keys)
    assert keys
    return max((a[k].double() - b[k].double()).abs().max().item() for k in keys)


def test_pix2pix_on_two_processes_ends_where_one_does_and_resumes(tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["translate", "train", "pix2pix-small", "--data", "thin2thick", *TOY]
    assert main([*args, "--steps", "6", "--out", str(one)]) == 0
    assert_ok(ganforge(*args, "--steps", "4", "--out", two, "--nproc", "2"))
    # Rank 0 alone wrote: no stray file of rank 1, and both ranks' RNG states in the checkpoint.
    _, meta = _state(two)
    assert meta["world_size"] == 2 and sorted(meta["rng"]) == ["0", "1"] and meta["step"] == 4
    assert [r["step"] for r in _rows(two)] == [2, 4]
    err = assert_ok(ganforge("translate", "train", "--resume", two, "--steps", "6", "--quiet", "--nproc", "2"))
    assert "warning" not in err
    assert _names(one) == _names(two)
    # Each rank makes exactly one process's rows of each global batch, each loss is a mean over its
    # 2 rows and DDP averages the gradients: one process's gradient on 4 rows, up to float32
    # summation order (about 1e-6 here). Adam moves a weight by about lr = 2e-4 a step whatever its
    # gradient's size, so a wrong slice, loss scale or per-rank BatchNorm is far above 1e-4.
    (a, meta_a), (b, meta_b) = _state(one), _state(two)
    assert meta_a["step"] == meta_b["step"] == 6
    assert _largest_gap(a, b, (k for k in a if k.startswith("module."))) < 1e-4
    for r1, r2 in zip(_rows(one), _rows(two), strict=True):
        assert r1["step"] == r2["step"] and r1["images_seen"] == r2["images_seen"]
        for key in ("d_real", "d_fake", "g_gan", "g_l1"):
            assert r1[key] == pytest.approx(r2[key], rel=1e-4, abs=1e-5), key
    assert json.loads((two / "summary.json").read_text())["images_seen"] == 6 * 4
    # One process continues a two-process run, and says what differs.
    capsys.readouterr()
    assert main(["translate", "train", "--resume", str(two), "--steps", "7", "--quiet"]) == 0
    assert "checkpointed by 2 process(es) and continues on 1" in capsys.readouterr().err
    assert _state(two)[1]["world_size"] == 1


def test_cyclegan_pools_on_two_processes_hold_what_one_process_holds(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["translate", "train", "cyclegan-small", "--data", "thin2thick-unpaired", "--steps", "4", "pool_size=6",
            *TOY]
    assert main([*args, "--out", str(one)]) == 0
    assert_ok(ganforge(*args, "--out", two, "--nproc", "2"))
    (a, meta_a), (b, meta_b) = _state(one), _state(two)
    assert meta_a["pools"] == meta_b["pools"] == {"A": {"size": 6, "count": 6}, "B": {"size": 6, "count": 6}}
    # The pools' images are the same fakes in the same places (per-rank pools would hold half of
    # them, in other places).
    assert _largest_gap(a, b, ("pool.A", "pool.B")) < 1e-4
    # The conv biases just before an InstanceNorm have a true gradient of 0 (the norm removes them),
    # so theirs is rounding noise that Adam turns into steps of about lr either way: the weights
    # are compared.
    assert _largest_gap(a, b, (k for k in a if k.startswith("module.") and k.endswith(".weight"))) < 1e-4


def test_a_batch_that_does_not_split_is_one_line(tmp_path):
    line = one_error_line(ganforge("translate", "train", "pix2pix-small", "--data", "thin2thick", "--steps", "2",
                                   *TOY, "batch_size=5", "--out", tmp_path / "run", "--nproc", "2"))
    assert "batch_size 5 does not divide by the 2 processes" in line
    assert not (tmp_path / "run").exists()
