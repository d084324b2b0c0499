"""`GANRun`: everything one GAN training run holds, set up from a config.

Data (on the training device as uint8, or streamed), the named networks (`G`, `D`, and `G_ema`
when the run keeps an EMA), their optimizers, the loss and D update chosen once, the latent spec
and its fixed grid, the speed objects, and the checkpointed state (runs.RunState). The loop that
drives it is gan/train.py; the step it takes is gan/step.py.
"""

from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ganforge import distributed as dist
from ganforge import speed as sp
from ganforge.data import DATA_MODES, load_dataset
from ganforge.data.pixels import normalize, to_uint8
from ganforge.data.sampler import BatchSampler
from ganforge.data.stream import StreamBatches, default_workers
from ganforge.errors import ConfigError
from ganforge.gan.config import GANConfig
from ganforge.gan.augment import parse_policy
from ganforge.gan.invariance import parse_axes, parse_invariance
from ganforge.gan.ema import make_ema
from ganforge.gan.labels import batch_size, batch_with_labels, resolve_classes, split_batch
from ganforge.gan.latents import Latent, LatentSpec, apply_generator
from ganforge.losses import make_loss
from ganforge.gan.step import D_UPDATES, Flag, Stats, gan_step, inference
from ganforge.gan.terms import Terms
from ganforge.memory import activation_bytes, check_fits, on_meta, parameter_bytes
from ganforge.gan.models import MODELS, build_models, build_q
from ganforge.optim import build_optimizer
from ganforge.runs import RunState, Window, finite_or_none, warn


def total_steps(cfg: GANConfig, steps_per_epoch: int) -> int:
    return cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch


def check_memory(cfg: GANConfig, n_images: int, device: torch.device, resident: bool) -> None:
    """Refuse in one line a run that cannot fit: weights, gradients, optimizer moments and the EMA
    copy, the activations of a step at this batch size, and the images on the device."""
    G, D = on_meta(lambda: MODELS.get(cfg.model).build(cfg))
    batch = min(cfg.batch_size, n_images) if cfg.sampling == "epoch" else cfg.batch_size
    states = parameter_bytes(G, D) * 4 + (parameter_bytes(G) if cfg.ema else 0)
    try:
        fake = torch.empty(batch, cfg.channels, cfg.image_size, cfg.image_size, device="meta")
        acts = activation_bytes(G, torch.empty(batch, cfg.latent_dim, device="meta")) + 2 * activation_bytes(D, fake)
    except (RuntimeError, NotImplementedError):  # an op without a meta kernel: count the weights only
        acts = 0
    data = n_images * cfg.channels * cfg.image_size ** 2 if resident and device.type == "cuda" else 0
    check_fits(states + 2 * acts + data, device, f"model {cfg.model!r} at batch_size={cfg.batch_size}",
               "lower batch_size, latent_dim, image_size or the hidden widths")


