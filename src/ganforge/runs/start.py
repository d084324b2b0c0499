"""Start a run or continue one, for any task: folder checks, protected data, budget, resume rules
and process placement, written once.

`train(task, cfg, run_dir)` checks the run folder before any slow setup, builds the task's run
(`task.make_run`), creates the folder after it (so bad input leaves nothing behind) and hands the
run to the task's own loop. With `resume=True` it rebuilds the run from its latest checkpoint
instead. Under torchrun every rank calls it: rank 0 alone touches the run folder, and the others
learn from it whether it refused.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from ganforge import distributed as dist
from ganforge.errors import ConfigError, GanforgeError
from ganforge.runs.folder import RunFolder
from ganforge.runs.loop import silent
from ganforge.io import display_path
from ganforge.runs.state import continue_resumed, resume_config, warn, with_budget

if TYPE_CHECKING:
    from ganforge.task import Task


def train(task: "Task", cfg=None, run_dir: str | Path = "runs/default", *, resume: bool = False,
          force: bool = False, steps: int | None = None, epochs: float | None = None, quiet: bool = False,
          log: Callable = print, resume_overrides: list[str] | None = None) -> Path:
    """Train `task` from `cfg` into `run_dir`, or with `resume=True` continue `run_dir` exactly where
    its last checkpoint left it (`steps`/`epochs` then count the whole run; `resume_overrides` may
    change the keys its config declares resumable). Returns the run folder."""
    dist.init(_device_hint(cfg))
    if not dist.is_main():
        log = silent
    folder = task.folder(run_dir)
    try:
        if resume:
            dist.main_decides(folder.open_existing)  # locked before anything is read: one writer per run folder
            return _resume(task, folder, steps, epochs, quiet, log, resume_overrides)
        if cfg is None:
            raise ConfigError("give a recipe or --resume RUN_DIR")
        cfg = with_budget(cfg, steps, epochs)
        data = task.data_path(cfg)
        # The data a run trains on is never deleted by --force, and is saved by its absolute path,
        # so that the run resumes from any folder.
        protect = () if data is None else (data if data.is_dir() else data.parent,)
        scanned = (data,) if data is not None and data.is_dir() else ()  # read for images: no run folder inside
        if data is not None:
            cfg = replace(cfg, data=str(data.resolve()))
        dist.main_decides(lambda: folder.check_new(force, protect, scanned))
        run = task.make_run(cfg, folder.path, quiet=quiet)

        def create() -> None:
            folder.prepare(force, protect, scanned)
            folder.write_config(run.cfg)

        dist.main_decides(create)
        return task.loop(run, folder, log)
    finally:
        folder.release()


def _device_hint(cfg) -> torch.device:
    """The device the process group is set up for (nccl too when it is CUDA)."""
    from ganforge.device import resolve_device

    try:
        return resolve_device(cfg.device if cfg is not None else "auto")
    except GanforgeError:
        return torch.device("cpu")


def _resume(task: "Task", folder: RunFolder, steps, epochs, quiet: bool, log, overrides) -> Path:
    # Rank 0 reads the checkpoint and sends it to the others: only it needs the run folder.
    got = dist.main_decides(lambda: resume_config(folder.path, task.config, overrides, log))
    cfg, tensors, meta, changed = got if got is not None else (None, None, None, None)
    shared = dist.broadcast_json({"config": cfg.to_dict(), "changed": changed} if dist.is_main() else None)
    cfg, changed = task.config.from_dict(shared["config"]), shared["changed"]
    tensors, meta = dist.broadcast_state(tensors, meta)
    if task.check_state is not None:  # shapes first: a config edited to absurd widths is refused before allocating
        task.check_state(cfg, tensors, meta, f"the checkpoint of {display_path(folder.path)}")
    # A new budget stretches a schedule from the saved state on: the run reads the new total.
    run = task.make_run(with_budget(cfg, steps, epochs), folder.path, quiet=quiet)
    run.load_state(tensors, meta)
    saved_world = int(meta.get("world_size", 1))
    if saved_world != run.world:
        if dist.is_main():
            warn(f"this run was checkpointed by {saved_world} process(es) and continues on {run.world}: "
                 "training goes on from the checkpoint, but not bit for bit as it would have on "
                 f"{saved_world} ({run.differs_across_worlds} differ)", quiet=False)
        changed = {**changed, "world_size": run.world}
    run.set_learning_rates({name: changed[key] for name, key in run.lr_keys.items() if key in changed})
    if dist.is_main():
        run.resumed_in(folder)
    return continue_resumed(run, folder, run.cfg, changed, log, task.finish, task.loop)
