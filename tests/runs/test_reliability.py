"""Never lose a run (issue 5), proven end to end through the real CLI and training loop.

kill -9 at random moments (half of them inside a checkpoint write), SIGINT/SIGTERM, a second signal
mid-save, crashes and a full disk inside training saves, malicious and mismatched checkpoints,
hostile data, NaN steps and collapse alarms. Runs that must match are compared with an
uninterrupted reference bit for bit. This is the CI part (a handful of trials); the long version is
`python bench/soak.py --trials 20`, with results in docs/RELIABILITY.md.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import signal
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "soak"))
import reliability_harness as h  # noqa: E402

from ganforge import checkpoint as ck  # noqa: E402
from ganforge import losses  # noqa: E402
from ganforge.cli import main  # noqa: E402
from conftest import write_images, write_mnist, write_tar  # noqa: E402

STEPS = 20  # every compared run ends here; the reference keeps a checkpoint of each step
needs_fork = pytest.mark.skipif(sys.platform != "linux", reason="needs fork and SIGKILL")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANFORGE_CACHE", str(root / "cache"))
        return h.reference_run(root, STEPS)


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("ganforge: error: "), err  # no traceback
    return lines[0]


def _tree(root: Path) -> dict[str, str]:
    """Every file under `root` with a hash of its bytes: to prove that nothing changed."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _small_run(tmp_path: Path, capsys, steps: int = 2, *extra: str) -> Path:
    run = tmp_path / "run"
    code, _, err = _cli(h.train_argv(run, steps, "checkpoint_every=1", "keep_last=100", *extra), capsys)
    assert code == 0, err
    return run


# ---- kill -9 -------------------------------------------------------------------------------------

@needs_fork
def test_kill9_at_random_moments_then_resume_is_bit_identical(tmp_path, reference):
    rng = random.Random(2024)
    results = [h.kill_trial(i, tmp_path, reference, STEPS, rng=rng, target=target)
               for i, target in enumerate(["save", "random", "save", "random"])]
    for r in results:
        assert r.identical, r
        assert r.resumed_from == r.killed_after_step  # from the newest committed checkpoint
    in_save = [r for r in results if r.stopped.startswith("save")]
    assert len(in_save) >= 2, [r.stopped for r in results]  # >= 30% of kills inside a write


# ---- signals --------------------------------------------------------------------------------------

@needs_fork
@pytest.mark.parametrize(("signum", "mode", "code"), [
    (signal.SIGTERM, "fork", 143),
    (signal.SIGINT, "fork", 130),
    # The same through a fresh `python -m ganforge`: its imports alone take 5-20 s on two busy cores.
    pytest.param(signal.SIGTERM, "process", 143, marks=pytest.mark.slow),
], ids=["SIGTERM", "SIGINT", "SIGTERM-process"])
def test_signal_checkpoints_at_the_step_boundary_and_resumes_exactly(tmp_path, reference, signum, mode,
                                                                     code):
    r = h.signal_trial(tmp_path, reference, STEPS, signum, mode=mode)
    assert r.exit_code == code, r.output
    assert 2 <= r.stopped_at < STEPS
    assert r.checkpoints[-1] == r.stopped_at  # saved at the step it stopped
    assert f"stopped by signal {int(signum)} at step {r.stopped_at}" in r.output and "--resume" in r.output
    assert "Traceback" not in r.output
    assert r.identical, r.differences


@needs_fork
def test_second_signal_during_the_save_exits_at_once_without_damage(tmp_path, reference):
    r = h.second_signal_trial(tmp_path, reference, STEPS)
    assert r.exit_code == 143 and "second signal: exiting now" in r.output, r.output
    assert r.where.startswith("save:"), r.where  # the save it cut short is only a hidden folder
    assert r.identical, r.differences


# ---- crashes and a full disk inside training saves -------------------------------------------------

@needs_fork
def test_crash_inside_a_training_save_keeps_the_previous_checkpoint(tmp_path, reference):
    # One save makes 15 write/fsync/replace calls: 0 tears the tensors file, 5 fails the meta
    # file's fsync, 13 fails the rename into place (after the manifest committed the hidden copy).
    for fail_at in (0, 5, 13):
        r = h.injection_trial(fail_at, tmp_path, reference, STEPS, fail_at=fail_at, arm_after=3,
                              error=OSError(errno.EIO, "Input/output error"))
        assert r.exit_code == 2 and "Input/output error" in r.message and "--resume" in r.message, r
        assert r.last_good == 3, r
        assert r.identical, r


