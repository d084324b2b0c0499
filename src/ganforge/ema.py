"""Exponential moving average of G's weights, for samples and evaluation."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def make_ema(generator: nn.Module, decay: float) -> AveragedModel | None:
    """An AveragedModel of `generator` whose decay warms up as min(decay, (1 + n) / (10 + n)).

    Without the warm-up, a 0.999 average still holds ~37% of the random initial weights after
    1,000 steps, which ruins short runs' samples. BatchNorm statistics are copied, not averaged:
    averaging them would mix statistics of very different networks.
    """
    if decay <= 0:
        return None

    def avg_fn(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        return averaged * d + current * (1.0 - d)

    return AveragedModel(generator, avg_fn=avg_fn, use_buffers=False)


@torch.no_grad()
def update_ema(ema: AveragedModel | None, generator: nn.Module) -> None:
    """Average the parameters and copy the buffers (BN running statistics)."""
    if ema is None:
        return
    ema.update_parameters(generator)
    for mine, theirs in zip(ema.module.buffers(), generator.buffers()):
        mine.copy_(theirs)
