"""Kill, signal and fault-inject real `ganforge train` runs, then check that nothing was lost.

Shared by the CI suite (tests/test_reliability.py, a handful of trials) and the soak
(bench/soak.py, tests/soak/test_soak.py: 20 trials and more). A *child* is one CLI invocation,
either a fresh interpreter (`python -m ganforge ...`, mode "process") or a fork of the current
one calling `ganforge.cli.main` (mode "fork": the same code path without paying the imports again,
which is what keeps the CI part short on two shared cores).

What "nothing was lost" means, checked after every fault:
  - every visible entry of `checkpoints/` is a complete checkpoint (exactly its three files) that
    verifies and holds only finite tensors: never a partial file under a final name;
  - `ganforge train --resume` continues, and the final nets, EMA, optimizer states, RNG states, step
    and counters are bit-identical to an uninterrupted reference run of the same config.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ganforge import checkpoint as ck

# A GAN that trains in milliseconds a step on one CPU thread but keeps every piece of state a real
# run has: two nets, EMA, two Adam optimizers, the global and noise RNGs, data order.
RECIPE = "seed004-mlp-mnist"
TINY = ["data=digits", "image_size=8", "latent_dim=8", "g_hidden=16", "d_hidden=16", "batch_size=8",
        "ema=0.9", "log_every=1", "sample_every=1000", "device=cpu", "threads=1"]
KEEP_ALL = 1_000_000  # the reference keeps every checkpoint, to compare at any step
FINAL_FILES = {ck.TENSORS_FILE, ck.META_FILE, ck.MANIFEST_FILE}
# Config keys that may differ between a trial and the reference without changing training.
CADENCE_KEYS = ("steps", "keep_last", "checkpoint_every")
SLOW_SAVE_ENV = "GANFORGE_TEST_SLOW_SAVE"  # the test hook in ganforge/checkpoint.py


# ---- children: one CLI invocation each ----------------------------------------------------------

@dataclass
class Child:
    """A running `ganforge` command (a fresh interpreter or a fork), with its output in `log`."""

    pid: int
    log: Path
    popen: subprocess.Popen | None = None
    returncode: int | None = None
    started: float = field(default_factory=time.monotonic)

    def poll(self) -> int | None:
        if self.returncode is None:
            if self.popen is not None:
                self.returncode = self.popen.poll()
            else:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float = 300.0) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.signal(signal.SIGKILL)
                self.wait_dead()
                raise TimeoutError(f"ganforge child did not finish in {timeout:.0f} s; log:\n{self.output()}")
            time.sleep(0.005)
        return self.returncode

    def wait_dead(self) -> int:
        while self.poll() is None:
            time.sleep(0.002)
        return self.returncode

    def signal(self, signum: int) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def warm_up() -> None:
    """Import, in this process, what a training child imports lazily, and load the dataset, so each
    forked child starts at once (the imports alone take seconds on a busy machine)."""
    import matplotlib

    matplotlib.use("Agg")
    import imageio.v3  # noqa: F401
    import matplotlib.pyplot  # noqa: F401

    import ganforge.gan.sampling  # noqa: F401
    import ganforge.gan.train  # noqa: F401
    from ganforge.data.embedded import LOADERS

    LOADERS["digits"]()  # memoised: children inherit the decoded arrays
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        pass


def launch(argv: list[str], log: Path, *, mode: str = "fork", env: dict[str, str] | None = None,
           setup: Callable[[], None] | None = None) -> Child:
    """Start `ganforge ARGV`. `setup` (fork mode only) runs in the child first, e.g. fault injection."""
    log.parent.mkdir(parents=True, exist_ok=True)
    if mode == "process":
        if setup is not None:
            raise ValueError("setup= needs mode='fork'")
        with open(log, "wb") as out:
            popen = subprocess.Popen([sys.executable, "-m", "ganforge", *argv], stdout=out,
                                     stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        return Child(popen.pid, log, popen)
    if mode != "fork":
        raise ValueError(f"unknown mode {mode!r}: fork or process")
    warm_up()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return Child(pid, log)
    code = 1
    try:  # the child: never return into the caller (pytest), always os._exit
        out = open(log, "w", buffering=1)
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        sys.stdout = sys.stderr = out
        os.environ.update(env or {})
        for sig in (signal.SIGINT, signal.SIGTERM):  # the CLI's own defaults, not the parent's
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
        if setup is not None:
            setup()
        from ganforge.cli import main

        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001 - report anything, then exit like an uncaught error
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
        finally:
            os._exit(code)


def run_cli(argv: list[str], log: Path, *, mode: str = "fork", env: dict[str, str] | None = None,
            setup: Callable[[], None] | None = None, timeout: float = 300.0) -> tuple[int, str]:
    child = launch(argv, log, mode=mode, env=env, setup=setup)
    return child.wait(timeout), child.output()


def train_argv(run: Path, steps: int, *extra: str) -> list[str]:
    return ["train", RECIPE, "--out", str(run), "--steps", str(steps), "--quiet", *TINY, *extra]


def resume_argv(run: Path, steps: int) -> list[str]:
    return ["train", "--resume", str(run), "--steps", str(steps), "--quiet"]


def wait_until(condition: Callable[[], bool], child: Child | None = None, timeout: float = 120.0,
               period: float = 0.002) -> bool:
    """Poll until `condition()`; False if `child` exited first (or on timeout)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if (child is not None and child.poll() is not None) or time.monotonic() > deadline:
            return condition()
        time.sleep(period)
    return True


