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

from pathlib import Path

from ganforge import distributed as dist
from ganforge.checkpoint import check_state_fits, module_state
from ganforge.detect.config import DetectConfig
from ganforge.detect.data import LabelIssues
from ganforge.detect.datasets import DETECTION_DATASETS, shared_images
from ganforge.detect.evaluate import evaluate_model
from ganforge.detect.pretrain import run_pretraining
from ganforge.detect.run import DetectRun, net_builder
from ganforge.detect.step import train_step
from ganforge.io import read_metrics
from ganforge.report import write_run_report
from ganforge.runs import RunFolder, due, start
from ganforge.runs.clock import Clock, write_summary
from ganforge.viz import make_gif, save_grid


def train(cfg: DetectConfig | None = None, run_dir: str | Path = "runs/detect", **options) -> Path:
    """Train a detector and write the run folder, or continue one (`resume=True`): the shared start
    and resume of `ganforge.runs.start` (see there for the options). Returns the run folder."""
    from ganforge.detect.task import TASK

    return start.train(TASK, cfg, run_dir, **options)


def check_state(cfg: DetectConfig, tensors: dict, meta: dict, where: str) -> None:
    """The checkpoint's net tensors against the shapes `cfg` builds, on the meta device."""
    check_state_fits(net_builder(cfg, len(meta.get("names") or [])), module_state(tensors, "net"), where)


def data_path(cfg: DetectConfig) -> Path | None:
    """The dataset file or folder a run trains on (None for a registered dataset)."""
    if cfg.data in DETECTION_DATASETS:
        return None
    path = Path(cfg.data).expanduser()
    return path if path.exists() else None


# ---- the loop ------------------------------------------------------------------------------------------

def loop(run: DetectRun, folder: RunFolder, log) -> Path:
    """The detector's loop: forward, equation 3, backward, an optimizer step; then maintenance."""
    cfg = run.cfg
    with Clock(run, folder, log) as clock:
        _report_issues(run, clock)
        _report_val_overlap(run, clock)
        _report_flip(run, clock)
        if not run.pretrained:
            # max_seconds bounds this invocation, the pretraining stage included (the clock's start).
            if run_pretraining(run, clock.mlog, clock.flag, clock.started, log):
                clock.at = f"pretraining step {run.pretraining.step} of {cfg.pretrain_steps}"
            clock.interrupted = clock.flag.signum
            clock.restart()
        clock.hush = clock.interrupted is not None or clock.at is not None  # no detection stage to show
        batches = iter(run.loader(cfg.workers)) if not clock.hush else iter(())
        while (batch := next(batches, None)) is not None:
            images, grid, found = batch
            for where, reason in found:  # from a worker's copy of the set: recorded here too
                run.train_set.issues.add(where, reason)
            stats, ok = train_step(run, (images, grid))
            if ok:
                run.window.add(stats, cfg.batch_size)
            done = clock.tick(cfg.batch_size)

            # ---- maintenance: faults, logs, pictures, evaluation, checkpoints, signals ----
            if clock.diverging([(run.step, ok)]):
                clock.roll_back(finish)
                batches = iter(run.loader(cfg.workers))  # the batches after the checkpoint's step
                continue
            if run.step % cfg.log_every == 0 or done:
                _log_window(run, clock)
                _report_issues(run, clock)
            if due(run.step, cfg.predict_every) or run.step == 1 or (done and run.last_prediction != run.step):
                if clock.main:
                    _snapshot(run, log)
                run.last_prediction = run.step
            if due(run.step, cfg.eval_every) or run.step >= run.total_steps:
                _evaluate(run, clock)
            if clock.save_and_stop(done):  # the rolling checkpoint when due; a signal or the budget
                break
    return clock.end(finish)


def _issues(run: DetectRun) -> LabelIssues:
    """The problems found in the train and val splits so far (one list when they share it)."""
    issues = LabelIssues()
    issues.extend(run.train_set.issues)
    if run.val_set.issues is not run.train_set.issues:
        issues.extend(run.val_set.issues)
    return issues


def _report_issues(run: DetectRun, clock: Clock) -> None:
    """Bad labels and images of the train and val splits: one warning line (file names included)
    when new ones are found."""
    issues = _issues(run)
    if len(issues) <= run.issues_reported:
        return
    run.issues_reported = len(issues)
    files = sorted({where.rsplit(":", 1)[0] for where, _ in issues.items})
    shown = ", ".join(Path(f).name for f in files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
    clock.warn("labels", f"{run.cfg.data} train and val splits: {issues.summary()}; files: {shown}; training "
               "and its mAP go on without them", files=files)


def _report_val_overlap(run: DetectRun, clock: Clock) -> None:
    """A val split that reuses training images measures fit, not held-out accuracy: say so once."""
    shared = 0 if run.step or run.resumed else shared_images(run.train_set, run.val_set)
    if shared:
        clock.warn("val_overlap", f"{shared} of the {len(run.val_set)} val images of {run.cfg.data} are training "
              "images, so its mAP and best checkpoint measure fit, not held-out accuracy: give a val split of "
              "other images (for a COCO JSON, the file with 'train' in its name replaced by 'val' beside it)")


def _report_flip(run: DetectRun, clock: Clock) -> None:
    """flip=on where the dataset says a mirror image is not one of its objects (digits): say so once."""
    if run.cfg.flip == "on" and not run.train_set.flip and not run.step and not run.resumed:
        clock.warn("flip", f"flip=on mirrors the images of {run.cfg.data}, whose objects change meaning in a "
                   "mirror (a mirrored 2 is not a 2): use flip=auto unless that is what you want")


def _log_window(run: DetectRun, clock: Clock) -> None:
    lr = run.scheduler.get_last_lr()[0]
    logged = clock.log_window(lr=lr)
    if logged is None:
        return
    row, means = logged
    clock.progress.scalars("train", {**{k: row[k] for k in means}, "lr": lr,
                                     "images_per_second": row["images_per_second"]}, run.step)
    clock.progress.show(f"step {run.step}/{run.total_steps}  loss {means['loss']:.4f}  coord {means['loss_coord']:.3f}  "
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


def _evaluate(run: DetectRun, clock: Clock) -> None:
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
    clock.mlog.eval(run.step, map=round(score, 6), ap=ap, metric=found["label"])
    clock.progress.scalars("eval", {"map": score}, run.step)
    clock.progress.say(f"step {run.step}: val {found['label']} = {score:.4f}")
    if run.best_map is None or score > run.best_map:
        run.best_map = score
        run.save_best(score, "map")


def _final_outputs(run: DetectRun, log) -> None:
    make_gif(run.dir / "predictions", run.dir / "predictions.gif", fps=3.0)
    write_run_report(run.dir, live=False, log=log)


def finish(run: DetectRun, folder: RunFolder, status: str, log, stop_reason: str | None = None) -> None:
    """summary.json, then the predictions GIF and the final report."""
    evals = read_metrics(folder.metrics, kind="eval")
    write_summary(run, folder, "detect", status, log, stop_reason=stop_reason,
                  final=("loss", "loss_coord", "loss_obj", "loss_noobj", "loss_cls"),
                  outputs=lambda: _final_outputs(run, log), data_source=run.train_set.source, model=run.cfg.model,
                  classes=run.names, label_issues=len(_issues(run)), pretrain_accuracy=run.pretrain_accuracy,
                  final_map=evals[-1]["map"] if evals else None, metric=evals[-1]["metric"] if evals else None,
                  best_map=run.best_map)
