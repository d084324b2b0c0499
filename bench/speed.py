"""Time ganforge's training step against a plain eager PyTorch loop of the same model.

    python bench/speed.py --recipe tf-dcgan-mnist --device cpu --steps 5
    python bench/speed.py --recipe dcgan --device cuda --steps 200 --speed fast

Both run in this one process, in alternating rounds (so a busy machine slows both alike), after
warm-up steps. Reported for each: images/s (median over rounds), time per epoch of the recipe's
dataset, peak memory; then their ratio, and ganforge's first compile and CUDA-graph capture times,
which are not in the step times. `--json PATH` writes the same figures as JSON.

The data is the recipe's dataset if it is on disk (nothing is downloaded), else `--data`, else
random uint8 images of the recipe's shape: the step's cost does not depend on the pixels.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline import PlainGAN  # noqa: E402

from ganforge.config import apply_overrides, get_recipe, recipe_names  # noqa: E402
from ganforge.data import DATASETS, ImageDataset, load_dataset  # noqa: E402
from ganforge.errors import GanforgeError  # noqa: E402
from ganforge.train import Run  # noqa: E402

# Images in one epoch of each registered dataset's train split (+ test where a recipe merges it).
EPOCH_IMAGES = {"mnist": 60_000, "fashion-mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000,
                "mnist5k": 5_000, "digits": 1_438}


def load_images(cfg, data: str | None, root: str | None) -> tuple[ImageDataset, str]:
    """The recipe's data from disk, else `data`, else random images of the recipe's shape."""
    for name in ([data] if data else []) + [cfg.data]:
        try:
            ds = load_dataset(name, split="train", image_size=cfg.image_size, channels=cfg.channels,
                              merge_test=cfg.merge_test and name == cfg.data, root=root if name == data else None,
                              download=False, quiet=True)
            return ds, ds.source
        except GanforgeError:
            continue
    n = 10_000
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, cfg.channels, cfg.image_size, cfg.image_size), dtype=torch.uint8,
                           generator=g)
    return ImageDataset("random", images, None, None, "random"), f"random uint8 ({n} images; {cfg.data} not on disk)"


class PeakRSS:
    """Largest resident set size seen while active (CPU peak memory), sampled every 5 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._on = False
        threading.Thread(target=self._watch, daemon=True).start()

    @staticmethod
    def now() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _watch(self) -> None:
        while True:
            if self._on:
                self.peak = max(self.peak, self.now())
            time.sleep(0.005)

    def __enter__(self):
        self._on = True
        self.peak = max(self.peak, self.now())
        return self

    def __exit__(self, *exc) -> None:
        self._on = False


class Ours:
    """ganforge's step, exactly as `ganforge train` calls it (the run loop minus its maintenance)."""

    name = "ganforge"

    def __init__(self, cfg, dataset: ImageDataset, workdir: Path) -> None:
        self.run = Run(cfg, workdir, quiet=True, dataset=dataset)

    def step(self) -> int:
        _, _, images = self.run.train_step()
        self.run.step += 1
        return images


class Plain:
    name = "baseline"

    def __init__(self, cfg, dataset: ImageDataset, device: torch.device, workers: int) -> None:
        self.gan = PlainGAN(cfg, dataset.images, device, workers)

    def step(self) -> int:
        return self.gan.step()


