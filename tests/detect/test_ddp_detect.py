"""`ganforge detect train` on several processes (torchrun, DDP, gloo on the CPU), through the CLI as a
person runs it: `--nproc 2` and plain torchrun, at toy scale (a few steps of a small yolov1-s).

Two processes with a global batch B end where one process with batch B ends (BatchNorm synced over
the global batch); only rank 0 writes the run folder; resume on two processes is exact and another
world size warns; bad process counts and batches are one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import assert_ok, ganforge, one_error_line
from ganforge.checkpoint import list_checkpoints, load_checkpoint, module_state
from ganforge.detect.digits import load_digits_det
from ganforge.detect.write_dataset import write_dataset

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or sys.platform == "win32",
                                reason="torch.distributed with gloo")

# The `adam` recipe (no dropout) on a small yolov1-s (BatchNorm, FC 64): global batch 4, 2 per rank.
# channels_last=off: on the CPU, torch's own BatchNorm in channels_last (one process) already ends
# one SGD step about 3e-4 away from the same step in the contiguous layout, while GlobalBatchNorm
# (two processes) computes with plain ops that match the contiguous one; the reference is that.
TOY = ["model=yolov1-s", "fc_width=64", "batch_size=4", "threads=1", "workers=0", "pretrain_steps=0",
       "log_every=2", "eval_every=4", "predict_every=3", "checkpoint_every=4", "predict_images=4",
       "device=cpu", "dropout=0", "channels_last=off", "--quiet"]


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    """digits-det canvases (16 train, 4 val, 2 test) written in the Ultralytics layout."""
    root = tmp_path_factory.mktemp("digits-yolo-ddp")
    splits = {"train": load_digits_det("train", count=16), "val": load_digits_det("val", count=4),
              "test": load_digits_det("test", count=2)}
    return write_dataset(splits, root, "yolo")


def _weights(run: Path) -> dict[str, torch.Tensor]:
    tensors, _ = load_checkpoint(list_checkpoints(run / "checkpoints")[-1])
    return module_state(tensors, "net")


def _meta(run: Path) -> dict:
    return load_checkpoint(list_checkpoints(run / "checkpoints")[-1])[1]


def _rows(run: Path, kind: str = "train") -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("kind") == kind]


def _names(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if "tb" not in p.parts)


def _env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _error_lines(stderr: bytes) -> list[str]:
    return [l for l in stderr.decode().splitlines() if l.startswith("ganforge: error:")]


def test_two_processes_match_one_with_batchnorm_synced_and_only_rank_0_writes(toy_data, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["detect", "train", "adam", "--data", toy_data, "--steps", "4", *TOY]
    assert_ok(ganforge(*args, "--out", one))
    assert_ok(ganforge(*args, "--out", two, "--nproc", "2"))
    # The ranks make exactly one process's rows of each global batch (same indices, same
    # augmentation generators), the loss of each is divided by its 2 rows and DDP averages the two
    # gradients: one process's gradient on 4 rows. What differs is float32 summation order: the
    # BatchNorm statistics (GlobalBatchNorm all-reduces per-rank sums) and the gradient sums, about
    # 1e-7 relative. Adam moves each weight by about lr = 3e-4 per step whatever the gradient's
    # size, so a rounding difference in a gradient near 0 can at worst flip a coordinate's step:
    # 4 steps bound that at 4 * 2 * 3e-4 = 2.4e-3; 2e-4 is still tight enough to catch a wrong
    # batch slice, a wrong loss scale (x2) or per-rank BatchNorm statistics (below).
    a, b = _weights(one), _weights(two)
    assert a.keys() == b.keys()
    diff = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    assert diff < 2e-4, diff
    for r1, r2 in zip(_rows(one), _rows(two), strict=True):
        assert r1["step"] == r2["step"] and r1["images_seen"] == r2["images_seen"]
        for key in ("loss", "loss_coord", "loss_obj", "loss_noobj", "loss_cls"):
            assert r1[key] == pytest.approx(r2[key], rel=1e-4, abs=1e-5), key
    assert [r["step"] for r in _rows(two, "eval")] == [4]
    # Rank 0 alone wrote: the same files as one process (no stray file of rank 1), one log row per
    # step logged, one TensorBoard file, and both ranks' RNG states in the checkpoint.
    assert _names(one) == _names(two)
    assert [r["step"] for r in _rows(two)] == [2, 4]
    assert len(list((two / "tb").glob("events.*"))) == 1
    meta = _meta(two)
    assert meta["world_size"] == 2 and sorted(meta["rng"]) == ["0", "1"]
    assert json.loads((two / "summary.json").read_text())["images_seen"] == 4 * 4
    # The test can fail: per-rank BatchNorm (statistics of 2 images, not 4) ends elsewhere.
    per_rank = tmp_path / "per-rank"
    assert_ok(ganforge(*args, "--out", per_rank, "--nproc", "2", "sync_bn=false"))
    c = _weights(per_rank)
    assert max((a[k].double() - c[k].double()).abs().max().item() for k in a) > 2e-4


def test_resume_on_two_processes_is_exact_and_another_world_size_warns(toy_data, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    # A constant schedule: a cosine one reads the budget, and the cut run is first given 3 steps.
    args = ["detect", "train", "adam", "--data", toy_data, *TOY, "checkpoint_every=3", "eval_every=0",
            "schedule=constant"]
    assert_ok(ganforge(*args, "--steps", "6", "--out", whole, "--nproc", "2"))
    assert_ok(ganforge(*args, "--steps", "3", "--out", parts, "--nproc", "2"))
    err = assert_ok(ganforge("detect", "train", "--resume", parts, "--steps", "6", "--quiet", "--nproc", "2"))
    assert "warning" not in err
    a, b = _weights(whole), _weights(parts)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Step 3 stopped inside the window of steps 3-4: the checkpoint kept its partial sums.
    assert [r["step"] for r in _rows(parts)] == [2, 4, 6]
    for r1, r2 in zip(_rows(whole), _rows(parts), strict=True):
        assert r1["loss"] == pytest.approx(r2["loss"], abs=2e-6)
    # One process continues a two-process run, with a warning.
    err = assert_ok(ganforge("detect", "train", "--resume", parts, "--steps", "7", "--quiet"))
    assert "checkpointed by 2 process(es) and continues on 1" in err
    assert json.loads((parts / "summary.json").read_text())["steps"] == 7
    assert _meta(parts)["world_size"] == 1


def test_bad_process_counts_and_batches_are_one_line(toy_data, tmp_path):
    args = ["detect", "train", "adam", "--data", toy_data, "--steps", "2", *TOY]
    line = one_error_line(ganforge(*args, "--out", tmp_path / "a", "--nproc", "999"))
    assert "--nproc 999 is more than the" in line and "CPU core" in line
    line = one_error_line(ganforge(*args, "batch_size=5", "--out", tmp_path / "b", "--nproc", "2"))
    assert "batch_size 5 does not divide by the 2 processes" in line
    line = one_error_line(ganforge(*args, "--out", tmp_path / "c", "--nproc", "2", "--max-restarts", "-1"))
    assert "--max-restarts -1" in line
    assert not any((tmp_path / name).exists() for name in "abc")
    # Under torchrun itself: each rank meets the same bad input and rank 0 alone says so.
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "ganforge", *map(str, args), "batch_size=5", "--out", str(tmp_path / "d")],
                          capture_output=True, env=_env(), timeout=150)
    lines = _error_lines(proc.stderr)
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr.decode()[-3000:]
    assert "batch_size 5 does not divide by the 2 processes" in lines[0]
    assert not (tmp_path / "d").exists()
