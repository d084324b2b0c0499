"""A plain training loop for a detector (Adam, optional augmentation): the prototype that checks
the model, targets and loss learn, before the full trainer with run folders and resume."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ganforge.detect.augment import Augmented, collate
from ganforge.detect.boxes import encode_targets
from ganforge.detect.data import DetectionSet
from ganforge.detect.evaluate import to_input
from ganforge.detect.loss import yolo_loss


def fit(model: nn.Module, dataset: DetectionSet, *, steps: int, batch_size: int = 32,
        lr: float = 1e-3, weight_decay: float = 0.0, augment: bool = True, seed: int = 0,
        warmup: int = 0, channels_last: bool = False, workers: int = 0, trunk_lr_scale: float = 1.0,
        log: Callable[[int, dict], None] | None = None, log_every: int = 50) -> list[dict]:
    """Train `model` for `steps` Adam steps with a cosine learning-rate decay after `warmup` linear
    steps. Batches are drawn without replacement, epoch by epoch, from `seed`; `workers` > 0
    augments them in that many DataLoader processes (one thread each) while the step runs.
    `trunk_lr_scale` < 1 moves a pretrained trunk more slowly than the new head. Returns
    the logged loss parts (the means over each window of `log_every` steps)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # augmentation draws from the global generator
    data = Augmented(dataset, model.input_size, train=augment)
    size = (model.input_size, model.input_size)
    groups = [{"params": model.features.parameters(), "lr": lr * trunk_lr_scale},
              {"params": model.head.parameters(), "lr": lr}]
    optimizer = torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup
        else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup))))
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    loader = torch.utils.data.DataLoader(data, batch_sampler=_batches(len(dataset), batch_size, steps, gen),
                                         num_workers=workers, collate_fn=collate, generator=gen,
                                         persistent_workers=False)
    window: list[dict] = []
    history: list[dict] = []
    for step, (images, targets) in enumerate(loader, 1):
        parts = yolo_loss(model(to_input(images, channels_last)), encode_targets(targets, size, model.grid),
                          model.boxes)
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        optimizer.step()
        schedule.step()
        window.append(parts.items())
        if step % log_every == 0 or step == steps:
            mean = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
            history.append({"step": step, "lr": schedule.get_last_lr()[0], **mean})
            window = []
            if log is not None:
                log(step, history[-1])
    return history


def _batches(n: int, batch_size: int, steps: int, gen: torch.Generator) -> list[list[int]]:
    """`steps` batches of indices: epochs of fresh permutations, cut into consecutive batches."""
    order: list[int] = []
    out = []
    for _ in range(steps):
        while len(order) < batch_size:
            order += torch.randperm(n, generator=gen).tolist()
        out.append(order[:batch_size])
        order = order[batch_size:]
    return out
