"""Time ganforge's training step against a plain eager PyTorch loop of the same model.

    python bench/speed.py --recipe tf-dcgan-mnist --device cpu --steps 5
    python bench/speed.py --recipe dcgan --device cuda --steps 200 --speed fast

Both run in this one process, in alternating rounds (so a busy machine slows both alike), after
warm-up steps. Reported for each: images/s (median over rounds), time per epoch of the recipe's
dataset, peak memory; the ratio to the baseline (median of the per-round ratios, with their
range, and the same per CPU-second of the process, steadier on a shared machine); and ganforge's
compile and CUDA-graph capture times, which are not in the step times. `--json PATH` writes the
same figures as JSON.

The data is the recipe's dataset if it is on disk (nothing is downloaded), else `--data`, else
random uint8 images of the recipe's shape: the step's cost does not depend on the pixels.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline import PlainGAN  # noqa: E402

from ganforge.config import apply_overrides  # noqa: E402
from ganforge.gan.recipes import get_recipe, recipe_names  # noqa: E402
from ganforge.data import ImageDataset, load_dataset  # noqa: E402
from ganforge.errors import GanforgeError  # noqa: E402
from ganforge.gan.run import GANRun as Run  # noqa: E402

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


class Ours:
    """ganforge's step, exactly as `ganforge train` calls it (the run loop minus its maintenance)."""

    def __init__(self, cfg, dataset: ImageDataset, workdir: Path) -> None:
        self.name = f"ganforge[{cfg.speed}]"
        self.speed = cfg.speed
        self.run = Run(cfg, workdir, quiet=True, dataset=dataset)
        self.threads = self.run.threads

    def step(self) -> int:
        _, _, images = self.run.train_step()
        self.run.step += 1
        return images


class Plain:
    name = "baseline"

    def __init__(self, cfg, dataset: ImageDataset, device: torch.device, workers: int, threads: int) -> None:
        self.gan = PlainGAN(cfg, dataset.images, device, workers)
        self.threads = threads

    def step(self) -> int:
        return self.gan.step()


