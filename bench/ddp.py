"""Training throughput on several processes (torchrun, DDP) against one eager process.

    python bench/ddp.py --recipe default --data digits --steps 300 --procs 1,2
    python bench/ddp.py --recipe dcgan --device cuda --steps 500 --procs 1,2,4,8 --json out.json

Each configuration is a real `ganforge train` through the CLI, as a person runs it: one process
with `speed=eager` (the baseline), then `--nproc N` for each N (the default speed, which turns
compile and CUDA graphs off under DDP). The figure is the run's own images/s from summary.json
(global images over rank 0's training seconds: setup, process start and rendezvous are not in
it). `--rounds` repeats the whole set in alternation, so a busy machine slows every
configuration alike; the median is reported with the range. Prints JSON (and writes it with
`--json`). The batch is the global batch: N processes share it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def run_once(recipe: str, data: str | None, steps: int, procs: int | None, device: str,
             overrides: list[str], eager: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "ganforge", "train", recipe, "--steps", str(steps), "--out", str(out),
               "--quiet", "--device", device, "log_every=1000000", "sample_every=1000000",
               "checkpoint_every=1000000", *overrides]
        if data:
            cmd += ["--data", data]
        if eager:
            cmd.append("speed=eager")
        if procs is not None:
            cmd += ["--nproc", str(procs)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"bench/ddp.py: {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        return float(json.loads((out / "summary.json").read_text())["images_per_second"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="default")
    p.add_argument("--data", default="digits")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--procs", default="1,2", help="process counts to run under --nproc, comma-separated")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args()
    counts = [int(n) for n in args.procs.split(",")]
    names = ["eager-1"] + [f"ddp-{n}" for n in counts]
    seen: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        seen["eager-1"].append(run_once(args.recipe, args.data, args.steps, None, args.device, args.overrides, True))
        for n in counts:
            seen[f"ddp-{n}"].append(run_once(args.recipe, args.data, args.steps, n, args.device, args.overrides,
                                             False))
    base = statistics.median(seen["eager-1"])
    result = {
        "recipe": args.recipe, "data": args.data, "device": args.device, "steps": args.steps,
        "overrides": args.overrides, "rounds": args.rounds,
        "machine": {"cpu_cores": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "images_per_second": {name: {"median": round(statistics.median(v), 1), "min": round(min(v), 1),
                                     "max": round(max(v), 1)} for name, v in seen.items()},
        "ratio_vs_eager_1": {name: round(statistics.median(v) / base, 3) for name, v in seen.items()},
        "command": "python bench/ddp.py " + " ".join(sys.argv[1:]),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
