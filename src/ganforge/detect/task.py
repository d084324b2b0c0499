"""The detector task's record: what the CLI, the run skeleton and the report know about it."""

from __future__ import annotations

from ganforge.detect.cli import add_detect_parser
from ganforge.detect.config import DetectConfig
from ganforge.detect.infer import DRAW_CONF
from ganforge.detect.recipes import RECIPES
from ganforge.detect.run import DetectRun
from ganforge.detect.train import check_state, data_path, finish, loop
from ganforge.task import TASKS, Chart, Pictures, Report, Task

REPORT = Report(
    pictures=(Pictures("predictions", "pred", "Predictions over time", "validation images with predicted boxes",
                       gifs=("predictions.gif", "predictions/predictions.gif"),
                       gif_what="the predictions over training as an animation", nav="Predictions",
                       # A young model's boxes mostly score under the drawing threshold: say so.
                       note=f"Only boxes scoring over {DRAW_CONF:g} are drawn, so early frames can look empty "
                            "while the model is still learning; the mAP curve scores every box."),),
    charts=(Chart("losses", "Losses", "train", "loss"),
            Chart("map", "mAP (higher is better)", "eval", ("map",), (0.0, 1.0))),
    labels={"map": "mAP", "loss": "loss"},
    eval_columns=(("map", "mAP"),),
    per_class=("ap", "Detection: average precision", "Average precision per class", "AP per class"),
)

TASK = TASKS.register("detect", Task(
    name="detect", command="ganforge detect train", config=DetectConfig, recipes=RECIPES,
    make_run=lambda cfg, run_dir, quiet=False: DetectRun(cfg, run_dir, quiet=quiet), loop=loop, finish=finish,
    add_commands=add_detect_parser, loader="ganforge.detect.use:load_trained",
    outputs=("predictions", "checkpoints"),
    listing=("report.html", "predictions/", "predictions.gif", "metrics.jsonl", "summary.json", "checkpoints/"),
    default_out="runs/detect-{recipe}", data_path=data_path, report=REPORT,
    check_state=check_state, examples_from="ganforge.detect.use:examples"))