def timed(impl, steps: int, device: torch.device) -> tuple[float, int, float]:
    """Wall seconds for `steps` steps (the device's queue drained before and after), images used,
    and the CPU seconds this process spent meanwhile."""
    torch.set_num_threads(impl.threads)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, cpu = time.perf_counter(), time.process_time()
    images = sum(impl.step() for _ in range(steps))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, images, time.process_time() - cpu


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", required=True, choices=recipe_names())
    ap.add_argument("--device", default="cpu", help="cpu or cuda (or cuda:N)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round and implementation")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed steps first (default: 2 on the CPU, 10 on CUDA; compile/capture happen here)")
    ap.add_argument("--speed", default="fast",
                    help="ganforge speed setting(s), comma-separated: each is timed (default fast)")
    ap.add_argument("--threads", type=int, default=0,
                    help="CPU threads for ganforge (0 = its default: every core)")
    ap.add_argument("--baseline-threads", type=int, default=None,
                    help="CPU threads for the baseline (default: torch's default, one per core, as a user's script gets)")
    ap.add_argument("--workers", type=int, default=None,
                    help="baseline DataLoader workers (default: 0 on the CPU, where workers steal cores; 2 on CUDA, as pytorch/examples)")
    ap.add_argument("--data", default=None, help="a registered dataset to use if the recipe's is not on disk")
    ap.add_argument("--data-root", default=None, help="where --data's files are")
    ap.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch size")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more config overrides")
    ap.add_argument("--only", choices=("ganforge", "baseline"), default=None, help="time one side only")
    ap.add_argument("--no-memory", action="store_true", help="CPU: skip the peak-memory subprocesses")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    default_threads = torch.get_num_threads()
    speeds = [x.strip() for x in args.speed.split(",") if x.strip()]
    base = [f"device={args.device}", f"threads={args.threads}"] + args.set
    if args.batch_size:
        base.append(f"batch_size={args.batch_size}")
    cfgs = [apply_overrides(get_recipe(args.recipe), base + [f"speed={sp}"]) for sp in speeds]
    cfg = cfgs[0]
    dataset, source = load_images(cfg, args.data, args.data_root)
    warmup = args.warmup if args.warmup is not None else (10 if device.type == "cuda" else 2)
    workers = args.workers if args.workers is not None else (2 if device.type == "cuda" else 0)
    baseline_threads = args.baseline_threads or (args.threads or default_threads)

    impls: list = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "baseline":
            impls += [Ours(c, dataset, Path(tmp) / str(i)) for i, c in enumerate(cfgs)]
        if args.only != "ganforge":
            impls.append(Plain(cfg, dataset, device, workers, baseline_threads))
        first: dict[str, float] = {}
        peak = {impl.name: 0 for impl in impls}
        _reset_peak_rss()  # from here on: the training's peak, not the data loading's
        for impl in impls:  # the first step (compile happens here), then warm-up (capture happens here)
            first[impl.name], _, _ = timed(impl, 1, device)
            timed(impl, warmup, device)
        rates: dict[str, list[float]] = {impl.name: [] for impl in impls}
        cpu_rates: dict[str, list[float]] = {impl.name: [] for impl in impls}
        for r in range(args.rounds):
            for impl in impls if r % 2 == 0 else impls[::-1]:  # alternate who goes first
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                seconds, images, cpu = timed(impl, args.steps, device)
                rates[impl.name].append(images / seconds)
                cpu_rates[impl.name].append(images / max(cpu, 1e-9))
                if device.type == "cuda":
                    peak[impl.name] = max(peak[impl.name], torch.cuda.max_memory_allocated(device))

    epoch_images = EPOCH_IMAGES.get(cfg.data, len(dataset))
    if cfg.merge_test and cfg.data in ("cifar10", "cifar100"):
        epoch_images += 10_000
    result = {
        "recipe": args.recipe, "device": _device_name(device), "batch_size": cfg.batch_size,
        "data": source, "epoch_images": epoch_images, "steps_per_round": args.steps, "rounds": args.rounds,
        "warmup": warmup, "baseline_workers": workers, "torch": torch.__version__,
        "python": platform.python_version(), "load_average": [round(x, 2) for x in os.getloadavg()],
        "command": "python bench/speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "max_rss_mb": _peak_rss_mb(),
        "results": {},
    }
    for impl in impls:
        ips = statistics.median(rates[impl.name])
        row = {"images_per_second": round(ips, 2), "rounds": [round(x, 2) for x in rates[impl.name]],
               "epoch_seconds": round(epoch_images / ips, 2), "threads": impl.threads,
               "first_step_seconds": round(first[impl.name], 3),
               # Images per CPU-second of this process: on a shared machine, far steadier than wall
               # time when one thread computes (it does not count time spent waiting for a core).
               "images_per_cpu_second": round(statistics.median(cpu_rates[impl.name]), 2)}
        if device.type == "cuda":
            row["peak_memory_mb"] = round(peak[impl.name] / 2**20, 1)
        elif not args.no_memory:
            row["peak_memory_mb"] = _peak_rss_alone(args, impl)
        if isinstance(impl, Ours):
            run = impl.run
            row.update({"features": run.speed, "compile_seconds": _round(run.compiled.compile_seconds),
                        "capture_seconds": _round(run.graphed.capture_seconds)})
        result["results"][impl.name] = row
    # Ratios to the baseline (or, without one, to the first setting), paired per round: the two ran
    # back to back, so the machine's load drifts cancel out.
    reference = "baseline" if "baseline" in rates else impls[0].name
    result["reference"] = reference
    for name, row in result["results"].items():
        if name != reference:
            pairs = sorted(a / b for a, b in zip(rates[name], rates[reference]))
            row["ratio"] = round(statistics.median(pairs), 3)
            row["ratio_range"] = [round(pairs[0], 3), round(pairs[-1], 3)]
            cpu_pairs = sorted(a / b for a, b in zip(cpu_rates[name], cpu_rates[reference]))
            row["cpu_ratio"] = round(statistics.median(cpu_pairs), 3)
    _report(result, mem="peak GPU memory" if device.type == "cuda" else "peak RSS alone")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def _reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM, the peak RSS
    except OSError:
        pass


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _peak_rss_alone(args, impl) -> float | None:
    """CPU peak memory of one implementation: a child process runs it alone for a few steps and
    reports its peak resident set size while training (torch, the resident data, the models, the
    activations; not the one-off data loading)."""
    cmd = [sys.executable, __file__, "--recipe", args.recipe, "--device", args.device, "--steps", "1",
           "--rounds", "1", "--warmup", "1", "--no-memory", "--threads", str(args.threads),
           "--only", "baseline" if impl.name == "baseline" else "ganforge"]
    if impl.name != "baseline":
        cmd += ["--speed", impl.speed]
    for flag, value in (("--data", args.data), ("--data-root", args.data_root), ("--batch-size", args.batch_size)):
        if value:
            cmd += [flag, str(value)]
    if args.set:
        cmd += ["--set", *args.set]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(cmd + ["--json", f"{tmp}/r.json"], capture_output=True, text=True)
        try:
            return json.loads(Path(f"{tmp}/r.json").read_text())["max_rss_mb"]
        except (OSError, ValueError, KeyError):
            return None


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def _report(r: dict, mem: str) -> None:
    print(f"{r['recipe']} on {r['device']}, batch {r['batch_size']}, data: {r['data']}, "
          f"load average {r['load_average']}")
    for name, x in r["results"].items():
        ratio = (f"  {x['ratio']:.2f}x {r['reference']} ({x['ratio_range'][0]:.2f}-{x['ratio_range'][1]:.2f})"
                 if "ratio" in x else "")
        memory = f"  {mem} {x['peak_memory_mb']} MB" if x.get("peak_memory_mb") else ""
        cpu = f"; per CPU-second {x['cpu_ratio']:.2f}x" if "cpu_ratio" in x else ""
        print(f"  {name:32s} {x['images_per_second']:9.1f} img/s  epoch {x['epoch_seconds']:9.1f} s  "
              f"threads {x['threads']}{memory}{ratio}{cpu}  rounds {x['rounds']}")
        if "features" in x:
            print(f"  {'':32s} features {x['features']}; first step {x['first_step_seconds']:.2f} s; "
                  f"compile {x['compile_seconds']} s; CUDA-graph capture {x['capture_seconds']} s "
                  "(not in the step times)")


if __name__ == "__main__":
    main()
