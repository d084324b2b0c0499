"""`train(cfg, run_dir)`: the GAN training loop, and the run folder it writes.

The loop is written the way the algorithm reads:
  (1) update D: maximise log D(x) + log(1 - D(G(z)))     [k times per G step]
  (2) update G: minimise the chosen G loss through a frozen D
or, for the TensorFlow tutorial, one forward pass whose two losses update both networks at once.
Logging, snapshots, checkpoints and evaluation come after the step, under their own comment.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from . import __version__, losses
from .accel import (CompiledStep, GraphedStep, StepGuard, adopt_implementation, autocast, channels_last,
                    cores, fast_dropout, keep_freed_memory, optimizer_options, resolve_device,
                    resolve_speed, set_backends, set_threads, to_format)
from .checkpoint import (capture_rng, list_checkpoints, load_latest, pack_optimizer, restore_rng,
                         save_checkpoint, unpack_optimizer)
from .config import TrainConfig, apply_overrides, from_dict, validate
from .data import DATASETS, FOLDER_PREFIX, BatchSampler, load_dataset
from .data.stream import StreamBatches, default_workers
from .ema import make_ema, update_ema
from .errors import CheckpointError, ConfigError, DataError, GanforgeError
from .models import build_models
from .viz import atomic_write_bytes, make_gif, plot_curves, read_metrics, save_grid, to_uint8

Stats = dict[str, torch.Tensor]  # a step's losses and D statistics, on the device
Flag = bool | torch.Tensor  # a step's "was taken" flag: host bool, or device bool when sync-free

MAX_ROLLBACKS = 3  # rollbacks to one checkpoint (lrs lowered each time) before the run stops

# Documented exit codes (see README): 128 + signal number, as shells report them.
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
EXIT_DIVERGED = 3


class TrainingInterrupted(GanforgeError):
    """SIGINT/SIGTERM: a checkpoint was written at the step boundary; `--resume` continues."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class TrainingDiverged(GanforgeError):
    exit_code = EXIT_DIVERGED


# ---- small pieces ------------------------------------------------------------------------------

def build_optimizer(name: str, params, lr: float, cfg: TrainConfig, **impl) -> torch.optim.Optimizer:
    """The named optimizer; `impl` picks its implementation (fused, foreach, capturable), not its maths."""
    params = list(params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.opt_eps, **impl)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=cfg.rho, eps=cfg.opt_eps, **impl)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, **impl)
    raise ConfigError(f"unknown optimizer {name!r}")


def total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    return cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch


@contextmanager
def frozen(module: nn.Module, bn_eval: bool) -> Iterator[None]:
    """Freeze a network for the other's phase. Keras runs a frozen model's BatchNorm in inference
    mode; `bn_eval` reproduces that."""
    module.requires_grad_(False)
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if bn_eval:
        for m in norms:
            m.eval()
    try:
        yield
    finally:
        module.requires_grad_(True)
        for m in norms:
            m.train()


@contextmanager
def inference(module: nn.Module, enabled: bool) -> Iterator[None]:
    """Run `module` in eval mode (Keras `predict`) when enabled."""
    if enabled:
        module.eval()
    try:
        yield
    finally:
        module.train()


class Faults:
    """Which steps were skipped as non-finite. A host-checked step's flag is known at once; a
    sync-free step's is a device tensor, kept pending until the loop asks (one read for all), so
    the hot loop never waits for the GPU."""

    def __init__(self) -> None:
        self.pending: list[tuple[int, bool | torch.Tensor]] = []

    def settle(self, step: int, ok: bool | torch.Tensor, now: bool) -> list[tuple[int, bool]]:
        """Record step `step`'s flag; return (step, ok) for every flag read now, in step order."""
        self.pending.append((step, ok))
        if isinstance(ok, torch.Tensor) and not now:
            return []
        flags = [f for _, f in self.pending if isinstance(f, torch.Tensor)]
        read = iter(torch.stack(flags).tolist() if flags else [])  # the one host sync
        out = [(s, bool(next(read)) if isinstance(f, torch.Tensor) else f) for s, f in self.pending]
        self.pending = []
        return out


def buffers_finite(*modules: nn.Module) -> bool:
    return all(bool(torch.isfinite(b).all()) for m in modules for b in m.buffers()
               if b.is_floating_point())


