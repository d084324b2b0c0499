"""`train(cfg, run_dir)`: the translation training loop, and what it writes into the run folder.

Setup builds a :class:`~ganforge.translate.run.TranslateRun`; each step is then one pix2pix or
CycleGAN step (translate/step.py: D's phase and G's phase, visible there). Maintenance follows:
non-finite steps, the log window, the input | output | target grids, checkpoints, signals and the
time limit. The run folder, the log, progress, signals and resume are the shared plumbing of
`ganforge.runs`; nothing here comes from the GAN trainer or the detector.

The run folder holds config.json, metrics.jsonl (train rows: each loss term and lr), samples/
step_XXXXXX.png (one row per fixed test image: input | output | target) and progress.gif,
checkpoints/ (rolling), summary.json and report.html.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import replace
from pathlib import Path

from ganforge.errors import ConfigError
from ganforge.io import MetricsLog, read_metrics
from ganforge.checkpoint import check_state_fits, module_state
from ganforge.runs import Progress, RunFolder, SignalFlag, TrainingDiverged, TrainingInterrupted, Window, due, start
from ganforge.speed.cpu import ThreadGovernor
from ganforge.translate.builtins import BUILTINS
from ganforge.translate.config import TranslateConfig
from ganforge.translate.data import issues_line
from ganforge.translate.models import build_nets, net_names as cfg_nets
from ganforge.translate.run import TranslateRun
from ganforge.viz import make_gif, save_grid

RESUME = "ganforge translate train --resume"


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
    for name in cfg_nets(cfg):
        check_state_fits(lambda: build_nets(cfg)[name], module_state(tensors, name), f"{where} (its {name})")


# ---- the loop ------------------------------------------------------------------------------------------

def _loop(run: TranslateRun, folder: RunFolder, log) -> Path:
    cfg = run.cfg
    progress = Progress(folder.path, run.total_steps, run.step, run.quiet, log)
    interrupted: int | None = None
    with SignalFlag() as flag, MetricsLog(folder.metrics) as mlog:
        _report_issues(run, mlog, log)
        governor = ThreadGovernor(cfg.threads, run.device, mlog, log, run.step)
        t0, base_seconds = time.perf_counter(), run.seconds
        while run.step < run.total_steps:
            stats, ok = run.train_step(run.step)
            run.step += 1
            run.images_seen += cfg.batch_size
            run.seconds = base_seconds + time.perf_counter() - t0
            progress.update()

            # ---- maintenance: faults, logs, pictures, checkpoints, signals ----
            timed_out = 0 < cfg.max_seconds <= time.perf_counter() - t0  # this invocation's training time
            done = run.step >= run.total_steps or timed_out
            if ok:
                run.window.add(stats, cfg.batch_size)
                run.consecutive_skips = 0
            else:
                _skipped(run, mlog, progress, log)
            if run.step % cfg.log_every == 0 or done:
                _log_window(run, mlog, progress)
                governor.check(run.step, run.window)
                if run.step % cfg.log_every == 0:  # a stop between log steps keeps its partial window
                    run.window = Window()
            if due(run.step, cfg.sample_every) or run.step == 1 or (done and run.last_sample != run.step):
                _snapshot(run)
            if due(run.step, cfg.checkpoint_every) or done:
                run.save()
            if flag.signum is not None and not done:
                run.save()
                interrupted = flag.signum
                break
            if done:
                break
    progress.close()
    stopped = interrupted is not None or run.step < run.total_steps
    _finish(run, folder, "stopped" if stopped else "finished", log,
            stop_reason="signal" if interrupted is not None else "max_seconds" if stopped else None)
    where = shlex.quote(str(run.dir))
    if interrupted is None and stopped:
        log(f"stopped after max_seconds={cfg.max_seconds:g} at step {run.step} of {run.total_steps} "
            f"(checkpoint saved): continue with `{RESUME} {where}`")
    if interrupted is not None:
        raise TrainingInterrupted(f"stopped by signal {interrupted} at step {run.step}: checkpoint saved; "
                                  f"continue with `{RESUME} {where}`", flag.exit_code())
    return run.dir


def _report_issues(run: TranslateRun, mlog: MetricsLog, log) -> None:
    """Bad pairs and unreadable images of the train and test splits: one warning, once per run."""
    issues = list(dict.fromkeys(run.train_set.issues + run.test_set.issues))  # a lone file shows in both splits
    if len(issues) <= run.issues_reported:
        return
    run.issues_reported = len(issues)
    merged = replace(run.train_set, issues=issues)
    message = f"{run.cfg.data}: {issues_line(merged)}; training goes on without them"
    mlog.warning(run.step, message, alarm="pairs", files=[f for f, _ in issues])
    if not run.quiet:
        log(f"warning: {message}")


def _skipped(run: TranslateRun, mlog: MetricsLog, progress: Progress, log) -> None:
    """Count a skipped non-finite step; stop the run after `max_skips` in a row."""
    run.skipped += 1
    run.consecutive_skips += 1
    mlog.event(run.step, "skipped_nonfinite_step", skipped_total=run.skipped)
    if run.consecutive_skips < run.cfg.max_skips:
        return
    mlog.event(run.step, "diverged", skipped_total=run.skipped)
    mlog.close()
    progress.close()
    _finish(run, RunFolder(run.dir), "diverged", log)
    raise TrainingDiverged(
        f"training diverged: {run.consecutive_skips} consecutive steps with a non-finite loss at step {run.step}; "
        f"the last good checkpoint is in {run.dir / 'checkpoints'}: continue with a lower learning rate, e.g. "
        f"`{RESUME} {shlex.quote(str(run.dir))} lr={run.cfg.lr / 2:g}`")


def _log_window(run: TranslateRun, mlog: MetricsLog, progress: Progress) -> None:
    window = run.window
    if window.count == 0:
        return
    means = window.means()
    lr = run.schedulers["G"].get_last_lr()[0]
    row = mlog.train(run.step, epoch=run.epoch(), images_seen=run.images_seen,
                     **{k: round(v, 6) for k, v in means.items()}, lr=lr,
                     images_per_second=round(window.images_per_second(), 2), seconds=round(run.seconds, 3))
    progress.scalars("train", {**{k: row[k] for k in means}, "lr": lr}, run.step)
    terms = "  ".join(f"{k} {v:.4f}" for k, v in means.items())
    progress.show(f"step {run.step}/{run.total_steps}  {terms}  lr {lr:.2e}  {row['images_per_second']:.0f} img/s")


def _snapshot(run: TranslateRun) -> None:
    """The fixed test images as samples/step_XXXXXX.png: one row of input | output | target each."""
    if run.shown:
        save_grid(run.triplets(), run.dir / "samples" / f"step_{run.step:06d}.png", nrow=3)
    run.last_sample = run.step


def _final_outputs(run: TranslateRun, log) -> None:
    from ganforge.report import write_run_report

    make_gif(run.dir / "samples", run.dir / "progress.gif", fps=3.0)
    write_run_report(run.dir, live=False, log=log)


def _finish(run: TranslateRun, folder: RunFolder, status: str, log, stop_reason: str | None = None) -> None:
    rows = read_metrics(folder.metrics, kind="train")
    final = rows[-1] if rows else {}
    summary = folder.write_summary(
        "translate", status, **({"stop_reason": stop_reason} if stop_reason else {}), recipe=run.cfg.recipe,
        mode=run.cfg.mode, data=run.cfg.data, model=run.cfg.model, device=str(run.device), steps=run.step,
        total_steps=run.total_steps, epochs=run.epoch(), images_seen=run.images_seen,
        seconds=round(run.seconds, 3), images_per_second=round(run.images_seen / max(run.seconds, 1e-9), 2),
        skipped_steps=run.skipped, data_issues=len(set(run.train_set.issues + run.test_set.issues)),
        final={k: v for k, v in final.items() if k not in ("kind", "step", "time")},
        outputs=lambda: _final_outputs(run, log))
    if not run.quiet:
        log(f"total training time {run.seconds:.1f} s for {run.step} steps "
            f"({summary['images_per_second']:.0f} images/s)")
