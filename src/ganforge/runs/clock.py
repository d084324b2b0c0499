"""The loop's clock: what wraps a task's own loop body, written once.

    with Clock(run, folder, log) as clock:       # progress, metrics log, signals
        while run.step < run.total_steps:
            stats, ok = ...the task's step...
            done = clock.tick(images)             # counters, time budget, a signal on any rank
            ...the task's maintenance...
            if clock.stop(done):                  # a signal (checkpointed) or the budget
                break
    return clock.end(finish)                      # summary, outputs, the resume line or exit code

It also holds the log window's row, warnings once per kind, and the one policy for non-finite
steps: count them, and after `max_skips` in a row roll back (rollback_lr_factor > 0) or stop.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any, Callable

from ganforge import distributed as dist
from ganforge.io import MetricsLog, read_metrics
from ganforge.runs.folder import RunFolder
from ganforge.runs.loop import NoLog, Progress, SignalFlag, TrainingDiverged, TrainingInterrupted, Window, due
from ganforge.runs.state import RunState, rollback_or_stop
from ganforge.speed import buffers_finite
from ganforge.speed.cpu import ThreadGovernor


class Clock:
    """Progress, the metrics log, signals, the time budget and the end of one loop."""

    def __init__(self, run: RunState, folder: RunFolder, log: Callable) -> None:
        self.run, self.folder, self.log = run, folder, log
        self.main = dist.is_main()
        self.flag = SignalFlag()
        self.mlog = MetricsLog(folder.metrics) if self.main else NoLog()
        # threads=0 follows the cores other work leaves free (a no-op for threads=N, CUDA, torchrun)
        self.governor = ThreadGovernor(run.cfg.threads, run.device, self.mlog, log, run.step)
        self.interrupted: int | None = None
        self.at: str | None = None  # where a stop before the steps happened (a stage of the task's own)
        self.hush = False  # no progress bar: nothing of the steps will run
        self._progress: Progress | None = None
        self.started = time.perf_counter()  # max_seconds bounds this invocation from here
        self.restart()

    @property
    def progress(self) -> Progress:
        """The progress bar and TensorBoard writer, made when first used (after any stage a task
        runs before its steps)."""
        if self._progress is None:
            run = self.run
            self._progress = Progress(self.folder.path, run.total_steps, run.step, run.quiet or self.hush,
                                      self.log, write=self.main)
        return self._progress

    def __enter__(self) -> "Clock":
        self.flag.__enter__()
        self.mlog.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.mlog.__exit__(*exc)
        self.flag.__exit__(*exc)

    def restart(self) -> None:
        """Count the run's training time from here on (after a stage of the task's own, or a rollback)."""
        self.t0, self.base_seconds = time.perf_counter(), self.run.seconds

    # -- each step --
    def tick(self, images: int) -> bool:
        """Count a finished step of `images` images; True when the run is done: its budget of steps,
        or this invocation's max_seconds, reached (on any rank: every rank stops at the same step)."""
        run = self.run
        run.step += 1
        run.images_seen += images
        run.seconds = self.base_seconds + time.perf_counter() - self.t0
        self.progress.update()
        timed_out = self.flag.agree(0 < run.cfg.max_seconds <= time.perf_counter() - self.started)
        return run.step >= run.total_steps or timed_out

    def save_and_stop(self, done: bool) -> bool:
        """The end of a step: the rolling checkpoint when due (or the run is done), then `stop`."""
        if due(self.run.step, self.run.cfg.checkpoint_every) or done:
            self.run.save()
        return self.stop(done)

    def stop(self, done: bool) -> bool:
        """Whether to leave the loop: done, or a signal asked for a stop (then checkpointed here)."""
        if self.flag.signum is not None and not done:
            self.run.save()
            self.interrupted = self.flag.signum
            return True
        return done

    def log_window(self, **extra: Any) -> tuple[dict, dict[str, float]] | None:
        """The log window's train row (its means over every rank's part, then `extra`): (row, means)
        on rank 0, None elsewhere or for an empty window. A window on the cadence starts anew; a
        stop between log steps keeps its partial one."""
        run = self.run
        window = run.window
        self.governor.check(run.step, window)
        if run.step % run.cfg.log_every == 0:
            run.window = Window()
        if window.count == 0:
            return None
        # The means of each rank's part, averaged: the global batch's means (the parts are equal).
        means = {k: float(v) / window.count for k, v in dist.mean_across(window.sums).items()}
        if not self.main:
            return None
        row = self.mlog.train(run.step, epoch=round(run.step / run.steps_per_epoch, 4), images_seen=run.images_seen,
                              **{k: round(v, 6) for k, v in means.items()}, **extra,
                              images_per_second=round(window.images_per_second(), 2), seconds=round(run.seconds, 3))
        return row, means

    def warn(self, kind: str, message: str, **fields: Any) -> None:
        """A `warning` row in metrics.jsonl each time; the `warning:` line once per kind."""
        self.mlog.warning(self.run.step, message, alarm=kind, **fields)
        if kind not in self.run.warned:
            self.run.warned.add(kind)
            self.log(f"warning: {message}")

    # -- non-finite steps --
    def diverging(self, settled: list[tuple[int, bool]]) -> bool:
        """Count the skipped steps among `settled` (step, taken); True after `max_skips` in a row, or
        when a module's buffers (BatchNorm statistics) went non-finite."""
        run = self.run
        for at, ok in settled:
            if ok:
                run.consecutive_skips = 0
                continue
            run.skipped += 1
            run.consecutive_skips += 1
            self.mlog.event(at, "skipped_nonfinite_step", skipped_total=run.skipped)
            if run.consecutive_skips >= run.cfg.max_skips or not dist.all_true(buffers_finite(*run.buffered())):
                return True
        return False

    def roll_back(self, finish: Callable) -> None:
        """Roll back to the last checkpoint with lower learning rates, or stop the run (summary
        written, TrainingDiverged raised with what will work)."""
        run = self.run
        try:
            rollback_or_stop(run, self.log)
        except TrainingDiverged:
            self.mlog.event(run.step, "diverged", skipped_total=run.skipped)
            self.mlog.close()
            if self._progress is not None:
                self._progress.close()
            if self.main:
                finish(run, self.folder, "diverged", self.log)
            raise
        self.mlog.truncate_after(run.step, partial=run.step % run.cfg.log_every != 0)
        self.mlog.event(run.step, "rolled_back", rollbacks=run.rollbacks[run.step])
        self.restart()

    # -- the end of the run --
    def end(self, finish: Callable) -> Path:
        """After the loop: the summary and outputs (`finish`), then the resume line for a stop at
        max_seconds, or TrainingInterrupted (exit 130/143) for a signal."""
        run = self.run
        if self._progress is not None:
            self._progress.close()
        stopped = self.interrupted is not None or run.step < run.total_steps
        if self.main:
            finish(run, self.folder, "stopped" if stopped else "finished", self.log,
                   stop_reason="signal" if self.interrupted is not None else "max_seconds" if stopped else None)
        dist.barrier()
        resume = f"`{dist.relaunch(run.resume_command)} {shlex.quote(str(run.dir))}`"
        at = self.at or f"step {run.step}"
        if self.interrupted is None and stopped:
            self.log(f"stopped after max_seconds={run.cfg.max_seconds:g} at {at}"
                     f"{'' if self.at else f' of {run.total_steps}'} (checkpoint saved): continue with {resume}")
        if self.interrupted is not None:
            raise TrainingInterrupted(f"stopped by signal {self.interrupted} at {at}: checkpoint saved; "
                                      f"continue with {resume}", self.flag.exit_code())
        return run.dir


def write_summary(run: RunState, folder: RunFolder, task: str, status: str, log: Callable, *,
                  stop_reason: str | None, final: tuple[str, ...], outputs: Callable[[], None],
                  **fields: Any) -> dict:
    """summary.json with what every run reports (budget, throughput, skipped steps, the last
    train row's `final` keys) and the task's `fields`; then the total time line."""
    rows = read_metrics(folder.metrics, kind="train")
    last = rows[-1] if rows else {}
    summary = folder.write_summary(
        task, status, **({"stop_reason": stop_reason} if stop_reason else {}), recipe=run.cfg.recipe,
        data=run.cfg.data, **fields, device=str(run.device), steps=run.step, total_steps=run.total_steps,
        epochs=round(run.step / run.steps_per_epoch, 4), images_seen=run.images_seen,
        seconds=round(run.seconds, 3), images_per_second=round(run.images_seen / max(run.seconds, 1e-9), 2),
        skipped_steps=run.skipped, final={k: last.get(k) for k in final}, outputs=outputs)
    if not run.quiet:
        log(f"total training time {run.seconds:.1f} s for {run.step} steps "
            f"({summary['images_per_second']:.0f} images/s)")
    return summary
