"""`ganforge translate ...`: recipes, train, apply, eval and download, each parsing its arguments and
calling one library function. `train` is the shared train command of `ganforge.runs.command`:
the same flags and resume rules as every task's."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ganforge.errors import GanforgeError
from ganforge.io import display_path


def cmd_recipes(args: argparse.Namespace) -> int:
    """The presets with their networks' parameter counts."""
    from ganforge.translate.models import build_nets, count
    from ganforge.translate.recipes import RECIPES

    rows = []
    for name, entry in RECIPES.items():
        cfg = entry.config
        params = {net: count(module) for net, module in build_nets(cfg).items()}
        budget = f"{cfg.steps} steps" if cfg.steps else f"{cfg.epochs:g} epochs"
        rows.append({"name": name, "source": entry.source, "about": entry.about, "mode": cfg.mode,
                     "model": cfg.model, "data": cfg.data, "image_size": cfg.image_size, "loss": cfg.loss,
                     "batch_size": cfg.batch_size, "budget": budget, "parameters": params,
                     "total_parameters": sum(params.values())})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'recipe':<16}{'mode':<10}{'G':<7}{'size':>5}  {'loss':<8}{'batch':>6}  {'budget':<13}parameters")
    for r in rows:
        nets = ", ".join(f"{k} {v:,}" for k, v in r["parameters"].items())
        print(f"{r['name']:<16}{r['mode']:<10}{r['model']:<7}{r['image_size']:>5}  {r['loss']:<8}{r['batch_size']:>6}  "
              f"{r['budget']:<13}{nets}")
    print()
    for r in rows:
        print(f"{r['name']}: {r['about']}. Source: {r['source']}.")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from ganforge.export import open_model
    from ganforge.data.decode import image_files
    from ganforge.translate.use import apply_files, apply_output, load_trained
    from ganforge.video import VIDEO_SUFFIXES

    if not (Path(args.source).is_file() and Path(args.source).suffix.lower() in VIDEO_SUFFIXES):
        image_files(args.source)  # a missing or empty source: one line before anything else
    out = apply_output(args.source, args.out, run_dir=args.run, model=args.model, force=args.force)
    if args.model is not None:
        model = open_model("translate", args.run, args.model, args.checkpoint, args.device)
        if args.direction is not None and args.direction != model.meta["direction"]:
            raise GanforgeError(f"{display_path(args.model)} translates {model.meta['direction']}: export the run "
                                f"with that direction, or drop --direction")
    elif args.run is None:
        raise GanforgeError("give a run folder, or --model FILE (an exported .onnx or .pt)")
    else:
        model = load_trained(args.run, args.checkpoint, args.device, direction=args.direction or "AtoB")
    counts = apply_files(model, args.source, out.open())
    out.remove()  # nothing was readable: leave no empty folder behind
    if "video" in counts:
        flicker = "-" if counts["flicker"] is None else f"{counts['flicker']:.3f}"
        print(f"translated {counts['images']} frames {model.meta['direction']} into {display_path(counts['video'])}; "
              f"flicker (mean change between output frames / between input frames): {flicker}")
        return 2 if counts["images"] == 0 else 0
    print(f"translated {counts['images']} image(s) {model.meta['direction']} with {display_path(model.source)} "
          f"({model.runtime}); wrote them to {display_path(args.out)} under their own names")
    return 2 if counts["images"] == 0 else 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ganforge.translate.evaluate import evaluate_run

    result = evaluate_run(args.run, args.checkpoint, n=args.n, device=args.device)
    print(f"{result['mode']} run at step {result['step']} ({result['checkpoint']}), {result['images']} held-out "
          f"images of {result['data']}:")
    for key, value in result.items():
        if isinstance(value, float):
            print(f"  {key:<20} {value:.4f}")
        elif key == "stroke_width_shift":
            print(f"  {'stroke width shift':<20} {value['measured']:+.3f} px (known {value['known']:+.3f}, "
                  f"off by {100 * value['relative_error']:.0f} %)")
    print(f"wrote {display_path(Path(args.run) / 'eval.json')}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from ganforge.translate.download import download

    folder = download(args.name, sha256=args.sha256, quiet=args.quiet)
    print(f"{args.name}: {display_path(folder)} (use it with --data {args.name})")
    return 0


def add_translate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``translate`` and its subcommands to `subparsers`; returns the ``translate`` parser."""
    translate = subparsers.add_parser("translate", help="image-to-image translation: pix2pix and CycleGAN")
    sub = translate.add_subparsers(dest="translate_command", required=True)

    from ganforge.runs.command import add_train_parser
    from ganforge.translate.task import TASK

    add_train_parser(sub, TASK, help="train a translation recipe (or resume a run)",
                     data_help="a built-in (edges2mnist, thin2thick, thin2thick-unpaired, digits2mnist, "
                               "horse2zebra-toy), a downloaded dataset (`translate download`) or a folder: A/ + B/, "
                               "side-by-side AB images, or trainA/ + trainB/")

    r = sub.add_parser("recipes", help="list the translation presets with their parameter counts")
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.set_defaults(func=cmd_recipes)

    a = sub.add_parser("apply", help="translate images with one trained generator",
                       description="Any size and aspect ratio, 1 or 3 channels; each output is written under its "
                                   "input's name in --out.")
    a.add_argument("run", metavar="RUN", nargs="?", help="a run folder that `ganforge translate train` wrote")
    a.add_argument("--model", metavar="FILE", help="an exported generator (.onnx or .pt, `ganforge export`) in "
                                                   "place of RUN, run with ONNX Runtime or TorchScript")
    a.add_argument("--source", required=True, help="an image file or a folder of images")
    a.add_argument("--out", required=True, help="folder for the translated images")
    a.add_argument("--direction", choices=("AtoB", "BtoA"),
                   help="AtoB (default) or BtoA (a CycleGAN run's other generator)")
    a.add_argument("--force", action="store_true", help="replace an earlier `translate apply` output in --out")
    a.add_argument("--checkpoint", help="a name in RUN/checkpoints or a checkpoint folder; default: the latest")
    a.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    a.set_defaults(func=cmd_apply)

    e = sub.add_parser("eval", help="score a run on held-out data (L1, PSNR, SSIM, classifier score, FID, ...)")
    e.add_argument("run", metavar="RUN", help="a run folder that `ganforge translate train` wrote")
    e.add_argument("--n", type=int, default=1000, help="held-out images to score (default 1000, or all there are)")
    e.add_argument("--checkpoint", help="a name in RUN/checkpoints or a checkpoint folder; default: the latest")
    e.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("download", help="download a public pix2pix or CycleGAN dataset (checked, safely extracted)")
    d.add_argument("name", help="facades, maps, edges2shoes, ... (pix2pix) or horse2zebra, apple2orange, ... (CycleGAN)")
    d.add_argument("--sha256", help="the archive's SHA-256, where no published checksum is known (pix2pix's)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_download)
    return translate
