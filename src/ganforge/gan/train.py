"""`train(cfg, run_dir)`: the GAN training loop, and what it writes into the run folder.

Setup builds a :class:`~ganforge.gan.run.GANRun`; the loop takes its steps (gan/step.py, which
reads like Algorithm 1); maintenance comes after each step under its own comment: non-finite step
faults, the log window, grids, evaluation, checkpoints, signals. The run folder, log, progress,
signals, resume and rollback are the shared plumbing of `ganforge.runs`.
"""

from __future__ import annotations

import shlex
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch

from ganforge import distributed as dist
from ganforge.checkpoint import save_checkpoint
from ganforge.data import DATASETS, FOLDER_PREFIX
from ganforge.errors import ConfigError, DataError, GanforgeError
from ganforge.gan.config import GANConfig
from ganforge.gan.run import GANRun
from ganforge.io import MetricsLog, read_metrics
from ganforge.report import write_run_report
from ganforge.runs import (NoLog, Progress, RunFolder, SignalFlag, TrainingDiverged, TrainingInterrupted, Window, due,
                           finite_or_none, resume_config, rollback_or_stop, silent, warn, continue_resumed,
                           with_budget)
from ganforge.speed import Faults, buffers_finite
from ganforge.speed.cpu import ThreadGovernor
from ganforge.viz import make_gif, plot_curves, save_grid


def train(cfg: GANConfig | None = None, run_dir: str | Path = "runs/default", *, resume: bool = False,
          force: bool = False, steps: int | None = None, epochs: int | None = None,
          quiet: bool = False, log=print, resume_overrides: list[str] | None = None) -> Path:
    """Train a GAN and write the run folder. With `resume=True`, continue `run_dir` exactly where its
    last checkpoint left it (`steps`/`epochs` then count the whole run; `resume_overrides` may change
    the keys declared `resume=True`). Returns the run folder.

    Under torchrun every rank calls it: rank 0 alone touches the run folder (lock, config, log,
    grids, report, checkpoints, summary), and the others learn from it whether it refused."""
    dist.init(_device_hint(cfg))
    if not dist.is_main():
        log = silent
    folder = RunFolder(run_dir)
    try:
        if resume:
            dist.main_decides(folder.open_existing)  # locked before anything is read: one writer per run folder
            return _resume(folder, steps, epochs, quiet, log, resume_overrides)
        if cfg is None:
            raise ConfigError("give a recipe or --resume RUN_DIR")
        cfg = with_budget(cfg, steps, epochs)
        protect = _data_folders(cfg)
        dist.main_decides(lambda: folder.check_new(force, protect))
        run = GANRun(_absolute_data(cfg), folder.path, quiet=quiet)

        def create() -> None:
            folder.prepare(force, protect)
            folder.write_config(run.cfg)

        dist.main_decides(create)
        return _loop(run, folder, log)
    finally:
        folder.release()


def _device_hint(cfg: GANConfig | None) -> torch.device:
    """The device the process group is set up for (nccl too when it is CUDA)."""
    from ganforge.device import resolve_device

    try:
        return resolve_device(cfg.device if cfg is not None else "auto")
    except GanforgeError:
        return torch.device("cpu")


def _resume(folder: RunFolder, steps, epochs, quiet: bool, log, overrides) -> Path:
    # Rank 0 reads the checkpoint and sends it to the others: only it needs the run folder.
    got = dist.main_decides(lambda: resume_config(folder.path, GANConfig, overrides, log))
    cfg, tensors, meta, changed = got if got is not None else (None, None, None, None)
    shared = dist.broadcast_json({"config": cfg.to_dict(), "changed": changed} if dist.is_main() else None)
    cfg, changed = GANConfig.from_dict(shared["config"]), shared["changed"]
    tensors, meta = dist.broadcast_state(tensors, meta)
    cfg = with_budget(cfg, steps, epochs)
    run = GANRun(cfg, folder.path, quiet=quiet)
    run.load_state(tensors, meta)
    saved_world = int(meta.get("world_size", 1))
    if saved_world != run.world:
        if dist.is_main():
            warn(f"this run was checkpointed by {saved_world} process(es) and continues on {run.world}: "
                 "training goes on from the checkpoint, but not bit for bit as it would have on "
                 f"{saved_world} (reductions and per-process random streams differ)", quiet=False)
        changed = {**changed, "world_size": run.world}
    run.set_learning_rates({name: changed[key] for name, key in run.lr_keys.items() if key in changed})
    return continue_resumed(run, folder, cfg, changed, log, _finish, _loop)