def timed(impl, steps: int, device: torch.device) -> tuple[float, int]:
    """Seconds for `steps` steps (the device's queue drained before and after) and images used."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    images = sum(impl.step() for _ in range(steps))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, images


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", required=True, choices=recipe_names())
    ap.add_argument("--device", default="cpu", help="cpu or cuda (or cuda:N)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round and implementation")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed steps first (default: 2 on the CPU, 10 on CUDA; compile/capture come first)")
    ap.add_argument("--speed", default="fast", help="ganforge's speed setting (default fast)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for both (0 = all cores)")
    ap.add_argument("--workers", type=int, default=None,
                    help="baseline DataLoader workers (default: 0 on the CPU, where workers steal cores; 2 on CUDA, as pytorch/examples)")
    ap.add_argument("--data", default=None, help="a registered dataset to use if the recipe's is not on disk")
    ap.add_argument("--data-root", default=None, help="where --data's files are")
    ap.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch size")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more config overrides")
    ap.add_argument("--only", choices=("ganforge", "baseline"), default=None, help="time one side only")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    overrides = [f"device={args.device}", f"speed={args.speed}", f"threads={args.threads}"] + args.set
    if args.batch_size:
        overrides.append(f"batch_size={args.batch_size}")
    cfg = apply_overrides(get_recipe(args.recipe), overrides)
    dataset, source = load_images(cfg, args.data, args.data_root)
    warmup = args.warmup if args.warmup is not None else (10 if device.type == "cuda" else 2)
    workers = args.workers if args.workers is not None else (2 if device.type == "cuda" else 0)

    impls = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "baseline":
            impls.append(Ours(cfg, dataset, Path(tmp)))
        if args.only != "ganforge":
            impls.append(Plain(cfg, dataset, device, workers))
        threads = torch.get_num_threads()
        rss = PeakRSS() if device.type == "cpu" else None
        peak = {impl.name: 0 for impl in impls}
        first = {}
        for impl in impls:  # first step (compile happens here) and warm-up (capture happens here)
            with rss or _null():
                first[impl.name], _ = timed(impl, 1, device)
                timed(impl, warmup, device)
        rates: dict[str, list[float]] = {impl.name: [] for impl in impls}
        for r in range(args.rounds):
            for impl in impls if r % 2 == 0 else impls[::-1]:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                elif rss is not None:
                    rss.peak = 0
                with rss or _null():
                    seconds, images = timed(impl, args.steps, device)
                rates[impl.name].append(images / seconds)
                used = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.peak
                peak[impl.name] = max(peak[impl.name], used)

        epoch_images = EPOCH_IMAGES.get(cfg.data, len(dataset))
        if cfg.merge_test and cfg.data in ("cifar10", "cifar100"):
            epoch_images += 10_000
        result = {
            "recipe": args.recipe, "device": _device_name(device), "threads": threads,
            "batch_size": cfg.batch_size, "data": source, "steps_per_round": args.steps,
            "rounds": args.rounds, "warmup": warmup, "baseline_workers": workers,
            "torch": torch.__version__, "python": platform.python_version(),
            "command": "python bench/speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        }
        for impl in impls:
            ips = statistics.median(rates[impl.name])
            result[impl.name] = {
                "images_per_second": round(ips, 2), "rounds": [round(x, 2) for x in rates[impl.name]],
                "epoch_seconds": round(epoch_images / ips, 2), "peak_memory_mb": round(peak[impl.name] / 2**20, 1),
                "first_step_seconds": round(first[impl.name], 3),
            }
        if isinstance(impls[0], Ours):
            run = impls[0].run
            result["ganforge"].update({
                "speed": run.speed, "compile_seconds": _round(run.compiled.first_call_seconds),
                "capture_seconds": _round(run.graphed.capture_seconds),
            })
        if len(impls) == 2:
            result["ratio"] = round(result["ganforge"]["images_per_second"] / result["baseline"]["images_per_second"], 3)
            result["epoch_images"] = epoch_images
    _report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def _null():
    import contextlib

    return contextlib.nullcontext()


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def _report(r: dict) -> None:
    print(f"{r['recipe']} on {r['device']} ({r['threads']} threads), batch {r['batch_size']}, data: {r['data']}")
    mem = "peak GPU memory" if "cuda" in r.get("command", "") and "cpu" not in r["device"] else "peak memory"
    for name in ("ganforge", "baseline"):
        if name in r:
            x = r[name]
            extra = f"  [{x['speed']}]" if name == "ganforge" else ""
            print(f"  {name:9s} {x['images_per_second']:10.1f} img/s  epoch {x['epoch_seconds']:9.1f} s  "
                  f"{mem} {x['peak_memory_mb']:8.1f} MB  rounds {x['rounds']}{extra}")
    if "ratio" in r:
        print(f"  ratio     {r['ratio']:.2f}x ganforge / baseline")
    g = r.get("ganforge", {})
    if g:
        print(f"  first step {g['first_step_seconds']:.2f} s; compile {g['compile_seconds']} s; "
              f"CUDA-graph capture {g['capture_seconds']} s (not in the step times)")


if __name__ == "__main__":
    main()
