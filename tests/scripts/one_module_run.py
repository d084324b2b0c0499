"""A detector-shaped run built only from the shared plumbing (config machine, run folder, metrics
log, named-module state, resume): one module, `net`, with a config class of its own. Used by
tests/test_runs.py in a fresh interpreter, so it can check what got imported.

usage: one_module_run.py RUN_DIR STEPS [--resume] [key=value ...]
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ganforge.config import Config, apply_overrides, option
from ganforge.io import MetricsLog
from ganforge.optim import OPTIMIZERS, build_optimizer
from ganforge.runs import RunFolder, RunState, SignalFlag, Window, resume_config


@dataclass
class BoxConfig(Config):
    model: str = option("tiny-box", "the one network")
    optimizer: str = option("sgd", "optimizer", choices=OPTIMIZERS)
    lr: float = option(0.05, "learning rate", gt=0, resume=True)
    momentum: float = option(0.9, "SGD momentum", ge=0, lt=1)
    weight_decay: float = option(5e-4, "L2 penalty", ge=0)
    keep_last: int = option(2, "rolling checkpoints", gt=0, resume=True)
    max_skips: int = option(3, "non-finite steps before stopping", gt=0, resume=True)
    rollback_lr_factor: float = option(0.0, "rollback factor", ge=0, resume=True)
    version: int = option(1, "format version")


class BoxRun(RunState):
    lr_keys = {"net": "lr"}
    resume_command = "ganforge detect train --resume"

    def __init__(self, cfg: BoxConfig, run_dir: Path) -> None:
        self.cfg, self.dir = cfg, run_dir
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(4, 16), nn.LeakyReLU(0.1), nn.Linear(16, 5))
        self.modules = {"net": net}
        self.optimizers = {"net": build_optimizer(cfg.optimizer, net.parameters(), cfg.lr, cfg)}
        self.init_counters()


def main(argv: list[str]) -> None:
    run_dir, steps, resume = Path(argv[0]), int(argv[1]), "--resume" in argv
    overrides = [a for a in argv[2:] if "=" in a]
    folder = RunFolder(run_dir, outputs=("checkpoints", "predictions"))
    if resume:
        cfg, tensors, meta, changed = resume_config(run_dir, BoxConfig, overrides)
        run = BoxRun(cfg, run_dir)
        run.load_state(tensors, meta)
        run.set_learning_rates({"net": changed["lr"]} if "lr" in changed else {})
        MetricsLog(folder.metrics).truncate_after(run.step)
        MetricsLog(folder.metrics).event(run.step, "resumed")
    else:
        cfg = apply_overrides(BoxConfig(), overrides)
        folder.check_new(force=False)
        run = BoxRun(cfg, run_dir)
        folder.prepare(force=False)
    folder.write_config(cfg)
    net, opt = run.modules["net"], run.optimizers["net"]
    with SignalFlag(), MetricsLog(folder.metrics) as log:
        window = Window()
        while run.step < steps:
            x = torch.randn(8, 4)  # the global RNG: restored exactly on resume
            target = torch.stack([x.sum(1), x[:, 0], x[:, 1] * 2, -x[:, 2], x[:, 3]], 1)
            loss = (net(x) - target).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run.step += 1
            run.images_seen += 8
            window.add({"loss": loss.detach()}, 8)
            log.train(run.step, **{k: round(v, 8) for k, v in window.means().items()})
            window = Window()
            run.save()
    folder.write_summary("detect", "finished", steps=run.step, images_seen=run.images_seen)
    gan_modules = sorted(m for m in sys.modules if m.startswith("ganforge.gan"))
    print(json.dumps({"gan_modules": gan_modules, "step": run.step}))


if __name__ == "__main__":
    main(sys.argv[1:])
