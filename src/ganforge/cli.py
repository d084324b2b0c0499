"""The `ganforge` command: a thin shell that parses arguments and calls one library function."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from .errors import GanforgeError
from .io import display_path, first_line, os_error_advice

MAX_SAMPLES = 100_000  # `sample --n`: one PNG each
MAX_EVAL = 200_000  # `eval --n`
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
    t.add_argument("--nproc", type=int, metavar="N", help="train on N processes of this machine (torchrun, "
                                                          "DDP; one per GPU or CPU core); batch_size stays global")
    t.add_argument("--max-restarts", type=int, default=0, metavar="K",
                   help="with --nproc: restart the processes up to K times after a failure (torchrun's elastic "
                        "restart); each restart continues from the latest checkpoint")

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

    c = sub.add_parser("config", help="every config key of a recipe: its value, type and meaning")
    c.add_argument("recipe", help="recipe name (see `ganforge recipes`)")
    c.add_argument("--json", action="store_true", help="machine-readable output")

    from .gan.explore import add_explore_parser

    add_explore_parser(sub)

    e = sub.add_parser("eval", help="FID, KID, precision/recall of a run or a folder of images")
    e.add_argument("run_dir", nargs="?", metavar="RUN", help="a run folder that `ganforge train` wrote")
    e.add_argument("--images", help="evaluate a folder of images instead of a run")
    e.add_argument("--data", help="reference dataset (default: the run's)")
    e.add_argument("--n", type=int, default=10000, help=f"generated images (4 to {MAX_EVAL:,}; default 10,000)")
    e.add_argument("--checkpoint", help="a checkpoint folder, or a name in RUN/checkpoints (e.g. best); "
                                        "default: the latest")
    from .metrics.evaluate import FEATURE_CHOICES

    e.add_argument("--features", default="auto", choices=FEATURE_CHOICES,
                   help="feature space: the dataset's classifier, Inception-v3, or auto")
    e.add_argument("--inception-weights", help="path to the standard Inception-v3 FID weights")
    e.add_argument("--split", default="test", help="reference split (default test)")
    e.add_argument("--seed", type=int, default=0, help="seed of the latents and of KID's subsets")
    e.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    e.add_argument("--out", help="where to write eval.json (default: the run folder)")
    e.add_argument("--force", action="store_true", help="replace an --out file that ganforge did not write")

    from .detect.cli import add_detect_parser
    from .report import add_report_parser

    from .export.cli import add_export_parser
    from .serve import add_serve_parser
    from .translate.cli import add_translate_parser

    add_report_parser(sub)
    add_detect_parser(sub)
    add_export_parser(sub)
    add_serve_parser(sub)
    add_translate_parser(sub)
    return p


def cmd_recipes(args) -> int:
    from .gan.recipes import RECIPES
    from .models import build_models, count_params

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


def cmd_config(args, recipes=None) -> int:
    """Every key of a recipe's config (`recipes`: the GAN registry unless another task's is given)."""
    from .config import describe
    from .gan.recipes import RECIPES

    rows = describe((recipes or RECIPES).get(args.recipe).config)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["key"]) for r in rows)
    values = {r["key"]: json.dumps(r["value"]) for r in rows}
    vwidth = min(28, max(len(v) for v in values.values()))
    for r in rows:
        extra = f" [{', '.join(map(str, r['choices']))}]" if r["choices"] else ""
        resumable = " (may change on --resume)" if r["resume"] else ""
        print(f"{r['key']:<{width}}  {values[r['key']]:<{vwidth}}  {r['help']}{extra}{resumable}")
    return 0


def launch_train(args, device: str | None, batch_size: int | None) -> int:
    """`--nproc N` of `train` or `detect train`: the same command on N processes, started by
    torchrun's launcher. `device` and `batch_size` (None when unknown before the run starts, e.g.
    on --resume) are checked first, in one line."""
    from .launch import launch_command

    command = _train_command(args)[0]

    def next_step() -> str:
        return _next_step(args).replace(f"`{command} --resume", f"`{command} --nproc {args.nproc} --resume")

    return launch_command(args.argv, args.nproc, args.max_restarts, device=device, batch_size=batch_size,
                               next_step=next_step)


def _launch(args) -> int:
    """`ganforge train --nproc N`: the recipe's device and global batch are checked before launching."""
    device, batch = (args.device or "auto") if args.resume else args.device, None
    if not args.resume and args.recipe:
        from .config import apply_overrides
        from .gan.recipes import get_recipe

        cfg = apply_overrides(get_recipe(args.recipe), list(args.overrides))
        device, batch = args.device or cfg.device, cfg.batch_size
    return launch_train(args, device, batch)


def cmd_train(args) -> int:
    return launch_or_train(args, _launch, _train)


def launch_or_train(args, launch, train) -> int:
    """A train command: with --nproc N (outside torchrun) `launch` starts N processes of it; else
    `train` runs in this process, which leaves the process group, if it joined one, at the end."""
    from . import distributed as dist

    if args.nproc is not None and not dist.launched():
        return launch(args)
    try:
        return train(args)
    finally:
        dist.destroy()


def _train(args) -> int:
    from . import distributed as dist
    from .checkpoint import list_checkpoints
    from .config import apply_overrides
    from .gan.recipes import get_recipe
    from .gan.train import train

    if not args.resume and dist.restart_count() > 0:
        # torchrun restarted the processes after a failure: continue the run they were writing.
        run_dir = args.out or f"runs/{args.recipe}"
        if list_checkpoints(Path(run_dir) / "checkpoints"):
            out = train(None, run_dir, resume=True, steps=args.steps, epochs=args.epochs, quiet=args.quiet)
            return _report(out)
        args.force = True  # its first attempt made the folder and stopped before any checkpoint
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
        dist.check_divides(cfg.batch_size, "the global batch_size", f"choose a batch_size that is a multiple of "
                           f"{dist.env_world_size()}, or another number of processes")
        run_dir = args.out or f"runs/{args.recipe}"
        out = train(cfg, run_dir, force=args.force, steps=args.steps, epochs=args.epochs, quiet=args.quiet)
    return _report(out)


