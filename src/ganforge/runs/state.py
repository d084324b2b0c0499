"""What every training run checkpoints, resumes and rolls back, whatever it trains.

A task's run class derives from :class:`RunState` and sets `cfg`, `dir`, `modules` (named networks),
`optimizers` (named, each with the config key of its learning rate in `lr_keys`) and
`resume_command`; it may add parts of its own through `extra_state` / `load_extra`. Then
`state()` / `load_state()` give and take a checkpoint's (tensors, meta), :func:`resume_config`
rebuilds a run's config from its latest checkpoint, and :func:`rollback_or_stop` handles a run of
non-finite steps.
"""

from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ganforge import __version__
from ganforge import distributed as dist
from ganforge.checkpoint import (capture_rng, check_state_meta, list_checkpoints, load_latest, pack_state, restore_rank_rng,
                                 save_checkpoint, unpack_state, upgrade_state)
from dataclasses import replace

from ganforge.config import Config, apply_overrides, resume_keys, split_overrides, validate
from ganforge.errors import CheckpointError, ConfigError
from ganforge.io import MetricsLog
from ganforge.runs.loop import TrainingDiverged, finite_or_none

MAX_ROLLBACKS = 3  # rollbacks to one checkpoint (lrs lowered each time) before the run stops


class RunState:
    """Named modules and optimizers, the counters, and the config of one run."""

    cfg: Config
    dir: Path
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    lr_keys: dict[str, str]  # optimizer name -> config key of its learning rate
    resume_command: str = "ganforge train --resume"  # how a person continues this kind of run
    quiet: bool = False
    nonfinite_steps: str = "non-finite steps"  # what a skipped step is, in the divergence message
    differs_across_worlds: str = "reductions and per-process random streams"  # on another process count

    def place(self, cfg: Config, run_dir: Path, quiet: bool) -> None:
        """This process's part of the run: its rank among `world` processes (rank 0 alone speaks),
        and its device and CPU threads (one device per rank under torchrun)."""
        from ganforge.device import resolve_device

        self.cfg = validate(cfg)
        self.dir = Path(run_dir)
        self.world, self.rank = dist.world_size(), dist.rank()
        self.quiet = quiet or not dist.is_main()  # one process speaks for all
        self.device, self.threads = dist.place_process(resolve_device(cfg.device), cfg.threads)

    def data_parallel(self, net: nn.Module) -> nn.Module:
        """`net` wrapped for DDP (its backward averages the gradients over the ranks). Host
        randomness (dropout) then draws from a stream of each rank's own."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        wrapped = DistributedDataParallel(net, device_ids=ids, **dist.no_buffer_sync())
        if self.rank:
            torch.manual_seed(int(getattr(self.cfg, "seed", 0)) + 7919 * self.rank)
        return wrapped

    def init_counters(self) -> None:
        self.step = 0
        self.images_seen = 0
        self.seconds = 0.0
        self.skipped = 0  # non-finite steps skipped in the whole run
        self.consecutive_skips = 0
        self.rollbacks: dict[int, int] = {}  # checkpoint step -> times rolled back to it
        self.best = math.inf  # the best evaluation score so far (lower is better)
        self.warned: set[str] = set()  # warning kinds already printed (each is printed once)

    # -- task parts: override to add tensors and meta of the task's own --
    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {}, {}

    def load_extra(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Called after modules, optimizers, RNG and counters are back."""

    def rng_states(self) -> list[tuple[dict[str, torch.Tensor], dict]]:
        """One RNG state per process rank (one process: this one's); every rank calls it."""
        tensors, meta = capture_rng()
        if not dist.active():
            return [(tensors, meta)]
        mine = {"meta": meta, "tensors": {k: v.tolist() for k, v in tensors.items()}}
        return [({k: torch.tensor(v, dtype=torch.uint8) for k, v in part["tensors"].items()}, part["meta"])
                for part in dist.gather_json(mine)]

    # -- the checkpoint --
    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors, meta = pack_state(self.modules, self.optimizers, rng=self.rng_states())
        extra_tensors, extra_meta = self.extra_state()
        tensors.update(extra_tensors)
        meta.update({
            "config": self.cfg.to_dict(), "model": self.cfg.model, "step": self.step,
            "images_seen": self.images_seen, "seconds": self.seconds, "skipped_steps": self.skipped,
            "best_score": finite_or_none(self.best), "ganforge_version": __version__,
            "world_size": dist.world_size(), **extra_meta})
        return tensors, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict, rank: int | None = None) -> None:
        """Put a checkpoint's state back; this process takes the RNG slot of its rank (`rank`,
        default its own). A rank the checkpoint has no slot for (written by fewer processes)
        seeds its RNG from the config's seed and its rank."""
        if meta.get("model") != self.cfg.model:
            raise CheckpointError(f"checkpoint is for model {meta.get('model')!r}, this run is "
                                  f"{self.cfg.model!r}: resume it with its own config")
        tensors, meta = upgrade_state(tensors, meta)
        unpack_state(tensors, meta, self.modules, self.optimizers, what=f"{self.cfg.model!r} config")
        rank = dist.rank() if rank is None else rank
        if not restore_rank_rng(tensors, meta, rank) and rank > 0:
            torch.manual_seed(int(getattr(self.cfg, "seed", 0)) + 7919 * rank)
        self.step = int(meta["step"])
        self.images_seen = int(meta["images_seen"])
        self.seconds = float(meta["seconds"])
        self.skipped = int(meta.get("skipped_steps", 0))
        best = meta.get("best_score", meta.get("best_fid"))
        self.best = best if best is not None else math.inf
        self.load_extra(tensors, meta)

    def save(self, milestone: bool = False) -> Path:
        """The rolling checkpoint of the current step (a milestone is never pruned)."""
        tensors, meta = self.state()  # every rank: each gives its RNG state
        # Rank 0 alone writes; the others wait for it (and stop with it if the write fails).
        return dist.main_decides(lambda: save_checkpoint(
            self.dir / "checkpoints", f"step-{self.step:09d}", tensors, meta, keep_last=self.cfg.keep_last,
            milestone=milestone, hint=self.continue_hint()))

    def save_best(self, score: float, name: str) -> None:
        """`checkpoints/best`: this step's state, with `score` recorded in its meta as `name`."""
        tensors, meta = self.state()  # every rank: each gives its RNG state
        meta[name] = score
        dist.main_decides(lambda: save_checkpoint(self.dir / "checkpoints", "best", tensors, meta))

    def resumed_in(self, folder) -> None:
        """On rank 0, once a resumed run's state is back and before its log is cut back to the
        checkpoint: tidy what a stage of the task's own wrote past it."""

    def buffered(self) -> list[nn.Module]:
        """The modules whose buffers must stay finite (BatchNorm statistics a skipped step cannot undo)."""
        return list(self.modules.values())

    def continue_hint(self) -> str:
        """What will work after a failure: resume from the last checkpoint, or, before the first one
        exists, start again."""
        if list_checkpoints(self.dir / "checkpoints"):
            return f"resume with `{dist.relaunch(self.resume_command)} {shlex.quote(str(self.dir))}`"
        return ("start the run again with the same command and --force (no checkpoint was saved before "
                "this one, so there is nothing to resume)")

    def scale_learning_rates(self, meta: dict, factor: float) -> None:
        """A rollback: the rates of the checkpoint (`meta`, just loaded) times `factor`."""
        self.set_learning_rates({name: meta["lr"][name] * factor for name in self.optimizers})

    def set_learning_rates(self, rates: dict[str, float]) -> None:
        """Set optimizer `name`'s rate (after a load restored the saved one)."""
        for name, rate in rates.items():
            for group in self.optimizers[name].param_groups:
                group["lr"] = rate


