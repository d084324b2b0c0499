"""Does a regulariser improve `default` at its own CPU budget? Train each variant, score each.

    nice python bench/regularisers.py --out bench-runs/reg --jobs 2
    nice python bench/regularisers.py --out bench-runs/reg --jobs 2 --seeds 1 --variants default r1 r1_half

Every variant is the `default` recipe (2,000 steps on mnist5k, one torch thread) with one option
changed; its EMA generator makes `--n` images that are scored against mnist5k's test split with the
dataset's classifier features (the protocol of docs/RESULTS.md). Writes `regularisers-SEEDS.json`.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

VARIANTS = {
    "default": [],
    "spectral_norm": ["spectral_norm=true"],
    "r1": ["r1_gamma=1"],
    "diffaugment": ["diffaugment=color,translation,cutout"],
    "ttur": ["g_lr=1e-4", "d_lr=4e-4"],
    "r1_half": ["r1_gamma=1", "steps=1000"],  # R1 at about default's training time (its steps cost ~2x)
}


def run_variant(name: str, out: str, n: int, seed: int = 0) -> dict:
    import torch

    torch.set_num_threads(1)
    from ganforge.config import apply_overrides
    from ganforge.gan.latents import LatentSpec
    from ganforge.gan.recipes import get_recipe
    from ganforge.gan.sampling import generate, load_generator
    from ganforge.gan.train import train
    from ganforge.metrics.evaluate import evaluate_images

    cfg = apply_overrides(get_recipe("default"), VARIANTS[name] + ["threads=1", "device=cpu", f"seed={seed}"])
    run_dir = Path(out) / f"{name}-seed{seed}"
    train(cfg, run_dir, force=True, quiet=True)
    generator, cfg, _ = load_generator(run_dir)
    fake = generate(generator, n, LatentSpec.from_config(cfg), seed=123, pixel_range=cfg.pixel_range)
    scores = evaluate_images(fake, cfg.data, features="classifier", split="test", seed=0, quiet=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"variant": name, "overrides": VARIANTS[name], "seed": seed, "steps": summary["steps"],
            "train_seconds": summary["seconds"],
            **{k: scores[k] for k in ("fid", "kid_mean", "precision", "recall")},
            "features": scores["protocol"]["features"], "n_fake": n}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench-runs/reg")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--jobs", type=int, default=1, help="variants trained at once")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", type=int, nargs="*", default=[0], help="training seeds of every variant")
    args = p.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    jobs = [(v, s) for s in args.seeds for v in args.variants]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run_variant, [v for v, _ in jobs], [args.out] * len(jobs), [args.n] * len(jobs),
                                [s for _, s in jobs]))
    for r in results:
        print(json.dumps(r))
    (Path(args.out) / f"regularisers-{'-'.join(map(str, args.seeds))}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