# ---- what is on disk ------------------------------------------------------------------------------

def committed_steps(run: Path) -> list[int]:
    """Steps of the committed checkpoints (including one committed but not yet renamed)."""
    steps = []
    for path in ck.list_checkpoints(run / "checkpoints"):
        name = path.name.lstrip(".").split(".")[0]
        steps.append(int(name.split("-")[1]))
    return steps


def logged_steps(run: Path) -> int:
    """The last step with a metrics line (0 before the first)."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue
    return 0


def save_in_progress(run: Path) -> bool:
    try:
        return any(".tmp-" in n for n in os.listdir(run / "checkpoints"))
    except OSError:
        return False


def where_it_stopped(run: Path) -> str:
    """Which stage of checkpointing a killed run was in, read from what it left behind."""
    root = run / "checkpoints"
    hidden = sorted(n for n in os.listdir(root) if n.startswith("."))
    for name in hidden:
        if ".tmp-" in name:
            inside = sorted(p.name for p in (root / name).iterdir())
            if ck.MANIFEST_FILE in inside:
                return "save: committed, not yet renamed"
            done = [n for n in inside if not n.startswith(".")]
            partial = [n for n in inside if n.startswith(".")]
            state = f"{len(done)} of 2 files written" + (", one half-written" if partial else "")
            return f"save: {state}"
        if ".old-" in name:
            return "save: swapping in"
        if ".del-" in name:
            return "save: pruning"
    return "between saves"


def check_checkpoints(run: Path) -> list[int]:
    """Assert every visible checkpoint is complete, verifies and is finite; return their steps."""
    root = run / "checkpoints"
    steps = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue  # hidden leftovers of an interrupted save: never found as checkpoints
        files = {p.name for p in entry.iterdir()}
        assert files == FINAL_FILES, f"partial checkpoint under a final name: {entry} holds {files}"
        tensors, meta = ck.load_checkpoint(entry)
        for key, tensor in tensors.items():
            if tensor.is_floating_point():
                assert bool(torch.isfinite(tensor).all()), f"{entry.name}: {key} is not finite"
        steps.append(int(meta["step"]))
    json.loads((run / "config.json").read_text())  # written atomically: never half a file
    return steps


# ---- comparing runs ---------------------------------------------------------------------------------

def checkpoint_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:09d}"


def checkpoint_at(run: Path, step: int) -> tuple[dict[str, torch.Tensor], dict]:
    return ck.load_checkpoint(checkpoint_dir(run, step))


def state_differences(a: tuple[dict, dict], b: tuple[dict, dict]) -> list[str]:
    """What differs between two checkpoints, ignoring wall time, the unseeded Python/NumPy RNGs
    (unused by training) and cadence settings. An empty list means bit-identical."""
    (ta, ma), (tb, mb) = a, b
    diffs = [f"tensor {k} missing on one side" for k in sorted(ta.keys() ^ tb.keys())]
    for key in sorted(ta.keys() & tb.keys()):
        x, y = ta[key], tb[key]
        if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
            diffs.append(f"tensor {key}")
    for key in ("step", "epoch", "images_seen", "skipped_steps", "lr", "optimizers", "model"):
        if ma.get(key) != mb.get(key):
            diffs.append(f"meta {key}: {ma.get(key)!r} != {mb.get(key)!r}"[:200])
    ca = {k: v for k, v in ma["config"].items() if k not in CADENCE_KEYS}
    cb = {k: v for k, v in mb["config"].items() if k not in CADENCE_KEYS}
    if ca != cb:
        diffs.append(f"config {sorted(k for k in ca if ca[k] != cb.get(k))}")
    return diffs


LOGGED = ("step", "epoch", "images_seen", "d_loss", "g_loss", "d_real", "d_fake", "d_acc")


def metric_rows(run: Path, up_to: int) -> list[dict]:
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)  # after a resume the log must hold no cut lines
        if "g_loss" in row and row["step"] <= up_to:
            rows.append({k: row[k] for k in LOGGED})
    return rows


def compare_runs(run: Path, reference: Path, step: int) -> list[str]:
    """Differences between `run` and `reference` at `step`: checkpoint state and the metrics log."""
    diffs = state_differences(checkpoint_at(run, step), checkpoint_at(reference, step))
    if metric_rows(run, step) != metric_rows(reference, step):
        diffs.append("metrics.jsonl rows")
    return diffs


def reference_run(root: Path, steps: int, *, mode: str = "fork") -> Path:
    """An uninterrupted run that keeps a checkpoint of every step."""
    run = root / "reference"
    rc, out = run_cli(train_argv(run, steps, "checkpoint_every=1", f"keep_last={KEEP_ALL}"),
                      root / "reference.log", mode=mode)
    assert rc == 0, out
    return run


# ---- kill -9 trials -----------------------------------------------------------------------------------

@dataclass
class KillResult:
    trial: int
    target: str  # "save": aimed inside a checkpoint write; "random": any moment after step k
    stopped: str  # what the kill interrupted, read from the disk afterwards
    killed_after_step: int  # last committed checkpoint when the kill landed
    resumed_from: int
    identical: bool
    differences: list[str]
    seconds: float


def kill_trial(trial: int, root: Path, reference: Path, steps: int, *, rng: random.Random,
               target: str, mode: str = "fork") -> KillResult:
    """Train, SIGKILL at a random moment or inside a save, resume to `steps` and compare with the
    reference at `steps`.

    target "save": a checkpoint every step, each save stage slowed by the test hook (a window wide
    enough that a busy machine's delay between seeing the save start and the kill cannot carry it
    past the save). target "random": a checkpoint every 3 steps at full speed, so the kill lands
    anywhere (a step, the log, a save) and the resume recomputes the steps since the checkpoint.
    """
    slow = 0.1
    cadence = ["checkpoint_every=1"] if target == "save" else ["checkpoint_every=3"]
    t0 = time.monotonic()
    run = root / f"trial-{trial:02d}"
    child = launch(train_argv(run, steps, *cadence, "keep_last=2"), root / f"trial-{trial:02d}-train.log",
                   mode=mode, env={SLOW_SAVE_ENV: str(slow)} if target == "save" else None)
    first = rng.randint(1, max(1, steps // 2))
    ok = wait_until(lambda: max(committed_steps(run), default=0) >= first, child)
    assert ok, f"trial {trial}: the run ended before step {first}:\n{child.output()}"
    if target == "save":  # the start of the next save, then a moment inside its first 3 stages
        assert wait_until(lambda: not save_in_progress(run), child), child.output()
        assert wait_until(lambda: save_in_progress(run), child), child.output()
        time.sleep(rng.uniform(0.0, 3 * slow))
    else:
        time.sleep(rng.uniform(0.0, 0.3))  # a few steps
    child.signal(signal.SIGKILL)
    rc = child.wait_dead()
    assert rc == -signal.SIGKILL, f"trial {trial}: the run ended (rc {rc}) before the kill:\n{child.output()}"
    stopped = where_it_stopped(run)
    visible = check_checkpoints(run)
    killed_after = max(committed_steps(run))
    assert visible, "no checkpoint survived"

    rc, out = run_cli(resume_argv(run, steps), root / f"trial-{trial:02d}-resume.log", mode=mode)
    assert rc == 0, out
    found = re.search(r"^resuming .* at step (\d+) of", out, re.MULTILINE)
    resumed_from = int(found.group(1)) if found else -1
    check_checkpoints(run)
    if resumed_from < steps:  # the resumed run saved at least once: its first save tidies
        assert not [n for n in os.listdir(run / "checkpoints") if n.startswith(".")], "leftovers not tidied"
    diffs = compare_runs(run, reference, steps)
    return KillResult(trial, target, stopped, killed_after, resumed_from, not diffs, diffs,
                      round(time.monotonic() - t0, 2))


# ---- signals ----------------------------------------------------------------------------------------

@dataclass
class SignalResult:
    signal: str
    mode: str
    exit_code: int
    stopped_at: int  # the step the run stopped at (summary.json), or the last committed one
    checkpoints: list[int]  # visible checkpoints afterwards, all verified
    where: str  # for a second signal: what the save it cut short left behind
    output: str
    identical: bool
    differences: list[str]


def signal_trial(root: Path, reference: Path, steps: int, signum: int, *, mode: str = "fork",
                 slow: float = 0.03) -> SignalResult:
    """One signal while training (a long budget, a checkpoint every 5 steps), then resume to
    `steps` and compare. The checkpoint at the stop step is the signal's own."""
    run = root / f"signal-{signal.Signals(signum).name}-{mode}"
    child = launch(train_argv(run, 100_000, "checkpoint_every=5"), run.with_suffix(".log"), mode=mode,
                   env={SLOW_SAVE_ENV: str(slow)})
    assert wait_until(lambda: logged_steps(run) >= 2, child, timeout=300), child.output()
    child.signal(signum)
    code = child.wait(120)
    summary = run / "summary.json"
    stopped = json.loads(summary.read_text())["steps"] if summary.exists() else -1
    kept = check_checkpoints(run)
    rc, out = run_cli(resume_argv(run, steps), run.with_suffix(".resume.log"))
    assert rc == 0, out
    diffs = compare_runs(run, reference, steps)
    return SignalResult(signal.Signals(signum).name, mode, code, stopped, kept, "", child.output(),
                        not diffs, diffs)


