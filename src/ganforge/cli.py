"""The `ganforge` command: a thin shell that parses arguments and calls one library function."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import GanforgeError

EPILOG = """exit codes: 0 ok, 2 bad input (one line on stderr says what to do), 3 training diverged,
130/143 stopped by SIGINT/SIGTERM after saving a checkpoint (resume with --resume)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ganforge", description="Train, evaluate and sample classic GANs.",
                                epilog=EPILOG)
    from . import __version__

    p.add_argument("--version", action="version", version=f"ganforge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("recipes", help="list recipes with their parameter counts")
    r.add_argument("--json", action="store_true", help="machine-readable output")

    t = sub.add_parser("train", help="train a recipe (or resume a run)")
    t.add_argument("recipe", nargs="?", help="recipe name (see `ganforge recipes`)")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    t.add_argument("--data", help="dataset name or a folder of images")
    t.add_argument("--out", help="run folder (default runs/<recipe>)")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="total steps of the whole run")
    budget.add_argument("--epochs", type=int, help="total epochs of the whole run")
    t.add_argument("--device", help="auto, cpu or cuda")
    t.add_argument("--seed", type=int)
    t.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last checkpoint")
    t.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    t.add_argument("--quiet", action="store_true", help="no progress output")

    s = sub.add_parser("sample", help="generate images from a trained run")
    s.add_argument("run_dir")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--checkpoint", help="checkpoint folder (default: the latest)")
    s.add_argument("--device", default="cpu")

    e = sub.add_parser("eval", help="FID, KID, precision/recall of a run or a folder of images")
    e.add_argument("run_dir", nargs="?")
    e.add_argument("--images", help="evaluate a folder of images instead of a run")
    e.add_argument("--data", help="reference dataset (default: the run's)")
    e.add_argument("--n", type=int, default=10000, help="generated images")
    e.add_argument("--checkpoint", help="checkpoint folder (default: the latest)")
    e.add_argument("--features", default="auto", choices=("auto", "classifier", "inception"))
    e.add_argument("--inception-weights", help="path to the standard Inception-v3 FID weights")
    e.add_argument("--split", default="test", help="reference split (default test)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="cpu")
    e.add_argument("--out", help="where to write eval.json (default: the run folder)")
    return p


def cmd_recipes(args) -> int:
    from .config import RECIPES
    from .models import build_models, count_params

    rows = []
    for name, cfg in RECIPES.items():
        g, d = build_models(cfg)
        (gt, gn), (dt, dn) = count_params(g), count_params(d)
        rows.append({"name": name, "model": cfg.model, "data": cfg.data, "batch_size": cfg.batch_size,
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
    return 0


def cmd_train(args) -> int:
    from .config import apply_overrides, get_recipe
    from .train import train

    if args.resume:
        overrides = list(args.overrides)
        if args.recipe and "=" in args.recipe:
            overrides.insert(0, args.recipe)
        elif args.recipe:
            raise GanforgeError("--resume continues a run with its saved config: drop the recipe name")
        for flag in ("data", "seed"):
            if getattr(args, flag) is not None:
                raise GanforgeError(f"--{flag} cannot change when resuming (it would be another run): "
                                    f"drop --{flag}")
        if args.device is not None:
            overrides.append(f"device={args.device}")
        out = train(None, args.resume, resume=True, steps=args.steps, epochs=args.epochs, quiet=args.quiet,
                    resume_overrides=overrides)
    else:
        if not args.recipe:
            raise GanforgeError("name a recipe (see `ganforge recipes`) or use --resume RUN_DIR")
        overrides = list(args.overrides)
        for flag in ("data", "device", "seed"):
            if getattr(args, flag) is not None:
                overrides.append(f"{flag}={getattr(args, flag)}")
        cfg = apply_overrides(get_recipe(args.recipe), overrides)
        run_dir = args.out or f"runs/{args.recipe}"
        out = train(cfg, run_dir, force=args.force, steps=args.steps, epochs=args.epochs, quiet=args.quiet)
    print(f"run folder: {out}")
    for name in ("samples/", "progress.gif", "losses.png", "metrics.jsonl", "summary.json", "checkpoints/"):
        print(f"  {Path(out) / name}")
    return 0


def cmd_sample(args) -> int:
    from .sampling import sample_to_dir

    out = sample_to_dir(args.run_dir, args.n, args.out, seed=args.seed, checkpoint=args.checkpoint,
                        device=args.device)
    print(f"wrote {args.n} images and grid.png to {out}")
    return 0


def cmd_eval(args) -> int:
    from .evaluate_run import evaluate_command

    return evaluate_command(args)


COMMANDS = {"recipes": cmd_recipes, "train": cmd_train, "sample": cmd_sample, "eval": cmd_eval}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # `key=value` overrides may sit anywhere on the train command line.
        bad = [e for e in extra if e.startswith("-") or "=" not in e or args.command != "train"]
        if bad:
            parser.error(f"unrecognized arguments: {' '.join(bad)}")
        args.overrides = list(args.overrides) + extra
    try:
        return COMMANDS[args.command](args)
    except GanforgeError as err:
        print(f"ganforge: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except KeyboardInterrupt:
        print("ganforge: interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, ConnectionError, EOFError) as err:
        from .data.stream import worker_died

        died = worker_died(err)  # PyTorch may raise it from anywhere in the main process
        if died is None:
            raise
        print(f"ganforge: error: {died}; the last checkpoint is intact: continue with --resume",
              file=sys.stderr)
        return 2
    except OSError as err:
        # A full disk or a permission problem outside the checkpoint writer: still one line.
        print(f"ganforge: error: {err.strerror or err} ({getattr(err, 'filename', '') or ''}): "
              "free space or fix permissions, then resume with --resume", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