@dataclass
class Window:
    """Per-log-window sums of step statistics, kept on the device so the loop never syncs."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    count: int = 0
    images: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, stats: dict[str, torch.Tensor], images: int) -> None:
        for key, value in stats.items():
            value = value.detach().float()
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.count += 1
        self.images += images

    def means(self) -> dict[str, float]:
        return {k: float(v) / max(self.count, 1) for k, v in self.sums.items()}


# ---- the run -----------------------------------------------------------------------------------

class Run:
    """Everything one training run holds: models, optimizers, data, RNG, counters, outputs."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, quiet: bool = False, dataset=None) -> None:
        """`dataset` (an ImageDataset) replaces loading `cfg.data`, e.g. for benchmarks."""
        self.cfg = validate(cfg)
        self.dir = run_dir
        self.quiet = quiet
        self.device = resolve_device(cfg.device)
        self.features = resolve_speed(cfg.speed, self.device, cfg.model)
        self.threads = set_threads(cfg.threads) if self.device.type == "cpu" else torch.get_num_threads()
        if self.device.type == "cpu":
            keep_freed_memory()
        set_backends(self.features, self.device)
        torch.manual_seed(cfg.seed)

        # Data: decoded once, kept on the training device as uint8; or, for a folder too big for
        # that, decoded by DataLoader workers ahead of the step (same batches either way).
        data = dataset if dataset is not None else load_dataset(
            cfg.data, split="train", image_size=cfg.image_size, channels=cfg.channels,
            merge_test=cfg.merge_test, quiet=quiet,
            stream={"auto": None, "memory": False, "stream": True}[cfg.data_mode])
        if len(data) < 2:
            raise ConfigError(f"dataset {cfg.data!r} has {len(data)} image(s): need at least 2")
        if cfg.batch_size > len(data) and cfg.sampling == "epoch" and not quiet:
            print(f"warning: batch_size {cfg.batch_size} is larger than {cfg.data} ({len(data)} images): "
                  f"every batch holds {len(data)}", file=sys.stderr)
        self.data, self.data_source = data, data.source
        # Indices are drawn on the host and sent over without a sync (see `batch_indices`).
        self.sampler = BatchSampler(len(data), cfg.batch_size, mode=cfg.sampling,
                                    drop_last=cfg.drop_last, seed=cfg.seed, device="cpu")
        self.images: torch.Tensor | None = None
        self.stream: StreamBatches | None = None
        self.unreadable: set[int] = set()  # streamed files that failed to decode (stood in for)
        if data.in_memory:
            self.images = data.images.to(self.device)
        else:
            workers = cfg.workers or default_workers(cores())
            if workers > 4 * cores():
                raise ConfigError(f"workers={workers} is more than 4 per core ({cores()} cores): each "
                                  "worker is a process; use at most the number of cores")
            self.stream = StreamBatches(data, self.sampler, workers=workers,
                                        pin_memory=self.device.type == "cuda")
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = total_steps(cfg, self.steps_per_epoch)

        self.G, self.D = build_models(cfg)
        self.G.to(self.device)
        self.D.to(self.device)
        channels_last(self.G, self.D, enabled=self.features.channels_last, device=self.device)
        fast_dropout(self.G, self.D, enabled=self.features.fast_dropout)
        self.impl_g = optimizer_options(cfg.g_optimizer, self.features, self.device)
        self.impl_d = optimizer_options(cfg.d_optimizer, self.features, self.device)
        self.opt_g = build_optimizer(cfg.g_optimizer, self.G.parameters(), cfg.g_lr, cfg, **self.impl_g)
        self.opt_d = build_optimizer(cfg.d_optimizer, self.D.parameters(), cfg.d_lr, cfg, **self.impl_d)
        self.ema = make_ema(self.G, cfg.ema)
        # z for training comes from its own generator so that data order, dropout and noise are
        # each reproducible and restorable.
        self.noise = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        fixed = torch.Generator().manual_seed(cfg.seed + 2)
        self.fixed_z = torch.randn(cfg.grid_rows ** 2, cfg.latent_dim, generator=fixed).to(self.device)
        # The non-finite guard, and the step as the loop calls it: compiled and/or captured when on.
        self.guard = StepGuard(sync_free=self.features.async_guard)
        self.compiled = CompiledStep(self.step_body, self.features.compile, self._copy_state)
        self.graphed = GraphedStep(self.compiled, self.features.cudagraphs, self._copy_state)

        self.step = 0
        self.images_seen = 0
        self.seconds = 0.0
        self.skipped = 0
        self.consecutive_skips = 0
        self.rollbacks: dict[int, int] = {}  # checkpoint step -> times rolled back to it
        self.best_fid = math.inf
        self.warned: set[str] = set()
        self.acc_high_windows = 0
        self.real_diversity: float | None = None

    @property
    def speed(self) -> str:
        """The speed features in effect: a compile or capture that fell back drops out, and so does
        a feature with nothing to act on (autotune off CUDA, fast_dropout in a model without dropout)."""
        off = {"compile": self.compiled.failed, "cudagraphs": self.graphed.failed,
               "autotune": self.device.type != "cuda",
               "fast_dropout": not any(isinstance(m, nn.Dropout) for net in (self.G, self.D)
                                       for m in net.modules())}
        return "+".join(f for f in self.features.name.split("+") if not off.get(f)) or "eager"

    def amp(self):
        """bf16 autocast for a forward pass when that feature is on (a null context otherwise)."""
        return autocast(self.device, self.features.bf16)

    # -- data and noise --
    def batch_indices(self, draw: int) -> torch.Tensor:
        """The `draw`-th batch on the training device: its dataset indices (int64), or for a streamed
        folder its uint8 images. Indices are drawn on the host, images decoded by the workers; a
        CUDA copy goes from pinned memory without waiting for the GPU."""
        if self.stream is not None:
            batch, unreadable = self.stream.get(draw)
            self.unreadable |= unreadable
        else:
            batch = self.sampler.indices(draw)
            if self.device.type == "cuda":
                batch = batch.pin_memory()
        return batch.to(self.device, non_blocking=True)

    def real_images(self, n: int) -> torch.Tensor:
        """n real images (a fixed random subset), uint8 on the CPU: for grids and alarms."""
        idx = torch.randperm(len(self.data), generator=torch.Generator().manual_seed(0))[:n]
        if self.images is None:
            return self.data.decode(idx.tolist())
        return self.images[idx.to(self.images.device)].cpu()

    def pixels(self, idx: torch.Tensor) -> torch.Tensor:
        """Real images `idx` (indices into the resident dataset, or the uint8 images themselves),
        gathered and normalised on the device to the recipe's pixel range."""
        x = (idx if idx.dtype == torch.uint8 else self.images[idx]).float()
        x = x / 127.5 - 1.0 if self.cfg.pixel_range == "pm1" else x / 255.0
        return to_format(x, self.features.channels_last)

    def real_batch(self, draw: int) -> torch.Tensor:
        """The `draw`-th batch of real images, as floats in the recipe's pixel range."""
        return self.pixels(self.batch_indices(draw))

    def z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg.latent_dim, device=self.device, generator=self.noise)

    # -- guarded optimizer step --
    def apply(self, opts: list[torch.optim.Optimizer], objectives: list[torch.Tensor], params) -> Flag:
        """Step `opts` unless a loss or a gradient is non-finite; then the step is skipped. The
        flag is a bool, or a device tensor when the guard is sync-free."""
        return self.guard.step(opts, objectives, list(params))

    # -- (1)+(2): one training step --
    def train_step(self) -> tuple[Stats, Flag, int]:
        """One G step and its D steps: returns (stats, ok, real images used)."""
        cfg = self.cfg
        # The host's part: which images and which noise. The step body then only sees device
        # tensors, which is what compiling and capturing it need.
        draws = cfg.d_steps if cfg.loop == "alternating" else 1
        idx = [self.batch_indices(self.step * draws + k) for k in range(draws)]
        z = [self.z(cfg.batch_size) for _ in range(draws)]
        if cfg.loop == "alternating" and not (cfg.g_same_noise or cfg.g_reuse_fake):
            z.append(self.z(cfg.batch_size))  # the G step's own noise
        # Compiled and captured steps have static shapes: a short last batch runs eagerly.
        full = all(i.shape[0] == cfg.batch_size for i in idx)
        stats, ok = (self.graphed if full else self.step_body)(idx, z)
        return stats, ok, sum(i.shape[0] for i in idx)

    def step_body(self, idx: list[torch.Tensor], z: list[torch.Tensor]) -> tuple[Stats, Flag]:
        """The whole D+G step on device inputs: batch indices, and the noise in the order it is used."""
        cfg, G, D = self.cfg, self.G, self.D
        if cfg.loop == "simultaneous":
            return self.simultaneous_step(idx[0], z[0])
        ok = True
        for k in range(cfg.d_steps):
            # (1) Update D: maximise log D(x) + log(1 - D(G(z)))
            real = self.pixels(idx[k])
            with self.amp():
                if cfg.g_reuse_fake:
                    fake = G(z[k])  # kept with its graph: the G step below reuses this forward pass
                else:
                    with torch.no_grad(), inference(G, cfg.g_eval_for_d):
                        fake = G(z[k])
            self.opt_d.zero_grad(set_to_none=True)
            if cfg.d_update == "concat":
                # One D update on [fakes; reals] with labels 0/1 (Hands-On ML style).
                with self.amp():
                    logits = D(torch.cat([fake.detach(), real]))
                    fake_logits, real_logits = logits[: fake.shape[0]], logits[fake.shape[0]:]
                    loss_real = losses.d_loss_real(cfg.loss, real_logits, cfg.logit_clip)
                    loss_fake = losses.d_loss_fake(cfg.loss, fake_logits, cfg.logit_clip)
                    n_r, n_f = real.shape[0], fake.shape[0]
                    d_loss = (loss_real * n_r + loss_fake * n_f) / (n_r + n_f)
                d_loss.backward()
                ok &= self.apply([self.opt_d], [d_loss], D.parameters())
            elif cfg.d_update == "separate":
                # Two Keras `train_on_batch` calls: D on reals (label 1), then D on fakes (label 0).
                with self.amp():
                    real_logits = D(real)
                    loss_real = losses.d_loss_real(cfg.loss, real_logits, cfg.logit_clip)
                loss_real.backward()
                ok &= self.apply([self.opt_d], [loss_real], D.parameters())
                self.opt_d.zero_grad(set_to_none=True)
                with self.amp():
                    fake_logits = D(fake.detach())
                    loss_fake = losses.d_loss_fake(cfg.loss, fake_logits, cfg.logit_clip)
                loss_fake.backward()
                ok &= self.apply([self.opt_d], [loss_fake], D.parameters())
                d_loss = 0.5 * (loss_real + loss_fake)
            else:  # accumulate: both terms' gradients, one D step (pytorch/examples dcgan)
                with self.amp():
                    real_logits = D(real)
                    loss_real = losses.d_loss_real(cfg.loss, real_logits, cfg.logit_clip)
                loss_real.backward()
                with self.amp():
                    fake_logits = D(fake.detach())
                    loss_fake = losses.d_loss_fake(cfg.loss, fake_logits, cfg.logit_clip)
                loss_fake.backward()
                d_loss = loss_real + loss_fake
                ok &= self.apply([self.opt_d], [d_loss], D.parameters())

        # (2) Update G through a frozen D
        self.opt_g.zero_grad(set_to_none=True)
        with frozen(D, bn_eval=cfg.frozen_d_bn == "eval"):
            with self.amp():
                if not cfg.g_reuse_fake:
                    fake = G(z[-1])  # the last D step's noise when g_same_noise, else its own
                g_logits = D(fake)
                g_loss = losses.g_loss(cfg.loss, g_logits, cfg.logit_clip)
            g_loss.backward()
        ok &= self.apply([self.opt_g], [g_loss], G.parameters())
        update_ema(self.ema, G, ok)
        return self.stats(d_loss, g_loss, real_logits, fake_logits), ok

    def simultaneous_step(self, idx: torch.Tensor, z: torch.Tensor) -> tuple[Stats, Flag]:
        """TF tutorial: one forward pass; G and D gradients from their own losses (two tapes)."""
        cfg, G, D = self.cfg, self.G, self.D
        real = self.pixels(idx)
        with self.amp():
            fake = G(z)  # the tutorial's noise batch is always BATCH_SIZE
            real_logits, fake_logits = D(real), D(fake)
            g_loss = losses.g_loss(cfg.loss, fake_logits, cfg.logit_clip)
            d_loss = (losses.d_loss_real(cfg.loss, real_logits, cfg.logit_clip)
                      + losses.d_loss_fake(cfg.loss, fake_logits, cfg.logit_clip))
        g_params, d_params = list(G.parameters()), list(D.parameters())
        g_grads = torch.autograd.grad(g_loss, g_params, retain_graph=True)
        d_grads = torch.autograd.grad(d_loss, d_params)
        for p, g in zip(g_params + d_params, g_grads + d_grads):
            p.grad = g
        ok = self.apply([self.opt_g, self.opt_d], [g_loss, d_loss], g_params + d_params)
        update_ema(self.ema, G, ok)
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_d.zero_grad(set_to_none=True)
        return self.stats(d_loss, g_loss, real_logits, fake_logits), ok

    @staticmethod
    def stats(d_loss, g_loss, real_logits, fake_logits) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            correct = (real_logits > 0).float().sum() + (fake_logits < 0).float().sum()
            return {
                "d_loss": d_loss.detach(), "g_loss": g_loss.detach(),
                "d_real": torch.sigmoid(real_logits.float()).mean(),
                "d_fake": torch.sigmoid(fake_logits.float()).mean(),
                "d_acc": correct / (real_logits.numel() + fake_logits.numel()),
            }

    # -- sampling --
    def sample_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.G

    @torch.no_grad()
    def fixed_samples(self) -> torch.Tensor:
        model = self.sample_model()
        with inference(model, True):
            out = model(self.fixed_z)
        return to_uint8(out, self.cfg.pixel_range)

    # -- checkpoint state --
    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors: dict[str, torch.Tensor] = {}
        for prefix, module in (("G", self.G), ("D", self.D)) + ((("EMA", self.ema),) if self.ema else ()):
            tensors.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
        opt_meta = {}
        for prefix, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            t, m = pack_optimizer(opt.state_dict(), prefix)
            tensors.update(t)
            opt_meta[prefix] = m
        rng_t, rng_meta = capture_rng()
        tensors.update({f"rng.{k}": v for k, v in rng_t.items()})
        tensors["noise_rng"] = self.noise.get_state()
        tensors["fixed_z"] = self.fixed_z
        meta = {
            "config": self.cfg.to_dict(), "model": self.cfg.model, "step": self.step,
            "epoch": self.step / self.steps_per_epoch, "images_seen": self.images_seen,
            "seconds": self.seconds, "skipped_steps": self.skipped, "best_fid": _finite_or_none(self.best_fid),
            "optimizers": opt_meta, "rng": rng_meta, "ganforge_version": __version__,
            "lr": {"g": self.opt_g.param_groups[0]["lr"], "d": self.opt_d.param_groups[0]["lr"]},
            "data_size": len(self.data), "unreadable_files": sorted(self.unreadable),
        }
        return tensors, meta

    def _copy_state(self):
        """A copy of everything a step changes, and the function that puts it back: a compile or a
        capture that fails may have run part of a step."""
        tensors, meta = self.state()
        tensors = {k: v.clone() for k, v in tensors.items()}
        meta = json.loads(json.dumps(meta))
        return lambda: self.load_state(tensors, meta)

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        if meta.get("model") != self.cfg.model:
            raise CheckpointError(
                f"checkpoint is for model {meta.get('model')!r}, this run is {self.cfg.model!r}: "
                "resume it with its own config"
            )
        try:
            for prefix, module in (("G", self.G), ("D", self.D)) + ((("EMA", self.ema),) if self.ema else ()):
                part = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
                module.load_state_dict(part)
            for prefix, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
                opt.load_state_dict(unpack_optimizer(tensors, meta["optimizers"][prefix], prefix))
        except (RuntimeError, ValueError, KeyError) as err:  # tensors that do not fit the config
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            raise CheckpointError(f"checkpoint does not match its {self.cfg.model!r} config ({first}): "
                                  "it cannot be resumed") from None
        # load_state_dict brings back the saved run's optimizer implementation; use this run's, and
        # capture the step again: a CUDA graph holds the replaced optimizer state tensors.
        adopt_implementation(self.opt_g, self.impl_g)
        adopt_implementation(self.opt_d, self.impl_d)
        self.graphed.reset()
        restore_rng({k[4:]: v for k, v in tensors.items() if k.startswith("rng.")}, meta["rng"])
        self.noise.set_state(tensors["noise_rng"])
        self.fixed_z = tensors["fixed_z"].to(self.device)
        self.step = int(meta["step"])
        self.images_seen = int(meta["images_seen"])
        self.seconds = float(meta["seconds"])
        self.skipped = int(meta.get("skipped_steps", 0))
        self.best_fid = meta.get("best_fid") or math.inf
        self.unreadable = set(meta.get("unreadable_files", []))
        size = meta.get("data_size")
        if size is not None and size != len(self.data) and not self.quiet:
            print(f"warning: {self.cfg.data} has {len(self.data)} images now and had {size} when this "
                  "checkpoint was written: from here the batches differ from an uninterrupted run",
                  file=sys.stderr)


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


