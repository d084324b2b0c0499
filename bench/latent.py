"""Train the conditional and InfoGAN recipes on the CPU and measure their latent spaces.

    nice python bench/latent.py --out bench-runs/latent          # trains, explores, measures
    nice python bench/latent.py --out bench-runs/latent --reuse  # measures runs already trained there

Each run trains its recipe's own budget with one torch thread (`threads=1`; `--threads 0` for
ganforge's default), then `ganforge
explore` writes its pictures and the latent measurements of `ganforge eval` are taken
(gan/latent_metrics.py): class fidelity for the conditional runs (goals: >= 97 % on MNIST-family
digits, >= 85 % on Fashion-MNIST), and for InfoGAN the categorical code's agreement with the
classifier (goal >= 90 %) and the continuous codes' Spearman correlations with slant (goal: one
|rho| >= 0.9) and stroke width (another >= 0.8). Prints one JSON line per run and writes
`latent.json` and the explore stills into `--out`.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from ganforge.config import apply_overrides
from ganforge.gan.explore import explore_run
from ganforge.gan.latent_metrics import format_latent, latent_measurements
from ganforge.gan.recipes import get_recipe
from ganforge.gan.sampling import load_generator
from ganforge.gan.train import train

RUNS = {  # run name -> (recipe, data)
    "cgan-mnist5k": ("cgan-mnist", "mnist5k"),
    "cgan-fashion": ("cgan-mnist", "fashion-mnist"),
    "infogan-mnist5k": ("infogan-mnist", "mnist5k"),
}


def suffix(seed: int, tag: str) -> str:
    """What names a run folder and its record apart from the default runs: -seedN, then -TAG."""
    return (f"-seed{seed}" if seed else "") + (f"-{tag}" if tag else "")


def run_one(name: str, out: Path, reuse: bool, n: int, seed: int = 0, overrides: tuple[str, ...] = (),
            tag: str = "", threads: int = 1) -> dict:
    recipe, data = RUNS[name]
    run_dir = out / (name + suffix(seed, tag))
    summary_path = run_dir / "summary.json"
    if not (reuse and summary_path.is_file() and json.loads(summary_path.read_text()).get("finished")):
        cfg = apply_overrides(get_recipe(recipe), [f"data={data}", f"threads={threads}", "device=cpu", f"seed={seed}",
                                                   *overrides])
        train(cfg, run_dir, force=True, quiet=True)
    summary = json.loads(summary_path.read_text())
    explore_run(run_dir, seed=1)
    generator, cfg, _ = load_generator(run_dir)
    t0 = time.perf_counter()
    measured = latent_measurements(generator, cfg, n=n, seed=0, quiet=True)
    return {"run": run_dir.name, "recipe": recipe, "data": data, "seed": seed, "overrides": list(overrides),
            "batch_size": cfg.batch_size, "steps": summary["steps"],
            "train_seconds": summary["seconds"], "measure_seconds": round(time.perf_counter() - t0, 1),
            "summary": format_latent(measured), **measured}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench-runs/latent", help="folder for the runs and latent.json")
    p.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--n", type=int, default=5000, help="generated images per measurement")
    p.add_argument("--seed", type=int, default=0, help="the runs' training seed (runs of seed N > 0 are "
                   "named NAME-seedN)")
    p.add_argument("--reuse", action="store_true", help="measure finished runs found in --out")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of every run's recipe")
    p.add_argument("--tag", default="", help="suffix of the run folders and of latent.json (for overrides)")
    p.add_argument("--threads", type=int, default=1, help="the runs' torch threads (0: ganforge's default, "
                   "one per core, fewer while other work shares the cores)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.runs:
        results.append(run_one(name, out, args.reuse, args.n, args.seed, tuple(args.overrides), args.tag,
                               args.threads))
        print(json.dumps({k: results[-1][k] for k in ("run", "steps", "train_seconds", "summary")}), flush=True)
    threads = f"{args.threads} torch thread{'s' * (args.threads > 1)}" if args.threads else "default threads"
    machine = f"{platform.processor() or platform.machine()}, {threads}, torch {torch.__version__}"
    (out / f"latent{suffix(args.seed, args.tag)}.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    main()
