"""Checkpoints round-trip exactly, survive crashes at every write, and never unpickle anything."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ganforge import checkpoint as ck
from ganforge.errors import CheckpointError, ConfigError

FINAL_FILES = {ck.TENSORS_FILE, ck.META_FILE, ck.MANIFEST_FILE}


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "G.weight": torch.randn(4, 3, generator=g),
        "D.weight": torch.randn(3, generator=g).to(torch.bfloat16),
        "half": torch.randn(2, 2, generator=g).half(),
        "count": torch.tensor([seed, 2**40], dtype=torch.int64),
        "mask": torch.tensor([True, False]),
        "rng": torch.Generator().manual_seed(seed).get_state(),  # uint8
        "scalar": torch.tensor(float(seed)),
    }


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def _assert_tidy(root: Path, hidden_ok: bool = False) -> None:
    """Every visible entry is a complete checkpoint that verifies; no temporary is left behind
    (``hidden_ok``: right after a failed save, hidden leftovers wait for the next save to tidy)."""
    for entry in root.iterdir():
        if entry.name.startswith(".") and hidden_ok:
            continue
        assert not entry.name.startswith("."), entry
        assert {p.name for p in entry.iterdir()} == FINAL_FILES
        ck.load_checkpoint(entry)


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int, offset: int) -> None:
    for i in range(steps):
        x = torch.randn(16, 5, generator=torch.Generator().manual_seed(offset + i))
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()


# ------------------------------------------------------------------------------------------ round trip


def test_tensors_and_meta_round_trip(tmp_path: Path) -> None:
    shared = torch.arange(10.0)
    tensors = {**_tensors(1), "view": shared[2:5], "tied_a": shared, "tied_b": shared,
               "strided": torch.arange(12.0).reshape(3, 4).t()}
    meta = {"config": {"recipe": "dcgan", "lr": 2e-4, "betas": [0.5, 0.999]}, "step": 120,
            "epoch": 3, "images_seen": 7680, "models": ["G", "D"], "none": None}
    path = ck.save_checkpoint(tmp_path, "step-000000120", tensors, meta)
    loaded, loaded_meta = ck.load_checkpoint(path)
    _assert_same({k: v.contiguous() for k, v in tensors.items()}, loaded)
    assert loaded_meta == meta
    manifest = json.loads((path / ck.MANIFEST_FILE).read_text())
    assert manifest["format"] == "ganforge-checkpoint" and manifest["version"] == ck.FORMAT_VERSION
    assert manifest["step"] == 120 and set(manifest["files"]) == {ck.TENSORS_FILE, ck.META_FILE}


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.5, 0.999)),
    lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, nesterov=True),
], ids=["adam", "sgd-momentum"])
def test_optimizer_resume_is_bit_identical(tmp_path: Path, make_opt) -> None:
    model = _mlp()
    opt = make_opt(model.parameters())
    _train(model, opt, 3, offset=0)
    opt_tensors, opt_meta = ck.pack_optimizer(opt.state_dict(), "opt_G")
    assert all(k.startswith("opt_G.state.") for k in opt_tensors)
    path = ck.save_checkpoint(tmp_path, "step-000000003",
                              {**{f"G.{k}": v for k, v in model.state_dict().items()}, **opt_tensors},
                              {"opt_G": opt_meta})

    tensors, meta = ck.load_checkpoint(path)
    fresh = _mlp()
    fresh.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("G.")})
    fresh_opt = make_opt(fresh.parameters())
    fresh_opt.load_state_dict(ck.unpack_optimizer(tensors, meta["opt_G"], "opt_G"))
    assert fresh_opt.param_groups[0].get("betas", None) == opt.param_groups[0].get("betas", None)

    _train(model, opt, 3, offset=3)
    _train(fresh, fresh_opt, 3, offset=3)
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)


def test_rng_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    random.gauss(0, 1)  # leaves a cached Gaussian in both generators: state beyond the key array
    np.random.randn(1)
    rng_tensors, rng_meta = ck.capture_rng(cuda=False)
    expected = (random.random(), random.gauss(0, 1), np.random.randn(3).tolist(), torch.rand(4))
    path = ck.save_checkpoint(tmp_path, "step-000000001", rng_tensors, {"rng": rng_meta})
    tensors, meta = ck.load_checkpoint(path)
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    ck.restore_rng(tensors, meta["rng"])
    got = (random.random(), random.gauss(0, 1), np.random.randn(3).tolist(), torch.rand(4))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])


# ------------------------------------------------------------------------------------------ atomicity


def _inject(monkeypatch: pytest.MonkeyPatch, fail_at: int, err: OSError | None = None) -> list[int]:
    """Make the ``fail_at``-th call of os.write/fsync/replace raise; returns a call counter."""
    calls = [0]
    for fn_name in ("write", "fsync", "replace"):
        real = getattr(os, fn_name)

        def wrapped(*args, _real=real, _name=fn_name):
            calls[0] += 1
            if calls[0] == fail_at + 1:
                if _name == "write":  # a torn write: half the bytes land, then the error
                    _real(args[0], bytes(args[1][: len(args[1]) // 2]))
                raise err or OSError(errno.EIO, "Input/output error")
            return _real(*args)

        monkeypatch.setattr(os, fn_name, wrapped)
    return calls


@pytest.mark.parametrize("name", ["step-000000002", "best"])
def test_crash_at_every_write_leaves_a_good_checkpoint(tmp_path: Path, name: str) -> None:
    ck.save_checkpoint(tmp_path / "count", "best", _tensors(1), {})
    with pytest.MonkeyPatch.context() as mp:  # how many write/fsync/replace calls one save makes
        calls = _inject(mp, fail_at=10**9)
        ck.save_checkpoint(tmp_path / "count", name, _tensors(2), {})
    failures = 0
    for fail_at in range(calls[0] + 2):
        root = tmp_path / f"crash-{fail_at}"
        ck.save_checkpoint(root, "step-000000001", _tensors(1), {"v": 1})
        ck.save_checkpoint(root, "best", _tensors(1), {"v": 1})
        with pytest.MonkeyPatch.context() as mp:
            _inject(mp, fail_at)
            try:  # keep_last=1: pruning step 1 before step 2 commits would lose everything
                ck.save_checkpoint(root, name, _tensors(2), {"v": 2}, keep_last=1)
            except CheckpointError as err:
                failures += 1
                assert "\n" not in str(err) and "Input/output error" in str(err)
        _assert_tidy(root, hidden_ok=True)
        path, tensors, meta = ck.load_latest(root)
        expected = 2 if path.name == name else 1
        assert meta == {"v": expected}
        _assert_same(tensors, _tensors(expected))
        assert (root / "best").is_dir()  # a failed swap puts the previous "best" back
        _, best_meta = ck.load_checkpoint(root / "best")
        assert best_meta["v"] in (1, 2)
        ck.save_checkpoint(root, "step-000000003", _tensors(3), {"v": 3})  # tidies any leftovers
        _assert_tidy(root)
    assert failures == calls[0]  # every injected failure surfaced as a CheckpointError


def _save_forever(root: str) -> None:
    for step in range(1, 10_000):
        ck.save_checkpoint(root, f"step-{step:09d}", _tensors(step), {"step": step}, keep_last=2)
        ck.save_checkpoint(root, "best", _tensors(step), {"step": step})


@pytest.mark.skipif(sys.platform != "linux", reason="needs fork and SIGKILL")
def test_sigkill_mid_save_leaves_a_good_checkpoint(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    for i, delay in enumerate([0.05, 0.13, 0.21]):
        root = tmp_path / str(i)
        ck.save_checkpoint(root, "step-000000000", _tensors(0), {"step": 0})
        child = ctx.Process(target=_save_forever, args=(str(root),))
        child.start()
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        path, tensors, meta = ck.load_latest(root)
        _assert_same(tensors, _tensors(meta["step"]))
        if meta["step"] >= 2:  # "best" of step 1 was committed before step 2 began
            ck.load_checkpoint(root / "best")
        ck.save_checkpoint(root, "step-999999999", _tensors(9), {"step": 9})  # tidies leftovers
        _assert_tidy(root)


def test_half_swapped_states_are_found_and_repaired(tmp_path: Path) -> None:
    old = ck.save_checkpoint(tmp_path / "a", "best", _tensors(1), {"v": 1})
    new = ck.save_checkpoint(tmp_path / "b", "step-000000005", _tensors(2), {"v": 2})
    root = tmp_path / "run"
    root.mkdir()
    # Crash between "rename old away" and "rename new in": only hidden copies exist.
    os.replace(old, root / ".best.old-0a0a")
    assert ck.load_checkpoint(root / "best")[1] == {"v": 1}
    os.replace(tmp_path / "a", tmp_path / "a2")
    ck.save_checkpoint(tmp_path / "a", "best", _tensors(2), {"v": 2})
    os.replace(tmp_path / "a" / "best", root / ".best.tmp-0b0b")
    assert ck.load_checkpoint(root / "best")[1] == {"v": 2}  # the committed new copy wins
    os.replace(new, root / ".step-000000005.tmp-0c0c")
    (root / ".step-000000006.tmp-0d0d").mkdir()  # uncommitted: never found
    assert [p.name for p in ck.list_checkpoints(root)] == [".step-000000005.tmp-0c0c"]
    assert ck.load_latest(root)[2] == {"v": 2}

    ck.save_checkpoint(root, "step-000000007", _tensors(3), {"v": 3})
    assert sorted(p.name for p in root.iterdir()) == ["best", "step-000000005", "step-000000007"]
    assert ck.load_checkpoint(root / "best")[1] == {"v": 2}
    _assert_tidy(root)


def test_disk_full_is_one_clear_line_and_keeps_the_previous(tmp_path: Path, monkeypatch) -> None:
    ck.save_checkpoint(tmp_path, "step-000000001", _tensors(1), {"v": 1})
    _inject(monkeypatch, 0, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(CheckpointError, match="disk full") as info:
        ck.save_checkpoint(tmp_path, "step-000000002", _tensors(2), {"v": 2})
    monkeypatch.undo()
    assert "\n" not in str(info.value) and "--resume" in str(info.value)
    _assert_tidy(tmp_path)
    assert ck.load_latest(tmp_path)[0].name == "step-000000001"


@pytest.mark.slow
def test_disk_full_on_a_real_tiny_tmpfs(tmp_path: Path) -> None:
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        small = {"w": torch.zeros(1000)}
        ck.save_checkpoint(mount, "step-000000001", small, {"v": 1})
        with pytest.raises(CheckpointError, match="disk full"):
            ck.save_checkpoint(mount, "step-000000002", {"w": torch.zeros(100_000)}, {"v": 2})
        _assert_tidy(mount)
        assert ck.load_latest(mount)[2] == {"v": 1}
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_nan_weights_are_refused_and_the_previous_stays(tmp_path: Path) -> None:
    ck.save_checkpoint(tmp_path, "step-000000001", _tensors(1), {"v": 1})
    for bad in (torch.tensor([1.0, float("nan")]), torch.tensor([float("inf")], dtype=torch.bfloat16)):
        with pytest.raises(CheckpointError, match="NaN or Inf"):
            ck.save_checkpoint(tmp_path, "step-000000002", {**_tensors(2), "G.bad": bad}, {"v": 2})
    _assert_tidy(tmp_path)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step-000000001"]


# ------------------------------------------------------------------------------------------ corruption


def _flip_byte(path: Path, offset: int = -5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_newest_falls_back_with_one_line(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        ck.save_checkpoint(tmp_path, f"step-{step:09d}", _tensors(step), {"step": step}, keep_last=5)
    _flip_byte(tmp_path / "step-000000003" / ck.TENSORS_FILE)
    lines: list[str] = []
    path, tensors, meta = ck.load_latest(tmp_path, log=lines.append)
    assert path.name == "step-000000002" and meta == {"step": 2}
    assert len(lines) == 1 and "step-000000003" in lines[0] and "\n" not in lines[0]

    for step in (1, 2):
        _flip_byte(tmp_path / f"step-{step:09d}" / ck.TENSORS_FILE, offset=10)
    with pytest.raises(CheckpointError, match="cannot be resumed"):
        ck.load_latest(tmp_path, log=lines.append)
    with pytest.raises(CheckpointError, match="cannot be resumed"):
        ck.load_latest(tmp_path / "empty")


def _rewrite(path: Path, file_name: str, edit) -> None:
    """Edit one file and re-seal the manifest, as an attacker or a newer ganforge would."""
    doc = json.loads((path / file_name).read_text())
    edit(doc)
    data = json.dumps(doc).encode()
    (path / file_name).write_bytes(data)
    if file_name != ck.MANIFEST_FILE:
        manifest = json.loads((path / ck.MANIFEST_FILE).read_text())
        manifest["files"][file_name] = {"sha256": ck.sha256_hex(data), "bytes": len(data)}
        (path / ck.MANIFEST_FILE).write_text(json.dumps(manifest))


def test_bad_manifests_and_versions_are_refused(tmp_path: Path) -> None:
    newer = rf"made by a newer ganforge \(format 99 > {ck.FORMAT_VERSION}\): upgrade ganforge"
    cases = {
        "hash": (ck.MANIFEST_FILE, lambda d: d["files"][ck.META_FILE].update(sha256="0" * 64), "checksum"),
        "newer manifest": (ck.MANIFEST_FILE, lambda d: d.update(version=99), newer),
        "newer meta": (ck.META_FILE, lambda d: d.update(version=99), newer),
        "traversal": (ck.MANIFEST_FILE, lambda d: d["files"].update({"../x": {}}), "unexpected file"),
    }
    for case, (file_name, edit, message) in cases.items():
        path = ck.save_checkpoint(tmp_path / case.replace(" ", "_"), "best", _tensors(), {})
        _rewrite(path, file_name, edit)
        with pytest.raises(CheckpointError, match=message):
            ck.load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        ck.load_checkpoint(tmp_path / "missing")
    (tmp_path / "partial").mkdir()
    with pytest.raises(CheckpointError, match="no MANIFEST.json"):
        ck.load_checkpoint(tmp_path / "partial")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a ganforge checkpoint"):
        ck.load_checkpoint(tmp_path / "notes.txt")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickles_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    raw = tmp_path / "evil.bin.weights"
    raw.write_bytes(pickle.dumps({"w": _Evil(marker)}, protocol=2))
    zipped = tmp_path / "evil.pt"
    torch.save({"w": _Evil(marker)}, zipped)
    for path in (raw, zipped):
        for load in (ck.load_checkpoint, ck.refuse_pickle):
            with pytest.raises(CheckpointError, match="pickle-based checkpoint, which can run code"):
                load(path)
        with pytest.raises(CheckpointError, match="could run code"):
            ck.torch_load_weights_only(path)
    # A pickle disguised as the tensors file of a correctly sealed checkpoint.
    path = ck.save_checkpoint(tmp_path / "ckpts", "best", _tensors(), {})
    data = zipped.read_bytes()
    (path / ck.TENSORS_FILE).write_bytes(data)
    manifest = json.loads((path / ck.MANIFEST_FILE).read_text())
    manifest["files"][ck.TENSORS_FILE] = {"sha256": ck.sha256_hex(data), "bytes": len(data)}
    (path / ck.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="corrupt"):
        ck.load_checkpoint(path)
    assert not marker.exists()


def test_plain_weights_import(tmp_path: Path) -> None:
    weights = {"w": torch.randn(3), "b": torch.zeros(2, dtype=torch.int64)}
    torch.save(weights, tmp_path / "plain.pt")
    _assert_same(ck.torch_load_weights_only(tmp_path / "plain.pt"), weights)
    with pytest.raises(CheckpointError, match="no weights file"):
        ck.torch_load_weights_only(tmp_path / "absent.pt")


# ------------------------------------------------------------------------------------------ pruning


def test_pruning_keeps_newest_milestones_and_named(tmp_path: Path) -> None:
    for step in range(1, 7):
        ck.save_checkpoint(tmp_path, f"step-{step:09d}", _tensors(step), {"step": step},
                           keep_last=2, milestone=step == 2)
        ck.save_checkpoint(tmp_path, "best", _tensors(step), {"step": step}, keep_last=2)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == [
        "step-000000002", "step-000000005", "step-000000006"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best", "step-000000002", "step-000000005", "step-000000006"]
    assert ck.load_checkpoint(tmp_path / "best")[1] == {"step": 6}
    _assert_tidy(tmp_path)
    with pytest.raises(ConfigError, match="keep_last"):
        ck.save_checkpoint(tmp_path, "step-000000007", {}, {}, keep_last=0)
    with pytest.raises(CheckpointError, match="invalid checkpoint name"):
        ck.save_checkpoint(tmp_path, "../escape", {}, {})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rng_and_device_load(tmp_path: Path) -> None:
    rng_tensors, rng_meta = ck.capture_rng()
    assert rng_meta["cuda_devices"] == torch.cuda.device_count()
    expected = torch.rand(4, device="cuda")
    path = ck.save_checkpoint(tmp_path, "best", {**rng_tensors, "w": expected}, {"rng": rng_meta})
    tensors, meta = ck.load_checkpoint(path, device="cuda")
    assert tensors["w"].is_cuda and torch.equal(tensors["w"], expected)
    ck.restore_rng(tensors, meta["rng"])
    assert torch.equal(torch.rand(4, device="cuda"), expected)
