"""`train(cfg, run_dir)`: the translation training loop, and what it writes into the run folder.

Setup builds a :class:`~ganforge.translate.run.TranslateRun`; each step is then one pix2pix or
CycleGAN step (translate/step.py: D's phase and G's phase, visible there). Maintenance follows:
non-finite steps, the log window, the input | output | target grids, the held-out score and the
best checkpoint (`eval_every`), checkpoints, signals and the time limit. Start and resume, the run folder, the
log, progress, signals, the budget and the policy for non-finite steps are the shared skeleton of
`ganforge.runs` (its Clock); only the loop body and the step are translation's.

The run folder holds config.json, metrics.jsonl (train rows: each loss term and lr; eval rows with
`eval_every`: `translate eval`'s scores and the one that picks the best), samples/step_XXXXXX.png
(one row per fixed test image: input | output | target) and progress.gif, checkpoints/ (rolling,
and `best` with `eval_every`), summary.json and report.html.

Under torchrun (or `--nproc N`) every rank runs this loop on its part of each global batch (see
translate/run.py); rank 0 alone touches the run folder (config, metrics, grids, TensorBoard,
report, summary, and the checkpoints, which hold every rank's RNG state). A signal or a time-out on
any rank stops every rank at the same step. The grids and the held-out scores are computed on
rank 0 alone, from the plain modules, and the scores are sent to the others.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch

from ganforge import distributed as dist
from ganforge.checkpoint import check_state_fits, module_state
from ganforge.io import read_metrics
from ganforge.runs import RunFolder, due, start
from ganforge.runs.clock import Clock, write_summary
from ganforge.translate.builtins import BUILTINS
from ganforge.translate.config import TranslateConfig
from ganforge.translate.data import issues_line
from ganforge.translate.models import build_nets, net_names
from ganforge.translate.run import TranslateRun
from ganforge.translate.step import train_step
from ganforge.viz import make_gif, save_grid


def train(cfg: TranslateConfig | None = None, run_dir: str | Path = "runs/translate", **options) -> Path:
    """Train a translation recipe and write the run folder, or continue one (`resume=True`): the
    shared start and resume of `ganforge.runs.start` (see there for the options). Returns the run
    folder."""
    from ganforge.translate.task import TASK

    return start.train(TASK, cfg, run_dir, **options)


def data_path(cfg: TranslateConfig) -> Path | None:
    """The dataset folder a run trains on (None for a built-in or a downloaded dataset's name)."""
    if cfg.data in BUILTINS:
        return None
    path = Path(cfg.data).expanduser()
    return path if path.is_dir() else None


def check_state(cfg: TranslateConfig, tensors: dict, meta: dict, where: str) -> None:
    """Each net's checkpoint tensors against the shapes `cfg` builds, on the meta device."""
    with torch.device("meta"):  # built once, without memory; each net is then checked on its own
        nets = build_nets(cfg)
    for name in net_names(cfg):
        check_state_fits(lambda: nets[name], module_state(tensors, name), f"{where} (its {name})")


# ---- the loop ------------------------------------------------------------------------------------------

def loop(run: TranslateRun, folder: RunFolder, log) -> Path:
    """Translation's loop: one pix2pix or CycleGAN step (D's phase, G's phase); then maintenance."""
    cfg = run.cfg
    with Clock(run, folder, log) as clock:
        _report_issues(run, clock)
        while run.step < run.total_steps:
            stats, ok = train_step(run, run.batch(run.step))
            if ok:
                run.window.add(stats, cfg.batch_size)
            done = clock.tick(cfg.batch_size)

            # ---- maintenance: faults, logs, pictures, evaluation, checkpoints, signals ----
            if clock.diverging([(run.step, ok)]):
                clock.roll_back(finish)  # the batches are a function of the step: nothing else to rewind
                continue
            if run.step % cfg.log_every == 0 or done:
                _log_window(run, clock)
            if due(run.step, cfg.sample_every) or run.step == 1 or (done and run.last_sample != run.step):
                if clock.main and run.shown:
                    save_grid(run.triplets(), run.dir / "samples" / f"step_{run.step:06d}.png", nrow=3)
                run.last_sample = run.step
            if due(run.step, cfg.eval_every) or (cfg.eval_every and run.step == run.total_steps):
                _evaluate(run, clock)
            if clock.save_and_stop(done):  # the rolling checkpoint when due; a signal or the budget
                break
    return clock.end(finish)


def _report_issues(run: TranslateRun, clock: Clock) -> None:
    """Bad pairs and unreadable images of the train and test splits: one warning, once per run."""
    issues = list(dict.fromkeys(run.train_set.issues + run.test_set.issues))  # a lone file shows in both splits
    if len(issues) <= run.issues_reported:
        return
    run.issues_reported = len(issues)
    merged = replace(run.train_set, issues=issues)
    clock.warn("pairs", f"{run.cfg.data}: {issues_line(merged)}; training goes on without them",
               files=[f for f, _ in issues])


def _log_window(run: TranslateRun, clock: Clock) -> None:
    lr = run.schedulers["G"].get_last_lr()[0]
    logged = clock.log_window(lr=lr)
    if logged is None:
        return
    row, means = logged
    clock.progress.scalars("train", {**{k: row[k] for k in means}, "lr": lr}, run.step)
    terms = "  ".join(f"{k} {v:.4f}" for k, v in means.items())
    clock.progress.show(f"step {run.step}/{run.total_steps}  {terms}  lr {lr:.2e}  "
                        f"{row['images_per_second']:.0f} img/s")


def _evaluate(run: TranslateRun, clock: Clock) -> None:
    """The held-out score (translate/evaluate.py's `score`, lower is better) on rank 0, sent to every
    rank; `checkpoints/best` keeps the lowest (every rank joins its save: it holds their RNG states)."""
    from ganforge.translate.evaluate import training_score

    found = training_score(run) if dist.is_main() else None
    found = dist.broadcast_json(found)
    clock.mlog.eval(run.step, **found)
    clock.progress.scalars("eval", {k: v for k, v in found.items() if isinstance(v, float)}, run.step)
    clock.progress.say(f"step {run.step}: held-out {found['score_name']} = {found['score']:.4f}")
    if found["score"] < run.best:
        run.best = found["score"]
        run.save_best(found["score"], "best_score")


def _final_outputs(run: TranslateRun, log) -> None:
    from ganforge.report import write_run_report

    make_gif(run.dir / "samples", run.dir / "progress.gif", fps=3.0)
    write_run_report(run.dir, live=False, log=log)


def finish(run: TranslateRun, folder: RunFolder, status: str, log, stop_reason: str | None = None) -> None:
    """summary.json (the last train row's every value as `final`), then the GIF and the report."""
    rows = read_metrics(folder.metrics, kind="train")
    final = tuple(k for k in (rows[-1] if rows else {}) if k not in ("kind", "step", "time"))
    evals = [r for r in read_metrics(folder.metrics, kind="eval") if "score_name" in r]  # eval_every's rows
    best = {"best_score": run.best, "score_name": evals[-1]["score_name"]} if evals and math.isfinite(run.best) else {}
    write_summary(run, folder, "translate", status, log, stop_reason=stop_reason, final=final,
                  outputs=lambda: _final_outputs(run, log), mode=run.cfg.mode, model=run.cfg.model,
                  data_issues=len(set(run.train_set.issues + run.test_set.issues)), **best)