def _data_folders(cfg: GANConfig) -> tuple[Path, ...]:
    """The folder of images a run trains on, which `--force` must never delete."""
    if cfg.data in DATASETS:
        return ()
    path = Path(cfg.data.removeprefix(FOLDER_PREFIX)).expanduser()
    return (path,) if path.exists() else ()


def _absolute_data(cfg: GANConfig) -> GANConfig:
    """A folder of images is saved by its absolute path, so the run resumes from anywhere."""
    if cfg.data in DATASETS:
        return cfg
    path = Path(cfg.data.removeprefix(FOLDER_PREFIX)).expanduser()
    return replace(cfg, data=str(path.resolve())) if path.is_dir() else cfg


def _loop(run: GANRun, folder: RunFolder, log) -> Path:
    cfg, spe = run.cfg, run.steps_per_epoch
    unit_steps = spe if cfg.unit == "epoch" else 1
    main = dist.is_main()
    progress = Progress(folder.path, run.total_steps, run.step, run.quiet, log, write=main)
    faults = Faults()
    t_epoch = time.perf_counter()
    interrupted: int | None = None
    reported = 0  # streamed files found unreadable, as last reported
    with SignalFlag() as flag, (MetricsLog(folder.metrics) if main else NoLog()) as mlog:
        governor = ThreadGovernor(cfg.threads, run.device, mlog, log, run.step)
        t0, base_seconds = time.perf_counter(), run.seconds
        while run.step < run.total_steps:
            try:
                stats, ok, images = run.train_step()
            except DataError as err:
                # A streamed batch could not be read. Nothing of this step has run yet, so the state
                # is the last finished step's: keep it (when no step's fault flag is still unread).
                if run.step > 0 and not faults.pending:
                    run.save()
                    raise DataError(f"{err}; the run is checkpointed at step {run.step}: continue "
                                    "with --resume") from None
                raise
            run.step += 1
            run.images_seen += images
            run.seconds = base_seconds + time.perf_counter() - t0
            run.window.add(stats, images)
            progress.update()

            # ---- maintenance: faults, logs, grids, evaluation, checkpoints, signals ----
            # max_seconds bounds this invocation's training time, so a resumed run gets it anew.
            timed_out = 0 < cfg.max_seconds <= time.perf_counter() - t0
            # Every rank stops at the same step boundary: a signal or a time-out on any of them.
            timed_out = flag.agree(timed_out)
            done = run.step >= run.total_steps or timed_out
            epoch_end = run.step % spe == 0
            sample_now = _grid_due(run, epoch_end) or (done and run.last_grid != run.step)
            log_now = run.step % cfg.log_every == 0 or done
            eval_now = due(run.step, cfg.eval_every, unit_steps) or (bool(cfg.eval_every) and done)
            milestone = due(run.step, cfg.milestone_every, unit_steps)
            checkpoint_now = due(run.step, cfg.checkpoint_every, unit_steps) or milestone or done
            # A sync-free step's fault flag is read when something below reads the state, not before.
            reads_state = log_now or sample_now or eval_now or checkpoint_now or flag.signum is not None
            if _diverging(run, faults.settle(run.step, ok, now=reads_state), mlog):
                try:
                    rollback_or_stop(run, log)
                except TrainingDiverged:
                    mlog.event(run.step, "diverged", skipped_total=run.skipped)
                    mlog.close()
                    progress.close()
                    if main:
                        _finish(run, folder, "diverged", log)
                    raise
                mlog.truncate_after(run.step, partial=run.step % cfg.log_every != 0)
                mlog.event(run.step, "rolled_back", rollbacks=run.rollbacks[run.step])
                base_seconds, t0 = run.seconds, time.perf_counter()
                faults = Faults()
                continue
            if log_now:
                _log_window(run, run.window, mlog, progress, log)
                governor.check(run.step, run.window)
                if run.step % cfg.log_every == 0:  # a stop between log steps keeps its partial window
                    run.window = Window()
                if len(run.unreadable) > reported:
                    reported = len(run.unreadable)
                    first = run.data.files[min(run.unreadable)].relative_to(run.data.folder)
                    _warn(run, mlog, "unreadable", f"{reported} streamed image file(s) could not be "
                          f"decoded (first: {first}); each was replaced in its batch by the next "
                          f"readable file: check {cfg.data}", log)
            if cfg.unit == "epoch" and epoch_end:
                progress.say(f"time for epoch {run.step // spe} is {time.perf_counter() - t_epoch:.2f} sec")
                t_epoch = time.perf_counter()
            if sample_now:
                if main:
                    _snapshot(run, mlog, log)
                run.last_grid = run.step
            if eval_now:
                _evaluate(run, mlog, progress, log)
            if checkpoint_now:
                run.save(milestone)
            if flag.signum is not None and not done:
                run.save()
                interrupted = flag.signum
                break
            if done:
                break  # the step budget or max_seconds is reached
    progress.close()
    if run.stream is not None:
        run.stream.close()
    stopped = interrupted is not None or run.step < run.total_steps
    if main:
        _finish(run, folder, "stopped" if stopped else "finished", log,
                stop_reason="signal" if interrupted is not None else "max_seconds" if stopped else None)
    dist.barrier()
    if interrupted is None and stopped:
        log(f"stopped after max_seconds={cfg.max_seconds:g} at step {run.step} of {run.total_steps} "
            f"(checkpoint saved): continue with "
            f"`{dist.relaunch('ganforge train --resume')} {shlex.quote(str(run.dir))}`")
    if interrupted is not None:
        raise TrainingInterrupted(
            f"stopped by signal {interrupted} at step {run.step}: checkpoint saved; continue with "
            f"`{dist.relaunch('ganforge train --resume')} {shlex.quote(str(run.dir))}`", flag.exit_code())
    return run.dir


