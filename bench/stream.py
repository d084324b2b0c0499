"""Training speed from a folder of image files: decoded once and held in memory, or streamed through
DataLoader workers (the path for folders too big to hold).

    python bench/stream.py [--folder DIR] [--recipe default] [--steps 300] [--workers 1 2]

Without --folder, the 5,000 mnist5k digits are written once as PNG files to a temporary folder.
Each configuration is a real `ganforge train` run; images/s is its summary's figure. The in-memory
run goes first (it also decodes and caches the folder) and last (from the cache).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from ganforge.config import apply_overrides
from ganforge.gan.recipes import get_recipe, recipe_names
from ganforge.data import load_dataset
from ganforge.gan.train import train


def write_pngs(folder: Path) -> None:
    images = load_dataset("mnist5k", quiet=True).images
    for i, image in enumerate(images):
        sub = folder / str(i % 10)
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy(), "L").save(sub / f"{i:05d}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", default=None)
    ap.add_argument("--recipe", default="default", choices=recipe_names())
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ganforge-stream-"))
    try:
        folder = Path(args.folder) if args.folder else tmp / "pngs"
        if not args.folder:
            write_pngs(folder)
        plan = [("memory", 0)] + [("stream", w) for w in args.workers] + [("memory", 0)]
        for mode, workers in plan:
            cfg = apply_overrides(get_recipe(args.recipe), [f"data={folder}", f"data_mode={mode}",
                                                             f"workers={workers}", *args.set])
            run = train(cfg, tmp / f"run-{mode}-{workers}", steps=args.steps, force=True, quiet=True)
            summary = json.loads((run / "summary.json").read_text())
            label = mode if mode == "memory" else f"stream, {workers} worker(s)"
            print(f"  {label:22s} {summary['images_per_second']:8.1f} img/s   ({summary['data_source']})", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