class GANRun(RunState):
    """Models, optimizers, data, RNG, counters and outputs of one GAN run."""

    lr_keys = {"G": "g_lr", "D": "d_lr"}

    def __init__(self, cfg: GANConfig, run_dir: Path, quiet: bool = False, dataset=None) -> None:
        """`dataset` (an ImageDataset) replaces loading `cfg.data`, e.g. for benchmarks. Under
        torchrun every rank builds the same run; `batch_size` stays the global batch."""
        self.place(cfg, run_dir, quiet)
        self.features = sp.resolve_speed(cfg.speed, self.device, cfg.model)
        if self.world > 1 and (self.features.compile or self.features.cudagraphs):
            # A compiled or captured whole step would hold DDP's collectives inside it.
            self.features = replace(self.features, compile=False, cudagraphs=False)
            if not self.quiet:
                sp.notice(f"compile and CUDA graphs are off with {self.world} processes (DDP); "
                          "the other speed features stay on")
        if self.device.type == "cpu":
            sp.keep_freed_memory()
        sp.set_backends(self.features, self.device)
        torch.manual_seed(cfg.seed)
        dist.main_first(self._setup_data, dataset)
        dist.agree_outcome(dist.attempt(self._check_data))
        cfg = self.cfg

        G, D = build_models(cfg)
        Q = build_q(cfg, D)
        if self.world > 1 and cfg.sync_bn:
            G, D = (dist.convert_sync_batchnorm(net, self.device) for net in (G, D))
            Q = Q if Q is None else dist.convert_sync_batchnorm(Q, self.device)
        G.to(self.device)
        D.to(self.device)
        sp.upsample_conv(G, D, enabled=self.features.upsample_conv)  # first: a folded conv is no DFT candidate
        sp.dft_conv(G, D, enabled=self.features.dft_conv)  # before channels_last, which sets its output layout
        sp.thin_conv(G, D, enabled=self.features.thin_conv)
        sp.channels_last(G, D, enabled=self.features.channels_last, device=self.device)
        sp.fast_dropout(G, D, enabled=self.features.fast_dropout)
        self.impl = {"G": sp.optimizer_options(cfg.g_optimizer, self.features, self.device),
                     "D": sp.optimizer_options(cfg.d_optimizer, self.features, self.device)}
        self.optimizers = {"G": build_optimizer(cfg.g_optimizer, G.parameters(), cfg.g_lr, cfg, **self.impl["G"]),
                           "D": build_optimizer(cfg.d_optimizer, D.parameters(), cfg.d_lr, cfg, **self.impl["D"])}
        # G and D are wrapped separately: a phase calls the net it updates through DDP (whose
        # backward averages the gradients over the ranks) and the frozen one as the plain module.
        self.ddp: dict[str, nn.Module] = {}
        self._plain = False
        if self.world > 1:
            self.ddp = {"G": self.data_parallel(G), "D": self.data_parallel(D)}
        ema = make_ema(G, cfg.ema)
        self.modules = {"G": G, "D": D, **({"G_ema": ema} if ema is not None else {})}
        if Q is not None:  # InfoGAN: Q's head, with its own optimizer (it shares D's trunk)
            Q.to(self.device)
            self.modules["Q"] = Q
            self.impl["Q"] = self.impl["G"]
            self.optimizers["Q"] = build_optimizer(cfg.g_optimizer, Q.parameters(), cfg.q_lr, cfg, **self.impl["Q"])
            self.lr_keys = {**GANRun.lr_keys, "Q": "q_lr"}
        self.loss = make_loss(cfg.loss, cfg.logit_clip)
        self.d_update = D_UPDATES.get(cfg.d_update)
        self.terms = Terms.from_config(cfg)  # R1, WGAN-GP, AC-GAN, InfoGAN: shares of the objectives
        self.augment = parse_policy(cfg.diffaugment)
        self.invariance = parse_invariance(cfg.info_invariance)  # InfoGAN: gan/invariance.py
        self.axes = parse_axes(cfg.info_axes, cfg.info_continuous, self.invariance)

        # Latents for training come from their own generator so that data order, dropout and noise
        # are each reproducible and restorable.
        self.latents = LatentSpec.from_config(cfg)
        self.noise = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        # A conditional (or InfoGAN) grid: one class (category) per column, the same noise along a row.
        self.fixed = self.latents.fixed(cfg.grid_rows ** 2, cfg.seed + 2, self.device, columns=cfg.grid_rows)
        # The non-finite guard, and the step as the loop calls it: compiled and/or captured when on.
        self.guard = sp.StepGuard(sync_free=self.features.async_guard,
                                  agree=dist.all_true if self.world > 1 else None)
        self.compiled = sp.CompiledStep(self.step_body, self.features.compile, self._copy_state)
        self.graphed = sp.GraphedStep(self.compiled, self.features.cudagraphs, self._copy_state)

        self.init_counters()
        self.window = Window()  # the log window so far: checkpointed, so a resume continues it
        self.last_grid = -1  # the step of the last fixed-latent grid
        self.acc_high_windows = 0
        self.real_diversity: float | None = None

    def _check_data(self) -> None:
        """What needs the data: a conditional run's classes, the memory check, and under torchrun
        a global batch that splits evenly over the processes."""
        # A conditional run takes its classes from the data's labels (one line if it has none).
        self.cfg = cfg = resolve_classes(self.cfg, self.data)
        self.labels = None if cfg.conditional == "none" or self.images is None else \
            self.data.labels.to(self.device)
        check_memory(cfg, len(self.data), self.device, self.images is not None)
        if self.world > 1:
            dist.check_divides(cfg.batch_size, "the global batch_size", f"choose a batch_size that is a multiple "
                               f"of {self.world}, or another number of processes")
            last = len(self.data) % cfg.batch_size
            if cfg.sampling == "epoch" and not cfg.drop_last and cfg.batch_size < len(self.data) and last:
                dist.check_divides(last, f"the last batch of each epoch ({len(self.data)} images in batches "
                                   f"of {cfg.batch_size}) holds", f"set drop_last=true, or choose a batch_size "
                                   f"that leaves a multiple of {self.world}")

    def _setup_data(self, dataset) -> None:
        """Decoded once and kept on the training device as uint8; or, for a folder too big for
        that, decoded by DataLoader workers ahead of the step (the same batches either way)."""
        cfg = self.cfg
        data = dataset if dataset is not None else load_dataset(
            cfg.data, split="train", image_size=cfg.image_size, channels=cfg.channels,
            merge_test=cfg.merge_test, quiet=self.quiet,
            stream=DATA_MODES[cfg.data_mode])
        if len(data) < 2:
            raise ConfigError(f"dataset {cfg.data!r} has {len(data)} image(s): need at least 2")
        if cfg.batch_size > len(data) and cfg.sampling == "epoch":
            warn(f"batch_size {cfg.batch_size} is larger than {cfg.data} ({len(data)} images): every batch "
                 f"holds {len(data)}", self.quiet)
        self.data, self.data_source = data, data.source
        # Indices are drawn on the host and sent over without a sync (see `batch_indices`).
        self.sampler = BatchSampler(len(data), cfg.batch_size, mode=cfg.sampling, drop_last=cfg.drop_last,
                                    seed=cfg.seed, device="cpu")
        self.images: torch.Tensor | None = None
        self.stream: StreamBatches | None = None
        self.unreadable: set[int] = set()  # streamed files that failed to decode (stood in for)
        if data.in_memory:
            self.images = data.images.to(self.device)
        else:
            workers = cfg.workers or default_workers(sp.cores())
            if workers > 4 * sp.cores():
                raise ConfigError(f"workers={workers} is more than 4 per core ({sp.cores()} cores): each "
                                  "worker is a process; use at most the number of cores")
            # Each rank decodes only its part of every global batch.
            self.stream = StreamBatches(data, dist.ShardedSampler(self.sampler) if self.world > 1 else self.sampler,
                                        workers=workers, pin_memory=self.device.type == "cuda")
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = total_steps(cfg, self.steps_per_epoch)

    # -- the named parts --
    G = property(lambda self: self.modules["G"])
    D = property(lambda self: self.modules["D"])
    ema = property(lambda self: self.modules.get("G_ema"))
    Q = property(lambda self: self.modules.get("Q"))
    opt_g = property(lambda self: self.optimizers["G"])
    opt_d = property(lambda self: self.optimizers["D"])
    opt_q = property(lambda self: self.optimizers.get("Q"))

    @property
    def speed(self) -> str:
        """The speed features in effect: a compile or capture that fell back drops out, and so does
        a feature with nothing to act on (autotune off CUDA, fast_dropout in a model without dropout,
        dft_conv where no layer's shape made it pay, upsample_conv where no upsampling was folded,
        thin_conv where no layer has a single channel on the image side)."""
        off = {"compile": self.compiled.failed, "cudagraphs": self.graphed.failed,
               "autotune": self.device.type != "cuda",
               "fast_dropout": not any(isinstance(m, nn.Dropout) for net in (self.G, self.D)
                                       for m in net.modules()),
               "dft_conv": not sp.dft_used(self.G, self.D),
               "upsample_conv": not sp.upsample_folded(self.G, self.D),
               "thin_conv": not sp.thin_used(self.G, self.D)}
        return "+".join(f for f in self.features.name.split("+") if not off.get(f)) or "eager"

    def buffered(self) -> list[nn.Module]:
        return [self.G, self.D]  # G_ema and Q hold no statistics of their own

    def net(self, name: str) -> nn.Module:
        """Network `name` as a phase calls it: through DDP while that network is being trained
        (grad on, its parameters not frozen), else the plain module, whose forward syncs nothing."""
        module = self.modules[name]
        wrapped = self.ddp.get(name)
        if wrapped is None or self._plain or not torch.is_grad_enabled():
            return module
        return wrapped if any(p.requires_grad for p in module.parameters()) else module

    def no_sync(self, name: str, enabled: bool = True):
        """Accumulate this backward's gradients of `name` locally: a later backward of the same
        phase averages them all at once (DDP's no_sync)."""
        return self.ddp[name].no_sync() if enabled and name in self.ddp else nullcontext()

    @contextmanager
    def plain(self):
        """Call every network as its plain module (a phase that averages its gradients itself)."""
        self._plain, was = True, self._plain
        try:
            yield
        finally:
            self._plain = was

    def amp(self):
        """bf16 autocast for a forward pass when that feature is on (a null context otherwise)."""
        return sp.autocast(self.device, self.features.bf16)

    # -- data and noise --
    def batch_indices(self, draw: int) -> torch.Tensor:
        """The `draw`-th batch on the training device: its dataset indices (int64), or for a streamed
        folder its uint8 images. Indices are drawn on the host, images decoded by the workers; a
        CUDA copy goes from pinned memory without waiting for the GPU."""
        if self.stream is not None:
            if self.cfg.conditional != "none":  # the labels of the files decoded travel with them
                batch, labels, unreadable = self.stream.get(draw, with_labels=True)
                self.unreadable |= unreadable
                return batch_with_labels(batch, labels, self.device)
            batch, unreadable = self.stream.get(draw)
            self.unreadable |= unreadable
        else:
            batch = dist.shard(self.sampler.indices(draw))  # this rank's part of the global batch
            if self.device.type == "cuda":
                batch = batch.pin_memory()
        return batch.to(self.device, non_blocking=True)

    def real_images(self, n: int) -> torch.Tensor:
        """n real images (a fixed random subset), uint8 on the CPU: for grids and alarms."""
        idx = torch.randperm(len(self.data), generator=torch.Generator().manual_seed(0))[:n]
        if self.images is None:
            return self.data.decode(idx.tolist())
        return self.images[idx.to(self.images.device)].cpu()

    def real(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Real images `idx` (indices into the resident dataset, or the uint8 images themselves),
        gathered and normalised on the device to the recipe's pixel range; and their labels (None:
        an unconditional run)."""
        idx, labels = split_batch(idx)
        if labels is None and self.labels is not None:
            labels = self.labels[idx]
        x = normalize(idx if idx.dtype == torch.uint8 else self.images[idx], self.cfg.pixel_range)
        return sp.to_format(x, self.features.channels_last), labels

    def real_batch(self, draw: int) -> torch.Tensor:
        """The `draw`-th batch of real images, as floats in the recipe's pixel range."""
        return self.real(self.batch_indices(draw))[0]

    def apply(self, opts: list[torch.optim.Optimizer], objectives: list[torch.Tensor], params) -> Flag:
        """Step `opts` unless a loss or a gradient is non-finite; then the step is skipped. The
        flag is a bool, or a device tensor when the guard is sync-free."""
        return self.guard.step(opts, objectives, list(params))

    # -- one training step --
    def train_step(self) -> tuple[Stats, Flag, int]:
        """One G step and its D steps: returns (stats, ok, real images used)."""
        cfg = self.cfg
        # The host's part: which images and which latents. The step body then only sees device
        # tensors, which is what compiling and capturing it need.
        draws = cfg.d_steps if cfg.loop == "alternating" else 1
        idx = [self.batch_indices(self.step * draws + k) for k in range(draws)]
        # Every rank draws the global latents and keeps its part: the same noise as one process.
        latents = [dist.shard(self.latents.sample(cfg.batch_size, self.noise, self.device)) for _ in range(draws)]
        if cfg.loop == "alternating" and not (cfg.g_same_noise or cfg.g_reuse_fake):
            latents.append(dist.shard(self.latents.sample(cfg.batch_size, self.noise, self.device)))  # G's own
        # Compiled and captured steps have static shapes: a short last batch runs eagerly.
        full = all(batch_size(i) == cfg.batch_size // self.world for i in idx)
        stats, ok = (self.graphed if full else self.step_body)(idx, latents)
        # Images of the global batches (each rank's part is the same size: checked at the start).
        return stats, ok, sum(batch_size(i) for i in idx) * self.world

    def step_body(self, idx: list[torch.Tensor], latents: list[Latent]) -> tuple[Stats, Flag]:
        return gan_step(self, idx, latents)

    # -- sampling --
    def sample_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.G

    @torch.no_grad()
    def fixed_samples(self) -> torch.Tensor:
        model = self.sample_model()
        with inference(model, True):
            out = apply_generator(model, self.fixed)
        return to_uint8(out, self.cfg.pixel_range)

    # -- checkpoint state: the GAN's own parts --
    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        window_tensors, window_meta = self.window.state()
        # Each rank's window holds its own part's means: the checkpoint keeps their mean, from which
        # every rank continues (the next log line then matches an uninterrupted run's).
        window_tensors = dist.mean_across(window_tensors)
        tensors = {"noise_rng": self.noise.get_state(), **window_tensors,
                   **{f"fixed_{k}": v for k, v in self.fixed.items()}}  # fixed_z (, fixed_labels)
        meta = {"epoch": self.step / self.steps_per_epoch, "best_fid": finite_or_none(self.best),
                "data_size": len(self.data), "unreadable_files": sorted(self.unreadable), "window": window_meta,
                "last_grid": self.last_grid,
                **({"class_names": self.data.class_names} if self.data.class_names else {})}
        return tensors, meta

    def load_extra(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        # load_state_dict brings back the saved run's optimizer implementation; use this run's, and
        # capture the step again: a CUDA graph holds the replaced optimizer state tensors.
        for name, opt in self.optimizers.items():
            sp.adopt_implementation(opt, self.impl[name])
        self.graphed.reset()
        self.noise.set_state(tensors["noise_rng"])
        self.fixed = {k[len("fixed_"):]: v.to(self.device) for k, v in tensors.items() if k.startswith("fixed_")}
        self.window = Window.restore(tensors, meta.get("window"), self.device)
        self.last_grid = int(meta.get("last_grid", -1))
        self.unreadable = set(meta.get("unreadable_files", []))
        size = meta.get("data_size")
        if size is not None and size != len(self.data):
            warn(f"{self.cfg.data} has {len(self.data)} images now and had {size} when this checkpoint was "
                 "written: from here the batches differ from an uninterrupted run", self.quiet)

    def _copy_state(self):
        """A copy of everything a step changes, and the function that puts it back: a compile or a
        capture that fails may have run part of a step."""
        tensors, meta = self.state()
        tensors = {k: v.clone() for k, v in tensors.items()}
        meta = json.loads(json.dumps(meta))
        return lambda: self.load_state(tensors, meta)
