"""The translation task's record: what the CLI, the report and `Task.load` know about it.

Translation keeps its own train command and loop skeleton for now (translate/train.py); moving it
onto the shared one in runs/ is still to do."""

from __future__ import annotations

from ganforge.task import TASKS, Chart, Pictures, Report, Task
from ganforge.translate.cli import add_translate_parser
from ganforge.translate.config import TranslateConfig
from ganforge.translate.recipes import RECIPES
from ganforge.translate.run import TranslateRun
from ganforge.translate.train import COMMAND, OUTPUTS, _finish, _loop

REPORT = Report(
    pictures=(Pictures("samples", "samples", "Translations over time", "input | output | target triplets",
                       gifs=("progress.gif",), gif_what="the translations over training as an animation",
                       nav="Translations"),),
    charts=(Chart("losses", "Losses", "train", "loss"),),
)

TASK = TASKS.register("translate", Task(
    name="translate", command=COMMAND, config=TranslateConfig, recipes=RECIPES,
    make_run=lambda cfg, run_dir, quiet=False: TranslateRun(cfg, run_dir, quiet=quiet), loop=_loop,
    finish=_finish, add_commands=add_translate_parser, loader="ganforge.translate.use:load_trained",
    outputs=OUTPUTS, listing=("report.html", "samples/", "progress.gif", "metrics.jsonl", "summary.json",
                              "checkpoints/"),
    default_out="runs/translate-{recipe}", report=REPORT, examples_from="ganforge.translate.use:examples"))
