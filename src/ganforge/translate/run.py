"""`TranslateRun`: everything one pix2pix or CycleGAN run holds, set up from a `TranslateConfig`.

The train and test splits, the named networks and their Adam optimizers ("G" and "D"; CycleGAN's
each over both of its nets, as in the authors' code) with their linear-decay schedules, the image
pools, the fixed test images drawn over time, and the checkpointed state (runs.RunState).

Exact resume: batch `s` is a pure function of (seed, s): A's items are positions s*B .. s*B+B-1 of
a stream of epoch permutations seeded by (seed, epoch); an unpaired run's B items are drawn from a
generator seeded by (seed, s); each item's crop and mirror from one seeded by (seed, s, k); each
pool's choices from one seeded by (seed, pool, s). Dropout draws from the global generator, which
checkpoints save; the pools' stored images, the schedules and the log window go into the
checkpoint too. So a resumed run continues exactly as an uninterrupted one.

Several processes (torchrun, `--nproc N`): `batch_size` stays the global batch and must divide by
N. Every rank knows the global batch's indices and makes only its contiguous part of them
(`distributed.global_slice`), the k-th item under the same (seed, s, k) generator as in one
process. Each net is wrapped in DistributedDataParallel for the phase that updates it, with
BatchNorm over the global batch (`sync_bn`); each loss is a mean over the rank's own rows and DDP
averages the gradients: the gradient of one process on the global batch. The image pools are not
per rank: each step gathers every rank's fakes (`distributed.all_rows`), every rank queries its
pool with the whole global batch and the same (seed, pool, step) generator, and takes its own rows
of the answer. So every rank's pool is one process's pool, and a checkpoint (rank 0's) holds it
whole. What differs from one process: the order of float reductions, and dropout, which draws
from a stream of each rank's own (rank 0's is one process's).
"""

from __future__ import annotations

import functools
import itertools
import math
from pathlib import Path

import torch

from ganforge import distributed as dist
from ganforge.data.pixels import normalize, to_uint8
from ganforge.errors import ConfigError
from ganforge.runs import RunState, Window, warn
from ganforge.translate.config import TranslateConfig, linear_decay
from ganforge.translate.data import TranslationData, jitter, open_translation_data
from ganforge.translate.models import build_nets
from ganforge.translate.pool import ImagePool
from ganforge.translate.step import adversarial


def _seed(*parts: int) -> int:
    value = 0
    for part in parts:
        value = (value * 1_000_003 + int(part)) % (2 ** 63)
    return value


def open_split(cfg: TranslateConfig, split: str, size: int | None = None) -> TranslationData:
    return open_translation_data(cfg.data, split, load_size=size or cfg.load_size, channels_a=cfg.channels_a,
                                 channels_b=cfg.channels_b)


def total_steps(cfg: TranslateConfig, n_items: int) -> int:
    if cfg.steps is not None:
        return cfg.steps
    return max(1, round(cfg.epochs * n_items / cfg.batch_size))


