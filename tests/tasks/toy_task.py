"""A third task: a linear classifier of sklearn's digits as `ganforge toy train`. Start, resume,
signals, checkpoints, summary and report are the shared skeleton's: this file is all it costs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from ganforge.checkpoint import list_checkpoints, load_checkpoint, module_state
from ganforge.config import option, validate
from ganforge.data.sampler import BatchSampler
from ganforge.report import write_run_report
from ganforge.runs import Clock, RecipeBook, RunConfig, RunState, Window, add_train_parser, due, write_summary
from ganforge.task import Chart, Pictures, Report, Task
from ganforge.viz import save_grid


@dataclass
class ToyConfig(RunConfig):
    data: str = option("digits", "sklearn's 8x8 digits")
    model: str = option("linear", "a linear classifier", choices=("linear",))
    lr: float = option(0.5, "SGD learning rate", gt=0, resume=True)


RECIPES = RecipeBook("toy recipe", ToyConfig)
RECIPES.add("tiny", "this test", "a linear classifier of noisy digits", steps=8, batch_size=32, log_every=2,
            checkpoint_every=3)
DIGITS = load_digits()


class ToyRun(RunState):
    lr_keys = {"net": "lr"}
    resume_command = "ganforge toy train --resume"

    def __init__(self, cfg: ToyConfig, run_dir: Path, quiet: bool = False) -> None:
        self.cfg, self.dir, self.quiet, self.world, self.device = validate(cfg), Path(run_dir), quiet, 1, "cpu"
        torch.manual_seed(cfg.seed)
        self.x, self.y = torch.tensor(DIGITS.data, dtype=torch.float32) / 16, torch.tensor(DIGITS.target)
        self.sampler = BatchSampler(len(self.x), cfg.batch_size, seed=cfg.seed, device="cpu")
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = cfg.steps or round(cfg.epochs * self.steps_per_epoch)
        self.modules = {"net": torch.nn.Linear(64, 10)}
        self.optimizers = {"net": torch.optim.SGD(self.modules["net"].parameters(), lr=cfg.lr)}
        self.init_counters()
        self.window = Window()


def loop(run: ToyRun, folder, log) -> Path:
    net, opt = run.modules["net"], run.optimizers["net"]
    with Clock(run, folder, log) as clock:
        while run.step < run.total_steps:
            idx = run.sampler.indices(run.step)
            x = run.x[idx] + 0.1 * torch.randn(len(idx), 64)  # noise from the checkpointed RNG
            loss = F.cross_entropy(net(x), run.y[idx])
            opt.zero_grad(), loss.backward(), opt.step()
            run.window.add({"loss": loss}, len(idx))
            done = clock.tick(len(idx))
            if run.step % run.cfg.log_every == 0 or done:
                clock.log_window()
            if due(run.step, 4) or done:  # the ten class templates as pictures
                templates = (net.weight.detach().view(10, 1, 8, 8).sigmoid() * 255).to(torch.uint8)
                save_grid(templates, run.dir / "samples" / f"step_{run.step:06d}.png", nrow=5)
            if due(run.step, run.cfg.checkpoint_every) or done:
                run.save()
            if clock.stop(done):  # a signal (checkpointed), or the budget
                break
    return clock.end(finish)


def finish(run: ToyRun, folder, status: str, log, stop_reason: str | None = None) -> None:
    write_summary(run, folder, "toy", status, log, stop_reason=stop_reason, final=("loss",),
                  outputs=lambda: write_run_report(run.dir, live=False, log=log))


def load_trained(run: str | Path, checkpoint: str | None = None, device: str = "cpu") -> SimpleNamespace:
    tensors, meta = load_checkpoint(checkpoint or list_checkpoints(Path(run) / "checkpoints")[-1])
    (net := torch.nn.Linear(64, 10)).load_state_dict(module_state(tensors, "net"))
    return SimpleNamespace(module=net.eval().to(device), config=ToyConfig.from_dict(meta["config"]),
                           example_input=torch.zeros(1, 64), preprocess=lambda pixels: pixels / 16,
                           postprocess=lambda logits: logits.argmax(1))


def add_commands(sub) -> None:
    toy = sub.add_parser("toy", help="the toy task").add_subparsers(dest="toy_command", required=True)
    add_train_parser(toy, TASK, help="train a toy recipe (or resume a run)")


TASK = Task(name="toy", command="ganforge toy train", config=ToyConfig, recipes=RECIPES, make_run=ToyRun, loop=loop,
            finish=finish, add_commands=add_commands, loader=f"{__name__}:load_trained",
            outputs=("samples", "checkpoints"), listing=("report.html", "samples/", "checkpoints/"),
            default_out="runs/toy-{recipe}",
            report=Report(pictures=(Pictures("samples", "toy", "Class templates", "the ten class templates"),),
                          charts=(Chart("losses", "Losses", "train", "loss"),)))
