"""`DetectRun`: everything one detector training run holds, set up from a `DetectConfig`.

The train and val splits, the network (`net`) and its optimizer and LR scheduler, the batches, the
fixed val images that are drawn over time, and the checkpointed state (runs.RunState). The loop
that drives it is detect/train.py.

Exact resume: every random choice of a step is a function of (seed, step) or lives in a checkpointed
state. Batch `s` holds positions ``s*B .. s*B+B-1`` of a stream of epoch permutations, each drawn
from its own generator seeded by (seed, epoch); the augmentation of the k-th image of batch `s` runs
under the global generator seeded by (seed, s, k) inside `torch.random.fork_rng`, so it is the
same in a worker process, in the training process and after a resume. Dropout draws from the global
generator of the training process, which checkpoints save and restore; the LR scheduler's state
goes into the checkpoint's meta.

Several processes (torchrun, `--nproc`): `batch_size` stays the global batch. Every rank knows the
global batch's indices and makes only its contiguous part of them (`distributed.global_slice`),
the k-th image under the same (seed, s, k) generator as in one process, so each rank's rows are
exactly the rows one process would make. The net is wrapped in DistributedDataParallel, with its
BatchNorm over the global batch (`sync_bn`). Equation 3 is divided by the rank's own batch
(B / world) and DDP averages the gradients over the world ranks: (1/world) * sum_r grad(L_r) *
world / B = grad(sum_r L_r) / B, the gradient of one process on the global batch. Dropout draws
from a stream of each rank's own (rank 0's is one process's), so with dropout the ranks' masks are
not those of one process.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch

from ganforge import distributed as dist
from ganforge import speed as sp
from ganforge.detect.augment import collate, detection_transform, unwrap, wrap
from ganforge.detect.boxes import GridTargets, encode_targets
from ganforge.detect.config import SCHEDULES, DetectConfig
from ganforge.detect.data import DetectionSet
from ganforge.detect.datasets import open_detection_data
from ganforge.detect.evaluate import predict_dataset
from ganforge.detect.infer import DRAW_CONF
from ganforge.detect.model import DETECTORS
from ganforge.detect.pretrain import Pretraining, forget_pretrain_rows, pretrain_batches
from ganforge.errors import ConfigError
from ganforge.optim import build_optimizer
from ganforge.runs import RunState, Window, warn

SWITCH = {"on": True, "off": False}


def net_builder(cfg: DetectConfig, num_classes: int):
    """A function that builds the detector `cfg` describes (on whatever device is current)."""
    return functools.partial(DETECTORS.get(cfg.model).build, num_classes, batchnorm=SWITCH.get(cfg.batchnorm),
                             fc_width=cfg.fc_width or None, dropout=cfg.dropout)


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers (no collisions for seeds, steps and indices below 2^20)."""
    value = 0
    for part in parts:
        value = (value * 1_000_003 + int(part)) % (2 ** 63)
    return value


