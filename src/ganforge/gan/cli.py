"""The GAN's commands at the root of `ganforge`: recipes, train, sample, config, explore, eval.

`add_commands(subparsers)` adds them; each sets `func` to a function of the parsed arguments that
returns the exit code. `train` is the shared train command of every task (runs/command.py).
"""

from __future__ import annotations

import argparse
import json

from ganforge.errors import GanforgeError

MAX_SAMPLES = 100_000  # `sample --n`: one PNG each
MAX_EVAL = 200_000  # `eval --n`


def add_commands(sub: argparse._SubParsersAction) -> None:
    from ganforge.gan.explore import add_explore_parser
    from ganforge.gan.task import TASK
    from ganforge.metrics.evaluate import FEATURE_CHOICES
    from ganforge.runs.command import add_train_parser

    r = sub.add_parser("recipes", help="list recipes with their parameter counts")
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.set_defaults(func=cmd_recipes)

    add_train_parser(sub, TASK, help="train a recipe (or resume a run)")

    s = sub.add_parser("sample", help="generate images from a trained run")
    s.add_argument("run_dir", metavar="RUN", nargs="?", help="a run folder that `ganforge train` wrote")
    s.add_argument("--model", metavar="FILE", help="an exported generator (.onnx, .pt) in place of RUN")
    s.add_argument("--n", type=int, default=64, help=f"images to write (1 to {MAX_SAMPLES:,}; default 64)")
    s.add_argument("--out", required=True, help="a new folder for the PNGs and grid.png")
    s.add_argument("--force", action="store_true", help="replace an earlier `sample` --out folder")
    s.add_argument("--seed", type=int, default=0, help="seed of the latents (the same seed, the same images)")
    s.add_argument("--checkpoint", help="a checkpoint folder, or a name in RUN/checkpoints (e.g. best); "
                                        "default: the latest")
    s.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    which = s.add_mutually_exclusive_group()
    which.add_argument("--label", type=int, help="a conditional run: images of this class")
    which.add_argument("--labels", help="a conditional run: cycle through these classes (e.g. 0,1,2)")
    s.set_defaults(func=cmd_sample)

    c = sub.add_parser("config", help="every config key of a recipe: its value, type and meaning")
    c.add_argument("recipe", help="recipe name (see `ganforge recipes`)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=cmd_config)

    add_explore_parser(sub)

    e = sub.add_parser("eval", help="FID, KID, precision/recall of a run or a folder of images")
    e.add_argument("run_dir", nargs="?", metavar="RUN", help="a run folder that `ganforge train` wrote")
    e.add_argument("--images", help="evaluate a folder of images instead of a run")
    e.add_argument("--data", help="reference dataset (default: the run's)")
    e.add_argument("--n", type=int, default=10000, help=f"generated images (4 to {MAX_EVAL:,}; default 10,000)")
    e.add_argument("--checkpoint", help="a checkpoint folder, or a name in RUN/checkpoints (e.g. best); "
                                        "default: the latest")
    e.add_argument("--features", default="auto", choices=FEATURE_CHOICES,
                   help="feature space: the dataset's classifier, Inception-v3, or auto")
    e.add_argument("--inception-weights", help="path to the standard Inception-v3 FID weights")
    e.add_argument("--split", default="test", help="reference split (default test)")
    e.add_argument("--seed", type=int, default=0, help="seed of the latents and of KID's subsets")
    e.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    e.add_argument("--out", help="where to write eval.json (default: the run folder)")
    e.add_argument("--force", action="store_true", help="replace an --out file that ganforge did not write")
    e.set_defaults(func=cmd_eval)


def cmd_recipes(args) -> int:
    from ganforge.gan.recipes import RECIPES
    from ganforge.gan.models import build_models, count_params

    rows = []
    for name, entry in RECIPES.items():
        cfg = entry.config
        g, d = build_models(cfg)
        (gt, gn), (dt, dn) = count_params(g), count_params(d)
        rows.append({"name": name, "source": entry.source, "about": entry.about,
                     "model": cfg.model, "data": cfg.data, "batch_size": cfg.batch_size,
                     "image_size": cfg.image_size, "channels": cfg.channels,
                     "budget": f"{cfg.steps} steps" if cfg.steps else f"{cfg.epochs} epochs",
                     "generator": {"trainable": gt, "non_trainable": gn},
                     "discriminator": {"trainable": dt, "non_trainable": dn}})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    head = f"{'recipe':<24}{'model':<13}{'data':<10}{'batch':>6}  {'budget':<12}{'G train':>11}{'G non-tr':>10}{'D train':>11}{'D non-tr':>10}"
    print(head)
    for r in rows:
        print(f"{r['name']:<24}{r['model']:<13}{r['data']:<10}{r['batch_size']:>6}  {r['budget']:<12}"
              f"{r['generator']['trainable']:>11,}{r['generator']['non_trainable']:>10,}"
              f"{r['discriminator']['trainable']:>11,}{r['discriminator']['non_trainable']:>10,}")
    print()
    for r in rows:
        print(f"{r['name']}: {r['about']}. Source: {r['source']}.")
    return 0


def cmd_config(args) -> int:
    from ganforge.gan.recipes import RECIPES

    return RECIPES.print_config(args.recipe, args.json)


def _check_n(n: int, low: int, high: int) -> None:
    if not low <= n <= high:
        raise GanforgeError(f"bad value --n {n}: must be between {low} and {high:,}")


def cmd_sample(args) -> int:
    from ganforge.export import open_model
    from ganforge.gan.sampling import sample_output, sample_to_dir

    _check_n(args.n, 1, MAX_SAMPLES)
    folder = sample_output(args.run_dir, args.model, args.checkpoint, args.out, args.force)
    model = open_model("gan", args.run_dir, args.model, args.checkpoint, args.device)
    out = sample_to_dir(model, args.n, folder, seed=args.seed, label=args.label, labels=args.labels)
    print(f"wrote {args.n} images and grid.png to {out}")
    return 0


def cmd_eval(args) -> int:
    from ganforge.gan.evaluate import evaluate_command

    _check_n(args.n, 4, MAX_EVAL)
    return evaluate_command(args)
