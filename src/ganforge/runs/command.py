"""The one train command of every task: its flags, its rules, and `--nproc`'s launcher.

`add_train_parser(subparsers, task)` adds `train` with the same flags for every task (`--device`,
`--seed`, `--steps`/`--epochs`, `--resume`, `--force`, `--nproc`, `--max-restarts`, `key=value`),
and :func:`train_command` runs it: on N processes with `--nproc N`, else here, through the shared
start and resume of :mod:`ganforge.runs.start`. The flags mean the same for every task and resume
follows the same rules: a resumed run keeps its data, seed and folder, and may change only the
keys its config declares resumable.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ganforge.errors import GanforgeError
from ganforge.io import display_path

if TYPE_CHECKING:
    from ganforge.task import Task

FIXED_ON_RESUME = ("data", "seed")  # they would make another run
OWN_ON_RESUME = ("out", "force")  # a resumed run keeps its own folder


def add_train_parser(subparsers: argparse._SubParsersAction, task: "Task", help: str,
                     data_help: str = "dataset name or a folder of images") -> argparse.ArgumentParser:
    """`train` for `task`; the parsed arguments carry the task as `train_task`."""
    default = task.default_out.format(recipe="<recipe>")
    t = subparsers.add_parser("train", help=help, description=f"Train RECIPE into a run folder; key=value pairs "
                              f"override the recipe (see `{recipes_command(task)}`).")
    t.add_argument("recipe", nargs="?", help=f"recipe name (see `{recipes_command(task)}`)")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (e.g. seed=1)")
    t.add_argument("--data", help=data_help)
    t.add_argument("--out", help=f"run folder (default {default})")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="total steps of the whole run")
    budget.add_argument("--epochs", type=float, help="total epochs of the whole run (a task whose config counts "
                                                     "whole epochs refuses a fraction)")
    t.add_argument("--device", help="auto, cpu, cuda or cuda:N (the config key `device`)")
    t.add_argument("--seed", type=int, help="seed of the run (the config key `seed`)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last checkpoint")
    t.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    t.add_argument("--nproc", type=int, metavar="N", help="train on N processes of this machine (torchrun, "
                                                          "DDP; one per GPU or CPU core); batch_size stays global")
    t.add_argument("--max-restarts", type=int, default=0, metavar="K",
                   help="with --nproc: restart the processes up to K times after a failure (torchrun's elastic "
                        "restart); each restart continues from the latest checkpoint")
    t.set_defaults(func=lambda args: train_command(task, args), train_task=task)
    return t


def recipes_command(task: "Task") -> str:
    return f"{task.command.rsplit(' ', 1)[0]} recipes"


def default_out(task: "Task", recipe: str | None) -> str | None:
    return task.default_out.format(recipe=recipe) if recipe and "=" not in recipe else None


def train_command(task: "Task", args: argparse.Namespace) -> int:
    """With --nproc N (outside torchrun) start N processes of this command; else train here, and
    leave the process group, if this process joined one, at the end."""
    from ganforge import distributed as dist

    if args.nproc is not None and not dist.launched():
        return _launch(task, args)
    try:
        return run_training(task, args)
    finally:
        dist.destroy()


def recipe_config(task: "Task", args: argparse.Namespace):
    """The recipe's config with the flags and key=value overrides applied."""
    from ganforge.config import apply_overrides

    if not args.recipe or "=" in args.recipe:
        raise GanforgeError(f"name a recipe (see `{recipes_command(task)}`) or use --resume RUN_DIR")
    overrides = list(args.overrides)
    for flag in ("data", "device", "seed"):
        if getattr(args, flag) is not None:
            overrides.append(f"{flag}={getattr(args, flag)}")
    return apply_overrides(task.recipes.config(args.recipe), overrides)


def _launch(task: "Task", args: argparse.Namespace) -> int:
    """`--nproc N`: the device and the global batch are checked before the processes start."""
    from ganforge.launch import launch_command

    if args.resume:
        device, batch = _resumed_device(args), None
    else:
        cfg = recipe_config(task, args)
        device, batch = cfg.device, cfg.batch_size

    def next_step() -> str:
        return continue_advice(args).replace(f"`{task.command} --resume",
                                             f"`{task.command} --nproc {args.nproc} --resume")

    return launch_command(args.argv, args.nproc, args.max_restarts, device=device, batch_size=batch,
                          next_step=next_step)


def _resumed_device(args: argparse.Namespace) -> str | None:
    """The device a resumed run will use: --device, a device= override, or its config.json's."""
    device = args.device or next((o.split("=", 1)[1] for o in args.overrides if o.startswith("device=")), None)
    if device is None:
        try:
            device = json.loads((Path(args.resume) / "config.json").read_text()).get("device")
        except (OSError, ValueError, AttributeError):
            device = None
    return device if isinstance(device, str) else None


def run_training(task: "Task", args: argparse.Namespace) -> int:
    """Start a run from a recipe, or continue one (--resume, or torchrun's restart after a failure)."""
    from ganforge import distributed as dist
    from ganforge.checkpoint import list_checkpoints
    from ganforge.runs.start import train

    budget = {"steps": args.steps, "epochs": args.epochs, "quiet": args.quiet}
    if not args.resume and dist.restart_count() > 0:
        # torchrun restarted the processes after a failure: continue the run they were writing.
        run_dir = args.out or default_out(task, args.recipe)
        if run_dir and list_checkpoints(Path(run_dir) / "checkpoints"):
            return _report(task, train(task, None, run_dir, resume=True, **budget))
        args.force = True  # its first attempt made the folder and stopped before any checkpoint
    if args.resume:
        overrides = list(args.overrides)
        if args.recipe and "=" in args.recipe:
            overrides.insert(0, args.recipe)
        elif args.recipe:
            raise GanforgeError("--resume continues a run with its saved config: drop the recipe name")
        for flag in FIXED_ON_RESUME:
            if getattr(args, flag) is not None:
                raise GanforgeError(f"--{flag} cannot change when resuming (it would be another run): "
                                    f"drop --{flag}")
        for flag in OWN_ON_RESUME:
            if getattr(args, flag):
                raise GanforgeError(f"--{flag} cannot be given with --resume (the run keeps its own): drop it")
        if args.device is not None:
            overrides.append(f"device={args.device}")
        out = train(task, None, args.resume, resume=True, resume_overrides=overrides, **budget)
    else:
        cfg = recipe_config(task, args)
        dist.check_divides(cfg.batch_size, "the global batch_size", f"choose a batch_size that is a multiple of "
                           f"{dist.env_world_size()}, or another number of processes")
        out = train(task, cfg, args.out or default_out(task, args.recipe), force=args.force, **budget)
    return _report(task, out)


def _report(task: "Task", out: Path) -> int:
    from ganforge import distributed as dist

    if dist.is_main():
        print(f"run folder: {display_path(out)}")
        for name in task.listing:
            print(f"  {display_path(Path(out) / name)}")
    return 0


def continue_advice(args: argparse.Namespace) -> str:
    """What will work after a failure outside ganforge's control, for the command that failed."""
    import shlex

    from ganforge.checkpoint import list_checkpoints

    task = getattr(args, "train_task", None)
    if task is None:
        return "run the same command again"
    run = args.resume or args.out or default_out(task, args.recipe)
    if run and list_checkpoints(Path(run) / "checkpoints"):
        return f"continue with `{task.command} --resume {shlex.quote(run)}` (the last checkpoint is intact)"
    return "start the run again with the same command and --force (no checkpoint was saved yet)"
