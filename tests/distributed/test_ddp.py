"""Training on several processes (torchrun, DDP, gloo on the CPU), through the CLI as a person runs
it: `ganforge train ... --nproc 2`, plain torchrun, and two torchrun "machines" on 127.0.0.1.

Two processes with a global batch B end where one process with batch B ends; only rank 0 writes the
run folder; resume is exact; a signal stops every rank at one step boundary; a killed rank stops
the others with one line and the run resumes; torchrun's elastic restart continues by itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ganforge import distributed as dist
from ganforge.checkpoint import list_checkpoints, load_checkpoint, load_latest
from conftest import assert_ok, ganforge, one_error_line

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or sys.platform == "win32",
                                reason="torch.distributed with gloo")

MLP = ["seed004-mlp-mnist", "data=digits", "batch_size=16", "log_every=2", "sample_every=4", "--quiet"]
# BatchNorm in G and D, D updated on both terms at once (no_sync), G on the D step's own forward.
BN = ["default", "data=digits", "base_filters=4", "batch_size=16", "log_every=2", "sample_every=4", "--quiet"]
# One pass, two tapes (the DDP form of autograd.grad), dropout in D: per-rank RNG matters.
TF = ["tf-dcgan-mnist", "data=digits", "batch_size=16", "steps=6", "unit=step", "sample_every=3",
      "checkpoint_every=3", "log_every=1", "--quiet"]
SLOW = ["default", "data=digits", "base_filters=4", "batch_size=16", "log_every=1", "checkpoint_every=2",
        "sample_every=1000", "--quiet"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    _, tensors, _ = load_latest(run / "checkpoints", log=lambda *a: None)
    return {k: v for k, v in tensors.items() if k.startswith("module.")}


def _meta(run: Path) -> dict:
    return load_latest(run / "checkpoints", log=lambda *a: None)[2]


def _rows(run: Path, kind: str = "train") -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("kind") == kind]


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key].double(), b[key].double(), rtol=0, atol=atol, msg=key)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _popen(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ganforge", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env())


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
        assert time.monotonic() < end, "timed out"
        time.sleep(0.2)


def _workers(parent: int) -> dict[int, int]:
    """rank -> pid of the training processes below `parent` (read from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid != parent:
            continue
        for item in env:
            if item.startswith(b"RANK="):
                found[int(item[5:])] = int(entry.name)
    return found


def _error_lines(stderr: bytes) -> list[str]:
    return [l for l in stderr.decode().splitlines() if l.startswith("ganforge: error:")]


# ---- equivalence ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("loop", ["alternating", "simultaneous"])
def test_two_processes_match_one_on_the_mlp_recipe_and_only_rank_0_writes(tmp_path, loop):
    # simultaneous: the TF tutorial's one pass with two tapes, which under DDP runs as two
    # backward passes restricted to each net's parameters instead of torch.autograd.grad.
    one, two = tmp_path / "one", tmp_path / "two"
    assert_ok(ganforge("train", *MLP, f"loop={loop}", "--steps", "6", "--out", one))
    assert_ok(ganforge("train", *MLP, f"loop={loop}", "--steps", "6", "--out", two, "--nproc", "2"))
    # Global batch 16 as 2 x 8 with gradients averaged by DDP == one batch of 16: float32 rounding only.
    _close(_weights(one), _weights(two), atol=1e-5)
    for a, b in zip(_rows(one), _rows(two), strict=True):
        assert a["step"] == b["step"] and a["images_seen"] == b["images_seen"]
        for key in ("d_loss", "g_loss", "d_real", "d_fake", "d_acc"):
            assert abs(a[key] - b[key]) < 1e-4, key
    # Rank 0 alone wrote: one log line per step logged, one TensorBoard file, the same files as
    # one process, and both ranks' RNG states in the checkpoint.
    assert [r["step"] for r in _rows(two)] == [2, 4, 6]
    assert len(list((two / "tb").glob("events.*"))) == 1
    names = lambda run: sorted(str(p.relative_to(run)) for p in run.rglob("*") if "tb" not in p.parts)
    assert names(one) == names(two)
    meta = _meta(two)
    assert meta["world_size"] == 2 and sorted(meta["rng"]) == ["0", "1"]
    assert json.loads((two / "summary.json").read_text())["images_seen"] == 6 * 16


def test_two_processes_match_one_with_batchnorm_synced(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert_ok(ganforge("train", *BN, "--steps", "4", "--out", one))
    assert_ok(ganforge("train", *BN, "--steps", "4", "--out", two, "--nproc", "2"))
    # GlobalBatchNorm all-reduces the per-rank sums of x and of (x - mean)^2 where one process
    # reduces the whole batch in one kernel: the same statistics up to float32 summation order
    # (about 1e-7 relative per step). Adam divides by sqrt(v), so a step's weight change is about
    # lr = 2e-4 whatever the gradient's size, and a rounding difference in a gradient near 0 can
    # flip a coordinate's step: 4 steps move a weight by at most 4 * 2e-4 * 2 = 1.6e-3, and 1e-4
    # is tight enough to catch a wrong statistic (per-rank BatchNorm misses it, below).
    _close(_weights(one), _weights(two), atol=1e-4)
    per_rank = tmp_path / "per-rank"
    assert_ok(ganforge("train", *BN, "--steps", "4", "--out", per_rank, "--nproc", "2", "sync_bn=false"))
    a, b = _weights(one), _weights(per_rank)
    diff = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    assert diff > 1e-4  # the test can fail: statistics of 8 images are not those of 16


# ---- resume ---------------------------------------------------------------------------------------------

def test_resume_on_two_processes_is_exact_and_another_world_size_warns(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert_ok(ganforge("train", *TF, "--out", whole, "--nproc", "2"))
    assert_ok(ganforge("train", *TF, "--steps", "3", "--out", parts, "--nproc", "2"))
    assert_ok(ganforge("train", "--resume", parts, "--steps", "6", "--quiet", "--nproc", "2"))
    a, b = _weights(whole), _weights(parts)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["d_loss"] for r in _rows(whole)] == [r["d_loss"] for r in _rows(parts)]
    # One process continues a two-process run, with a warning.
    err = assert_ok(ganforge("train", "--resume", parts, "--steps", "7", "--quiet"))
    assert "checkpointed by 2 process(es) and continues on 1" in err
    assert json.loads((parts / "summary.json").read_text())["steps"] == 7
    assert _meta(parts)["world_size"] == 1


# ---- signals and faults ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_to_the_launcher_stops_every_rank_at_one_step_and_saves(tmp_path, sig, code):
    run = tmp_path / "run"
    proc = _popen("train", *SLOW, "--steps", "100000", "--out", run, "--nproc", "2")
    _wait_for(lambda: (run / "metrics.jsonl").is_file() and len(_rows(run)) >= 3, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == code, err.decode()[-3000:]
    assert "Traceback" not in err.decode()
    meta = _meta(run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["stop_reason"] == "signal"
    # The stop checkpoint was gathered from both ranks at the step the summary records.
    assert meta["step"] == summary["steps"] and sorted(meta["rng"]) == ["0", "1"]
    assert _error_lines(err) == [l for l in _error_lines(err) if f"stopped by signal {int(sig)}" in l]
    assert len(_error_lines(err)) == 1
    assert f"`ganforge train --nproc 2 --resume {run}`" in _error_lines(err)[0]  # the hint keeps --nproc


def test_a_killed_rank_stops_the_others_with_one_line_and_the_run_resumes(tmp_path):
    run = tmp_path / "run"
    proc = _popen("train", *SLOW, "--steps", "100000", "--out", run, "--nproc", "2")
    _wait_for(lambda: len(list_checkpoints(run / "checkpoints")) >= 1 and len(_rows(run)) >= 3, proc)
    workers = _workers(proc.pid)
    assert sorted(workers) == [0, 1], workers
    os.kill(workers[1], signal.SIGKILL)
    start = time.monotonic()
    _, err = proc.communicate(timeout=90)
    assert time.monotonic() - start < 60
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith("ganforge: error: rank 1 ") and "SIGKILL" in lines[0], lines
    # Nothing is corrupted: the latest checkpoint verifies, and the run goes on from it.
    at = _meta(run)["step"]
    assert_ok(ganforge("train", "--resume", run, "--steps", str(at + 2), "--quiet", "--nproc", "2"))
    assert json.loads((run / "summary.json").read_text())["steps"] == at + 2


def test_elastic_restart_continues_from_the_latest_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = _popen("train", *SLOW, "--steps", "40", "--out", run, "--nproc", "2", "--max-restarts", "1")
    _wait_for(lambda: len(list_checkpoints(run / "checkpoints")) >= 1 and len(_rows(run)) >= 3, proc)
    os.kill(_workers(proc.pid)[1], signal.SIGKILL)
    _, err = proc.communicate(timeout=150)
    assert proc.returncode == 0, err.decode()[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["steps"] == 40
    assert [e for e in _rows(run, "event") if e.get("event") == "resumed"]


# ---- many machines ----------------------------------------------------------------------------------------

def test_two_torchrun_nodes_on_localhost_train_and_resume(tmp_path):
    run = tmp_path / "run"

    def both(*args) -> None:
        port = _free_port()
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "test",
               "-m", "ganforge", "train", *map(str, args)]
        nodes = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
                 for _ in range(2)]
        for node in nodes:
            out, err = node.communicate(timeout=150)
            assert node.returncode == 0, err.decode()[-3000:]

    both(*MLP, "--steps", "4", "--out", run)
    assert _meta(run)["world_size"] == 2 and _meta(run)["step"] == 4
    both("--resume", run, "--steps", "6", "--quiet")
    assert json.loads((run / "summary.json").read_text())["steps"] == 6
    assert [e for e in _rows(run, "event") if e.get("event") == "resumed"]


# ---- bad input ------------------------------------------------------------------------------------------

def test_bad_process_counts_and_batches_are_one_line(tmp_path):
    line = one_error_line(ganforge("train", *MLP, "--steps", "2", "--out", tmp_path / "a", "--nproc", "999"))
    assert "--nproc 999 is more than the" in line and "CPU core" in line
    line = one_error_line(ganforge("train", *MLP, "batch_size=15", "--steps", "2", "--out", tmp_path / "b",
                                   "--nproc", "2"))
    assert "batch_size 15 does not divide by the 2 processes" in line
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # Under torchrun itself: each rank meets the same bad input and rank 0 alone says so.
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "ganforge", "train", *MLP, "batch_size=15", "--steps", "2",
                           "--out", str(tmp_path / "c")], capture_output=True, env=_env(), timeout=150)
    lines = _error_lines(proc.stderr)
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr.decode()[-3000:]
    assert "batch_size 15 does not divide by the 2 processes" in lines[0]


def test_resume_hints_keep_the_process_count(monkeypatch):
    assert dist.relaunch("ganforge train --resume") == "ganforge train --resume"
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert dist.relaunch("ganforge train --resume") == "ganforge train --nproc 2 --resume"
    assert dist.relaunch("ganforge detect train --resume") == "ganforge detect train --nproc 2 --resume"
