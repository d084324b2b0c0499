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

    ema = AveragedModel(generator, avg_fn=avg_fn, use_buffers=False)
    ema.decay = decay  # for the device-side update below
    return ema


@torch.no_grad()
def update_ema(ema: AveragedModel | None, generator: nn.Module, ok: bool | torch.Tensor = True) -> None:
    """Average the parameters and copy the buffers (BN running statistics), if the step was taken.

    `ok` may be a device flag (the sync-free fast path): the same update is then computed on the
    device and kept only where the flag is true, since `avg_fn` would read `n_averaged` on the host.
    """
    if ema is None:
        return
    if isinstance(ok, torch.Tensor):
        _update_on_device(ema, generator, ok)
    elif ok:
        ema.update_parameters(generator)
        for mine, theirs in zip(ema.module.buffers(), generator.buffers()):
            mine.copy_(theirs)


def _update_on_device(ema: AveragedModel, generator: nn.Module, ok: torch.Tensor) -> None:
    """`update_ema` without host reads: the first update copies (d = 0), later ones use the warm-up d."""
    n = ema.n_averaged.double()
    d = torch.where(n == 0, 0.0, torch.clamp((1.0 + n) / (10.0 + n), max=ema.decay))
    for averaged, current in zip(ema.module.parameters(), generator.parameters()):
        new = averaged * d.to(averaged.dtype) + current * (1.0 - d).to(averaged.dtype)
        averaged.copy_(torch.where(ok, new, averaged))
    for mine, theirs in zip(ema.module.buffers(), generator.buffers()):
        mine.copy_(torch.where(ok, theirs, mine))
    ema.n_averaged.add_(ok.to(ema.n_averaged.dtype))