@needs_fork
def test_disk_full_write_hook_clear_exit_and_resumable(tmp_path, reference):
    r = h.injection_trial(0, tmp_path, reference, STEPS, fail_at=0, arm_after=4, sticky=True,
                          error=OSError(errno.ENOSPC, "No space left on device"))
    assert r.exit_code == 2 and r.last_good == 4, r
    run = tmp_path / "inject-00"
    assert r.message == (f"ganforge: error: disk full while saving checkpoint to {run}/checkpoints/"
                         f"step-000000005: free some space and resume with `ganforge train --resume {run}`")
    assert r.identical, r  # "freeing space" = resuming without the hook


@needs_fork
@pytest.mark.slow
def test_disk_full_on_a_real_tmpfs(tmp_path, reference):
    result = h.tmpfs_trial(tmp_path, reference, STEPS)
    if result is None:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    assert result.exit_code == 2 and ("disk full" in result.message or "No space left" in result.message)
    assert result.identical, result


# ---- malicious, corrupt and mismatched checkpoints ----------------------------------------------------

class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _reseal(path: Path, file_name: str, data: bytes) -> None:
    """Replace one file of a checkpoint and update its manifest, as an attacker would."""
    (path / file_name).write_bytes(data)
    manifest = json.loads((path / ck.MANIFEST_FILE).read_text())
    manifest["files"][file_name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (path / ck.MANIFEST_FILE).write_text(json.dumps(manifest))


def _edit_meta(path: Path, edit) -> None:
    doc = json.loads((path / ck.META_FILE).read_text())
    edit(doc)
    _reseal(path, ck.META_FILE, json.dumps(doc).encode())


@pytest.mark.parametrize("attack", ["pickle", "hash"])
def test_malicious_checkpoint_is_refused_with_no_side_effect(tmp_path, capsys, attack):
    run = _small_run(tmp_path, capsys, 1)
    newest = h.checkpoint_dir(run, 1)
    marker = tmp_path / "pwned"
    if attack == "pickle":  # a torch.save pickle that runs a shell command, correctly sealed
        torch.save({"w": _Evil(marker)}, tmp_path / "evil.pt")
        _reseal(newest, ck.TENSORS_FILE, (tmp_path / "evil.pt").read_bytes())
    else:  # one flipped byte: the manifest's hash no longer matches
        data = bytearray((newest / ck.TENSORS_FILE).read_bytes())
        data[-3] ^= 0xFF
        (newest / ck.TENSORS_FILE).write_bytes(bytes(data))
    before = _tree(run)
    for argv in (["train", "--resume", str(run), "--steps", "3", "--quiet"],
                 ["sample", str(run), "--n", "4", "--out", str(tmp_path / "samples")]):
        code, _, err = _cli(argv, capsys)
        assert code == 2
        line = _one_error_line(err)
        assert "corrupt" in line or "verifies" in line, line
    code, _, err = _cli(["sample", str(run), "--n", "4", "--out", str(tmp_path / "s2"), "--checkpoint",
                         str(tmp_path / "evil.pt" if attack == "pickle" else newest)], capsys)
    assert code == 2
    line = _one_error_line(err)
    assert ("can run code" in line) if attack == "pickle" else ("checksum" in line)
    assert _tree(run) == before and not marker.exists()
    assert not (tmp_path / "samples").exists() and not (tmp_path / "s2").exists()


def test_listing_races_a_rename_into_place(tmp_path, monkeypatch):
    """A reader (`ganforge sample` during training) lists the folder just before a save renames
    its hidden, committed copy into place: the checkpoint must still be found."""
    path = ck.save_checkpoint(tmp_path, "step-000000001", {"w": torch.zeros(2)}, {"step": 1})
    real = os.listdir
    stale = [".step-000000001.tmp-0a0a"]  # the listing taken just before the rename
    monkeypatch.setattr(os, "listdir", lambda p=".": stale if Path(p) == tmp_path else real(p))
    assert ck.list_checkpoints(tmp_path) == [path]
    assert ck.load_latest(tmp_path)[0] == path


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, capsys):
    run = _small_run(tmp_path, capsys, 2)
    data = bytearray((h.checkpoint_dir(run, 2) / ck.TENSORS_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (h.checkpoint_dir(run, 2) / ck.TENSORS_FILE).write_bytes(bytes(data))
    code, out, err = _cli(["train", "--resume", str(run), "--steps", "3", "--quiet"], capsys)
    assert code == 0, err
    assert "skipping corrupt checkpoint step-000000002" in out and "resuming from step-000000001" in out
    assert f"resuming {run} at step 1 of 3" in out
    assert h.check_checkpoints(run)[-1] == 3


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda doc: doc["meta"]["config"].update(version=99), "config format version 99 is newer"),
    (lambda doc: doc.update(version=ck.FORMAT_VERSION + 1), "made by a newer ganforge"),
    (lambda doc: doc["meta"].update(model="dcgan"), "checkpoint is for model 'dcgan'"),
    (lambda doc: doc["meta"]["config"].update(g_hidden=32), "does not match"),
], ids=["newer-config", "newer-format", "other-model", "other-architecture"])
def test_incompatible_checkpoint_is_refused_clearly(tmp_path, capsys, edit, needle):
    run = _small_run(tmp_path, capsys, 1)
    _edit_meta(h.checkpoint_dir(run, 1), edit)
    before = _tree(run)
    code, _, err = _cli(["train", "--resume", str(run), "--steps", "3", "--quiet"], capsys)
    assert code == 2
    assert needle in _one_error_line(err)
    assert _tree(run) == before