def resume_config(run_dir: Path, config_cls: type[Config], overrides: list[str] | None,
                  log: Callable = print) -> tuple[Config, dict[str, torch.Tensor], dict, dict[str, Any]]:
    """The config of a run's latest good checkpoint with the resume `overrides` applied (only keys
    declared `resume=True` may change), its tensors and meta, and the changed values. The caller
    has checked and locked the folder (RunFolder.open_existing)."""
    _, tensors, meta = load_latest(run_dir / "checkpoints", log=log, check=check_state_meta)
    cfg = config_cls.from_dict(meta["config"])
    changed: dict[str, Any] = {}
    if overrides:
        keys = [key for key, _ in split_overrides(overrides)]
        allowed = resume_keys(config_cls)
        fixed = [k for k in keys if k not in allowed]
        if fixed:
            raise ConfigError(f"{', '.join(fixed)} cannot change when resuming (it would be another run); "
                              f"a resumed run may change: {', '.join(allowed)}")
        cfg = apply_overrides(cfg, overrides)
        changed = {k: getattr(cfg, k) for k in keys}
    return cfg, tensors, meta, changed


def with_budget(cfg: Config, steps: int | None, epochs: float | None) -> Config:
    """`--steps` / `--epochs` (the whole run's budget) replace the config's. Epochs are read as
    the config's own type: a config that counts whole epochs refuses a fraction in one line."""
    if steps is not None:
        cfg = replace(cfg, steps=steps, epochs=None)
    elif epochs is not None:
        cfg = apply_overrides(replace(cfg, steps=None), [f"epochs={float(epochs)!r}"])
    return validate(cfg)