def second_signal_trial(root: Path, reference: Path, steps: int, *, mode: str = "fork",
                        slow: float = 0.3) -> SignalResult:
    """SIGTERM, then a second SIGTERM while the checkpoint it asked for is being written (each save
    stage sleeps `slow`): the run must exit at once, leaving the previous checkpoint intact."""
    run = root / f"second-signal-{mode}"
    child = launch(train_argv(run, 100_000, "checkpoint_every=5"), run.with_suffix(".log"), mode=mode,
                   env={SLOW_SAVE_ENV: str(slow)})
    assert wait_until(lambda: bool(committed_steps(run)), child, timeout=300), child.output()
    assert wait_until(lambda: not save_in_progress(run), child)
    child.signal(signal.SIGTERM)  # asks for a checkpoint at the next step boundary
    assert wait_until(lambda: save_in_progress(run), child, timeout=60), child.output()
    time.sleep(slow / 3)
    child.signal(signal.SIGTERM)
    code = child.wait(60)
    where = where_it_stopped(run)
    kept = check_checkpoints(run)
    assert kept, "no checkpoint survived"
    rc, out = run_cli(resume_argv(run, steps), run.with_suffix(".resume.log"))
    assert rc == 0, out
    diffs = compare_runs(run, reference, steps)
    return SignalResult("SIGTERM x2", mode, code, kept[-1], kept, where, child.output(), not diffs, diffs)


