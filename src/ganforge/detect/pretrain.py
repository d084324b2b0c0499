"""Pretraining a detector's convolutional trunk on classification, the paper's first stage.

YOLO v1's convolutions are first trained to classify ImageNet at half the detection resolution
(224 for a 448 detector), then the detector is trained on top of them. :class:`Pretraining` does the
same for any registered model: the trunk, a global average pool and a linear classifier, trained
with cross-entropy on batches from `batches(step)`; the classifier is thrown away afterwards.
For digits-det the batches are single digits of the train split's own source digits at 56 x 56
(`ganforge.detect.digits.classification_batch`), so no test handwriting is seen; other data
gives crops of its training boxes (:func:`pretrain_batches`).

The stage is a state that a checkpoint holds (the classifier, its Adam, the batch generator's
state and the accuracy counters), so a run stopped during pretraining resumes where it stopped,
with the same batches and the same weights as a run that was never stopped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ganforge import distributed as dist
from ganforge.checkpoint.state import pack_optimizer, unpack_optimizer
from ganforge.detect.data import DetectionSet
from ganforge.detect.evaluate import to_input
from ganforge.detect.model import YoloV1
from ganforge.errors import ConfigError, DataError
from ganforge.io import MetricsLog, atomic_write_text, read_metrics
from ganforge.runs import Progress, SignalFlag, due
from ganforge.speed import adopt_implementation, autocast

Batches = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


class Pretraining:
    """The classification stage in progress: `step()` takes one Adam step of trunk + classifier."""

    def __init__(self, model: YoloV1, num_classes: int, *, steps: int, lr: float = 1e-3,
                 channels_last: bool = False, log_every: int = 100, seed: int = 0, bf16: bool = False,
                 impl: dict | None = None) -> None:
        channels = next(m for m in reversed(model.features) if isinstance(m, nn.Conv2d)).out_channels
        self.model, self.steps, self.log_every, self.channels_last = model, steps, log_every, channels_last
        self.bf16 = bf16  # bf16 autocast for the trunk's forward (the classifier's loss in float32)
        self.impl = dict(impl or {})  # the Adam's kernels (speed.optimizer_options), never its maths
        self.device = next(model.parameters()).device
        self.classifier = nn.Linear(channels, num_classes).to(self.device)  # draws from the global generator
        if channels_last:
            model.to(memory_format=torch.channels_last)
        params = list(model.features.parameters()) + list(self.classifier.parameters())
        self.optimizer = torch.optim.Adam(params, lr=lr, **self.impl)
        self.rng = np.random.RandomState(seed)  # the batch stream's generator (checkpointed)
        self.step = 0
        self.correct = self.seen = 0
        self.accuracy = 0.0  # the last log window's accuracy on the training batches

    @property
    def done(self) -> bool:
        return self.step >= self.steps

    def take_step(self, batches: Batches) -> dict[str, float] | None:
        """One step; returns the log row (loss, window accuracy) every `log_every` steps and at the end."""
        self.step += 1
        images, labels = batches(self.step)
        images, labels = images.to(self.device), labels.to(self.device)
        self.model.train()
        with autocast(self.device, self.bf16):
            features = self.model.features(to_input(images, self.channels_last))  # N x C x h x w
        logits = self.classifier(features.float().mean((2, 3)))  # N x classes
        loss = nn.functional.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.correct += int((logits.argmax(1) == labels).sum())
        self.seen += len(labels)
        if self.step % self.log_every and not self.done:
            return None
        self.accuracy, self.correct, self.seen = self.correct / self.seen, 0, 0
        return {"pretrain_loss": float(loss.detach()), "pretrain_accuracy": self.accuracy}

    # -- checkpoint state: `pretrain.*` tensors and one meta entry --
    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors = {f"pretrain.classifier.{k}": v for k, v in self.classifier.state_dict().items()}
        opt_tensors, opt_meta = pack_optimizer(self.optimizer.state_dict(), "pretrain.optim")
        kind, keys, pos, has_gauss, cached = self.rng.get_state(legacy=True)
        meta = {"step": self.step, "correct": self.correct, "seen": self.seen, "accuracy": self.accuracy,
                "optimizer": opt_meta, "rng": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
        return {**tensors, **opt_tensors}, meta

    def load(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        prefix = "pretrain.classifier."
        self.classifier.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        self.optimizer.load_state_dict(unpack_optimizer(tensors, meta["optimizer"], "pretrain.optim"))
        adopt_implementation(self.optimizer, self.impl)
        kind, keys, pos, has_gauss, cached = meta["rng"]
        self.rng.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        self.step, self.correct, self.seen = int(meta["step"]), int(meta["correct"]), int(meta["seen"])
        self.accuracy = float(meta["accuracy"])

    @classmethod
    def restore(cls, model: YoloV1, num_classes: int, tensors: dict[str, torch.Tensor], meta: dict,
                **kwargs) -> "Pretraining":
        """A stage from a checkpoint. The classifier's fresh init runs on a forked generator: the
        restored global generator must stay where the checkpoint left it."""
        with torch.random.fork_rng(devices=[]):
            stage = cls(model, num_classes, **kwargs)
        stage.load(tensors, meta)
        return stage


def pretrain_trunk(model: YoloV1, batches: Batches, num_classes: int, *, steps: int, lr: float = 1e-3,
                   channels_last: bool = False, log: Callable[[int, dict], None] | None = None,
                   log_every: int = 100) -> float:
    """Train `model.features` to classify in one go; returns the last window's accuracy on the
    training batches. `batches(step)` gives (uint8 images N x 3 x H x W, int64 labels N)."""
    stage = Pretraining(model, num_classes, steps=steps, lr=lr, channels_last=channels_last, log_every=log_every)
    while not stage.done:
        row = stage.take_step(batches)
        if row is not None and log is not None:
            log(stage.step, row)
    return stage.accuracy


def pretrain_batches(data: DetectionSet, rng: np.random.RandomState, *, what: str, steps: int, size: int = 56,
                     batch: int = 64) -> Batches:
    """The batches of the trunk pretraining, drawn from `rng`: single digits of the train split's
    own source digits for digits-det; for other data, crops of the training boxes (with a quarter
    of their size as margin), resized to `size`. `what` names the data and `steps` the stage's
    length in messages."""
    if data.name == "digits-det":
        from ganforge.detect.digits import classification_batch

        return lambda step: classification_batch(rng, batch, "train", size)
    pairs = [(i, k) for i, r in enumerate(data.records) for k in range(len(r.labels)) if not r.difficult[k]]
    if not pairs:
        raise ConfigError(f"pretrain_steps={steps} needs labelled boxes in the train split of {what}: it has "
                          "none; set pretrain_steps=0")

    # An image that fails to decode is skipped (and recorded by the set); the draw that found it is
    # spent either way, so a resumed run that finds it again draws the same batches.
    with_boxes, unreadable = {i for i, _ in pairs}, set()

    def crops(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.transforms.v2.functional import resized_crop

        images, labels = [], []
        while len(images) < batch:
            i, k = pairs[rng.randint(len(pairs))]
            image = None if i in unreadable else data.readable(i)  # None (recorded): not decodable
            if image is None:
                unreadable.add(i)
                if len(unreadable) == len(with_boxes):
                    raise DataError(f"no image with boxes in the train split of {what} can be "
                                    "decoded; check its image files")
                continue
            x1, y1, x2, y2 = data.records[i].boxes[k].tolist()
            mx, my = (x2 - x1) / 4, (y2 - y1) / 4
            top, left = max(0, int(y1 - my)), max(0, int(x1 - mx))
            height = max(1, min(image.shape[1], int(math.ceil(y2 + my))) - top)
            width = max(1, min(image.shape[2], int(math.ceil(x2 + mx))) - left)
            images.append(resized_crop(image, top, left, height, width, [size, size], antialias=True))
            labels.append(int(data.records[i].labels[k]))
        return torch.stack(images), torch.tensor(labels)

    return crops


# ---- the stage in a training run ------------------------------------------------------------------

def run_pretraining(run, mlog: MetricsLog, flag: SignalFlag, started: float, log) -> bool:
    """The classification stage: the trunk learns to tell the classes apart on single objects. Like
    the detection steps it shows progress, checkpoints every `checkpoint_every` steps, and stops on
    a signal or at max_seconds with a checkpoint that resumes it. `run` is the DetectRun; `started`
    is when this invocation's budget began. Returns whether it stopped so."""
    cfg = run.cfg
    run.start_pretraining()
    stage = run.pretraining
    batches = run.pretrain_batches()
    bar = Progress(run.dir, cfg.pretrain_steps, stage.step, run.quiet, log, write=False)
    bar.say(f"pretraining the trunk on single objects for {cfg.pretrain_steps} steps"
            + (f", from step {stage.step}" if stage.step else ""))
    t0, base_seconds = time.perf_counter(), run.seconds
    stopped = False
    while not stage.done:
        row = stage.take_step(batches)
        run.seconds = base_seconds + time.perf_counter() - t0
        bar.update()
        if row is not None:
            mlog.event(0, "pretrain", pretrain_step=stage.step, **{k: round(v, 5) for k, v in row.items()})
            bar.say(f"pretrain step {stage.step}/{cfg.pretrain_steps}  loss {row['pretrain_loss']:.4f}  "
                    f"accuracy {100 * row['pretrain_accuracy']:.1f}%")
        # Every rank stops at the same step: a signal or a time-out on any of them.
        timed_out = flag.agree(0 < cfg.max_seconds <= time.perf_counter() - started)
        stopped = (flag.signum is not None or timed_out) and not stage.done
        if stopped or (due(stage.step, cfg.checkpoint_every) and not stage.done):
            run.save()
        if stopped:
            break
    bar.close()
    if stopped:
        return True
    run.pretrain_accuracy = stage.accuracy
    if run.world > 1:
        # Every rank pretrained on the same batches; rank 0's trunk goes to all, so that the ranks
        # start the detection steps from one set of weights even where kernels are not deterministic.
        state, _ = dist.broadcast_state(run.net.state_dict() if dist.is_main() else None, {})
        if not dist.is_main():
            run.net.load_state_dict({k: v.to(run.device) for k, v in state.items()})
    run.pretrained, run.pretraining = True, None
    run.save()
    flag.agree()
    return False


def forget_pretrain_rows(metrics: Path, step: int) -> None:
    """The pretraining rows after a resumed stage's checkpoint (at pretraining `step`), which the
    resumed run writes again."""
    rows = read_metrics(metrics)
    kept = [r for r in rows if not (r.get("event") == "pretrain" and r.get("pretrain_step", 0) > step)]
    if len(kept) < len(rows):
        atomic_write_text(metrics, "".join(json.dumps(r) + "\n" for r in kept))