class TranslateRun(RunState):
    """Data, networks, optimizers, schedules, pools, counters and outputs of one translation run."""

    resume_command = "ganforge translate train --resume"
    nonfinite_steps = "steps with a non-finite loss"
    differs_across_worlds = "reductions, and dropout's per-process random streams"

    def __init__(self, cfg: TranslateConfig, run_dir: Path, quiet: bool = False) -> None:
        self.place(cfg, run_dir, quiet)
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.train_set = open_split(cfg, "train")
        self.test_set = open_split(cfg, "test", cfg.image_size)  # judged whole, without jitter
        if cfg.mode == "pix2pix" and not self.train_set.paired:
            raise ConfigError(f"{cfg.data} is unpaired (trainA/ + trainB/): pix2pix needs pairs; use a cyclegan "
                              "recipe")
        if self.world > 1:
            dist.check_divides(cfg.batch_size, "the global batch_size", f"choose a batch_size that is a multiple "
                               f"of {self.world}, or another number of processes")
        self.lr_keys = {"G": "lr", "D": "lr"}
        nets = build_nets(cfg)
        if self.world > 1 and cfg.sync_bn:
            nets = {name: dist.convert_sync_batchnorm(net, self.device) for name, net in nets.items()}
        self.modules = {name: net.to(self.device) for name, net in nets.items()}
        self.optimizers = {role: torch.optim.Adam(self._params(role), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                                  eps=cfg.opt_eps) for role in ("G", "D")}
        # The phase that updates a net runs it through DDP (its backward averages the gradients over
        # the ranks); the other phase, the pictures and the checkpoints use the plain module.
        self.ddp = {name: self.data_parallel(net) for name, net in self.modules.items()} if self.world > 1 else {}
        self.part = dist.global_slice(cfg.batch_size)  # this rank's rows (one process: all of them)
        self.total_steps = total_steps(cfg, len(self.train_set))
        self.steps_per_epoch = len(self.train_set) / cfg.batch_size
        self.schedulers = {role: self._make_scheduler(opt) for role, opt in self.optimizers.items()}
        self.loss = adversarial(cfg.loss)
        self.pools = {"A": ImagePool(cfg.pool_size), "B": ImagePool(cfg.pool_size)}
        # the images drawn over time: spread evenly over the test split (built-ins are sorted by class)
        n = len(self.test_set.a)
        self.shown = sorted({round(i * n / cfg.sample_images) for i in range(min(cfg.sample_images, n))})
        self.init_counters()
        self.window = Window()
        self.issues_reported = 0
        self.last_sample = -1

    def _params(self, role: str):
        return itertools.chain(*(net.parameters() for name, net in self.modules.items() if name.startswith(role)))

    def _make_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        # the lambda reads the run's total, so a resume with a new budget stretches the decay
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: linear_decay(s, self.total_steps, self.cfg.decay_from))

    # -- the batches: pure functions of (seed, step) --
    @functools.lru_cache(maxsize=4)
    def permutation(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(_seed(self.cfg.seed, 7, epoch))
        return torch.randperm(len(self.train_set.a), generator=gen).tolist()

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's part of training batch `step`: (inputs, targets) of pix2pix, or (A images,
        B images) of CycleGAN, float in [-1, 1] on the run's device."""
        cfg, data = self.cfg, self.train_set
        n = len(data.a)
        start = step * cfg.batch_size
        a_idx = [self.permutation(p // n)[p % n] for p in range(start, start + cfg.batch_size)]
        if data.paired:
            b_idx = a_idx
        else:
            gen = torch.Generator().manual_seed(_seed(cfg.seed, 13, step))
            b_idx = torch.randint(len(data.b), (cfg.batch_size,), generator=gen).tolist()
        xs, ys = [], []
        for k in range(self.part.start, self.part.stop):  # k: the position in the global batch
            i, j = a_idx[k], b_idx[k]
            gen = torch.Generator().manual_seed(_seed(cfg.seed, 11, step, k))
            if data.paired:  # one crop and one mirror for both sides of the pair
                a, b = jitter([data.a[i], data.b[j]], cfg.image_size, gen, cfg.flip)
            else:
                (a,) = jitter([data.a[i]], cfg.image_size, gen, cfg.flip)
                (b,) = jitter([data.b[j]], cfg.image_size, gen, cfg.flip)
            xs.append(a)
            ys.append(b)
        a, b = torch.stack(xs).to(self.device), torch.stack(ys).to(self.device)
        if cfg.mode == "pix2pix" and cfg.direction == "BtoA":
            a, b = b, a
        return normalize(a), normalize(b)

    def pool_generators(self) -> dict[str, torch.Generator]:
        """The generators of this step's pool choices, seeded by (seed, pool, step)."""
        return {side: torch.Generator().manual_seed(_seed(self.cfg.seed, 17, i, self.step)) for i, side in enumerate("AB")}

    # -- pictures --
    def generator(self, direction: str = "AtoB") -> torch.nn.Module:
        return self.modules["G"] if self.cfg.mode == "pix2pix" else self.modules["G_AB" if direction == "AtoB" else "G_BA"]

    @torch.no_grad()
    def triplets(self) -> torch.Tensor:
        """input | output | target of the fixed test images (uint8, 3 per row; CycleGAN's "target" is
        the input brought back by the other generator), grey shown as RGB where sides differ."""
        data, cfg = self.test_set, self.cfg
        src, tgt = (data.b, data.a) if cfg.mode == "pix2pix" and cfg.direction == "BtoA" else (data.a, data.b)
        x = normalize(src[self.shown].to(self.device))
        g = self.generator()
        g.eval()
        y = g(x)
        third = tgt[self.shown] if cfg.mode == "pix2pix" else to_uint8(self.modules["G_BA"].eval()(y))
        g.train()
        tiles = [src[self.shown], to_uint8(y), third.cpu()]
        if len({t.shape[1] for t in tiles}) > 1:
            tiles = [t.repeat(1, 3 // t.shape[1], 1, 1) for t in tiles]
        return torch.stack(tiles, 1).flatten(0, 1)

    # -- checkpoint state: translation's own parts --
    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors, window_meta = self.window.state()
        pools = {}
        for side, pool in self.pools.items():
            pool_tensors, pools[side] = pool.state(side)
            tensors.update(pool_tensors)
        meta = {"epoch": round(self.step / self.steps_per_epoch, 4), "total_steps": self.total_steps,
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()}, "window": window_meta,
                "pools": pools, "issues_reported": self.issues_reported, "last_sample": self.last_sample,
                "data_size": [len(self.train_set.a), len(self.train_set.b)],
                "image_size": self.cfg.image_size, "channels": [self.cfg.source_channels(), self.cfg.target_channels()]}
        return tensors, meta

    def load_extra(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        for key, scheduler in self.schedulers.items():
            scheduler.load_state_dict(meta["schedulers"][key])
            # The rate of the next step from the schedule of this run's total: the saved one when the
            # budget is the same; on a run given a new budget, the new schedule's (a run cut at its
            # old end would otherwise take one step at the old schedule's final rate, 0).
            for group, base in zip(self.optimizers[key].param_groups, scheduler.base_lrs):
                group["lr"] = base * linear_decay(scheduler.last_epoch, self.total_steps, self.cfg.decay_from)
        self.window = Window.restore(tensors, meta.get("window"), self.device)
        for side, pool in self.pools.items():
            pool.load(side, tensors, meta["pools"][side], self.device)
        self.issues_reported = int(meta.get("issues_reported", 0))
        self.last_sample = int(meta.get("last_sample", -1))
        size = meta.get("data_size")
        if size is not None and size != [len(self.train_set.a), len(self.train_set.b)]:
            warn(f"{self.cfg.data} has other training images now than when this checkpoint was written: from here "
                 "the batches differ from an uninterrupted run", self.quiet)

    def set_learning_rates(self, rates: dict[str, float]) -> None:
        """A new `lr` (resume): the schedule scales it from the next step on."""
        for name, rate in rates.items():
            self.schedulers[name].base_lrs = [rate for _ in self.schedulers[name].base_lrs]

    def scale_learning_rates(self, meta: dict, factor: float) -> None:
        """A rollback: the schedules just loaded, scaled from the step they restart at on (their
        peak and the current rate alike, so the decay is not applied twice)."""
        for name, scheduler in self.schedulers.items():
            scheduler.base_lrs = [rate * factor for rate in scheduler.base_lrs]
            for group in self.optimizers[name].param_groups:
                group["lr"] *= factor

    def epoch(self) -> float:
        return round(self.step / self.steps_per_epoch, 4) if math.isfinite(self.steps_per_epoch) else 0.0