# ---- fault injection inside checkpoint writes (fork mode) ---------------------------------------------

class FaultyOS:
    """Stands in for `os` during checkpoint saves only: after `arm_after` completed saves, the
    `fail_at`-th write/fsync/replace raises `error` (a write first lands half its bytes, as a torn
    write does); with `sticky` every later one fails too (a disk that stays full)."""

    def __init__(self, arm_after: int, fail_at: int, error: OSError, sticky: bool = False) -> None:
        self.arm_after, self.fail_at, self.error, self.sticky = arm_after, fail_at, error, sticky
        self.calls = 0
        self.saving = False  # set while a checkpoint save runs

    def __getattr__(self, name):
        real = getattr(os, name)
        if name not in ("write", "fsync", "replace"):
            return real

        def call(*args):
            if self.saving and _saves_done[0] >= self.arm_after:
                self.calls += 1
                if self.calls == self.fail_at + 1 or (self.sticky and self.calls > self.fail_at):
                    if name == "write":
                        real(args[0], bytes(args[1][: len(args[1]) // 2]))
                    raise self.error
            return real(*args)

        return call


_saves_done = [0]


def install_faults(faulty: FaultyOS) -> None:
    """Route the os calls of checkpoint saves (the store and its atomic writes) through `faulty`,
    and count completed saves."""
    import ganforge.checkpoint.store as store
    import ganforge.gan.train
    import ganforge.io
    import ganforge.runs.state

    real_save = store.save_checkpoint

    def counting_save(*args, **kwargs):
        faulty.saving = True
        try:
            path = real_save(*args, **kwargs)
        finally:
            faulty.saving = False
        _saves_done[0] += 1
        return path

    store.os = faulty
    ganforge.io.os = faulty
    ganforge.runs.state.save_checkpoint = counting_save


@dataclass
class InjectionResult:
    injection: int
    fail_at: int
    exit_code: int
    message: str
    last_good: int
    identical: bool
    differences: list[str]


def injection_trial(i: int, root: Path, reference: Path, steps: int, *, fail_at: int, arm_after: int,
                    error: OSError, sticky: bool = False) -> InjectionResult:
    """A training run whose checkpoint writes fail at one point; then resume and compare."""
    run = root / f"inject-{i:02d}"
    faulty = FaultyOS(arm_after, fail_at, error, sticky)
    rc, out = run_cli(train_argv(run, steps, "checkpoint_every=1", "keep_last=2"),
                      root / f"inject-{i:02d}-train.log", setup=lambda: install_faults(faulty))
    errors = [line for line in out.splitlines() if line.startswith("ganforge: error:")]
    assert rc in (0, 2), out  # 0: the failure hit housekeeping (pruning), which retries later
    assert rc == 0 or len(errors) == 1, out
    last_good = max(check_checkpoints(run))
    rc2, out2 = run_cli(resume_argv(run, steps), root / f"inject-{i:02d}-resume.log")
    assert rc2 == 0, out2
    diffs = compare_runs(run, reference, steps)
    return InjectionResult(i, fail_at, rc, errors[0] if errors else "", last_good, not diffs, diffs)


# ---- a real full disk -----------------------------------------------------------------------------------

def _fill(fd: int) -> None:
    """Write into `fd` until the disk refuses even a page: grabs whatever space was freed."""
    for size in (1 << 16, 1 << 12):
        block = bytes(size)
        try:
            while True:
                os.write(fd, block)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise


def tmpfs_trial(root: Path, reference: Path, steps: int, *, size: str = "2m") -> InjectionResult | None:
    """Train on a small tmpfs that another program fills up mid-run; free the space and resume.
    None where no tmpfs can be mounted (not root, or no mount permission)."""
    mount = root / "tmpfs"
    mount.mkdir()
    mount_cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)]
    if os.geteuid() != 0 or subprocess.run(mount_cmd, capture_output=True).returncode != 0:
        return None
    try:
        run = mount / "run"
        child = launch(train_argv(run, steps, "checkpoint_every=1", "keep_last=2"), root / "tmpfs-train.log",
                       env={SLOW_SAVE_ENV: "0.01"})
        assert wait_until(lambda: max(committed_steps(run), default=0) >= 3, child), child.output()
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
        try:  # a greedy neighbour: keeps taking any space the run frees by pruning
            while child.poll() is None:
                _fill(fd)
                time.sleep(0.001)
        finally:
            os.close(fd)
        out = child.output()
        errors = [line for line in out.splitlines() if line.startswith("ganforge: error:")]
        assert child.returncode == 2 and len(errors) == 1, out
        last_good = max(check_checkpoints(run))
        (mount / "filler").unlink()  # the user frees some space, then resumes
        rc, out2 = run_cli(resume_argv(run, steps), root / "tmpfs-resume.log")
        assert rc == 0, out2
        diffs = compare_runs(run, reference, steps)
        return InjectionResult(0, -1, child.returncode, errors[0], last_good, not diffs, diffs)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
