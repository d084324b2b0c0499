"""ganforge against the seeds' own TensorFlow code, side by side in one run on the same cores.

    python bench/tf_anchor.py --tf-python /path/to/tf-venv/bin/python \
        --recipe tf-dcgan-mnist,seed001-dcgan-mnist --threads 2,1 --out anchor.json

TensorFlow is not a dependency of ganforge: it runs from another Python (`--tf-python`, any with
`tensorflow` 2.x and Keras 3) as a child process, `bench/tf_seed.py`, which holds the recipe's
TensorFlow step written from SEED-RECIPES.md and times it on request. ganforge's side is the
trainer's own step (`GANRun.train_step`, as `bench/speed.py` times it) in this process.

Both use the same images (the dataset's uint8 images, written once for the child), full batches
only, the same thread count (TensorFlow: intra- and inter-op threads; torch: `threads=`), and are
timed after the same number of warm-up steps. The rounds alternate, with the order swapped every
round (TF, ganforge, ganforge, TF, ...), so load from other processes hits both alike; reported
are median images/s, the median of the per-round ratios with their range, and the same per
CPU-second of each process. Data loading (decoding the dataset) is outside the clocks on both
sides; each side's in-memory batching (tf.data; index gather and normalise) is inside.

Before timing, the child's parameter counts must equal the spec's and one step must change what
the recipe says it changes (checked in the child), or the bench stops.
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
import time
from pathlib import Path

import ganforge  # noqa: F401  (before torch: its OpenMP setting must be in place when torch loads)
import numpy as np
import torch

from ganforge.config import apply_overrides
from ganforge.data import load_dataset
from ganforge.gan.recipes import get_recipe
from ganforge.gan.run import GANRun

HERE = Path(__file__).resolve().parent
# Keras parameter counts (weights and BatchNorm statistics) from SEED-RECIPES.md.
SPEC = {"tf-dcgan-mnist": {"G": 2_330_944, "D": 212_865},
        "seed001-dcgan-mnist": {"G": 856_193, "D": 390_657}}
STEPS = {"tf-dcgan-mnist": 3, "seed001-dcgan-mnist": 10}  # timed steps per round: a few seconds each


def keras_count(net: torch.nn.Module) -> int:
    """Parameters as Keras counts them: weights plus BatchNorm's moving mean and variance."""
    return (sum(p.numel() for p in net.parameters())
            + sum(b.numel() for name, b in net.named_buffers() if name.endswith(("running_mean", "running_var"))))


