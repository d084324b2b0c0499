"""The translation task's record: what the CLI, the run skeleton, the report and `Task.load` know
about it."""

from __future__ import annotations

from ganforge.task import TASKS, Chart, Pictures, Report, Task
from ganforge.translate.cli import add_translate_parser
from ganforge.translate.config import TranslateConfig
from ganforge.translate.recipes import RECIPES
from ganforge.translate.run import TranslateRun
from ganforge.translate.train import check_state, data_path, finish, loop

REPORT = Report(
    pictures=(Pictures("samples", "samples", "Translations over time", "input | output | target triplets",
                       gifs=("progress.gif",), gif_what="the translations over training as an animation",
                       nav="Translations"),),
    # the terms each step logs: pix2pix's D outputs, G's adversarial and L1 terms; CycleGAN's two
    # generators' adversarial terms, cycle and identity terms, and its two discriminators' losses
    charts=(Chart("losses", "Loss terms", "train", ("d_real", "d_fake", "g_gan", "g_l1", "g_ab", "g_ba", "cyc_a",
                                                    "cyc_b", "idt_a", "idt_b", "d_a", "d_b")),
            Chart("held-out", "Held-out L1 (lower is better)", "eval", ("l1", "cycle_l1"))),
    labels={"l1": "L1 to the targets", "cycle_l1": "cycle L1", "d_real": "D loss on real pairs",
            "d_fake": "D loss on fake pairs", "g_gan": "G adversarial", "g_l1": "G L1 (unweighted)",
            "g_ab": "G_AB adversarial", "g_ba": "G_BA adversarial", "cyc_a": "cycle A", "cyc_b": "cycle B",
            "idt_a": "identity A", "idt_b": "identity B", "d_a": "D_A loss", "d_b": "D_B loss"},
    eval_columns=(("l1", "L1"), ("psnr", "PSNR"), ("ssim", "SSIM"), ("classifier_score", "classifier score"),
                  ("cycle_l1", "cycle L1"), ("target_domain_rate", "target-domain rate"),
                  ("label_preservation", "label preservation"), ("fid", "FID")),
    facts=(("best_score", "best held-out score"),),
)

TASK = TASKS.register("translate", Task(
    name="translate", command="ganforge translate train", config=TranslateConfig, recipes=RECIPES,
    make_run=lambda cfg, run_dir, quiet=False: TranslateRun(cfg, run_dir, quiet=quiet), loop=loop,
    finish=finish, add_commands=add_translate_parser, loader="ganforge.translate.use:load_trained",
    outputs=("samples", "checkpoints"), listing=("report.html", "samples/", "progress.gif", "metrics.jsonl", "summary.json",
                              "checkpoints/"),
    default_out="runs/translate-{recipe}", data_path=data_path, report=REPORT,
    check_state=check_state, examples_from="ganforge.translate.use:examples"))
