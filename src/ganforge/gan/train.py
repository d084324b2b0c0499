"""`train(cfg, run_dir)`: the GAN training loop, and what it writes into the run folder.

Setup builds a :class:`~ganforge.gan.run.GANRun`; the loop takes its steps (gan/step.py, which
reads like Algorithm 1); maintenance comes after each step under its own comment: non-finite step
faults, the log window, grids, evaluation, checkpoints, signals. The run folder, log, progress,
signals, resume and rollback are the shared plumbing of `ganforge.runs`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from ganforge import distributed as dist
from ganforge.data import DATASETS, FOLDER_PREFIX
from ganforge.errors import DataError, GanforgeError
from ganforge.gan.config import GANConfig
from ganforge.gan.run import GANRun
from ganforge.report import write_run_report
from ganforge.runs import RunFolder, due, finite_or_none, start
from ganforge.runs.clock import Clock, write_summary
from ganforge.speed import Faults
from ganforge.gan.curves import plot_curves
from ganforge.viz import make_gif, save_grid


def train(cfg: GANConfig | None = None, run_dir: str | Path = "runs/default", **options) -> Path:
    """Train a GAN and write the run folder, or continue one (`resume=True`): the shared start and
    resume of `ganforge.runs.start` (see there for the options). Returns the run folder."""
    from ganforge.gan.task import TASK

    return start.train(TASK, cfg, run_dir, **options)


def check_state(cfg: GANConfig, tensors: dict, meta: dict, where: str) -> None:
    """The checkpoint's G and D tensors against the shapes `cfg` builds, on the meta device: a
    config edited to absurd widths is refused naming the tensor, before anything is allocated."""
    from ganforge.checkpoint import check_state_fits, module_state, upgrade_state
    from ganforge.gan.models import build_models

    tensors, _ = upgrade_state(tensors, meta)
    for index, name in enumerate(("G", "D")):
        check_state_fits(lambda: build_models(cfg)[index], module_state(tensors, name), where)


def data_path(cfg: GANConfig) -> Path | None:
    """The folder of images a run trains on (None for a registered dataset)."""
    if cfg.data in DATASETS:
        return None
    path = Path(cfg.data.removeprefix(FOLDER_PREFIX)).expanduser()
    return path if path.is_dir() else None


def loop(run: GANRun, folder: RunFolder, log) -> Path:
    """The GAN's loop: a step (gan/step.py), then its maintenance."""
    cfg, spe = run.cfg, run.steps_per_epoch
    unit_steps = spe if cfg.unit == "epoch" else 1
    faults = Faults()
    t_epoch = time.perf_counter()
    reported = 0  # streamed files found unreadable, as last reported
    with Clock(run, folder, log) as clock:
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
            run.window.add(stats, images)
            done = clock.tick(images)

            # ---- maintenance: faults, logs, grids, evaluation, checkpoints, signals ----
            epoch_end = run.step % spe == 0
            sample_now = _grid_due(run, epoch_end) or (done and run.last_grid != run.step)
            log_now = run.step % cfg.log_every == 0 or done
            eval_now = due(run.step, cfg.eval_every, unit_steps) or (bool(cfg.eval_every) and done)
            milestone = due(run.step, cfg.milestone_every, unit_steps)
            checkpoint_now = due(run.step, cfg.checkpoint_every, unit_steps) or milestone or done
            # A sync-free step's fault flag is read when something below reads the state, not before.
            reads_state = log_now or sample_now or eval_now or checkpoint_now or clock.flag.signum is not None
            if clock.diverging(faults.settle(run.step, ok, now=reads_state)):
                clock.roll_back(finish)
                faults = Faults()
                continue
            if log_now:
                _log_window(run, clock)
                if len(run.unreadable) > reported:
                    reported = len(run.unreadable)
                    first = run.data.files[min(run.unreadable)].relative_to(run.data.folder)
                    clock.warn("unreadable", f"{reported} streamed image file(s) could not be decoded (first: "
                               f"{first}); each was replaced in its batch by the next readable file: check {cfg.data}")
            if cfg.unit == "epoch" and epoch_end:
                clock.progress.say(f"time for epoch {run.step // spe} is {time.perf_counter() - t_epoch:.2f} sec")
                t_epoch = time.perf_counter()
            if sample_now:
                if clock.main:
                    _snapshot(run, clock)
                run.last_grid = run.step
            if eval_now:
                _evaluate(run, clock)
            if checkpoint_now:
                run.save(milestone)
            if clock.stop(done):
                break
    if run.stream is not None:
        run.stream.close()
    return clock.end(finish)


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


