"""Detector training speed: images/s of `ganforge detect train` under several settings, against
the optimizer's loop implementation (`fused=false`, what the trainer ran before fused kernels) in
the same run.

Each setting trains the `adam` recipe on digits-det for `--steps` steps as a person would (the real
CLI in a child process; no pretraining, no val mAP, no drawings, so the figure is the training
loop's: batches made by the augmentation worker, forward, equation 3, backward, optimizer), and its
speed is the median images/s of its log windows after the first. Settings take turns over
`--rounds`, in alternating order, and each gets the median of its rounds.

    python bench/detect_train_speed.py --steps 160 --rounds 2 --out docs/benchmarks/cpu/detect-train-speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = {
    "loop Adam (fused=false)": ["fused=false"],
    "fused Adam (default)": [],
    "fused Adam + bf16=true": ["bf16=true"],
}
BASELINE = "loop Adam (fused=false)"


def uptime() -> str:
    return subprocess.run(["uptime"], text=True, stdout=subprocess.PIPE).stdout.strip()


def one(work: Path, overrides: list[str], steps: int, extra: list[str]) -> float:
    run = work / "run"
    command = [sys.executable, "-m", "ganforge", "detect", "train", "adam", "--data", "digits-det", "--out",
               str(run), "--force", "--quiet", "--steps", str(steps), "pretrain_steps=0", "eval_every=0",
               f"predict_every={10 * steps}", "log_every=20", *extra, *overrides]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["images_per_second"] for r in rows if r.get("kind") == "train"][1:]
    return statistics.median(speeds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=160)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every setting")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    record = {"command": "python bench/" + shlex.join([Path(__file__).name, *sys.argv[1:]]),
              "machine": f"{os.uname().machine}, {os.cpu_count()} cores", "uptime_before": uptime(),
              "steps": args.steps, "rounds": {}}
    names = list(SETTINGS)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                speed = one(Path(tmp), SETTINGS[name], args.steps, args.set)
                record["rounds"].setdefault(name, []).append(round(speed, 1))
                print(f"round {r + 1} {name}: {speed:.1f} images/s", flush=True)
    record["uptime_after"] = uptime()
    base = statistics.median(record["rounds"][BASELINE])
    record["median"] = {n: statistics.median(v) for n, v in record["rounds"].items()}
    record["ratio"] = {n: round(v / base, 2) for n, v in record["median"].items()}
    for name in names:
        print(f"{name}: {record['median'][name]:.1f} images/s, {record['ratio'][name]:.2f}x the loop Adam")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