def _report(out) -> int:
    from . import distributed as dist

    if not dist.is_main():
        return 0
    print(f"run folder: {display_path(out)}")
    for name in ("report.html", "samples/", "progress.gif", "losses.png", "metrics.jsonl", "summary.json",
                 "checkpoints/"):
        print(f"  {display_path(Path(out) / name)}")
    return 0


def _check_n(n: int, low: int, high: int) -> None:
    if not low <= n <= high:
        raise GanforgeError(f"bad value --n {n}: must be between {low} and {high:,}")


def cmd_sample(args) -> int:
    from .export import open_model
    from .gan.sampling import sample_output, sample_to_dir

    _check_n(args.n, 1, MAX_SAMPLES)
    folder = sample_output(args.run_dir, args.model, args.checkpoint, args.out, args.force)
    model = open_model("gan", args.run_dir, args.model, args.checkpoint, args.device)
    out = sample_to_dir(model, args.n, folder, seed=args.seed, label=args.label, labels=args.labels)
    print(f"wrote {args.n} images and grid.png to {out}")
    return 0


def cmd_eval(args) -> int:
    from .gan.evaluate import evaluate_command

    _check_n(args.n, 4, MAX_EVAL)
    return evaluate_command(args)


COMMANDS = {"recipes": cmd_recipes, "config": cmd_config, "train": cmd_train, "sample": cmd_sample, "eval": cmd_eval,
            "report": lambda args: args.func(args), "explore": lambda args: args.func(args),
            "detect": lambda args: args.func(args), "export": lambda args: args.func(args),
            "serve": lambda args: args.func(args), "translate": lambda args: args.func(args)}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if extra:
        # `key=value` overrides may sit anywhere on the train command line.
        takes = args.command == "train" or (args.command == "detect" and
                                            args.detect_command in ("train", "val", "predict")) or (
            args.command == "translate" and args.translate_command == "train")
        bad = [e for e in extra if e.startswith("-") or "=" not in e or not takes]
        if bad:
            parser.error(f"unrecognized arguments: {' '.join(bad)}")
        args.overrides = list(args.overrides) + extra
    try:
        return COMMANDS[args.command](args)
    except GanforgeError as err:
        if _speaks(err):
            print(f"ganforge: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except KeyboardInterrupt:
        print("ganforge: interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, ConnectionError, EOFError) as err:
        from .data.stream import worker_died

        died = worker_died(err)  # PyTorch may raise it from anywhere in the main process
        if died is None:
            from . import distributed as dist

            lost = dist.lost_peer(err)  # a collective inside DDP failed: another process is gone
            if lost is None:
                raise
            if _speaks(lost):
                print(f"ganforge: error: {lost}", file=sys.stderr)
            return 2
        print(f"ganforge: error: {died}; {_next_step(args)}", file=sys.stderr)
        return 2
    except OSError as err:
        if os_error_advice(err):  # a path the person gave that cannot be what it is asked to be
            print(f"ganforge: error: {os_error_advice(err)}", file=sys.stderr)
            return 2
        # A full disk or a permission problem outside the checkpoint writer: still one line.
        where = f" ({display_path(err.filename)})" if getattr(err, "filename", None) else ""
        print(f"ganforge: error: {err.strerror or first_line(err)}{where}: free space or fix permissions, "
              f"then {_next_step(args)}", file=sys.stderr)
        return 2


def _speaks(err: GanforgeError) -> bool:
    """Whether this process prints `err`. Under torchrun, rank 0 speaks for the run (every rank
    meets the same bad input), unless the error is another rank's own; a lost process is named
    by `--nproc`'s launcher, so its workers do not add a line of their own."""
    from . import distributed as dist
    from .launch import LAUNCHED_BY_GANFORGE

    if isinstance(err, dist.ElsewhereError):
        return False
    if isinstance(err, dist.PeerLost) and os.environ.get(LAUNCHED_BY_GANFORGE):
        return False
    return not dist.launched() or dist.env_rank() == 0 or getattr(err, "rank_specific", False)


def _train_command(args) -> tuple[str, str | None] | None:
    """(the command, its default run folder) of a training command line; None for other commands."""
    recipe = getattr(args, "recipe", None)
    if args.command == "train":
        return "ganforge train", f"runs/{recipe}" if recipe else None
    if args.command == "detect" and getattr(args, "detect_command", None) == "train":
        return "ganforge detect train", f"runs/detect-{recipe}" if recipe and "=" not in recipe else None
    if args.command == "translate" and getattr(args, "translate_command", None) == "train":
        return "ganforge translate train", f"runs/translate-{recipe}" if recipe and "=" not in recipe else None
    return None


def _next_step(args) -> str:
    """What will work after a failure outside ganforge's control, for the command that failed."""
    training = _train_command(args)
    if training is None:
        return "run the same command again"
    command, default = training
    run = args.resume or args.out or default
    from .checkpoint import list_checkpoints

    if run and list_checkpoints(Path(run) / "checkpoints"):
        return f"continue with `{command} --resume {shlex.quote(run)}` (the last checkpoint is intact)"
    return "start the run again with the same command and --force (no checkpoint was saved yet)"


if __name__ == "__main__":
    sys.exit(main())