# ---- hostile data, through `ganforge train` -----------------------------------------------------------

def _files_outside(root: Path, *allowed: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if p.is_file() and not any(a in p.parents for a in allowed)}


def test_folder_with_k_broken_files_trains_and_reports_exactly_k(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "photos"
    write_images(folder, 297, size=(8, 8), mode="L")
    (folder / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    whole = (folder / "img_0000.png").read_bytes()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    write_images(folder / "bomb", 1, size=(250, 250), mode="L")
    # 62,500 pixels: over MAX_IMAGE_PIXELS but under twice it, where PIL only warns: still refused.
    # (The run's own 242 x 242 sample grids stay under the limit.)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60_000)
    before = _files_outside(tmp_path)
    run = tmp_path / "run"
    code, _, err = _cli(["train", "default", "--data", str(folder), "--out", str(run), "--steps", "2",
                         "base_filters=4", "batch_size=8", "threads=1", "--device", "cpu", "--quiet"], capsys)
    assert code == 0, err
    reports = [line for line in err.splitlines() if "skipped" in line]
    assert reports == ["warning: skipped 3 of 300 files that are not readable images "
                       "(first: bomb/img_0000.png)"]
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
    cache = Path(os.environ["GANFORGE_CACHE"])
    assert _files_outside(tmp_path, run, cache) == before  # the folder and the rest are untouched

    (folder / "bad_4.jpg").write_bytes(b"not a jpeg")  # 4 of 301: over 1%, refused before training
    code, _, err = _cli(["train", "default", "--data", str(folder), "--out", str(tmp_path / "run2"),
                         "--steps", "2", "base_filters=4", "--quiet"], capsys)
    assert code == 2
    assert "4 of 301 files" in _one_error_line(err)
    assert not (tmp_path / "run2").exists()


@pytest.mark.parametrize("case", ["idx-magic", "idx-size", "archive-dotdot", "archive-absolute"])
def test_hostile_dataset_files_are_rejected_through_the_cli(tmp_path, capsys, case):
    data = Path(os.environ["GANFORGE_DATA"])
    outside = tmp_path / "outside"
    outside.mkdir()
    if case.startswith("idx"):
        write_mnist(data / "mnist", gz=False)
        path = data / "mnist" / "train-images-idx3-ubyte"
        raw = path.read_bytes()
        path.write_bytes(b"\x00\x00\x08\x04" + raw[4:] if case == "idx-magic" else raw[:-100])
        argv, needle = ["seed004-mlp-mnist", "--data", "mnist"], ("magic" if case == "idx-magic" else "needs")
    else:
        name = "../../outside/evil" if case == "archive-dotdot" else str(outside / "evil")
        (data / "cifar10").mkdir(parents=True)
        write_tar(data / "cifar10" / "cifar-10-python.tar.gz",
                  {"cifar-10-batches-py/readme": b"hi", name: b"x"})
        argv, needle = ["dcgan", "--data", "cifar10"], ("escapes" if case == "archive-dotdot" else "absolute")
    code, _, err = _cli(["train", *argv, "--out", str(tmp_path / "run"), "--steps", "1", "--quiet"], capsys)
    assert code == 2
    assert needle in _one_error_line(err)
    assert not any(outside.iterdir()) and not (tmp_path / "run").exists()
    assert not (data / "cifar10" / "cifar-10-batches-py").exists()  # nothing extracted at all


# ---- numerical faults ---------------------------------------------------------------------------------

class _NanGrad(torch.autograd.Function):
    """Identity forward, NaN gradient backward: a finite loss with a non-finite gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def _poison(monkeypatch, loss_name: str, calls: set[int] | None, kind: str = "nan") -> None:
    """Make the results of the non-saturating loss's term `loss_name` (g_loss: G's term,
    d_loss_fake: D's term on fakes) non-finite at the given (1-based) calls (None: all)."""
    method = {"g_loss": "g", "d_loss_fake": "d_fake", "d_loss_real": "d_real"}[loss_name]
    real, count = getattr(losses.NonSaturating, method), [0]

    def poisoned(self, *args, **kwargs):
        count[0] += 1
        value = real(self, *args, **kwargs)
        if calls is None or count[0] in calls:
            return _NanGrad.apply(value) if kind == "grad" else value * float("nan")
        return value

    monkeypatch.setattr(losses.NonSaturating, method, poisoned)


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_nonfinite_steps_are_skipped_counted_and_never_saved(tmp_path, capsys, monkeypatch):
    _poison(monkeypatch, "g_loss", {3, 4})  # steps 3 and 4: a NaN G loss
    _poison(monkeypatch, "d_loss_fake", {6}, kind="grad")  # step 6: finite loss, NaN gradient
    run = _small_run(tmp_path, capsys, 8, "max_skips=3")
    skips = [r for r in _rows(run) if r.get("event") == "skipped_nonfinite_step"]
    assert [(r["step"], r["skipped_total"]) for r in skips] == [(3, 1), (4, 2), (6, 3)]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["skipped_steps"] == 3
    assert h.check_checkpoints(run) == list(range(1, 9))  # every one finite and verified
    # A skipped G step leaves G and its EMA untouched.
    (t2, _), (t4, meta4) = h.checkpoint_at(run, 2), h.checkpoint_at(run, 4)
    for key in t2:
        if key.startswith(("module.G.", "module.G_ema.", "optim.G.")):
            assert torch.equal(t2[key], t4[key]), key
    assert meta4["skipped_steps"] == 2


def test_nan_rollback_lowers_learning_rates_and_completes(tmp_path, capsys, monkeypatch):
    _poison(monkeypatch, "g_loss", {5, 6})
    run = tmp_path / "run"
    code, out, err = _cli(h.train_argv(run, 10, "checkpoint_every=2", "keep_last=100", "max_skips=2",
                                       "rollback_lr_factor=0.5", "g_lr=2e-4", "d_lr=4e-4"), capsys)
    assert code == 0, err
    assert "warning: 2 non-finite steps: rolled back to step 4 with learning rates x0.5" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["steps"] == 10 and summary["skipped_steps"] == 2
    tensors, meta = ck.load_checkpoint(h.checkpoint_dir(run, 10))
    assert meta["lr"] == {"G": 1e-4, "D": 2e-4}
    for name, lr in (("G", 1e-4), ("D", 2e-4)):
        assert [g["lr"] for g in meta["optimizers"][name]["param_groups"]] == [lr]
    assert h.check_checkpoints(run) == [2, 4, 6, 8, 10]


@pytest.mark.parametrize("rollback", [0.0, 0.5])
def test_persistent_nan_stops_with_exit_3(tmp_path, capsys, monkeypatch, rollback):
    _poison(monkeypatch, "g_loss", set(range(3, 10_000)))  # from step 3 on
    run = tmp_path / "run"
    code, out, err = _cli(h.train_argv(run, 50, "checkpoint_every=2", "keep_last=100", "max_skips=2",
                                       f"rollback_lr_factor={rollback}"), capsys)
    assert code == 3
    line = _one_error_line(err)
    assert "training diverged: 2 consecutive non-finite steps" in line and "lower learning rates" in line
    if rollback:  # three retries from step 2, each with lower rates, then a clear stop
        assert [m for m in out.splitlines() if "rolled back" in m] == [
            f"warning: 2 non-finite steps: rolled back to step 2 with learning rates x{f}"
            for f in ("0.5", "0.25", "0.125")]
        assert "after 3 rollbacks" in line
    assert h.check_checkpoints(run) == [2]  # the last good one, finite and verified


# ---- collapse alarms ----------------------------------------------------------------------------------

def test_collapse_alarm_on_d_accuracy(tmp_path, capsys):
    # A D that learns a million times faster than G separates real from fake within a few steps.
    run = tmp_path / "run"
    code, out, err = _cli(h.train_argv(run, 12, "d_lr=0.01", "g_lr=1e-8"), capsys)
    assert code == 0, err
    warnings = [r for r in _rows(run) if "warning" in r]
    assert len(warnings) == 1 and "D accuracy has been 100% for 5 log windows" in warnings[0]["warning"]
    assert "warning: D accuracy has been 100%" in out


def test_collapse_alarm_on_grid_diversity(tmp_path, capsys, monkeypatch):
    from ganforge.gan.run import GANRun as Run

    # A collapsed G: every fixed latent gives the same image.
    monkeypatch.setattr(Run, "fixed_samples", lambda self: torch.full((16, 1, 8, 8), 128, dtype=torch.uint8))
    run = tmp_path / "run"
    code, out, err = _cli(h.train_argv(run, 14, "sample_every=1"), capsys)
    assert code == 0, err
    warnings = [r["warning"] for r in _rows(run) if "warning" in r]
    assert warnings and all("possible mode collapse" in w for w in warnings)
    assert "0% as diverse as real data at step 11" in warnings[0]  # armed after 10 log windows