class TFSide:
    """The child process running the recipe's TensorFlow step."""

    name = "tensorflow"

    def __init__(self, python: str, recipe: str, images: Path, threads: int, log: Path) -> None:
        # OpenMP settings are torch's (TensorFlow's CPU ops use its own thread pools): not passed on.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "KMP_"))}
        env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""})
        self.log = log.open("w")
        self.proc = subprocess.Popen([python, str(HERE / "tf_seed.py"), "--recipe", recipe, "--data", str(images),
                                      "--threads", str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env=env)
        self.info = self._read()
        counts, checks = self.info["counts"], self.info["checks"]
        if counts != SPEC[recipe]:
            raise SystemExit(f"TensorFlow {recipe}: parameter counts {counts}, the spec says {SPEC[recipe]}")
        if not all(checks.values()):
            raise SystemExit(f"TensorFlow {recipe}: a step does not do what the recipe says: {checks}")

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.log.flush()
            raise SystemExit(f"the TensorFlow process ended: see {self.log.name}")
        return json.loads(line)

    def time(self, steps: int) -> tuple[float, int, float]:
        self.proc.stdin.write(json.dumps({"cmd": "time", "steps": steps}) + "\n")
        self.proc.stdin.flush()
        r = self._read()
        return r["seconds"], r["images"], r["cpu"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # the child exits at the end of its input
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:  # a busy machine: the figures are in, do not wait
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class GanforgeSide:
    """ganforge's training step for the recipe, exactly as `ganforge train` calls it."""

    def __init__(self, cfg, dataset, folder: Path) -> None:
        self.name = f"ganforge[{cfg.speed}]"
        self.run = GANRun(cfg, folder, quiet=True, dataset=dataset)
        self.threads = self.run.threads
        self.counts = {"G": keras_count(self.run.G), "D": keras_count(self.run.D)}

    def time(self, steps: int) -> tuple[float, int, float]:
        torch.set_num_threads(self.threads)
        start, cpu = time.perf_counter(), time.process_time()
        images = 0
        for _ in range(steps):
            _, _, n = self.run.train_step()
            self.run.step += 1
            images += n
        return time.perf_counter() - start, images, time.process_time() - cpu


def compare(args, recipe: str, threads: int, dataset, npy: Path, tmp: Path) -> dict:
    cfg = apply_overrides(get_recipe(recipe), ["device=cpu", f"threads={threads}", f"speed={args.speed}",
                                               "drop_last=true", *args.set])
    ours = GanforgeSide(cfg, dataset, tmp / f"{recipe}-{threads}")
    if ours.counts != SPEC[recipe]:
        raise SystemExit(f"ganforge {recipe}: parameter counts {ours.counts}, the spec says {SPEC[recipe]}")
    tf_side = TFSide(args.tf_python, recipe, npy, threads, tmp / f"tf-{recipe}-{threads}.log")
    steps = args.steps or STEPS[recipe]
    try:
        sides = [tf_side, ours]
        for side in sides:
            side.time(args.warmup)
        rates: dict[str, list[float]] = {s.name: [] for s in sides}
        cpu_rates: dict[str, list[float]] = {s.name: [] for s in sides}
        for r in range(args.rounds):
            for side in sides if r % 2 == 0 else sides[::-1]:
                seconds, images, cpu = side.time(steps)
                rates[side.name].append(images / seconds)
                cpu_rates[side.name].append(images / max(cpu, 1e-9))
    finally:
        tf_side.close()
    ratios = sorted(a / b for a, b in zip(rates[ours.name], rates["tensorflow"]))
    cpu_ratios = sorted(a / b for a, b in zip(cpu_rates[ours.name], cpu_rates["tensorflow"]))
    row = {"recipe": recipe, "threads": threads, "batch_size": cfg.batch_size, "steps_per_round": steps,
           "rounds": args.rounds, "warmup": args.warmup, "counts": ours.counts,
           "tf_checks": tf_side.info["checks"], "ganforge_features": ours.run.speed,
           "ratio": round(statistics.median(ratios), 3), "ratio_range": [round(ratios[0], 3), round(ratios[-1], 3)],
           "cpu_ratio": round(statistics.median(cpu_ratios), 3), "load_average_after": _load()}
    for name in rates:
        key = "ganforge" if name != "tensorflow" else name
        row[key] = {"images_per_second": round(statistics.median(rates[name]), 1),
                    "rounds": [round(x, 1) for x in rates[name]],
                    "images_per_cpu_second": round(statistics.median(cpu_rates[name]), 1)}
    row["tensorflow_version"] = tf_side.info["tensorflow"]
    return row


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return f"load average {_load()}"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tf-python", required=True, help="a Python interpreter that has tensorflow")
    ap.add_argument("--recipe", default="tf-dcgan-mnist,seed001-dcgan-mnist", help="comma-separated: " + ", ".join(SPEC))
    ap.add_argument("--threads", default="2,1", help="comma-separated thread counts, each timed for both sides")
    ap.add_argument("--data", default="mnist5k", help="a registered dataset of 28x28 grey images on disk")
    ap.add_argument("--speed", default="auto", help="ganforge's speed setting")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per round (default: per recipe)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first, on each side")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more ganforge config overrides")
    ap.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    recipes = [r.strip() for r in args.recipe.split(",") if r.strip()]
    for r in recipes:
        if r not in SPEC:
            ap.error(f"--recipe {r!r}: one of {', '.join(SPEC)}")
    thread_counts = [int(t) for t in args.threads.split(",")]

    dataset = load_dataset(args.data, split="train", image_size=28, channels=1, download=False, quiet=True)
    result = {"command": "python bench/tf_anchor.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores",
              "torch": torch.__version__, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "data": f"{dataset.source} ({len(dataset)} images)",
              "uptime_before": _uptime(), "results": []}
    print(result["uptime_before"], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        npy = Path(tmp) / "images.npy"
        np.save(npy, dataset.images[:, 0].numpy())
        for recipe in recipes:
            for threads in thread_counts:
                row = compare(args, recipe, threads, dataset, npy, Path(tmp))
                result["results"].append(row)
                tf_, gf = row["tensorflow"], row["ganforge"]
                print(f"{recipe} batch {row['batch_size']}, {threads} thread(s): TensorFlow {row['tensorflow_version']} "
                      f"{tf_['images_per_second']:.1f} img/s, ganforge[{row['ganforge_features']}] "
                      f"{gf['images_per_second']:.1f} img/s: {row['ratio']:.2f}x "
                      f"({row['ratio_range'][0]:.2f}-{row['ratio_range'][1]:.2f}); per CPU-second "
                      f"{row['cpu_ratio']:.2f}x; rounds TF {tf_['rounds']} ganforge {gf['rounds']}", flush=True)
    result["uptime_after"] = _uptime()
    print(result["uptime_after"])
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