def _log_window(run: GANRun, clock: Clock) -> None:
    logged = clock.log_window()
    if logged is None:
        return
    row, means = logged
    clock.progress.scalars("train", {k: row[k] for k in ("d_loss", "g_loss", "d_real", "d_fake", "d_acc",
                                                          "images_per_second")}, run.step)
    _collapse_alarm_accuracy(run, means["d_acc"], clock)
    clock.progress.show(f"step {run.step}/{run.total_steps}  d_loss {means['d_loss']:.4f}  g_loss {means['g_loss']:.4f}  "
                        f"D(x) {means['d_real']:.3f}  D(G(z)) {means['d_fake']:.3f}  acc {100 * means['d_acc']:.1f}%  "
                        f"{row['images_per_second']:.0f} img/s",
                        d=f"{means['d_loss']:.3f}", g=f"{means['g_loss']:.3f}", acc=f"{100 * means['d_acc']:.0f}%")


def _collapse_alarm_accuracy(run: GANRun, d_acc: float, clock: Clock) -> None:
    run.acc_high_windows = run.acc_high_windows + 1 if d_acc >= 0.999 else 0
    if run.acc_high_windows == 5:
        clock.warn("d_acc", f"D accuracy has been 100% for 5 log windows (step {run.step}): "
                   "G gets no useful gradient; try a lower d_lr or loss=ns")


def _diversity(images: torch.Tensor) -> float:
    flat = images.float().flatten(1)
    return float(torch.pdist(flat).mean()) if flat.shape[0] > 1 else 0.0


def _snapshot(run: GANRun, clock: Clock) -> None:
    cfg = run.cfg
    samples = run.fixed_samples()
    name = cfg.sample_name.format(step=run.step, epoch=run.step // run.steps_per_epoch, iteration=run.step - 1)
    save_grid(samples, run.dir / "samples" / f"{name}.png", nrow=cfg.grid_rows)
    run.last_grid = run.step
    write_run_report(run.dir, live=True, log=clock.log)
    # Collapse alarm on the fixed grid: its spread against that of as many real images.
    if run.real_diversity is None:
        run.real_diversity = _diversity(run.real_images(samples.shape[0]))
    ratio = _diversity(samples) / max(run.real_diversity, 1e-9)
    if run.step > 10 * cfg.log_every and ratio < 0.15:
        clock.warn("diversity", f"the fixed-latent grid is {ratio:.0%} as diverse as real data "
                   f"at step {run.step}: possible mode collapse")


def _evaluate(run: GANRun, clock: Clock) -> None:
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
            clock.warn("eval", f"evaluation skipped: {err}")
        return
    scores = dist.broadcast_json({k: result[k] for k in ("fid", "kid_mean", "kid_std", "precision", "recall",
                                                         "inception_score") if k in result}
                                 if dist.is_main() else None)
    clock.mlog.eval(run.step, **scores)
    clock.progress.scalars("eval", scores, run.step)
    if scores.get("fid") is not None and scores["fid"] < run.best:
        run.best = scores["fid"]
        run.save_best(scores["fid"], "fid")


def _final_outputs(run: GANRun, folder: RunFolder, log) -> None:
    make_gif(run.dir / "samples", run.dir / "progress.gif")
    if run.cfg.gif_name:
        shutil.copyfile(run.dir / "progress.gif", run.dir / run.cfg.gif_name)
    plot_curves(folder.metrics, run.dir / "losses.png")
    write_run_report(run.dir, live=False, log=log)


def finish(run: GANRun, folder: RunFolder, status: str, log, stop_reason: str | None = None) -> None:
    """summary.json, then the GIF, the loss curves and the final report."""
    write_summary(run, folder, "gan", status, log, stop_reason=stop_reason,
                  final=("d_loss", "g_loss", "d_real", "d_fake", "d_acc"),
                  outputs=lambda: _final_outputs(run, folder, log), data_source=run.data_source, speed=run.speed,
                  unreadable_files=len(run.unreadable), best_fid=finite_or_none(run.best))