def continue_resumed(run: RunState, folder, cfg: Config, changed: dict, log: Callable,
                     finish: Callable, loop: Callable) -> Path:
    """The end of a resume that both trainers share: refuse a budget below the saved step; at the
    budget, write what a run killed before its summary did not (or say there is nothing to train);
    otherwise cut the metrics log back to the checkpoint, record the resume and train on."""
    if run.step > run.total_steps:
        raise ConfigError(f"the run is at step {run.step}, past the {run.total_steps} asked for: a resumed run "
                          f"can only be extended (--steps above {run.step})")
    if run.step == run.total_steps:
        if not dist.broadcast_json(folder.is_finished() if dist.is_main() else None):
            log(f"resuming {folder.path} at step {run.step} of {run.total_steps}: training was complete; "
                "writing the summary, GIF and report that the end of the run did not write")
            if dist.is_main():
                finish(run, folder, "finished", log)
            dist.barrier()
            return folder.path
        log(f"{folder.path} is already at step {run.step} of {run.total_steps}: nothing to train; pass "
            "--steps or --epochs beyond it to extend the run")
        return folder.path
    if dist.is_main():
        MetricsLog(folder.metrics).truncate_after(run.step, partial=run.step % cfg.log_every != 0)
        MetricsLog(folder.metrics).event(run.step, "resumed", **({"changed": changed} if changed else {}))
        folder.write_config(cfg)
    log(f"resuming {folder.path} at step {run.step} of {run.total_steps}")
    return loop(run, folder, log)


def rollback_or_stop(run: RunState, log: Callable = print) -> None:
    """After `max_skips` non-finite steps in a row: roll back to the latest checkpoint with lower
    learning rates (when `rollback_lr_factor` > 0, at most MAX_ROLLBACKS times per checkpoint), or
    stop with TrainingDiverged, whose message says what will work."""
    cfg = run.cfg
    have = list_checkpoints(run.dir / "checkpoints")
    if cfg.rollback_lr_factor > 0 and have:
        _, tensors, meta = load_latest(run.dir / "checkpoints", log=log, check=check_state_meta)
        tensors, meta = upgrade_state(tensors, meta)
        tries = run.rollbacks.get(int(meta["step"]), 0) + 1
        if tries <= MAX_ROLLBACKS:
            skipped = run.skipped  # steps skipped since that checkpoint still count
            run.load_state(tensors, meta)
            run.skipped, run.rollbacks[run.step] = skipped, tries
            # Each retry from the same checkpoint lowers the rates again: x factor, x factor^2, ...
            factor = cfg.rollback_lr_factor ** tries
            run.scale_learning_rates(meta, factor)
            run.consecutive_skips = 0
            log(f"warning: {cfg.max_skips} non-finite steps: rolled back to step {run.step} with "
                f"learning rates x{factor:g}")
            return
    lower = " ".join(f"{key}={getattr(cfg, key) / 2:g}" for key in run.lr_keys.values())
    where = (f"the last good checkpoint stays in {run.dir / 'checkpoints'}: continue with lower learning "
             f"rates, e.g. `{dist.relaunch(run.resume_command)} {run.dir} {lower}`, or set rollback_lr_factor=0.5"
             if have else
             f"no checkpoint was written before it diverged, so there is nothing to resume: start the run "
             f"again with lower learning rates ({lower}) and --force")
    raise TrainingDiverged(
        f"training diverged: {run.consecutive_skips} consecutive {run.nonfinite_steps} at step {run.step}"
        f"{f' after {MAX_ROLLBACKS} rollbacks' if run.rollbacks else ''}; {where}")


def warn(message: str, quiet: bool) -> None:
    """A warning printed before the metrics log exists (setup, resume)."""
    if not quiet:
        print(f"warning: {message}", file=sys.stderr)