# ---- the run folder ----------------------------------------------------------------------------

def check_run_dir(run_dir: Path, force: bool) -> None:
    """Refuse to overwrite an existing run unless `force` (checked before any slow setup)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file: choose a folder path")
    if run_dir.exists() and any(run_dir.iterdir()) and not force:
        raise ConfigError(
            f"run folder {run_dir} already exists: continue it with `ganforge train --resume "
            f"{run_dir}`, or pass --force to overwrite it"
        )


def prepare_run_dir(run_dir: Path, force: bool) -> None:
    """Create the run folder (after data and models loaded, so bad input leaves nothing behind)."""
    check_run_dir(run_dir, force)
    if run_dir.exists() and force:
        shutil.rmtree(run_dir)
    (run_dir / "samples").mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints").mkdir(exist_ok=True)


def _write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from, so the log has no duplicates."""
    rows = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())


# ---- signals -----------------------------------------------------------------------------------

class SignalFlag:
    """First SIGINT/SIGTERM asks for a checkpoint at the next step boundary; a second exits at once
    (checkpoint writes are atomic, so nothing is corrupted)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> "SignalFlag":
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self.handle)
        except ValueError:  # not the main thread: signals stay with the host program
            self.previous = {}
        return self

    def handle(self, signum, frame) -> None:
        if self.signum is not None:
            sys.stderr.write("second signal: exiting now; resume from the last checkpoint\n")
            import os

            os._exit(128 + signum)
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# ---- the loop ----------------------------------------------------------------------------------

# Keys a resumed run may change: they steer or record the run without changing what it is.
# Learning rates are among them so that a diverged run can continue more gently.
RESUME_KEYS = ("g_lr", "d_lr", "max_skips", "rollback_lr_factor", "log_every", "sample_every",
               "checkpoint_every", "milestone_every", "keep_last", "eval_every", "eval_n", "max_seconds",
               "device", "speed", "threads", "data_mode", "workers")


def train(cfg: TrainConfig | None = None, run_dir: str | Path = "runs/default", *, resume: bool = False,
          force: bool = False, steps: int | None = None, epochs: int | None = None,
          quiet: bool = False, log=print, resume_overrides: list[str] | None = None) -> Path:
    """Train a GAN and write the run folder. With `resume=True`, continue `run_dir` exactly where its
    last checkpoint left it (`steps`/`epochs` then count the whole run; `resume_overrides` may change
    the RESUME_KEYS). Returns the run folder."""
    run_dir = Path(run_dir)
    lr_override: dict[str, float] = {}
    if resume:
        if not run_dir.is_dir():
            raise ConfigError(f"cannot resume: {run_dir} does not exist")
        _, tensors, meta = load_latest(run_dir / "checkpoints", log=log)
        cfg = from_dict(meta["config"])
        if resume_overrides:
            keys = [item.split("=", 1)[0].strip() for item in resume_overrides]
            fixed = [k for k in keys if k not in RESUME_KEYS]
            if fixed:
                raise ConfigError(f"{', '.join(fixed)} cannot change when resuming (it would be another run); "
                                  f"a resumed run may change: {', '.join(RESUME_KEYS)}")
            cfg = apply_overrides(cfg, resume_overrides)
            lr_override = {k: getattr(cfg, k) for k in ("g_lr", "d_lr") if k in keys}
    elif cfg is None:
        raise ConfigError("give a recipe or --resume RUN_DIR")
    if steps is not None:
        cfg = replace(cfg, steps=steps, epochs=None)
    elif epochs is not None:
        cfg = replace(cfg, epochs=epochs, steps=None)
    validate(cfg)
    if not resume:
        check_run_dir(run_dir, force)
        cfg = _absolute_data(cfg)
    run = Run(cfg, run_dir, quiet=quiet)
    if not resume:
        prepare_run_dir(run_dir, force)
    metrics_path = run_dir / "metrics.jsonl"
    if resume:
        run.load_state(tensors, meta)
        for key, opt in (("g_lr", run.opt_g), ("d_lr", run.opt_d)):
            if key in lr_override:  # the optimizer state restored the old rate: set the new one
                for group in opt.param_groups:
                    group["lr"] = lr_override[key]
        _truncate_metrics(metrics_path, run.step)
        log(f"resuming {run_dir} at step {run.step} of {run.total_steps}")
    _write_json(run_dir / "config.json", cfg.to_dict())
    return _loop(run, metrics_path, log)


def _absolute_data(cfg: TrainConfig) -> TrainConfig:
    """A folder of images is saved by its absolute path, so the run resumes from anywhere."""
    if cfg.data in DATASETS:
        return cfg
    folder = Path(cfg.data.removeprefix(FOLDER_PREFIX)).expanduser()
    return replace(cfg, data=str(folder.resolve())) if folder.is_dir() else cfg


def _loop(run: Run, metrics_path: Path, log) -> Path:
    cfg = run.cfg
    spe = run.steps_per_epoch
    unit_steps = spe if cfg.unit == "epoch" else 1
    writer = _tensorboard(run)
    bar = _progress(run)
    window = Window()
    faults = Faults()
    t_epoch = time.perf_counter()
    interrupted: int | None = None
    reported = 0  # streamed files found unreadable, as last reported
    with SignalFlag() as flag, open(metrics_path, "a") as mlog:
        t0 = time.perf_counter()
        base_seconds = run.seconds
        while run.step < run.total_steps:
            try:
                stats, ok, images = run.train_step()
            except DataError as err:
                # A streamed batch could not be read. Nothing of this step has run yet, so the state
                # is the last finished step's: keep it (when no step's fault flag is still unread).
                if run.step > 0 and not faults.pending:
                    _checkpoint(run, False)
                    raise DataError(f"{err}; the run is checkpointed at step {run.step}: continue "
                                    "with --resume") from None
                raise
            run.step += 1
            run.images_seen += images
            run.seconds = base_seconds + time.perf_counter() - t0
            window.add(stats, images)
            if bar is not None:
                bar.update(1)

            # ---- maintenance: faults, logs, grids, checkpoints, evaluation ----
            done = run.step >= run.total_steps or 0 < cfg.max_seconds <= run.seconds
            epoch_end = run.step % spe == 0
            if cfg.unit == "step":
                sample_now = (run.step - 1) % cfg.sample_every == 0 or done
            else:
                sample_now = epoch_end and (run.step // spe) % cfg.sample_every == 0 or done
            log_now = run.step % cfg.log_every == 0 or done
            eval_now = bool(cfg.eval_every) and (run.step % (cfg.eval_every * unit_steps) == 0 or done)
            milestone = bool(cfg.milestone_every) and run.step % (cfg.milestone_every * unit_steps) == 0
            checkpoint_now = run.step % (cfg.checkpoint_every * unit_steps) == 0 or milestone or done
            # A sync-free step's fault flag is read when something below reads the state, not before.
            reads_state = log_now or sample_now or eval_now or checkpoint_now or flag.signum is not None
            diverging = False
            for at, step_ok in faults.settle(run.step, ok, now=reads_state):
                if not step_ok:
                    run.skipped += 1
                    run.consecutive_skips += 1
                    _record(mlog, {"step": at, "event": "skipped_nonfinite_step",
                                   "skipped_total": run.skipped})
                    if run.consecutive_skips >= cfg.max_skips or not buffers_finite(run.G, run.D):
                        diverging = True
                        break
                else:
                    run.consecutive_skips = 0
            if diverging:
                base_seconds, t0 = _rollback_or_stop(run, log), time.perf_counter()
                window, faults = Window(), Faults()
                continue
            if log_now:
                _log_window(run, window, mlog, writer, bar, log)
                window = Window()
                if len(run.unreadable) > reported:
                    reported = len(run.unreadable)
                    first = run.data.files[min(run.unreadable)].relative_to(run.data.folder)
                    _warn(run, mlog, "unreadable", f"{reported} streamed image file(s) could not be "
                          f"decoded (first: {first}); each was replaced in its batch by the next "
                          f"readable file: check {run.cfg.data}", log)
            if cfg.unit == "epoch" and epoch_end and not run.quiet:
                msg = f"time for epoch {run.step // spe} is {time.perf_counter() - t_epoch:.2f} sec"
                (bar.write if bar is not None else log)(msg)
                t_epoch = time.perf_counter()
            if sample_now:
                _snapshot(run, mlog, log)
            if eval_now:
                _evaluate(run, mlog, writer, log)
            if checkpoint_now:
                _checkpoint(run, milestone)
            if flag.signum is not None and not done:
                _checkpoint(run, False)
                interrupted = flag.signum
                break
            if done:
                break  # the step budget or max_seconds is reached
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    if run.stream is not None:
        run.stream.close()
    _finish(run, metrics_path, finished=interrupted is None, log=log)
    if interrupted is not None:
        code = EXIT_SIGINT if interrupted == signal.SIGINT else EXIT_SIGTERM
        raise TrainingInterrupted(
            f"stopped by signal {interrupted} at step {run.step}: checkpoint saved; continue with "
            f"`ganforge train --resume {run.dir}`", code)
    return run.dir


def _record(mlog, row: dict) -> None:
    mlog.write(json.dumps(row) + "\n")
    mlog.flush()


def _log_window(run: Run, window: Window, mlog, writer, bar, log) -> None:
    if window.count == 0:
        return
    means = window.means()
    elapsed = time.perf_counter() - window.started
    row = {"step": run.step, "epoch": round(run.step / run.steps_per_epoch, 4),
           "images_seen": run.images_seen, **{k: round(v, 6) for k, v in means.items()},
           "images_per_second": round(window.images / max(elapsed, 1e-9), 2),
           "seconds": round(run.seconds, 3)}
    _record(mlog, row)
    if writer is not None:
        for key in ("d_loss", "g_loss", "d_real", "d_fake", "d_acc", "images_per_second"):
            writer.add_scalar(f"train/{key}", row[key], run.step)
    _collapse_alarm_accuracy(run, means["d_acc"], mlog, log)
    text = (f"step {run.step}/{run.total_steps}  d_loss {means['d_loss']:.4f}  g_loss {means['g_loss']:.4f}  "
            f"D(x) {means['d_real']:.3f}  D(G(z)) {means['d_fake']:.3f}  acc {100 * means['d_acc']:.1f}%  "
            f"{row['images_per_second']:.0f} img/s")
    if bar is not None:
        bar.set_postfix(d=f"{means['d_loss']:.3f}", g=f"{means['g_loss']:.3f}",
                        acc=f"{100 * means['d_acc']:.0f}%", refresh=False)
    elif not run.quiet:
        log(text)


def _warn(run: Run, mlog, key: str, message: str, log) -> None:
    _record(mlog, {"step": run.step, "warning": message})
    if key not in run.warned:
        run.warned.add(key)
        log(f"warning: {message}")


def _collapse_alarm_accuracy(run: Run, d_acc: float, mlog, log) -> None:
    run.acc_high_windows = run.acc_high_windows + 1 if d_acc >= 0.999 else 0
    if run.acc_high_windows == 5:
        _warn(run, mlog, "d_acc", f"D accuracy has been 100% for 5 log windows (step {run.step}): "
              "G gets no useful gradient; try a lower d_lr or loss=ns", log)


def _diversity(images: torch.Tensor) -> float:
    flat = images.float().flatten(1)
    return float(torch.pdist(flat).mean()) if flat.shape[0] > 1 else 0.0


def _snapshot(run: Run, mlog, log) -> None:
    cfg = run.cfg
    samples = run.fixed_samples()
    name = cfg.sample_name.format(step=run.step, epoch=run.step // run.steps_per_epoch,
                                  iteration=run.step - 1)
    save_grid(samples, run.dir / "samples" / f"{name}.png", nrow=cfg.grid_rows)
    # Collapse alarm on the fixed grid: its spread against that of as many real images.
    if run.real_diversity is None:
        run.real_diversity = _diversity(run.real_images(samples.shape[0]))
    ratio = _diversity(samples) / max(run.real_diversity, 1e-9)
    if run.step > 10 * cfg.log_every and ratio < 0.15:
        _warn(run, mlog, "diversity", f"the fixed-latent grid is {ratio:.0%} as diverse as real data "
              f"at step {run.step}: possible mode collapse", log)


def _checkpoint(run: Run, milestone: bool) -> None:
    tensors, meta = run.state()
    save_checkpoint(run.dir / "checkpoints", f"step-{run.step:09d}", tensors, meta,
                    keep_last=run.cfg.keep_last, milestone=milestone)


def _rollback_or_stop(run: Run, log) -> float:
    cfg = run.cfg
    have = list_checkpoints(run.dir / "checkpoints")
    if cfg.rollback_lr_factor > 0 and have:
        _, tensors, meta = load_latest(run.dir / "checkpoints", log=log)
        tries = run.rollbacks.get(int(meta["step"]), 0) + 1
        if tries <= MAX_ROLLBACKS:
            skipped = run.skipped  # steps skipped since that checkpoint still count
            run.load_state(tensors, meta)
            run.skipped, run.rollbacks[run.step] = skipped, tries
            # Each retry from the same checkpoint lowers the rates again: x factor, x factor^2, ...
            factor = cfg.rollback_lr_factor ** tries
            for opt, base in ((run.opt_g, meta["lr"]["g"]), (run.opt_d, meta["lr"]["d"])):
                for group in opt.param_groups:
                    group["lr"] = base * factor
            run.consecutive_skips = 0
            log(f"warning: {cfg.max_skips} non-finite steps: rolled back to step {run.step} with "
                f"learning rates x{factor:g}")
            return run.seconds
    # `--resume` keeps the saved config, so the advice is a new run; the checkpoints stay.
    raise TrainingDiverged(
        f"training diverged: {run.consecutive_skips} consecutive non-finite steps at step {run.step}"
        f"{f' after {MAX_ROLLBACKS} rollbacks' if run.rollbacks else ''}; the last good checkpoint "
        f"stays in {run.dir / 'checkpoints'}: continue with lower learning rates, e.g. "
        f"`ganforge train --resume {run.dir} g_lr={cfg.g_lr / 2:g} d_lr={cfg.d_lr / 2:g}`, or set rollback_lr_factor=0.5"
    )


def _evaluate(run: Run, mlog, writer, log) -> None:
    """In-training FID & co. (issue 3); keeps `checkpoints/best` by FID."""
    try:
        from .metrics.evaluate import evaluate_images
    except ImportError:
        return
    from .sampling import generate

    fake = generate(run.sample_model(), run.cfg.eval_n, run.cfg.latent_dim, seed=run.cfg.seed + 3,
                    device=run.device, pixel_range=run.cfg.pixel_range)
    try:
        result = evaluate_images(fake, run.cfg.data, seed=run.cfg.seed, quiet=True,
                                 folder_shape=(run.cfg.channels, run.cfg.image_size))
    except GanforgeError as err:
        _warn(run, mlog, "eval", f"evaluation skipped: {err}", log)
        return
    row = {"step": run.step, **{k: result[k] for k in ("fid", "kid_mean", "kid_std", "precision",
                                                        "recall", "inception_score") if k in result}}
    _record(mlog, row)
    if writer is not None:
        for key, value in row.items():
            if key != "step":
                writer.add_scalar(f"eval/{key}", value, run.step)
    if row.get("fid") is not None and row["fid"] < run.best_fid:
        run.best_fid = row["fid"]
        tensors, meta = run.state()
        meta["fid"] = row["fid"]
        save_checkpoint(run.dir / "checkpoints", "best", tensors, meta)


def _finish(run: Run, metrics_path: Path, finished: bool, log) -> None:
    last = [r for r in read_metrics(metrics_path) if "g_loss" in r]
    final = last[-1] if last else {}
    summary = {
        "recipe": run.cfg.recipe, "data": run.cfg.data, "data_source": run.data_source,
        "device": str(run.device), "speed": run.speed, "finished": finished,
        "steps": run.step, "total_steps": run.total_steps, "epochs": round(run.step / run.steps_per_epoch, 4),
        "images_seen": run.images_seen, "seconds": round(run.seconds, 3),
        "images_per_second": round(run.images_seen / max(run.seconds, 1e-9), 2),
        "skipped_steps": run.skipped, "unreadable_files": len(run.unreadable),
        "final": {k: final.get(k) for k in ("d_loss", "g_loss", "d_real", "d_fake", "d_acc")},
        "best_fid": _finite_or_none(run.best_fid), "ganforge_version": __version__,
    }
    _write_json(run.dir / "summary.json", summary)
    make_gif(run.dir / "samples", run.dir / "progress.gif")
    if run.cfg.gif_name:
        shutil.copyfile(run.dir / "progress.gif", run.dir / run.cfg.gif_name)
    plot_curves(metrics_path, run.dir / "losses.png")
    if not run.quiet:
        log(f"total training time {run.seconds:.1f} s for {run.step} steps "
            f"({summary['images_per_second']:.0f} images/s)")


def _tensorboard(run: Run):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional at run time
        return None
    return SummaryWriter(str(run.dir / "tb"), purge_step=run.step or None)


def _progress(run: Run):
    if run.quiet or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=run.total_steps, initial=run.step, unit="step", dynamic_ncols=True)