class StepBatches(torch.utils.data.Dataset):
    """Item `s` is training batch `s`: (uint8 images B x 3 x size x size, their grid targets, new
    problems with the data). The targets are encoded here, where the batch is made, so a worker
    process does it while the step runs.

    A pure function of (seed, s), so DataLoader workers, the training process and a resumed run all
    make the same batches (see the module docstring)."""

    def __init__(self, dataset: DetectionSet, input_size: int, grid: int, batch_size: int, seed: int, *,
                 augment: bool, flip: bool, color: str = "hsv", part: slice | None = None) -> None:
        """`grid`: the network's S, for the targets. `part`: the positions of each global batch this
        process makes (default: all of them)."""
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.input_size, self.grid = input_size, grid
        self.part = part if part is not None else slice(0, batch_size)
        self.transform = detection_transform(input_size, train=augment, flip=flip, color=color)

    def __len__(self) -> int:
        return 2 ** 62  # indexed by step; the sampler says which steps

    @functools.lru_cache(maxsize=4)
    def permutation(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(_seed(self.seed, 7, epoch))
        return torch.randperm(len(self.dataset), generator=gen).tolist()

    def indices(self, step: int) -> list[int]:
        n = len(self.dataset)
        start = step * self.batch_size
        return [self.permutation(p // n)[p % n] for p in range(start, start + self.batch_size)]

    def __getitem__(self, step: int) -> tuple[torch.Tensor, GridTargets, list[tuple[str, str]]]:
        """Also returns the problems this call found (images that failed to decode): a worker
        process records them in its own copy of the set, so they travel back with the batch."""
        items = []
        before = len(self.dataset.issues)
        indices = self.indices(step)
        for k in range(self.part.start, self.part.stop):  # k: the position in the global batch
            image, target = self.dataset[indices[k]]
            with torch.random.fork_rng(devices=[]):
                # The CPU generator alone: torch.manual_seed also queues a CUDA seeding, formatting a
                # traceback each time (0.5 ms an image, a sixth of the batch's cost). Same draws.
                torch.default_generator.manual_seed(_seed(self.seed, 11, step, k))
                items.append(unwrap(*self.transform(*wrap(image, target))))
        images, targets = collate(items)
        grid = encode_targets(targets, (self.input_size, self.input_size), self.grid)
        return images, grid, self.dataset.issues.items[before:]


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


def total_steps(cfg: DetectConfig, n_images: int) -> int:
    if cfg.steps is not None:
        return cfg.steps
    return max(1, round(cfg.epochs * n_images / cfg.batch_size))


class DetectRun(RunState):
    """Data, network, optimizer, scheduler, counters and outputs of one detector run."""

    lr_keys = {"net": "lr"}
    resume_command = "ganforge detect train --resume"
    nonfinite_steps = "steps with a non-finite loss or gradient"
    differs_across_worlds = ("reductions, BatchNorm statistics summed per process, and dropout's per-process "
                             "random streams")

    def __init__(self, cfg: DetectConfig, run_dir: Path, quiet: bool = False) -> None:
        self.place(cfg, run_dir, quiet)
        cfg = self.cfg
        if self.device.type == "cpu":
            sp.keep_freed_memory()  # yolov1-s's fp32 step 201 -> 179 ms on 2 cores (docs/DETECTION.md)
        torch.manual_seed(cfg.seed)
        dist.main_first(self._open_data)
        self.names = list(self.train_set.names)
        info = DETECTORS.get(cfg.model)
        self.info = info
        net = info.build(len(self.names), batchnorm=SWITCH.get(cfg.batchnorm), fc_width=cfg.fc_width or None,
                         dropout=cfg.dropout)
        if self.world > 1 and cfg.sync_bn:
            net = dist.convert_sync_batchnorm(net, self.device)
        self.channels_last = SWITCH.get(cfg.channels_last, info.cpu_channels_last or self.device.type == "cuda")
        net.to(self.device)
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        self.input_size = net.input_size
        # The optimizer's kernels (never its maths): fused where it has them (Adam, SGD), else foreach.
        self.impl = sp.optimizer_options(cfg.optimizer, sp.Speed(fused=cfg.fused), self.device)
        self.optimizers = {"net": build_optimizer(cfg.optimizer, net.parameters(), cfg.lr, cfg, **self.impl)}
        self.modules = {"net": net}
        # The training forward goes through DDP (its backward averages the gradients over the ranks);
        # evaluation, drawings and checkpoints use the plain module.
        self.ddp: torch.nn.Module | None = None
        if self.world > 1:
            self.ddp = self.data_parallel(net)
        # The non-finite guard: host-checked, and under DDP a step is taken only where it is finite on all.
        self.guard = sp.StepGuard(sync_free=False, agree=dist.all_true if self.world > 1 else None)
        self.total_steps = total_steps(cfg, len(self.train_set))
        self.steps_per_epoch = len(self.train_set) / cfg.batch_size
        self.scheduler = self._make_scheduler()
        self.flip = SWITCH.get(cfg.flip, self.train_set.flip)
        self.batches = StepBatches(self.train_set, self.input_size, net.grid, cfg.batch_size, cfg.seed,
                                   augment=cfg.augment, flip=self.flip, color=cfg.color,
                                   part=dist.global_slice(cfg.batch_size) if self.world > 1 else None)
        # The images drawn over time: the first readable val images, the same in every snapshot.
        shown: list[int] = []
        for i in range(len(self.val_set)):
            if len(shown) == cfg.predict_images:
                break
            if self.val_set.readable(i) is not None:
                shown.append(i)
        self.shown = self.val_set.subset(shown)
        self.init_counters()
        self.best = math.inf  # unused: the best checkpoint goes by mAP (best_map, higher is better)
        self.best_map: float | None = None
        self.pretrained = cfg.pretrain_steps == 0
        self.pretraining: Pretraining | None = None  # the stage while it runs (checkpointed with the run)
        self.pretrain_accuracy: float | None = None
        self.resumed = False  # set by a checkpoint: what a fresh run says once is not said again
        self.window = Window()
        self.last_prediction = -1
        self.issues_reported = 0

    def _open_data(self) -> None:
        cfg = self.cfg
        self.train_set = open_detection_data(cfg.data, "train")
        self.val_set = open_detection_data(cfg.data, "val")
        if len(self.train_set) == 0:
            raise ConfigError(f"{cfg.data} has no usable training image: check its train split and labels")
        if len(self.val_set) == 0:
            raise ConfigError(f"{cfg.data} has no usable val image: add a val split to evaluate on")
        if self.val_set.names != self.train_set.names:
            raise ConfigError(f"{cfg.data}: the val split has other class names than the train split")
        if self.world > 1:
            dist.check_divides(cfg.batch_size, "the global batch_size", f"choose a batch_size that is a multiple "
                               f"of {self.world}, or another number of processes")

    net = property(lambda self: self.modules["net"])
    optimizer = property(lambda self: self.optimizers["net"])

    def _make_scheduler(self) -> torch.optim.lr_scheduler.LambdaLR:
        schedule = SCHEDULES.get(self.cfg.schedule)
        total, warmup = self.total_steps, self.cfg.warmup_steps(self.total_steps)
        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: schedule(s, total, warmup))

    def loader(self, workers: int) -> torch.utils.data.DataLoader:
        """The batches of steps step+1 .. total_steps, made ahead by `workers` processes."""
        return torch.utils.data.DataLoader(
            self.batches, batch_size=None, sampler=range(self.step, self.total_steps), num_workers=workers,
            worker_init_fn=_one_thread if workers else None, generator=torch.Generator().manual_seed(0),
            prefetch_factor=2 if workers else None, persistent_workers=False)

    # -- the trunk pretraining stage --
    def pretraining_options(self) -> dict:
        cfg = self.cfg
        return {"steps": cfg.pretrain_steps, "lr": cfg.pretrain_lr, "channels_last": self.channels_last,
                "log_every": max(1, min(100, cfg.pretrain_steps)), "seed": cfg.seed, "bf16": cfg.bf16,
                "impl": sp.optimizer_options("adam", sp.Speed(fused=cfg.fused), self.device)}

    def start_pretraining(self) -> None:
        """The stage from its first step (a resumed run has it from its checkpoint)."""
        if self.pretraining is None:
            self.pretraining = Pretraining(self.net, len(self.names), **self.pretraining_options())

    def pretrain_batches(self):
        return pretrain_batches(self.train_set, self.pretraining.rng, what=self.cfg.data,
                                steps=self.cfg.pretrain_steps)

    # -- pictures --
    @torch.no_grad()
    def drawn_predictions(self) -> torch.Tensor:
        """The fixed val images with their predicted boxes (at the drawing threshold), uint8."""
        from ganforge.detect.draw import draw_detections

        preds = predict_dataset(self.net, self.shown, conf=DRAW_CONF, channels_last=self.channels_last)
        drawn = []
        for i, pred in enumerate(preds):
            image = self.shown.readable(i) if pred is not None else None
            if image is None:  # decoded once at the start, not now: a grey tile keeps the grid's places
                height, width = self.shown.records[i].size
                image = torch.full((3, height, width), 128, dtype=torch.uint8)
                pred = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
            drawn.append(draw_detections(image, pred, self.names))
        return torch.stack(drawn)

    def resumed_in(self, folder) -> None:
        """A resumed pretraining stage writes its rows after the checkpoint again: drop the old ones."""
        if self.pretraining is not None:
            forget_pretrain_rows(folder.metrics, self.pretraining.step)

    def set_learning_rates(self, rates: dict[str, float]) -> None:
        """A new peak `lr` (resume, rollback): the schedule scales it from the next step on."""
        if "net" in rates:
            self.scheduler.base_lrs = [rates["net"] for _ in self.scheduler.base_lrs]

    # -- checkpoint state: the detector's own parts --
    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        # The window's sums averaged over the ranks (every rank saves together): a resumed rank
        # continues from the global partial sums, and the ranks' mean of them stays the global one.
        window = self.window
        window_tensors, window_meta = Window(dist.mean_across(window.sums), window.count, window.images).state()
        meta = {"epoch": round(self.step / self.steps_per_epoch, 4), "best_map": self.best_map,
                "scheduler": self.scheduler.state_dict(), "window": window_meta,
                "last_prediction": self.last_prediction, "pretrained": self.pretrained,
                "pretrain_accuracy": self.pretrain_accuracy, "names": self.names,
                "data_size": len(self.train_set), "issues_reported": self.issues_reported,
                "total_steps": self.total_steps, "input_size": self.input_size,
                "channels_last": self.channels_last}
        if self.pretraining is not None and not self.pretrained:  # stopped during pretraining
            stage_tensors, meta["pretraining"] = self.pretraining.state()
            window_tensors = {**window_tensors, **stage_tensors}
        return window_tensors, meta

    def load_extra(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        sp.adopt_implementation(self.optimizer, self.impl)  # this run's kernels, not the saved run's
        self.scheduler.load_state_dict(meta["scheduler"])
        self.window = Window.restore(tensors, meta.get("window"), self.device)
        self.best_map = meta.get("best_map")
        self.last_prediction = int(meta.get("last_prediction", -1))
        self.pretrained = bool(meta.get("pretrained", True))
        self.pretrain_accuracy = meta.get("pretrain_accuracy")
        self.resumed = True
        if not self.pretrained and "pretraining" in meta:
            self.pretraining = Pretraining.restore(self.net, len(self.names), tensors, meta["pretraining"],
                                                   **self.pretraining_options())
        self.issues_reported = int(meta.get("issues_reported", 0))
        if meta.get("names") not in (None, self.names):
            raise ConfigError(f"{self.cfg.data} has other class names now than when this run started "
                              f"({', '.join(meta['names'])}): it cannot be resumed on this data")
        size = meta.get("data_size")
        if size is not None and size != len(self.train_set):
            warn(f"{self.cfg.data} has {len(self.train_set)} training images now and had {size} when this "
                 "checkpoint was written: from here the batches differ from an uninterrupted run", self.quiet)
