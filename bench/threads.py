"""Threads on a shared machine: the default (threads=0, load-aware) against fixed thread counts,
with and without a CPU-bound neighbour process that this script starts itself.

    python bench/threads.py --recipe default --steps 150 --rounds 2
    python bench/threads.py --recipe tf-dcgan-mnist --data mnist5k --steps 100 --settings 0,1,2

Every (neighbour, setting) pair is one real `ganforge` training run (in this process, in a
temporary folder), interleaved: each round runs every setting without and then beside the
neighbour, so a machine whose other load drifts slows each setting alike. A run's speed is the
median images/s of its log windows after the first (start-up: caches, the governor's first look).
Printed: each setting's median over the rounds, the thread count the default ended on, and the
ratio of the default to the best fixed setting, per condition. The machine's load average before
and after is printed too: what "without" means depends on what else was running.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from ganforge.config import apply_overrides
from ganforge.gan.recipes import get_recipe
from ganforge.gan.train import train
from ganforge.io import read_metrics
from ganforge.speed.cpu import cores

SPIN = "while True:\n    pass\n"  # one core's worth of pure CPU work, no memory traffic


def run_once(recipe: str, data: str | None, threads: int, steps: int, log_every: int, folder: Path) -> tuple[float, int]:
    """(median images/s of the log windows after the first, threads at the end) of one training run."""
    overrides = [f"threads={threads}", "device=cpu", f"log_every={log_every}", f"sample_every={10 * steps}",
                 f"checkpoint_every={10 * steps}"] + ([f"data={data}"] if data else [])
    cfg = apply_overrides(get_recipe(recipe), overrides)
    events: list[str] = []
    train(cfg, folder, force=True, steps=steps, quiet=True, log=events.append)
    rows = read_metrics(folder / "metrics.jsonl")
    windows = [r["images_per_second"] for r in rows if r["kind"] == "train"][1:]
    if not windows:
        raise SystemExit(f"{steps} steps at log_every={log_every} leave no log window after the first")
    changes = [r for r in rows if r["kind"] == "event" and r.get("event") == "threads"]
    for line in events:
        if line.startswith("warning:"):
            print(f"    ({line})")
    return statistics.median(windows), changes[-1]["threads"] if changes else torch.get_num_threads()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="default")
    ap.add_argument("--data", default=None, help="dataset instead of the recipe's (e.g. mnist5k)")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--settings", default="0,1,2", help="thread settings; 0 is the default")
    ap.add_argument("--neighbours", type=int, default=1, help="CPU-bound processes started beside training")
    args = ap.parse_args()
    settings = [int(s) for s in args.settings.split(",")]
    print(f"machine: {platform.processor() or platform.machine()}, {cores()} cores, torch {torch.__version__}; "
          f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"recipe {args.recipe}{' on ' + args.data if args.data else ''}, {args.steps} steps per run, "
          f"{args.rounds} round(s), {args.neighbours} neighbour(s) in the 'beside' condition")
    speeds: dict[tuple[str, int], list[float]] = {}
    ended: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for condition in ("without", "beside"):
                spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(args.neighbours)] \
                    if condition == "beside" else []
                try:
                    for threads in settings:
                        ips, final = run_once(args.recipe, args.data, threads, args.steps, args.log_every,
                                              Path(tmp) / f"run-{round_}-{condition}-{threads}")
                        speeds.setdefault((condition, threads), []).append(ips)
                        if threads == 0:
                            ended.setdefault(condition, []).append(final)
                        print(f"  round {round_ + 1} {condition:7s} threads={threads}: {ips:7.1f} images/s"
                              + (f" (default ended on {final} thread(s))" if threads == 0 else ""), flush=True)
                finally:
                    for spinner in spinners:
                        spinner.kill()
                        spinner.wait()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for condition in ("without", "beside"):
        medians = {t: statistics.median(speeds[(condition, t)]) for t in settings}
        fixed = {t: v for t, v in medians.items() if t != 0}
        line = "  ".join(f"threads={t}: {v:.1f}" for t, v in medians.items())
        print(f"{condition:7s} neighbour: {line} images/s (medians)")
        if 0 in medians and fixed:
            best = max(fixed, key=fixed.get)
            print(f"{condition:7s} neighbour: default / best fixed (threads={best}) = "
                  f"{medians[0] / fixed[best]:.2f}; default ended on {ended[condition]} thread(s)")


if __name__ == "__main__":
    main()
