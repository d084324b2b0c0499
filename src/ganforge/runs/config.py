"""`RunConfig`: the fields every training run has, whatever it trains.

A task's config (GANConfig, DetectConfig, ...) derives from it and adds its own fields; where a
task's default differs it declares the field again, which keeps the field's place and name, so
config.json files written before this base existed load unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from ganforge.config import Config, option
from ganforge.errors import ConfigError


@dataclass
class RunConfig(Config):
    """The budget, cadences, robustness, execution and optimizer fields shared by every task."""

    recipe: str = option("default", "the preset this config started from")
    data: str = option("", "a dataset name or a path")
    workers: int = option(0, "data worker processes (0 = in the training process)", ge=0, resume=True)
    model: str = option("", "architecture")
    # -- optimisation (the keys ganforge.optim's builders read) --
    batch_size: int = option(64, "images per step (the global batch, split over the processes of a "
                             "torchrun / --nproc run)", gt=0)
    sync_bn: bool = option(True, "several processes (torchrun): BatchNorm statistics over the global batch "
                           "(SyncBatchNorm); false: each process's own")
    beta1: float = option(0.9, "Adam beta1", ge=0, lt=1)
    beta2: float = option(0.999, "Adam beta2", ge=0, lt=1)
    opt_eps: float = option(1e-8, "Adam / RMSprop epsilon", ge=0)
    rho: float = option(0.9, "RMSprop decay", ge=0, lt=1)
    momentum: float = option(0.9, "SGD momentum", ge=0, lt=1)
    # -- budget --
    steps: int | None = option(None, "total optimisation steps of the whole run", gt=0)
    epochs: float | None = option(None, "or total epochs over the training data (converted to steps)", gt=0)
    max_seconds: float = option(0.0, "stop this invocation (checkpointed, resumable) after this much "
                                "training time; 0 = no limit", ge=0, resume=True)
    # -- outputs --
    log_every: int = option(50, "steps between train rows of metrics.jsonl", gt=0, resume=True)
    eval_every: int = option(0, "steps between evaluations (0 = off)", ge=0, resume=True)
    checkpoint_every: int = option(500, "steps between rolling checkpoints", gt=0, resume=True)
    keep_last: int = option(2, "rolling checkpoints kept", gt=0, resume=True)
    # -- robustness --
    max_skips: int = option(10, "consecutive non-finite steps before rollback / stop", gt=0, resume=True)
    rollback_lr_factor: float = option(0.0, ">0: roll back to last checkpoint with lrs times this; 0: stop",
                                       ge=0, resume=True)
    # -- execution --
    seed: int = option(0, "seed of init, data order and noise", ge=0)
    device: str = option("auto", "auto, cpu, cuda, cuda:N", resume=True)
    threads: int = option(0, "CPU intra-op threads (0 = the cores other work leaves free)", ge=0, resume=True)
    version: int = option(1, "config format version")

    def check(self) -> None:
        if self.steps is None and self.epochs is None:
            raise ConfigError("set a budget: steps=N or epochs=N (or --steps / --epochs)")