def _grid_due(run: GANRun, epoch_end: bool) -> bool:
    """Whether the fixed-latent grid is due after this step. Grids fall where the counter the
    file name shows is a multiple of `sample_every`: `{iteration}` counts from 0, as the sources'
    loops do (img-0 after the first update), `{step}` from 1 (step_000100 after 100 steps, plus the
    first step); in epoch units, at the end of every sample_every-th epoch. A grid right after the
    one a stop wrote (a resumed run's first step) would repeat it, so it is skipped."""
    cfg = run.cfg
    if cfg.unit == "epoch":
        due_now = epoch_end and (run.step // run.steps_per_epoch) % cfg.sample_every == 0
    elif "{iteration" in cfg.sample_name:
        due_now = (run.step - 1) % cfg.sample_every == 0
    else:
        due_now = run.step % cfg.sample_every == 0 or run.step == 1
    return due_now and run.last_grid != run.step - 1


def _diverging(run: GANRun, settled: list[tuple[int, bool]], mlog: MetricsLog) -> bool:
    """Count skipped steps; True when too many in a row (or BatchNorm statistics went non-finite)."""
    for at, step_ok in settled:
        if step_ok:
            run.consecutive_skips = 0
            continue
        run.skipped += 1
        run.consecutive_skips += 1
        mlog.event(at, "skipped_nonfinite_step", skipped_total=run.skipped)
        if run.consecutive_skips >= run.cfg.max_skips or not dist.all_true(buffers_finite(run.G, run.D)):
            return True
    return False


def _log_window(run: GANRun, window: Window, mlog: MetricsLog, progress: Progress, log) -> None:
    if window.count == 0:
        return
    # The means of each rank's part, averaged: the global batch's means (the parts are equal).
    means = {k: float(v) / max(window.count, 1) for k, v in dist.mean_across(window.sums).items()}
    if not dist.is_main():
        return
    row = mlog.train(run.step, epoch=round(run.step / run.steps_per_epoch, 4), images_seen=run.images_seen,
                     **{k: round(v, 6) for k, v in means.items()},
                     images_per_second=round(window.images_per_second(), 2), seconds=round(run.seconds, 3))
    progress.scalars("train", {k: row[k] for k in ("d_loss", "g_loss", "d_real", "d_fake", "d_acc",
                                                    "images_per_second")}, run.step)
    _collapse_alarm_accuracy(run, means["d_acc"], mlog, log)
    progress.show(f"step {run.step}/{run.total_steps}  d_loss {means['d_loss']:.4f}  g_loss {means['g_loss']:.4f}  "
                  f"D(x) {means['d_real']:.3f}  D(G(z)) {means['d_fake']:.3f}  acc {100 * means['d_acc']:.1f}%  "
                  f"{row['images_per_second']:.0f} img/s",
                  d=f"{means['d_loss']:.3f}", g=f"{means['g_loss']:.3f}", acc=f"{100 * means['d_acc']:.0f}%")


def _warn(run: GANRun, mlog: MetricsLog, key: str, message: str, log) -> None:
    mlog.warning(run.step, message, alarm=key)
    if key not in run.warned:
        run.warned.add(key)
        log(f"warning: {message}")


def _collapse_alarm_accuracy(run: GANRun, d_acc: float, mlog: MetricsLog, log) -> None:
    run.acc_high_windows = run.acc_high_windows + 1 if d_acc >= 0.999 else 0
    if run.acc_high_windows == 5:
        _warn(run, mlog, "d_acc", f"D accuracy has been 100% for 5 log windows (step {run.step}): "
              "G gets no useful gradient; try a lower d_lr or loss=ns", log)


def _diversity(images: torch.Tensor) -> float:
    flat = images.float().flatten(1)
    return float(torch.pdist(flat).mean()) if flat.shape[0] > 1 else 0.0


def _snapshot(run: GANRun, mlog: MetricsLog, log) -> None:
    cfg = run.cfg
    samples = run.fixed_samples()
    name = cfg.sample_name.format(step=run.step, epoch=run.step // run.steps_per_epoch, iteration=run.step - 1)
    save_grid(samples, run.dir / "samples" / f"{name}.png", nrow=cfg.grid_rows)
    run.last_grid = run.step
    write_run_report(run.dir, live=True, log=log)
    # Collapse alarm on the fixed grid: its spread against that of as many real images.
    if run.real_diversity is None:
        run.real_diversity = _diversity(run.real_images(samples.shape[0]))
    ratio = _diversity(samples) / max(run.real_diversity, 1e-9)
    if run.step > 10 * cfg.log_every and ratio < 0.15:
        _warn(run, mlog, "diversity", f"the fixed-latent grid is {ratio:.0%} as diverse as real data "
              f"at step {run.step}: possible mode collapse", log)


def _evaluate(run: GANRun, mlog: MetricsLog, progress: Progress, log) -> None:
    """In-training FID & co.; keeps `checkpoints/best` by FID. Under torchrun each rank generates
    and extracts the features of its share of the images; rank 0 gathers and scores."""
    from ganforge.gan.latents import LatentSpec
    from ganforge.gan.sampling import generate_latent
    from ganforge.metrics.evaluate import evaluate_images

    cfg = run.cfg
    latent = run.latents.fixed(cfg.eval_n, cfg.seed + 3)
    part = dist.shard_range(cfg.eval_n)
    fake = generate_latent(run.sample_model(), LatentSpec.chunk(latent, part.start, part.stop, "cpu"),
                           device=run.device, pixel_range=cfg.pixel_range)
    try:
        result = evaluate_images(fake, cfg.data, seed=cfg.seed, quiet=True,
                                 folder_shape=(cfg.channels, cfg.image_size), sharded=True)
    except GanforgeError as err:
        if dist.is_main():
            _warn(run, mlog, "eval", f"evaluation skipped: {err}", log)
        return
    scores = dist.broadcast_json({k: result[k] for k in ("fid", "kid_mean", "kid_std", "precision", "recall",
                                                         "inception_score") if k in result}
                                 if dist.is_main() else None)
    mlog.eval(run.step, **scores)
    progress.scalars("eval", scores, run.step)
    if scores.get("fid") is not None and scores["fid"] < run.best:
        run.best = scores["fid"]
        tensors, meta = run.state()
        meta["fid"] = scores["fid"]
        dist.main_decides(lambda: save_checkpoint(run.dir / "checkpoints", "best", tensors, meta))


def _final_outputs(run: GANRun, folder: RunFolder, log) -> None:
    make_gif(run.dir / "samples", run.dir / "progress.gif")
    if run.cfg.gif_name:
        shutil.copyfile(run.dir / "progress.gif", run.dir / run.cfg.gif_name)
    plot_curves(folder.metrics, run.dir / "losses.png")
    write_run_report(run.dir, live=False, log=log)


def _finish(run: GANRun, folder: RunFolder, status: str, log, stop_reason: str | None = None) -> None:
    rows = read_metrics(folder.metrics, kind="train")
    final = rows[-1] if rows else {}
    summary = folder.write_summary(
        "gan", status, **({"stop_reason": stop_reason} if stop_reason else {}), recipe=run.cfg.recipe, data=run.cfg.data, data_source=run.data_source,
        device=str(run.device), speed=run.speed, steps=run.step, total_steps=run.total_steps,
        epochs=round(run.step / run.steps_per_epoch, 4), images_seen=run.images_seen,
        seconds=round(run.seconds, 3), images_per_second=round(run.images_seen / max(run.seconds, 1e-9), 2),
        skipped_steps=run.skipped, unreadable_files=len(run.unreadable),
        final={k: final.get(k) for k in ("d_loss", "g_loss", "d_real", "d_fake", "d_acc")},
        best_fid=finite_or_none(run.best), outputs=lambda: _final_outputs(run, folder, log))
    if not run.quiet:
        log(f"total training time {run.seconds:.1f} s for {run.step} steps "
            f"({summary['images_per_second']:.0f} images/s)")
