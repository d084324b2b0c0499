"""`train(cfg, run_dir)`: the detector training loop, and what it writes into the run folder.

Setup builds a :class:`~ganforge.detect.run.DetectRun`; an optional first stage pretrains the trunk
on classification (the paper's ImageNet stage); then each step is forward, equation 3, backward and
an optimizer step. Maintenance follows each step: non-finite steps, the log window, the drawn
predictions, the val mAP and the best checkpoint, checkpoints, signals. The run folder, the log,
progress, signals and resume are the shared plumbing of `ganforge.runs`; nothing here comes from
the GAN trainer.

The run folder holds config.json, metrics.jsonl (train rows: loss and its four parts, lr; eval
rows: map, ap per class name, metric), predictions/step_XXXXXX.png and predictions.gif, tb/
(TensorBoard), checkpoints/ (rolling, and best by mAP), summary.json and report.html (with the
curves).

Under torchrun (or `--nproc N`) every rank runs this loop on its part of each global batch (see
detect/run.py); rank 0 alone touches the run folder (lock, config, metrics, predictions, TensorBoard,
report, summary, and the checkpoints, which hold every rank's RNG state), and the others learn from
it whether it refused. A signal or a time-out on any rank stops every rank at the same step. The
val mAP and the drawn predictions are computed on rank 0 alone, on the plain module (the others
wait for its score at the next collective), so they are exactly one process's. The trunk
pretraining, when on, runs on every rank on the same batches (its batch of 64 is not split), and
rank 0's trunk is then sent to the others. The detector's training step uses no compile or CUDA
graph (those are inference-only, detect/speed.py), so nothing is switched off under DDP.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import replace
from pathlib import Path

from ganforge import distributed as dist
from ganforge.checkpoint import check_state_fits, module_state
from ganforge.detect.config import DetectConfig
from ganforge.detect.data import LabelIssues
from ganforge.detect.datasets import DETECTION_DATASETS, shared_images
from ganforge.detect.evaluate import evaluate_model
from ganforge.detect.pretrain import forget_pretrain_rows, run_pretraining
from ganforge.detect.run import DetectRun, net_builder
from ganforge.detect.step import train_step
from ganforge.errors import ConfigError, GanforgeError
from ganforge.io import MetricsLog, display_path, read_metrics
from ganforge.report import write_run_report
from ganforge.runs import (NoLog, Progress, RunFolder, SignalFlag, TrainingDiverged, TrainingInterrupted, Window, due,
                           resume_config, silent, warn, continue_resumed, with_budget)
from ganforge.speed.cpu import ThreadGovernor
from ganforge.viz import make_gif, save_grid

RESUME = "ganforge detect train --resume"


def train(cfg: DetectConfig | None = None, run_dir: str | Path = "runs/detect", *, resume: bool = False,
          force: bool = False, steps: int | None = None, epochs: float | None = None, quiet: bool = False,
          log=print, resume_overrides: list[str] | None = None) -> Path:
    """Train a detector and write the run folder. With `resume=True`, continue `run_dir` exactly
    where its last checkpoint left it (`steps`/`epochs` then count the whole run; `resume_overrides`
    may change the keys declared `resume=True`). Returns the run folder.

    Under torchrun every rank calls it (see the module docstring)."""
    dist.init(_device_hint(cfg))
    if not dist.is_main():
        log = silent
    folder = RunFolder(run_dir, outputs=("predictions", "checkpoints"), command="ganforge detect train")
    try:
        if resume:
            dist.main_decides(folder.open_existing)  # locked before anything is read: one writer per run folder
            return _resume(folder, steps, epochs, quiet, log, resume_overrides)
        if cfg is None:
            raise ConfigError("give a recipe or --resume RUN_DIR")
        cfg = _absolute_data(with_budget(cfg, steps, None if epochs is None else float(epochs)))
        protect = _data_folders(cfg)
        dist.main_decides(lambda: folder.check_new(force, protect))
        run = DetectRun(cfg, folder.path, quiet=quiet)

        def create() -> None:
            folder.prepare(force, protect)
            folder.write_config(run.cfg)

        dist.main_decides(create)
        return _loop(run, folder, log)
    finally:
        folder.release()


def _device_hint(cfg: DetectConfig | None):
    """The device the process group is set up for (nccl too when it is CUDA)."""
    import torch

    from ganforge.device import resolve_device

    try:
        return resolve_device(cfg.device if cfg is not None else "auto")
    except GanforgeError:
        return torch.device("cpu")


def _resume(folder: RunFolder, steps, epochs, quiet: bool, log, overrides) -> Path:
    # Rank 0 reads the checkpoint and sends it to the others: only it needs the run folder.
    got = dist.main_decides(lambda: resume_config(folder.path, DetectConfig, overrides, log))
    cfg, tensors, meta, changed = got if got is not None else (None, None, None, None)
    shared = dist.broadcast_json({"config": cfg.to_dict(), "changed": changed} if dist.is_main() else None)
    cfg, changed = DetectConfig.from_dict(shared["config"]), shared["changed"]
    tensors, meta = dist.broadcast_state(tensors, meta)
    # Shapes first, on the meta device: a config edited to absurd widths is refused before allocating.
    check_state_fits(net_builder(cfg, len(meta.get("names") or [])), module_state(tensors, "net"),
                     f"the checkpoint of {display_path(folder.path)}")
    # A new budget stretches the schedule from the saved state on: the lambda reads the new total.
    run = DetectRun(with_budget(cfg, steps, None if epochs is None else float(epochs)), folder.path, quiet=quiet)
    cfg = run.cfg
    run.load_state(tensors, meta)
    saved_world = int(meta.get("world_size", 1))
    if saved_world != run.world:
        if dist.is_main():
            warn(f"this run was checkpointed by {saved_world} process(es) and continues on {run.world}: "
                 "training goes on from the checkpoint with the same global batches and augmentations, but "
                 f"not bit for bit as it would have on {saved_world} (reductions, BatchNorm statistics summed "
                 "per process, and dropout's per-process random streams differ)", quiet=False)
        changed = {**changed, "world_size": run.world}
    if run.pretraining is not None and dist.is_main():
        forget_pretrain_rows(folder.metrics, run.pretraining.step)
    if "lr" in changed:  # the schedule scales the new peak from the next step on
        run.scheduler.base_lrs = [changed["lr"] for _ in run.scheduler.base_lrs]
    return continue_resumed(run, folder, cfg, changed, log, _finish, _loop)


def _data_path(cfg: DetectConfig) -> Path | None:
    if cfg.data in DETECTION_DATASETS:
        return None
    path = Path(cfg.data).expanduser()
    return path if path.exists() else None


def _data_folders(cfg: DetectConfig) -> tuple[Path, ...]:
    """The dataset folder a run trains on, which `--force` must never delete."""
    path = _data_path(cfg)
    if path is None:
        return ()
    return (path if path.is_dir() else path.parent,)


def _absolute_data(cfg: DetectConfig) -> DetectConfig:
    """A dataset path is saved absolute, so the run resumes from any folder."""
    path = _data_path(cfg)
    return replace(cfg, data=str(path.resolve())) if path is not None else cfg


# ---- the loop ------------------------------------------------------------------------------------------

def _loop(run: DetectRun, folder: RunFolder, log) -> Path:
    cfg = run.cfg
    main = dist.is_main()
    interrupted: int | None = None
    started = time.perf_counter()  # max_seconds bounds this invocation, the pretraining stage included
    with SignalFlag() as flag, (MetricsLog(folder.metrics) if main else NoLog()) as mlog:
        _report_issues(run, mlog, log)
        _report_val_overlap(run, mlog, log)
        _report_flip(run, mlog, log)
        in_pretraining = False  # stopped (checkpointed) by a signal or max_seconds before its end
        if not run.pretrained:
            in_pretraining = run_pretraining(run, mlog, flag, started, log)
            if flag.signum is not None:
                interrupted = flag.signum
        progress = Progress(folder.path, run.total_steps, run.step, run.quiet or interrupted is not None
                            or in_pretraining, log, write=main)
        t0, base_seconds = time.perf_counter(), run.seconds
        governor = ThreadGovernor(cfg.threads, run.device, mlog, log, run.step)
        loader = iter(run.loader(cfg.workers)) if interrupted is None and not in_pretraining else iter(())
        for images, grid, found in loader:
            for where, reason in found:  # from a worker's copy of the set: recorded here too
                run.train_set.issues.add(where, reason)
            stats, ok = train_step(run, (images, grid))
            run.step += 1
            run.images_seen += cfg.batch_size
            run.seconds = base_seconds + time.perf_counter() - t0
            progress.update()

            # ---- maintenance: faults, logs, pictures, evaluation, checkpoints, signals ----
            # max_seconds bounds this invocation's training time, so a resumed run gets it anew.
            timed_out = 0 < cfg.max_seconds <= time.perf_counter() - started
            # Every rank stops at the same step boundary: a signal or a time-out on any of them.
            timed_out = flag.agree(timed_out)
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
                _report_issues(run, mlog, log)
            if due(run.step, cfg.predict_every) or run.step == 1 or (done and run.last_prediction != run.step):
                if main:
                    _snapshot(run, log)
                run.last_prediction = run.step
            if due(run.step, cfg.eval_every) or run.step >= run.total_steps:
                _evaluate(run, mlog, progress)
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
    if main:
        _finish(run, folder, "stopped" if stopped else "finished", log,
                stop_reason="signal" if interrupted is not None else "max_seconds" if stopped else None)
    dist.barrier()
    where = shlex.quote(str(run.dir))
    at = (f"pretraining step {run.pretraining.step} of {cfg.pretrain_steps}" if in_pretraining
          else f"step {run.step}")
    if interrupted is None and stopped:
        log(f"stopped after max_seconds={cfg.max_seconds:g} at {at}"
            f"{'' if in_pretraining else f' of {run.total_steps}'} (checkpoint saved): continue with "
            f"`{dist.relaunch(RESUME)} {where}`")
    if interrupted is not None:
        raise TrainingInterrupted(f"stopped by signal {interrupted} at {at}: checkpoint saved; "
                                  f"continue with `{dist.relaunch(RESUME)} {where}`", flag.exit_code())
    return run.dir


def _skipped(run: DetectRun, mlog: MetricsLog, progress: Progress, log) -> None:
    """Count a skipped non-finite step; stop the run after `max_skips` in a row."""
    run.skipped += 1
    run.consecutive_skips += 1
    mlog.event(run.step, "skipped_nonfinite_step", skipped_total=run.skipped)
    if run.consecutive_skips < run.cfg.max_skips:
        return
    mlog.event(run.step, "diverged", skipped_total=run.skipped)
    mlog.close()
    progress.close()
    if dist.is_main():
        _finish(run, RunFolder(run.dir), "diverged", log)
    raise TrainingDiverged(
        f"training diverged: {run.consecutive_skips} consecutive steps with a non-finite loss or gradient at "
        f"step {run.step}; the last good checkpoint is in {run.dir / 'checkpoints'}: continue with a lower "
        f"learning rate, e.g. `{dist.relaunch(RESUME)} {shlex.quote(str(run.dir))} lr={run.cfg.lr / 2:g}`")


def _issues(run: DetectRun) -> LabelIssues:
    """The problems found in the train and val splits so far (one list when they share it)."""
    issues = LabelIssues()
    issues.extend(run.train_set.issues)
    if run.val_set.issues is not run.train_set.issues:
        issues.extend(run.val_set.issues)
    return issues


def _report_issues(run: DetectRun, mlog: MetricsLog, log) -> None:
    """Bad labels and images of the train and val splits: one warning line (file names included)
    when new ones are found."""
    issues = _issues(run)
    if len(issues) <= run.issues_reported:
        return
    run.issues_reported = len(issues)
    files = sorted({where.rsplit(":", 1)[0] for where, _ in issues.items})
    shown = ", ".join(Path(f).name for f in files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
    _warn(run, mlog, log, f"{run.cfg.data} train and val splits: {issues.summary()}; files: {shown}; training "
          "and its mAP go on without them", alarm="labels", files=files)


def _warn(run: DetectRun, mlog: MetricsLog, log, message: str, **fields) -> None:
    """A `warning` row in metrics.jsonl and, unless quiet, a `warning:` line."""
    mlog.warning(run.step, message, **fields)
    if not run.quiet:
        log(f"warning: {message}")


def _report_val_overlap(run: DetectRun, mlog: MetricsLog, log) -> None:
    """A val split that reuses training images measures fit, not held-out accuracy: say so once."""
    shared = 0 if run.step or run.resumed else shared_images(run.train_set, run.val_set)
    if shared:
        _warn(run, mlog, log, f"{shared} of the {len(run.val_set)} val images of {run.cfg.data} are training "
              "images, so its mAP and best checkpoint measure fit, not held-out accuracy: give a val split of "
              "other images (for a COCO JSON, the file with 'train' in its name replaced by 'val' beside it)",
              alarm="val_overlap")


def _report_flip(run: DetectRun, mlog: MetricsLog, log) -> None:
    """flip=on where the dataset says a mirror image is not one of its objects (digits): say so once."""
    if run.cfg.flip == "on" and not run.train_set.flip and not run.step and not run.resumed:
        _warn(run, mlog, log, f"flip=on mirrors the images of {run.cfg.data}, whose objects change meaning in a "
              "mirror (a mirrored 2 is not a 2): use flip=auto unless that is what you want", alarm="flip")


def _log_window(run: DetectRun, mlog: MetricsLog, progress: Progress) -> None:
    window = run.window
    if window.count == 0:
        return
    # The means of each rank's part, averaged: the global batch's means (the parts are equal).
    means = {k: float(v) / window.count for k, v in dist.mean_across(window.sums).items()}
    if not dist.is_main():
        return
    lr = run.scheduler.get_last_lr()[0]
    row = mlog.train(run.step, epoch=round(run.step / run.steps_per_epoch, 4), images_seen=run.images_seen,
                     **{k: round(v, 6) for k, v in means.items()}, lr=lr,
                     images_per_second=round(window.images_per_second(), 2), seconds=round(run.seconds, 3))
    progress.scalars("train", {**{k: row[k] for k in means}, "lr": lr,
                               "images_per_second": row["images_per_second"]}, run.step)
    progress.show(f"step {run.step}/{run.total_steps}  loss {means['loss']:.4f}  coord {means['loss_coord']:.3f}  "
                  f"obj {means['loss_obj']:.3f}  noobj {means['loss_noobj']:.3f}  cls {means['loss_cls']:.3f}  "
                  f"lr {lr:.2e}  {row['images_per_second']:.0f} img/s",
                  loss=f"{means['loss']:.3f}", cls=f"{means['loss_cls']:.3f}")


def _snapshot(run: DetectRun, log) -> None:
    """The fixed val images with their predicted boxes, as predictions/step_XXXXXX.png."""
    drawn = run.drawn_predictions()
    side = max(1, round(len(drawn) ** 0.5))
    save_grid(drawn, run.dir / "predictions" / f"step_{run.step:06d}.png", nrow=side)
    run.last_prediction = run.step
    write_run_report(run.dir, live=True, log=log)


def _evaluate(run: DetectRun, mlog: MetricsLog, progress: Progress) -> None:
    """mAP on the val split; `checkpoints/best` keeps the highest. Under torchrun rank 0 scores the
    whole split on the plain module and sends the score; every rank then joins the best checkpoint
    (it holds every rank's RNG state)."""
    found = None
    if dist.is_main():
        result = evaluate_model(run.net, run.val_set, metric=run.cfg.metric, channels_last=run.channels_last)
        found = {"map": result.map if result.map is not None else 0.0, "label": result.label,
                 "ap": {run.names[c]: (round(v, 6) if v is not None else None) for c, v in result.ap.items()}}
    found = dist.broadcast_json(found)
    score, ap = found["map"], found["ap"]
    mlog.eval(run.step, map=round(score, 6), ap=ap, metric=found["label"])
    progress.scalars("eval", {"map": score}, run.step)
    progress.say(f"step {run.step}: val {found['label']} = {score:.4f}")
    if run.best_map is None or score > run.best_map:
        run.best_map = score
        run.save_best(score)


def _final_outputs(run: DetectRun, log) -> None:
    make_gif(run.dir / "predictions", run.dir / "predictions.gif", fps=3.0)
    write_run_report(run.dir, live=False, log=log)


def _finish(run: DetectRun, folder: RunFolder, status: str, log, stop_reason: str | None = None) -> None:
    rows = read_metrics(folder.metrics, kind="train")
    evals = read_metrics(folder.metrics, kind="eval")
    final = rows[-1] if rows else {}
    summary = folder.write_summary(
        "detect", status, **({"stop_reason": stop_reason} if stop_reason else {}), recipe=run.cfg.recipe,
        data=run.cfg.data, data_source=run.train_set.source, model=run.cfg.model, classes=run.names,
        device=str(run.device), steps=run.step, total_steps=run.total_steps,
        epochs=round(run.step / run.steps_per_epoch, 4), images_seen=run.images_seen,
        seconds=round(run.seconds, 3), images_per_second=round(run.images_seen / max(run.seconds, 1e-9), 2),
        skipped_steps=run.skipped, label_issues=len(_issues(run)),
        pretrain_accuracy=run.pretrain_accuracy,
        final={k: final.get(k) for k in ("loss", "loss_coord", "loss_obj", "loss_noobj", "loss_cls")},
        final_map=evals[-1]["map"] if evals else None, metric=evals[-1]["metric"] if evals else None,
        best_map=run.best_map, outputs=lambda: _final_outputs(run, log))
    if not run.quiet:
        log(f"total training time {run.seconds:.1f} s for {run.step} steps "
            f"({summary['images_per_second']:.0f} images/s)")
