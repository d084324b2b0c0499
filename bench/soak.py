"""Reliability soak for issue 5, "Never lose a run": the long version of tests/runs/test_reliability.py.

    python bench/soak.py --trials 20                 # ~10 min on 2 CPU cores
    python bench/soak.py --trials 20 --json soak.json

Every training run is a fresh `python -m ganforge` process (``--mode fork`` reuses this process's
imports instead, as CI does). Against one uninterrupted reference run it checks:
  1. kill -9 at random moments, every other one aimed inside a checkpoint write, then
     `train --resume`: the final nets, EMA, optimizer and RNG states, step and metrics log are
     bit-identical to the reference;
  2. SIGTERM and SIGINT: a checkpoint at the stop step, exit 143 / 130, exact resume; a second
     SIGTERM during that save exits at once and leaves the previous checkpoint intact;
  3. a crash (EIO, with a torn write) injected at `--injections` successive points of the
     write/fsync/rename calls of a training save: never a partial checkpoint, exact resume;
  4. a full disk: a write hook failing with ENOSPC, and (as root) a real 2 MiB tmpfs filled mid-run.
Prints a Markdown summary (pasted into docs/RELIABILITY.md) and exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import functools
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "soak"))

import torch  # noqa: E402

import reliability_harness as h  # noqa: E402


def _section(results: list, failures: list[str], name: str, check) -> None:
    for r in results:
        problem = check(r)
        if problem:
            failures.append(f"{name}: {problem}: {r}")


EXIT_CODES = {"SIGTERM": 143, "SIGINT": 130, "SIGTERM x2": 143}


def _signal_problem(r: h.SignalResult) -> str:
    if r.exit_code != EXIT_CODES[r.signal]:
        return f"exit {r.exit_code}"
    if r.signal == "SIGTERM x2" and not r.where.startswith("save:"):
        return "the second signal let the save finish"
    if r.signal != "SIGTERM x2" and r.checkpoints[-1] != r.stopped_at:
        return "no checkpoint at the stop step"
    return "" if r.identical else "not identical"


def _attempt(failures: list[str], name: str, fn, *args, **kwargs):
    """Run one trial; a broken invariant (an AssertionError in the harness) is a recorded failure."""
    try:
        return fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - the soak goes on and reports every failure
        failures.append(f"{name}: {str(err)[:2000]}")
        print(f"{name}: FAILED {str(err)[:300]}", flush=True)
        return None


def run_soak(trials: int = 20, injections: int = 20, *, steps: int = 30, seed: int = 0,
             mode: str = "process", root: Path | None = None,
             log=functools.partial(print, flush=True)) -> dict:
    """Run every part; returns the results and a list of failures (empty when all held)."""
    root = Path(root or tempfile.mkdtemp(prefix="ganforge-soak-"))
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("GANFORGE_CACHE", str(root / "cache"))
    if mode == "process":
        # Child processes import a frozen copy of the package: an edit to the working tree during
        # a long soak must not make the runs it compares differ.
        shutil.copytree(ROOT / "src" / "ganforge", root / "src" / "ganforge",
                        ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root / "src"),
                                                                 os.environ.get("PYTHONPATH")]))
    h.warm_up()  # this process (fork children, checks) imports the same code now, not later
    torch.set_num_threads(1)
    rng = random.Random(seed)
    started = time.monotonic()
    failures: list[str] = []

    log(f"reference run ({steps} steps, {mode}) in {root}")
    reference = h.reference_run(root, steps, mode=mode)

    kills = []
    for i in range(trials):
        target = "save" if i % 2 == 0 else "random"
        r = _attempt(failures, f"kill {i}", h.kill_trial, i, root, reference, steps, rng=rng, target=target,
                     mode=mode)
        if r is None:
            continue
        kills.append(r)
        log(f"kill {i:2d} ({target:6s}): after step {r.killed_after_step:2d}, {r.stopped:38s} "
            f"resumed from {r.resumed_from:2d}: {'identical' if r.identical else r.differences}")
    _section(kills, failures, "kill -9", lambda r: "" if r.identical else "not identical")
    if trials and sum(r.stopped.startswith("save") for r in kills) < 0.3 * trials:
        failures.append("kill -9: fewer than 30% of the kills landed inside a checkpoint write")

    signals = [_attempt(failures, name, h.signal_trial, root, reference, steps, signum, mode=mode)
               for name, signum in (("SIGTERM", signal.SIGTERM), ("SIGINT", signal.SIGINT))]
    signals.append(_attempt(failures, "SIGTERM x2", h.second_signal_trial, root, reference, steps, mode=mode))
    signals = [r for r in signals if r is not None]
    for r in signals:
        log(f"{r.signal:10s}: exit {r.exit_code}, stopped at {r.stopped_at}, {r.where or '-'}: "
            f"{'identical' if r.identical else r.differences}")
    _section(signals, failures, "signals", _signal_problem)

    crashes = []
    for i in range(injections):  # one save makes 15 write/fsync/rename calls, pruning 1 more
        r = _attempt(failures, f"crash {i}", h.injection_trial, i, root, reference, steps, fail_at=i,
                     arm_after=3, error=OSError(errno.EIO, "Input/output error"))
        if r is None:
            continue
        crashes.append(r)
        log(f"crash at call {i:2d}: exit {r.exit_code}, last good {r.last_good}: "
            f"{'identical' if r.identical else r.differences}")
    _section(crashes, failures, "crash in save", lambda r: "" if r.identical else "not identical")

    enospc = OSError(errno.ENOSPC, "No space left on device")
    hook = _attempt(failures, "disk full (hook)", h.injection_trial, 100, root, reference, steps,
                    fail_at=0, arm_after=4, sticky=True, error=enospc)
    tmpfs = _attempt(failures, "disk full (tmpfs)", h.tmpfs_trial, root, reference, steps)
    full = [r for r in (hook, tmpfs) if r is not None]
    for r in full:
        log(f"disk full ({'tmpfs' if r.fail_at < 0 else 'hook'}): exit {r.exit_code}, "
            f"last good {r.last_good}, {r.message!r}: {'identical' if r.identical else r.differences}")
    _section(full, failures, "disk full", lambda r: "" if r.exit_code == 2 and r.identical else "failed")

    return {"root": str(root), "steps": steps, "mode": mode, "seed": seed, "source": _source_version(),
            "seconds": round(time.monotonic() - started), "kills": kills, "signals": signals,
            "crashes": crashes, "disk_full": full, "tmpfs": tmpfs is not None, "failures": failures}


def _source_version() -> str:
    """The commit the soak ran on, and whether the working tree had changes on top of it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" + working-tree changes" if git("status", "--porcelain", "src") else "")


