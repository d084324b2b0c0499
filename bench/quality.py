"""Does the fast path train as well as the eager one? Same recipe, same steps, several seeds each;
FID (and KID, precision/recall) of each run by the dataset's classifier features.

    python bench/quality.py --recipe default --data mnist5k --steps 600 --seeds 0 1 2
    python bench/quality.py --recipe tf-dcgan-mnist --data fashion-mnist --device cuda --steps 2000

The fast path changes rounding (fused kernels, NHWC, bf16 on CUDA) and, with dropout, the random
stream of the masks, so single runs differ. The question is whether the difference between the
paths is within the spread between seeds of one path. The table prints both.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

from ganforge.config import apply_overrides
from ganforge.gan.recipes import get_recipe, recipe_names
from ganforge.metrics.evaluate import evaluate_images
from ganforge.gan.latents import LatentSpec
from ganforge.gan.sampling import generate, load_generator
from ganforge.gan.train import train


def one_run(recipe: str, speed: str, seed: int, args, workdir: Path) -> dict:
    overrides = [f"data={args.data}", f"speed={speed}", f"seed={seed}", f"device={args.device}",
                 "eval_every=0", *args.set]
    cfg = apply_overrides(get_recipe(recipe), overrides)
    run_dir = workdir / f"{speed}-{seed}"
    train(cfg, run_dir, steps=args.steps, force=True, quiet=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    generator, cfg, _ = load_generator(run_dir, device=args.device)
    fake = generate(generator, args.n, cfg.latent_dim, seed=123, device=args.device, pixel_range=cfg.pixel_range)
    scores = evaluate_images(fake, args.data, features="classifier", split="test", seed=0, quiet=True)
    return {"speed": speed, "ran": summary["speed"], "seed": seed, "steps": summary["steps"],
            "train_seconds": summary["seconds"],
            **{k: scores[k] for k in ("fid", "kid_mean", "precision", "recall")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="default", choices=recipe_names())
    ap.add_argument("--data", default="mnist5k")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--speeds", nargs="+", default=["eager", "auto"])
    ap.add_argument("--n", type=int, default=2000, help="generated images scored per run")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more config overrides")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="ganforge-quality-"))
    rows = []
    try:
        for seed in args.seeds:  # seeds outermost: a change in machine load hits every path alike
            for speed in args.speeds:
                rows.append(one_run(args.recipe, speed, seed, args, workdir))
                r = rows[-1]
                print(f"  {r['speed']:>8s} ({r['ran']}) seed {seed}: FID {r['fid']:.2f}  KID {r['kid_mean']:.4f}  "
                      f"precision {r['precision']:.3f}  recall {r['recall']:.3f}  {r['train_seconds']:.0f} s",
                      flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{args.recipe} on {args.data}, {args.steps} steps, {args.device}, seeds {args.seeds}")
    summary = {}
    for speed in args.speeds:
        fids = [r["fid"] for r in rows if r["speed"] == speed]
        mean, sd = statistics.mean(fids), statistics.stdev(fids) if len(fids) > 1 else 0.0
        summary[speed] = {"fid_mean": mean, "fid_sd": sd, "fids": fids}
        print(f"  {speed:>8s}: FID {mean:.2f} +- {sd:.2f} (sd over seeds)  {', '.join(f'{f:.2f}' for f in fids)}")
    if len(args.speeds) == 2:
        a, b = (summary[s] for s in args.speeds)
        pooled = ((a["fid_sd"] ** 2 + b["fid_sd"] ** 2) / 2) ** 0.5
        print(f"  difference {b['fid_mean'] - a['fid_mean']:+.2f}; seed-to-seed sd {pooled:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": rows, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
