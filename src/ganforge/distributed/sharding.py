"""The global batch over the ranks: every rank knows the whole batch (the same indices and noise as
one process) and takes its contiguous part of it; results come back to the main rank in rank order
(or to every rank: :func:`all_rows`).
In one process each rank's part is the whole.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from ganforge.distributed.group import _collective, _comm_device, active, env_world_size, is_main, rank, world_size


def global_slice(n: int, at: int | None = None, world: int | None = None) -> slice:
    """Rank `at`'s part of n items split in world-size contiguous parts, as torch.tensor_split cuts
    them (the first n % world parts hold one more)."""
    at = rank() if at is None else at
    world = world_size() if world is None else world
    base, extra = divmod(n, world)
    start = at * base + min(at, extra)
    return slice(start, start + base + (1 if at < extra else 0))


def shard(x: Any) -> Any:
    """This rank's rows of a tensor (or of each tensor of a dict) that every rank holds whole."""
    if not active():
        return x
    if isinstance(x, dict):
        return {k: shard(v) for k, v in x.items()}
    return x[global_slice(x.shape[0])]


class ShardedSampler:
    """A batch sampler whose batches are this rank's part of the wrapped sampler's global ones
    (a streamed folder then decodes only that part)."""

    def __init__(self, sampler) -> None:
        self.sampler = sampler

    def indices(self, step: int) -> torch.Tensor:
        return shard(self.sampler.indices(step))

    def __getattr__(self, name: str):
        return getattr(self.sampler, name)


def all_rows(x: torch.Tensor) -> torch.Tensor:
    """The whole global batch on every rank from each rank's equal part of it (`x`), in rank order:
    the inverse of :func:`shard`. `x` itself in one process."""
    if not active():
        return x
    dev = _comm_device()
    part = x.detach().to(dev).contiguous()
    parts = [torch.empty_like(part) for _ in range(world_size())]
    _collective(dist.all_gather, parts, part)
    return torch.cat(parts).to(x.device)


def shard_range(n: int) -> range:
    """This rank's part of items 0..n-1 (evaluation: each rank extracts features of its share)."""
    part = global_slice(n)
    return range(part.start, part.stop)


def check_divides(n: int, what: str, fix: str, world: int | None = None) -> None:
    """One line when `n` (a global batch) does not split evenly over the processes (`world`,
    default: this run's)."""
    if world is None:
        world = env_world_size() if not active() else world_size()
    if world > 1 and n % world:
        from ganforge.errors import ConfigError

        raise ConfigError(f"{what} {n} does not divide by the {world} processes: {fix}")


def gather_rows(x: torch.Tensor) -> torch.Tensor | None:
    """Every rank's rows of `x` (the same trailing shape, any number of rows), concatenated in rank
    order on the main rank (None elsewhere); `x` itself in one process."""
    if not active():
        return x
    dev = _comm_device()
    rows = torch.tensor([x.shape[0]], device=dev)
    sizes = [torch.zeros_like(rows) for _ in range(world_size())]
    _collective(dist.all_gather, sizes, rows)
    sizes = [int(s) for s in sizes]
    most = max(sizes)
    padded = torch.zeros(most, *x.shape[1:], dtype=x.dtype, device=dev)
    padded[:x.shape[0]] = x.to(dev)
    parts = [torch.empty_like(padded) for _ in sizes]
    _collective(dist.all_gather, parts, padded)
    if not is_main():
        return None
    return torch.cat([p[:s] for p, s in zip(parts, sizes)]).to(x.device)
