"""The translation papers' lessons in miniature, over several seeds: docs/TRANSLATION.md's tables.

Each row is a real `ganforge translate train` run followed by `ganforge translate eval RUN --n N`
(subprocesses, the commands a person types); the figures are read back from the run's eval.json.
A row whose eval.json exists is not trained again, so the script can be stopped and run again.

    nice python bench/translate_tables.py --work /tmp/tables --seeds 0 1 2 \
        --out docs/benchmarks/cpu/translate-tables.json

Tables (`--tables`):
- `table1`: pix2pix Table 1 on `edges2mnist` (L1 alone, cGAN alone, L1 + cGAN), `pix2pix-small`;
- `patch`: the PatchGAN size ablation (1 / 16 / 34 px; 34 is the recipe's) on the same data;
- `table4`: CycleGAN Table 4 on `thin2thick-unpaired` (GAN alone, cycle alone, GAN + forward cycle,
  the full model), `cyclegan-small`;
- `own`: a person's own paired folder: 3,000 Fashion-MNIST garments (B) with their Canny edges (A),
  written as A/ and B/ PNGs, `pix2pix-small` with the default threads and max_seconds=600 (ten minutes
  of training), scored against the L1 between the held-out inputs and targets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROWS = {
    "table1": [("L1 alone", "pix2pix-small", "edges2mnist", ["lambda_gan=0"]),
               ("cGAN alone", "pix2pix-small", "edges2mnist", ["lambda_l1=0"]),
               ("L1 + cGAN", "pix2pix-small", "edges2mnist", [])],
    "patch": [("PatchGAN 1 px", "pix2pix-small", "edges2mnist", ["patch=1"]),
              ("PatchGAN 16 px", "pix2pix-small", "edges2mnist", ["patch=16"]),
              ("PatchGAN 34 px", "pix2pix-small", "edges2mnist", [])],  # = table1's L1 + cGAN run
    "table4": [("GAN alone", "cyclegan-small", "thin2thick-unpaired", ["lambda_cyc=0", "lambda_idt=0"]),
               ("cycle alone", "cyclegan-small", "thin2thick-unpaired", ["lambda_gan=0"]),
               ("GAN + forward cycle", "cyclegan-small", "thin2thick-unpaired", ["cycle=forward"]),
               ("full model", "cyclegan-small", "thin2thick-unpaired", [])],
}
STEPS = {"pix2pix-small": 1500, "cyclegan-small": 1000}  # pix2pix-small's own budget; half of cyclegan-small's


def own_folder(root: Path, n: int = 3000) -> Path:
    """A paired A/ + B/ folder made from Fashion-MNIST test images: edges -> garment."""
    import numpy as np
    from PIL import Image
    from skimage.feature import canny

    from ganforge.data import load_dataset

    folder = root / "fashion-edges"
    if (folder / "B" / f"{n - 1:05d}.png").exists():
        return folder
    images = load_dataset("fashion-mnist", split="test", download=False).images[:n, 0].numpy()
    for side in "AB":
        (folder / side).mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        edges = canny(image.astype(np.float64) / 255.0, sigma=1.0)
        Image.fromarray(np.where(edges, 255, 0).astype(np.uint8)).save(folder / "A" / f"{i:05d}.png")
        Image.fromarray(image).save(folder / "B" / f"{i:05d}.png")
    return folder


def run_row(work: Path, table: str, name: str, recipe: str, data: str, extra: list[str], seed: int,
            n: int, steps: int | None, threads: str) -> dict:
    tag = f"-{steps}steps" if steps else ""
    slug = f"{table}-{name.lower().replace(' ', '-').replace('+', 'and').replace(',', '')}{tag}-s{seed}"
    same = work / f"table1-l1-and-cgan{tag}-s{seed}"  # the recipe as it is: one run serves both tables
    run = same if (recipe, data, extra) == ("pix2pix-small", "edges2mnist", []) and table == "patch" else work / slug
    found = run / "eval.json"
    if not found.exists():
        budget = ["--steps", str(steps)] if steps else []
        cmd = [sys.executable, "-m", "ganforge", "translate", "train", recipe, "--data", data, "--out", str(run),
               "--seed", str(seed), "--quiet", "--force", *budget, *threads.split(), *extra]
        t0 = time.time()
        start = os.times()
        subprocess.run(cmd, check=True)
        spent = os.times()
        wall, user = time.time() - t0, spent.children_user - start.children_user
        subprocess.run([sys.executable, "-m", "ganforge", "translate", "eval", str(run), "--n", str(n)], check=True,
                       stdout=subprocess.DEVNULL)
        result = json.loads(found.read_text())
        summary = json.loads((run / "summary.json").read_text())
        result["train"] = {"wall_s": round(wall, 1), "user_s": round(user, 1), "steps": summary["steps"],
                           "status": summary["status"], "command": " ".join(cmd[1:]).replace(str(work), "RUNS")}
        found.write_text(json.dumps(result, indent=2))
    result = json.loads(found.read_text())
    print(f"{table:7s} {name:20s} seed {seed}: " + ", ".join(
        f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float)), flush=True)
    return {"table": table, "row": name, "seed": seed, "recipe": recipe, "data": data, "overrides": extra,
            "train_dir": str(run), **result}


def picture(runs: list[Path], out: Path, n: int = 10) -> Path:
    """Columns: the input, then each run's translation, then the target (pix2pix) or nothing
    (CycleGAN): `n` held-out test images spread over the split, one per row."""
    import torch

    from ganforge.translate.evaluate import translate_all
    from ganforge.translate.run import open_split
    from ganforge.translate.use import load_trained
    from ganforge.viz import save_grid

    models = [load_trained(run) for run in runs]
    cfg = models[0].config
    test = open_split(cfg, "test", cfg.image_size)
    picks = [round(i * len(test.a) / n) for i in range(n)]
    columns = [test.a[picks]] + [translate_all(model, test.a[picks]) for model in models]
    if cfg.mode == "pix2pix":
        columns.append(test.b[picks])
    return save_grid(torch.stack(columns, 1).flatten(0, 1), out, nrow=len(columns))


def summarise(rows: list[dict]) -> None:
    """Mean and standard deviation over the seeds of each row, as markdown."""
    keys = ("l1", "input_l1", "psnr", "ssim", "classifier_score", "classifier_ceiling", "fid", "label_preservation",
            "target_domain_rate", "cycle_l1")
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["table"], r["row"]), []).append(r)
    for (table, name), found in groups.items():
        parts = []
        for key in keys:
            values = [r[key] for r in found if isinstance(r.get(key), float)]
            if values:
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                parts.append(f"{key} {statistics.mean(values):.4f} ± {sd:.4f}")
        shifts = [r["stroke_width_shift"] for r in found if "stroke_width_shift" in r]
        if shifts:
            parts.append("width shift " + ", ".join(f"{s['measured']:+.2f}" for s in shifts) +
                         f" px (known {shifts[0]['known']:+.2f})")
        print(f"| {table} | {name} | seeds {[r['seed'] for r in found]} | " + "; ".join(parts) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the runs (kept, so a rerun skips them)")
    parser.add_argument("--tables", nargs="+", default=["table1", "patch", "table4", "own"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=1000, help="held-out images each eval scores")
    parser.add_argument("--threads", default="threads=1", help="the threads override of the table runs")
    parser.add_argument("--steps", nargs=2, action="append", metavar=("RECIPE", "N"), default=[],
                        help=f"another budget for a recipe's rows (default {STEPS})")
    parser.add_argument("--out", type=Path, help="write every row's figures here (JSON)")
    parser.add_argument("--pictures", type=Path, help="also draw seed 0's rows of each table into this folder")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    steps = {**STEPS, **{name: int(n) for name, n in args.steps}}
    rows = []
    load_before = os.getloadavg()
    for table in args.tables:
        if table == "own":
            folder = own_folder(args.work)
            rows.append(run_row(args.work, "own", "fashion edges, 10 min", "pix2pix-small", str(folder),
                                ["max_seconds=600"], 0, args.n, None, ""))
            continue
        for seed in args.seeds:
            for name, recipe, data, extra in ROWS[table]:
                rows.append(run_row(args.work, table, name, recipe, data, extra, seed, args.n, steps[recipe],
                                    args.threads))
    summarise(rows)
    if args.pictures:
        for table in args.tables:
            if table in ROWS and 0 in args.seeds:
                runs = [Path(r["train_dir"]) for r in rows if r["table"] == table and r["seed"] == 0]
                print(f"wrote {picture(runs, args.pictures / f'{table}.png')}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                        "load_before": load_before, "load_after": os.getloadavg(), "rows": rows},
                                       indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