def markdown(report: dict) -> str:
    kills, crashes, full = report["kills"], report["crashes"], report["disk_full"]
    in_save = [k for k in kills if k.stopped.startswith("save")]
    stages: dict[str, int] = {}
    for k in kills:
        key = f"{k.stopped} ({'aimed at a save' if k.target == 'save' else 'random moment'})"
        stages[key] = stages.get(key, 0) + 1
    lines = [
        f"- machine: {platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, ganforge {report['source']}, mode `{report['mode']}`, "
        f"{report['steps']} steps, seed {report['seed']}, {report['seconds']} s",
        f"- kill -9: **{sum(k.identical for k in kills)}/{len(kills)} bit-identical** after resume; "
        f"{len(in_save)}/{len(kills)} ({100 * len(in_save) // max(len(kills), 1)}%) killed inside a "
        "checkpoint write",
    ]
    lines += [f"  - {n} x {stage}" for stage, n in sorted(stages.items(), key=lambda kv: -kv[1])]
    for s in report["signals"]:
        lines.append(f"- {s.signal}: exit {s.exit_code}, stopped at step {s.stopped_at}"
                     f"{', cut save left: ' + s.where if s.where else ''}; resume "
                     f"{'bit-identical' if s.identical else 'DIFFERENT'}")
    failed = sum(c.exit_code == 2 for c in crashes)
    lines.append(f"- crash in a training save, {len(crashes)} injection points: {failed} surfaced as "
                 f"one-line errors (exit 2), {len(crashes) - failed} hit pruning (retried later, exit 0); "
                 "no partial checkpoint, the previous one verified every time; "
                 f"**{sum(c.identical for c in crashes)}/{len(crashes)} bit-identical** after resume")
    for r in full:
        kind = "real 2 MiB tmpfs filled mid-run" if r.fail_at < 0 else "ENOSPC write hook"
        lines.append(f"- disk full ({kind}): exit {r.exit_code}, `{r.message}`; resume "
                     f"{'bit-identical' if r.identical else 'DIFFERENT'}")
    if not report["tmpfs"]:
        lines.append("- disk full (real tmpfs): skipped, needs root")
    lines.append(f"- failures: {len(report['failures'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=20, help="kill -9 trials")
    p.add_argument("--injections", type=int, default=20, help="crash points injected in a training save")
    p.add_argument("--steps", type=int, default=30, help="steps of every compared run")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    p.add_argument("--mode", choices=("process", "fork"), default="process",
                   help="process: a fresh `python -m ganforge` per run; fork: reuse this process's imports")
    p.add_argument("--out", type=Path, help="working folder (default: a new temporary folder)")
    p.add_argument("--json", type=Path, help="also write the full results here")
    args = p.parse_args(argv)
    report = run_soak(args.trials, args.injections, steps=args.steps, seed=args.seed, mode=args.mode,
                      root=args.out)
    print()
    print(markdown(report))
    for failure in report["failures"]:
        print(f"FAILED {failure}")
    if args.json:
        args.json.write_text(json.dumps(report, default=lambda o: dataclasses.asdict(o) if
                                        dataclasses.is_dataclass(o) else str(o), indent=1))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
